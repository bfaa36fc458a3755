//! Caches moved between builds: `--cache-from` imports (an OCI layout, an image's inline
//! cache, a registry) and `--cache-to` exports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cairn_layers::image::Descriptor;
use cairn_layers::{Digest, Store};
use serde::{Deserialize, Serialize};

use super::key::Key;
use super::mounts::MountExport;
use super::records::{BlobSource, Cache, ExportedMount, Record, RemoteFetch};
pub use crate::error::CacheError;
use crate::error::{Error, Result, io_err};
use crate::fsutil::temp_name;

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
    /// An OCI layout directory; `max` keeps every stage's steps, not just the target's;
    /// `mounts` the build's cache mounts too.
    Local {
        dir: PathBuf,
        max: bool,
        mounts: Option<MountExport>,
    },
    /// The target stage's records in the built image's config.
    Inline,
    /// A cache manifest pushed to a registry; `max` and `mounts` as for `Local`.
    Registry {
        reference: cairn_layers::Reference,
        max: bool,
        mounts: Option<MountExport>,
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
    /// Cache mounts (`mounts=true`), their blobs among the manifest's layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<ExportedMount>,
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

impl Cache {
    /// Reads the caches `--cache-from` names (OCI layouts that `--cache-to` wrote): their
    /// records join the store's, and their blobs are fetched only when a hit needs one.
    pub fn import(&self, store: &Store, src: &Path) -> Result<()> {
        let bad = |reason| CacheError::NotACache {
            path: src.to_path_buf(),
            reason,
        };
        let read = |p: PathBuf| std::fs::read(&p).map_err(io_err("read", &p));
        let index = cairn_layers::image::Index::from_slice(
            &read(src.join("index.json"))?,
            &src.join("index.json").display().to_string(),
        )?;
        let blob = |d: &Digest| src.join("blobs/sha256").join(d.hex());
        let Some(m) = index.manifests.first() else {
            return Err(bad("no cache in the layout").into());
        };
        let manifest = cairn_layers::image::Manifest::from_slice(
            &read(blob(&m.digest))?,
            &format!("cache manifest in {}", src.display()),
        )?;
        if manifest.config.media_type != CACHE_CONFIG {
            return Err(bad("not a cairn cache").into());
        }
        let config_bytes = read(blob(&manifest.config.digest))?;
        if Digest::of(&config_bytes) != manifest.config.digest {
            return Err(bad("its records do not match their digest").into());
        }
        let exported: Exported =
            serde_json::from_slice(&config_bytes).map_err(|source| CacheError::Records {
                what: src.display().to_string(),
                source,
            })?;
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
            serde_json::from_slice(config).map_err(|source| CacheError::Records {
                what: format!("{what}: its records are unreadable"),
                source,
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
    pub fn export_to_store(
        &self,
        store: &Store,
        max: bool,
        target: usize,
        mounts: Vec<ExportedMount>,
    ) -> Result<Descriptor> {
        let (exported, layers, _) = self.collect(Some(store), max, target, mounts);
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
            serde_json::from_value(inline.clone()).map_err(|source| CacheError::Records {
                what: format!("image {}: its inline cache is unreadable", image.id()),
                source,
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
        self.import_mounts(exported.mounts);
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
        let (mut exported, _, _) = self.collect(None, false, target, Vec::new());
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
        mounts: Vec<ExportedMount>,
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
        for m in &mounts {
            if !layers.iter().any(|d| d.digest == m.layer.digest) {
                layers.push(m.layer.clone());
            }
        }
        exported.mounts = mounts;
        (exported, layers, extra)
    }

    /// Writes what this build used or made (`max`: every stage's steps; else the target's
    /// only) to `dest` as an OCI layout: the records in the config blob, the layers as layers.
    /// `mounts` (from [`Cache::export_mounts`]) go with them.
    pub fn export(
        &self,
        store: &Store,
        dest: &Path,
        max: bool,
        target: usize,
        mounts: Vec<ExportedMount>,
    ) -> Result<()> {
        let (exported, layers, extra) = self.collect(Some(store), max, target, mounts);
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
    let failed = |source| -> Error {
        CacheError::Fetch {
            image: what.clone(),
            source,
        }
        .into()
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
