//! Whether a node in the upper tree is the same as the lower tree's: metadata, then content.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, IoContext, Result};

use super::xattrs::{XattrList, read_xattrs};
use super::{Child, Kind, Stat};

/// Reusable buffers for content comparison.
#[derive(Default)]
pub(super) struct Compare {
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Whether `up` is unchanged from `lo` (see `write_tree_diff` for what is compared).
pub(super) fn same(
    lo: &Child,
    up: &Child,
    up_xattrs: &XattrList,
    cmp: &mut Compare,
) -> Result<bool> {
    let (l, u) = (&lo.stat, &up.stat);
    if l.kind != u.kind || l.mode & 0o7777 != u.mode & 0o7777 || l.uid != u.uid || l.gid != u.gid {
        return Ok(false);
    }
    let same_mtime = l.mtime == u.mtime && l.mtime_nsec == u.mtime_nsec;
    let same_data = match u.kind {
        Kind::Dir => true,
        Kind::Fifo => same_mtime,
        Kind::Char | Kind::Block => same_mtime && l.rdev == u.rdev,
        Kind::Symlink => same_mtime && read_link(&lo.path)? == read_link(&up.path)?,
        Kind::File => {
            same_mtime
                && l.size == u.size
                && (l.mtime_nsec != 0 || u.mtime_nsec != 0 || same_content(lo, up, cmp)?)
        }
    };
    Ok(same_data && read_xattrs(&lo.path)?.kept == *up_xattrs)
}

fn same_content(lo: &Child, up: &Child, cmp: &mut Compare) -> Result<bool> {
    const CHUNK: usize = 64 * 1024;
    let mut a = open_file(&lo.path, &lo.stat)?;
    let mut b = open_file(&up.path, &up.stat)?;
    cmp.a.resize(CHUNK, 0);
    cmp.b.resize(CHUNK, 0);
    loop {
        let n = read_full(&mut a, &mut cmp.a).at("read", &lo.path)?;
        let m = read_full(&mut b, &mut cmp.b).at("read", &up.path)?;
        if n != m || cmp.a[..n] != cmp.b[..m] {
            return Ok(false);
        }
        if n < CHUNK {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the file.
pub(super) fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Files and xattrs

pub(super) fn read_link(path: &Path) -> Result<Vec<u8>> {
    Ok(fs::read_link(path)
        .at("read link", path)?
        .into_os_string()
        .as_bytes()
        .to_vec())
}

/// Opens a regular file for reading without following a symlink, and checks it is still the
/// inode (and size) that was listed: the layer must describe one consistent state.
pub(super) fn open_file(path: &Path, st: &Stat) -> Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .at("open", path)?;
    let file = File::from(fd);
    let m = file.metadata().at("stat", path)?;
    if m.dev() != st.dev || m.ino() != st.ino || m.size() != st.size {
        return Err(changed(path));
    }
    Ok(file)
}

pub(super) fn changed(path: &Path) -> Error {
    Error::invalid(
        format!("layer source {}", path.display()),
        "it changed while the layer was being written",
    )
}
