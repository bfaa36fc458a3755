//! The sandbox's errors, kept here below `sandbox` like the other modules' errors: cairn's side
//! ([`Error`], wrapped by the builder's error), the helper's ([`HelperError`], reported to cairn
//! as text) and the limits cgroup's ([`CgroupError`]).

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong on cairn's side of the sandbox: starting or talking to a helper, or the
/// pieces a step needs from the host. A helper's own report arrives as text and stays the
/// builder's `Error::Sandbox`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call without a path failed (a pipe, a socket pair, a descriptor's copy).
    #[error("failed to {action}")]
    Os {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The control socket to a helper failed.
    #[error("failed to {action} the sandbox helper")]
    Helper {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The helper ended without the answer cairn waited for.
    #[error("the sandbox helper ended without an answer")]
    HelperGone,
    /// The helper answered out of turn.
    #[error("unexpected answer from the sandbox helper: {0}")]
    Unexpected(String),
    /// A helper's diff_id that is not a digest.
    #[error("bad digest from the sandbox helper")]
    BadDigest(#[source] Box<cairn_layers::Error>),
    /// The limits cgroup of a step could not be made.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// `--snapshotter=overlay` where overlayfs does not mount.
    #[error("the overlay snapshotter cannot be used here: {0}")]
    OverlayUnusable(String),
    /// No rung of the isolation ladder (or not the one asked for) works here; the message
    /// names each call tried, its errno and what to change.
    #[error("{0}")]
    Isolation(String),
    /// The id mapping, or the user-mode network, cannot be had on this host; the message says
    /// what to install or configure.
    #[error("{0}")]
    Host(String),
    /// newuidmap or newgidmap refused the maps; what it said.
    #[error("{tool} failed ({status}): {said}")]
    MapTool {
        tool: String,
        status: std::process::ExitStatus,
        said: String,
    },
    /// A network tool that would not start.
    #[error("cannot start {tool} for the step's network")]
    NetworkStart {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// A network tool was started and failed.
    #[error("{tool} could not set up the step's network ({why}){said}")]
    Network {
        tool: &'static str,
        why: String,
        said: String,
    },
    /// Every network tool tried failed; what each said.
    #[error("{}", .0.join("; "))]
    Networks(Vec<String>),
}

impl Error {
    /// One line for a message that has no room for a chain of causes (a step's error):
    /// `what: cause: cause`.
    pub fn report(&self) -> String {
        report(self)
    }

    /// `map_err` for a call without a path.
    pub(crate) fn os<E: Into<io::Error>>(action: &'static str) -> impl FnOnce(E) -> Error {
        move |e| Error::Os {
            action,
            source: e.into(),
        }
    }
}

/// What went wrong in the helper. It crosses to cairn as text ([`HelperError::report`]):
/// the helper is another process, and its answer is a line of JSON.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// A filesystem call failed on a path.
    #[error("{action} {}", path.display())]
    Path {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call or another operation failed; `what` names it and its arguments.
    #[error("{what}")]
    Call {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A layer that could not be unpacked or diffed.
    #[error(transparent)]
    Layers(#[from] cairn_layers::Error),
    /// A refusal with no cause from the system (a missing command, a bad name).
    #[error("{0}")]
    Refused(String),
    /// A failure inside a larger step (`--mount target=/x`, `console`).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<HelperError>,
    },
}

impl HelperError {
    /// `map_err` for a filesystem call on `path`.
    pub fn at<'a, E: Into<io::Error>>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(E) -> HelperError + 'a {
        move |e| HelperError::Path {
            action,
            path: path.to_path_buf(),
            source: e.into(),
        }
    }

    /// `map_err` for a call named `what`.
    pub fn call<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> HelperError {
        let what = what.into();
        move |e| HelperError::Call {
            what,
            source: e.into(),
        }
    }

    /// The message for cairn: this error and its causes, `what: cause: cause`.
    pub fn report(&self) -> String {
        report(self)
    }

    /// The same failure with `context` before it (`context: what: cause`).
    pub fn context(self, context: impl std::fmt::Display) -> HelperError {
        HelperError::Context {
            context: context.to_string(),
            source: Box::new(self),
        }
    }
}

impl From<String> for HelperError {
    fn from(s: String) -> HelperError {
        HelperError::Refused(s)
    }
}

impl From<&str> for HelperError {
    fn from(s: &str) -> HelperError {
        HelperError::Refused(s.to_owned())
    }
}

/// An error and its causes on one line, `what: cause: cause`, for a message that has no room
/// for a chain (a warning, a step's error, an `io::Error` made from it).
pub(crate) fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A failure to set up or use a cgroup that was otherwise available.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup name {name:?}: expected one path component")]
    InvalidName { name: String },
    #[error("failed to create cgroup directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to move process {pid} into cgroup {}", path.display())]
    AddProcess {
        pid: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_carry_every_cause() {
        let enoent = || io::Error::from_raw_os_error(libc::ENOENT);
        let cases: [(HelperError, &str); 4] = [
            (
                HelperError::at("create", Path::new("/x"))(enoent()),
                "create /x: No such file or directory (os error 2)",
            ),
            (
                HelperError::call("pipe")(rustix::io::Errno::MFILE),
                "pipe: Too many open files (os error 24)",
            ),
            (
                HelperError::call("mount tmpfs on /t (tmpfs)")(enoent())
                    .context("--mount target=/t"),
                "--mount target=/t: mount tmpfs on /t (tmpfs): No such file or directory (os error 2)",
            ),
            (HelperError::from("no request"), "no request"),
        ];
        for (err, want) in cases {
            assert_eq!(err.report(), want);
        }
    }

    #[test]
    fn cairn_side_errors_keep_their_cause_as_source() {
        let e = Error::os("make a pipe")(io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(e.to_string(), "failed to make a pipe");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            e.report(),
            "failed to make a pipe: Too many open files (os error 24)"
        );
    }
}
