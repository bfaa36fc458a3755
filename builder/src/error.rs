//! The builder's error type: what failed, naming the Dockerfile location or the path.

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
