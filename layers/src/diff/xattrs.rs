//! Which extended attributes a layer keeps, and reading them without following symlinks.

use std::io;
use std::path::Path;

use rustix::io::Errno;

use crate::error::{IoContext, Result};
use crate::whiteout::OVERLAY_OPAQUE_XATTRS;

pub(super) type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattrs of one file: those a layer keeps (sorted by name), and what overlayfs says.
#[derive(Debug, Default)]
pub(super) struct Xattrs {
    pub(super) kept: XattrList,
    pub(super) opaque: bool,
    /// The name of a `*.overlay.redirect`/`*.overlay.metacopy` xattr, if any.
    pub(super) overlay_feature: Option<String>,
}

const OVERLAY_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
const KEPT_PREFIXES: [&[u8]; 3] = [b"user.", b"security.", b"trusted."];
const NOT_KEPT: [&[u8]; 1] = [b"security.selinux"];
const OVERLAY_FEATURES: [&[u8]; 2] = [b"redirect", b"metacopy"];

fn keep_xattr(name: &[u8]) -> bool {
    KEPT_PREFIXES.iter().any(|p| name.starts_with(p))
        && !OVERLAY_PREFIXES.iter().any(|p| name.starts_with(p))
        && !NOT_KEPT.contains(&name)
}

pub(super) fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let names = list_xattrs(path)?;
    let mut x = Xattrs::default();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if keep_xattr(name) {
            x.kept.push((name.to_vec(), get_xattr(path, name)?));
        } else if OVERLAY_OPAQUE_XATTRS.iter().any(|o| o.as_bytes() == name) {
            // "y" is opaque; newer kernels also use "x" (has xattr whiteouts), which is not.
            if get_xattr(path, name)? == b"y" {
                x.opaque = true;
            }
        } else if let Some(rest) = OVERLAY_PREFIXES.iter().find_map(|p| name.strip_prefix(*p))
            && OVERLAY_FEATURES.contains(&rest)
        {
            x.overlay_feature = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    x.kept.sort();
    Ok(x)
}

/// The NUL-separated xattr names of `path` (not following a symlink); none where the
/// filesystem has no xattrs.
fn list_xattrs(path: &Path) -> Result<Vec<u8>> {
    match with_growing_buffer(|buf| rustix::fs::llistxattr(path, buf)) {
        Err(Errno::OPNOTSUPP) => Ok(Vec::new()),
        r => r.map_err(io::Error::from).at("list the xattrs of", path),
    }
}

pub(super) fn get_xattr(path: &Path, name: &[u8]) -> Result<Vec<u8>> {
    with_growing_buffer(|buf| rustix::fs::lgetxattr(path, name, buf))
        .map_err(io::Error::from)
        .at("read the xattrs of", path)
}

/// Calls `f` with a buffer that doubles while it is too small (ERANGE), up to the kernel's
/// 64 KiB limit on xattr lists and values. (No size query first: most lists are short, and
/// rustix treats a zero-length buffer specially.)
fn with_growing_buffer(
    mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    const MAX: usize = 64 * 1024;
    let mut buf = vec![0; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < MAX => buf.resize(buf.len() * 2, 0),
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tar writing

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_xattr_filter() {
        let cases: &[(&str, bool)] = &[
            ("security.capability", true),
            ("security.ima", true),
            ("security.selinux", false),
            ("user.mime_type", true),
            ("user.overlay.opaque", false),
            ("user.overlayfoo", true),
            ("trusted.md5", true),
            ("trusted.overlay.origin", false),
            ("system.posix_acl_access", false),
            ("btrfs.compression", false),
        ];
        for &(name, keep) in cases {
            assert_eq!(keep_xattr(name.as_bytes()), keep, "{name}");
        }
    }
}
