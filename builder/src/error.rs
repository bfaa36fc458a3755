//! The builder's error type: what failed, naming the Dockerfile location or the path.

use std::path::{Path, PathBuf};

use cairn_parser::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Layers(#[from] cairn_layers::Error),
    /// An instruction that cannot be applied, with the reason.
    #[error("{instruction}: {message}")]
    Instruction {
        instruction: String,
        message: String,
    },
    /// A `.dockerignore` line that cannot be read, or a pattern that cannot be compiled or
    /// matched.
    #[error("{}: line {line}: pattern {pattern:?}: {reason}", file.display())]
    Ignore {
        file: PathBuf,
        line: usize,
        pattern: String,
        reason: String,
    },
    /// A build-context path that cannot be used, with the reason.
    #[error("build context path {}: {reason}", path.display())]
    Context { path: PathBuf, reason: String },
    /// The RUN sandbox could not be set up or failed outside the step's own process.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// cairn's side of the sandbox failed: starting or talking to its helper, or what a step
    /// needs from the host.
    #[error(transparent)]
    SandboxFailed(#[from] crate::sandbox::SandboxError),
    /// The build was interrupted (SIGINT or SIGTERM).
    #[error("build cancelled")]
    Cancelled,
    /// A filesystem operation failed; `action` says what ("read", "stat", ...).
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` for a filesystem call: the action and the path it failed on.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
