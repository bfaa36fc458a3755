//! cairn-layers owns bytes at rest and in transit: layer tars (diff → tar with OCI whiteouts,
//! tar → directory, safely), compression, the content-addressed store, images, archives.

pub mod apply;
pub mod archive;
pub mod attest;
pub mod compress;
pub mod deferred;
pub mod diff;
pub mod digest;
pub mod error;
pub mod idmap;
pub mod image;
pub mod layer;
pub mod layer_tar;
pub mod layout;
pub mod listing;
pub mod owner;
pub mod pipeline;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod squash;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod vfscap;
pub mod whiteout;

pub use digest::Digest;
pub use error::{Error, Result};
pub use idmap::{IdMap, IdRange};
pub use reference::Reference;
pub use store::Store;
