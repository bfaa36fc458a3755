//! A planned COPY or ADD streamed into a layer tar: owners, modes and times set in the
//! headers, so no chown is ever needed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_layers::listing::DirMeta;

use super::archive::append_archive;
use super::entry::{LayerOut, meta};
use super::error::{err, io_err};
use super::plan::{CopyPlan, Extra, Parent, Planned};
use super::request::{Chmod, CopyRequest};
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
    let mut layer = LayerOut::new(out);
    // The first destination of each multiply linked source inode, for its other names.
    let mut links: std::collections::HashMap<(u64, u64), Vec<u8>> = Default::default();
    let mtime = |t: i64| req.clamp_mtime.map_or(t, |c| t.min(c)).max(0);
    let now = mtime(
        req.clamp_mtime
            .unwrap_or_else(|| jiff::Timestamp::now().as_second()),
    );
    let chmod = Chmod::new(req.chmod.as_deref());
    // BuildKit hands MkdirAll an octal --chmod (not a symbolic one) as the mode.
    let chmod_mode = match req.chmod.as_deref() {
        Some(spec) if !spec.is_empty() && spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            chmod.apply(0o755, true)?
        }
        _ => 0o755,
    };
    for parent in &parents {
        let meta = match parent {
            Parent::Made { chmod, .. } => DirMeta {
                mode: if *chmod { chmod_mode } else { 0o755 },
                uid: req.owner.uid.into(),
                gid: req.owner.gid.into(),
                mtime: now.unsigned_abs(),
            },
            Parent::Kept { meta, touched, .. } => DirMeta {
                mtime: if *touched {
                    now.unsigned_abs()
                } else {
                    mtime(meta.mtime.try_into().unwrap_or(i64::MAX)).unsigned_abs()
                },
                ..*meta
            },
        };
        let path = parent.path();
        layer.dir(path, path.as_bytes(), meta, &[])?;
    }
    for (target, data) in contents {
        let mode = chmod.apply(0o644, false)?;
        let size = data.len() as u64;
        let m = meta(mode, req.owner, now);
        layer.tar.file(target.as_bytes(), m, &[], size, data)?;
    }
    for (target, path, t) in files {
        let mode = chmod.apply(0o600, false)?;
        let f = std::fs::File::open(path).map_err(io_err("open", path))?;
        let size = f.metadata().map_err(io_err("stat", path))?.len();
        let m = meta(mode, req.owner, mtime(t));
        layer.tar.file(target.as_bytes(), m, &[], size, f)?;
    }
    for p in planned {
        if p.archive {
            let root = archive_root
                .as_mut()
                .ok_or_else(|| err("an archive planned without its destination"))?;
            append_archive(&mut layer, &p.src, root, req.owner, req.clamp_mtime, now)?;
            continue;
        }
        let ft = p.meta.file_type();
        let src_mode = p.meta.permissions().mode() & 0o7777;
        let chmod = |is_dir| chmod.apply(src_mode, is_dir);
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
        let name = p.name().as_os_str().as_bytes();
        if ft.is_dir() {
            let meta = DirMeta {
                mode: chmod(true)?,
                uid: owner.uid.into(),
                gid: owner.gid.into(),
                mtime: t.unsigned_abs(),
            };
            layer.dir(&p.dest, name, meta, xattrs)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p.src).map_err(io_err("read link", &p.src))?;
            let m = meta(0o777, owner, t);
            let target = target.as_os_str().as_bytes();
            layer.tar.symlink(name, m, xattrs, target)?;
        } else if ft.is_file() && p.empty {
            let m = meta(chmod(false)?, owner, t);
            layer.tar.file(name, m, xattrs, 0, std::io::empty())?;
        } else if ft.is_file() {
            // Names of one inode within what a stage source copies stay one inode, as in
            // BuildKit's copy: the first name holds the data, the others link to it.
            if link_inodes && p.meta.nlink() > 1 {
                match links.entry((p.meta.dev(), p.meta.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let m = meta(chmod(false)?, owner, t);
                        layer.tar.hardlink(name, m, first.get())?;
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(name.to_vec());
                    }
                }
            }
            let f = std::fs::File::open(&p.src).map_err(io_err("open", &p.src))?;
            let size = p.meta.len();
            let m = meta(chmod(false)?, owner, t);
            layer.tar.file(name, m, xattrs, size, f)?;
        }
        // Sockets, fifos and devices in a context are not copied, as in Docker.
    }
    layer.finish()
}
