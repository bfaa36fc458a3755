//! COPY --from's sources as their stage or image has them: each path's owner and extended
//! attributes (file capabilities among them), read from the layers' tar headers. The rootfs
//! COPY reads the bytes from cannot tell: a rootless build unpacks it with its own uid and
//! without `security.capability`, which only root may set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_layers::Store;
use cairn_layers::compress::{self, Compression};
use cairn_layers::image::Descriptor;
use cairn_layers::whiteout::{self, Name};

use super::error::CopyError;
use super::path::{clean, join};
use crate::error::{Error, Result};

/// A path's owner and extended attributes (PAX `SCHILY.xattr.*` records, key and value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub uid: u64,
    pub gid: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Every path of a stage's or image's filesystem with its [`EntryMeta`], and where that
/// filesystem is unpacked.
#[derive(Debug, Default)]
pub struct SourceMeta {
    root: PathBuf,
    entries: BTreeMap<String, EntryMeta>,
}

impl SourceMeta {
    /// Reads `layers` (in order, whiteouts honoured) for the filesystem unpacked at `root`.
    pub fn read(store: &Store, layers: &[Descriptor], root: &Path) -> Result<SourceMeta> {
        let mut meta = SourceMeta {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
        };
        for l in layers {
            let c = Compression::from_media_type(&l.media_type)
                .ok_or_else(|| cairn_layers::Error::MediaType(l.media_type.clone()))?;
            let plain = compress::decompress(store.open_blob(&l.digest)?, c)?;
            let bad = |source| -> Error {
                CopyError::LayerHeaders {
                    digest: l.digest.to_string(),
                    source,
                }
                .into()
            };
            let mut archive = tar::Archive::new(plain);
            for entry in archive.entries().map_err(bad)? {
                let mut entry = entry.map_err(bad)?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let xattrs = pax_xattrs(&mut entry).map_err(bad)?;
                let h = entry.header();
                let link = h
                    .entry_type()
                    .is_hard_link()
                    .then(|| entry.link_name_bytes())
                    .flatten()
                    .map(|l| clean(&String::from_utf8_lossy(&l)).join("/"));
                let e = EntryMeta {
                    uid: h.uid().unwrap_or(0),
                    gid: h.gid().unwrap_or(0),
                    xattrs,
                };
                meta.add(&name, e, link);
            }
        }
        Ok(meta)
    }

    /// One layer entry; a hard link shares its target's metadata (the inode's).
    fn add(&mut self, name: &str, e: EntryMeta, hard_link: Option<String>) {
        let parts = clean(name);
        let Some((last, parents)) = parts.split_last() else {
            return;
        };
        let parent = parents.join("/");
        match whiteout::classify(last) {
            Ok(Name::Opaque) => self.remove_below(&parent, false),
            Ok(Name::Whiteout(n)) => self.remove_below(&join(&parent, n), true),
            Ok(Name::Plain(_)) | Err(_) => {
                let path = parts.join("/");
                // What was below a path a non-directory replaces is gone; a directory
                // entry over a directory merges, and the lookup never asks below a file.
                let e = match hard_link.and_then(|t| self.entries.get(&t).cloned()) {
                    Some(target) => target,
                    None => e,
                };
                self.entries.insert(path, e);
            }
        }
    }

    fn remove_below(&mut self, path: &str, and_self: bool) {
        if path.is_empty() {
            self.entries.clear();
            return;
        }
        if and_self {
            self.entries.remove(path);
        }
        let (from, to) = (format!("{path}/"), format!("{path}0"));
        let mut below = self.entries.split_off(&from);
        self.entries.append(&mut below.split_off(&to));
    }

    /// The metadata of the file at `src` (a path under the unpacked root); None when the
    /// layers do not name it.
    pub fn get(&self, src: &Path) -> Option<&EntryMeta> {
        let rel = src.strip_prefix(&self.root).ok()?;
        self.entries.get(rel.to_str()?)
    }
}

/// An entry's `SCHILY.xattr.*` PAX records, keys as written: what a layer or archive holds
/// of its extended attributes.
pub(crate) fn pax_xattrs<R: std::io::Read>(
    entry: &mut tar::Entry<'_, R>,
) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions()? {
        for r in pax {
            let r = r?;
            if let Ok(k) = r.key()
                && k.starts_with("SCHILY.xattr.")
            {
                xattrs.push((k.to_owned(), r.value_bytes().to_vec()));
            }
        }
    }
    Ok(xattrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(uid: u64) -> EntryMeta {
        EntryMeta {
            uid,
            gid: uid,
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn later_layers_and_whiteouts_decide() {
        let mut s = SourceMeta {
            root: PathBuf::from("/r"),
            entries: BTreeMap::new(),
        };
        s.add("./a/f", m(1), None);
        s.add("a/g", m(2), None);
        s.add("b/x", m(3), None);
        s.add("a/h", m(9), Some("a/f".into()));
        s.add("b/.wh..wh..opq", m(0), None);
        s.add("a/.wh.g", m(0), None);
        s.add("/a/f", m(4), None);
        let get = |p: &str| s.get(&Path::new("/r").join(p)).map(|e| e.uid);
        assert_eq!(get("a/f"), Some(4));
        assert_eq!(get("a/g"), None);
        assert_eq!(get("a/h"), Some(1), "a hard link has its target's owner");
        assert_eq!(get("b/x"), None);
    }
}
