//! Images in and out of the store: OCI image layouts (directories), OCI archives (a tar of a
//! layout) and docker-archives (`docker save`), detected automatically when loading.
//!
//! Loading streams every blob from its source straight into the store, verified against its
//! digest, and only then writes tags, so a load killed at any moment leaves a consistent store
//! (at worst with unreferenced blobs and temp files that `prune` removes).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::compress::{self, Compression};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, ImageConfig, Index, Manifest, OCI_CONFIG,
    OCI_INDEX, OCI_MANIFEST, REF_NAME,
};
use crate::layout::{self, LayoutDir, MAX_INDEX_DEPTH};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::Store;

#[cfg(test)]
mod index_tests;
mod save;

pub use save::{ToSave, save, save_for, save_to_writer};

/// containerd's annotation for an image's full name in an OCI layout (docker save writes it).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// How `save` writes images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    OciArchive,
    DockerArchive,
    OciDir,
}

/// One image that a load added, and the names it was given.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub manifest: Descriptor,
    pub names: Vec<Reference>,
}

/// One entry of a docker-archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Loads every image from `path` (a layout directory, an OCI archive or a docker-archive, the
/// archives optionally gzip-compressed). `name`, when given, names the image instead of the
/// names in the archive (the archive must then hold exactly one image).
pub fn load(store: &Store, path: &Path, name: Option<&Reference>) -> Result<Vec<Loaded>> {
    let _writing = store.writing()?;
    let found = find(store, path)?;
    name_and_tag(store, found, name, path)
}

/// Like [`load`], from an archive (a tar, optionally gzip- or zstd-compressed) read as a stream
/// (`cairn load` from standard input); `what` names the stream in errors.
pub fn load_from_reader(
    store: &Store,
    reader: impl Read,
    what: &str,
    name: Option<&Reference>,
) -> Result<Vec<Loaded>> {
    let _writing = store.writing()?;
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader
        .fill_buf()
        .map_err(|e| Error::stream(format!("read {what}"), e))?
        .to_vec();
    let plain = compress::decompress(reader, Compression::detect(&head))?;
    let found = load_tar(store, plain, Path::new(what))?;
    name_and_tag(store, found, name, Path::new(what))
}

/// The images of a layout directory or an archive, their blobs put in the store.
fn find(store: &Store, path: &Path) -> Result<Vec<Found>> {
    let meta = fs_err::metadata(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        load_layout_dir(store, path)
    } else {
        let file = File::open(path).at("open", path)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let head = reader.fill_buf().at("read", path)?.to_vec();
        let plain = compress::decompress(reader, Compression::detect(&head))?;
        load_tar(store, plain, path)
    }
}

/// Like [`load`], without naming anything: the manifests of the images `path` holds, now in
/// the store (for reading a cache out of an archive, say); the host's image of an index.
pub fn load_untagged(store: &Store, path: &Path) -> Result<Vec<Descriptor>> {
    let _writing = store.writing()?;
    find(store, path)?
        .into_iter()
        .map(|f| store.image_for(&f.manifest, &Platform::host()))
        .collect()
}

/// An image found in a source, before tagging: its manifest and the names the source gives it.
struct Found {
    manifest: Descriptor,
    names: Vec<String>,
}

fn name_and_tag(
    store: &Store,
    found: Vec<Found>,
    name: Option<&Reference>,
    path: &Path,
) -> Result<Vec<Loaded>> {
    let what = path.display().to_string();
    if found.is_empty() {
        return Err(Error::invalid(what, "it holds no image"));
    }
    if name.is_some() && found.len() > 1 {
        return Err(Error::invalid(
            what,
            format!(
                "it holds {} images, so -t cannot name them all",
                found.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut tags = Vec::new();
    for f in found {
        let names = match name {
            Some(n) => vec![n.clone()],
            None => {
                let mut refs = Vec::new();
                for n in &f.names {
                    // A bare tag (`latest`) names no repository.
                    if !n.contains('/') && !n.contains(':') {
                        return Err(Error::invalid(
                            &what,
                            format!(
                                "it names its image only as {n:?}; give a name with -t NAME[:TAG]"
                            ),
                        ));
                    }
                    refs.push(Reference::parse(n)?);
                }
                refs
            }
        };
        tags.extend(names.iter().map(|n| (n.clone(), f.manifest.clone())));
        out.push(Loaded {
            manifest: f.manifest,
            names,
        });
    }
    // Every name is checked before any is written, and index.json is written once.
    store.tag_all(&tags)?;
    Ok(out)
}

/// Refuses an index nested `depth` levels below index.json when that is too deep.
fn check_depth(d: &Descriptor, depth: usize, what: &str) -> Result<()> {
    if depth > MAX_INDEX_DEPTH {
        return Err(Error::invalid(
            what,
            format!(
                "index {} is nested {depth} levels deep; at most {MAX_INDEX_DEPTH} are allowed",
                d.digest
            ),
        ));
    }
    Ok(())
}

/// The image manifests an index entry leads to that the store holds: itself, or for an
/// index, the present images below it (a sparse layout holds only some platforms; it must
/// hold one). Indexes are read bounded, as every document of a load is.
/// `depth` counts the indexes above `d`, index.json excluded.
fn images_below(
    store: &Store,
    d: &Descriptor,
    what: &str,
    depth: usize,
) -> Result<Vec<Descriptor>> {
    match d.media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(vec![d.clone()]),
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            check_depth(d, depth + 1, what)?;
            let index = Index::from_slice(&layout::read_document(store, d, what)?, what)?;
            let mut out = Vec::new();
            for m in index.manifests.iter().filter(|m| store.has_blob(&m.digest)) {
                out.extend(images_below(store, m, what, depth + 1)?);
            }
            if out.is_empty() {
                return Err(Error::invalid(
                    what,
                    format!("it holds none of the images its index {} names", d.digest),
                ));
            }
            Ok(out)
        }
        other => Err(Error::MediaType(other.to_owned())),
    }
}

/// Checks that a manifest's config and layers are all in the store now, and well-formed.
fn check_complete(store: &Store, manifest: &Descriptor, what: &str) -> Result<()> {
    let m = Manifest::from_slice(&layout::read_document(store, manifest, what)?, what)?;
    let config = ImageConfig::from_slice(&layout::read_document(store, &m.config, what)?, what)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::invalid(
            what,
            format!(
                "the manifest has {} layers but the config {} diff_ids",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    for l in &m.layers {
        if Compression::from_media_type(&l.media_type).is_none() {
            return Err(Error::MediaType(l.media_type.clone()));
        }
        if !store.has_blob(&l.digest) {
            return Err(Error::BlobNotFound(l.digest.clone()));
        }
    }
    Ok(())
}

/// The images an OCI index names, each checked complete: an image index among them stays
/// one (its images checked), so its name names the index, as it did where it came from.
fn images_of_index(store: &Store, index: &Index, what: &str) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    // An index may name the same image under thousands of names: each is checked once.
    let mut walked: HashSet<Digest> = HashSet::new();
    let mut checked: HashSet<Digest> = HashSet::new();
    for d in &index.manifests {
        if walked.insert(d.digest.clone()) {
            for m in images_below(store, d, what, 0)? {
                if checked.insert(m.digest.clone()) {
                    check_complete(store, &m, what)?;
                }
            }
        }
        let mut names = Vec::new();
        if let Some(n) = d.annotations.get(CONTAINERD_NAME) {
            names.push(n.clone());
        } else if let Some(n) = d.annotations.get(REF_NAME) {
            names.push(n.clone());
        }
        let mut manifest = d.clone();
        manifest.annotations.clear();
        manifest.platform = None;
        out.push(Found { manifest, names });
    }
    Ok(out)
}

/// The image an OCI layout names `tag` (its `ref.name`, or the tag of its full name), copied
/// into the store without naming it there: `FROM oci-layout://DIR:TAG` and
/// `--build-context NAME=oci-layout://DIR:TAG`. With no tag the layout must hold one image; of
/// a multi-platform one, the image for `platform`.
pub fn layout_image_for(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<Descriptor> {
    let _writing = store.writing()?;
    let found = load_layout_dir(store, dir)?;
    let what = dir.display().to_string();
    let tag_of = |n: &str| -> String {
        match Reference::parse(n) {
            Ok(r) if n.contains('/') || n.contains(':') => r.tag().unwrap_or_default().to_owned(),
            _ => n.to_owned(),
        }
    };
    let chosen: Vec<&Found> = match tag {
        None => found.iter().collect(),
        Some(t) => found
            .iter()
            .filter(|f| f.names.iter().any(|n| tag_of(n) == t || n == t))
            .collect(),
    };
    match chosen.as_slice() {
        [one] => store.image_for(&one.manifest, platform),
        [] => Err(Error::invalid(
            what,
            format!("it has no image tagged {:?}", tag.unwrap_or("")),
        )),
        _ => Err(Error::invalid(
            what,
            "it holds several images: name one with :TAG",
        )),
    }
}

/// Copies what a layout's index reaches into the store, verifying each blob. Each file is read
/// only if it is a regular file inside the layout, of the size its descriptor declares, and
/// that size fits the store (and, for an index, manifest or config, the document limit).
fn load_layout_dir(store: &Store, dir: &Path) -> Result<Vec<Found>> {
    let what = dir.display().to_string();
    let layout = LayoutDir::open(dir)?;
    if std::fs::symlink_metadata(layout.path_of("oci-layout")).is_err() {
        return Err(Error::invalid(
            &what,
            "a directory to load must be an OCI image layout (it has no oci-layout file)",
        ));
    }
    layout.open_regular("oci-layout")?;
    let index = Index::from_slice(&layout.read_document("index.json")?, &what)?;
    // Every blob a descriptor reaches, depth first, verifying each; with whether it is a JSON
    // document and how many indexes lie above it.
    // An index's entries are optional: a sparse layout (containerd's export of one platform,
    // a save of an index pulled for one) lacks the others.
    let mut pending: Vec<(Descriptor, bool, usize, bool)> = index
        .manifests
        .iter()
        .map(|d| (d.clone(), true, 0, false))
        .collect();
    let mut seen = HashSet::new();
    while let Some((d, document, depth, optional)) = pending.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let is_index = matches!(d.media_type.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST);
        let rel = format!("blobs/{}/{}", d.digest.algorithm(), d.digest.hex());
        let shown = layout.path_of(&rel).display().to_string();
        if optional
            && !store.has_blob(&d.digest)
            && std::fs::symlink_metadata(layout.path_of(&rel))
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            continue;
        }
        if is_index {
            check_depth(&d, depth + 1, &shown)?;
        }
        if document && d.size > layout::DOCUMENT_LIMIT {
            return Err(layout::too_large(&shown, d.size));
        }
        if !store.has_blob(&d.digest) {
            let (mut f, size) = layout.open_regular(&rel)?;
            if size != d.size {
                return Err(Error::SizeMismatch {
                    what: shown,
                    digest: d.digest.clone(),
                    expected: d.size,
                    actual: size,
                });
            }
            layout::ensure_room(store, d.size, &shown)?;
            store.ingest(&mut f, &d.digest, Some(d.size))?;
        }
        match d.media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => {
                let nested = Index::from_slice(&layout::read_document(store, &d, &what)?, &what)?;
                pending.extend(
                    nested
                        .manifests
                        .into_iter()
                        .map(|m| (m, true, depth + 1, true)),
                );
            }
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let m = Manifest::from_slice(&layout::read_document(store, &d, &what)?, &what)?;
                pending.push((m.config, true, depth, false));
                pending.extend(m.layers.into_iter().map(|l| (l, false, depth, false)));
            }
            _ => {}
        }
    }
    images_of_index(store, &index, &what)
}

/// Reads an OCI archive or a docker-archive, streaming blobs into the store as they come.
fn load_tar(store: &Store, plain: Box<dyn Read + '_>, path: &Path) -> Result<Vec<Found>> {
    let what = path.display().to_string();
    let mut archive = tar::Archive::new(plain);
    let mut index_json = None;
    let mut docker_manifest = None;
    let mut oci_layout = false;
    // Other files, by their path in the archive: their digest and size once stored.
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| Error::stream(format!("read {what} as a tar archive"), e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::stream(format!("read {what}"), e))?;
        let raw = entry
            .path()
            .map_err(|e| Error::stream(format!("read an entry name in {what}"), e))?
            .to_string_lossy()
            .into_owned();
        let name = raw.trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = target.to_string_lossy().into_owned();
                // Docker's legacy format links duplicate layers: resolve relative to the entry.
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                let resolved = if kind.is_symlink() {
                    normalize(&base.join(&target))
                } else {
                    target.trim_start_matches("./").to_owned()
                };
                links.insert(name, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let small = |entry: &mut tar::Entry<'_, _>| -> Result<Vec<u8>> {
            if entry.size() > layout::DOCUMENT_LIMIT {
                return Err(layout::too_large(
                    &format!("{name} in {what}"),
                    entry.size(),
                ));
            }
            let mut v = Vec::new();
            entry
                .read_to_end(&mut v)
                .map_err(|e| Error::stream(format!("read {name} in {what}"), e))?;
            Ok(v)
        };
        match name.as_str() {
            "oci-layout" => oci_layout = true,
            "index.json" => index_json = Some(small(&mut entry)?),
            "manifest.json" => docker_manifest = Some(small(&mut entry)?),
            "repositories" => {}
            _ => {
                if let Some(hex) = name.strip_prefix("blobs/sha256/")
                    && let Ok(d) = format!("sha256:{hex}").parse::<Digest>()
                {
                    let size = entry.size();
                    if !store.has_blob(&d) {
                        layout::ensure_room(store, size, &format!("{name} in {what}"))?;
                    }
                    store.ingest(&mut entry, &d, Some(size))?;
                    files.insert(name, (d, size));
                } else if name.ends_with("/json") || name.ends_with("/VERSION") {
                    // Docker's legacy per-layer metadata: not part of the image.
                } else {
                    layout::ensure_room(store, entry.size(), &format!("{name} in {what}"))?;
                    let mut w = store.blob_writer()?;
                    if let Err(e) = io::copy(&mut entry, &mut w) {
                        w.abort();
                        return Err(Error::stream(format!("read {name} in {what}"), e));
                    }
                    let stored = w.commit(None)?;
                    files.insert(name, stored);
                }
            }
        }
    }
    let lookup = |p: &str| -> Option<(Digest, u64)> {
        let p = p.trim_start_matches("./");
        let p = links.get(p).map_or(p, String::as_str);
        files.get(p).cloned()
    };
    if let (true, Some(bytes)) = (oci_layout, &index_json) {
        let index = Index::from_slice(bytes, &format!("index.json in {what}"))?;
        let mut found = images_of_index(store, &index, &what)?;
        // docker save writes both formats; where the layout names an image only by tag,
        // manifest.json's RepoTags are the better names.
        let repo_tags: BTreeMap<Digest, Vec<String>> = docker_manifest
            .as_deref()
            .and_then(|m| serde_json::from_slice::<Vec<DockerEntry>>(m).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((lookup(&e.config)?.0, e.repo_tags?)))
            .collect();
        for f in &mut found {
            if f.names.iter().any(|n| n.contains('/') || n.contains(':')) {
                continue;
            }
            let Ok(image) = store.image_for(&f.manifest, &Platform::host()) else {
                continue;
            };
            let config = store.image(&image)?.manifest.config.digest;
            if let Some(tags) = repo_tags.get(&config) {
                f.names = tags.clone();
            }
        }
        return Ok(found);
    }
    let Some(bytes) = docker_manifest else {
        return Err(Error::invalid(
            &what,
            "not an OCI archive (no oci-layout and index.json) nor a docker-archive (no manifest.json)",
        ));
    };
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: format!("manifest.json in {what}"),
            source,
        })?;
    let mut found = Vec::new();
    for e in entries {
        let missing = |p: &str| {
            Error::invalid(
                &what,
                format!("manifest.json names {p}, which is not in the archive"),
            )
        };
        let (config_digest, config_size) = lookup(&e.config).ok_or_else(|| missing(&e.config))?;
        let config_what = format!("{} in {what}", e.config);
        let config_desc = Descriptor {
            media_type: OCI_CONFIG.to_owned(),
            digest: config_digest,
            size: config_size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let config = ImageConfig::from_slice(
            &layout::read_document(store, &config_desc, &config_what)?,
            &config_what,
        )?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(Error::invalid(
                &what,
                "manifest.json and the config disagree on the number of layers",
            ));
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let (digest, size) = lookup(layer).ok_or_else(|| missing(layer))?;
            let mut f = store.open_blob(&digest)?;
            let mut head = [0u8; 4];
            let n = f.read(&mut head).at("read", store.blob_path(&digest))?;
            let compression = Compression::detect(&head[..n]);
            // The layer must be what the config says it is.
            let actual = if compression == Compression::None {
                digest.clone()
            } else {
                let mut r = compress::decompress(store.open_blob(&digest)?, compression)?;
                let mut h = HashingWriter::new(io::sink());
                io::copy(&mut r, &mut h)
                    .map_err(|e| Error::stream(format!("decompress layer {layer}"), e))?;
                h.finish().0
            };
            if actual != *diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {layer} (diff_id)"),
                    expected: diff_id.clone(),
                    actual,
                });
            }
            layers.push(Descriptor {
                media_type: compression.layer_media_type().to_owned(),
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
            });
        }
        // `docker save` writes its layers uncompressed: kept so here (a save back to a
        // docker-archive gives them as they came), and marked to be compressed when the image
        // leaves as an OCI image or for a registry, as a build's own layers are.
        let plain = layers
            .iter()
            .any(|l| l.media_type == Compression::None.layer_media_type());
        let mut manifest = Manifest::new(config_desc, layers);
        if plain {
            manifest.annotations.insert(
                crate::deferred::ANNOTATION.to_owned(),
                crate::deferred::mark(crate::compress::LayerCompression::new(
                    Compression::Gzip,
                    None,
                )),
            );
        }
        let bytes = manifest.to_bytes();
        let digest = store.put_blob(&bytes)?;
        found.push(Found {
            manifest: Descriptor {
                media_type: OCI_MANIFEST.to_owned(),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            names: e.repo_tags.unwrap_or_default(),
        });
    }
    Ok(found)
}

/// Lexically resolves `.` and `..` in an archive path.
fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::INDEX_WRITES;

    /// A store holding one image of one uncompressed layer.
    fn store_with_image() -> (tempfile::TempDir, Store, Descriptor) {
        let (dir, s) = crate::test_support::temp_store();
        let layer = b"not really a tar, but a blob all the same";
        let manifest = crate::test_support::one_layer_image(&s, None, layer);
        (dir, s, manifest)
    }

    /// One image under 5,000 names loads with every name, and index.json is written once.
    #[test]
    fn load_writes_the_index_once_for_all_names() {
        let (dir, from, manifest) = store_with_image();
        let images: Vec<ToSave> = (0..5000)
            .map(|i| ToSave {
                reference: Some(Reference::parse(&format!("many/img:{i}")).unwrap()),
                manifest: manifest.clone(),
            })
            .collect();
        let layout = dir.path().join("layout");
        save(&from, &images, SaveFormat::OciDir, &layout).unwrap();
        let into = Store::open(dir.path().join("into")).unwrap();
        let before = INDEX_WRITES.with(std::cell::Cell::get);
        let loaded = load(&into, &layout, None).unwrap();
        assert_eq!(INDEX_WRITES.with(std::cell::Cell::get) - before, 1);
        assert_eq!(loaded.len(), 5000);
        let tags = into.tags().unwrap();
        assert_eq!(tags.len(), 5000);
        assert!(tags.iter().all(|t| t.manifest.digest == manifest.digest));
    }
}
