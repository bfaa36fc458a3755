//! The layers crate's error type: every failure names the path, entry, digest or reference.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, InvalidDigest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed; `action` says what ("create", "read", "rename", ...).
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O failure on a stream that has no path (a pipe, a socket, a compressor).
    #[error("failed to {action}")]
    Stream {
        action: String,
        #[source]
        source: io::Error,
    },
    /// A layer tar entry that would write, link or delete outside the target directory, or that
    /// is otherwise refused. Nothing outside the target has been touched.
    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// Malformed input: a tar, a JSON document, an archive's layout.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error(transparent)]
    InvalidDigest(#[from] InvalidDigest),
    #[error("invalid image reference {value:?}: {reason}")]
    InvalidReference { value: String, reason: String },
    #[error("{what} {expected} does not match its content: got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {digest} should be {expected} bytes but is {actual}")]
    SizeMismatch {
        what: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    /// A store directory that another user could change under cairn (or already has).
    #[error("refusing to use the store at {}: {reason}", path.display())]
    UnsafeStore { path: PathBuf, reason: String },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("image {0} is not in the store")]
    ImageNotFound(String),
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    /// A registry answered with an error: `url` is what was asked, `message` the registry's
    /// error codes and messages (or its body).
    #[error("{what}: {url} answered HTTP {status}: {message}")]
    Registry {
        what: String,
        url: String,
        status: u16,
        message: String,
    },
    /// A registry could not be reached or the exchange broke off (connection, TLS, timeout).
    #[error("{what}: {url}: {message}")]
    Http {
        what: String,
        url: String,
        message: String,
    },
    /// A TLS handshake failed (an unverifiable certificate, or a server that does not speak
    /// TLS); trying again would not help.
    #[error("{what}: {url}: TLS failed: {message}")]
    Tls {
        what: String,
        url: String,
        message: String,
    },
    /// No way to reach a registry worked (each way tried is in `message`).
    #[error("cannot reach registry {registry}: {message}")]
    Unreachable { registry: String, message: String },
    /// Authentication with a registry failed, or credentials could not be read or stored.
    #[error("authentication with {registry} failed: {message}")]
    Auth { registry: String, message: String },
    /// A registry's token server refused the credentials (wrong, expired or revoked).
    #[error(
        "authentication with {registry} failed: token server {realm} refused the credentials (HTTP {status}): {message}"
    )]
    TokenRefused {
        registry: String,
        realm: String,
        status: u16,
        message: String,
    },
    /// Content from a registry that is not what its digest or descriptor says; nothing of it is
    /// kept.
    #[error("{what} {digest} from {source_name} does not match its digest: got {actual}{detail}")]
    RemoteMismatch {
        what: String,
        digest: Digest,
        source_name: String,
        actual: Digest,
        /// More about the mismatch (the sizes, when they differ too), or empty.
        detail: String,
    },
    /// Every place a reference could be pulled from failed (mirrors, then the location).
    #[error("cannot pull {reference}: {errors}")]
    PullFailed { reference: String, errors: String },
    /// A bad configuration file (registry config, auth file).
    #[error("invalid {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("failed to parse {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path and action to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.into(),
            source,
        })
    }
}

impl Error {
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn stream(action: impl Into<String>, source: io::Error) -> Error {
        Error::Stream {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}
