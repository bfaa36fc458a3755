//! Paths inside an unpacked root resolved as a process chrooted there resolves them: no symlink or `..` leaves the root.
//!
//! An image's files are the image author's, a context's the user's: `/etc/passwd` may be a
//! symlink to a host path, a FIFO that never ends a read, or gigabytes long. Whoever follows a
//! path inside such a root on cairn's side goes through here: [`open_in_root`] (the kernel's
//! `RESOLVE_IN_ROOT`, for the sandbox's mounts, USER and `--chown` names, the step's /etc files
//! and layer unpacking) and [`resolve_names`] (the names a path leads to, for COPY's and the
//! context's sources, which are named before they are read). Reads take only a regular file,
//! and never more than the caller's bound.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// `rel` (absolute in the image, or relative to its root) opened below `root` with `flags`,
/// resolved as the kernel resolves it for a process whose root is `root`: an absolute symlink
/// starts again at `root`, `..` stops there, and `/proc`-style magic links are refused.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    open_in_root_with(root, rel.as_bytes(), flags, ResolveFlags::empty())
}

/// [`open_in_root`] for a name in bytes, with more resolve flags (`NO_SYMLINKS` to refuse
/// any link on the way). A rename racing with a `..` makes the kernel ask for a retry, which
/// this does a bounded number of times.
pub(crate) fn open_in_root_with(
    root: BorrowedFd<'_>,
    rel: &[u8],
    flags: OFlags,
    more: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let start = rel.iter().position(|&b| b != b'/').unwrap_or(rel.len());
    let r = &rel[start..];
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root,
            if r.is_empty() { b".".as_slice() } else { r },
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | more,
        ) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

/// The kernel's MAXSYMLINKS: every resolver here gives up on the same chains.
pub const MAX_SYMLINKS: u32 = 40;

/// The names `rel` leads to below `root` (lexically cleaned first, `..` stopping at the
/// root), each symlink followed inside `root` as a chroot there would: an absolute target
/// starts again at `root`, a relative one from the link's directory, its own `..` cleaned
/// against its own names first and climbing no higher than `root` (BuildKit's source
/// resolution). The last name is followed only with `follow_last`. Names that do not exist
/// (or stand below a non-directory) are kept as given, for the caller's open to report;
/// the result never names a symlink but possibly the last one. A chain longer than
/// [`MAX_SYMLINKS`] is `ELOOP`.
///
/// Each step is an `lstat` of a host path built from names already resolved, so what it
/// returns stays below `root` as long as the tree does not change while it runs: for trees
/// nothing else writes to (a finished stage, an image, the build's context).
pub fn resolve_names(root: &Path, rel: &str, follow_last: bool) -> io::Result<Vec<String>> {
    let mut pending: Vec<String> = clean_names(rel).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let mut candidate: PathBuf = root.to_path_buf();
        candidate.extend(&done);
        candidate.push(&part);
        let is_last = pending.is_empty();
        let is_link = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => m.file_type().is_symlink(),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                false
            }
            Err(e) => return Err(e),
        };
        if !is_link || (is_last && !follow_last) {
            done.push(part);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINKS {
            return Err(Errno::LOOP.into());
        }
        let target = std::fs::read_link(&candidate)?;
        let target = target.to_string_lossy();
        if target.starts_with('/') {
            done.clear();
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                // `..` above what the link's own names add climbs from the link's directory.
                ".." if parts.last().is_some_and(|p| *p != "..") => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        pending.extend(parts.into_iter().rev().map(str::to_owned));
        // A target's `..` names lead it, so they are on top now: each pops a name already
        // resolved (never the root). Nothing else puts `..` in `pending`.
        while pending.last().is_some_and(|p| p == "..") {
            pending.pop();
            done.pop();
        }
    }
    Ok(done)
}

/// `path`'s names, lexically cleaned: `.` and empty names dropped, `..` removing the name
/// before it and stopping at the root.
pub fn clean_names(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_owned()),
        }
    }
    out
}

/// What [`read_in_root`] found at a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A regular file, with its bytes.
    File(Vec<u8>),
    /// Nothing there, or a name on the way is not a directory.
    Missing,
    /// Something other than a regular file (a directory, a FIFO, a device, an overlay
    /// whiteout); its file type.
    NotAFile(FileType),
}

/// Reads `rel` below the directory `root` as [`open_in_root`] resolves it: a regular file of at
/// most `limit` bytes. Opening never blocks (`O_NONBLOCK` until the type is known), so a FIFO
/// is reported, not waited on.
pub fn read_in_root(root: &Path, rel: &str, limit: u64) -> io::Result<Found> {
    // A root not made yet (a stage FROM scratch before anything is written) holds nothing.
    let dir = match rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return Ok(Found::Missing),
        Err(e) => return Err(e.into()),
    };
    let fd = match open_in_root(
        dir.as_fd(),
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Found::Missing),
        // A device node or socket cannot always be opened for reading; it is not a file.
        Err(Errno::NXIO | Errno::NODEV | Errno::OPNOTSUPP) => {
            return Ok(Found::NotAFile(FileType::Unknown));
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Ok(Found::NotAFile(kind));
    }
    if st.st_size as u64 > limit {
        return Err(too_large(rel, limit));
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    // The size can change while it is read: the bound holds whatever the file does.
    File::from(fd).take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(rel, limit));
    }
    Ok(Found::File(bytes))
}

fn too_large(rel: &str, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{rel} is larger than {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_clean_lexically_and_stop_at_the_root() {
        let cases: &[(&str, &[&str])] = &[
            ("a/b", &["a", "b"]),
            ("/a/./b/", &["a", "b"]),
            ("a//b", &["a", "b"]),
            ("a/../b", &["b"]),
            ("a/../../b", &["b"]),
            ("../..", &[]),
            ("/", &[]),
            ("", &[]),
            (".", &[]),
        ];
        for (path, want) in cases {
            assert_eq!(clean_names(path), *want, "{path}");
        }
    }

    #[test]
    fn names_resolve_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/sub/deeper")).unwrap();
        fs::write(root.join("etc/f"), "").unwrap();
        let links = [
            ("abs", "/etc"),
            ("up", "../../../etc"),
            ("rel", "etc/sub"),
            ("file", "etc/f"),
            ("loop", "loop"),
            // Inside the root `/self` is this very link: a loop, as in a chroot.
            ("self", "/self"),
            ("top", "../../../../.."),
            ("etc/sub/deeper/back", "../../f"),
            ("etc/sub/twice", "../../etc/sub/../f"),
            ("etc/sub/viarel", "../../rel/deeper/../deeper"),
            ("dangling", "/nowhere/x"),
        ];
        for (name, target) in links {
            symlink(target, root.join(name)).unwrap();
        }
        // (path, follow the last link, the names it resolves to below the root)
        let cases = [
            ("etc/f", true, "etc/f"),
            ("/etc/f", true, "etc/f"),
            ("abs/f", true, "etc/f"),
            ("abs/../etc/f", true, "etc/f"),
            ("up/sub", true, "etc/sub"),
            ("rel", true, "etc/sub"),
            ("rel", false, "rel"),
            ("rel/deeper/back", true, "etc/f"),
            ("file", true, "etc/f"),
            ("../../etc", true, "etc"),
            ("top", true, ""),
            ("top/etc/f", true, "etc/f"),
            ("etc/sub/twice", true, "etc/f"),
            ("etc/sub/viarel", true, "etc/sub/deeper"),
            ("missing/x", true, "missing/x"),
            ("dangling", true, "nowhere/x"),
            ("dangling", false, "dangling"),
            // Below a regular file: kept as named, for the open to fail.
            ("etc/f/x", true, "etc/f/x"),
            ("", true, ""),
        ];
        for (rel, follow, want) in cases {
            let got = resolve_names(root, rel, follow).unwrap();
            assert_eq!(got.join("/"), want, "{rel} {follow}");
        }
        for looping in ["loop", "self/x", "loop/x"] {
            let err = resolve_names(root, looping, true).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(Errno::LOOP.raw_os_error()),
                "{looping}"
            );
        }
        assert_eq!(resolve_names(root, "loop", false).unwrap(), ["loop"]);
    }

    #[test]
    fn reads_stay_in_the_root_and_take_only_bounded_regular_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        // What the links would reach on the host, and what they reach in the root.
        fs::write(tmp.path().join("host-secret"), "host").unwrap();
        fs::write(root.join("host-secret"), "inside").unwrap();
        let host = tmp.path().join("host-secret");
        let mirrored = root.join(host.strip_prefix("/").unwrap());
        fs::create_dir_all(mirrored.parent().unwrap()).unwrap();
        fs::write(&mirrored, "inside").unwrap();
        symlink(&host, root.join("etc/abs")).unwrap();
        symlink("../../../../../../host-secret", root.join("etc/up")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(root.join("etc/big"), vec![b'a'; 100]).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("etc/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        symlink("/proc/self/root/host-secret", root.join("etc/magic")).unwrap();
        assert_eq!(
            read_in_root(&tmp.path().join("none"), "etc/passwd", 64).unwrap(),
            Found::Missing
        );
        let file = |s: &str| Found::File(s.as_bytes().to_vec());
        let cases: [(&str, Option<Found>); 10] = [
            ("etc/passwd", Some(file("root:x:0:0::/root:/bin/sh\n"))),
            ("/etc/passwd", Some(file("root:x:0:0::/root:/bin/sh\n"))),
            ("etc/abs", Some(file("inside"))),
            ("etc/up", Some(file("inside"))),
            ("etc/missing", Some(Found::Missing)),
            ("etc/passwd/x", Some(Found::Missing)),
            ("etc/fifo", Some(Found::NotAFile(FileType::Fifo))),
            ("etc", Some(Found::NotAFile(FileType::Directory))),
            ("etc/big", None),
            // /proc of the root, not the host's: nothing there.
            ("etc/magic", Some(Found::Missing)),
        ];
        for (rel, want) in cases {
            let got = read_in_root(&root, rel, 64);
            match want {
                Some(want) => assert_eq!(got.unwrap(), want, "{rel}"),
                None => assert!(got.is_err(), "{rel}: {got:?}"),
            }
        }
    }
}
