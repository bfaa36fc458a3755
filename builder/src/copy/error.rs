//! The errors COPY and ADD fail with: a rule they break, or what could not be read or written.

pub use crate::error::CopyError;
use crate::error::Error;

pub(crate) fn err(message: impl Into<String>) -> Error {
    CopyError::Rule(message.into()).into()
}

pub(crate) use crate::error::io_err;

/// `map_err` for a pattern, `what` naming where it was written.
pub(crate) fn pattern_err(
    what: impl std::fmt::Display,
) -> impl FnOnce(crate::ignore::IgnoreError) -> Error {
    move |source| {
        CopyError::Pattern {
            what: what.to_string(),
            source,
        }
        .into()
    }
}
