//! The build cache: chained step keys, the records of what a step made, and the memo of file
//! content digests keyed by file metadata.
//!
//! A step's key hashes its parent step's key and, framed field by field, everything the step's
//! result depends on (see the callers in build.rs and run.rs). A record under the key holds the
//! layer the step made and its history entry; a hit adds that layer without running the step.
//! Records live in `<store>/buildcache/records/<key>.json`, the memo in
//! `<store>/buildcache/memo/` (see [`crate::memo`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_layers::image::{Descriptor, History};
use cairn_layers::{Digest, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result, io_err};
use crate::fsutil::{temp_name, write_atomic};

/// A step's cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key before any step: what a FROM chains from.
    pub fn root() -> Key {
        Key([0; 32])
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Key> {
        let bytes = hex::decode(text).ok()?;
        Some(Key(bytes.try_into().ok()?))
    }
}

/// Builds a key from named fields, each length-prefixed so that no two different field lists
/// hash alike (`a`,`bc` versus `ab`,`c`). It also keeps a [`Summary`] of the fields, so that a
/// later miss can say which input changed.
#[derive(Debug)]
pub struct KeyHasher {
    hash: Sha256,
    summary: Summary,
    /// The COPY entry the following fields describe: where its path starts in `names`, and
    /// the hash of its fields.
    entry: Option<(usize, Sha256)>,
    /// Closed entries: their paths, end to end, and each one's end and short hash. Strings
    /// and a sorted map are made only for a miss: a no-op rebuild of 20,000 files spent a
    /// tenth of its time on them.
    names: Vec<u8>,
    paths: Vec<(usize, usize, [u8; 8])>,
}

/// The inputs of a step, each as a short hash, by kind: what a miss is explained with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub parent: String,
    /// Environment variables by name.
    pub env: std::collections::BTreeMap<String, String>,
    /// Copied entries by destination path.
    pub paths: std::collections::BTreeMap<String, String>,
    /// Every other field: name and hash, in order.
    pub fields: Vec<(String, String)>,
}

fn short(bytes: &[u8]) -> String {
    crate::memo::hex(&Sha256::digest(bytes)[..8])
}

impl KeyHasher {
    pub fn new(kind: &str, parent: &Key) -> KeyHasher {
        let mut k = KeyHasher {
            hash: Sha256::new(),
            summary: Summary {
                parent: parent.hex(),
                ..Summary::default()
            },
            entry: None,
            names: Vec::new(),
            paths: Vec::new(),
        };
        k.frame("cairn-cache", b"1");
        k.frame("parent", &parent.0);
        k.field("kind", kind);
        k
    }

    fn frame(&mut self, name: &str, value: &[u8]) {
        for part in [name.as_bytes(), value] {
            self.hash.update((part.len() as u64).to_le_bytes());
            self.hash.update(part);
        }
    }

    pub fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut KeyHasher {
        let value = value.as_ref();
        self.frame(name, value);
        match name {
            "env" => {
                let text = String::from_utf8_lossy(value);
                let var = text.split_once('=').map_or(&*text, |(k, _)| k).to_owned();
                self.summary.env.insert(var, short(value));
            }
            "entry" => {
                self.close_entry();
                let mut h = Sha256::new();
                h.update(value);
                let start = self.names.len();
                self.names.extend_from_slice(value);
                self.entry = Some((start, h));
            }
            _ => match &mut self.entry {
                Some((_, h))
                    if matches!(name, "mode" | "file" | "symlink" | "type" | "archive") =>
                {
                    h.update(name.as_bytes());
                    h.update(value);
                }
                _ => {
                    self.close_entry();
                    self.summary.fields.push((name.to_owned(), short(value)));
                }
            },
        }
        self
    }

    fn close_entry(&mut self) {
        if let Some((start, h)) = self.entry.take() {
            let short: [u8; 32] = h.finalize().into();
            let mut first = [0u8; 8];
            first.copy_from_slice(&short[..8]);
            self.paths.push((start, self.names.len(), first));
        }
    }

    pub fn finish(self) -> Key {
        self.finish_with_summary().0
    }

    /// The key, and its inputs for explaining a later miss (built only when asked: a hit
    /// never needs them).
    pub fn finish_with_summary(mut self) -> (Key, SummaryParts) {
        self.close_entry();
        (
            Key(self.hash.finalize().into()),
            SummaryParts {
                summary: self.summary,
                names: self.names,
                paths: self.paths,
            },
        )
    }
}

/// A [`Summary`] not yet put together.
#[derive(Debug)]
pub struct SummaryParts {
    summary: Summary,
    names: Vec<u8>,
    paths: Vec<(usize, usize, [u8; 8])>,
}

impl SummaryParts {
    pub fn build(self) -> Summary {
        let mut summary = self.summary;
        let names = &self.names;
        // Collecting sorts once, and the last entry of a path wins, as inserting would.
        summary
            .paths
            .extend(self.paths.iter().map(|(start, end, short)| {
                (
                    String::from_utf8_lossy(&names[*start..*end]).into_owned(),
                    crate::memo::hex(short),
                )
            }));
        summary
    }
}

impl Summary {
    /// One line saying what differs from `before` (the same step's inputs last time).
    pub fn explain(
        &self,
        before: &Summary,
        args: &std::collections::BTreeMap<String, String>,
    ) -> String {
        if self.parent != before.parent {
            return "parent step changed".into();
        }
        let mut changed_paths: Vec<&str> = self
            .paths
            .iter()
            .filter(|(p, h)| before.paths.get(*p) != Some(*h))
            .map(|(p, _)| p.as_str())
            .chain(
                before
                    .paths
                    .keys()
                    .filter(|p| !self.paths.contains_key(*p))
                    .map(String::as_str),
            )
            .collect();
        if !changed_paths.is_empty() {
            changed_paths.sort();
            changed_paths.dedup();
            let n = changed_paths.len();
            let shown: Vec<&str> = changed_paths.iter().take(3).copied().collect();
            let more = if n > 3 { ", …" } else { "" };
            let noun = if n == 1 { "file" } else { "files" };
            return format!("{n} {noun} changed ({}{more})", shown.join(", "));
        }
        let mut vars: Vec<&String> = self
            .env
            .iter()
            .filter(|(k, v)| before.env.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(before.env.keys().filter(|k| !self.env.contains_key(*k)))
            .collect();
        vars.dedup();
        if let Some(v) = vars.first() {
            let what = if args.contains_key(*v) {
                "build arg"
            } else {
                "environment variable"
            };
            return format!("{what} {v} changed");
        }
        let names: Vec<&str> = self
            .fields
            .iter()
            .zip(
                before
                    .fields
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .filter(|(a, b)| Some(*a) != *b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        match names.first() {
            Some(n) => format!("{n} changed"),
            None if self.fields.len() != before.fields.len() => "inputs changed".into(),
            None => "the earlier result is gone from the store".into(),
        }
    }
}

/// What a step made: its layer (none for a step that changed nothing) and its history entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub layer: Option<LayerRecord>,
    pub history: History,
    /// The directories the layer adds, with their metadata (COPY's destination rules and
    /// the parents it writes read them). A record from before they had metadata does not
    /// parse, and is a miss.
    #[serde(default)]
    pub dirs: Vec<(String, cairn_layers::listing::DirMeta)>,
    /// The layer's directories are read from its own tar headers (a RUN's), not `dirs`.
    #[serde(default)]
    pub listed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// The cache of one store, shared by a build's stages.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Content digests of context files, by metadata.
    memo: crate::memo::FileMemo,
    /// Blobs of imported caches (`--cache-from`), fetched into the store when a hit needs one.
    external: Mutex<HashMap<Digest, BlobSource>>,
    /// What this build used or made, by stage, for `--cache-to`.
    touched: Mutex<Vec<(Key, Record, usize)>>,
    touched_image: Mutex<Option<(Key, Descriptor)>>,
}

/// Where `--cache-from` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheImport {
    /// An OCI layout that `--cache-to type=local` wrote.
    Local(PathBuf),
    /// An image with an inline cache: a name in the store, or an archive or layout to load.
    Image(String),
    /// A cache manifest in a registry (`--cache-to type=registry`), or an image there with an
    /// inline cache.
    Registry(cairn_layers::Reference),
}

/// Where `--cache-to` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheExport {
    /// An OCI layout directory; `max` keeps every stage's steps, not just the target's.
    Local { dir: PathBuf, max: bool },
    /// The target stage's records in the built image's config.
    Inline,
    /// A cache manifest pushed to a registry; `max` as for `Local`.
    Registry {
        reference: cairn_layers::Reference,
        max: bool,
    },
}

/// The image config field an inline cache lives in.
pub const INLINE_FIELD: &str = "cairn.cache.v1";

/// The media type of the config blob of an exported cache: the records, as JSON.
pub const CACHE_CONFIG: &str = "application/vnd.cairn.cache.config.v1+json";

/// An exported cache's records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Exported {
    records: Vec<ExportedRecord>,
    #[serde(default)]
    images: Vec<ExportedImage>,
    /// In an inline cache: the key of the image that carries it, which stands for that image
    /// once imported (its manifest cannot name itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportedRecord {
    key: String,
    record: Record,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportedImage {
    key: String,
    manifest: Descriptor,
    /// The image's manifest and config themselves, small enough to travel in the records, so
    /// a cache in a registry (which holds only the blobs its manifest names) keeps them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_json: Option<String>,
}

/// Where an imported cache's blob comes from when a hit needs it.
#[derive(Clone)]
enum BlobSource {
    File(PathBuf),
    /// Fetched into the store (and verified) by the caller's closure: from a registry.
    Remote(RemoteFetch),
}

/// Puts a blob in the store from elsewhere; false when it could not.
pub type RemoteFetch = std::sync::Arc<dyn Fn(&Store, &Digest) -> bool + Send + Sync>;

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobSource::File(p) => write!(f, "File({})", p.display()),
            BlobSource::Remote(_) => f.write_str("Remote"),
        }
    }
}

impl Cache {
    pub fn open(store: &Store) -> Cache {
        let dir = store.root().join("buildcache");
        Cache {
            memo: crate::memo::FileMemo::new(dir.clone()),
            dir,
            external: Mutex::default(),
            touched: Mutex::default(),
            touched_image: Mutex::default(),
        }
    }

    /// Notes a record this build used or made, for `--cache-to`.
    pub fn touch(&self, key: &Key, record: &Record, stage: usize) {
        if let Ok(mut t) = self.touched.lock() {
            t.push((*key, record.clone(), stage));
        }
    }

    /// A blob the store lacks, copied in (and checked) from an imported cache if one has it.
    fn fetch(&self, store: &Store, digest: &Digest) -> bool {
        if store.has_blob(digest) {
            return true;
        }
        let Some(source) = self
            .external
            .lock()
            .ok()
            .and_then(|e| e.get(digest).cloned())
        else {
            return false;
        };
        let path = match source {
            BlobSource::File(path) => path,
            BlobSource::Remote(fetch) => return fetch(store, digest),
        };
        let Ok(mut src) = std::fs::File::open(&path) else {
            return false;
        };
        let Ok(mut w) = store.blob_writer() else {
            return false;
        };
        if std::io::copy(&mut src, &mut w).is_err() {
            w.abort();
            return false;
        }
        w.commit(Some((digest, None))).is_ok()
    }

    /// Reads the caches `--cache-from` names (OCI layouts that `--cache-to` wrote): their
    /// records join the store's, and their blobs are fetched only when a hit needs one.
    pub fn import(&self, store: &Store, src: &Path) -> Result<()> {
        let bad = |what: String| crate::error::Error::Instruction {
            instruction: "--cache-from".into(),
            message: what,
        };
        let read = |p: PathBuf| std::fs::read(&p).map_err(io_err("read", &p));
        let index = cairn_layers::image::Index::from_slice(
            &read(src.join("index.json"))?,
            &src.join("index.json").display().to_string(),
        )?;
        let blob = |d: &Digest| src.join("blobs/sha256").join(d.hex());
        let Some(m) = index.manifests.first() else {
            return Err(bad(format!("{}: no cache in the layout", src.display())));
        };
        let manifest = cairn_layers::image::Manifest::from_slice(
            &read(blob(&m.digest))?,
            &format!("cache manifest in {}", src.display()),
        )?;
        if manifest.config.media_type != CACHE_CONFIG {
            return Err(bad(format!("{}: not a cairn cache", src.display())));
        }
        let config_bytes = read(blob(&manifest.config.digest))?;
        if Digest::of(&config_bytes) != manifest.config.digest {
            return Err(bad(format!(
                "{}: its records do not match their digest",
                src.display()
            )));
        }
        let exported: Exported = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("{}: {e}", src.display())))?;
        if let Ok(mut ext) = self.external.lock() {
            let entries = std::fs::read_dir(src.join("blobs/sha256"))
                .map_err(io_err("read", &src.join("blobs/sha256")))?;
            for e in entries.flatten() {
                if let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse() {
                    ext.insert(d, BlobSource::File(e.path()));
                }
            }
        }
        self.import_records(store, exported)
    }

    /// Reads a cache that [`Cache::export_to_store`] made and a registry holds: `config` is
    /// its records; `fetch` brings a layer into the store when a hit needs it.
    pub fn import_remote(
        &self,
        store: &Store,
        config: &[u8],
        layers: &[Descriptor],
        fetch: RemoteFetch,
        what: &str,
    ) -> Result<()> {
        let exported: Exported =
            serde_json::from_slice(config).map_err(|e| Error::Instruction {
                instruction: "--cache-from".into(),
                message: format!("{what}: its records are unreadable: {e}"),
            })?;
        if let Ok(mut ext) = self.external.lock() {
            for l in layers {
                ext.insert(l.digest.clone(), BlobSource::Remote(fetch.clone()));
            }
        }
        self.import_records(store, exported)
    }

    /// Puts what this build used or made in the store as a manifest (the records as its
    /// config, the layers as its layers) for pushing to a registry; returns its descriptor.
    pub fn export_to_store(&self, store: &Store, max: bool, target: usize) -> Result<Descriptor> {
        let (exported, layers, _) = self.collect(Some(store), max, target);
        let config_bytes = serde_json::to_vec(&exported).unwrap_or_default();
        let config = Descriptor {
            media_type: CACHE_CONFIG.into(),
            digest: store.put_blob(&config_bytes)?,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let manifest = cairn_layers::image::Manifest::new(config, layers).to_bytes();
        Ok(Descriptor {
            media_type: cairn_layers::image::OCI_MANIFEST.into(),
            digest: store.put_blob(&manifest)?,
            size: manifest.len() as u64,
            platform: None,
            annotations: Default::default(),
        })
    }

    /// Reads the records an image carries in its config (`--cache-to type=inline` put them
    /// there); its layers are the records' layers. Returns whether it had any.
    pub fn import_image(&self, store: &Store, manifest: &Descriptor) -> Result<bool> {
        let image = store.image(manifest)?;
        let Some(inline) = image.config.extra.get(INLINE_FIELD) else {
            return Ok(false);
        };
        let exported: Exported =
            serde_json::from_value(inline.clone()).map_err(|e| Error::Instruction {
                instruction: "--cache-from".into(),
                message: format!("image {}: its inline cache is unreadable: {e}", image.id()),
            })?;
        if let Some(key) = exported.image_key.as_deref().and_then(Key::from_hex)
            && !self.image_path(&key).exists()
        {
            self.write_image_record(&key, manifest)?;
        }
        self.import_records(store, exported)?;
        Ok(true)
    }

    fn import_records(&self, store: &Store, exported: Exported) -> Result<()> {
        for r in exported.records {
            let Some(key) = Key::from_hex(&r.key) else {
                continue;
            };
            if !self.record_path(&key).exists() {
                self.put(&key, &r.record)?;
            }
        }
        for i in exported.images {
            let Some(key) = Key::from_hex(&i.key) else {
                continue;
            };
            if self.image_path(&key).exists() {
                continue;
            }
            // Stored only when they are what the record says; get_image checks the rest.
            let m = i
                .manifest_json
                .filter(|m| Digest::of(m.as_bytes()) == i.manifest.digest);
            if let Some(m) = m {
                let config = cairn_layers::image::Manifest::from_slice(m.as_bytes(), "manifest")
                    .ok()
                    .map(|parsed| parsed.config.digest);
                if let (Some(c), Some(want)) = (i.config_json, config)
                    && Digest::of(c.as_bytes()) == want
                {
                    store.put_blob(c.as_bytes())?;
                }
                store.put_blob(m.as_bytes())?;
            }
            self.write_image_record(&key, &i.manifest)?;
        }
        Ok(())
    }

    /// The records of the target stage's steps, for the image's config: an inline cache. Only
    /// the target's, since their layers are the image's own; no image record, since the image
    /// holds this very value.
    pub fn inline(&self, target: usize, image_key: &Key) -> serde_json::Value {
        let (mut exported, _, _) = self.collect(None, false, target);
        exported.image_key = Some(image_key.hex());
        serde_json::to_value(exported).unwrap_or_default()
    }

    /// What this build used or made, the layers those records name, and other blobs to keep
    /// with them (the final image's manifest and config, given the store).
    fn collect(
        &self,
        store: Option<&Store>,
        max: bool,
        target: usize,
    ) -> (Exported, Vec<Descriptor>, Vec<Digest>) {
        let touched = self.touched.lock().map(|t| t.clone()).unwrap_or_default();
        let mut exported = Exported::default();
        let mut layers: Vec<Descriptor> = Vec::new();
        let mut extra: Vec<Digest> = Vec::new();
        for (key, record, stage) in touched {
            if !max && stage != target {
                continue;
            }
            if let Some(l) = &record.layer
                && !layers.iter().any(|d| d.digest == l.descriptor.digest)
            {
                layers.push(l.descriptor.clone());
            }
            exported.records.push(ExportedRecord {
                key: key.hex(),
                record,
            });
        }
        let image = match store {
            Some(_) => self.touched_image.lock().ok().and_then(|t| t.clone()),
            None => None,
        };
        if let (Some(store), Some((key, manifest))) = (store, image) {
            if let Ok(image) = store.image(&manifest) {
                extra.push(manifest.digest.clone());
                extra.push(image.manifest.config.digest.clone());
                for l in &image.manifest.layers {
                    if !layers.iter().any(|d| d.digest == l.digest) {
                        layers.push(l.clone());
                    }
                }
            }
            let text = |d: &Digest| {
                store
                    .read_blob(d)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            };
            let config_json = store
                .image(&manifest)
                .ok()
                .and_then(|i| text(&i.manifest.config.digest));
            exported.images.push(ExportedImage {
                key: key.hex(),
                manifest_json: text(&manifest.digest),
                config_json,
                manifest,
            });
        }
        (exported, layers, extra)
    }

    /// Writes what this build used or made (`max`: every stage's steps; else the target's
    /// only) to `dest` as an OCI layout: the records in the config blob, the layers as layers.
    pub fn export(&self, store: &Store, dest: &Path, max: bool, target: usize) -> Result<()> {
        let (exported, layers, extra) = self.collect(Some(store), max, target);
        let blobs = dest.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        let copy = |d: &Digest| -> Result<()> {
            let to = blobs.join(d.hex());
            if to.exists() {
                return Ok(());
            }
            let from = store.blob_path(d);
            store.wait_blob(d)?;
            let tmp = blobs.join(temp_name(d.hex()));
            std::fs::copy(&from, &tmp).map_err(io_err("copy", &from))?;
            std::fs::rename(&tmp, &to).map_err(io_err("rename into place", &to))
        };
        for d in layers.iter().map(|l| &l.digest).chain(&extra) {
            copy(d)?;
        }
        let put = |bytes: &[u8]| -> Result<Digest> {
            let d = Digest::of(bytes);
            let to = blobs.join(d.hex());
            std::fs::write(&to, bytes).map_err(io_err("write", &to))?;
            Ok(d)
        };
        let config_bytes = serde_json::to_vec(&exported).unwrap_or_default();
        let config = Descriptor {
            media_type: CACHE_CONFIG.into(),
            digest: put(&config_bytes)?,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        };
        let manifest = cairn_layers::image::Manifest::new(config, layers).to_bytes();
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.ref.name".to_owned(),
            "cache".to_owned(),
        );
        let index = cairn_layers::image::Index::new(vec![Descriptor {
            media_type: cairn_layers::image::OCI_MANIFEST.into(),
            digest: put(&manifest)?,
            size: manifest.len() as u64,
            platform: None,
            annotations,
        }]);
        let layout = dest.join("oci-layout");
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err("write", &layout))?;
        let index_path = dest.join("index.json");
        let tmp = dest.join(temp_name("index"));
        std::fs::write(&tmp, index.to_bytes()).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &index_path).map_err(io_err("rename into place", &index_path))
    }

    fn record_path(&self, key: &Key) -> PathBuf {
        self.dir.join("records").join(format!("{}.json", key.hex()))
    }

    /// The record under `key`, if there is one whose layer blob is in the store intact enough
    /// to be named (a record that does not parse, or names a missing blob, is a miss).
    pub fn get(&self, store: &Store, key: &Key) -> Option<Record> {
        let bytes = std::fs::read(self.record_path(key)).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        if let Some(l) = &record.layer {
            let digest = &l.descriptor.digest;
            if !self.fetch(store, digest) {
                return None;
            }
            let path = store.blob_path(digest);
            let blob = std::fs::metadata(&path).ok()?;
            if blob.len() != l.descriptor.size {
                return None;
            }
            // A blob written to after its record was made is read again: a hit never uses
            // bytes that no longer match their digest.
            let recorded = std::fs::metadata(self.record_path(key))
                .ok()?
                .modified()
                .ok()?;
            if blob.modified().ok()? > recorded
                && crate::memo::sha256_file(&path).ok().map(hex::encode)? != digest.hex()
            {
                return None;
            }
        }
        Some(record)
    }

    /// Stores `record` under `key` (temp file, then rename: never half a record).
    pub fn put(&self, key: &Key, record: &Record) -> Result<()> {
        write_json(&self.record_path(key), record)
    }

    fn summary_path(&self, position: &str) -> PathBuf {
        let name = hex::encode(&Sha256::digest(position.as_bytes())[..16]);
        self.dir.join("steps").join(format!("{name}.json"))
    }

    /// The inputs the step at `position` (Dockerfile, stage, step) had last time.
    pub fn last_summary(&self, position: &str) -> Option<Summary> {
        let bytes = std::fs::read(self.summary_path(position)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps the inputs of the step at `position`, which is about to run; they become its
    /// last summary only when [`Cache::confirm_summary`] says it succeeded. A step that
    /// failed has no earlier result to explain a miss against.
    pub fn put_summary(&self, position: &str, summary: &Summary) -> Result<()> {
        write_json(
            &self.summary_path(position).with_extension("pending"),
            summary,
        )
    }

    /// The step at `position` succeeded: the inputs [`Cache::put_summary`] kept are its
    /// last ones now.
    pub fn confirm_summary(&self, position: &str) -> Result<()> {
        let path = self.summary_path(position);
        match std::fs::rename(path.with_extension("pending"), &path) {
            // A hit, or a step run again by another build meanwhile: nothing to confirm.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|source| Error::Io {
                action: "rename",
                path,
                source,
            }),
        }
    }

    /// The blob the step at `position` made last time, to copy unchanged deflated chunks
    /// from when it runs again.
    pub fn last_layer(&self, position: &str) -> Option<Digest> {
        let bytes = std::fs::read(self.summary_path(position).with_extension("layer")).ok()?;
        serde_json::from_slice::<String>(&bytes).ok()?.parse().ok()
    }

    pub fn put_last_layer(&self, position: &str, blob: &Digest) -> Result<()> {
        write_json(
            &self.summary_path(position).with_extension("layer"),
            &blob.to_string(),
        )
    }

    /// A layer's entries from its tar headers, kept here by blob digest: an image's base is
    /// read once.
    pub fn layer_listing(
        &self,
        store: &Store,
        layer: &Descriptor,
    ) -> Result<cairn_layers::listing::Listing> {
        use cairn_layers::compress::{self, Compression};
        use cairn_layers::listing::Listing;
        let file = self.dir.join("listings").join(layer.digest.hex());
        if let Some(listing) = std::fs::read(&file)
            .ok()
            .and_then(|b| Listing::from_bytes(&b))
        {
            return Ok(listing);
        }
        let c = Compression::from_media_type(&layer.media_type)
            .ok_or_else(|| cairn_layers::Error::MediaType(layer.media_type.clone()))?;
        let listing = Listing::read(compress::decompress(store.open_blob(&layer.digest)?, c)?)?;
        // A listing that cannot be kept is read again next time.
        let _ = write_atomic(&file, &listing.to_bytes());
        Ok(listing)
    }

    fn image_path(&self, key: &Key) -> PathBuf {
        self.dir.join("images").join(format!("{}.json", key.hex()))
    }

    /// The image a build whose every step hit made before, with its config, if its manifest
    /// is still in the store.
    pub fn get_image(
        &self,
        store: &Store,
        key: &Key,
    ) -> Option<(Descriptor, cairn_layers::image::ImageConfig)> {
        let bytes = std::fs::read(self.image_path(key)).ok()?;
        let manifest: Descriptor = serde_json::from_slice(&bytes).ok()?;
        if !self.fetch(store, &manifest.digest) {
            return None;
        }
        let m = cairn_layers::image::Manifest::from_slice(
            &store.read_blob(&manifest.digest).ok()?,
            "manifest",
        )
        .ok()?;
        if !self.fetch(store, &m.config.digest) {
            return None;
        }
        let image = store.image(&manifest).ok()?;
        if !image
            .manifest
            .layers
            .iter()
            .all(|l| self.fetch(store, &l.digest))
        {
            return None;
        }
        if let Ok(mut t) = self.touched_image.lock() {
            *t = Some((*key, manifest.clone()));
        }
        Some((manifest, image.config))
    }

    /// Records the image a build made under its final key (and notes it for `--cache-to`).
    pub fn put_image(&self, key: &Key, manifest: &Descriptor) -> Result<()> {
        if let Ok(mut t) = self.touched_image.lock() {
            *t = Some((*key, manifest.clone()));
        }
        self.write_image_record(key, manifest)
    }

    fn write_image_record(&self, key: &Key, manifest: &Descriptor) -> Result<()> {
        write_json(&self.image_path(key), manifest)
    }

    /// Remembers content digests of the files under `root` (a context directory, absolute)
    /// from build to build; reading what earlier builds learned starts now, on its own thread.
    pub fn watch(&self, root: &Path) {
        self.memo.watch(root);
    }

    /// The hex sha256 of a file's content, from the memo when the file is under a watched
    /// directory and its inode, size, mtime and ctime are what they were.
    pub fn file_digest(&self, path: &Path, meta: &std::fs::Metadata) -> Result<String> {
        Ok(crate::memo::hex(&self.file_sha256(path, meta)?))
    }

    /// [`Cache::file_digest`] as bytes.
    pub fn file_sha256(&self, path: &Path, meta: &std::fs::Metadata) -> Result<[u8; 32]> {
        self.memo.digest(path, meta).map_err(io_err("read", path))
    }

    /// Writes the memo back when it learned something.
    pub fn save(&self) -> Result<()> {
        self.memo
            .save()
            .map_err(io_err("write", &self.dir.join("memo")))
    }
}

/// Writes `value` as JSON at `path` through a temp file and a rename: never half a file.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    write_atomic(path, &bytes).map_err(io_err("write", path))
}

/// What `cairn prune` does to the build cache.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// Every record goes.
    pub all: bool,
    /// Records unused for longer than this go.
    pub unused_for: Option<std::time::Duration>,
    /// Records go, least recently used first, until what only the cache keeps is this small.
    pub keep_storage: Option<u64>,
}

/// What a cache prune removed.
#[derive(Debug, Clone, Default)]
pub struct CachePruned {
    pub records: u64,
    pub store: cairn_layers::store::PruneReport,
}

impl Cache {
    /// Evicts records by `policy` (and every record whose blob is gone), then prunes the store
    /// keeping what tags reach and what the remaining records need.
    pub fn prune(&self, store: &Store, policy: &PrunePolicy) -> Result<CachePruned> {
        let mut out = CachePruned::default();
        let now = std::time::SystemTime::now();
        // (last use, path, record) of every record that parses.
        let mut records = Vec::new();
        let dir = self.dir.join("records");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            let used = e.metadata().and_then(|m| m.modified()).unwrap_or(now);
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            let usable = parsed.as_ref().is_some_and(|r| {
                r.layer
                    .as_ref()
                    .is_none_or(|l| store.has_blob(&l.descriptor.digest))
            });
            let too_old = policy
                .unused_for
                .is_some_and(|d| now.duration_since(used).unwrap_or_default() > d);
            match parsed {
                Some(r) if usable && !policy.all && !too_old => records.push((used, path, r)),
                _ => {
                    let _ = std::fs::remove_file(&path);
                    out.records += 1;
                }
            }
        }
        if let Some(limit) = policy.keep_storage {
            // Oldest first; a blob counts once however many records name it.
            records.sort_by_key(|(used, _, _)| *used);
            // How many kept records name each blob, and the bytes of the blobs named at all.
            let mut users: HashMap<Digest, (usize, u64)> = HashMap::new();
            for (_, _, r) in &records {
                if let Some(l) = &r.layer {
                    users
                        .entry(l.descriptor.digest.clone())
                        .or_insert((0, l.descriptor.size))
                        .0 += 1;
                }
            }
            let mut total: u64 = users.values().map(|(_, size)| size).sum();
            let mut evicted = 0;
            for (_, path, r) in &records {
                if total <= limit {
                    break;
                }
                let _ = std::fs::remove_file(path);
                out.records += 1;
                evicted += 1;
                if let Some(l) = &r.layer
                    && let Some((n, size)) = users.get_mut(&l.descriptor.digest)
                {
                    *n -= 1;
                    if *n == 0 {
                        total -= *size;
                    }
                }
            }
            records.drain(..evicted);
        }
        let mut blobs = std::collections::BTreeSet::new();
        let mut diff_ids = std::collections::BTreeSet::new();
        for (_, _, r) in &records {
            if let Some(l) = &r.layer {
                blobs.insert(l.descriptor.digest.clone());
                diff_ids.insert(l.diff_id.clone());
            }
        }
        // The images of full hits go with the cache unless a tag keeps them; otherwise only
        // their manifests and configs are kept here: their layers stay as long as the step
        // records that made them (a full hit whose layers went is an ordinary build again).
        if policy.all {
            let _ = std::fs::remove_dir_all(self.dir.join("images"));
        } else {
            for e in std::fs::read_dir(self.dir.join("images"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(m) = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok())
                {
                    blobs.insert(m.digest.clone());
                    if let Ok(img) = store.image(&m) {
                        blobs.insert(img.manifest.config.digest.clone());
                    }
                }
            }
        }
        out.store = store.prune_keeping(&blobs, &diff_ids)?;
        Ok(out)
    }

    /// Marks the record under `key` used now (prune evicts the least recently used).
    pub fn mark_used(&self, key: &Key) {
        if let Ok(f) = std::fs::File::options()
            .append(true)
            .open(self.record_path(key))
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
}

/// Reads a registry cache into `cache`: a cache manifest (its layers fetched when a hit needs
/// them), or an image with an inline cache (pulled). False when the registry has nothing there.
pub fn import_registry(
    store: &Store,
    cache: &Cache,
    reference: &cairn_layers::Reference,
    registry: &cairn_layers::registry::RegistryOptions,
    progress: &(dyn Fn(crate::progress::Event) + Sync),
) -> Result<bool> {
    use cairn_layers::registry::{self, Client};
    let what = reference.familiar();
    let failed = |e: cairn_layers::Error| Error::Instruction {
        instruction: "--cache-from".into(),
        message: format!("{what}: {e}"),
    };
    let quiet = |_: registry::Event| {};
    let endpoints = registry.config.endpoints(reference, true).map_err(failed)?;
    let Some(ep) = endpoints.into_iter().next() else {
        return Ok(false);
    };
    let client = std::sync::Arc::new(Client::for_endpoint(&ep, registry, false).map_err(failed)?);
    let target = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let (bytes, media_type, _) = match client.get_manifest(&target, &quiet) {
        Ok(m) => m,
        Err(cairn_layers::Error::Registry { status: 404, .. }) => return Ok(false),
        Err(e) => return Err(failed(e)),
    };
    let manifest = registry::is_manifest(&media_type)
        .then(|| cairn_layers::image::Manifest::from_slice(&bytes, &what).ok())
        .flatten();
    match manifest {
        Some(m) if m.config.media_type == CACHE_CONFIG => {
            client
                .fetch_blob(store, &m.config.digest, Some(m.config.size), &quiet)
                .map_err(failed)?;
            let config = store.read_blob(&m.config.digest)?;
            let sizes: HashMap<Digest, u64> = m
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect();
            let remote = std::sync::Arc::clone(&client);
            let fetch: RemoteFetch = std::sync::Arc::new(move |store: &Store, d: &Digest| {
                remote
                    .fetch_blob(store, d, sizes.get(d).copied(), &|_| {})
                    .is_ok()
            });
            cache.import_remote(store, &config, &m.layers, fetch, &what)?;
            Ok(true)
        }
        // An image: its inline cache, if it has one, and its layers with it.
        _ => {
            let image = registry::pull(store, reference, registry, &|_| {}).map_err(failed)?;
            let found = cache.import_image(store, &image)?;
            if !found {
                progress(crate::progress::Event::Warning(format!(
                    "--cache-from {what}: the image has no inline cache"
                )));
            }
            Ok(true)
        }
    }
}

/// The content digests of `files`, in order: the memo's where the files are as they were,
/// the rest read on every core, largest first so one big file does not end up last.
pub fn file_digests(cache: &Cache, files: &[(&Path, &std::fs::Metadata)]) -> Result<Vec<[u8; 32]>> {
    use rayon::prelude::*;
    let known = cache.memo.lookup(files);
    let mut unknown: Vec<usize> = (0..files.len()).filter(|&i| known[i].is_none()).collect();
    unknown.sort_by_key(|&i| std::cmp::Reverse(files[i].1.len()));
    let read: Vec<(usize, [u8; 32])> = unknown
        .par_iter()
        .with_max_len(1)
        .map(|&i| Ok((i, cache.file_sha256(files[i].0, files[i].1)?)))
        .collect::<Result<_>>()?;
    let mut out: Vec<[u8; 32]> = known.into_iter().map(Option::unwrap_or_default).collect();
    for (i, d) in read {
        out[i] = d;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_frame_their_fields() {
        let k = |fields: &[(&str, &str)]| {
            let mut h = KeyHasher::new("RUN", &Key::root());
            for (n, v) in fields {
                h.field(n, v);
            }
            h.finish()
        };
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Fields<'_>, Fields<'_>)] = &[
            (&[("a", "bc")], &[("ab", "c")]),
            (&[("x", "1"), ("y", "2")], &[("x", "12")]),
            (&[("x", "")], &[]),
            (
                &[("env", "A=1"), ("env", "B=2")],
                &[("env", "B=2"), ("env", "A=1")],
            ),
        ];
        for (a, b) in cases {
            assert_ne!(k(a), k(b), "{a:?} vs {b:?}");
        }
        assert_eq!(k(&[("a", "b")]), k(&[("a", "b")]));
        let other_parent = {
            let mut h = KeyHasher::new("RUN", &k(&[("p", "1")]));
            h.field("a", "b");
            h.finish()
        };
        assert_ne!(other_parent, k(&[("a", "b")]));
    }

    #[test]
    fn the_memo_reads_a_file_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let cache = Cache::open(&store);
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        cache.watch(&ctx);
        let f = ctx.join("f");
        std::fs::write(&f, "one").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let d1 = cache.file_digest(&f, &m).unwrap();
        assert_eq!(d1, hex::encode(Sha256::digest(b"one")));
        assert_eq!(cache.file_digest(&f, &m).unwrap(), d1);
        std::fs::write(&f, "two!").unwrap();
        let m2 = std::fs::metadata(&f).unwrap();
        assert_eq!(
            cache.file_digest(&f, &m2).unwrap(),
            hex::encode(Sha256::digest(b"two!"))
        );
        cache.save().unwrap();
        let again = Cache::open(&store);
        again.watch(&ctx);
        assert_eq!(
            again.file_digest(&f, &m2).unwrap(),
            hex::encode(Sha256::digest(b"two!"))
        );
    }
}
