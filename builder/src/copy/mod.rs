//! COPY and ADD: Docker's source and destination rules, streamed from the sources straight
//! into a layer tar (owners, modes and times set in the headers, so no chown is ever needed).
//!
//! Along the data path: `request.rs` (what is asked) → `root.rs` and `sources.rs` (what the
//! sources name) → `dest.rs` (where they land) → `plan.rs` (every entry decided, and the cache
//! key) → `stream.rs` (the layer tar), with `archive.rs` for ADD's archives, [`from_meta`] for
//! COPY --from's owners and xattrs, and `path.rs`, `entry.rs` and `error.rs` below them all.

use std::collections::BTreeMap;
use std::io::Write;

use cairn_layers::listing::DirMeta;

use crate::error::Result;

mod archive;
mod dest;
mod entry;
mod error;
pub mod from_meta;
mod path;
mod plan;
mod request;
mod root;
mod sources;
mod stream;

pub use dest::ImageView;
pub use error::CopyError;
pub use path::resolve_in_root;
pub use plan::{CopyPlan, plan_copy};
pub use request::{CopyRequest, CopySource};
pub use root::SourceRoot;

/// Writes one COPY or ADD as a layer tar to `out`, and returns the directories it holds.
/// `image` is the stage's filesystem before the step, for deciding whether the destination is
/// an existing directory.
pub fn copy_to_tar(
    from: SourceRoot<'_>,
    req: &CopyRequest,
    image: &ImageView<'_>,
    out: &mut dyn Write,
) -> Result<BTreeMap<String, DirMeta>> {
    plan_copy(from, req, image)?.write(req, out)
}
