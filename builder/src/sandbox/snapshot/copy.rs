//! The copy snapshotter: the parent's tree unpacked twice, the step run on one copy, and the
//! layer is the difference between the two.

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_layers::diff::{TarOptions, write_tree_diff};
use cairn_layers::image::Descriptor;
use cairn_layers::{Digest, Store};

use super::{Root, Snapshot};
use crate::error::Result;
use crate::sandbox::proto::RootSpec;
use crate::sandbox::sys::HelperError;
use crate::sandbox::{Sandbox, Snapshotter};

/// The copy snapshotter, or (`recorded`) isolation chroot's: one copy only, diffed against a
/// record the helper takes of it before the step (see `helper/chroot.rs`), half the unpacking.
#[derive(Debug)]
pub(super) struct Copy {
    recorded: bool,
}

pub(super) static COPY: Copy = Copy { recorded: false };
pub(super) static RECORDED: Copy = Copy { recorded: true };

impl Snapshot for Copy {
    fn kind(&self) -> Snapshotter {
        Snapshotter::Copy
    }

    fn prepare(
        &self,
        sb: &Sandbox,
        store: &Store,
        layers: &[Descriptor],
        _diff_ids: &[Digest],
        dir: &Path,
    ) -> Result<RootSpec> {
        let root = dir.join("root");
        sb.unpack(store, layers, &root, false)?;
        if self.recorded {
            return Ok(RootSpec::Recorded { root });
        }
        let lower = dir.join("lower");
        sb.unpack(store, layers, &lower, false)?;
        Ok(RootSpec::Copy { lower, root })
    }
}

/// [`RootSpec::Copy`] in the helper; [`RootSpec::Recorded`] too, as a copy whose lower is
/// itself: only read before the step (its image files), never diffed this way.
pub(super) struct CopyRoot<'a> {
    pub lower: &'a Path,
    pub root: &'a Path,
}

impl Root for CopyRoot<'_> {
    /// Inside the parent tree, never through it.
    fn read_image_file(&self, rel: &str) -> String {
        super::read_lower(self.lower, rel).unwrap_or_default()
    }

    fn keeps_diff(&self) -> bool {
        false
    }

    fn scratch(&self) -> Option<&Path> {
        None
    }

    fn mount(&self, _scratch_only: bool) -> Result<PathBuf, HelperError> {
        Ok(self.root.to_path_buf())
    }

    fn unmount(&self, _touched: &[PathBuf]) -> Result<(), HelperError> {
        Ok(())
    }

    fn detach(&self) {}

    fn unchanged(&self) -> bool {
        false
    }

    fn write_diff(&self, out: &mut dyn Write, opts: &TarOptions) -> cairn_layers::Result<()> {
        write_tree_diff(self.lower, self.root, out, opts).map(drop)
    }

    fn keep(&self, _to: &Path) {}
}
