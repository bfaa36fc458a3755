//! Layer application: an uncompressed layer tar streamed into a directory, every path kept inside it.
//!
//! # Threat model
//!
//! The tar is hostile; the target directory may already hold lower layers, whose symlinks are
//! just as hostile. Nothing else writes into the target while a layer is applied (cairn is
//! daemonless and no container runs during an apply).
//!
//! # Path resolution
//!
//! Entry names are cleaned lexically first (docker's `filepath.Clean`): a leading `/` is dropped,
//! `.` and empty components vanish, `..` removes the previous component, and a `..` that would
//! climb above the root stays at the root, in names and hardlink targets alike: what
//! containerd's unpacker (BuildKit's, so docker's) does with `filepath.Clean` and `fs.RootPath`,
//! and real images carry such entries (kaniko's path-traversal test image writes
//! `../../../tini`, which BuildKit puts at `/tini`). [`check_layer`], for `cairn import`, refuses
//! them instead, as `docker import` (moby's `archive.ApplyLayer`, a "breakout" error) does.
//!
//! The *parent directory* of an entry is then opened relative to an `O_PATH` fd of the target,
//! with **chroot semantics**: a symlink among the parent components is followed, but resolved
//! inside the target: absolute targets start again at the target, and `..` stops at it (which is
//! what containerd's `fs.RootPath` and docker's chrooted unpacker do, and what images need: a
//! layer may write `var/run/x` over a lower `var/run -> /run`). A symlink therefore can never
//! lead a write outside the target (the CVE-2018-15664 / CVE-2019-14271 class of bugs): it lands
//! where the same link would lead inside the container. The kernel does this with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` where it exists (Linux 5.6+); elsewhere a
//! manual walk does the same, one `openat(O_PATH | O_NOFOLLOW)` per component, reading each
//! symlink itself and holding the fds of the directories walked through so that `..` pops back
//! to the directory it came from. Missing directories are created only where the entry's own name
//! names them: a symlink to a missing directory is an error, never a reason to create its target.
//!
//! Hardlink targets are stricter: they name an entry already extracted, which tar writers never
//! reach through a symlink, so a symlink among their parent components is refused. The final
//! component of every operation is handled by a `*at` call on the pinned parent fd that does not
//! follow it (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`, `linkat` without
//! `AT_SYMLINK_FOLLOW`, `unlinkat`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`): an
//! existing node is removed before a new one is created, never opened through.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::EntryType;

// The kernel's MAXSYMLINKS, shared with the other resolvers: all give up on the same chains.
use crate::error::{Error, IoContext, Result};
use crate::idmap::IdMap;
use crate::rootfs::MAX_SYMLINKS;
use crate::whiteout::OVERLAY_OPAQUE_XATTRS;

pub(crate) mod meta;
mod name;
mod nodes;
mod resolve;
mod whiteouts;

pub use name::check_layer;

use meta::Meta;
use name::{Dots, Marker, checked_name, classify, clean, is_dir_entry};

/// What to do with OCI whiteout entries (image-spec layer.md, "Whiteouts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Flattening a rootfs: `.wh.name` deletes `name` (recursively), `.wh..wh..opq` empties the
    /// directory of what earlier layers put there (entries of THIS layer in that dir are kept,
    /// whatever their order in the tar).
    Apply,
    /// Unpacking one layer as an overlay lowerdir: `.wh.name` becomes a 0/0 character device
    /// `name`; `.wh..wh..opq` sets the opaque xattr on its directory.
    Overlay {
        /// `"trusted.overlay.opaque"` as real root, `"user.overlay.opaque"` inside a user
        /// namespace (one of [`OVERLAY_OPAQUE_XATTRS`]).
        opaque_xattr: &'static str,
    },
}

/// How [`apply_layer`] writes a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: Whiteouts,
    /// Container ids in the tar → ids to chown to (identity when running as root, or when
    /// running inside the build's user namespace).
    pub id_map: IdMap,
    /// Restore ownership (lchown). When it fails with EPERM the apply fails with an error naming
    /// the entry and saying that ownership needs root or a user namespace with subuid ranges —
    /// ownership is never silently collapsed to the current uid.
    pub chown: bool,
    /// Leave character and block device entries out: for a tree no mount can make `nodev`
    /// (isolation chroot's), where an image's `b 8 0` would open the host's disk. The tree is
    /// then not the layer's whole content, so only a scratch copy is unpacked this way.
    pub skip_devices: bool,
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Every entry of the tar (after GNU long-name and PAX records are merged into the entry
    /// they describe), whiteouts included.
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    /// Whiteout and opaque-directory markers among `entries`.
    pub whiteouts: u64,
}

/// Writes the uncompressed layer tar `tar` into `target` (created if missing).
///
/// Fails with [`Error::UnsafeEntry`] naming the entry when an entry would reach outside
/// `target`; nothing outside `target` is created, changed or deleted, whatever the tar holds. On
/// any error the target is left partly written and should be discarded.
///
/// Extended attributes come from PAX `SCHILY.xattr.*` records. overlayfs's own attributes
/// (`trusted.overlay.*`, `user.overlay.*`) are dropped: they are the storage driver's private
/// metadata (opaque, redirect, metacopy), not image content, and a layer must not forge them.
/// `trusted.*` and `security.*` attributes (LSM labels, IMA) are set when the kernel lets us and
/// skipped when it refuses (EPERM, EACCES, EOPNOTSUPP): `trusted.*` needs CAP_SYS_ADMIN in the
/// initial namespace, which a rootless build never has, and LSM labels are the host's policy.
/// `security.capability` is required when `chown` is set (file capabilities are part of what a
/// binary is) and best-effort otherwise, like ownership; every other attribute (`user.*`,
/// `system.*` ACLs) must be set or the apply fails naming the entry.
///
/// Modes are applied after ownership (chown clears setuid/setgid), attributes after both (chown
/// clears `security.capability`), times last; directories get their metadata in a final pass,
/// deepest first, once everything inside them is written. Times: atime is set to mtime; PAX
/// `mtime` records give sub-second precision.
pub fn apply_layer<R: Read>(tar: R, target: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    apply_with(tar, target, opts, None, None)
}

/// Applies only what a layer holds at `prefixes` (relative paths): each of them, everything
/// below, and the directories above, with whiteouts and opaque markers for those paths. For a
/// reader that will look only there, it saves writing the rest of the layer.
///
/// Returns `Ok(None)`, having applied part of the layer, when what is there cannot be had
/// that way: a symlink on or above a prefix (what it names lies elsewhere), or a hard link
/// to a file outside the prefixes. The caller then applies the whole layer (re-applying is
/// harmless).
pub fn apply_layer_under<R: Read>(
    tar: R,
    target: &Path,
    opts: &ApplyOptions,
    prefixes: &[String],
) -> Result<Option<ApplyStats>> {
    let only = Only {
        prefixes: prefixes
            .iter()
            .map(|p| {
                clean(p.as_bytes(), Dots::Refuse)
                    .map_err(|r| Error::invalid(format!("path {p:?}"), r))
            })
            .collect::<Result<_>>()?,
    };
    match apply_with(tar, target, opts, None, Some(&only)) {
        Ok(stats) => Ok(Some(stats)),
        Err(Error::Invalid { what, .. }) if what == PARTIAL => Ok(None),
        Err(e) => Err(e),
    }
}

/// The paths a partial apply restores (see [`apply_layer_under`]).
struct Only {
    prefixes: Vec<Vec<Vec<u8>>>,
}

/// How a path stands to the prefixes of a partial apply.
#[derive(PartialEq)]
enum Place {
    /// Not on the way to any prefix, nor under one.
    Outside,
    /// A directory above a prefix (the target's root included), or a prefix itself.
    Above,
    /// Strictly below a prefix.
    Below,
}

impl Only {
    fn place(&self, comps: &[Vec<u8>]) -> Place {
        let mut place = Place::Outside;
        for p in &self.prefixes {
            if comps.len() > p.len() && comps.starts_with(p) {
                return Place::Below;
            }
            if p.starts_with(comps) {
                place = Place::Above;
            }
        }
        place
    }
}

/// The `what` of the error that stops a partial apply that cannot be partial.
const PARTIAL: &str = "partial apply";

/// How parent directories are resolved inside the target (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
    Openat2,
    /// One `openat(O_PATH | O_NOFOLLOW)` per component; symlinks read and resolved by hand.
    Manual,
}

impl Strategy {
    /// openat2 when the kernel has it; ENOSYS before Linux 5.6, and EPERM or ENOSYS under
    /// seccomp profiles that predate it, mean the manual walk.
    fn detect(root: &OwnedFd) -> Strategy {
        match crate::rootfs::open_in_root(root.as_fd(), "", OFlags::PATH | OFlags::DIRECTORY) {
            Ok(_) => Strategy::Openat2,
            Err(_) => Strategy::Manual,
        }
    }
}

/// Whether symlinks among parent components may be followed (inside the root) or are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    InRoot,
    Refuse,
}

/// Directories are created owner-only and get their real mode in the final pass: as a non-root
/// user we must be able to write into a directory whose final mode is, say, 0555.
const DIR_CREATE_MODE: u32 = 0o700;
/// Regular files and device nodes start owner-only, so nothing is briefly accessible to others
/// with the wrong owner.
const FILE_CREATE_MODE: u32 = 0o600;
/// Missing parent directories: what docker and containerd create.
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// The action of the error a refused chown gives.
const OWNERSHIP: &str =
    "restore ownership (which needs root, or a user namespace with subuid/subgid ranges) of";
/// overlayfs's private xattr namespaces (overlayfs.rst, "Permission model" and "Redirect dir").
const OVERLAY_PRIVATE: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

fn apply_with<R: Read>(
    tar: R,
    target: &Path,
    opts: &ApplyOptions,
    force: Option<Strategy>,
    only: Option<&Only>,
) -> Result<ApplyStats> {
    if let Whiteouts::Overlay { opaque_xattr } = opts.whiteouts
        && !OVERLAY_OPAQUE_XATTRS.contains(&opaque_xattr)
    {
        return Err(Error::invalid(
            "apply options",
            format!(
                "{opaque_xattr:?} is not an overlayfs opaque xattr (expected one of {OVERLAY_OPAQUE_XATTRS:?})"
            ),
        ));
    }
    std::fs::create_dir_all(target).at("create", target)?;
    let root = rfs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", target)?;
    let strategy = force.unwrap_or_else(|| Strategy::detect(&root));
    let mut applier = Applier {
        root,
        target,
        opts,
        strategy,
        ours: HashSet::new(),
        whiteout_devs: HashSet::new(),
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        stats: ApplyStats::default(),
        buf: vec![0; 64 * 1024],
        only,
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| Error::stream("read the layer tar", e))?;
    let mut previous: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            let action = match &previous {
                Some(name) => format!("read the layer tar after entry {name:?}"),
                None => "read the layer tar".to_string(),
            };
            Error::stream(action, e)
        })?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        applier.entry(&mut entry, &shown)?;
        previous = Some(shown);
    }
    applier.finish()?;
    Ok(applier.stats)
}

/// Adds the path and action to a rustix error.
trait ErrnoContext<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> ErrnoContext<T> for rustix::io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(io::Error::from).at(action, path)
    }
}

/// A directory entry, named by its parent's identity: `(st_dev, st_ino, name)`.
type Key = (u64, u64, Vec<u8>);

#[allow(clippy::useless_conversion)] // st_dev and st_ino are u64 on some targets, not on others
fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev.into(), st.st_ino.into())
}

fn key(parent: &Stat, name: &[u8]) -> Key {
    let (dev, ino) = ident(parent);
    (dev, ino, name.to_vec())
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// A directory whose metadata is set in the final pass.
#[derive(Debug)]
struct DirRecord {
    comps: Vec<Vec<u8>>,
    ident: (u64, u64),
    meta: Meta,
}

/// A node whose metadata is being set.
#[derive(Debug, Clone, Copy)]
enum Node<'f> {
    /// A regular file or directory opened for I/O (not O_PATH): metadata goes through its fd.
    Open(BorrowedFd<'f>),
    /// A symlink, device or fifo, which cannot be opened without following it or waking a
    /// driver: its name in its pinned parent, never followed.
    At(BorrowedFd<'f>, &'f [u8], FileType),
}

struct Applier<'a> {
    /// `O_PATH | O_DIRECTORY` fd of the target: every path is resolved from it.
    root: OwnedFd,
    target: &'a Path,
    opts: &'a ApplyOptions,
    strategy: Strategy,
    /// Every name this layer created or wrote, so that whiteouts and opaque markers only hide
    /// what lower layers put there, in whatever order the tar lists them.
    ours: HashSet<Key>,
    /// Overlay mode: the whiteout devices this layer made (a directory replacing one is opaque).
    whiteout_devs: HashSet<Key>,
    dirs: Vec<DirRecord>,
    dir_index: HashMap<(u64, u64), usize>,
    stats: ApplyStats,
    buf: Vec<u8>,
    /// A partial apply's paths.
    only: Option<&'a Only>,
}

impl Applier<'_> {
    fn show(&self, comps: &[Vec<u8>]) -> PathBuf {
        self.target.join(os(&comps.join(&b'/')))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<()> {
        self.stats.entries += 1;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let is_dir = is_dir_entry(kind, &raw);
        let comps = checked_name(shown, &raw, is_dir, Dots::Clamp)?;
        let Some((name, parents)) = comps.split_last() else {
            // `./` or `/`: the target itself, whose metadata a directory entry may set.
            let meta = Meta::read(entry, shown)?;
            let st = rfs::fstat(&self.root).ctx("stat", self.target)?;
            self.record_dir(DirRecord {
                comps: Vec::new(),
                ident: ident(&st),
                meta,
            });
            return Ok(());
        };
        let marker = classify(name).map_err(|reason| Error::unsafe_entry(shown, reason))?;
        if let Some(only) = self.only {
            let affected: Vec<Vec<u8>> = match &marker {
                Marker::Whiteout(target) => {
                    let mut c = parents.to_vec();
                    c.push(target.to_vec());
                    c
                }
                Marker::Opaque => parents.to_vec(),
                Marker::Plain => comps.clone(),
            };
            let place = only.place(&affected);
            if place == Place::Outside {
                return Ok(());
            }
            let cannot = |why: &str| Error::invalid(PARTIAL, format!("{shown}: {why}"));
            if place == Place::Above && kind == EntryType::Symlink && !is_dir {
                return Err(cannot("a symlink on the way to a path"));
            }
            if kind == EntryType::Link {
                let link = entry.link_name_bytes().map(|l| l.into_owned());
                let target = link
                    .and_then(|l| clean(&l, Dots::Clamp).ok())
                    .unwrap_or_default();
                if only.place(&target) != Place::Below {
                    return Err(cannot("a hard link to a file outside the paths"));
                }
            }
        }
        match marker {
            Marker::Whiteout(target) => return self.whiteout(parents, target),
            Marker::Opaque => return self.opaque(parents),
            Marker::Plain => {}
        }
        let path = self.show(&comps);
        if is_dir {
            let meta = Meta::read(entry, shown)?;
            return self.directory(&comps, meta, &path);
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = Meta::read(entry, shown)?;
                self.regular(entry, shown, &comps, meta, &path)
            }
            EntryType::Symlink => {
                let meta = Meta::read(entry, shown)?;
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                self.symlink(shown, &comps, &link, meta, &path)
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                self.hardlink(shown, &comps, &link, &path)
            }
            EntryType::Char | EntryType::Block if self.opts.skip_devices => Ok(()),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let devno = |n: io::Result<Option<u32>>| {
                    n.ok().flatten().ok_or_else(|| {
                        Error::invalid(
                            format!("layer entry {shown:?}"),
                            "a device entry without valid device numbers",
                        )
                    })
                };
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    EntryType::Char => (
                        FileType::CharacterDevice,
                        rfs::makedev(devno(h.device_major())?, devno(h.device_minor())?),
                    ),
                    _ => (
                        FileType::BlockDevice,
                        rfs::makedev(devno(h.device_major())?, devno(h.device_minor())?),
                    ),
                };
                let meta = Meta::read(entry, shown)?;
                self.special(&comps, file_type, dev, meta, &path)
            }
            other => Err(Error::invalid(
                format!("layer entry {shown:?}"),
                format!(
                    "unsupported tar entry type {:?}",
                    char::from(other.as_byte())
                ),
            )),
        }
    }

    // ---- resolution -------------------------------------------------------------------------

    /// The final pass: directories' metadata, deepest first, once nothing more is written into
    /// them (a mode like 0555 would stop us, and every write would bump their mtime).
    fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.comps.len()));
        for d in &dirs {
            let path = self.show(&d.comps);
            let fd = match self.reopen_dir(&d.comps) {
                Ok(fd) => fd,
                // Replaced or deleted by a later entry: its metadata no longer applies.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(e).ctx("open", &path),
            };
            let st = rfs::fstat(&fd).ctx("stat", &path)?;
            if ident(&st) != d.ident {
                continue;
            }
            self.set_meta(Node::Open(fd.as_fd()), &d.meta, &path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::ResolveFlags;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Both resolution strategies, when the kernel has openat2 (Linux 5.6+; the forced-openat2
    /// runs are then real). Without it only the walk exists, which `strategy_detection` asserts.
    fn strategies() -> Vec<Strategy> {
        let probe = tempfile::tempdir().expect("tempdir");
        let root = rfs::open(
            probe.path(),
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .expect("open tempdir");
        match Strategy::detect(&root) {
            Strategy::Openat2 => vec![Strategy::Openat2, Strategy::Manual],
            Strategy::Manual => vec![Strategy::Manual],
        }
    }

    fn flat(chown: bool) -> ApplyOptions {
        ApplyOptions {
            whiteouts: Whiteouts::Apply,
            id_map: IdMap::identity(),
            chown,
            skip_devices: false,
        }
    }

    fn overlay(opaque_xattr: &'static str) -> ApplyOptions {
        ApplyOptions {
            whiteouts: Whiteouts::Overlay { opaque_xattr },
            id_map: IdMap::identity(),
            chown: false,
            skip_devices: false,
        }
    }

    /// A tar written header by header: names the `tar` builder refuses (`..`, absolute) go
    /// straight into the header's name bytes.
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Tar {
            Tar(tar::Builder::new(Vec::new()))
        }

        fn header(name: &[u8], kind: EntryType, link: &[u8], mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            h
        }

        fn raw(mut self, name: &str, kind: EntryType, link: &str, mode: u32, data: &[u8]) -> Tar {
            let h = Tar::header(
                name.as_bytes(),
                kind,
                link.as_bytes(),
                mode,
                data.len() as u64,
            );
            self.0.append(&h, data).expect("append");
            self
        }

        fn file(self, name: &str, data: &str) -> Tar {
            self.raw(name, EntryType::Regular, "", 0o644, data.as_bytes())
        }

        fn dir(self, name: &str) -> Tar {
            self.raw(name, EntryType::Directory, "", 0o755, b"")
        }

        fn symlink(self, name: &str, target: &str) -> Tar {
            self.raw(name, EntryType::Symlink, target, 0o777, b"")
        }

        fn hardlink(self, name: &str, target: &str) -> Tar {
            self.raw(name, EntryType::Link, target, 0o644, b"")
        }

        fn pax(mut self, records: &[(&str, &[u8])]) -> Tar {
            self.0
                .append_pax_extensions(records.iter().copied())
                .expect("pax");
            self
        }

        fn build(self) -> Vec<u8> {
            self.0.into_inner().expect("finish")
        }
    }

    /// `<tmp>/target` and its sibling `<tmp>/outside/file`, which no apply may touch.
    struct Env {
        tmp: tempfile::TempDir,
        target: PathBuf,
        outside: PathBuf,
    }

    fn env() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir(&target).expect("mkdir target");
        fs::create_dir(&outside).expect("mkdir outside");
        fs::write(outside.join("file"), "secret").expect("write");
        fs::set_permissions(outside.join("file"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        Env {
            tmp,
            target,
            outside,
        }
    }

    impl Env {
        fn t(&self, rel: &str) -> PathBuf {
            self.target.join(rel)
        }

        /// Where the absolute path of `outside` lands inside the root (chroot semantics).
        fn inside_outside(&self) -> PathBuf {
            let abs = self.outside.strip_prefix("/").expect("absolute tempdir");
            self.target.join(abs)
        }

        fn assert_outside_untouched(&self, case: &str) {
            let mut top: Vec<_> = fs::read_dir(self.tmp.path())
                .expect("read tmp")
                .map(|e| e.expect("entry").file_name())
                .collect();
            top.sort();
            assert_eq!(top, ["outside", "target"], "{case}: created next to target");
            let inside: Vec<_> = fs::read_dir(&self.outside)
                .expect("read outside")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(inside, ["file"], "{case}: outside/ changed");
            let file = self.outside.join("file");
            let md = fs::symlink_metadata(&file).expect("stat outside/file");
            assert!(md.is_file(), "{case}");
            assert_eq!(fs::read_to_string(&file).expect("read"), "secret", "{case}");
            assert_eq!(md.mode() & 0o7777, 0o644, "{case}: outside/file chmodded");
            assert_eq!(md.nlink(), 1, "{case}: outside/file hardlinked");
            assert_eq!(md.uid(), rustix::process::geteuid().as_raw(), "{case}");
        }
    }

    fn run(tar: &[u8], target: &Path, opts: &ApplyOptions, s: Strategy) -> Result<ApplyStats> {
        apply_with(tar, target, opts, Some(s), None)
    }

    fn unsafe_entry(e: &Error) -> Option<&str> {
        match e {
            Error::UnsafeEntry { entry, .. } => Some(entry),
            _ => None,
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    fn is_symlink(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    enum Want {
        /// Fails with `Error::UnsafeEntry` naming this entry.
        Unsafe(&'static str),
        /// Succeeds, and then this holds.
        Ok(fn(&Env)),
        /// Fails some other way, naming the entry in the message.
        Fails(&'static str),
    }

    struct Case {
        name: &'static str,
        setup: fn(&Env),
        tar: fn(&Env) -> Vec<u8>,
        want: Want,
    }

    fn nothing(_: &Env) {}

    fn safety_cases() -> Vec<Case> {
        vec![
            Case {
                name: "dotdot stays at the root",
                setup: nothing,
                tar: |_| Tar::new().file("../escape", "x").build(),
                want: Want::Ok(|e| assert_eq!(names(&e.target), ["escape"])),
            },
            Case {
                name: "dotdot nested stays at the root",
                setup: nothing,
                tar: |_| Tar::new().file("a/../../escape", "x").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("escape")), "x")),
            },
            Case {
                name: "dotdot after a good entry stays at the root",
                setup: nothing,
                tar: |_| Tar::new().file("ok", "x").dir("../outside/").build(),
                want: Want::Ok(|e| assert_eq!(names(&e.target), ["ok", "outside"])),
            },
            Case {
                name: "dotdot that stays inside is cleaned",
                setup: nothing,
                tar: |_| Tar::new().file("a/../b", "x").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("b")), "x")),
            },
            Case {
                name: "absolute name lands inside",
                setup: nothing,
                tar: |_| Tar::new().file("/etc/x", "x").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("etc/x")), "x")),
            },
            Case {
                name: "symlink to / then write through it",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("link", "/")
                        .file("link/escape", "x")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert!(is_symlink(&e.t("link")));
                    assert_eq!(read(&e.t("escape")), "x");
                }),
            },
            Case {
                name: "symlink to ../.. then write through it",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("link", "../..")
                        .file("link/escape", "x")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(read(&e.t("escape")), "x")),
            },
            Case {
                name: "symlink to ../outside then overwrite file through it",
                setup: |e| fs::create_dir(e.t("outside")).expect("mkdir"),
                tar: |_| {
                    Tar::new()
                        .symlink("link", "../outside")
                        .file("link/file", "pwned")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(read(&e.t("outside/file")), "pwned")),
            },
            Case {
                name: "symlink to ../outside, missing inside the root",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("link", "../outside")
                        .file("link/file", "pwned")
                        .build()
                },
                want: Want::Fails("link/file"),
            },
            Case {
                name: "symlink to a dir inside, through dots",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .dir("a/")
                        .dir("a/b/")
                        .symlink("a/b/up", "../../..")
                        .file("a/b/up/x", "x")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(read(&e.t("x")), "x")),
            },
            Case {
                name: "absolute symlink resolved in the root (merged /usr)",
                setup: |e| fs::create_dir_all(e.t("usr/lib")).expect("mkdir"),
                tar: |_| {
                    Tar::new()
                        .symlink("lib", "/usr/lib")
                        .file("lib/libc.so", "elf")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(read(&e.t("usr/lib/libc.so")), "elf")),
            },
            Case {
                name: "lower-layer absolute symlink to outside",
                setup: |e| {
                    std::os::unix::fs::symlink(&e.outside, e.t("lower")).expect("symlink");
                    fs::create_dir_all(e.inside_outside()).expect("mkdir");
                },
                tar: |_| Tar::new().file("lower/file", "pwned").build(),
                want: Want::Ok(|e| {
                    assert_eq!(read(&e.inside_outside().join("file")), "pwned");
                }),
            },
            Case {
                name: "lower-layer absolute symlink to outside, missing inside the root",
                setup: |e| std::os::unix::fs::symlink(&e.outside, e.t("lower")).expect("symlink"),
                tar: |_| Tar::new().file("lower/file", "pwned").build(),
                want: Want::Fails("lower/file"),
            },
            Case {
                name: "lower-layer relative symlink to outside",
                setup: |e| {
                    std::os::unix::fs::symlink("../outside", e.t("lower")).expect("ln");
                    fs::create_dir(e.t("outside")).expect("mkdir");
                },
                tar: |_| {
                    Tar::new()
                        .dir("lower/new/")
                        .file("lower/new/f", "x")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(read(&e.t("outside/new/f")), "x")),
            },
            Case {
                name: "lower-layer relative symlink to outside, missing inside the root",
                setup: |e| std::os::unix::fs::symlink("../outside", e.t("lower")).expect("ln"),
                tar: |_| {
                    Tar::new()
                        .dir("lower/new/")
                        .file("lower/new/f", "x")
                        .build()
                },
                want: Want::Fails("lower/new"),
            },
            Case {
                name: "lower-layer symlink chain",
                setup: |e| {
                    std::os::unix::fs::symlink("b", e.t("a")).expect("ln");
                    std::os::unix::fs::symlink(&e.outside, e.t("b")).expect("ln");
                    fs::create_dir_all(e.inside_outside()).expect("mkdir");
                },
                tar: |_| Tar::new().file("a/file", "pwned").build(),
                want: Want::Ok(|e| {
                    assert_eq!(read(&e.inside_outside().join("file")), "pwned");
                }),
            },
            Case {
                name: "symlink loop",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("a", "b")
                        .symlink("b", "a")
                        .file("a/x", "x")
                        .build()
                },
                want: Want::Fails("a/x"),
            },
            Case {
                name: "symlink to a missing dir creates nothing",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("l", "missing/dir")
                        .file("l/x", "x")
                        .build()
                },
                want: Want::Fails("l/x"),
            },
            Case {
                name: "hardlink to ../outside/file links the root's outside/file",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .file("outside/file", "in")
                        .hardlink("h", "../outside/file")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert_eq!(read(&e.t("h")), "in");
                    assert_eq!(fs::metadata(e.t("h")).expect("stat").nlink(), 2);
                }),
            },
            Case {
                name: "hardlink to ../outside/file, missing in the root",
                setup: nothing,
                tar: |_| Tar::new().hardlink("h", "../outside/file").build(),
                want: Want::Fails("h"),
            },
            Case {
                name: "hardlink through a symlink of this layer",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("l", "../outside")
                        .hardlink("h", "l/file")
                        .build()
                },
                want: Want::Unsafe("h"),
            },
            Case {
                name: "hardlink through a lower-layer absolute symlink",
                setup: |e| std::os::unix::fs::symlink(&e.outside, e.t("l")).expect("ln"),
                tar: |_| Tar::new().hardlink("h", "l/file").build(),
                want: Want::Unsafe("h"),
            },
            Case {
                name: "hardlink to a symlink links the symlink",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("s", "../outside/file")
                        .hardlink("h", "s")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert!(is_symlink(&e.t("h")));
                    let (s, h) = (e.t("s"), e.t("h"));
                    let ino = |p: &Path| fs::symlink_metadata(p).expect("stat").ino();
                    assert_eq!(ino(&s), ino(&h));
                }),
            },
            Case {
                name: "absolute hardlink target is inside",
                setup: nothing,
                tar: |_| Tar::new().file("x", "data").hardlink("h", "/x").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("h")), "data")),
            },
            Case {
                name: "whiteout of ..",
                setup: nothing,
                tar: |_| Tar::new().file(".wh...", "").build(),
                want: Want::Unsafe(".wh..."),
            },
            Case {
                name: "whiteout of .",
                setup: nothing,
                tar: |_| Tar::new().file("d/.wh..", "").build(),
                want: Want::Unsafe("d/.wh.."),
            },
            Case {
                name: "whiteout of a whiteout",
                setup: nothing,
                tar: |_| Tar::new().file(".wh..wh.file", "").build(),
                want: Want::Unsafe(".wh..wh.file"),
            },
            Case {
                name: "whiteout as a directory",
                setup: nothing,
                tar: |_| Tar::new().file(".wh.x/y", "").build(),
                want: Want::Unsafe(".wh.x/y"),
            },
            Case {
                name: "whiteout through a lower symlink deletes nothing outside",
                setup: |e| std::os::unix::fs::symlink(&e.outside, e.t("l")).expect("ln"),
                tar: |_| Tar::new().file("l/.wh.file", "").build(),
                want: Want::Ok(|e| assert!(is_symlink(&e.t("l")))),
            },
            Case {
                name: "whiteout of a lower symlink deletes the link only",
                setup: |e| std::os::unix::fs::symlink(&e.outside, e.t("l")).expect("ln"),
                tar: |_| Tar::new().file(".wh.l", "").build(),
                want: Want::Ok(|e| assert!(fs::symlink_metadata(e.t("l")).is_err())),
            },
            Case {
                name: "opaque through a lower symlink empties nothing outside",
                setup: |e| std::os::unix::fs::symlink("../outside", e.t("l")).expect("ln"),
                tar: |_| Tar::new().file("l/.wh..wh..opq", "").build(),
                want: Want::Ok(|e| assert!(is_symlink(&e.t("l")))),
            },
            Case {
                name: "symlink of this layer replaced by a file",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .symlink("s", "../outside/file")
                        .file("s", "pwned")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert!(!is_symlink(&e.t("s")));
                    assert_eq!(read(&e.t("s")), "pwned");
                }),
            },
            Case {
                name: "lower symlink replaced by a file",
                setup: |e| {
                    std::os::unix::fs::symlink(e.outside.join("file"), e.t("s")).expect("ln")
                },
                tar: |_| Tar::new().file("s", "pwned").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("s")), "pwned")),
            },
            Case {
                name: "lower symlink replaced by a directory",
                setup: |e| std::os::unix::fs::symlink(&e.outside, e.t("etc")).expect("ln"),
                tar: |_| Tar::new().dir("etc/").file("etc/passwd", "root").build(),
                want: Want::Ok(|e| {
                    assert!(fs::symlink_metadata(e.t("etc")).expect("stat").is_dir());
                    assert_eq!(read(&e.t("etc/passwd")), "root");
                }),
            },
            Case {
                name: "lower symlink replaced by a hardlink",
                setup: |e| {
                    std::os::unix::fs::symlink(e.outside.join("file"), e.t("h")).expect("ln")
                },
                tar: |_| Tar::new().file("x", "x").hardlink("h", "x").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("h")), "x")),
            },
            Case {
                name: "directory over a file",
                setup: |e| fs::write(e.t("lowerfile"), "lower").expect("write"),
                tar: |_| {
                    Tar::new()
                        .file("x", "x")
                        .dir("x/")
                        .file("x/y", "y")
                        .dir("lowerfile/")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert_eq!(read(&e.t("x/y")), "y");
                    assert!(e.t("lowerfile").is_dir());
                }),
            },
            Case {
                name: "file over a directory of this layer",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .raw("d/", EntryType::Directory, "", 0o500, b"")
                        .file("d/x", "x")
                        .file("d", "file")
                        .build()
                },
                want: Want::Ok(|e| {
                    assert_eq!(read(&e.t("d")), "file");
                    let mode = fs::metadata(e.t("d")).expect("stat").mode();
                    assert_eq!(mode & 0o7777, 0o644);
                }),
            },
            Case {
                name: "hardlink to a lower-layer file",
                setup: |e| fs::write(e.t("lower"), "lower").expect("write"),
                tar: |_| Tar::new().hardlink("sub/h", "lower").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("sub/h")), "lower")),
            },
            Case {
                name: "hardlink to a missing file",
                setup: nothing,
                tar: |_| Tar::new().hardlink("h", "missing").build(),
                want: Want::Fails("h"),
            },
            Case {
                name: "file over a directory",
                setup: |e| {
                    fs::create_dir_all(e.t("d/sub")).expect("mkdir");
                    fs::write(e.t("d/sub/f"), "lower").expect("write");
                },
                tar: |_| Tar::new().file("d", "now a file").build(),
                want: Want::Ok(|e| assert_eq!(read(&e.t("d")), "now a file")),
            },
            Case {
                name: "directory over a directory keeps its content",
                setup: |e| {
                    fs::create_dir(e.t("d")).expect("mkdir");
                    fs::write(e.t("d/lower"), "lower").expect("write");
                },
                tar: |_| Tar::new().dir("d/").file("d/new", "new").build(),
                want: Want::Ok(|e| assert_eq!(names(&e.t("d")), ["lower", "new"])),
            },
            Case {
                name: "a file cannot replace the root",
                setup: nothing,
                tar: |_| Tar::new().file(".", "x").build(),
                want: Want::Unsafe("."),
            },
            Case {
                name: "a symlink cannot replace the root",
                setup: nothing,
                tar: |_| Tar::new().symlink("/", "/tmp").build(),
                want: Want::Unsafe("/"),
            },
            Case {
                name: "./ sets the root's metadata",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .raw("./", EntryType::Directory, "", 0o750, b"")
                        .build()
                },
                want: Want::Ok(|e| {
                    let md = fs::metadata(&e.target).expect("stat");
                    assert_eq!(md.mode() & 0o7777, 0o750);
                    assert_eq!(md.mtime(), 1_600_000_000);
                }),
            },
            Case {
                name: "NUL in a PAX path",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .pax(&[("path", b"a\0/../../x")])
                        .file("placeholder", "x")
                        .build()
                },
                want: Want::Unsafe("a\0/../../x"),
            },
            Case {
                name: "PAX path climbing stays at the root",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .pax(&[("path", b"../../escape")])
                        .file("placeholder", "x")
                        .build()
                },
                want: Want::Ok(|e| assert_eq!(names(&e.target), ["escape"])),
            },
            Case {
                name: "PAX linkpath climbing stays at the root",
                setup: nothing,
                tar: |_| {
                    Tar::new()
                        .pax(&[("linkpath", b"../outside/file")])
                        .hardlink("h", "placeholder")
                        .build()
                },
                want: Want::Fails("h"),
            },
        ]
    }

    #[test]
    fn apply_safety_table() {
        for strategy in strategies() {
            for case in safety_cases() {
                let label = format!("{} ({strategy:?})", case.name);
                let e = env();
                (case.setup)(&e);
                let tar = (case.tar)(&e);
                let result = run(&tar, &e.target, &flat(false), strategy);
                match (&case.want, result) {
                    (Want::Unsafe(entry), Err(err)) => {
                        assert_eq!(unsafe_entry(&err), Some(*entry), "{label}: {err}");
                        assert!(err.to_string().contains(&format!("{entry:?}")), "{label}");
                    }
                    (Want::Ok(check), Ok(_)) => check(&e),
                    (Want::Fails(entry), Err(err)) => {
                        assert!(unsafe_entry(&err).is_none(), "{label}: {err}");
                        assert!(err.to_string().contains(entry), "{label}: {err}");
                    }
                    (_, r) => panic!("{label}: unexpected {r:?}"),
                }
                e.assert_outside_untouched(&label);
                if case.name == "symlink to a missing dir creates nothing" {
                    assert_eq!(names(&e.target), ["l"], "{label}");
                }
            }
        }
    }

    /// What an import refuses by the names alone, and what it lets through; the reader comes
    /// back past the end of the archive, whatever follows it.
    #[test]
    fn check_layer_table() {
        let cases: Vec<(&str, Tar, Option<&str>)> = vec![
            ("../x", Tar::new().file("../x", "o"), Some("climbs above")),
            ("/abs", Tar::new().file("/abs", "o"), Some("absolute name")),
            (
                "a/../../x",
                Tar::new().dir("a").file("a/../../x", "o"),
                Some("climbs above"),
            ),
            (
                "hardlink to ../x",
                Tar::new().file("x", "i").hardlink("h", "../x"),
                Some("hardlink target \"../x\""),
            ),
            (
                "hardlink to ../",
                Tar::new().hardlink("h", "../"),
                Some("climbs above"),
            ),
            (
                "hardlink to the root",
                Tar::new().hardlink("h", "./"),
                Some("target directory itself"),
            ),
            (
                "hardlink to /etc/passwd",
                Tar::new().hardlink("h", "/etc/passwd"),
                Some("absolute name"),
            ),
            (
                "l -> /etc then l/passwd",
                Tar::new().symlink("l", "/etc").file("l/passwd", "x"),
                Some("below \"l\""),
            ),
            (
                "l -> /etc then a hardlink to l/passwd",
                Tar::new().symlink("l", "/etc").hardlink("h", "l/passwd"),
                Some("resolves through a symlink"),
            ),
            (
                "a hardlink to a symlink, then through it",
                Tar::new()
                    .symlink("l", "/etc")
                    .hardlink("m", "l")
                    .file("m/passwd", "x"),
                Some("below \"m\""),
            ),
            (
                "a whiteout as a directory",
                Tar::new().file(".wh.a/b", ""),
                Some("whiteout"),
            ),
            (
                "a file naming the root",
                Tar::new().file(".", ""),
                Some("only a directory"),
            ),
            (
                "a symlink replaced by a directory",
                Tar::new()
                    .symlink("l", "/etc")
                    .dir("l")
                    .file("l/passwd", "x"),
                None,
            ),
            (
                "plain rootfs",
                Tar::new()
                    .dir("./")
                    .dir("./etc")
                    .file("./etc/passwd", "root")
                    .symlink("./etc/mtab", "/proc/mounts")
                    .symlink("./lib", "usr/lib")
                    .hardlink("./etc/passwd-", "./etc/passwd")
                    .hardlink("./lib2", "lib")
                    .file("./.wh.gone", ""),
                None,
            ),
        ];
        for (case, tar, refusal) in cases {
            let mut bytes = tar.build();
            bytes.extend_from_slice(b"trailing bytes");
            let got = check_layer(&bytes[..]);
            match (refusal, got) {
                (None, Ok(mut rest)) => {
                    let mut tail = Vec::new();
                    rest.read_to_end(&mut tail).expect("read");
                    assert!(tail.ends_with(b"trailing bytes"), "{case}");
                }
                (Some(want), Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{case}: {msg}");
                    assert!(matches!(e, Error::UnsafeEntry { .. }), "{case}: {msg}");
                }
                (want, got) => panic!("{case}: wanted {want:?}, got {:?}", got.err()),
            }
        }
    }

    #[test]
    fn strategy_detection() {
        let e = env();
        let root =
            rfs::open(&e.target, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("open");
        let raw = rfs::openat2(
            &root,
            ".",
            OFlags::PATH,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        );
        let want = if raw.is_ok() {
            Strategy::Openat2
        } else {
            Strategy::Manual
        };
        assert_eq!(Strategy::detect(&root), want);
    }

    #[test]
    fn apply_huge_declared_size_fails_at_truncation() {
        for strategy in strategies() {
            let e = env();
            let mut tar = Tar::header(b"big", EntryType::Regular, b"", 0o644, 1 << 40)
                .as_bytes()
                .to_vec();
            tar.extend(std::iter::repeat_n(b'a', 4096));
            let err = run(&tar[..], &e.target, &flat(false), strategy).expect_err("truncated");
            assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
            assert!(err.to_string().contains("\"big\""), "{err}");
            let md = fs::metadata(e.t("big")).expect("partial file");
            assert!(
                md.len() <= 4096 && md.blocks() <= 16,
                "preallocated: {md:?}"
            );
            e.assert_outside_untouched("huge");
        }
    }

    #[test]
    fn apply_truncated_header_stream() {
        let e = env();
        let tar = Tar::new().file("a", "x").build();
        let err = run(&tar[..700], &e.target, &flat(false), Strategy::Manual)
            .expect_err("cut in a header");
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn apply_unsupported_options() {
        let e = env();
        let err = apply_layer(&b""[..], &e.target, &overlay("user.evil")).expect_err("bad xattr");
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    }

    /// Lower: d/old, d/sub/old2, top. The layer adds d/new, d/sub/, d/sub/new2 and an opaque
    /// marker for d, in every position.
    #[test]
    fn apply_opaque_is_order_independent() {
        let items: [(&str, bool); 4] = [
            ("d/new", false),
            ("d/sub/", true),
            ("d/sub/new2", false),
            ("d/.wh..wh..opq", false),
        ];
        for strategy in strategies() {
            for opaque_at in 0..items.len() {
                let mut order: Vec<_> = items[..3].to_vec();
                order.insert(opaque_at, items[3]);
                let e = env();
                fs::create_dir_all(e.t("d/sub")).expect("mkdir");
                fs::write(e.t("d/old"), "").expect("write");
                fs::write(e.t("d/sub/old2"), "").expect("write");
                fs::write(e.t("top"), "").expect("write");
                let mut tar = Tar::new();
                for (name, dir) in &order {
                    tar = if *dir {
                        tar.dir(name)
                    } else {
                        tar.file(name, "n")
                    };
                }
                let stats = run(&tar.build(), &e.target, &flat(false), strategy).expect("apply");
                let label = format!("{order:?} {strategy:?}");
                assert_eq!(stats.whiteouts, 1, "{label}");
                assert_eq!(stats.entries, 4, "{label}");
                assert_eq!(names(&e.t("d")), ["new", "sub"], "{label}");
                assert_eq!(names(&e.t("d/sub")), ["new2"], "{label}");
                assert_eq!(names(&e.target), ["d", "top"], "{label}");
                e.assert_outside_untouched(&label);
            }
        }
    }

    #[test]
    fn apply_whiteouts_flatten() {
        let e = env();
        fs::create_dir_all(e.t("dir/deep")).expect("mkdir");
        fs::write(e.t("dir/deep/f"), "").expect("write");
        fs::write(e.t("file"), "lower").expect("write");
        fs::write(e.t("both"), "lower").expect("write");
        fs::write(e.t("both2"), "lower").expect("write");
        let tar = Tar::new()
            .file(".wh.file", "")
            .file(".wh.dir", "")
            .file(".wh.missing", "")
            .file("nodir/.wh.x", "")
            // Same name in the layer as its whiteout: the layer's entry wins, either order.
            .file("both", "layer")
            .file(".wh.both", "")
            .file(".wh.both2", "")
            .file("both2", "layer")
            .build();
        let stats = run(&tar, &e.target, &flat(false), Strategy::Manual).expect("apply");
        assert_eq!(stats.whiteouts, 6);
        assert_eq!(names(&e.target), ["both", "both2"]);
        assert_eq!(read(&e.t("both")), "layer");
        assert_eq!(read(&e.t("both2")), "layer");
        e.assert_outside_untouched("whiteouts");
    }

    #[test]
    fn apply_whiteout_and_directory_in_one_layer() {
        for first_whiteout in [true, false] {
            let e = env();
            fs::create_dir_all(e.t("x")).expect("mkdir");
            fs::write(e.t("x/lower"), "").expect("write");
            let mut tar = Tar::new();
            if first_whiteout {
                tar = tar.file(".wh.x", "");
            }
            tar = tar.dir("x/").file("x/mine", "");
            if !first_whiteout {
                tar = tar.file(".wh.x", "");
            }
            run(&tar.build(), &e.target, &flat(false), Strategy::Manual).expect("apply");
            assert_eq!(
                names(&e.t("x")),
                ["mine"],
                "whiteout first: {first_whiteout}"
            );
        }
    }

    fn is_whiteout_dev(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    }

    /// Whether this process may create a 0/0 character device (root, or Linux 5.8+).
    fn can_make_whiteouts() -> bool {
        let d = tempfile::tempdir().expect("tempdir");
        rfs::mknodat(
            rfs::CWD,
            d.path().join("w"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .is_ok()
    }

    fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let n = rfs::lgetxattr(p, name, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn apply_overlay_whiteouts() {
        let tar = Tar::new()
            .dir("dir/")
            .file("dir/.wh..wh..opq", "")
            .file("dir/keep", "k")
            .file(".wh.file", "")
            .file("sub/.wh.gone", "")
            .file(".wh.x", "")
            .dir("x/")
            .dir("y/")
            .file(".wh.y", "")
            .file("z", "mine")
            .file(".wh.z", "")
            .pax(&[
                ("SCHILY.xattr.user.overlay.redirect", b"/etc"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ])
            .dir("forged/")
            .build();
        for strategy in strategies() {
            let e = env();
            let result = run(&tar, &e.target, &overlay("user.overlay.opaque"), strategy);
            if !can_make_whiteouts() {
                let err = result.expect_err("no whiteouts allowed");
                assert!(err.to_string().contains("whiteout"), "{err}");
                continue;
            }
            let stats = result.expect("apply");
            assert_eq!(stats.whiteouts, 6);
            assert_eq!(
                xattr(&e.t("dir"), "user.overlay.opaque").as_deref(),
                Some(&b"y"[..])
            );
            assert_eq!(read(&e.t("dir/keep")), "k");
            assert!(is_whiteout_dev(&e.t("file")), "{strategy:?}");
            assert!(is_whiteout_dev(&e.t("sub/gone")));
            for d in ["x", "y"] {
                assert!(e.t(d).is_dir(), "{d}");
                assert_eq!(
                    xattr(&e.t(d), "user.overlay.opaque").as_deref(),
                    Some(&b"y"[..])
                );
            }
            assert_eq!(read(&e.t("z")), "mine");
            assert_eq!(xattr(&e.t("forged"), "user.overlay.redirect"), None);
            assert_eq!(xattr(&e.t("forged"), "user.overlay.opaque"), None);
            assert_eq!(xattr(&e.t("sub"), "user.overlay.opaque"), None);
            e.assert_outside_untouched("overlay");
        }
    }

    #[test]
    fn apply_overlay_trusted_opaque_needs_root() {
        let e = env();
        let tar = Tar::new().dir("dir/").file("dir/.wh..wh..opq", "").build();
        let result = apply_layer(&tar[..], &e.target, &overlay("trusted.overlay.opaque"));
        if is_root() {
            result.expect("apply as root");
            assert_eq!(
                xattr(&e.t("dir"), "trusted.overlay.opaque").as_deref(),
                Some(&b"y"[..])
            );
        } else {
            let err = result.expect_err("trusted xattrs need root");
            assert!(err.to_string().contains("target/dir"), "{err}");
        }
    }

    fn cap_net_raw() -> Vec<u8> {
        // vfs_cap_data, revision 2, effective: permitted = CAP_NET_RAW (13).
        let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
        for word in [1u32 << 13, 0, 0, 0] {
            v.extend(word.to_le_bytes());
        }
        v
    }

    /// Everything an image carries: owners, modes, setuid, xattrs, mtimes, hardlinks, long names
    /// (GNU and PAX), ustar, fifos, a sparse file.
    fn round_trip_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let h = |kind: EntryType, mode: u32, uid: u64, mtime: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid + 1);
            h.set_mtime(mtime);
            h.set_size(0);
            h
        };
        let long_dir = format!("long/{}", "n".repeat(150));
        let long_target = "t".repeat(200);
        let pax_name = format!("pax/{}", "p".repeat(120));

        b.append_data(
            &mut h(EntryType::Directory, 0o755, 0, 1_000),
            "./",
            &b""[..],
        )
        .expect("root");
        b.append_pax_extensions([("mtime", &b"1600000001.5"[..])])
            .expect("pax");
        b.append_data(&mut h(EntryType::Directory, 0o750, 1001, 1), "d/", &b""[..])
            .expect("d");
        let cap = cap_net_raw();
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", &b"hello"[..]),
            ("SCHILY.xattr.security.capability", &cap[..]),
            ("SCHILY.xattr.trusted.cairn", &b"t"[..]),
        ])
        .expect("pax");
        let mut fh = h(EntryType::Regular, 0o4755, 1001, 2_000);
        fh.set_size(5);
        b.append_data(&mut fh, "d/suid", &b"suid!"[..])
            .expect("suid");
        let mut fh = h(EntryType::Regular, 0o2711, 1001, 2_000);
        fh.set_size(1);
        b.append_data(&mut fh, "d/sgid", &b"g"[..]).expect("sgid");
        b.append_data(
            &mut h(EntryType::Directory, 0o1777, 0, 3_000),
            "sticky/",
            &b""[..],
        )
        .expect("sticky");
        b.append_link(
            &mut h(EntryType::Symlink, 0o777, 1001, 4_000),
            "d/link",
            "suid",
        )
        .expect("symlink");
        b.append_link(&mut h(EntryType::Link, 0o644, 0, 0), "d/hard", "d/suid")
            .expect("hardlink");
        let mut fh = h(EntryType::Regular, 0o600, 7, 5_000);
        fh.set_size(4);
        b.append_data(&mut fh, format!("{long_dir}/file"), &b"long"[..])
            .expect("long name");
        b.append_link(
            &mut h(EntryType::Symlink, 0o777, 0, 0),
            "longlink",
            &long_target,
        )
        .expect("long link");
        b.append_pax_extensions([("path", pax_name.as_bytes())])
            .expect("pax");
        let mut fh = h(EntryType::Regular, 0o644, 0, 6_000);
        fh.set_size(3);
        fh.set_cksum();
        let mut short = fh.clone();
        short.set_path("placeholder").expect("path");
        short.set_cksum();
        b.append(&short, &b"pax"[..]).expect("pax path");
        let mut uh = tar::Header::new_ustar();
        uh.set_mode(0o640);
        uh.set_mtime(7_000);
        uh.set_size(5);
        b.append_data(
            &mut uh,
            format!("ustar/{}/file", "u".repeat(90)),
            &b"ustar"[..],
        )
        .expect("ustar");
        b.append_data(&mut h(EntryType::Fifo, 0o640, 0, 8_000), "fifo", &b""[..])
            .expect("fifo");
        // GNU sparse: 512 bytes of 'a' at 0, 512 of 'b' at 1 MiB.
        let mut sh = h(EntryType::GNUSparse, 0o644, 0, 9_000);
        sh.set_path("sparse").expect("path");
        sh.set_size(1024);
        {
            let gnu = sh.as_gnu_mut().expect("gnu");
            gnu.sparse[0].set_offset(0);
            gnu.sparse[0].set_length(512);
            gnu.sparse[1].set_offset(1 << 20);
            gnu.sparse[1].set_length(512);
            gnu.set_real_size((1 << 20) + 512);
        }
        sh.set_cksum();
        let mut data = vec![b'a'; 512];
        data.extend(vec![b'b'; 512]);
        b.append(&sh, &data[..]).expect("sparse");
        b.into_inner().expect("finish")
    }

    fn check_round_trip(e: &Env, owners: bool) -> TestResult {
        let md = |p: &str| fs::symlink_metadata(e.t(p));
        let root = fs::metadata(&e.target)?;
        assert_eq!(root.mode() & 0o7777, 0o755);
        assert_eq!(root.mtime(), 1_000);
        let d = md("d")?;
        assert_eq!(d.mode() & 0o7777, 0o750);
        assert_eq!((d.mtime(), d.mtime_nsec()), (1_600_000_001, 500_000_000));
        let suid = md("d/suid")?;
        assert_eq!(suid.mode() & 0o7777, 0o4755, "setuid survives chown");
        assert_eq!(suid.mtime(), 2_000);
        assert_eq!(read(&e.t("d/suid")), "suid!");
        assert_eq!(
            xattr(&e.t("d/suid"), "user.note").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(md("d/sgid")?.mode() & 0o7777, 0o2711);
        assert_eq!(md("sticky")?.mode() & 0o7777, 0o1777);
        assert_eq!(md("sticky")?.mtime(), 3_000);
        assert_eq!(fs::read_link(e.t("d/link"))?, Path::new("suid"));
        assert_eq!(md("d/link")?.mtime(), 4_000);
        assert_eq!(md("d/hard")?.ino(), suid.ino());
        assert_eq!(md("d/hard")?.nlink(), 2);
        let long = format!("long/{}/file", "n".repeat(150));
        assert_eq!(read(&e.t(&long)), "long");
        assert_eq!(md(&long)?.mode() & 0o7777, 0o600);
        assert_eq!(md("long")?.mode() & 0o7777, 0o755, "implicit parent");
        assert_eq!(fs::read_link(e.t("longlink"))?, Path::new(&"t".repeat(200)));
        assert_eq!(read(&e.t(&format!("pax/{}", "p".repeat(120)))), "pax");
        assert!(md("placeholder").is_err());
        assert_eq!(
            read(&e.t(&format!("ustar/{}/file", "u".repeat(90)))),
            "ustar"
        );
        let fifo = md("fifo")?;
        assert!(fifo.file_type().is_fifo());
        assert_eq!((fifo.mode() & 0o7777, fifo.mtime()), (0o640, 8_000));
        let sparse = fs::read(e.t("sparse"))?;
        assert_eq!(sparse.len(), (1 << 20) + 512);
        assert!(sparse[..512].iter().all(|b| *b == b'a'));
        assert!(sparse[512..1 << 20].iter().all(|b| *b == 0));
        assert!(sparse[1 << 20..].iter().all(|b| *b == b'b'));
        assert!(md("sparse")?.blocks() * 512 < 1 << 20, "holes kept");
        let cap = xattr(&e.t("d/suid"), "security.capability");
        if owners {
            assert_eq!((d.uid(), d.gid()), (1001, 1002));
            assert_eq!((suid.uid(), suid.gid()), (1001, 1002));
            assert_eq!(md("d/link")?.uid(), 1001);
            assert_eq!(md(&long)?.uid(), 7);
            assert_eq!(cap, Some(cap_net_raw()));
            assert_eq!(
                xattr(&e.t("d/suid"), "trusted.cairn").as_deref(),
                Some(&b"t"[..])
            );
        } else {
            let me = rustix::process::geteuid().as_raw();
            assert_eq!(suid.uid(), me);
            // Best-effort without chown, and refused to a non-root user.
            assert_eq!(cap, None);
            assert_eq!(xattr(&e.t("d/suid"), "trusted.cairn"), None);
        }
        Ok(())
    }

    #[test]
    fn apply_round_trip() -> TestResult {
        let tar = round_trip_tar();
        for strategy in strategies() {
            let e = env();
            let result = run(&tar, &e.target, &flat(true), strategy);
            if is_root() {
                let stats = result?;
                assert_eq!(stats.entries, 13);
                assert_eq!(stats.bytes, 5 + 1 + 4 + 3 + 5 + (1 << 20) + 512);
                check_round_trip(&e, true)?;
            } else {
                // Ownership is never silently collapsed to the current uid.
                let err = result.expect_err("chown as non-root");
                match &err {
                    Error::Io {
                        action,
                        path,
                        source,
                    } => {
                        assert_eq!(*action, OWNERSHIP);
                        assert_eq!(source.raw_os_error(), Some(libc_eperm()));
                        assert!(path.ends_with("d/suid"), "{err}");
                    }
                    other => panic!("{other:?}"),
                }
                assert!(err.to_string().contains("root"), "{err}");
                // Without chown, everything but ownership round-trips.
                let e = env();
                run(&tar, &e.target, &flat(false), strategy)?;
                check_round_trip(&e, false)?;
            }
            e.assert_outside_untouched("round trip");
        }
        Ok(())
    }

    fn libc_eperm() -> i32 {
        Errno::PERM.raw_os_error()
    }

    #[test]
    fn apply_id_mapping() -> TestResult {
        let e = env();
        let range = |container, host, size| crate::idmap::IdRange {
            container,
            host,
            size,
        };
        let map = IdMap {
            uids: vec![range(0, 100_000, 65_536)],
            gids: vec![range(0, 200_000, 65_536)],
        };
        let opts = ApplyOptions {
            whiteouts: Whiteouts::Apply,
            id_map: map,
            chown: true,
            skip_devices: false,
        };
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(1001);
        h.set_gid(5);
        h.set_size(1);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "f", &b"x"[..])?;
        let tar = b.into_inner()?;
        let result = apply_layer(&tar[..], &e.target, &opts);
        if is_root() {
            result?;
            let md = fs::metadata(e.t("f"))?;
            assert_eq!((md.uid(), md.gid()), (101_001, 200_005));
        } else {
            let err = result.expect_err("chown as non-root");
            assert!(
                matches!(&err, Error::Io { action, .. } if *action == OWNERSHIP),
                "{err}"
            );
        }
        // An id the mapping does not cover is an error naming the entry, as root or not.
        let mut h2 = h.clone();
        h2.set_uid(70_000);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h2, "unmapped", &b"x"[..])?;
        let tar = b.into_inner()?;
        let err = apply_layer(&tar[..], &e.target, &opts).expect_err("unmapped uid");
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("unmapped"), "{err}");
        Ok(())
    }

    /// xattrs on nodes that cannot be opened go through /proc/self/fd/<parent>/<name>.
    #[test]
    fn apply_xattrs_on_symlinks_and_fifos() -> TestResult {
        let tar = Tar::new()
            .pax(&[
                ("SCHILY.xattr.trusted.cairn", &b"s"[..]),
                ("SCHILY.xattr.user.refused", &b"x"[..]),
            ])
            .symlink("s", "/nowhere")
            .pax(&[
                ("SCHILY.xattr.trusted.cairn", &b"f"[..]),
                ("SCHILY.xattr.user.refused", &b"x"[..]),
            ])
            .raw("fifo", EntryType::Fifo, "", 0o600, b"")
            .build();
        for strategy in strategies() {
            let e = env();
            run(&tar, &e.target, &flat(false), strategy)?;
            let (s, f) = (
                xattr(&e.t("s"), "trusted.cairn"),
                xattr(&e.t("fifo"), "trusted.cairn"),
            );
            if is_root() {
                assert_eq!(
                    (s.as_deref(), f.as_deref()),
                    (Some(&b"s"[..]), Some(&b"f"[..]))
                );
            } else {
                assert_eq!((s, f), (None, None));
            }
            assert_eq!(xattr(&e.t("s"), "user.refused"), None);
            assert_eq!(fs::read_link(e.t("s"))?, Path::new("/nowhere"));
            e.assert_outside_untouched("special xattrs");
        }
        Ok(())
    }

    #[test]
    fn apply_device_nodes() -> TestResult {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(1)?;
        h.set_device_minor(3)?;
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "dev/null", &b""[..])?;
        let tar = b.into_inner()?;
        let e = env();
        let result = apply_layer(&tar[..], &e.target, &flat(false));
        if is_root() {
            result?;
            let md = fs::symlink_metadata(e.t("dev/null"))?;
            assert!(md.file_type().is_char_device());
            assert_eq!(md.rdev(), rfs::makedev(1, 3));
            assert_eq!(md.mode() & 0o7777, 0o666);
        } else {
            let err = result.expect_err("mknod as non-root");
            let text = err.to_string();
            assert!(
                text.contains("dev/null") && text.contains("CAP_MKNOD"),
                "{text}"
            );
        }
        e.assert_outside_untouched("devices");
        Ok(())
    }

    #[test]
    fn apply_streams_large_files() -> TestResult {
        let e = env();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "big", &data[..])?;
        let tar = b.into_inner()?;
        let stats = apply_layer(&tar[..], &e.target, &flat(false))?;
        assert_eq!(stats.bytes, data.len() as u64);
        assert!(fs::read(e.t("big"))? == data);
        Ok(())
    }

    /// What a partial apply writes: the prefixes, what is below them and the directories on
    /// the way, with whiteouts for those paths; a symlink on the way or a hard link from
    /// outside makes it give up (None) so the caller applies the whole layer.
    #[test]
    fn partial_apply_restores_only_the_paths_asked_for() -> TestResult {
        let base = Tar::new()
            .dir("out/")
            .dir("out/keep/")
            .file("out/keep/old", "old")
            .file("out/gone", "g")
            .build();
        let layer = Tar::new()
            .dir("out/")
            .dir("out/keep/")
            .file("out/keep/a", "a")
            .dir("out/keep/sub/")
            .file("out/keep/sub/b", "b")
            .file("out/keep/.wh.old", "")
            .dir("out/skip/")
            .file("out/skip/c", "c")
            .file("out/.wh.gone", "")
            .file("top", "t")
            .build();
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            // prefixes, present after, absent after
            (
                &["out/keep"],
                &["out/keep/a", "out/keep/sub/b", "out/gone"],
                &["out/keep/old", "out/skip", "top"],
            ),
            (
                &["out/keep/sub", "top"],
                &["out/keep/sub/b", "top", "out/keep/old", "out/gone"],
                &["out/keep/a", "out/skip"],
            ),
            (&["out/gone"], &[], &["out/gone", "out/keep/a", "top"]),
        ];
        for (prefixes, present, absent) in cases {
            let dir = tempfile::tempdir()?;
            apply_layer(&base[..], dir.path(), &flat(false))?;
            let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
            let stats = apply_layer_under(&layer[..], dir.path(), &flat(false), &prefixes)?;
            assert!(stats.is_some(), "{prefixes:?}");
            for p in *present {
                assert!(dir.path().join(p).exists(), "{prefixes:?}: {p} missing");
            }
            for p in *absent {
                assert!(!dir.path().join(p).exists(), "{prefixes:?}: {p} there");
            }
        }

        let symlinked = Tar::new().symlink("out", "elsewhere").build();
        let linked = Tar::new()
            .file("other", "x")
            .dir("out/")
            .hardlink("out/h", "other")
            .build();
        for (tar, prefix) in [
            (&symlinked, "out/keep"),
            (&symlinked, "out"),
            (&linked, "out"),
        ] {
            let dir = tempfile::tempdir()?;
            let got = apply_layer_under(&tar[..], dir.path(), &flat(false), &[prefix.into()])?;
            assert!(got.is_none(), "{prefix}: must give up");
        }
        // A hard link within the paths is fine.
        let inside = Tar::new()
            .dir("out/")
            .file("out/f", "x")
            .hardlink("out/h", "out/f")
            .build();
        let dir = tempfile::tempdir()?;
        assert!(
            apply_layer_under(&inside[..], dir.path(), &flat(false), &["out".into()])?.is_some()
        );
        assert!(dir.path().join("out/h").is_file());
        Ok(())
    }
}
