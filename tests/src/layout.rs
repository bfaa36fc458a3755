//! Reading the OCI layout a build wrote with `-o type=oci`: its config and its layers' tar headers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
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
/// asked) read as empty, except through [`read_gzip_too`].
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
    read_layers(layout, false)
}

/// [`read`], gzip layers included: for a layout copied out of a registry, whose layers are all
/// compressed.
pub fn read_gzip_too(layout: &Path) -> LayoutImage {
    read_layers(layout, true)
}

fn read_layers(layout: &Path, gzip: bool) -> LayoutImage {
    let blob = |d: &serde_json::Value| {
        let d = d["digest"].as_str().unwrap().replace(':', "/");
        layout.join("blobs").join(d)
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]));
    let config = json(&blob(&manifest["config"]));
    let mut layers = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let media_type = l["mediaType"].as_str().unwrap();
        let file = fs::File::open(blob(l)).unwrap();
        layers.push(if media_type.ends_with(".tar") {
            entries(file)
        } else if gzip && media_type.ends_with(".tar+gzip") {
            entries(flate2::read::GzDecoder::new(file))
        } else {
            BTreeMap::new()
        });
    }
    LayoutImage { config, layers }
}

/// A layer's entries by name, from its plain tar stream.
fn entries(tar: impl Read) -> BTreeMap<String, LayerEntry> {
    let mut entries = BTreeMap::new();
    let mut a = tar::Archive::new(tar);
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
    entries
}
