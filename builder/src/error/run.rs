//! `cairn run`'s and the container commands' own failures (kept here, below `container`, so
//! the crate's error can wrap them).

use std::path::PathBuf;

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
    /// A `--name` another container has; docker's words, which scripts match.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("No such container: {0}")]
    NoContainer(String),
    #[error("multiple containers found with provided prefix: {0}")]
    AmbiguousContainer(String),
    #[error(
        "cannot remove container \"/{0}\": container is running: stop the container before \
         removing or force remove"
    )]
    Running(String),
    #[error("container record {}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// An `--env-file` line that is not `KEY[=VALUE]`.
    #[error("{}: line {line}: {reason}", file.display())]
    EnvFile {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    /// A container whose root cannot be compared with its image.
    #[error("commit: container {id}: {reason}")]
    Commit { id: String, reason: String },
}
