//! Whiteouts and opaque directories: what a layer deletes from the layers below it.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs as rfs;
use rustix::fs::{AtFlags, FileType, Mode, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

use super::resolve::open_dir;
use super::{Applier, ErrnoContext, Follow, Whiteouts, is_dir, key, os};

impl Applier<'_> {
    pub(super) fn whiteout(&mut self, parents: &[Vec<u8>], name: &[u8]) -> Result<()> {
        self.stats.whiteouts += 1;
        let mut comps = parents.to_vec();
        comps.push(name.to_vec());
        let path = self.show(&comps);
        match self.opts.whiteouts {
            Whiteouts::Apply => {
                let dir = match self.resolve(parents, false, Follow::InRoot) {
                    Ok(fd) => fd,
                    // Nothing there to delete: a whiteout for a missing path is fine.
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(e).ctx("resolve the parent directory of", &path),
                };
                let pst = rfs::fstat(&dir).ctx("stat the parent directory of", &path)?;
                if self.ours.contains(&key(&pst, name)) {
                    // This layer has `name` too; a whiteout only hides lower layers' content
                    // (image-spec "Whiteouts"), so keep ours, and if it is a directory merged
                    // into a lower one, hide the lower content under it.
                    if let Ok(st) = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                        && is_dir(&st)
                    {
                        let sub = open_dir(&dir, name).ctx("open", &path)?;
                        self.prune(&sub, &path)?;
                    }
                    Ok(())
                } else {
                    remove_tree(&dir, name, &path)
                }
            }
            Whiteouts::Overlay { .. } => {
                let (dir, pst) = self.parent(parents, &path)?;
                let key = key(&pst, name);
                if self.ours.contains(&key) {
                    // This layer has `name` too: keep it, opaque if it is a directory.
                    if let Ok(st) = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                        && is_dir(&st)
                    {
                        self.mark_opaque(&dir, name, &path)?;
                    }
                    return Ok(());
                }
                remove_tree(&dir, name, &path)?;
                // overlayfs spells a deleted path as a 0/0 character device; since Linux 5.8 an
                // unprivileged user may create one.
                rfs::mknodat(
                    &dir,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(|e| Error::Io {
                    action: "create the overlay whiteout device (a 0/0 character device, which \
                             needs CAP_MKNOD before Linux 5.8) for",
                    path: path.clone(),
                    source: e.into(),
                })?;
                self.ours.insert(key.clone());
                self.whiteout_devs.insert(key);
                Ok(())
            }
        }
    }

    pub(super) fn opaque(&mut self, dir_comps: &[Vec<u8>]) -> Result<()> {
        self.stats.whiteouts += 1;
        let path = self.show(dir_comps);
        match self.opts.whiteouts {
            Whiteouts::Apply => {
                let dir = match self.resolve(dir_comps, false, Follow::InRoot) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(e).ctx("resolve", &path),
                };
                let dir = open_dir(&dir, b".").ctx("open", &path)?;
                self.prune(&dir, &path)
            }
            Whiteouts::Overlay { opaque_xattr } => {
                let dir = self
                    .resolve(dir_comps, true, Follow::InRoot)
                    .ctx("resolve", &path)?;
                let dir = open_dir(&dir, b".").ctx("open", &path)?;
                set_opaque(&dir, opaque_xattr, &path)
            }
        }
    }

    /// Overlay mode: sets the opaque xattr on the directory `name` in `parent`.
    pub(super) fn mark_opaque(&self, parent: &OwnedFd, name: &[u8], path: &Path) -> Result<()> {
        if let Whiteouts::Overlay { opaque_xattr } = self.opts.whiteouts {
            let dir = open_dir(parent, name).ctx("open", path)?;
            set_opaque(&dir, opaque_xattr, path)?;
        }
        Ok(())
    }

    /// Apply mode's opaque directory: removes from `dir` (open for reading) everything this
    /// layer did not put there, recursing into directories it kept (which may be lower
    /// directories this layer merged into).
    fn prune(&self, dir: &OwnedFd, path: &Path) -> Result<()> {
        let st = rfs::fstat(dir).ctx("stat", path)?;
        for name in list_dir(dir, path)? {
            let child = path.join(os(&name));
            let key = key(&st, &name);
            if self.ours.contains(&key) {
                if let Ok(cst) = rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    && is_dir(&cst)
                {
                    let sub = open_dir(dir, &name).ctx("open", &child)?;
                    self.prune(&sub, &child)?;
                }
            } else {
                remove_tree(dir, &name, &child)?;
            }
        }
        Ok(())
    }

    // ---- metadata ---------------------------------------------------------------------------
}

fn set_opaque(dir: &OwnedFd, xattr: &str, path: &Path) -> Result<()> {
    rfs::fsetxattr(dir, xattr, b"y", XattrFlags::empty())
        .ctx("set the overlay opaque xattr on", path)
}

fn list_dir(dir: &OwnedFd, path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut reader = rfs::Dir::read_from(dir).ctx("read directory", path)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry.ctx("read directory", path)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, recursively if it is a directory, never following a symlink:
/// every step is an `*at` call on a directory fd opened with O_NOFOLLOW.
pub(super) fn remove_tree(dir: &OwnedFd, name: &[u8], path: &Path) -> Result<()> {
    let st = match rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).ctx("stat", path),
    };
    if is_dir(&st) {
        let sub = open_dir(dir, name).ctx("open", path)?;
        for child in list_dir(&sub, path)? {
            remove_tree(&sub, &child, &path.join(os(&child)))?;
        }
        rfs::unlinkat(dir, os(name), AtFlags::REMOVEDIR).ctx("remove", path)
    } else {
        rfs::unlinkat(dir, os(name), AtFlags::empty()).ctx("remove", path)
    }
}
