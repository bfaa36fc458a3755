//! COPY --from's sources as their stage or image has them: each path's owner and extended
//! attributes (file capabilities among them), read from the layers' tar headers. The rootfs
//! COPY reads the bytes from cannot tell: a rootless build unpacks it with its own uid and
//! without `security.capability`, which only root may set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_layers::Store;
use cairn_layers::image::Descriptor;
use cairn_layers::whiteout::{self, Name};

use super::error::CopyError;
use super::path::{clean, join};
use crate::error::{Error, Result};

/// A path's owner and extended attributes (from PAX `SCHILY.xattr.*` records: name, value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    pub uid: u64,
    pub gid: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every path of a stage's or image's filesystem with its [`EntryMeta`], and where that
/// filesystem is unpacked.
#[derive(Debug, Default)]
pub struct SourceMeta {
    root: PathBuf,
    entries: BTreeMap<String, EntryMeta>,
}

impl SourceMeta {
    /// Reads `layers` (in order, whiteouts honoured) for the filesystem unpacked at `root`;
    /// with `wanted`, only the layers it marks (the ones with something where the copy reads:
    /// see `Listing::touches`), unless a hard link read names a file no layer read has, when
    /// every layer is read after all.
    pub fn read(
        store: &Store,
        layers: &[Descriptor],
        root: &Path,
        wanted: Option<&[bool]>,
    ) -> Result<SourceMeta> {
        let mut meta = SourceMeta {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
        };
        let mut skipped = false;
        let mut link_unseen = false;
        for (i, l) in layers.iter().enumerate() {
            if wanted.is_some_and(|w| !w.get(i).copied().unwrap_or(true)) {
                skipped = true;
                continue;
            }
            let plain = store.open_layer(l)?;
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
                let pax = EntryPax::read(&mut entry).map_err(bad)?;
                let h = entry.header();
                let link = h
                    .entry_type()
                    .is_hard_link()
                    .then(|| entry.link_name_bytes())
                    .flatten()
                    .map(|l| clean(&String::from_utf8_lossy(&l)).join("/"));
                let e = EntryMeta {
                    uid: pax.uid.unwrap_or_else(|| h.uid().unwrap_or(0)),
                    gid: pax.gid.unwrap_or_else(|| h.gid().unwrap_or(0)),
                    xattrs: pax.xattrs,
                };
                link_unseen |= link.as_ref().is_some_and(|t| !meta.entries.contains_key(t));
                meta.add(&name, e, link);
            }
        }
        if skipped && link_unseen {
            // Its target's owners and xattrs may be in a layer left unread.
            return SourceMeta::read(store, layers, root, None);
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

/// What an entry's PAX records say of it beyond its name and size: its extended attributes
/// (`SCHILY.xattr.*`, as name and value) and the numbers a ustar header cannot hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EntryPax {
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) uid: Option<u64>,
    pub(crate) gid: Option<u64>,
    /// Whole seconds; a fraction is dropped, as BuildKit's layers drop it.
    pub(crate) mtime: Option<i64>,
}

impl EntryPax {
    pub(crate) fn read<R: std::io::Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Self> {
        let mut pax = EntryPax::default();
        if let Some(records) = entry.pax_extensions()? {
            for r in records {
                let r = r?;
                pax.add(r.key_bytes(), r.value_bytes());
            }
        }
        Ok(pax)
    }

    fn add(&mut self, key: &[u8], value: &[u8]) {
        fn number<N: std::str::FromStr>(v: &[u8]) -> Option<N> {
            std::str::from_utf8(v).ok()?.parse().ok()
        }
        match key {
            b"uid" => self.uid = number(value),
            b"gid" => self.gid = number(value),
            b"mtime" => {
                let whole = value.split(|&b| b == b'.').next().unwrap_or_default();
                self.mtime = number(whole);
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
    }
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
    fn pax_records_give_xattrs_and_large_numbers() {
        let cases: [(&[u8], &[u8], EntryPax); 6] = [
            (
                b"uid",
                b"3000000",
                EntryPax {
                    uid: Some(3_000_000),
                    ..Default::default()
                },
            ),
            (
                b"gid",
                b"7",
                EntryPax {
                    gid: Some(7),
                    ..Default::default()
                },
            ),
            (
                b"mtime",
                b"1700000000.75",
                EntryPax {
                    mtime: Some(1_700_000_000),
                    ..Default::default()
                },
            ),
            (
                b"mtime",
                b"-5",
                EntryPax {
                    mtime: Some(-5),
                    ..Default::default()
                },
            ),
            (b"uid", b"x", EntryPax::default()),
            (
                b"SCHILY.xattr.security.capability",
                b"\x01",
                EntryPax {
                    xattrs: vec![(b"security.capability".to_vec(), b"\x01".to_vec())],
                    ..Default::default()
                },
            ),
        ];
        for (key, value, want) in cases {
            let mut got = EntryPax::default();
            got.add(key, value);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(key));
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

    /// A store with two gzip layers: `data/f` owned by 1234, then `src/h`, a hard link to it
    /// (across layers, which some tars do), and `src/g` owned by 7.
    fn two_layers() -> (tempfile::TempDir, Store, Vec<Descriptor>) {
        use cairn_layers::layer_tar::{Meta, Writer};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let owned = |uid| Meta {
            uid,
            gid: uid,
            ..Meta::default()
        };
        let gzip = cairn_layers::compress::Compression::Gzip;
        let first = cairn_layers::layer::write_layer(&store, gzip, |w| {
            let mut t = Writer::new(w);
            t.file(b"data/f", owned(1234), &[], 1, &b"f"[..])?;
            t.finish().map(drop)
        })
        .unwrap();
        let second = cairn_layers::layer::write_layer(&store, gzip, |w| {
            let mut t = Writer::new(w);
            t.file(b"src/g", owned(7), &[], 1, &b"g"[..])?;
            t.hardlink(b"src/h", owned(0), b"data/f")?;
            t.finish().map(drop)
        })
        .unwrap();
        (dir, store, vec![first.descriptor, second.descriptor])
    }

    #[test]
    fn unwanted_layers_are_not_read_unless_a_hard_link_needs_them() {
        let (_d, store, layers) = two_layers();
        let root = Path::new("/r");
        let uid = |s: &SourceMeta, p: &str| s.get(&root.join(p)).map(|e| e.uid);
        let all = SourceMeta::read(&store, &layers, root, None).unwrap();
        assert_eq!(uid(&all, "src/h"), Some(1234));
        // The first layer skipped: the hard link's target is unseen, so all are read again.
        let wanted = SourceMeta::read(&store, &layers, root, Some(&[false, true])).unwrap();
        assert_eq!(uid(&wanted, "src/h"), Some(1234));
        assert_eq!(uid(&wanted, "data/f"), Some(1234));
        // Skipping the second (no link in what is read): the first alone.
        let first = SourceMeta::read(&store, &layers, root, Some(&[true, false])).unwrap();
        assert_eq!(uid(&first, "data/f"), Some(1234));
        assert_eq!(uid(&first, "src/g"), None);
    }
}
