//! The content-addressed store: an OCI image layout on disk (blobs, index.json) with tags,
//! crash-safe writes, file locks for concurrent cairn processes, prune and fsck.
//!
//! Layout under the root (any OCI tool can read it as an image layout):
//! `oci-layout`, `index.json` (one descriptor per tag, named by `org.opencontainers.image.ref.name`
//! = the full reference), `blobs/sha256/<hex>`, plus cairn's own `tmp/` (writes in progress),
//! `layers/sha256/<diff_id>/` (unpacked layers, shared by every build) and two lock files.
//!
//! Crash safety: a blob is written to `tmp/`, fsynced, verified against its digest, renamed into
//! place and its directory fsynced, so a blob path only ever holds complete, verified bytes.
//! `index.json` is replaced the same way; every write, fsync and close is checked, and a
//! failed one removes its temp file. Whatever moment a process dies at, the store is a valid
//! layout; at worst `tmp/` holds leftovers, named by their process ([`crate::owner`]), which
//! the next build removes once that process is gone ([`Store::remove_stale`]), and `prune`.
//!
//! Privacy: the root is 0700 and cairn's own directories in it too; images' files (setuid
//! ones included) sit below them, out of other users' reach.
//!
//! Locking: `index.lock` (exclusive) serialises read-modify-write of index.json; `gc.lock` is
//! held shared by everything that adds blobs and exclusive by `prune`, so prune never deletes a
//! blob that a running load or build is about to reference.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{Descriptor, ImageConfig, Index, Manifest, OCI_MANIFEST};
use crate::owner;
use crate::reference::Reference;

mod blob;
mod gc;
mod indexes;
mod root;
mod tags;
mod unpacked;

pub use blob::BlobWriter;
pub use indexes::Child;

use blob::{temp_name, temp_owner, write_atomic};
use root::{make_private_root, remove_tree};

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// A handle on a store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    remover: Remover,
    /// Blobs whose fsync and rename run in the background ([`BlobWriter::commit_background`]).
    commits: std::sync::Arc<Commits>,
}

/// Blobs being made durable and moved into place by background threads, by digest.
#[derive(Debug, Default)]
struct Commits {
    slots: std::sync::Mutex<std::collections::HashMap<Digest, std::sync::Arc<Slot>>>,
}

/// One background commit: its outcome once known.
#[derive(Debug, Default)]
struct Slot {
    done: std::sync::Mutex<Option<std::result::Result<(), String>>>,
    cv: std::sync::Condvar,
}

impl Slot {
    fn wait(&self) -> std::result::Result<(), String> {
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = &*g {
                return r.clone();
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// How trees are deleted. A rootless build writes unpacked layers with subordinate owners that
/// the user itself cannot delete; the builder then installs a remover that works inside the
/// build's user namespace.
#[derive(Clone, Default)]
struct Remover(Option<std::sync::Arc<RemoveFn>>);

/// Removes one path (a file or a whole tree); a missing path is not an error.
pub type RemoveFn = dyn Fn(&Path) -> io::Result<()> + Send + Sync;

impl std::fmt::Debug for Remover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Remover(custom)"
        } else {
            "Remover(default)"
        })
    }
}

/// A held file lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// An image in the store: its manifest and config, parsed, with the bytes they came from.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub config_bytes: Vec<u8>,
}

impl Image {
    /// The image ID, as Docker shows it: the config's digest.
    pub fn id(&self) -> &Digest {
        &self.manifest.config.digest
    }

    /// The total size of the (compressed) layers plus config.
    pub fn size(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// A tag and the manifest it names.
#[derive(Debug, Clone, Serialize)]
pub struct Tagged {
    pub reference: Reference,
    pub manifest: Descriptor,
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub blobs: u64,
    pub bytes: u64,
    pub layers: u64,
    pub temp_files: u64,
}

/// What `fsck` found. An empty `problems` means the store is consistent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FsckReport {
    pub blobs: u64,
    pub images: u64,
    pub problems: Vec<String>,
    pub temp_files: u64,
}

#[cfg(test)]
thread_local! {
    /// Rewrites of index.json by this thread, for tests that count them.
    pub(crate) static INDEX_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The entries of a directory, each error naming the directory.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .at("list", dir)
}

impl Store {
    /// Opens the store at `root`, creating an empty one if there is none.
    ///
    /// The root is private to its owner (0700): unpacked layers hold images' setuid files and
    /// the blobs hold whatever the images hold. An existing root of this user with looser
    /// permissions is tightened; a root another user owns is refused, since that user could
    /// change what cairn reads, runs and writes there.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        make_private_root(&root)?;
        for dir in ["blobs/sha256", "tmp", "layers/sha256"] {
            let d = root.join(dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .at("create", &d)?;
        }
        let store = Store {
            root,
            commits: Default::default(),
            remover: Remover::default(),
        };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&store.tmp(), &layout, OCI_LAYOUT.as_bytes())?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.lock("index.lock", true)?;
            if !index.exists() {
                write_atomic(&store.tmp(), &index, &Index::new(Vec::new()).to_bytes())?;
            }
        }
        Ok(store)
    }

    /// The store location: `$CAIRN_ROOT`, else `$XDG_DATA_HOME/cairn`, else
    /// `~/.local/share/cairn`.
    pub fn default_root() -> Option<PathBuf> {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("CAIRN_ROOT")
            .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("cairn")))
            .or_else(|| var("HOME").map(|h| h.join(".local/share/cairn")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes trees through `remove` from now on (see [`RemoveFn`]).
    pub fn set_remover(&mut self, remove: std::sync::Arc<RemoveFn>) {
        self.remover = Remover(Some(remove));
    }

    /// Removes a file or directory tree with the store's remover.
    pub fn remove_tree(&self, path: &Path) -> Result<()> {
        match &self.remover.0 {
            None => remove_tree(path),
            Some(f) => {
                // Plain removal first: most trees are the user's own.
                if remove_tree(path).is_ok() {
                    return Ok(());
                }
                f(path).at("remove", path)
            }
        }
    }

    /// The store's scratch directory (same filesystem as the store, cleaned by prune).
    pub fn tmp_dir(&self) -> PathBuf {
        self.tmp()
    }

    /// A fresh path in the scratch directory, `tmp/PREFIX-PID-sSTART-…`, that
    /// [`Store::remove_stale`] removes once this process is gone. `prefix` is one word
    /// (no `-`).
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        self.tmp().join(temp_name(prefix))
    }

    /// Removes what processes killed outright (SIGKILL, power loss) left in the scratch
    /// directory: every entry whose name says which process made it, when that process is
    /// gone. Entries of live processes (other builds sharing the store) stay, and so does
    /// everything when /proc cannot tell. Returns how many entries were removed; one that
    /// cannot be removed is left for `prune` to report.
    pub fn remove_stale(&self) -> Result<u64> {
        let mut n = 0;
        for entry in entries(&self.tmp())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if temp_owner(&name).is_some_and(owner::is_gone)
                && self.remove_tree(&entry.path()).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Lock> {
        let path = self.root.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at("open", &path)?;
        if exclusive {
            file.lock().at("lock", &path)?;
        } else {
            file.lock_shared().at("lock", &path)?;
        }
        Ok(Lock { _file: file })
    }

    /// Held while adding content, so a concurrent prune cannot collect it half-referenced.
    pub fn writing(&self) -> Result<Lock> {
        self.lock("gc.lock", false)
    }

    // ---- blobs

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.wait_blob(d).is_ok() && self.blob_path(d).is_file()
    }

    /// Waits until a blob committed in the background is in place under its digest (at once
    /// for any other blob); the error of a commit that failed.
    pub fn wait_blob(&self, d: &Digest) -> Result<()> {
        let slot = self
            .commits
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .cloned();
        match slot {
            Some(slot) => slot
                .wait()
                .map_err(|m| Error::invalid(format!("blob {d}"), m)),
            None => Ok(()),
        }
    }

    /// Waits for every background commit; the first error.
    pub fn wait_blobs(&self) -> Result<()> {
        let pending: Vec<Digest> = self
            .commits
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for d in pending {
            self.wait_blob(&d)?;
        }
        Ok(())
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        self.wait_blob(d)?;
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound(d.clone()),
            _ => Error::Io {
                action: "open",
                path: self.blob_path(d),
                source: e,
            },
        })
    }

    /// A layer's blob as its plain tar, decompressed as its media type says.
    pub fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read>> {
        let c = crate::compress::Compression::from_media_type(&layer.media_type)
            .ok_or_else(|| Error::MediaType(layer.media_type.clone()))?;
        crate::compress::decompress(self.open_blob(&layer.digest)?, c)
    }

    /// Reads a whole (small) blob and checks it against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .at("read", self.blob_path(d))?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", self.blob_path(d).display()),
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Reads an image's manifest and config, verifying both against their digests.
    pub fn image(&self, manifest: &Descriptor) -> Result<Image> {
        let bytes = self.read_blob(&manifest.digest)?;
        let m = Manifest::from_slice(&bytes, &format!("manifest {}", manifest.digest))?;
        let config_bytes = self.read_blob(&m.config.digest)?;
        let config =
            ImageConfig::from_slice(&config_bytes, &format!("config {}", m.config.digest))?;
        Ok(Image {
            manifest_descriptor: manifest.clone(),
            manifest: m,
            config,
            config_bytes,
        })
    }

    /// Stores a config and a manifest for the given layers (already in the store) and returns
    /// the manifest's descriptor.
    pub fn put_image(&self, config: &ImageConfig, layers: Vec<Descriptor>) -> Result<Descriptor> {
        self.put_image_with(config, layers, BTreeMap::new())
    }

    /// [`Store::put_image`] with the manifest's annotations.
    pub fn put_image_with(
        &self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        // A manifest names only blobs that are durable and in place.
        self.wait_blobs()?;
        let config_bytes = config.to_bytes();
        let config_digest = self.put_blob(&config_bytes)?;
        let manifest = Manifest::new(
            Descriptor {
                media_type: crate::image::OCI_CONFIG.to_owned(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            layers,
        );
        let manifest = crate::image::Manifest {
            annotations,
            ..manifest
        };
        let bytes = manifest.to_bytes();
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::blob::WRITEBACK_WINDOW;
    use super::*;
    use crate::test_support::temp_store as store;
    use std::io::Write;

    use crate::apply::ApplyOptions;
    use crate::compress::Compression;
    use crate::image::REF_NAME;

    fn image(s: &Store, layer: &[u8]) -> Descriptor {
        crate::test_support::one_layer_image(s, None, layer)
    }

    /// A blob committed in the background: readers wait for it, a wrong expected digest
    /// stores nothing, the same content twice is one blob, and no temp file stays behind.
    #[test]
    fn background_commits() {
        let (_d, s) = store();
        let data = vec![7u8; 3 * WRITEBACK_WINDOW as usize + 5];
        let want = Digest::of(&data);
        for _ in 0..2 {
            let mut w = s.blob_writer().unwrap();
            w.write_all(&data).unwrap();
            let (d, size) = w.commit_background(Some((&want, None))).unwrap();
            assert_eq!((d, size), (want.clone(), data.len() as u64));
        }
        assert_eq!(s.read_blob(&want).unwrap().len(), data.len());
        assert!(s.has_blob(&want));

        let mut w = s.blob_writer().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit_background(Some((&want, None))).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&Digest::of(b"other")));
        s.wait_blobs().unwrap();
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 0);
    }

    /// A trusted writer (a layer writer's, which hashes what it writes itself) stores under
    /// the digest it is given, still checks the size, and without a digest stores nothing.
    #[test]
    fn trusted_writers_store_under_their_producers_digest() {
        let (_d, s) = store();
        let data = vec![3u8; WRITEBACK_WINDOW as usize + 7];
        let want = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = s.blob_writer_trusting().unwrap();
        w.write_all(&data).unwrap();
        assert_eq!(
            w.commit(Some((&want, Some(size)))).unwrap(),
            (want.clone(), size)
        );
        assert_eq!(s.read_blob(&want).unwrap(), data);

        let other = Digest::of(b"other");
        let mut w = s.blob_writer_trusting().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit(Some((&other, Some(4)))).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        let mut w = s.blob_writer_trusting().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit_background(None).unwrap_err();
        assert!(err.to_string().contains("without the digest"), "{err}");
        assert!(!s.has_blob(&other));
        s.wait_blobs().unwrap();
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 0);
    }

    /// A writer dropped without a commit (an error on the way, a panic) takes its temp file
    /// with it, and so does a layer whose producer fails.
    #[test]
    fn uncommitted_blobs_leave_nothing() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(&vec![1u8; 3 << 20]).unwrap();
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 1);
        drop(w);
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 0);
        let err = crate::layer::write_layer(&s, Compression::Gzip, |w| {
            w.write_all(&[0u8; 4096]).unwrap();
            Err(Error::invalid("producer", "gave up"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("gave up"), "{err}");
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 0);
        assert_eq!(
            fs_err::read_dir(s.root().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    /// Start-up cleanup removes the scratch entries of gone processes (a pid that exited, or
    /// one now held by another process) and keeps those of live ones, this one included;
    /// prune also removes what names no process.
    #[test]
    fn stale_temps() {
        let (_d, s) = store();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let start = owner::start_time(me).unwrap();
        let live = s.temp_path("unpack");
        fs_err::create_dir_all(live.join("rootfs/etc")).unwrap();
        let cases = [
            (format!("blob-{dead}-s1-0-0"), false),
            (format!("unpack-{dead}-3-4"), false),
            (format!("build-{me}-s{}-9", start + 1), false),
            (format!("run-{me}-s{start}-1.keep"), true),
            (format!("run-{me}-77"), true),
            ("notes".to_owned(), true),
        ];
        for (name, _) in &cases {
            fs_err::create_dir_all(s.tmp().join(name).join("sub")).unwrap();
        }
        // The dead pid could have been handed out again meanwhile: then its entries stay.
        let reused = owner::start_time(dead).is_some();
        let removed = s.remove_stale().unwrap();
        for (name, kept) in &cases {
            let kept = *kept || (reused && name.contains(&format!("-{dead}-")));
            assert_eq!(s.tmp().join(name).exists(), kept, "{name}");
        }
        assert!(live.join("rootfs/etc").is_dir());
        assert_eq!(removed, if reused { 1 } else { 3 });
        let pruned = s.prune().unwrap();
        assert!(!s.tmp().join("notes").exists());
        assert!(live.is_dir(), "prune keeps a live process's files");
        assert_eq!(pruned.temp_files, 1 + u64::from(reused) * 2);
    }

    /// A new store is private to its owner; an existing one of the same user is made so; one
    /// of another user is refused, naming its path.
    #[test]
    fn the_root_is_private() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (_d, s) = store();
        let mode = |p: &Path| fs_err::metadata(p).unwrap().mode() & 0o7777;
        for dir in [
            "",
            "blobs",
            "blobs/sha256",
            "tmp",
            "layers",
            "layers/sha256",
        ] {
            assert_eq!(mode(&s.root().join(dir)), 0o700, "{dir:?}");
        }
        fs_err::set_permissions(s.root(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Store::open(s.root()).unwrap();
        assert_eq!(mode(s.root()), 0o700);
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(s.root(), Some(4321), None).unwrap();
            let err = Store::open(s.root()).unwrap_err();
            assert!(matches!(err, Error::UnsafeStore { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(&s.root().display().to_string()), "{text}");
            assert!(text.contains("uid 4321"), "{text}");
        }
    }

    #[test]
    fn layout_files() {
        let (_d, s) = store();
        let layout = fs_err::read_to_string(s.root().join("oci-layout")).unwrap();
        assert_eq!(layout, OCI_LAYOUT);
        let index = s.read_index().unwrap();
        assert!(index.manifests.is_empty());
        // Opening again changes nothing.
        Store::open(s.root()).unwrap();
        assert_eq!(s.read_index().unwrap(), index);
    }

    #[test]
    fn blobs_are_verified() {
        let (_d, s) = store();
        let d = s.put_blob(b"hello").unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        let wrong = Digest::of(b"other");
        let err = s.ingest(&mut &b"hello"[..], &wrong, Some(5)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&wrong), "nothing stored under the wrong digest");
        let err = s
            .ingest(&mut &b"hello!"[..], &Digest::of(b"hello!"), Some(5))
            .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        assert_eq!(
            fs_err::read_dir(s.tmp()).unwrap().count(),
            0,
            "no temp left behind"
        );
        // Corrupt a blob on disk: reads and fsck notice.
        fs_err::write(s.blob_path(&d), b"jello").unwrap();
        assert!(matches!(
            s.read_blob(&d).unwrap_err(),
            Error::DigestMismatch { .. }
        ));
        assert_eq!(s.fsck().unwrap().problems.len(), 1);
    }

    #[test]
    fn tags_resolve_prune() {
        let (_d, s) = store();
        let a = image(&s, b"layer a");
        let b = image(&s, b"layer b");
        let busybox = Reference::parse("busybox").unwrap();
        s.tag(&busybox, &a).unwrap();
        s.tag(&Reference::parse("app:1").unwrap(), &b).unwrap();
        assert_eq!(s.resolve("busybox").unwrap().1.digest, a.digest);
        assert_eq!(
            s.resolve("docker.io/library/busybox:latest")
                .unwrap()
                .1
                .digest,
            a.digest
        );
        let id = s.image(&b).unwrap().id().clone();
        assert_eq!(s.resolve(&id.hex()[..12]).unwrap().1.digest, b.digest);
        assert!(matches!(
            s.resolve("nope").unwrap_err(),
            Error::ImageNotFound(_)
        ));
        // Retag busybox to b: a, named no more, is dangling (kept by prune) until removed;
        // then prune collects exactly its 3 blobs.
        s.tag(&busybox, &b).unwrap();
        assert_eq!(s.tags().unwrap().len(), 2);
        let dangling = s.untagged().unwrap();
        assert_eq!(dangling.len(), 1);
        assert_eq!(dangling[0].digest, a.digest);
        assert!(!dangling[0].annotations.contains_key(REF_NAME));
        assert_eq!(s.prune().unwrap().blobs, 0, "a dangling image is kept");
        // Tagging b again, or a name onto b that b has, leaves no second dangling entry.
        s.tag(&busybox, &b).unwrap();
        assert_eq!(s.untagged().unwrap().len(), 1);
        assert_eq!(s.remove_untagged(|_| true).unwrap().len(), 1);
        let r = s.prune().unwrap();
        assert_eq!(r.blobs, 3);
        assert!(s.fsck().unwrap().problems.is_empty());
        assert!(s.untag(&busybox).unwrap().is_some());
        assert!(s.untag(&busybox).unwrap().is_none());
        let r = s.prune().unwrap();
        assert_eq!(r.blobs, 0, "app:1 still holds b");
    }

    #[test]
    fn untagged_images_resolve_by_id_and_survive_prune() {
        let (_d, s) = store();
        let a = image(&s, b"untagged a");
        s.keep_untagged(&a).unwrap();
        s.keep_untagged(&a).unwrap();
        assert_eq!(s.untagged().unwrap().len(), 1, "kept once");
        assert!(s.tags().unwrap().is_empty());
        let id = s.image(&a).unwrap().id().clone();
        for name in [
            id.to_string(),
            id.hex().to_owned(),
            id.hex()[..4].to_owned(),
        ] {
            assert_eq!(s.resolve(&name).unwrap().1.digest, a.digest, "{name}");
        }
        // Too short, or not lowercase hex: not an ID.
        for name in [&id.hex()[..3], &id.hex()[..12].to_uppercase()] {
            assert!(s.resolve(name).is_err(), "{name}");
        }
        assert_eq!(s.prune().unwrap().blobs, 0, "a dangling image is kept");
        // Named, it is no longer dangling.
        let named = Reference::parse("named").unwrap();
        s.tag(&named, &a).unwrap();
        assert!(s.untagged().unwrap().is_empty());
        s.untag(&named).unwrap();
        s.keep_untagged(&a).unwrap();
        assert_eq!(s.fsck().unwrap().images, 1, "fsck checks dangling images");
        let gone = s.remove_untagged(|m| m.digest == a.digest).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(s.prune().unwrap().blobs, 3);
    }

    #[test]
    fn an_id_prefix_of_several_images_is_ambiguous() {
        let (_d, s) = store();
        // Manifests that are not in the store: only their digests are compared.
        let fake = |hex: &str| Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: format!("sha256:{hex}").parse().unwrap(),
            size: 1,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let one = fake(&format!("abcd1{}", "0".repeat(59)));
        let two = fake(&format!("abcd2{}", "0".repeat(59)));
        s.tag(&Reference::parse("one").unwrap(), &one).unwrap();
        s.keep_untagged(&two).unwrap();
        let e = s.resolve("abcd").unwrap_err().to_string();
        assert!(e.contains("ambiguous") && e.contains("abcd"), "{e}");
        assert_eq!(s.resolve("abcd1").unwrap().1.digest, one.digest);
        assert_eq!(s.resolve("sha256:abcd2").unwrap().1.digest, two.digest);
    }

    #[test]
    fn layers_unpack_once_and_are_verified() {
        use crate::apply::Whiteouts;
        let (_d, s) = store();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        tar.append_data(&mut h, "etc/motd", &b"hi\n"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let diff_id = Digest::of(&bytes);
        let layer = crate::layer::write_layer(&s, Compression::Gzip, |w| {
            w.write_all(&bytes).map_err(|e| Error::stream("write", e))
        })
        .unwrap();
        assert_eq!(layer.diff_id, diff_id);
        let opts = ApplyOptions {
            whiteouts: Whiteouts::Overlay {
                opaque_xattr: "user.overlay.opaque",
            },
            id_map: crate::IdMap::identity(),
            chown: false,
            skip_devices: false,
        };
        let root = s
            .unpacked_layer(&layer.descriptor, &diff_id, &opts)
            .unwrap();
        assert_eq!(fs_err::read(root.join("etc/motd")).unwrap(), b"hi\n");
        // Asked again: the same directory, not unpacked twice.
        fs_err::write(root.join("marker"), b"").unwrap();
        let again = s
            .unpacked_layer(&layer.descriptor, &diff_id, &opts)
            .unwrap();
        assert!(again.join("marker").exists());
        // A wrong diff_id keeps nothing.
        let wrong = Digest::of(b"not it");
        let err = s
            .unpacked_layer(&layer.descriptor, &wrong, &opts)
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.root().join("layers/sha256").join(wrong.hex()).exists());
        assert_eq!(fs_err::read_dir(s.tmp()).unwrap().count(), 0);
    }

    /// Naming an image 5,000 times at once rewrites index.json once; naming them again as
    /// they are rewrites nothing; retagging one keeps the others and the unnamed entries.
    #[test]
    fn tag_all_writes_the_index_once() {
        let (_d, s) = store();
        let a = image(&s, b"layer a");
        let b = image(&s, b"layer b");
        let writes = || INDEX_WRITES.with(std::cell::Cell::get);
        let names: Vec<(Reference, Descriptor)> = (0..5000)
            .map(|i| (Reference::parse(&format!("img:{i}")).unwrap(), a.clone()))
            .collect();
        // (the names to give, the index writes that costs, the tags there are then)
        type Case<'a> = (&'a [(Reference, Descriptor)], u64, usize);
        let cases: [Case<'_>; 4] = [
            (&names, 1, 5000),
            (&names, 0, 5000),
            (&[], 0, 5000),
            (&names[..1], 0, 5000),
        ];
        for (i, (tags, want_writes, want_tags)) in cases.into_iter().enumerate() {
            let before = writes();
            s.tag_all(tags).unwrap();
            assert_eq!(writes() - before, want_writes, "case {i}");
            assert_eq!(s.tags().unwrap().len(), want_tags, "case {i}");
        }
        let before = writes();
        let retag = Reference::parse("img:7").unwrap();
        s.tag_all(&[(retag.clone(), b.clone()), (retag.clone(), b.clone())])
            .unwrap();
        assert_eq!(writes() - before, 1);
        let tags = s.tags().unwrap();
        assert_eq!(tags.len(), 5000);
        let named = |r: &Reference| tags.iter().find(|t| &t.reference == r).unwrap();
        assert_eq!(named(&retag).manifest.digest, b.digest);
        assert_eq!(
            named(&Reference::parse("img:8").unwrap()).manifest.digest,
            a.digest
        );
    }

    #[test]
    fn concurrent_writers_agree() {
        let (_d, s) = store();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let s = &s;
                scope.spawn(move || {
                    let desc = image(s, b"shared layer");
                    s.tag(&Reference::parse(&format!("img{i}")).unwrap(), &desc)
                        .unwrap();
                });
            }
        });
        assert_eq!(s.tags().unwrap().len(), 8);
        let report = s.fsck().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.blobs, 3);
    }
}
