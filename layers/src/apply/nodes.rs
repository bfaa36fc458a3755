//! The nodes an entry creates: directories, files, symlinks, hardlinks, devices and fifos.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs as rfs;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

use super::meta::Meta;
use super::name::{Dots, link_target};
use super::whiteouts::remove_tree;
use super::{
    Applier, DIR_CREATE_MODE, DirRecord, ErrnoContext, FILE_CREATE_MODE, Follow, Key, Node, ident,
    is_dir, key, os,
};

impl Applier<'_> {
    pub(super) fn record_dir(&mut self, rec: DirRecord) {
        match self.dir_index.get(&rec.ident) {
            Some(&i) => {
                if let Some(slot) = self.dirs.get_mut(i) {
                    *slot = rec;
                }
            }
            None => {
                self.dir_index.insert(rec.ident, self.dirs.len());
                self.dirs.push(rec);
            }
        }
    }

    // ---- entries ----------------------------------------------------------------------------

    /// Removes whatever is at `name` in `dir` before a new node takes the name.
    fn clear_name(&mut self, dir: &OwnedFd, name: &[u8], key: &Key, path: &Path) -> Result<bool> {
        let was_whiteout = self.whiteout_devs.remove(key);
        remove_tree(dir, name, path)?;
        Ok(was_whiteout)
    }

    pub(super) fn directory(&mut self, comps: &[Vec<u8>], meta: Meta, path: &Path) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        let (dir, pst) = self.parent(parents, path)?;
        let key = key(&pst, name);
        let existing = match rfs::statat(&dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(e).ctx("stat", path),
        };
        // A directory over a directory keeps it (and what lower layers put in it) and only takes
        // the new metadata; over anything else (a symlink included) it replaces it.
        if !existing.as_ref().is_some_and(is_dir) {
            let was_whiteout = self.clear_name(&dir, name, &key, path)?;
            rfs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(DIR_CREATE_MODE))
                .ctx("create directory", path)?;
            if was_whiteout {
                // `.wh.name` and `name/` in one layer: the layer's directory hides the lower one.
                self.mark_opaque(&dir, name, path)?;
            }
        }
        self.ours.insert(key);
        let fd = rfs::openat(
            &dir,
            name.as_slice(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open directory", path)?;
        let st = rfs::fstat(&fd).ctx("stat", path)?;
        self.record_dir(DirRecord {
            comps: comps.to_vec(),
            ident: ident(&st),
            meta,
        });
        Ok(())
    }

    pub(super) fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
        comps: &[Vec<u8>],
        meta: Meta,
        path: &Path,
    ) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        let (dir, pst) = self.parent(parents, path)?;
        let key = key(&pst, name);
        self.clear_name(&dir, name, &key, path)?;
        // O_EXCL: a fresh inode, never an existing file or whatever a symlink points at.
        let fd = rfs::openat(
            &dir,
            name.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_CREATE_MODE),
        )
        .ctx("create", path)?;
        self.ours.insert(key);
        let mut file = File::from(fd);
        let written = self.copy_data(entry, &mut file, shown, path)?;
        self.stats.bytes += written;
        self.set_meta(Node::Open(file.as_fd()), &meta, path)
    }

    /// Streams an entry's data into `file`, in fixed-size chunks: nothing is allocated from the
    /// header's size, and a tar that ends early is an error rather than a short file.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        shown: &str,
        path: &Path,
    ) -> Result<u64> {
        let want = entry.size();
        let mut written: u64 = 0;
        let mut ends_in_hole = false;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::stream(
                        format!("read the data of layer entry {shown:?}"),
                        e,
                    ));
                }
            };
            let chunk = self.buf.get(..n).unwrap_or_default();
            if chunk.iter().all(|b| *b == 0) {
                // Holes instead of zeros, so that sparse entries (say a huge /var/log/lastlog)
                // stay sparse on disk.
                file.seek(SeekFrom::Current(n as i64)).at("write", path)?;
                ends_in_hole = true;
            } else {
                file.write_all(chunk).at("write", path)?;
                ends_in_hole = false;
            }
            written += n as u64;
        }
        if written != want {
            return Err(Error::invalid(
                format!("layer entry {shown:?}"),
                format!("the tar ends after {written} of the entry's {want} bytes"),
            ));
        }
        if ends_in_hole {
            file.set_len(written).at("write", path)?;
        }
        Ok(written)
    }

    pub(super) fn symlink(
        &mut self,
        shown: &str,
        comps: &[Vec<u8>],
        link: &[u8],
        meta: Meta,
        path: &Path,
    ) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        if link.is_empty() {
            return Err(Error::invalid(
                format!("layer entry {shown:?}"),
                "a symlink with an empty target",
            ));
        }
        let (dir, pst) = self.parent(parents, path)?;
        let key = key(&pst, name);
        self.clear_name(&dir, name, &key, path)?;
        // The target is stored as is: a symlink is only dangerous when followed, which nothing
        // here does.
        rfs::symlinkat(os(link), &dir, name.as_slice()).ctx("create symlink", path)?;
        self.ours.insert(key);
        self.set_meta(Node::At(dir.as_fd(), name, FileType::Symlink), &meta, path)
    }

    pub(super) fn hardlink(
        &mut self,
        shown: &str,
        comps: &[Vec<u8>],
        link: &[u8],
        path: &Path,
    ) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        let link_shown = String::from_utf8_lossy(link);
        let src = link_target(shown, link, Dots::Clamp)?;
        let Some((src_name, src_parents)) = src.split_last() else {
            return Ok(());
        };
        if src == comps {
            // A link to itself (some writers emit one): the entry is already there.
            return Ok(());
        }
        let src_dir = match self.resolve(src_parents, false, Follow::Refuse) {
            Ok(fd) => fd,
            // Tar writers name a hardlink's target by its canonical path; one that goes through
            // a symlink could reach a file the symlink points at outside the target.
            Err(Errno::LOOP) => {
                return Err(Error::unsafe_entry(
                    shown,
                    format!("hardlink target {link_shown:?} resolves through a symlink"),
                ));
            }
            Err(e) => return Err(e).ctx("find the hardlink target of", path),
        };
        match rfs::statat(&src_dir, src_name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir(&st) => {
                return Err(Error::unsafe_entry(
                    shown,
                    format!("hardlink target {link_shown:?} is a directory"),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(e).ctx("find the hardlink target of", path),
        }
        let (dir, pst) = self.parent(parents, path)?;
        let key = key(&pst, name);
        self.clear_name(&dir, name, &key, path)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        rfs::linkat(
            &src_dir,
            src_name.as_slice(),
            &dir,
            name.as_slice(),
            AtFlags::empty(),
        )
        .ctx("create hardlink", path)?;
        self.ours.insert(key);
        // The inode is shared with the target, whose metadata it keeps.
        Ok(())
    }

    pub(super) fn special(
        &mut self,
        comps: &[Vec<u8>],
        file_type: FileType,
        dev: rfs::Dev,
        meta: Meta,
        path: &Path,
    ) -> Result<()> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        let (dir, pst) = self.parent(parents, path)?;
        let key = key(&pst, name);
        self.clear_name(&dir, name, &key, path)?;
        rfs::mknodat(
            &dir,
            name.as_slice(),
            file_type,
            Mode::from_raw_mode(FILE_CREATE_MODE),
            dev,
        )
        .map_err(|e| {
            let action = match (e, file_type) {
                (Errno::PERM, FileType::Fifo) => "create fifo",
                (Errno::PERM, _) => {
                    "create device node (which needs CAP_MKNOD in the initial user namespace)"
                }
                _ => "create",
            };
            Error::Io {
                action,
                path: path.to_owned(),
                source: e.into(),
            }
        })?;
        self.ours.insert(key);
        self.set_meta(Node::At(dir.as_fd(), name, file_type), &meta, path)
    }

    // ---- whiteouts --------------------------------------------------------------------------
}
