//! A planned COPY or ADD streamed into a layer tar: owners, modes and times set in the
//! headers, so no chown is ever needed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_layers::listing::DirMeta;

use super::archive::append_archive;
use super::entry::{append, append_dir, append_symlink, header};
use super::error::{CopyError, err, io_err, write_err};
use super::plan::{CopyPlan, Extra, Parent, Planned};
use super::request::{CopyRequest, apply_chmod};
use crate::error::Result;
use crate::users::Owner;

impl CopyPlan<'_> {
    /// Writes the planned entries as a layer tar; returns the directories it holds.
    pub fn write(
        self,
        req: &CopyRequest,
        out: &mut dyn Write,
    ) -> Result<BTreeMap<String, DirMeta>> {
        let CopyPlan {
            parents,
            contents,
            files,
            planned,
            extra,
        } = self;
        write_plan(req, parents, contents, files, planned, extra, out)
    }
}

fn write_plan(
    req: &CopyRequest,
    parents: Vec<Parent>,
    contents: Vec<(String, &[u8])>,
    files: Vec<(String, &Path, i64)>,
    planned: Vec<Planned>,
    extra: Extra,
    out: &mut dyn Write,
) -> Result<BTreeMap<String, DirMeta>> {
    let Extra {
        mut archive_root,
        kept,
        link_inodes,
    } = extra;
    let mut tar = tar::Builder::new(out);
    // The first destination of each multiply linked source inode, for its other names.
    let mut links: std::collections::HashMap<(u64, u64), String> = Default::default();
    let mtime = |t: i64| req.clamp_mtime.map_or(t, |c| t.min(c)).max(0) as u64;
    let now = req
        .clamp_mtime
        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
    let mut written: BTreeMap<String, DirMeta> = BTreeMap::new();
    // BuildKit hands MkdirAll an octal --chmod (not a symbolic one) as the mode.
    let chmod_mode = match req.chmod.as_deref() {
        Some(spec) if !spec.is_empty() && spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            apply_chmod(spec, 0o755, true)?
        }
        _ => 0o755,
    };
    for parent in &parents {
        let meta = match parent {
            Parent::Made { chmod, .. } => DirMeta {
                mode: if *chmod { chmod_mode } else { 0o755 },
                uid: req.owner.uid.into(),
                gid: req.owner.gid.into(),
                mtime: mtime(now),
            },
            Parent::Kept { meta, touched, .. } => DirMeta {
                mtime: if *touched {
                    mtime(now)
                } else {
                    mtime(meta.mtime.try_into().unwrap_or(i64::MAX))
                },
                ..*meta
            },
        };
        append_dir(&mut tar, &mut written, parent.path(), None, meta)?;
    }
    for (target, data) in contents {
        let mode = match &req.chmod {
            Some(spec) => apply_chmod(spec, 0o644, false)?,
            None => 0o644,
        };
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            req.owner,
            mtime(now),
            data.len() as u64,
        );
        append(&mut tar, &mut h, Path::new(&target), data)?;
    }
    for (target, path, t) in files {
        let mode = match &req.chmod {
            Some(spec) => apply_chmod(spec, 0o600, false)?,
            None => 0o600,
        };
        let f = std::fs::File::open(path).map_err(io_err("open", path))?;
        let size = f.metadata().map_err(io_err("stat", path))?.len();
        let mut h = header(tar::EntryType::Regular, mode, req.owner, mtime(t), size);
        append(&mut tar, &mut h, Path::new(&target), f.take(size))?;
    }
    for p in planned {
        if p.archive {
            let root = archive_root
                .as_mut()
                .ok_or_else(|| err("an archive planned without its destination"))?;
            append_archive(
                &mut tar,
                &p.src,
                root,
                req.owner,
                req.clamp_mtime,
                mtime(now),
                &mut written,
            )?;
            continue;
        }
        let ft = p.meta.file_type();
        let src_mode = p.meta.permissions().mode() & 0o7777;
        let chmod = |is_dir| match &req.chmod {
            Some(spec) => apply_chmod(spec, src_mode, is_dir),
            None => Ok(src_mode),
        };
        let t = mtime(p.meta.mtime());
        // From a stage or image without --chown: the owner and xattrs its layers give.
        let source = kept.as_ref().and_then(|k| k.get(&p.src));
        let owner = match (&kept, source) {
            (Some(_), Some(e)) => Owner {
                uid: u32::try_from(e.uid)
                    .map_err(|_| err(format!("{}: uid out of range", p.dest)))?,
                gid: u32::try_from(e.gid)
                    .map_err(|_| err(format!("{}: gid out of range", p.dest)))?,
            },
            (Some(_), None) => Owner { uid: 0, gid: 0 },
            (None, _) => req.owner,
        };
        let xattrs = source.map_or(&[][..], |e| &e.xattrs[..]);
        let pax = |tar: &mut tar::Builder<&mut dyn Write>| -> Result<()> {
            if xattrs.is_empty() {
                return Ok(());
            }
            tar.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(write_err(&p.dest))
        };
        if ft.is_dir() {
            let meta = DirMeta {
                mode: chmod(true)?,
                uid: owner.uid.into(),
                gid: owner.gid.into(),
                mtime: t,
            };
            pax(&mut tar)?;
            append_dir(&mut tar, &mut written, &p.dest, p.raw.as_deref(), meta)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p.src).map_err(io_err("read link", &p.src))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, owner, t, 0);
            pax(&mut tar)?;
            append_symlink(
                &mut tar,
                &mut h,
                p.name(),
                target.as_os_str().as_encoded_bytes(),
            )?;
        } else if ft.is_file() && p.empty {
            let mut h = header(tar::EntryType::Regular, chmod(false)?, owner, t, 0);
            pax(&mut tar)?;
            append(&mut tar, &mut h, p.name(), std::io::empty())?;
        } else if ft.is_file() {
            // Names of one inode within what a stage source copies stay one inode, as in
            // BuildKit's copy: the first name holds the data, the others link to it.
            if link_inodes && p.meta.nlink() > 1 {
                match links.entry((p.meta.dev(), p.meta.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let mut h = header(tar::EntryType::Link, chmod(false)?, owner, t, 0);
                        tar.append_link(&mut h, p.name(), first.get())
                            .map_err(write_err(&p.dest))?;
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(p.dest.clone());
                    }
                }
            }
            let f = std::fs::File::open(&p.src).map_err(io_err("open", &p.src))?;
            let size = p.meta.len();
            let mut h = header(tar::EntryType::Regular, chmod(false)?, owner, t, size);
            pax(&mut tar)?;
            append(&mut tar, &mut h, p.name(), f.take(size))?;
        }
        // Sockets, fifos and devices in a context are not copied, as in Docker.
    }
    tar.finish().map_err(CopyError::Finish)?;
    Ok(written)
}
