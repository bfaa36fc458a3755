//! `cairn run`'s own failures (kept here, below `container`, so the crate's error can wrap them).

use super::user::LookupError;

/// Why `cairn run` could not start its container.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image is not in the store; the source, when there is one, says why the name
    /// found none (an ID prefix of several images, a bad reference).
    #[error("run: image {image:?} is not in the store; build it, or load it with `cairn load`")]
    NoImage {
        image: String,
        #[source]
        source: Option<Box<cairn_layers::Error>>,
    },
    /// The user to run as, which the image's files do not resolve.
    #[error("run: user {spec}: {source}")]
    User {
        spec: String,
        #[source]
        source: LookupError,
    },
    /// Neither the image nor the command line says what to run.
    #[error("run: image {image} has no CMD or ENTRYPOINT: give a command")]
    NoCommand { image: String },
}
