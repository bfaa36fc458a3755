//! The overlay snapshotter: the kernel's overlayfs over the layers unpacked once each in the
//! store; the upper directory is the step's diff.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use cairn_layers::apply::{ApplyOptions, Whiteouts};
use cairn_layers::diff::{TarOptions, write_upperdir};
use cairn_layers::image::Descriptor;
use cairn_layers::{Digest, Store};
use rustix::fs::{AtFlags, OFlags};
use rustix::mount::MountFlags;

use super::{Root, Snapshot};
use crate::error::{Result, io_err};
use crate::sandbox::error::report;
use crate::sandbox::proto::{Reply, Request, RootSpec};
use crate::sandbox::sys::{self, HelperError};
use crate::sandbox::{MappingKind, Sandbox, Snapshotter, Stdio3, confine};

/// The opaque-directory attribute overlayfs uses inside a user namespace (`userxattr`).
pub(crate) const OPAQUE_XATTR: &str = "user.overlay.opaque";

#[derive(Debug)]
pub(super) struct Overlay;

pub(super) static OVERLAY: Overlay = Overlay;

impl Snapshot for Overlay {
    fn kind(&self) -> Snapshotter {
        Snapshotter::Overlay
    }

    /// Lowers from the store (an empty one for an image without layers).
    fn prepare(
        &self,
        sb: &Sandbox,
        store: &Store,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        dir: &Path,
    ) -> Result<RootSpec> {
        let make = |p: &Path| std::fs::create_dir_all(p).map_err(io_err("create", p));
        let mut lowers = Vec::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids).rev() {
            let lower = lowerdir(sb, store, layer, diff_id)?;
            // overlayfs refuses a lowerdir given twice (ELOOP); an image can hold one layer
            // twice (two COPY steps that write the same files). The upper occurrence covers
            // everything the lower one holds, so the lower one is left out.
            if !lowers.contains(&lower) {
                lowers.push(lower);
            }
        }
        if lowers.is_empty() {
            let empty = dir.join("empty");
            make(&empty)?;
            lowers.push(empty);
        }
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            make(d)?;
        }
        // The upper directory's own metadata is the container root's: not the umask's, and,
        // for root's builds, not host root's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &upper))?;
        sb.own_as_container_root(&upper)?;
        Ok(RootSpec::Overlay {
            lowers,
            upper,
            work,
            merged,
        })
    }
}

/// A layer unpacked as an overlay lowerdir with its owners, shared through the store.
fn lowerdir(sb: &Sandbox, store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
    let key = sb.mapping.store_key();
    if sb.mapping.kind == MappingKind::Root {
        // Root chowns to the mapped host ids itself: no helper needed.
        let opts = ApplyOptions {
            whiteouts: Whiteouts::Overlay {
                opaque_xattr: OPAQUE_XATTR,
            },
            id_map: sb.mapping.ids.clone(),
            chown: true,
            skip_devices: false,
        };
        return Ok(store.unpacked_layer_keyed(layer, diff_id, &key, &opts)?);
    }
    Ok(store.unpacked_layer_with(diff_id, &key, |dir| {
        let ids = sb
            .unpack(store, std::slice::from_ref(layer), dir, true)
            .map_err(|e| cairn_layers::Error::invalid(format!("layer {diff_id}"), report(&e)))?;
        ids.into_iter().next().ok_or_else(|| {
            cairn_layers::Error::invalid(format!("layer {diff_id}"), "nothing unpacked")
        })
    })?)
}

/// Whether overlayfs mounts on this store, or why not.
pub(super) fn usable(sb: &Sandbox, store: &Store) -> std::result::Result<(), String> {
    // Whether overlayfs mounts on this store changes only with the kernel or the user:
    // a success is remembered until the next boot, which spares every build after the
    // first a helper and a mount (a tenth of a one-RUN rebuild).
    let marker = store.root().join("overlay-ok");
    let stamp = format!(
        "{} {}\n",
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim(),
        rustix::process::geteuid().as_raw()
    );
    let known = std::fs::read_to_string(&marker).is_ok_and(|m| m == stamp);
    if known {
        return Ok(());
    }
    let dir = store
        .tmp_dir()
        .join(format!("probe-{}", std::process::id()));
    let probed = probe_with_helper(sb, &dir);
    let _ = store.remove_tree(&dir);
    if probed.is_ok() {
        let _ = std::fs::write(&marker, &stamp);
    }
    probed
}

fn probe_with_helper(sb: &Sandbox, dir: &Path) -> std::result::Result<(), String> {
    let mut h = sb
        .spawn(
            &Request::Probe {
                dir: dir.to_path_buf(),
            },
            Stdio3::Inherit,
            None,
            None,
        )
        .map_err(|e| report(&e))?;
    let r = match h.recv().map_err(|e| report(&e))? {
        Reply::Probed { overlay } => overlay,
        Reply::Failed { message } => Err(message),
        other => Err(format!("unexpected answer {other:?}")),
    };
    let _ = h.finish();
    r
}

/// The helper's half of [`usable`]: an overlay mounted and written to under `dir`.
pub(in crate::sandbox) fn probe(dir: &Path) -> Result<(), HelperError> {
    let sub = |n: &str| dir.join(n);
    for n in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(sub(n)).map_err(HelperError::at("create", &sub(n)))?;
    }
    sys::unshare(sys::CLONE_NEWNS)?;
    mount(&[sub("lower")], &sub("upper"), &sub("work"), &sub("merged"))?;
    // A whiteout is a 0/0 character device: the upper filesystem must let us make one.
    std::fs::create_dir(sub("merged/d")).map_err(HelperError::call("mkdir in overlay"))?;
    std::fs::remove_dir(sub("merged/d")).map_err(HelperError::call("rmdir in overlay"))?;
    sys::umount_detach(&sub("merged"))
}

/// overlayfs with user-namespace attributes; no redirects or metacopy, so the upper directory
/// is a plain layer.
pub(in crate::sandbox) fn mount(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), HelperError> {
    mount_with(lowers, upper, work, merged, false)
}

/// [`mount`] with the volatile option, for a build step: the overlay's last unmount would
/// otherwise sync the whole upper filesystem, which after an apt step means waiting a second
/// or more for hundreds of megabytes to reach the disk. What must survive a crash is the
/// layer blob, and the store fsyncs that; the kept upper directory is, like any unpacked
/// layer, a cache. A kernel without the option (before 5.10) mounts as [`mount`] does.
fn mount_volatile(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), HelperError> {
    mount_with(lowers, upper, work, merged, true).or_else(|_| mount(lowers, upper, work, merged))
}

/// The overlay at `merged`, with the volatile option when asked.
fn mount_with(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    volatile: bool,
) -> Result<(), HelperError> {
    let mut data = overlay_options(lowers, upper, work);
    if volatile {
        data.push_str(",volatile");
    }
    if data.len() < 4000 {
        return sys::mount(
            "overlay",
            merged,
            "overlay",
            MountFlags::empty(),
            Some(&data),
        );
    }
    mount_many(lowers, upper, work, merged, volatile)
}

/// The mount options naming the directories (mount(2) takes one page of them).
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .map(|p| {
            p.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
        })
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Too many lowers for one page of mount options: the new mount API, one `lowerdir+` each.
fn mount_many(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
    volatile: bool,
) -> Result<(), HelperError> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
        fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    };
    let e = |what: &str, err: rustix::io::Errno| HelperError::call(format!("overlay {what}"))(err);
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|x| e("fsopen", x))?;
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path())
            .map_err(|x| e(&format!("lowerdir+ {}", l.display()), x))?;
    }
    fsconfig_set_string(&fs, "upperdir", upper).map_err(|x| e("upperdir", x))?;
    fsconfig_set_string(&fs, "workdir", work).map_err(|x| e("workdir", x))?;
    fsconfig_set_flag(&fs, "userxattr").map_err(|x| e("userxattr", x))?;
    if volatile {
        fsconfig_set_flag(&fs, "volatile").map_err(|x| e("volatile", x))?;
    }
    fsconfig_create(&fs).map_err(|x| e("create", x))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|x| e("fsmount", x))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        merged,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|x| e("move_mount", x))
}

/// [`RootSpec::Overlay`] in the helper.
pub(super) struct OverlayRoot<'a> {
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    pub merged: &'a Path,
}

impl Root for OverlayRoot<'_> {
    /// Through the lowers top first, each read inside itself: they hold whiteouts as 0/0
    /// character devices.
    fn read_image_file(&self, rel: &str) -> String {
        read_lowers(self.lowers, rel, 0)
    }

    fn keeps_diff(&self) -> bool {
        true
    }

    fn scratch(&self) -> Option<&Path> {
        Some(self.work)
    }

    fn mount(&self, scratch_only: bool) -> Result<PathBuf, HelperError> {
        if scratch_only {
            mount_volatile(self.lowers, self.upper, self.work, self.merged)?;
        } else {
            mount(self.lowers, self.upper, self.work, self.merged)?;
        }
        Ok(self.merged.to_path_buf())
    }

    fn unmount(&self, touched: &[PathBuf]) -> Result<(), HelperError> {
        sys::umount_detach(self.merged)?;
        prune_touched(self.upper, touched);
        Ok(())
    }

    fn detach(&self) {
        let _ = sys::umount_detach(self.merged);
    }

    /// An overlay step that changed nothing has an empty upper directory: no tar at all, so
    /// cairn neither compresses nor stores an empty layer.
    fn unchanged(&self) -> bool {
        std::fs::read_dir(self.upper).is_ok_and(|mut d| d.next().is_none())
    }

    fn write_diff(&self, out: &mut dyn Write, opts: &TarOptions) -> cairn_layers::Result<()> {
        write_upperdir(self.upper, out, opts).map(drop)
    }

    /// The upper directory is the new layer unpacked as a lowerdir: renamed into the store,
    /// later steps need not unpack it from its blob.
    fn keep(&self, to: &Path) {
        // Best effort: without it cairn unpacks the layer from its blob when needed.
        let _ = std::fs::rename(self.upper, to);
    }
}

/// Drops the copies overlayfs made in `upper` of directories that only got a mount point:
/// empty and not opaque means the step changed nothing in them.
fn prune_touched(upper: &Path, touched: &[PathBuf]) {
    let Ok(base) = confine::open_host(upper) else {
        return;
    };
    let mut touched = touched.to_vec();
    touched.sort();
    touched.dedup();
    for rel in touched.iter().rev() {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let Ok(copy) = confine::open_beneath(base.as_fd(), rel, OFlags::RDONLY | OFlags::DIRECTORY)
        else {
            continue;
        };
        let empty = rustix::fs::Dir::read_from(&copy).is_ok_and(|mut d| {
            d.all(|e| e.is_ok_and(|e| matches!(e.file_name().to_bytes(), b"." | b"..")))
        });
        let opaque = rustix::fs::fgetxattr(&copy, OPAQUE_XATTR, &mut [0u8; 4]).is_ok();
        if empty
            && !opaque
            && let Ok(dir) =
                confine::open_beneath(base.as_fd(), parent, OFlags::PATH | OFlags::DIRECTORY)
        {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
        }
    }
}

/// `rel` in the stack of unpacked layers `lowers` (top first) as overlayfs merges them: the
/// topmost layer that has the name decides. A symlink there that leads nowhere in its own
/// layer is followed again through the whole stack (a link to a file of a lower layer), at
/// most `MAX_SYMLINKS` times, as the kernel does.
fn read_lowers(lowers: &[PathBuf], rel: &str, hops: u32) -> String {
    for l in lowers {
        if let Some(text) = super::read_lower(l, rel) {
            return text;
        }
        let Some(target) = link_in(l, rel) else {
            continue;
        };
        if hops >= cairn_layers::rootfs::MAX_SYMLINKS {
            return String::new();
        }
        // Relative to the link's directory, cleaned here: a lower layer may lack the
        // directories the kernel would walk `..` through, which the merged view has.
        let next = if target.starts_with('/') {
            target
        } else {
            format!("{rel}/../{target}")
        };
        let next = cairn_layers::rootfs::clean_names(&next).join("/");
        return read_lowers(lowers, &next, hops + 1);
    }
    String::new()
}

/// The target of `rel` in `lower` when it is a symlink, read inside `lower`.
fn link_in(lower: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags};
    let rel = Path::new(rel.trim_start_matches('/'));
    let name = rel.file_name()?;
    let parent = rel.parent().map(|p| p.to_string_lossy().into_owned());
    let root = rustix::fs::open(
        lower,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let dir = cairn_layers::rootfs::open_in_root(
        std::os::fd::AsFd::as_fd(&root),
        parent.as_deref().unwrap_or(""),
        OFlags::PATH | OFlags::DIRECTORY,
    )
    .ok()?;
    let target = rustix::fs::readlinkat(&dir, name, Vec::new()).ok()?;
    Some(target.to_string_lossy().into_owned())
}
