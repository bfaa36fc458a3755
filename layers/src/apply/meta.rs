//! An entry's owner, mode, times and xattrs: read from its headers, set on the node written.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::fs as rfs;
use rustix::fs::{AtFlags, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

use super::{Applier, ErrnoContext, IMPLICIT_DIR_MODE, Node, OVERLAY_PRIVATE, OWNERSHIP, os};

/// Parses a PAX time (`sec[.frac]`, possibly negative).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(frac) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let frac: String = frac.chars().take(9).collect();
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    Some(match (negative, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum XattrPolicy {
    Drop,
    BestEffort,
    Required,
}

/// See [`apply_layer`].
fn xattr_policy(name: &[u8], chown: bool) -> XattrPolicy {
    if OVERLAY_PRIVATE.iter().any(|p| name.starts_with(p)) {
        XattrPolicy::Drop
    } else if name == b"security.capability" {
        if chown {
            XattrPolicy::Required
        } else {
            XattrPolicy::BestEffort
        }
    } else if name.starts_with(b"trusted.") || name.starts_with(b"security.") {
        XattrPolicy::BestEffort
    } else {
        XattrPolicy::Required
    }
}

/// An entry's metadata, in container ids.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: Option<Timespec>,
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// A missing parent directory, created for an entry below it.
    pub(super) fn implicit_dir() -> Meta {
        Meta {
            mode: IMPLICIT_DIR_MODE,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: Vec::new(),
        }
    }

    pub(crate) fn read<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta> {
        let bad = |what: &str, e: io::Error| {
            Error::invalid(format!("layer entry {shown:?}"), format!("{what}: {e}"))
        };
        // Like Go's archive/tar, which wrote most layers, an empty numeric field (all NULs or
        // spaces) reads as 0.
        let field = |value: io::Result<u64>, raw: &[u8], what: &str| match value {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(e) => Err(bad(what, e)),
        };
        let h = entry.header();
        let old = h.as_old();
        let mode = field(h.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
        let uid = field(h.uid(), &old.uid, "uid")?;
        let gid = field(h.gid(), &old.gid, "gid")?;
        let mtime = field(h.mtime(), &old.mtime, "mtime")?;
        let too_big = |what: &str, v: u64| {
            Error::invalid(
                format!("layer entry {shown:?}"),
                format!("{what} {v} is out of range"),
            )
        };
        let uid = u32::try_from(uid).map_err(|_| too_big("uid", uid))?;
        let gid = u32::try_from(gid).map_err(|_| too_big("gid", gid))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).map_err(|_| too_big("mtime", mtime))?,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX records", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("PAX record", e))?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime"
                    && let Some(t) = parse_pax_time(ext.value_bytes())
                {
                    mtime = t;
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime: Some(mtime),
            xattrs,
        })
    }
}

impl Applier<'_> {
    fn host_ids(&self, meta: &Meta, path: &Path) -> Result<(Uid, Gid)> {
        let unmapped = |what: &str, id: u32| {
            Error::invalid(
                format!("layer entry {}", path.display()),
                format!("{what} {id} is outside the build's id mapping"),
            )
        };
        let uid = self
            .opts
            .id_map
            .uid_to_host(meta.uid)
            .ok_or_else(|| unmapped("uid", meta.uid))?;
        let gid = self
            .opts
            .id_map
            .gid_to_host(meta.gid)
            .ok_or_else(|| unmapped("gid", meta.gid))?;
        // -1 means "leave unchanged" to chown(2).
        if uid == u32::MAX || gid == u32::MAX {
            return Err(unmapped("id", u32::MAX));
        }
        Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
    }

    pub(super) fn set_meta(&self, node: Node<'_>, meta: &Meta, path: &Path) -> Result<()> {
        if self.opts.chown {
            let (uid, gid) = self.host_ids(meta, path)?;
            match node {
                Node::Open(fd) => rfs::fchown(fd, Some(uid), Some(gid)),
                Node::At(dir, name, _) => {
                    rfs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                }
            }
            .map_err(|e| Error::Io {
                action: OWNERSHIP,
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        // After chown: chown(2) clears setuid and setgid.
        let mode = Mode::from_raw_mode(meta.mode);
        match node {
            Node::Open(fd) => rfs::fchmod(fd, mode).ctx("set the mode of", path)?,
            // Linux symlinks have no mode of their own.
            Node::At(_, _, FileType::Symlink) => {}
            Node::At(dir, name, _) => {
                // fchmodat cannot refuse to follow a symlink (fchmodat2 can, from Linux 6.6, but
                // rustix does not call it): make sure the name is still the node just made.
                let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", path)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    return Err(Error::unsafe_entry(
                        path.display().to_string(),
                        "replaced by a symlink while being written",
                    ));
                }
                rfs::chmodat(dir, name, mode, AtFlags::empty()).ctx("set the mode of", path)?;
            }
        }
        // After chown, which clears security.capability.
        for (name, value) in &meta.xattrs {
            if self.opts.chown && name == crate::vfscap::NAME {
                let value = crate::vfscap::to_disk(value, &self.opts.id_map);
                self.set_xattr(node, name, &value, path)?;
            } else {
                self.set_xattr(node, name, value, path)?;
            }
        }
        if let Some(t) = meta.mtime {
            let times = Timestamps {
                last_access: t,
                last_modification: t,
            };
            match node {
                Node::Open(fd) => rfs::futimens(fd, &times),
                Node::At(dir, name, _) => {
                    rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                }
            }
            .ctx("set the modification time of", path)?;
        }
        Ok(())
    }

    fn set_xattr(&self, node: Node<'_>, name: &[u8], value: &[u8], path: &Path) -> Result<()> {
        let mut policy = xattr_policy(name, self.opts.chown);
        if policy == XattrPolicy::Drop {
            return Ok(());
        }
        if matches!(node, Node::At(..)) && name.starts_with(b"user.") {
            // Linux allows user.* only on regular files and directories (xattr(7)): on a
            // symlink, device or fifo the attribute cannot exist here.
            policy = XattrPolicy::BestEffort;
        }
        let result = match node {
            Node::Open(fd) => rfs::fsetxattr(fd, os(name), value, XattrFlags::empty()),
            Node::At(dir, file, _) => {
                // There is no fd to set an xattr through for a symlink or device (fsetxattr
                // refuses O_PATH fds): name it under its pinned parent's /proc/self/fd link, with
                // lsetxattr, which does not follow the final name.
                let mut proc = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                proc.extend_from_slice(file);
                rfs::lsetxattr(os(&proc), os(name), value, XattrFlags::empty())
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::ACCESS | Errno::OPNOTSUPP)
                if policy == XattrPolicy::BestEffort =>
            {
                Ok(())
            }
            Err(e) => {
                let e = io::Error::from(e);
                Err(Error::Io {
                    action: "set an extended attribute of",
                    path: path.to_owned(),
                    source: io::Error::new(
                        e.kind(),
                        format!("{}: {e}", String::from_utf8_lossy(name)),
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_pax_time_parsing() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("12.5"), Some((12, 500_000_000)));
        assert_eq!(t("12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t("x"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("1.-5"), None);
    }

    #[test]
    fn apply_xattr_policy() {
        let cases: &[(&str, bool, XattrPolicy)] = &[
            ("user.overlay.opaque", true, XattrPolicy::Drop),
            ("trusted.overlay.redirect", false, XattrPolicy::Drop),
            ("trusted.foo", true, XattrPolicy::BestEffort),
            ("security.selinux", true, XattrPolicy::BestEffort),
            ("security.capability", true, XattrPolicy::Required),
            ("security.capability", false, XattrPolicy::BestEffort),
            ("user.foo", false, XattrPolicy::Required),
            ("system.posix_acl_access", false, XattrPolicy::Required),
        ];
        for (name, chown, want) in cases {
            assert_eq!(xattr_policy(name.as_bytes(), *chown), *want, "{name}");
        }
    }
}
