//! The errors COPY and ADD fail with: a rule they break, or what could not be read or written.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;

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
    /// An entry that cannot be written to the layer.
    #[error("failed to write {entry} to the layer: {source}")]
    Write {
        entry: String,
        #[source]
        source: io::Error,
    },
    /// The layer's end that cannot be written.
    #[error("failed to finish the layer: {0}")]
    Finish(#[source] io::Error),
}

pub(crate) fn err(message: impl Into<String>) -> Error {
    CopyError::Rule(message.into()).into()
}

/// `map_err` for writing `entry` to the layer.
pub(crate) fn write_err(entry: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |source| {
        CopyError::Write {
            entry: entry.to_string(),
            source,
        }
        .into()
    }
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// `map_err` for a pattern, `what` naming where it was written.
pub(crate) fn pattern_err(
    what: impl std::fmt::Display,
) -> impl FnOnce(crate::ignore::IgnoreError) -> Error {
    move |source| {
        CopyError::Pattern {
            what: what.to_string(),
            source,
        }
        .into()
    }
}
