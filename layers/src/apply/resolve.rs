//! Parent directories opened inside the target with chroot semantics (openat2, or a manual walk).

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs as rfs;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::error::Result;

use super::meta::Meta;
use super::{
    Applier, DIR_CREATE_MODE, DirRecord, ErrnoContext, Follow, MAX_SYMLINKS, Strategy, ident, key,
    os,
};

impl Applier<'_> {
    /// Opens the directory `comps` names, inside the root (see the module docs); with `create`,
    /// missing directories the names themselves name are created.
    pub(super) fn resolve(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        follow: Follow,
    ) -> rustix::io::Result<OwnedFd> {
        match self.strategy {
            Strategy::Openat2 => match self.resolve_openat2(comps, create, follow) {
                // openat2 takes one path, at most PATH_MAX long; the walk has no such limit.
                Err(Errno::NAMETOOLONG) => self.resolve_manual(comps, create, follow),
                r => r,
            },
            Strategy::Manual => self.resolve_manual(comps, create, follow),
        }
    }

    fn open_in_root(&self, path: &[u8], follow: Follow) -> rustix::io::Result<OwnedFd> {
        let more = match follow {
            Follow::InRoot => ResolveFlags::empty(),
            Follow::Refuse => ResolveFlags::NO_SYMLINKS,
        };
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        crate::rootfs::open_in_root_with(self.root.as_fd(), path, flags, more)
    }

    fn resolve_openat2(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        follow: Follow,
    ) -> rustix::io::Result<OwnedFd> {
        match self.open_in_root(&comps.join(&b'/'), follow) {
            Err(Errno::NOENT) if create => {}
            r => return r,
        }
        // Something is missing: go down one component at a time, creating what is missing.
        let mut cur = self.open_in_root(b"", follow)?;
        for k in 1..=comps.len() {
            let prefix = comps[..k].join(&b'/');
            cur = match self.open_in_root(&prefix, follow) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    self.mkdir_implicit(&cur, &comps[k - 1], &comps[..k])?;
                    self.open_in_root(&prefix, follow)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    fn resolve_manual(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        follow: Follow,
    ) -> rustix::io::Result<OwnedFd> {
        let mut cur = rfs::openat(
            &self.root,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The directories above `cur`, root first, and the names leading to `cur`: `..` pops
        // back to where the walk came from, and at the root stays there, like openat2.
        let mut above: Vec<OwnedFd> = Vec::new();
        let mut names: Vec<Vec<u8>> = Vec::new();
        // Components still to walk, and whether the entry's own name holds them (rather than a
        // symlink's target): only those are created when missing.
        let mut todo: VecDeque<(Vec<u8>, bool)> = comps.iter().map(|c| (c.clone(), true)).collect();
        let mut links = 0;
        while let Some((comp, own)) = todo.pop_front() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if let Some(parent) = above.pop() {
                        cur = parent;
                        names.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let child = match rfs::openat(
                &cur,
                comp.as_slice(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create && own => {
                    let mut path = names.clone();
                    path.push(comp.clone());
                    self.mkdir_implicit(&cur, &comp, &path)?;
                    todo.push_front((comp, own));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let st = rfs::fstat(&child)?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    above.push(std::mem::replace(&mut cur, child));
                    names.push(comp);
                }
                FileType::Symlink => {
                    if follow == Follow::Refuse {
                        return Err(Errno::LOOP);
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP);
                    }
                    // Read through the O_PATH fd of the link itself, not by name again.
                    let target = rfs::readlinkat(&child, "", Vec::new())?;
                    let target = target.as_bytes();
                    if target.is_empty() {
                        return Err(Errno::NOENT);
                    }
                    if target.starts_with(b"/") && !above.is_empty() {
                        // chroot semantics: an absolute target starts again at the root.
                        cur = above.swap_remove(0);
                        above.clear();
                        names.clear();
                    }
                    for part in target.split(|b| *b == b'/').rev() {
                        todo.push_front((part.to_vec(), false));
                    }
                }
                _ => return Err(Errno::NOTDIR),
            }
        }
        Ok(cur)
    }

    /// Creates a missing directory `name` in `parent` (`path` from the root) for an entry below.
    fn mkdir_implicit(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        path: &[Vec<u8>],
    ) -> rustix::io::Result<()> {
        match rfs::mkdirat(parent, name, Mode::from_raw_mode(DIR_CREATE_MODE)) {
            Ok(()) => {}
            // The name exists yet did not resolve: a symlink to something missing. Its target
            // is not created (only names an entry spells out are).
            Err(Errno::EXIST) => return Err(Errno::NOENT),
            Err(e) => return Err(e),
        }
        let pst = rfs::fstat(parent)?;
        self.ours.insert(key(&pst, name));
        let fd = rfs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&fd)?;
        self.record_dir(DirRecord {
            comps: path.to_vec(),
            ident: ident(&st),
            meta: Meta::implicit_dir(),
        });
        Ok(())
    }

    /// Opens (creating what is missing) the parent directory of an entry.
    pub(super) fn parent(&mut self, parents: &[Vec<u8>], path: &Path) -> Result<(OwnedFd, Stat)> {
        let fd = self
            .resolve(parents, true, Follow::InRoot)
            .ctx("resolve the parent directory of", path)?;
        let st = rfs::fstat(&fd).ctx("stat the parent directory of", path)?;
        Ok((fd, st))
    }

    pub(super) fn reopen_dir(&mut self, comps: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
        match comps.split_last() {
            None => open_dir(&self.root, b"."),
            Some((name, parents)) => {
                let parent = self.resolve(parents, false, Follow::InRoot)?;
                open_dir(&parent, name)
            }
        }
    }
}

/// Opens the directory `name` in `dir` for reading, without following a symlink.
pub(super) fn open_dir(dir: &OwnedFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
