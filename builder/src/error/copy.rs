//! COPY's and ADD's failures (kept here, below `copy`, so the crate's error can wrap them).

use std::io;
use std::path::PathBuf;

/// Why a COPY or ADD failed. Each message reads as the step's own (the step names the
/// instruction); a message that quotes its cause keeps the cause as its source too.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A rule of COPY or ADD that the sources, the destination or the options break.
    #[error("{0}")]
    Rule(String),
    /// A pattern (`--exclude`, a source's wildcard) that cannot be compiled or matched.
    #[error("{what}: {source}")]
    Pattern {
        what: String,
        #[source]
        source: crate::ignore::IgnoreError,
    },
    /// A `--chmod` that is not a mode.
    #[error(transparent)]
    Chmod(#[from] cairn_parser::chmod::ChmodError),
    /// A directory of a stage's files that cannot be walked.
    #[error("failed to read {}: {source}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    /// An archive that ADD unpacks and cannot read.
    #[error("failed to read archive {}: {source}", path.display())]
    ReadArchive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A source layer whose headers (for owners and xattrs) cannot be read.
    #[error("failed to read the headers of layer {digest}: {source}")]
    LayerHeaders {
        digest: String,
        #[source]
        source: io::Error,
    },
}
