//! A `user[:group]` the image's files do not resolve (kept here, below `users`, for the crate's error).

/// Why a `user[:group]` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// What the image's files say (or lack) that leaves it unresolved.
    #[error("{0}")]
    Unresolved(String),
    /// One of the image's files that cannot be read.
    #[error("/{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The layers or store the image's files are read from, failing.
    #[error("cannot read the image's /etc files")]
    Image(#[source] Box<crate::error::Error>),
}
