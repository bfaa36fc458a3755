//! `--cache-from` and `--cache-to` failures (kept here, below `cache`, for the crate's error).

use std::path::PathBuf;

/// Why `--cache-from` or `--cache-to` failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A `--cache-from` layout that is not a cache cairn wrote.
    #[error("--cache-from: {}: {reason}", path.display())]
    NotACache { path: PathBuf, reason: &'static str },
    /// Cache records that cannot be read: `what` names where they came from.
    #[error("--cache-from: {what}: {source}")]
    Records {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A registry's cache that cannot be fetched.
    #[error("--cache-from: {image}: {source}")]
    Fetch {
        image: String,
        #[source]
        source: cairn_layers::Error,
    },
    /// A cache in a registry, in a build with no registry access; `flag` is the option.
    #[error("{flag}: {reference}: no registry access in this build")]
    NoRegistry {
        flag: &'static str,
        reference: String,
    },
    /// The cache that could not be pushed to its registry.
    #[error("--cache-to: pushing the cache to {image}: {source}")]
    Push {
        image: String,
        #[source]
        source: cairn_layers::Error,
    },
    /// An imported cache mount that is not what its records say, or cannot be had.
    #[error("--cache-from: cache mount {id}: {reason}")]
    MountRefused { id: String, reason: String },
    /// An imported cache mount whose tar is not a plain tree (an escape, a bad entry).
    #[error("--cache-from: cache mount {id}: its tar is refused")]
    MountBlob {
        id: String,
        #[source]
        source: cairn_layers::Error,
    },
}
