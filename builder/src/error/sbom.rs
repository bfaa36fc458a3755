//! An image whose packages cannot be listed (kept here, below `sbom`, for the crate's error).

/// Why an image's SBOM could not be made. What the image's own files leave unreadable is no
/// error: the report says what it did not cover.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// The image's manifest or config, or a layer's blob, that the store cannot give.
    #[error("cannot read image {what}")]
    Image {
        what: String,
        #[source]
        source: Box<cairn_layers::Error>,
    },
    /// A layer whose tar stream cannot be read.
    #[error("cannot read layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: std::io::Error,
    },
}
