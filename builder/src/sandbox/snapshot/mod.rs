//! How a step's root filesystem is made from its image's layers and turned back into a layer:
//! one [`Snapshot`] per build, chosen when the sandbox is made, prepares each root; the root
//! itself is a [`Root`], opened from the [`RootSpec`] that describes it.

mod copy;
pub(super) mod overlay;

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_layers::diff::TarOptions;
use cairn_layers::image::Descriptor;
use cairn_layers::{Digest, Store};

use super::proto::RootSpec;
use super::sys::HelperError;
use super::{Sandbox, SandboxError, Snapshotter};
use crate::error::Result;

/// cairn's side of a snapshotter: chosen once per build ([`choose`]).
pub(super) trait Snapshot: std::fmt::Debug + Send + Sync {
    /// The option this is (never [`Snapshotter::Auto`]).
    fn kind(&self) -> Snapshotter;

    /// A container's root filesystem over an image's layers, its working directories made
    /// under `dir`.
    fn prepare(
        &self,
        sb: &Sandbox,
        store: &Store,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        dir: &Path,
    ) -> Result<RootSpec>;
}

/// The root filesystem a step runs on, as cairn prepared it: mounted, diffed and kept by the
/// helper, which is another process and so follows the [`RootSpec`] it is sent rather than
/// choosing again; read and cleaned up after by cairn.
pub(super) trait Root {
    /// A file of the image below the step (`etc/passwd`), read from its layers; empty when
    /// it is missing.
    fn read_image_file(&self, rel: &str) -> String;
    /// Whether the diff's directory can become the new layer's unpacked form ([`Root::keep`]).
    fn keeps_diff(&self) -> bool;
    /// A directory that only mounting needed, removed after the step even when the root is
    /// kept (`cairn run` without `--rm`).
    fn scratch(&self) -> Option<&Path>;
    /// Makes the root ready (mounts it); the directory that becomes the step's `/`. A
    /// `scratch_only` root's changes matter only as the layer read from it after the step:
    /// its filesystem need not make them durable.
    fn mount(&self, scratch_only: bool) -> Result<PathBuf, HelperError>;
    /// After the step: takes the root down again; `touched` are directories the helper made
    /// mount points in, which do not belong in the diff when the step left them alone.
    fn unmount(&self, touched: &[PathBuf]) -> Result<(), HelperError>;
    /// Best effort, for a step stopped early: nothing of the root stays mounted, so its run
    /// directory can be removed without reaching into a mount.
    fn detach(&self);
    /// Known to hold no change at all (no layer is written then).
    fn unchanged(&self) -> bool;
    /// Writes the step's changes as a layer tar.
    fn write_diff(&self, out: &mut dyn Write, opts: &TarOptions) -> cairn_layers::Result<()>;
    /// Hands the diff's directory to cairn at `to` where it can be used as the new layer's
    /// unpacked form (best effort).
    fn keep(&self, to: &Path);
}

/// The most of an image file cairn reads itself (/etc/passwd, /etc/group): far above any real
/// image's, far below harm.
pub const IMAGE_FILE_LIMIT: u64 = 16 << 20;

/// `rel` in one unpacked tree, inside it: Some("") for what is not a regular file (a whiteout
/// among them: the file was deleted), None when nothing is there.
pub(super) fn read_lower(lower: &Path, rel: &str) -> Option<String> {
    match cairn_layers::rootfs::read_in_root(lower, rel, IMAGE_FILE_LIMIT) {
        Ok(cairn_layers::rootfs::Found::File(bytes)) => {
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Ok(cairn_layers::rootfs::Found::Missing) => None,
        Ok(cairn_layers::rootfs::Found::NotAFile(_)) | Err(_) => Some(String::new()),
    }
}

impl RootSpec {
    /// A file of the image below the step (`etc/passwd`), read from its layers; empty when
    /// it is missing.
    pub fn read_image_file(&self, rel: &str) -> String {
        self.open().read_image_file(rel)
    }

    /// Whether the helper can hand the diff's directory over as the new layer unpacked
    /// (`RunSpec::keep_upper`).
    pub fn keeps_diff(&self) -> bool {
        self.open().keeps_diff()
    }

    /// A directory that only mounting needed, to remove after the step even when the root
    /// is kept.
    pub fn scratch(&self) -> Option<PathBuf> {
        self.open().scratch().map(Path::to_path_buf)
    }

    /// The handle on this root.
    pub(super) fn open(&self) -> Box<dyn Root + '_> {
        match self {
            RootSpec::Overlay {
                lowers,
                upper,
                work,
                merged,
            } => Box::new(overlay::OverlayRoot {
                lowers,
                upper,
                work,
                merged,
            }),
            RootSpec::Copy { lower, root } => Box::new(copy::CopyRoot { lower, root }),
            RootSpec::Recorded { root } => Box::new(copy::CopyRoot { lower: root, root }),
        }
    }
}

/// The build's snapshot, for the requested option: copy when asked; overlay when asked, or
/// for `auto` when overlayfs mounts on this store (else copy, with a warning).
pub(super) fn choose(
    sb: &Sandbox,
    store: &Store,
    requested: Snapshotter,
) -> Result<(&'static dyn Snapshot, Option<String>)> {
    if requested == Snapshotter::Copy {
        return Ok((&copy::COPY, None));
    }
    if sb.isolation.mode == super::IsolationMode::Chroot {
        // Overlay needs a mount; a chroot's root is a copy of its own.
        return match requested {
            Snapshotter::Overlay => Err(SandboxError::OverlayUnusable(
                "isolation chroot cannot mount; it uses the copy snapshotter".into(),
            )
            .into()),
            _ => Ok((&copy::RECORDED, None)),
        };
    }
    match (overlay::usable(sb, store), requested) {
        (Ok(()), _) => Ok((&overlay::OVERLAY, None)),
        (Err(why), Snapshotter::Overlay) => Err(SandboxError::OverlayUnusable(why).into()),
        (Err(why), _) => Ok((
            &copy::COPY,
            Some(format!(
                "overlayfs cannot be mounted on the store ({why}); using the copy snapshotter"
            )),
        )),
    }
}

/// The snapshot of a sandbox that never runs a step (`cairn prune`'s).
pub(super) fn unused() -> &'static dyn Snapshot {
    &overlay::OVERLAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn image_files_are_read_from_the_layers_below_the_step() {
        let t = tempfile::tempdir().unwrap();
        let dir = |n: &str| {
            let d = t.path().join(n);
            std::fs::create_dir_all(d.join("etc")).unwrap();
            d
        };
        let (top, bottom, root) = (dir("top"), dir("bottom"), dir("root"));
        std::fs::write(bottom.join("etc/passwd"), "bottom").unwrap();
        std::fs::write(bottom.join("etc/group"), "bottom").unwrap();
        std::fs::write(top.join("etc/passwd"), "top").unwrap();
        std::fs::write(root.join("etc/passwd"), "changed by the step").unwrap();
        let overlay = RootSpec::Overlay {
            lowers: vec![top.clone(), bottom.clone()],
            upper: root.clone(),
            work: t.path().join("work"),
            merged: t.path().join("merged"),
        };
        let copy = RootSpec::Copy {
            lower: top.clone(),
            root: root.clone(),
        };
        let cases = [
            (&overlay, "etc/passwd", "top"),
            (&overlay, "etc/group", "bottom"),
            (&overlay, "etc/shadow", ""),
            (&copy, "etc/passwd", "top"),
            (&copy, "etc/group", ""),
        ];
        for (spec, rel, want) in cases {
            assert_eq!(spec.read_image_file(rel), want, "{spec:?} {rel}");
        }
        assert!(overlay.keeps_diff() && !copy.keeps_diff());
        assert_eq!(overlay.scratch(), Some(t.path().join("work")));
        assert_eq!(copy.scratch(), None);
    }
}
