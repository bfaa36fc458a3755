//! The tar entries a COPY or ADD layer is written with: headers, directories, symlinks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use cairn_layers::listing::DirMeta;

use super::error::write_err;
use crate::error::Result;
use crate::users::Owner;

/// A symlink entry whose target is written as the link has it: the tar crate's path
/// handling would respell `/` as `//` and drop an empty or `.` component, where BuildKit's
/// layers keep the target as the kernel returns it.
pub(crate) fn append_symlink<W: Write>(
    tar: &mut tar::Builder<W>,
    h: &mut tar::Header,
    path: &Path,
    target: &[u8],
) -> Result<()> {
    let failed = |e| write_err(path.display())(e);
    if target.len() <= 100 && !target.contains(&0) {
        h.set_link_name_literal(target).map_err(failed)?;
        tar.append_data(h, path, std::io::empty()).map_err(failed)
    } else {
        // Longer ones go in a GNU long-link record, which the crate writes as given.
        use std::os::unix::ffi::OsStrExt;
        tar.append_link(h, path, std::ffi::OsStr::from_bytes(target))
            .map_err(failed)
    }
}

pub(crate) fn header(
    kind: tar::EntryType,
    mode: u32,
    owner: Owner,
    mtime: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.uid.into());
    h.set_gid(owner.gid.into());
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// A directory entry, remembered in `written` for the stage's view.
/// `raw` is the name's bytes when they are not UTF-8 (`path` has U+FFFD there).
pub(crate) fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    written: &mut BTreeMap<String, DirMeta>,
    path: &str,
    raw: Option<&Path>,
    meta: DirMeta,
) -> Result<()> {
    let mut h = dir_header(&meta);
    let mut name = raw.unwrap_or(Path::new(path)).as_os_str().to_owned();
    name.push("/");
    append(tar, &mut h, Path::new(&name), std::io::empty())?;
    written.insert(path.to_owned(), meta);
    Ok(())
}

/// The tar header of a directory with `meta` (COPY's and WORKDIR's layers).
pub(crate) fn dir_header(meta: &DirMeta) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(meta.mode);
    h.set_uid(meta.uid);
    h.set_gid(meta.gid);
    h.set_mtime(meta.mtime);
    h.set_size(0);
    h
}

/// Appends an entry; `path`'s bytes are the name, whether UTF-8 or not.
pub(crate) fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    h: &mut tar::Header,
    path: &Path,
    data: impl Read,
) -> Result<()> {
    tar.append_data(h, path, data)
        .map_err(write_err(path.display()))
}
