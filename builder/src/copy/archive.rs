//! ADD of a local archive: its entries written into the step's layer where BuildKit's untar
//! puts them. BuildKit extracts chrooted at the destination, so the destination is the root
//! for every entry: `..` stops at it, symlinks (the archive's own and the image's below the
//! destination) resolve inside it, and the directories an entry implies are made 0755 root.
//! Nothing is written to the host here: this only decides the layer's names.

use std::io::{Read, Write};
use std::path::Path;

use cairn_layers::layer_tar;
use cairn_layers::listing::{DirMeta, Kind, Listing, TreeView};

use super::entry::LayerOut;
use super::error::{CopyError, err, io_err};
use super::from_meta::EntryPax;
use super::path::{clean, join};
use crate::error::{Error, Result};
use crate::users::Owner;

/// The destination archives are extracted into, as the image has it before the step.
#[derive(Debug)]
pub(crate) struct ArchiveRoot {
    /// Its path in the image (relative, resolved).
    pub(crate) dest: String,
    /// The image's directories and symlinks below it, named from it; what the archives write
    /// is added as it is written, so a later entry (or archive) sees an earlier one's links.
    pub(crate) view: TreeView,
    /// The image has it as a directory.
    pub(crate) exists: bool,
}

/// Where an archive's entry `comps` lands, relative to the destination: its parents
/// resolved in the destination's view as a chroot there would (its own name not followed:
/// the entry replaces what is there).
fn place(view: &TreeView, comps: &[String], shown: &str) -> Result<(String, String)> {
    let (last, parents) = comps
        .split_last()
        .ok_or_else(|| err(format!("{shown}: names the destination itself")))?;
    let parent = view
        .resolve(&parents.join("/"))
        .ok_or_else(|| err(format!("{shown}: too many levels of symbolic links")))?;
    Ok((parent.clone(), join(&parent, last)))
}

/// Writes the entries of the archive at `path` under `root`, with their owners unless
/// --chown gives one (`owner`; root is none), times no later than `clamp_mtime`
/// (SOURCE_DATE_EPOCH). `now` dates the directories it makes. Each entry is written anew from
/// what its headers say (type, mode, owner, time, xattrs), as BuildKit's layer of the
/// extracted files would have it: user and group names, access times and other PAX records
/// do not reach the layer.
pub(crate) fn append_archive<W: Write>(
    layer: &mut LayerOut<W>,
    path: &Path,
    root: &mut ArchiveRoot,
    owner: Owner,
    clamp_mtime: Option<i64>,
    now: i64,
) -> Result<()> {
    let reader = open_archive(path)?;
    let bad = |source| -> Error {
        CopyError::ReadArchive {
            path: path.to_path_buf(),
            source,
        }
        .into()
    };
    let made = |uid: u32, gid: u32| DirMeta {
        mode: 0o755,
        uid: uid.into(),
        gid: gid.into(),
        mtime: now.unsigned_abs(),
    };
    // BuildKit makes a missing destination first, as a COPY's parents are made.
    if !root.dest.is_empty() && !root.exists {
        root.exists = true;
        if !layer.written.contains_key(&root.dest) {
            let dest = root.dest.clone();
            layer.dir(&dest, dest.as_bytes(), made(owner.uid, owner.gid), &[])?;
        }
    }
    let chown = owner != (Owner { uid: 0, gid: 0 });
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        // A pax global header ('g', as git archive writes) is metadata, not a file: its name
        // (e.g. /tmp/GlobalHead.1.1) must not make directories.
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let comps = clean(&name);
        if comps.is_empty() {
            continue;
        }
        // Extended attributes, kept as BuildKit keeps them (best effort when unpacking).
        let pax = EntryPax::read(&mut entry).map_err(bad)?;
        let (parent, rel) = place(&root.view, &comps, &name)?;
        // Missing directories above the entry: made by the untar 0755 and owned by root,
        // --chown or not (it is for the archive's entries).
        let mut at = String::new();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            at = join(&at, part);
            if !root.view.is_dir(&at) {
                root.view.add_dir(&at, made(0, 0));
                let dir = join(&root.dest, &at);
                layer.dir(&dir, dir.as_bytes(), made(0, 0), &[])?;
            }
        }
        let target = join(&root.dest, &rel);
        let h = entry.header();
        // An archive may leave a number blank, which Go's tar reads as 0 (an extraction then
        // writes 0); a PAX record overrides the field.
        let id = |pax: Option<u64>, field: std::io::Result<u64>, what: &str| {
            let id = pax.unwrap_or_else(|| field.unwrap_or(0));
            u32::try_from(id).map_err(|_| err(format!("{name}: {what} {id} is out of range")))
        };
        let uid = id(pax.uid, h.uid(), "uid")?;
        let gid = id(pax.gid, h.gid(), "gid")?;
        let mut mtime = pax
            .mtime
            .unwrap_or_else(|| h.mtime().map_or(0, |t| t.try_into().unwrap_or(i64::MAX)));
        if let Some(c) = clamp_mtime {
            mtime = mtime.min(c.max(0));
        }
        let m = layer_tar::Meta {
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: if chown { owner.uid } else { uid },
            gid: if chown { owner.gid } else { gid },
            mtime,
        };
        let kind = h.entry_type();
        if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let shown = String::from_utf8_lossy(&link).into_owned();
            root.view
                .apply(&Listing(vec![(rel.clone(), Kind::Symlink(shown))]));
            layer
                .tar
                .symlink(target.as_bytes(), m, &pax.xattrs, &link)?;
        } else if kind.is_hard_link() {
            // The link's target is an entry already extracted, named from the root too.
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let (_, link_rel) = place(&root.view, &clean(&link), &link)?;
            root.view.apply(&Listing(vec![(rel.clone(), Kind::Other)]));
            let link = join(&root.dest, &link_rel);
            layer.tar.hardlink(target.as_bytes(), m, link.as_bytes())?;
        } else if kind.is_dir() {
            let meta = DirMeta {
                mode: m.mode,
                uid: m.uid.into(),
                gid: m.gid.into(),
                // Before 1970 is kept in the header, the view has it as the epoch.
                mtime: m.mtime.max(0).unsigned_abs(),
            };
            root.view.add_dir(&rel, meta);
            layer.tar.dir(target.as_bytes(), m, &pax.xattrs)?;
            layer.written.insert(target.clone(), meta);
        } else if kind.is_file() {
            root.view.apply(&Listing(vec![(rel.clone(), Kind::Other)]));
            let size = entry.size();
            layer
                .tar
                .file(target.as_bytes(), m, &pax.xattrs, size, &mut entry)?;
        }
        // Devices and fifos are left out, as before: a rootless build cannot make them.
    }
    Ok(())
}

/// A local file's bytes, decompressed when it is gzip, bzip2, xz or zstd (sniffed from its
/// first bytes, as Docker's ADD does).
fn open_archive(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).map_err(io_err("read", path))?;
    let f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let head = &head[..n];
    Ok(if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(std::io::BufReader::new(f)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        ))
    } else {
        cairn_layers::compress::decompress_detected(f)?.1
    })
}

/// Whether a local file is a tar archive (plain or compressed), which ADD unpacks.
pub(super) fn is_archive(path: &Path) -> Result<bool> {
    let mut plain = open_archive(path)?;
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match plain.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            // A corrupt compressed stream is not an archive; ADD copies the file as it is.
            Err(_) => return Ok(false),
        }
    }
    Ok(filled == block.len() && &block[257..262] == b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_resolve_with_the_destination_as_root() {
        let mut view = TreeView::default();
        let dir = DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        view.add_dir("etc", dir);
        for (path, target) in [("up", "../.."), ("abs", "/"), ("deep", "../../../etc")] {
            view.apply(&Listing(vec![(path.into(), Kind::Symlink(target.into()))]));
        }
        let cases = [
            ("up/etc/planted", "etc/planted"),
            ("abs/etc/x", "etc/x"),
            ("deep/x", "etc/x"),
            ("../../x", "x"),
            ("a/../../b", "b"),
            // The entry's own name is not followed: it replaces the link.
            ("up", "up"),
        ];
        for (name, want) in cases {
            let (_, got) = place(&view, &clean(name), name).unwrap();
            assert_eq!(got, want, "{name}");
        }
    }
}
