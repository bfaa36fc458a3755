//! Layer generation: a directory, an overlay upperdir or a lower→upper tree diff as an uncompressed, deterministic OCI layer tar.

// # Format (what makes the same tree give the same bytes anywhere)
//
// * Order: a depth-first walk; a directory's entry comes before its contents, and siblings are
//   sorted by the bytes of the name they are *emitted* under (so a whiteout `.wh.x` sorts as
//   `.wh.x`, not as `x`). An opaque marker `dir/.wh..wh..opq` comes right after `dir/` and
//   before all of its children (umoci's order). This is also the order of Go's
//   `filepath.Walk`, which docker and BuildKit use, so `a/`, `a/x`, `a.b` (not `a.b`, `a/`).
// * Each entry is one ustar header (magic `ustar\0`, version `00`), preceded by a PAX `x`
//   header only when ustar cannot hold a value: a path that does not fit the 100-byte name
//   field nor splits into prefix/name, a link target over 100 bytes, a size of 8 GiB or more,
//   a uid/gid of 2^21 or more, an mtime before 1970 or after 2242, and xattrs
//   (`SCHILY.xattr.<name>`). PAX records are sorted by key. The ustar field a PAX record
//   overrides holds a truncated path or zero. The PAX header itself is named
//   `<dir>/PaxHeaders.0/<name>` (ASCII only, at most 100 bytes), mode 0, owner 0:0, mtime 0.
// * Header fields: mode is the permission bits with setuid/setgid/sticky (`st_mode & 07777`),
//   uid/gid are container ids, uname/gname are empty, mtime is in whole seconds (clamped when
//   asked), no atime/ctime, device major/minor for devices (zero otherwise). Numbers are
//   zero-padded octal with a NUL terminator; the checksum is six octal digits, NUL, space.
// * The archive ends with two zero blocks and is not padded to a 10 KiB record.
// * Whiteouts and opaque markers are empty regular files with mode 0, owner 0:0 and mtime 0
//   (clamped like every mtime), like containerd's; nothing about them depends on the host.
// * A non-directory with `st_nlink > 1` whose inode was already emitted becomes a hardlink
//   entry (typeflag `1`, size 0, no xattrs: they belong to the shared inode) naming the first
//   path that was emitted for it, which is the first in sort order.
// * Sockets are skipped, as docker does: they are meaningless without their process and
//   cannot be created from a tar. A tree diff treats them as absent on both sides.
// * Names starting with `.wh.` are refused (as umoci does): in a layer they would silently
//   become whiteouts.
// * Kept xattrs: `user.*`, `security.*` and `trusted.*`, except overlayfs' own
//   (`trusted.overlay.*`, `user.overlay.*`) and `security.selinux` (a host policy label,
//   often with per-container categories: keeping it would make layers host-specific).
//   `system.*` (POSIX ACLs) is not kept.

use std::collections::BTreeMap;
use std::fs::{self};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::idmap::IdMap;
use crate::whiteout::{OPAQUE, PREFIX};

mod compare;
mod ustar;
mod xattrs;

use compare::{Compare, same};
use ustar::TarWriter;
use xattrs::{XattrList, Xattrs, read_xattrs};

/// How file metadata becomes tar header fields.
#[derive(Debug, Clone)]
pub struct TarOptions {
    /// Host ids of the files (as seen by this process) → container ids in the tar. Identity as
    /// root; when the tree was written through a user namespace mapping (rootless), the on-disk
    /// owners are host ids and must be mapped back. An id with no mapping is an error naming
    /// the path.
    pub id_map: IdMap,
    /// SOURCE_DATE_EPOCH: clamp every mtime to at most this (seconds since the epoch).
    pub clamp_mtime: Option<i64>,
}

impl Default for TarOptions {
    /// Identity ids, mtimes as they are.
    fn default() -> TarOptions {
        TarOptions {
            id_map: IdMap::identity(),
            clamp_mtime: None,
        }
    }
}

/// A whole directory as a layer (no whiteouts): `cairn import`, COPY layers. Paths in the tar
/// are relative (`etc/passwd`, directories as `etc/`); the root itself is not an entry. A
/// 0/0 character device here is just a device.
pub fn write_dir<W: Write>(dir: &Path, out: W, opts: &TarOptions) -> Result<W> {
    let mut tw = TarWriter::new(out, opts);
    walk(&mut tw, dir, false)?;
    tw.finish()
}

/// An overlay upperdir as a layer: a 0/0 character device `name` becomes an empty regular
/// file `.wh.name`; a directory with `trusted.overlay.opaque` or `user.overlay.opaque` = `y`
/// becomes its own entry followed by `dir/.wh..wh..opq`. No `trusted.overlay.*` or
/// `user.overlay.*` xattr reaches the tar. An upperdir using overlayfs' `redirect_dir` or
/// `metacopy` features (a `*.overlay.redirect` or `*.overlay.metacopy` xattr) is refused: its
/// files do not stand for themselves (a renamed directory, a file without its data).
pub fn write_upperdir<W: Write>(upper: &Path, out: W, opts: &TarOptions) -> Result<W> {
    let mut tw = TarWriter::new(out, opts);
    walk(&mut tw, upper, true)?;
    tw.finish()
}

/// The changes from `lower` to `upper`, two full trees (the copy snapshotter: `upper` started
/// as a copy of `lower` with mtimes preserved to the nanosecond).
///
/// * An entry only in `upper` is added (a directory with its whole subtree).
/// * An entry in both is modified, and emitted from `upper`, when its type, permission bits,
///   owner or kept xattrs differ, or: a symlink's target or mtime; a device's number or
///   mtime; a fifo's mtime; a regular file's size or mtime (seconds and nanoseconds) — and,
///   when size and mtime agree and both mtimes have zero nanoseconds (a tar extraction or a
///   filesystem without sub-second times, where a rewrite in the same second cannot be told
///   from the metadata), its content, compared byte by byte. Metadata is otherwise trusted,
///   as containerd's continuity does. A directory's mtime is not compared: it only reflects
///   changes to its children, which are found on their own.
/// * An entry only in `lower` becomes `.wh.name`; a deleted directory is one whiteout.
/// * A non-directory replaced by a directory: the directory and its whole subtree, no
///   whiteout or opaque marker (there were no lower children to hide). A directory replaced
///   by a non-directory: just the new entry (extraction replaces what is there).
/// * No opaque markers are ever emitted: deletions are always explicit whiteouts, which is
///   exact and keeps the output a pure function of the two trees.
/// * Every ancestor directory of an emitted entry is emitted too (from `upper`), as docker
///   and BuildKit do, so the layer carries their metadata.
pub fn write_tree_diff<W: Write>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &TarOptions,
) -> Result<W> {
    root_dir(lower)?;
    diff(Lower::Tree(lower), upper, &[], out, opts)
}

/// What a tree held when [`TreeRecord::take`] walked it: each directory's entries (by their
/// path below the root) with their lstat, whose ctime and inode move with any change.
#[derive(Debug, Default)]
pub struct TreeRecord {
    dirs: std::collections::HashMap<Vec<u8>, Vec<(Vec<u8>, Stat)>>,
}

impl TreeRecord {
    /// Walks `root` (never following a symlink).
    pub fn take(root: &Path) -> Result<TreeRecord> {
        root_dir(root)?;
        let mut record = TreeRecord::default();
        let mut todo = vec![(Vec::new(), root.to_path_buf())];
        while let Some((rel, dir)) = todo.pop() {
            let mut entries = Vec::new();
            for c in children(&dir)? {
                if c.stat.kind == Kind::Dir {
                    todo.push((join(&rel, &c.name), c.path.clone()));
                }
                entries.push((c.name, c.stat));
            }
            record.dirs.insert(rel, entries);
        }
        Ok(record)
    }

    /// Entries recorded.
    pub fn len(&self) -> usize {
        self.dirs.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The changes made to `upper` since `before` was recorded of it: the copy snapshotter's diff
/// without a second copy (isolation chroot). As [`write_tree_diff`], but an entry is unchanged
/// when its lstat is, ctime and inode included: no content is compared, since no write, chmod,
/// chown or xattr change leaves ctime as it was; and a directory whose mtime moved is emitted. `skip` names subtrees (paths below the root)
/// that are never part of the layer: what was staged for the process, as mounts elsewhere.
pub fn write_recorded_diff<W: Write>(
    before: &TreeRecord,
    upper: &Path,
    skip: &[Vec<u8>],
    out: W,
    opts: &TarOptions,
) -> Result<W> {
    diff(Lower::Record(before), upper, skip, out, opts)
}

/// The lower side of a diff: a tree on disk, or a record of one.
#[derive(Clone, Copy)]
enum Lower<'a> {
    Tree(&'a Path),
    Record(&'a TreeRecord),
}

fn diff<W: Write>(
    lower: Lower<'_>,
    upper: &Path,
    skip: &[Vec<u8>],
    out: W,
    opts: &TarOptions,
) -> Result<W> {
    root_dir(upper)?;
    let mut tw = TarWriter::new(out, opts);
    let mut cmp = Compare::default();
    let root_lower = match lower {
        Lower::Tree(p) => p.to_path_buf(),
        Lower::Record(_) => PathBuf::new(),
    };
    let mut stack = vec![DiffFrame {
        rel: Vec::new(),
        dir: None,
        emitted: true,
        items: diff_items(lower, Some(&root_lower), upper, &[])?,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(item) = top.items.next() else {
            stack.pop();
            continue;
        };
        let rel = join(&top.rel, &item.tar_name);
        let name = item
            .upper
            .as_ref()
            .or(item.lower.as_ref())
            .map_or(&item.tar_name, |c| &c.name);
        if skip.iter().any(|s| *s == join(&top.rel, name)) {
            continue;
        }
        let Some(up) = item.upper else {
            if let Some(lo) = &item.lower {
                // `.wh..wh.x` would be an invalid layer; a lower tree never holds such names.
                check_name(&lo.name, &lo.path)?;
            }
            flush_parents(&mut stack, &mut tw)?;
            tw.marker(&rel)?;
            continue;
        };
        check_name(&item.tar_name, &up.path)?;
        let ux = read_xattrs(&up.path)?;
        let changed = match (&item.lower, lower) {
            (None, _) => true,
            (Some(lo), Lower::Tree(_)) => !same(lo, &up, &ux.kept, &mut cmp)?,
            (Some(lo), Lower::Record(_)) => !same_recorded(&lo.stat, &up.stat),
        };
        if up.stat.kind == Kind::Dir {
            let lower_dir = item
                .lower
                .filter(|l| l.stat.kind == Kind::Dir)
                .map(|l| l.path);
            let items = diff_items(lower, lower_dir.as_deref(), &up.path, &rel)?;
            stack.push(DiffFrame {
                rel,
                dir: Some((up.path, up.stat, ux.kept)),
                emitted: false,
                items,
            });
            if changed {
                flush_parents(&mut stack, &mut tw)?;
            }
        } else if changed {
            flush_parents(&mut stack, &mut tw)?;
            tw.node(&rel, &up.path, &up.stat, &ux.kept)?;
        }
    }
    tw.finish()
}

// ---------------------------------------------------------------------------------------------
// Walking

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// The lstat fields a layer needs.
#[derive(Debug, Clone)]
struct Stat {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    rdev: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
    /// Moved by every change to the inode (data, metadata, xattrs) and settable by no call:
    /// what a recorded tree compares ([`TreeRecord`]).
    ctime: i64,
    ctime_nsec: i64,
}

/// lstat, never following a symlink; `None` for a socket (never in a layer).
fn lstat(path: &Path) -> Result<Option<Stat>> {
    let m = fs::symlink_metadata(path).at("stat", path)?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        return Ok(None);
    };
    Ok(Some(Stat {
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        rdev: m.rdev(),
        dev: m.dev(),
        ino: m.ino(),
        nlink: m.nlink(),
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec(),
    }))
}

fn root_dir(path: &Path) -> Result<()> {
    match lstat(path)? {
        Some(st) if st.kind == Kind::Dir => Ok(()),
        _ => Err(Error::invalid(
            format!("layer source {}", path.display()),
            "not a directory",
        )),
    }
}

/// One directory entry, lstat'ed when its directory was listed.
#[derive(Debug)]
struct Child {
    name: Vec<u8>,
    path: PathBuf,
    stat: Stat,
}

/// The entries of `dir` (unsorted, sockets left out).
fn children(dir: &Path) -> Result<Vec<Child>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at("read directory", dir)? {
        let entry = entry.at("read directory", dir)?;
        let path = entry.path();
        if let Some(stat) = lstat(&path)? {
            out.push(Child {
                name: entry.file_name().as_bytes().to_vec(),
                path,
                stat,
            });
        }
    }
    Ok(out)
}

/// `parent/name` as a tar path (no leading `./`, no trailing `/`).
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn whiteout_name(name: &[u8]) -> Vec<u8> {
    [PREFIX.as_bytes(), name].concat()
}

/// A real file named `.wh.*` would be read back as a whiteout.
fn check_name(name: &[u8], path: &Path) -> Result<()> {
    if name.starts_with(PREFIX.as_bytes()) {
        return Err(Error::invalid(
            format!("layer source {}", path.display()),
            format!("names starting with {PREFIX} are whiteouts in a layer and cannot be stored"),
        ));
    }
    Ok(())
}

/// One sibling in emission order: a file, or (in an upperdir) a 0/0 device standing for a whiteout.
struct Listed {
    tar_name: Vec<u8>,
    child: Child,
    whiteout: bool,
}

struct WalkFrame {
    rel: Vec<u8>,
    children: std::vec::IntoIter<Listed>,
}

fn listed(dir: &Path, upper: bool) -> Result<std::vec::IntoIter<Listed>> {
    let mut v: Vec<Listed> = children(dir)?
        .into_iter()
        .map(|child| {
            let whiteout = upper && child.stat.kind == Kind::Char && child.stat.rdev == 0;
            let tar_name = if whiteout {
                whiteout_name(&child.name)
            } else {
                child.name.clone()
            };
            Listed {
                tar_name,
                child,
                whiteout,
            }
        })
        .collect();
    v.sort_by(|a, b| a.tar_name.cmp(&b.tar_name));
    Ok(v.into_iter())
}

/// `write_dir` and `write_upperdir`: everything under `root`, depth first (an explicit stack,
/// so a deep tree cannot overflow the thread's stack).
fn walk<W: Write>(tw: &mut TarWriter<'_, W>, root: &Path, upper: bool) -> Result<()> {
    root_dir(root)?;
    if upper {
        // The root of an upperdir is never opaque in practice, but if it were, hiding the whole
        // lower stack is what it means.
        let x = read_xattrs(root)?;
        check_overlay_features(&x, root)?;
        if x.opaque {
            tw.marker(OPAQUE.as_bytes())?;
        }
    }
    let mut stack = vec![WalkFrame {
        rel: Vec::new(),
        children: listed(root, upper)?,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(item) = top.children.next() else {
            stack.pop();
            continue;
        };
        let rel = join(&top.rel, &item.tar_name);
        if item.whiteout {
            tw.marker(&rel)?;
            continue;
        }
        let child = item.child;
        check_name(&child.name, &child.path)?;
        let x = read_xattrs(&child.path)?;
        if upper {
            check_overlay_features(&x, &child.path)?;
        }
        tw.node(&rel, &child.path, &child.stat, &x.kept)?;
        if child.stat.kind == Kind::Dir {
            if upper && x.opaque {
                tw.marker(&join(&rel, OPAQUE.as_bytes()))?;
            }
            let children = listed(&child.path, upper)?;
            stack.push(WalkFrame { rel, children });
        }
    }
    Ok(())
}

fn check_overlay_features(x: &Xattrs, path: &Path) -> Result<()> {
    match &x.overlay_feature {
        None => Ok(()),
        Some(name) => Err(Error::invalid(
            format!("overlay upperdir entry {}", path.display()),
            format!(
                "it has {name}: an upperdir using overlayfs' redirect_dir or metacopy cannot be read as a layer"
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Tree diff

/// One name in a directory of the tree diff, on either side or both.
struct DiffItem {
    tar_name: Vec<u8>,
    lower: Option<Child>,
    upper: Option<Child>,
}

struct DiffFrame {
    rel: Vec<u8>,
    /// The upper directory (path, stat, kept xattrs), to emit when something under it changes;
    /// `None` for the root, which is never an entry.
    dir: Option<(PathBuf, Stat, XattrList)>,
    emitted: bool,
    items: std::vec::IntoIter<DiffItem>,
}

/// The union of the names in `lower` (if any: a directory that was added or replaced a
/// non-directory has no lower side) and `upper`, in emission order.
fn diff_items(
    lower: Lower<'_>,
    lower_dir: Option<&Path>,
    upper: &Path,
    rel: &[u8],
) -> Result<std::vec::IntoIter<DiffItem>> {
    let mut names: BTreeMap<Vec<u8>, (Option<Child>, Option<Child>)> = BTreeMap::new();
    let lower_children = match (lower, lower_dir) {
        (_, None) => Vec::new(),
        (Lower::Tree(_), Some(dir)) => children(dir)?,
        // A recorded child's path is only a marker that it was there: its directory's
        // entries are found by `rel`.
        (Lower::Record(r), Some(_)) => r
            .dirs
            .get(rel)
            .map(|entries| {
                entries
                    .iter()
                    .map(|(name, stat)| Child {
                        name: name.clone(),
                        path: PathBuf::new(),
                        stat: stat.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    for c in lower_children {
        let slot = names.entry(c.name.clone()).or_default();
        slot.0 = Some(c);
    }
    for c in children(upper)? {
        let slot = names.entry(c.name.clone()).or_default();
        slot.1 = Some(c);
    }
    let mut items: Vec<DiffItem> = names
        .into_iter()
        .map(|(name, (lower, upper))| DiffItem {
            tar_name: if upper.is_some() {
                name
            } else {
                whiteout_name(&name)
            },
            lower,
            upper,
        })
        .collect();
    items.sort_by(|a, b| a.tar_name.cmp(&b.tar_name));
    Ok(items.into_iter())
}

/// Whether a recorded entry is unchanged: a directory by its mode, owner and mtime (one whose
/// entries changed is emitted, as overlayfs copies it up and docker's layer then has it),
/// anything else by its whole lstat.
fn same_recorded(l: &Stat, u: &Stat) -> bool {
    let meta = l.kind == u.kind
        && l.mode == u.mode
        && l.uid == u.uid
        && l.gid == u.gid
        && l.mtime == u.mtime
        && l.mtime_nsec == u.mtime_nsec;
    meta && (l.kind == Kind::Dir
        || (l.ino == u.ino
            && l.dev == u.dev
            && l.ctime == u.ctime
            && l.ctime_nsec == u.ctime_nsec
            && l.size == u.size
            && l.rdev == u.rdev))
}

/// Emits every directory on the stack not emitted yet, outermost first (emitted frames are
/// always a prefix of the stack).
fn flush_parents<W: Write>(stack: &mut [DiffFrame], tw: &mut TarWriter<'_, W>) -> Result<()> {
    for frame in stack.iter_mut().filter(|f| !f.emitted) {
        if let Some((path, stat, xattrs)) = &frame.dir {
            tw.node(&frame.rel, path, stat, xattrs)?;
        }
        frame.emitted = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    use std::os::unix::net::UnixListener;
    use std::process::Command;

    use rustix::fs::{AtFlags, CWD, FileType, Timespec, Timestamps, XattrFlags};

    use super::xattrs::get_xattr;
    use super::*;
    use crate::layer_tar::{BLOCK, Header, encode, pax_record};
    use std::io::{self, Read};

    use crate::idmap::IdRange;
    use rustix::fs::Mode;
    use rustix::io::Errno;

    const T0: i64 = 1_600_000_000;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn euid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn egid() -> u32 {
        rustix::process::getegid().as_raw()
    }

    /// Builds a tree from one line per entry: `<kind> <path> [key=value ...]`.
    /// Kinds: `d` dir, `f` file, `l` symlink, `h` hardlink, `p` fifo, `c`/`b` device,
    /// `w` 0/0 char device (an overlay whiteout), `s` socket.
    /// Keys: `mode=` (octal), `data=`, `to=` (l: target, h: existing path), `t=`, `ns=`,
    /// `own=uid:gid`, `dev=maj:min`, `x.<xattr>=<value>`.
    /// Hardlinks are made after everything else and all mtimes are set last, so the same
    /// lines in any order give the same tree.
    fn build(root: &Path, spec: &[&str]) {
        fs::create_dir_all(root).unwrap();
        let (links, others): (Vec<&str>, Vec<&str>) =
            spec.iter().partition(|l| l.starts_with("h "));
        let mut times = Vec::new();
        for line in others.iter().chain(links.iter()) {
            let mut words = line.split_whitespace();
            let kind = words.next().unwrap();
            let path = root.join(words.next().unwrap());
            let (mut mode, mut data, mut to, mut t, mut ns) = (None, "", "", T0, 0);
            let (mut own, mut dev, mut xattrs) = (None, (0, 0), Vec::new());
            for w in words {
                let (k, v) = w.split_once('=').unwrap();
                match k {
                    "mode" => mode = Some(u32::from_str_radix(v, 8).unwrap()),
                    "data" => data = v,
                    "to" => to = v,
                    "t" => t = v.parse().unwrap(),
                    "ns" => ns = v.parse().unwrap(),
                    "own" => {
                        let (u, g) = v.split_once(':').unwrap();
                        own = Some((u.parse().unwrap(), g.parse().unwrap()));
                    }
                    "dev" => {
                        let (a, b) = v.split_once(':').unwrap();
                        dev = (a.parse().unwrap(), b.parse().unwrap());
                    }
                    _ => xattrs.push((k.strip_prefix("x.").unwrap(), v)),
                }
            }
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let default_mode = match kind {
                "d" => {
                    fs::create_dir_all(&path).unwrap();
                    0o755
                }
                "f" => {
                    fs::write(&path, data).unwrap();
                    0o644
                }
                "l" => {
                    symlink(to, &path).unwrap();
                    0
                }
                "h" => {
                    fs::hard_link(root.join(to), &path).unwrap();
                    0
                }
                "s" => {
                    drop(UnixListener::bind(&path).unwrap());
                    0
                }
                "p" | "c" | "b" | "w" => {
                    let (ft, dev) = match kind {
                        "p" => (FileType::Fifo, (0, 0)),
                        "c" => (FileType::CharacterDevice, dev),
                        "b" => (FileType::BlockDevice, dev),
                        _ => (FileType::CharacterDevice, (0, 0)),
                    };
                    let d = rustix::fs::makedev(dev.0, dev.1);
                    rustix::fs::mknodat(CWD, &path, ft, Mode::from_raw_mode(0o600), d).unwrap();
                    0o644
                }
                other => panic!("unknown kind {other}"),
            };
            if kind == "h" {
                continue;
            }
            if let Some((u, g)) = own {
                lchown(&path, Some(u), Some(g)).unwrap();
            }
            if !matches!(kind, "l" | "s") {
                fs::set_permissions(
                    &path,
                    fs::Permissions::from_mode(mode.unwrap_or(default_mode)),
                )
                .unwrap();
            }
            for (k, v) in xattrs {
                rustix::fs::lsetxattr(&path, k, v.as_bytes(), XattrFlags::empty())
                    .unwrap_or_else(|e| panic!("setting {k} on {}: {e}", path.display()));
            }
            times.push((path, t, ns));
        }
        for (path, t, ns) in times {
            set_mtime(&path, t, ns);
        }
    }

    fn set_mtime(path: &Path, t: i64, ns: i64) {
        let ts = Timespec {
            tv_sec: t,
            tv_nsec: ns,
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// One entry as read back by the tar crate.
    #[derive(Debug)]
    struct Ent {
        path: String,
        kind: u8,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        dev: (u32, u32),
        xattrs: Vec<(String, Vec<u8>)>,
        data: Vec<u8>,
    }

    fn read(tar_bytes: &[u8]) -> Vec<Ent> {
        let mut ar = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut xattrs = Vec::new();
            if let Some(exts) = e.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
            let h = e.header().clone();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push(Ent {
                path,
                kind: h.entry_type().as_byte(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link,
                dev: (
                    h.device_major().unwrap().unwrap_or(0),
                    h.device_minor().unwrap().unwrap_or(0),
                ),
                xattrs,
                data,
            });
        }
        out
    }

    /// `path kindMODE [-> link] [data]`, e.g. `etc/ d755`, `etc/passwd f644 root`.
    fn show(e: &Ent) -> String {
        let k = match e.kind {
            b'0' => 'f',
            b'5' => 'd',
            b'2' => 'l',
            b'1' => 'h',
            b'6' => 'p',
            b'3' => 'c',
            b'4' => 'b',
            other => other as char,
        };
        let mut s = format!("{} {k}{:o}", e.path, e.mode);
        if let Some(l) = &e.link {
            s += &format!(" -> {l}");
        }
        if !e.data.is_empty() {
            s += &format!(" {}", String::from_utf8_lossy(&e.data));
        }
        s
    }

    fn shows(tar_bytes: &[u8]) -> Vec<String> {
        read(tar_bytes).iter().map(show).collect()
    }

    /// The raw headers: (typeflag, name field, PAX record keys when it is an `x` header).
    /// Also checks the block structure and the two-zero-block end.
    fn raw(tar_bytes: &[u8]) -> Vec<(u8, String, Vec<String>)> {
        assert_eq!(tar_bytes.len() % BLOCK, 0);
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let b = &tar_bytes[off..off + BLOCK];
            if b.iter().all(|&x| x == 0) {
                assert_eq!(
                    tar_bytes.len(),
                    off + 2 * BLOCK,
                    "ends with exactly two zero blocks"
                );
                assert!(tar_bytes[off..].iter().all(|&x| x == 0));
                return out;
            }
            let h = tar::Header::from_byte_slice(b);
            assert_eq!(
                h.cksum().unwrap(),
                b[..148]
                    .iter()
                    .chain(&[b' '; 8])
                    .chain(&b[156..])
                    .map(|&x| u32::from(x))
                    .sum::<u32>()
            );
            assert_eq!(&b[257..265], b"ustar\x0000");
            let size = usize::try_from(h.size().unwrap()).unwrap();
            let name = String::from_utf8_lossy(&b[..100])
                .trim_end_matches('\0')
                .to_owned();
            let data = &tar_bytes[off + BLOCK..off + BLOCK + size];
            let keys = if b[156] == b'x' {
                pax_keys(data)
            } else {
                Vec::new()
            };
            out.push((b[156], name, keys));
            off += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        }
    }

    fn pax_keys(mut data: &[u8]) -> Vec<String> {
        let mut keys = Vec::new();
        while !data.is_empty() {
            let sp = data.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
            let rec = &data[sp + 1..len];
            assert_eq!(data[len - 1], b'\n');
            let eq = rec.iter().position(|&b| b == b'=').unwrap();
            keys.push(String::from_utf8(rec[..eq].to_vec()).unwrap());
            data = &data[len..];
        }
        keys
    }

    fn dir_tar(root: &Path, opts: &TarOptions) -> Vec<u8> {
        write_dir(root, Vec::new(), opts).unwrap()
    }

    fn opts_clamp(clamp: Option<i64>) -> TarOptions {
        TarOptions {
            clamp_mtime: clamp,
            ..TarOptions::default()
        }
    }

    #[test]
    fn diff_dir_order_types_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build(
            &root,
            &[
                "d etc",
                "f etc/passwd data=root",
                "f etc/shadow mode=640 data=x",
                "l etc/link to=../a/x",
                "d a",
                "f a/x data=1",
                "f a.b data=2",
                "f -x",
                "f B",
                "d bin",
                "f bin/su mode=4755 data=su",
                "d tmp mode=1777",
                "d sgid mode=2750",
                "p run.fifo mode=600",
                "s sock",
                "d empty",
            ],
        );
        let tar_bytes = dir_tar(&root, &TarOptions::default());
        let want = [
            "-x f644",
            "B f644",
            "a/ d755",
            "a/x f644 1",
            "a.b f644 2",
            "bin/ d755",
            "bin/su f4755 su",
            "empty/ d755",
            "etc/ d755",
            "etc/link l777 -> ../a/x",
            "etc/passwd f644 root",
            "etc/shadow f640 x",
            "run.fifo p600",
            "sgid/ d2750",
            "tmp/ d1777",
        ];
        assert_eq!(shows(&tar_bytes), want);
        for e in read(&tar_bytes) {
            assert_eq!(
                (e.uid, e.gid),
                (u64::from(euid()), u64::from(egid())),
                "{}",
                e.path
            );
            assert_eq!(e.mtime, T0 as u64, "{}", e.path);
            assert!(e.xattrs.is_empty());
        }
        // Short names, no xattrs: no PAX headers at all, plain ustar.
        assert!(raw(&tar_bytes).iter().all(|(flag, _, _)| *flag != b'x'));
        // Deterministic: same bytes again.
        assert_eq!(dir_tar(&root, &TarOptions::default()), tar_bytes);
    }

    #[test]
    fn diff_mtime_clamp() {
        // (file mtime, nanoseconds, clamp, expected header mtime)
        let cases: &[(i64, i64, Option<i64>, u64)] = &[
            (100, 0, None, 100),
            (100, 999_999_999, None, 100),
            (2_000_000_000, 0, Some(1_700_000_000), 1_700_000_000),
            (100, 0, Some(1_700_000_000), 100),
            (1_700_000_000, 5, Some(1_700_000_000), 1_700_000_000),
        ];
        for &(t, ns, clamp, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            build(
                tmp.path(),
                &[
                    &format!("f file t={t} ns={ns}"),
                    &format!("d dir t={t} ns={ns}"),
                ],
            );
            let ents = read(&dir_tar(tmp.path(), &opts_clamp(clamp)));
            for e in &ents {
                assert_eq!(e.mtime, want, "{t}.{ns} clamped to {clamp:?}: {}", e.path);
            }
        }
        // Whiteouts get mtime 0, clamped too.
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path(), &["w gone"]);
        let ents = read(&write_upperdir(tmp.path(), Vec::new(), &opts_clamp(Some(5))).unwrap());
        assert_eq!((ents[0].path.as_str(), ents[0].mtime), (".wh.gone", 0));
    }

    #[test]
    fn diff_hardlinks() {
        let tmp = tempfile::tempdir().unwrap();
        build(
            tmp.path(),
            &[
                "f a/one data=x mode=600",
                "h z/two to=a/one",
                "h b to=a/one",
                "f c data=c",
                "l s to=c",
                "h s2 to=s",
            ],
        );
        let tar_bytes = dir_tar(tmp.path(), &TarOptions::default());
        assert_eq!(
            shows(&tar_bytes),
            [
                "a/ d755",
                "a/one f600 x",
                "b h600 -> a/one",
                "c f644 c",
                "s l777 -> c",
                "s2 h777 -> s",
                "z/ d755",
                "z/two h600 -> a/one"
            ]
        );
        // `s2` is a hardlink of the symlink `s` itself (the kernel links symlinks, not targets).
        let ents = read(&tar_bytes);
        let s2 = ents.iter().find(|e| e.path == "s2").unwrap();
        assert_eq!(s2.kind, b'1');
    }

    fn capability_v2(bit: u32) -> Vec<u8> {
        // struct vfs_cap_data, revision 2, effective flag set: permitted = {bit}.
        let words = [0x0200_0001u32, 1 << bit, 0, 0, 0];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn diff_xattrs_kept_and_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        build(
            tmp.path(),
            &[
                "f file x.user.zz=last x.user.aa=first x.user.overlay.opaque=y x.user.overlay.origin=o",
                "d dir x.user.d=1",
            ],
        );
        let file = tmp.path().join("file");
        let cap = capability_v2(10);
        let root_only = [
            ("security.capability", cap.clone()),
            ("trusted.keep", b"t".to_vec()),
            ("trusted.overlay.origin", b"o".to_vec()),
        ];
        for (name, value) in &root_only {
            let r = rustix::fs::lsetxattr(&file, *name, value, XattrFlags::empty());
            if is_root() {
                r.unwrap();
            } else {
                // Unprivileged: security.capability needs CAP_SETFCAP, trusted.* CAP_SYS_ADMIN.
                assert_eq!(r, Err(Errno::PERM), "{name}");
            }
        }
        set_mtime(&file, T0, 0);
        let tar_bytes = dir_tar(tmp.path(), &TarOptions::default());
        let ents = read(&tar_bytes);
        let names = |e: &Ent| e.xattrs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ents[0]), ["user.d"]);
        let mut want: Vec<&str> = vec!["user.aa", "user.zz"];
        if is_root() {
            want = vec!["security.capability", "trusted.keep", "user.aa", "user.zz"];
            let (_, v) = ents[1]
                .xattrs
                .iter()
                .find(|(n, _)| n == "security.capability")
                .unwrap();
            assert_eq!(*v, cap);
        }
        assert_eq!(names(&ents[1]), want);
        assert_eq!(ents[1].data, b"");
        // Records are sorted by key in the PAX header.
        let r = raw(&tar_bytes);
        let keys: Vec<String> = want.iter().map(|n| format!("SCHILY.xattr.{n}")).collect();
        assert_eq!(r[2], (b'x', "PaxHeaders.0/file".to_owned(), keys));
    }

    #[test]
    fn diff_long_names_use_pax() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "n".repeat(120);
        let c60 = "c".repeat(60);
        let target = "t/".repeat(75);
        let split_ok = format!("{c60}/{c60}/{c60}");
        build(
            tmp.path(),
            &[
                &format!("f d/{long} data=1"),
                &format!("f {split_ok} data=2"),
                &format!("d {long}"),
                &format!("l x/link to={target}"),
                &format!("h x/hl to=d/{long}"),
            ],
        );
        let tar_bytes = dir_tar(tmp.path(), &TarOptions::default());
        let paths: Vec<String> = read(&tar_bytes).iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            paths,
            [
                format!("{c60}/"),
                format!("{c60}/{c60}/"),
                split_ok.clone(),
                "d/".to_owned(),
                format!("d/{long}"),
                format!("{long}/"),
                "x/".to_owned(),
                "x/hl".to_owned(),
                "x/link".to_owned(),
            ]
        );
        let ents = read(&tar_bytes);
        assert_eq!(ents[7].link.as_deref(), Some(format!("d/{long}").as_str()));
        assert_eq!(ents[8].link.as_deref(), Some(target.as_str()));
        let r = raw(&tar_bytes);
        let flags: Vec<(u8, Vec<String>)> = r.iter().map(|(f, _, k)| (*f, k.clone())).collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            flags,
            [
                (b'5', s(&[])),
                (b'5', s(&[])),
                (b'0', s(&[])), // 182 bytes, split into prefix/name
                (b'5', s(&[])),
                (b'x', s(&["path"])),
                (b'0', s(&[])),
                (b'x', s(&["path"])),
                (b'5', s(&[])),
                (b'5', s(&[])),
                (b'x', s(&["linkpath"])),
                (b'1', s(&[])),
                (b'x', s(&["linkpath"])),
                (b'2', s(&[])),
            ]
        );
        assert_eq!(r[4].1, "d/PaxHeaders.0/".to_owned() + &long[..85]);
        // Never GNU long-name entries.
        assert!(r.iter().all(|(f, _, _)| *f != b'L' && *f != b'K'));
    }

    #[test]
    fn diff_header_encoding() {
        let base = Header {
            path: b"f",
            link: b"",
            flag: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: T0,
            dev: (0, 0),
            xattrs: &[],
        };
        // (case, header, expected PAX keys, expected values read back by the tar crate)
        let big_path = [b"a/".as_slice(), &[b'b'; 200]].concat();
        let cases: Vec<(&str, Header<'_>, Vec<&str>)> = vec![
            ("plain", Header { ..base }, vec![]),
            (
                "8 GiB",
                Header {
                    size: 8 << 30,
                    ..base
                },
                vec!["size"],
            ),
            (
                "just under 8 GiB",
                Header {
                    size: (8 << 30) - 1,
                    ..base
                },
                vec![],
            ),
            (
                "large uid",
                Header {
                    uid: 3_000_000,
                    gid: 2_097_151,
                    ..base
                },
                vec!["uid"],
            ),
            (
                "large gid",
                Header {
                    gid: 2_097_152,
                    ..base
                },
                vec!["gid"],
            ),
            ("before 1970", Header { mtime: -5, ..base }, vec!["mtime"]),
            (
                "dir with a long name",
                Header {
                    path: &big_path,
                    flag: b'5',
                    ..base
                },
                vec!["path"],
            ),
        ];
        for (name, h, want) in cases {
            let bytes = encode(&h).unwrap();
            let mut tar_bytes = bytes.clone();
            if h.size == 0 {
                tar_bytes.extend_from_slice(&[0; 2 * BLOCK]);
                let ents = read(&tar_bytes);
                assert_eq!(ents.len(), 1, "{name}");
                assert_eq!(ents[0].path.as_bytes(), h.path, "{name}");
            }
            let hdr_at = bytes.len() - BLOCK;
            if want.is_empty() {
                assert_eq!(bytes.len(), BLOCK, "{name}");
            } else {
                assert_eq!(bytes[156], b'x', "{name}");
                let size = usize::try_from(
                    tar::Header::from_byte_slice(&bytes[..BLOCK])
                        .size()
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(pax_keys(&bytes[BLOCK..BLOCK + size]), want, "{name}");
            }
            let ustar = tar::Header::from_byte_slice(&bytes[hdr_at..]);
            assert_eq!(ustar.mode().unwrap(), 0o644, "{name}");
            if !want.contains(&"uid") {
                assert_eq!(ustar.uid().unwrap(), u64::from(h.uid), "{name}");
            }
        }
        // A PAX record's length counts its own digits (9 → 10 crosses a digit boundary).
        for len in 1..200 {
            let mut out = Vec::new();
            let value = vec![b'v'; len];
            pax_record(&mut out, b"k", &value);
            assert_eq!(pax_keys(&out), ["k"]);
        }
        // An xattr name with '=' cannot be a PAX key.
        let bad = [(b"user.a=b".to_vec(), b"v".to_vec())];
        assert!(
            encode(&Header {
                xattrs: &bad,
                ..base
            })
            .is_err()
        );
    }

    #[test]
    fn diff_devices() {
        let tmp = tempfile::tempdir().unwrap();
        // Anyone may create a 0/0 character device (the overlay whiteout, Linux 5.8+); in
        // write_dir it is just a device.
        build(tmp.path(), &["w zero"]);
        let r = rustix::fs::mknodat(
            CWD,
            tmp.path().join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        );
        let r2 = rustix::fs::mknodat(
            CWD,
            tmp.path().join("loop0"),
            FileType::BlockDevice,
            Mode::from_raw_mode(0o660),
            rustix::fs::makedev(7, 0),
        );
        let mut want = vec![("zero", b'3', (0, 0))];
        if is_root() {
            r.unwrap();
            r2.unwrap();
            want = vec![
                ("loop0", b'4', (7, 0)),
                ("null", b'3', (1, 3)),
                ("zero", b'3', (0, 0)),
            ];
        } else {
            // Other devices need CAP_MKNOD.
            assert_eq!(r, Err(Errno::PERM));
            assert_eq!(r2, Err(Errno::PERM));
        }
        let ents = read(&dir_tar(tmp.path(), &TarOptions::default()));
        let got: Vec<(&str, u8, (u32, u32))> = ents
            .iter()
            .map(|e| (e.path.as_str(), e.kind, e.dev))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn diff_id_map() {
        let rootless = |host: u32| TarOptions {
            id_map: IdMap {
                uids: vec![
                    IdRange {
                        container: 0,
                        host: 0,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host,
                        size: 65536,
                    },
                ],
                gids: vec![
                    IdRange {
                        container: 0,
                        host: 0,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host,
                        size: 65536,
                    },
                ],
            },
            clamp_mtime: None,
        };
        let tmp = tempfile::tempdir().unwrap();
        // As root the tree is chowned to host 200000 (+5 for the group); unprivileged, files
        // are owned by the user, which the mapping then starts at (a user's files standing
        // for container ids 1.. is the same reverse mapping).
        let (host, opts) = if is_root() {
            build(
                tmp.path(),
                &["d d own=200000:200005", "f d/f own=200001:200000"],
            );
            (200000, rootless(200000))
        } else {
            build(tmp.path(), &["d d", "f d/f"]);
            assert_eq!(
                lchown(tmp.path().join("d"), Some(200000), None)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::PermissionDenied
            );
            assert_eq!(
                euid(),
                egid(),
                "the test user's primary group has its uid's number"
            );
            (euid(), rootless(euid()))
        };
        let ents = read(&dir_tar(tmp.path(), &opts));
        let ids: Vec<(u64, u64)> = ents.iter().map(|e| (e.uid, e.gid)).collect();
        if is_root() {
            assert_eq!(ids, [(1, 6), (2, 1)]);
        } else {
            assert_eq!(ids, [(1, 1), (1, 1)]);
        }
        // An owner outside the mapping is an error naming the path.
        let err = write_dir(tmp.path(), Vec::new(), &rootless(host + 100_000))
            .unwrap_err()
            .to_string();
        let d = tmp.path().join("d");
        assert!(err.contains(&d.display().to_string()), "{err}");
        assert!(err.contains(&format!("uid {host}")), "{err}");
        // Container ids beyond ustar's 2^21 go to PAX uid/gid records.
        let far = TarOptions {
            id_map: IdMap {
                uids: vec![IdRange {
                    container: 3_000_000,
                    host,
                    size: 2,
                }],
                gids: vec![IdRange {
                    container: 3_000_000,
                    host: if is_root() { 200000 } else { host },
                    size: 6,
                }],
            },
            clamp_mtime: None,
        };
        let tar_bytes = dir_tar(tmp.path(), &far);
        assert_eq!(raw(&tar_bytes)[0].2, ["gid", "uid"]);
        let pax: Vec<(String, String)> = tar::Archive::new(tar_bytes.as_slice())
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.key().unwrap().to_owned(), e.value().unwrap().to_owned())
            })
            .collect();
        let want_gid = if is_root() { "3000005" } else { "3000000" };
        assert_eq!(
            pax,
            [
                ("gid".to_owned(), want_gid.to_owned()),
                ("uid".to_owned(), "3000000".to_owned())
            ]
        );
    }

    #[test]
    fn diff_upperdir_whiteouts_and_opaque() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = vec![
            "w gone",
            "d opq x.user.overlay.opaque=y x.user.keep=1",
            "f opq/-a data=a",
            "f opq/b data=b",
            "d notopq x.user.overlay.opaque=x",
            "f notopq/c",
            "d sub",
            "w sub/dead",
            "f sub/file x.user.overlay.origin=z",
            "d sub/deep",
            "w sub/deep/x",
        ];
        if is_root() {
            spec.extend([
                "d topq x.trusted.overlay.opaque=y x.trusted.overlay.origin=o",
                "f topq/f",
            ]);
        } else {
            let p = tmp.path().join("probe");
            fs::create_dir(&p).unwrap();
            let r = rustix::fs::lsetxattr(&p, "trusted.overlay.opaque", b"y", XattrFlags::empty());
            assert_eq!(
                r,
                Err(Errno::PERM),
                "unprivileged overlay uses user.overlay.opaque instead"
            );
            fs::remove_dir(&p).unwrap();
        }
        build(tmp.path(), &spec);
        let tar_bytes = write_upperdir(tmp.path(), Vec::new(), &TarOptions::default()).unwrap();
        let mut want = vec![
            ".wh.gone f0",
            "notopq/ d755",
            "notopq/c f644",
            "opq/ d755",
            "opq/.wh..wh..opq f0",
            "opq/-a f644 a",
            "opq/b f644 b",
            "sub/ d755",
            "sub/.wh.dead f0",
            "sub/deep/ d755",
            "sub/deep/.wh.x f0",
            "sub/file f644",
        ];
        if is_root() {
            want.extend(["topq/ d755", "topq/.wh..wh..opq f0", "topq/f f644"]);
        }
        assert_eq!(shows(&tar_bytes), want);
        for e in read(&tar_bytes) {
            assert!(
                e.xattrs.iter().all(|(n, _)| !n.contains(".overlay.")),
                "{}: {:?}",
                e.path,
                e.xattrs
            );
            if e.path.contains(".wh.") {
                assert_eq!(
                    (e.kind, e.uid, e.gid, e.mtime, e.data.len()),
                    (b'0', 0, 0, 0, 0),
                    "{}",
                    e.path
                );
            }
        }
        let opq = read(&tar_bytes)
            .into_iter()
            .find(|e| e.path == "opq/")
            .unwrap();
        assert_eq!(opq.xattrs, [("user.keep".to_owned(), b"1".to_vec())]);
        // In write_dir the same tree has no whiteouts: the devices are devices, and the
        // overlay xattrs are still dropped.
        let plain = shows(&dir_tar(tmp.path(), &TarOptions::default()));
        assert!(plain.contains(&"gone c644".to_owned()), "{plain:?}");
        assert!(!plain.iter().any(|p| p.contains(".wh.")), "{plain:?}");
    }

    #[test]
    fn diff_upperdir_refuses_redirect_and_metacopy() {
        let mut cases = vec![("d moved x.user.overlay.redirect=/old", "moved")];
        if is_root() {
            cases.push(("f meta x.trusted.overlay.metacopy=", "meta"));
        }
        for (line, name) in cases {
            let tmp = tempfile::tempdir().unwrap();
            build(tmp.path(), &[line]);
            let err = write_upperdir(tmp.path(), Vec::new(), &TarOptions::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&tmp.path().join(name).display().to_string()),
                "{err}"
            );
            assert!(err.contains("overlay"), "{err}");
            // As a plain directory the overlay xattrs are just dropped.
            write_dir(tmp.path(), Vec::new(), &TarOptions::default()).unwrap();
        }
    }

    /// (case, lower, upper, expected entries)
    type DiffCase = (
        &'static str,
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<&'static str>,
    );

    fn diff_cases() -> Vec<DiffCase> {
        let base = vec!["d etc", "f etc/a data=1", "l ln to=etc/a", "p fifo"];
        let with = |extra: &[&'static str]| [base.clone(), extra.to_vec()].concat();
        let replace = |old: &str, new: &'static str| -> Vec<&'static str> {
            base.iter()
                .map(|l| if *l == old { new } else { *l })
                .collect()
        };
        vec![
            ("unchanged", base.clone(), base.clone(), vec![]),
            (
                "added file",
                base.clone(),
                with(&["f etc/b data=2"]),
                vec!["etc/ d755", "etc/b f644 2"],
            ),
            (
                "added at the root",
                base.clone(),
                with(&["f new data=n"]),
                vec!["new f644 n"],
            ),
            (
                "size differs",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=22"),
                vec!["etc/ d755", "etc/a f644 22"],
            ),
            (
                "same size, mtime differs",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=2 t=1600000001"),
                vec!["etc/ d755", "etc/a f644 2"],
            ),
            (
                "same content, mtime differs",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=1 ns=1"),
                vec!["etc/ d755", "etc/a f644 1"],
            ),
            (
                "same size and whole-second mtime: content compared",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=2"),
                vec!["etc/ d755", "etc/a f644 2"],
            ),
            (
                "same size and sub-second mtime: metadata trusted",
                replace("f etc/a data=1", "f etc/a data=1 ns=5"),
                replace("f etc/a data=1", "f etc/a data=2 ns=5"),
                vec![],
            ),
            (
                "chmod",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=1 mode=600"),
                vec!["etc/ d755", "etc/a f600 1"],
            ),
            (
                "setuid",
                base.clone(),
                replace("f etc/a data=1", "f etc/a data=1 mode=4644"),
                vec!["etc/ d755", "etc/a f4644 1"],
            ),
            (
                "dir mode only",
                base.clone(),
                replace("d etc", "d etc mode=700"),
                vec!["etc/ d700"],
            ),
            (
                "dir mtime only",
                base.clone(),
                replace("d etc", "d etc t=1700000000"),
                vec![],
            ),
            (
                "deleted file",
                base.clone(),
                vec!["d etc", "l ln to=etc/a", "p fifo"],
                vec!["etc/ d755", "etc/.wh.a f0"],
            ),
            (
                "deleted dir is one whiteout",
                with(&["d gone", "f gone/x", "d gone/sub", "f gone/sub/y"]),
                base.clone(),
                vec![".wh.gone f0"],
            ),
            (
                "file replaced by a dir",
                with(&["f x data=old"]),
                with(&["d x", "f x/child data=c", "d x/sub", "f x/sub/g data=g"]),
                vec!["x/ d755", "x/child f644 c", "x/sub/ d755", "x/sub/g f644 g"],
            ),
            (
                "dir replaced by a file",
                with(&["d x", "f x/child data=c"]),
                with(&["f x data=new"]),
                vec!["x f644 new"],
            ),
            (
                "symlink retargeted",
                base.clone(),
                replace("l ln to=etc/a", "l ln to=etc/b"),
                vec!["ln l777 -> etc/b"],
            ),
            (
                "symlink replaced by a file",
                base.clone(),
                replace("l ln to=etc/a", "f ln data=f"),
                vec!["ln f644 f"],
            ),
            (
                "fifo replaced by a symlink",
                base.clone(),
                replace("p fifo", "l fifo to=x"),
                vec!["fifo l777 -> x"],
            ),
            (
                "xattr changed",
                with(&["f x x.user.k=1"]),
                with(&["f x x.user.k=2"]),
                vec!["x f644"],
            ),
            (
                "xattr added",
                base.clone(),
                replace("d etc", "d etc x.user.k=1"),
                vec!["etc/ d755"],
            ),
            (
                "only an overlay xattr changed",
                with(&["f x x.user.overlay.origin=1"]),
                with(&["f x x.user.overlay.origin=2"]),
                vec![],
            ),
            (
                "deep change emits every parent, not siblings",
                with(&[
                    "d a",
                    "d a/b",
                    "d a/b/c",
                    "f a/b/c/f data=1",
                    "f a/other",
                    "d a/b/untouched",
                    "f a/b/untouched/u",
                ]),
                with(&[
                    "d a",
                    "d a/b",
                    "d a/b/c",
                    "f a/b/c/f data=22",
                    "f a/other",
                    "d a/b/untouched",
                    "f a/b/untouched/u",
                ]),
                vec!["a/ d755", "a/b/ d755", "a/b/c/ d755", "a/b/c/f f644 22"],
            ),
            (
                "deep deletion emits parents",
                with(&["d a", "d a/b", "f a/b/f", "f a/b/g"]),
                with(&["d a", "d a/b", "f a/b/g"]),
                vec!["a/ d755", "a/b/ d755", "a/b/.wh.f f0"],
            ),
            (
                "whiteouts sort by their emitted name",
                with(&["d s", "f s/b", "f s/a"]),
                with(&["d s", "f s/a data=2", "f s/c"]),
                vec!["s/ d755", "s/.wh.b f0", "s/a f644 2", "s/c f644"],
            ),
            (
                "added hardlinks",
                base.clone(),
                with(&["f n1 data=h", "h n2 to=n1"]),
                vec!["n1 f644 h", "n2 h644 -> n1"],
            ),
            (
                "new link to an unchanged file is a whole file",
                with(&["f old data=o"]),
                with(&["f old data=o", "h z to=old"]),
                vec!["z f644 o"],
            ),
            (
                "sockets are absent on both sides",
                with(&["s sock"]),
                with(&["s sock2"]),
                vec![],
            ),
            (
                "added empty dir",
                base.clone(),
                with(&["d e mode=700"]),
                vec!["e/ d700"],
            ),
        ]
    }

    #[test]
    fn diff_tree_diff_cases() {
        for (name, lower, upper, want) in diff_cases() {
            let tmp = tempfile::tempdir().unwrap();
            let (l, u) = (tmp.path().join("lower"), tmp.path().join("upper"));
            build(&l, &lower);
            build(&u, &upper);
            let tar_bytes = write_tree_diff(&l, &u, Vec::new(), &TarOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(shows(&tar_bytes), want, "{name}");
            if want.is_empty() {
                assert_eq!(tar_bytes, vec![0; 2 * BLOCK], "{name}");
            }
            for e in read(&tar_bytes).iter().filter(|e| e.path.contains(".wh.")) {
                assert_eq!(
                    (e.kind, e.mode, e.uid, e.gid, e.mtime),
                    (b'0', 0, 0, 0, 0),
                    "{name}: {}",
                    e.path
                );
            }
            // Reversed roles give the inverse change set, also without error.
            write_tree_diff(&u, &l, Vec::new(), &TarOptions::default())
                .unwrap_or_else(|e| panic!("{name} reversed: {e}"));
        }
    }

    /// A recorded tree's diff finds what metadata alone cannot (a rewrite with the same size
    /// and mtime, through its ctime), never content the record does not have, and leaves out
    /// the skipped subtrees whatever happens in them.
    #[test]
    fn diff_recorded_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let u = tmp.path().join("root");
        build(
            &u,
            &[
                "d etc",
                "f etc/a data=1",
                "f etc/b data=2",
                "d cache",
                "f cache/x data=x",
                "f staged data=s",
                "f gone data=g",
                "d olddir",
                "f olddir/f data=f",
            ],
        );
        let record = TreeRecord::take(&u).unwrap();
        assert_eq!(record.len(), 9);
        fs::write(u.join("etc/a"), "1").unwrap();
        set_mtime(&u.join("etc/a"), T0, 0);
        fs::remove_file(u.join("gone")).unwrap();
        fs::remove_dir_all(u.join("olddir")).unwrap();
        fs::write(u.join("cache/y"), "y").unwrap();
        fs::remove_file(u.join("staged")).unwrap();
        fs::write(u.join("n"), "n").unwrap();
        set_mtime(&u.join("n"), T0, 0);
        let skip = [b"cache".to_vec(), b"staged".to_vec()];
        let tar_bytes =
            write_recorded_diff(&record, &u, &skip, Vec::new(), &TarOptions::default()).unwrap();
        assert_eq!(
            shows(&tar_bytes),
            [
                ".wh.gone f0",
                ".wh.olddir f0",
                "etc/ d755",
                "etc/a f644 1",
                "n f644 n"
            ]
        );
        // Nothing changed since: nothing to say.
        let again = TreeRecord::take(&u).unwrap();
        let tar_bytes =
            write_recorded_diff(&again, &u, &[], Vec::new(), &TarOptions::default()).unwrap();
        assert_eq!(tar_bytes, vec![0; 2 * BLOCK]);
    }

    #[test]
    fn diff_tree_diff_owner_change() {
        let tmp = tempfile::tempdir().unwrap();
        let (l, u) = (tmp.path().join("lower"), tmp.path().join("upper"));
        build(&l, &["d d", "f d/f data=1"]);
        build(&u, &["d d", "f d/f data=1"]);
        let f = u.join("d/f");
        if is_root() {
            lchown(&f, Some(5), Some(6)).unwrap();
            set_mtime(&f, T0, 0);
            let tar_bytes = write_tree_diff(&l, &u, Vec::new(), &TarOptions::default()).unwrap();
            let ents = read(&tar_bytes);
            let got: Vec<(&str, u64, u64)> = ents
                .iter()
                .map(|e| (e.path.as_str(), e.uid, e.gid))
                .collect();
            assert_eq!(got, [("d/", 0, 0), ("d/f", 5, 6)]);
        } else {
            // Unprivileged, a file cannot change owner (a rootless build does that inside
            // its user namespace, where the ids then come back through id_map).
            assert_eq!(
                lchown(&f, Some(5), Some(6)).unwrap_err().kind(),
                io::ErrorKind::PermissionDenied
            );
            let tar_bytes = write_tree_diff(&l, &u, Vec::new(), &TarOptions::default()).unwrap();
            assert_eq!(tar_bytes, vec![0; 2 * BLOCK]);
        }
    }

    #[test]
    fn diff_determinism_across_directories_and_creation_order() {
        let spec: Vec<String> = vec![
            "d etc".into(),
            "f etc/passwd data=root".into(),
            "f etc/group data=g mode=600".into(),
            "d usr".into(),
            "d usr/bin".into(),
            "f usr/bin/a data=a x.user.z=1 x.user.a=2".into(),
            "h usr/bin/b to=usr/bin/a".into(),
            "h usr/bin/0 to=usr/bin/a".into(),
            "l usr/bin/c to=a".into(),
            "p usr/p".into(),
            format!("f usr/{} data=long", "l".repeat(150)),
            "f z t=1 ns=7".into(),
            "w usr/gone".into(),
            "d usr/opq x.user.overlay.opaque=y".into(),
            "f usr/opq/in data=i".into(),
        ];
        let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
        let mut reversed = spec.clone();
        reversed.reverse();
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("one"), tmp.path().join("another/two"));
        build(&a, &spec);
        build(&b, &reversed);
        let opts = opts_clamp(Some(1_650_000_000));
        let ta = dir_tar(&a, &opts);
        assert_eq!(ta, dir_tar(&a, &opts), "two runs");
        assert_eq!(ta, dir_tar(&b, &opts), "two trees");
        // The first hardlink in sort order holds the data, whichever inode came first.
        let ents = read(&ta);
        let bin: Vec<String> = ents
            .iter()
            .filter(|e| e.path.starts_with("usr/bin/"))
            .map(show)
            .collect();
        assert_eq!(
            bin,
            [
                "usr/bin/ d755",
                "usr/bin/0 f644 a",
                "usr/bin/a h644 -> usr/bin/0",
                "usr/bin/b h644 -> usr/bin/0",
                "usr/bin/c l777 -> a"
            ]
        );
        let ua = write_upperdir(&a, Vec::new(), &opts).unwrap();
        assert_eq!(
            ua,
            write_upperdir(&b, Vec::new(), &opts).unwrap(),
            "upperdirs"
        );
        // Diffs: against an empty lower, and between the two (identical) trees.
        let (ea, eb) = (tmp.path().join("empty-a"), tmp.path().join("empty-b"));
        fs::create_dir(&ea).unwrap();
        fs::create_dir(&eb).unwrap();
        let da = write_tree_diff(&ea, &a, Vec::new(), &opts).unwrap();
        assert_eq!(
            da,
            write_tree_diff(&eb, &b, Vec::new(), &opts).unwrap(),
            "diffs"
        );
        assert_eq!(da, ta, "a diff against nothing is the directory");
        assert_eq!(
            write_tree_diff(&a, &b, Vec::new(), &opts).unwrap(),
            vec![0; 2 * BLOCK]
        );
    }

    /// A writer that runs `f` once, on its first write.
    struct OnFirstWrite<F: FnMut()> {
        f: Option<F>,
        out: Vec<u8>,
    }

    impl<F: FnMut()> std::fmt::Debug for OnFirstWrite<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "OnFirstWrite({} bytes)", self.out.len())
        }
    }

    impl<F: FnMut()> Write for OnFirstWrite<F> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(mut f) = self.f.take() {
                f();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn diff_errors_name_the_path() {
        // A file deleted after its directory was listed (the first real write happens while
        // the large file `a` streams, after the root was listed).
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path(), &["f zz data=z"]);
        fs::write(tmp.path().join("a"), vec![7u8; 1 << 20]).unwrap();
        let zz = tmp.path().join("zz");
        let out = OnFirstWrite {
            f: Some(|| fs::remove_file(&zz).unwrap()),
            out: Vec::new(),
        };
        let err = write_dir(tmp.path(), out, &TarOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&zz.display().to_string()), "{err}");

        // (case, spec, path that must be named, source is not a directory)
        let cases: &[(&str, &[&str], &str)] = &[
            ("reserved whiteout name", &["d x", "f x/.wh.y"], "x/.wh.y"),
            ("reserved opaque name", &["f .wh..wh..opq"], ".wh..wh..opq"),
        ];
        for (name, spec, bad) in cases {
            let tmp = tempfile::tempdir().unwrap();
            build(tmp.path(), spec);
            let err = write_dir(tmp.path(), Vec::new(), &TarOptions::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&tmp.path().join(bad).display().to_string()),
                "{name}: {err}"
            );
            let err = write_upperdir(tmp.path(), Vec::new(), &TarOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad), "{name}: {err}");
        }
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path(), &["f file", "l link to=."]);
        for p in ["file", "link", "missing"] {
            let p = tmp.path().join(p);
            let err = write_dir(&p, Vec::new(), &TarOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&p.display().to_string()), "{err}");
            let err = write_tree_diff(tmp.path(), &p, Vec::new(), &TarOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&p.display().to_string()), "{err}");
        }

        // An unreadable file: root reads it anyway; anyone else gets an error naming it.
        let tmp = tempfile::tempdir().unwrap();
        build(tmp.path(), &["f secret mode=0 data=s"]);
        let r = write_dir(tmp.path(), Vec::new(), &TarOptions::default());
        if is_root() {
            assert_eq!(shows(&r.unwrap()), ["secret f0 s"]);
        } else {
            let err = r.unwrap_err().to_string();
            assert!(
                err.contains(&tmp.path().join("secret").display().to_string()),
                "{err}"
            );
            assert!(err.contains("open"), "{err}");
        }
    }

    #[test]
    fn diff_gnu_tar_accepts_the_output() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let long = "x".repeat(130);
        let mut spec = vec![
            "d etc".to_owned(),
            "f etc/passwd data=root".to_owned(),
            "h etc/passwd2 to=etc/passwd".to_owned(),
            "l etc/ln to=passwd".to_owned(),
            "p etc/fifo".to_owned(),
            "f etc/x x.user.foo=bar".to_owned(),
            format!("f etc/{long} data=long"),
            format!("l etc/longlink to={long}/{long}"),
            "d tmp mode=1777".to_owned(),
        ];
        if is_root() {
            spec.push("c dev/null dev=1:3".to_owned());
        }
        let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
        build(&src, &spec);
        let tar_path = tmp.path().join("layer.tar");
        fs::write(&tar_path, dir_tar(&src, &TarOptions::default())).unwrap();
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(&tar_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = listing
            .lines()
            .map(|l| {
                l.split(" -> ")
                    .next()
                    .unwrap()
                    .split(" link to ")
                    .next()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap()
            })
            .collect();
        let ours: Vec<String> = read(&fs::read(&tar_path).unwrap())
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, ours, "{listing}");
        assert!(
            listing.contains("etc/passwd2 link to etc/passwd"),
            "{listing}"
        );
        // And it extracts: content, long names, xattrs.
        let dst = tmp.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg("--xattrs")
            .arg("--xattrs-include=user.*")
            .arg("-xf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&dst);
        if is_root() {
            cmd.arg("--exclude=dev/null");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(fs::read(dst.join("etc").join(&long)).unwrap(), b"long");
        let v = get_xattr(&dst.join("etc/x"), b"user.foo").unwrap();
        assert_eq!(v, b"bar");
    }
}
