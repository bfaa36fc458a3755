//! A RUN `--mount` that cannot be made (kept here, below `step::mount`, for the crate's error).

use std::path::PathBuf;

use super::image::ImageError;

/// Why a RUN --mount cannot be set up. The step's error names the mount before it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A rule of the mount's options or its source that it breaks.
    #[error("{0}")]
    Rule(String),
    /// A bind mount's source whose files cannot be read (for the step's key).
    #[error("reading {}: {source}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    /// The image `from=` names, which cannot be had.
    #[error(transparent)]
    Image(#[from] ImageError),
}
