//! An image a step names that cannot be had (kept here, below `step::source`, for the crate's error).

/// Why the image a step names could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not in the store, with no registry to ask: the step's words say what to do.
    #[error("{0}")]
    Missing(String),
    /// A name that several images in the store answer to, or that is not a name at all.
    #[error(transparent)]
    Ambiguous(Box<cairn_layers::Error>),
    /// The store has it by tag, but pulling it again (`--pull`) failed.
    #[error("pulling {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: Box<cairn_layers::Error>,
    },
    /// Not in the store, and pulling it failed.
    #[error("{missing} (pulling it failed: {source})")]
    Unreachable {
        missing: String,
        #[source]
        source: Box<cairn_layers::Error>,
    },
}
