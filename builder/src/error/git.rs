//! A git source (ADD of a repository, a git build context) that cannot be had (kept here,
//! below `git`, for the crate's error).

use std::path::PathBuf;

/// Why a repository cannot be resolved, fetched or checked out. URLs in these messages have
/// their credentials removed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A git URL that cairn refuses or cannot read.
    #[error("git source {url}: {reason}")]
    Url { url: String, reason: String },
    /// The `git` binary that cannot be started.
    #[error("could not run git to {action} {url} (is git installed?)")]
    Spawn {
        action: &'static str,
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// A git command that failed; `stderr` is its last lines.
    #[error("git could not {action} {url} ({status}): {stderr}")]
    Failed {
        action: &'static str,
        url: String,
        status: String,
        stderr: String,
    },
    /// A git command still running at the time limit, killed.
    #[error(
        "git could not {action} {url}: no result within {seconds}s (set CAIRN_GIT_TIMEOUT to \
         change the limit)"
    )]
    Timeout {
        action: &'static str,
        url: String,
        seconds: u64,
    },
    /// A repository larger than the limit, stopped.
    #[error(
        "git source {url}: {what} is more than {limit} bytes (set CAIRN_GIT_MAX_SIZE to change \
         the limit)"
    )]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    /// A ref the repository does not have.
    #[error("git source {url}: no branch, tag or ref named {reference:?}")]
    NoRef { url: String, reference: String },
    /// `--checksum` (or `?checksum=`) that the resolved commit does not start with.
    #[error("git source {url}: checksum mismatch: {reference} is commit {commit}, not {want}")]
    Checksum {
        url: String,
        reference: String,
        commit: String,
        want: String,
    },
    /// A subdirectory that the commit does not have as a directory.
    #[error("git source {url}: {subdir:?} is not a directory at commit {commit}")]
    Subdir {
        url: String,
        subdir: String,
        commit: String,
    },
    /// A ref that moved between its lookup and its fetch.
    #[error(
        "git source {url}: {reference} moved from {expected} to {got} while fetching; build again"
    )]
    Moved {
        url: String,
        reference: String,
        expected: String,
        got: String,
    },
    /// An ssh URL with no ssh agent given to the build.
    #[error(
        "git source {url}: an ssh URL needs the ssh agent \"default\" (cairn build --ssh default)"
    )]
    NoAgent { url: String },
    /// A file of the checkout that cannot be read or changed.
    #[error("git checkout: failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
