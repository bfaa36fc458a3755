//! Reading the OCI layout a build wrote with `-o type=oci`: its config and its layers' tar headers.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One entry of a layer, as its tar header and PAX records give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// The typeflag byte (`b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'5'` directory).
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: String,
    /// `SCHILY.xattr.*` records, by xattr name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// An image of a layout: its config, and per layer its entries by name (without `./` or a
/// trailing slash). Compressed layers (the base's: builds write theirs uncompressed when
/// asked) read as empty.
#[derive(Debug)]
pub struct LayoutImage {
    pub config: serde_json::Value,
    pub layers: Vec<BTreeMap<String, LayerEntry>>,
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// Reads the first image of the layout at `layout`.
pub fn read(layout: &Path) -> LayoutImage {
    let blob = |d: &serde_json::Value| {
        let d = d["digest"].as_str().unwrap().replace(':', "/");
        layout.join("blobs").join(d)
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]));
    let config = json(&blob(&manifest["config"]));
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let mut entries = BTreeMap::new();
        if l["mediaType"].as_str().unwrap().ends_with(".tar") {
            let mut a = tar::Archive::new(fs::File::open(blob(l)).unwrap());
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let mut xattrs = BTreeMap::new();
                if let Some(pax) = e.pax_extensions().unwrap() {
                    for r in pax {
                        let r = r.unwrap();
                        if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                            xattrs.insert(k.to_owned(), r.value_bytes().to_vec());
                        }
                    }
                }
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap())
                    .unwrap_or_default();
                let h = e.header();
                let entry = LayerEntry {
                    kind: h.entry_type().as_byte(),
                    mode: h.mode().unwrap() & 0o7777,
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    link,
                    xattrs,
                };
                let name = name.trim_start_matches("./").trim_end_matches('/');
                entries.insert(name.to_owned(), entry);
            }
        }
        layers.push(entries);
    }
    LayoutImage { config, layers }
}
