//! Paths inside a container's root resolved as if that root were `/` (no symlink or `..`
//! leaves it), mount points made with *at calls on directory descriptors, the masks over
//! /proc and /sys, and the cleanup of what was made.
//!
//! The root's contents belong to the image and to earlier steps, so every name in it may be a
//! symlink chosen by an attacker: a path is never joined onto the root and handed to a call
//! that follows links on the host.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::sys::{self, HelperError};

/// Symlinks followed in one path before giving up, as the kernel's own limit (shared with
/// every other resolver).
use cairn_layers::rootfs::MAX_SYMLINKS as MAX_LINKS;

/// runc's and Docker's default `maskedPaths`: files get /dev/null over them, directories an
/// empty read-only tmpfs. Kernel memory, keys, timers and hardware details of the host.
pub const MASKED: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's and Docker's default `readonlyPaths`: bound onto themselves read-only. The kernel
/// grants writes to sysctls to global uid 0 whatever the user namespace.
pub const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What [`ensure_in`] created (to remove after the step) and the existing directories it
/// created entries in (overlayfs copied those up only for a mount point), relative to the root.
#[derive(Debug, Default)]
pub struct Made {
    pub made: Vec<PathBuf>,
    pub touched: Vec<PathBuf>,
}

/// A host path cairn chose (a root, a scratch directory, a file it wrote), opened `O_PATH`.
pub fn open_host(path: &Path) -> Result<OwnedFd, HelperError> {
    rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(HelperError::at("open", path))
}

/// `rel` (absolute in the container, or relative to its root) opened `O_PATH` below `root`,
/// resolved as the kernel resolves it for a process whose root is `root`: an absolute symlink
/// starts again at `root` and `..` stops there. Mounts met on the way are entered. The one
/// resolver, `cairn_layers::rootfs::open_in_root`, does it.
pub fn open_in(root: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    cairn_layers::rootfs::open_in_root(root, rel, OFlags::PATH)
}

pub fn is_dir(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode).is_dir())
}

/// `rel` below `root` as [`open_in`] resolves it, creating what is missing: directories, and
/// the last component as a directory (`dir`) or an empty file. Every creation is a `mkdirat`
/// or `openat(O_EXCL|O_NOFOLLOW)` on the descriptor of a directory reached without leaving the
/// root, so a symlink can only redirect it to another place inside the root.
pub fn ensure_in(
    root: BorrowedFd<'_>,
    rel: &str,
    dir: bool,
    made: &mut Made,
) -> Result<OwnedFd, HelperError> {
    let fail = |what: &str, at: &Path, e: Errno| {
        HelperError::call(format!("{what} mount point {rel} (at /{})", at.display()))(e)
    };
    // Names still to walk, the next one last.
    let mut todo: Vec<OsString> = names(Path::new(rel));
    todo.reverse();
    // The directories walked so far below the root, with their real paths.
    let mut walked: Vec<(OwnedFd, PathBuf)> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            walked.pop();
            continue;
        }
        let last = todo.is_empty();
        let (cur, cur_path) = match walked.last() {
            Some((fd, p)) => (fd.as_fd(), p.clone()),
            None => (root, PathBuf::new()),
        };
        let here = cur_path.join(&name);
        let open = || {
            rustix::fs::openat(
                cur,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let r = if last && !dir {
                    rustix::fs::openat(
                        cur,
                        name.as_os_str(),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o644),
                    )
                    .map(drop)
                } else {
                    rustix::fs::mkdirat(cur, name.as_os_str(), Mode::from_raw_mode(0o755))
                };
                r.map_err(|e| fail("create", &here, e))?;
                if !cur_path.as_os_str().is_empty() && !made.made.contains(&cur_path) {
                    made.touched.push(cur_path.clone());
                }
                made.made.push(here.clone());
                open().map_err(|e| fail("open", &here, e))?
            }
            Err(e) => return Err(fail("open", &here, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| fail("stat", &here, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(fail("resolve", &here, Errno::LOOP));
            }
            let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                .map_err(|e| fail("read the link", &here, e))?;
            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                walked.clear();
            }
            todo.extend(names(target).into_iter().rev());
            continue;
        }
        if !last && !kind.is_dir() {
            return Err(fail("resolve", &here, Errno::NOTDIR));
        }
        walked.push((fd, here));
    }
    match walked.pop() {
        Some((fd, _)) => Ok(fd),
        None => rustix::fs::openat(root, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| fail("open", Path::new(""), e)),
    }
}

/// The names of `p` in order, `..` kept, `/` and `.` dropped.
fn names(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A directory below `base` by a real path, refusing any symlink on the way: what the step
/// left in place of a made path is never followed.
pub fn open_beneath(base: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    let r = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        base,
        r,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
}

/// Gives what [`ensure_in`] made to the container's root (`uid`, `gid` on the host): root's
/// helper makes them as host root, which the step, in its user namespace, could not write
/// into. A name the step can have swapped is never followed.
pub fn chown_made(
    root: BorrowedFd<'_>,
    made: &[PathBuf],
    uid: u32,
    gid: u32,
) -> Result<(), HelperError> {
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    for p in made {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let dir = open_beneath(root, parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(HelperError::call(format!("open /{}", parent.display())))?;
        rustix::fs::chownat(&dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(HelperError::call(format!("chown /{}", p.display())))?;
    }
    Ok(())
}

/// Removes the mount points [`ensure_in`] made, last first: an empty directory, or an empty
/// regular file; whatever the step put there stays.
pub fn remove_made(root: BorrowedFd<'_>, made: &[PathBuf]) {
    for p in made.iter().rev() {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let Ok(dir) = open_beneath(root, parent, OFlags::PATH | OFlags::DIRECTORY) else {
            continue;
        };
        if rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).is_ok() {
            continue;
        }
        let empty_file =
            rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_size == 0
            });
        if empty_file {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        }
    }
}

/// Binds the file or directory `source` (with the mounts below it) onto `target`, setting
/// `attrs` (`MOUNT_ATTR_*`) on every mount of the copy before it becomes visible.
pub fn bind(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attrs: u64,
    what: &str,
) -> Result<(), HelperError> {
    bind_with(source, target, attrs, false, what)
}

/// [`bind`] of a tree cairn made or was given (context, secrets, /etc files, caches, stages,
/// volumes): in a root build, idmapped so that host root's files are the container root's.
pub fn bind_in(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attrs: u64,
    what: &str,
) -> Result<(), HelperError> {
    bind_with(source, target, attrs, true, what)
}

fn bind_with(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attrs: u64,
    idmap: bool,
    what: &str,
) -> Result<(), HelperError> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};
    let tree = open_tree(
        source,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(HelperError::call(format!("bind {what}: open_tree")))?;
    if attrs != 0 {
        sys::set_mount_attrs(tree.as_fd(), true, attrs, Path::new(what))?;
    }
    if idmap {
        super::idmapped::apply(tree.as_fd());
    }
    move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(HelperError::call(format!("bind {what}: move_mount")))
}

/// A bind mount's source: cairn's own path, or with `inside` a path below it resolved as if it
/// were `/`. The descriptor is what gets mounted, so nothing can swap the path afterwards.
pub fn open_source(source: &Path, inside: Option<&str>) -> Result<OwnedFd, HelperError> {
    let Some(rel) = inside else {
        return open_host(source);
    };
    let base = open_host(source)?;
    open_in(base.as_fd(), rel).map_err(HelperError::call(format!(
        "open {rel} in {}",
        source.display()
    )))
}

/// /sys: a fresh sysfs where the kernel allows it (`own_netns`: a network namespace of our
/// own), else the host's; read-only, nosuid, nodev and noexec on every mount of it, cgroup
/// controllers included.
pub fn mount_sys(
    root: BorrowedFd<'_>,
    own_netns: bool,
    made: &mut Made,
) -> Result<(), HelperError> {
    let dir = ensure_in(root, "/sys", true, made)?;
    let target = sys::fd_path(dir.as_fd());
    let ro = sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    if own_netns && sys::mount("sysfs", &target, "sysfs", ro, None).is_ok() {
        return Ok(());
    }
    let Ok(host) = open_host(Path::new("/sys")) else {
        return Ok(());
    };
    // Without /sys the step still runs; with a writable one it could leave its cgroup.
    let _ = bind(host.as_fd(), dir.as_fd(), LOCKED_DOWN, "/sys");
    Ok(())
}

/// Read-only, nosuid, nodev, noexec.
pub const LOCKED_DOWN: u64 = libc::MOUNT_ATTR_RDONLY
    | libc::MOUNT_ATTR_NOSUID
    | libc::MOUNT_ATTR_NODEV
    | libc::MOUNT_ATTR_NOEXEC;

/// [`MASKED`] and [`READ_ONLY`] over the container's /proc and /sys (already mounted); a path
/// this kernel lacks needs nothing.
pub fn mask(root: BorrowedFd<'_>) -> Result<(), HelperError> {
    for p in READ_ONLY {
        let Ok(fd) = open_in(root, p) else {
            continue;
        };
        bind(fd.as_fd(), fd.as_fd(), LOCKED_DOWN, p)?;
    }
    let null = open_host(Path::new("/dev/null"))?;
    for p in MASKED {
        let Ok(fd) = open_in(root, p) else {
            continue;
        };
        if is_dir(fd.as_fd()) {
            sys::mount(
                "tmpfs",
                &sys::fd_path(fd.as_fd()),
                "tmpfs",
                sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
                Some("size=0,mode=0555"),
            )
            .map_err(|e| e.context(format!("mask {p}")))?;
        } else {
            bind(null.as_fd(), fd.as_fd(), 0, p)?;
        }
    }
    Ok(())
}

/// /sys/fs/cgroup as the step's cgroup namespace sees it (its own cgroup at the top), read-only,
/// when the step joined a cgroup2 cgroup of its own (`own_cgroup2`); otherwise, or where cgroup2
/// will not mount, an empty read-only tmpfs. Never the host's tree: without a cgroup of its own
/// (no limits, or v1 controllers) the namespace's cgroup2 root is cairn's cgroup or the host's.
pub fn mount_cgroup(root: BorrowedFd<'_>, own_cgroup2: bool) -> Result<(), HelperError> {
    let Ok(fd) = open_in(root, "/sys/fs/cgroup") else {
        return Ok(());
    };
    let target = sys::fd_path(fd.as_fd());
    let ro = sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    if own_cgroup2 && sys::mount("cgroup2", &target, "cgroup2", ro, None).is_ok() {
        return Ok(());
    }
    sys::mount("tmpfs", &target, "tmpfs", ro, Some("size=0,mode=0555"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with `/evil -> /tmp/<x>`-style links: every made path stays inside.
    #[test]
    fn ensure_stays_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink(outside.path(), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        let rfd = open_host(root).unwrap();
        // (path, dir, where it must land relative to the root, or None for an error)
        let cases: [(&str, bool, Option<&str>); 7] = [
            ("/abs/pwn", true, Some("tmp")),
            ("/up/x/y", true, Some("x/y")),
            ("../../z", false, Some("z")),
            ("/etc/hosts", false, Some("etc/hosts")),
            ("/abs", true, Some("")),
            ("/loop/x", true, None),
            ("/", true, Some("")),
        ];
        for (rel, dir, want) in cases {
            let mut made = Made::default();
            let r = ensure_in(rfd.as_fd(), rel, dir, &mut made);
            match want {
                None => assert!(r.is_err(), "{rel}"),
                Some(w) => {
                    let fd = r.unwrap_or_else(|e| panic!("{rel}: {e}"));
                    let st = rustix::fs::fstat(&fd).unwrap();
                    if w == "tmp" {
                        // The absolute link's target, recreated inside the root.
                        let inside = root.join(outside.path().strip_prefix("/").unwrap());
                        assert!(inside.join("pwn").is_dir(), "{rel}");
                    } else if !w.is_empty() {
                        let m = std::fs::metadata(root.join(w)).unwrap();
                        use std::os::unix::fs::MetadataExt;
                        assert_eq!(m.ino(), st.st_ino, "{rel}");
                        assert_eq!(m.is_dir(), dir, "{rel}");
                    }
                    for p in &made.made {
                        assert!(
                            !p.is_absolute() && std::fs::symlink_metadata(root.join(p)).is_ok()
                        );
                    }
                }
            }
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn remove_made_leaves_what_the_step_filled_and_follows_no_link() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("b")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let rfd = open_host(root).unwrap();
        let mut made = Made::default();
        ensure_in(rfd.as_fd(), "/a/b", true, &mut made).unwrap();
        ensure_in(rfd.as_fd(), "/c/f", false, &mut made).unwrap();
        ensure_in(rfd.as_fd(), "/d/g", false, &mut made).unwrap();
        std::fs::write(root.join("c/f"), "kept").unwrap();
        // The step swapped a made directory for a link out of the root.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a")).unwrap();
        remove_made(rfd.as_fd(), &made.made);
        assert!(outside.path().join("b").is_dir());
        assert_eq!(std::fs::read_to_string(root.join("c/f")).unwrap(), "kept");
        assert!(!root.join("d").exists());
    }
}
