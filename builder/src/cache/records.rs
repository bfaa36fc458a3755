//! The cache of one store and what it keeps there: step records, summaries of steps' inputs,
//! layer listings, the images of full hits, and the memo of context files' digests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_layers::image::{Descriptor, History};
use cairn_layers::{Digest, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::key::{Key, Summary};
use crate::error::{Error, Result, io_err};
use crate::fsutil::write_atomic;

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

/// One cache mount in an exported cache's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedMount {
    /// The directory's name under the store's `cache/`: 32 hex digits.
    pub key: String,
    /// The mount's `id` (its target when it has none), for messages.
    pub id: String,
    /// The directory as a layer blob.
    pub layer: Descriptor,
    /// The digest and size of its uncompressed tar, checked before it is unpacked.
    pub diff_id: Digest,
    pub size: u64,
    /// When a build last mounted it, in seconds since the epoch: the least recently used go
    /// first when the mounts exceed the export's size cap.
    pub last_used: i64,
}

/// What a build knows about cache mounts: the ones its steps mounted (or would have, for
/// steps that were cache hits) and the ones its `--cache-from` caches carry.
#[derive(Debug, Default)]
pub(super) struct MountBook {
    /// Key → the mount's id, for each mount this build's steps named.
    pub(super) used: Mutex<BTreeMap<String, String>>,
    /// Key → the first imported cache's entry for it.
    pub(super) imported: Mutex<BTreeMap<String, ExportedMount>>,
}

/// The cache of one store, shared by a build's stages.
#[derive(Debug)]
pub struct Cache {
    pub(super) dir: PathBuf,
    /// Content digests of context files, by metadata.
    pub(super) memo: super::memo::FileMemo,
    /// Blobs of imported caches (`--cache-from`), fetched into the store when a hit needs one.
    pub(super) external: Mutex<HashMap<Digest, BlobSource>>,
    /// What this build used or made, by stage, for `--cache-to`.
    pub(super) touched: Mutex<Vec<(Key, Record, usize)>>,
    pub(super) touched_image: Mutex<Option<(Key, Descriptor)>>,
    /// The cache mounts this build used and those its imported caches carry.
    pub(super) mounts: MountBook,
    /// Layer listings, by blob: every stage on a base, and each name lookup in it, asks for
    /// the same ones.
    listings: Arc<super::listings::Listings>,
    /// The keys whose steps run now.
    inflight: Arc<super::inflight::Inflight>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.listings.join_readers();
    }
}

/// Where an imported cache's blob comes from when a hit needs it.
#[derive(Clone)]
pub(super) enum BlobSource {
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
        let listings = super::listings::Listings::new(dir.join("listings"));
        Cache {
            memo: super::memo::FileMemo::new(dir.clone()),
            dir,
            external: Mutex::default(),
            touched: Mutex::default(),
            touched_image: Mutex::default(),
            mounts: Default::default(),
            listings,
            inflight: Arc::default(),
        }
    }

    /// Claims `key` for this thread to compute, or waits for the thread that is (see
    /// the `inflight` module).
    pub fn claim(&self, key: &Key) -> super::Claimed {
        self.inflight.claim(key)
    }

    /// Notes a record this build used or made, for `--cache-to`.
    pub fn touch(&self, key: &Key, record: &Record, stage: usize) {
        if let Ok(mut t) = self.touched.lock() {
            t.push((*key, record.clone(), stage));
        }
    }

    /// A blob the store lacks, copied in (and checked) from an imported cache if one has it.
    pub(super) fn fetch(&self, store: &Store, digest: &Digest) -> bool {
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
}

impl Cache {
    pub(super) fn record_path(&self, key: &Key) -> PathBuf {
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
                && super::memo::sha256_file(&path).ok().map(hex::encode)? != digest.hex()
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
    /// read once, from disk once per build.
    pub fn layer_listing(
        &self,
        store: &Store,
        layer: &Descriptor,
    ) -> Result<Arc<cairn_layers::listing::Listing>> {
        self.listings.get(store, layer)
    }

    /// The listings of `layers` and the symlinks of the filesystem they stack up to (a view
    /// for resolving paths, see [`TreeView::apply_links`]).
    ///
    /// [`TreeView::apply_links`]: cairn_layers::listing::TreeView::apply_links
    pub fn layers_links(
        &self,
        store: &Store,
        layers: &[Descriptor],
    ) -> Result<(
        cairn_layers::listing::TreeView,
        Vec<Arc<cairn_layers::listing::Listing>>,
    )> {
        let listings = layers
            .iter()
            .map(|l| self.layer_listing(store, l))
            .collect::<Result<Vec<_>>>()?;
        let mut tree = cairn_layers::listing::TreeView::default();
        for l in &listings {
            tree.apply_links(l);
        }
        Ok((tree, listings))
    }

    /// Keeps the listing of a layer just written, as [`Cache::layer_listing`] would have read
    /// it from the blob.
    pub fn put_listing(&self, layer: &Digest, listing: cairn_layers::listing::Listing) {
        self.listings.put(layer, listing);
    }

    /// Starts reading the listings of `layers` that are not kept yet (a base's, at FROM), so
    /// that the step which needs them finds them read.
    pub fn read_ahead_listings(&self, store: &Store, layers: &[Descriptor]) {
        self.listings.read_ahead(store, layers);
    }

    pub(super) fn image_path(&self, key: &Key) -> PathBuf {
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

    pub(super) fn write_image_record(&self, key: &Key, manifest: &Descriptor) -> Result<()> {
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
        Ok(super::memo::hex(&self.file_sha256(path, meta)?))
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

    /// A cache whose memo trusts files changed a moment ago (the test's files all are).
    fn trusting(store: &Store) -> Cache {
        let mut cache = Cache::open(store);
        cache.memo = super::super::memo::FileMemo::trusting(cache.dir.clone());
        cache
    }

    #[test]
    fn the_memo_reads_a_file_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let f = ctx.join("f");
        std::fs::write(&f, "one").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let one: [u8; 32] = Sha256::digest(b"one").into();
        let cache = trusting(&store);
        cache.watch(&ctx);
        assert_eq!(cache.file_digest(&f, &m).unwrap(), hex::encode(one));
        cache.save().unwrap();

        // The next build: the file's metadata is what it was, so the memo answers, without
        // reading the file (which is not even there to read any more).
        let moved = ctx.join("moved");
        std::fs::rename(&f, &moved).unwrap();
        let again = trusting(&store);
        again.watch(&ctx);
        assert_eq!(again.file_digest(&f, &m).unwrap(), hex::encode(one));
        assert_eq!(file_digests(&again, &[(&f, &m)]).unwrap(), [one]);

        // Changed: its metadata is not what it was, so it is read.
        std::fs::rename(&moved, &f).unwrap();
        std::fs::write(&f, "two!").unwrap();
        let m2 = std::fs::metadata(&f).unwrap();
        assert_eq!(
            again.file_digest(&f, &m2).unwrap(),
            hex::encode(Sha256::digest(b"two!"))
        );
        // A memo that is not watching the context reads every time.
        let unwatched = trusting(&store);
        std::fs::remove_file(&f).unwrap();
        assert!(unwatched.file_digest(&f, &m2).is_err());
    }
}
