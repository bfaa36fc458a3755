//! A file of an unpacked image root read as a process chrooted there reads it: no symlink or `..` leaves the root.
//!
//! An image's files are the image author's: `/etc/passwd` may be a symlink to a host path, a
//! FIFO that never ends a read, or gigabytes long. Whoever reads such a file on cairn's side
//! (USER and `--chown` names, the step's /etc files) goes through here, so an absolute or
//! climbing symlink resolves inside the root (the kernel's `RESOLVE_IN_ROOT`), only a regular
//! file is read, and never more than the caller's bound.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// `rel` (absolute in the image, or relative to its root) opened below `root` with `flags`,
/// resolved as the kernel resolves it for a process whose root is `root`: an absolute symlink
/// starts again at `root`, `..` stops there, and `/proc`-style magic links are refused.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let r = rel.trim_start_matches('/');
    rustix::fs::openat2(
        root,
        if r.is_empty() { "." } else { r },
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
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
