//! cairn-builder executes the stage graph: build context, COPY/ADD, RUN in a rootless sandbox,
//! cache. Today it holds the metadata instructions' effect on an image config ([`meta`]), which
//! `cairn import --change` uses; the build pipeline comes with the build issue.

pub mod error;
pub mod meta;

pub use error::{Error, Result};
