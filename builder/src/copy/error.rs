//! The errors COPY's rules fail with: the instruction named, or the file and what was done to it.

use std::path::Path;

use crate::error::Error;

pub(crate) fn err(message: impl Into<String>) -> Error {
    Error::Instruction {
        instruction: "COPY".into(),
        message: message.into(),
    }
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
