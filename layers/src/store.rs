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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::apply::{ApplyOptions, apply_layer};
use crate::compress::{self, Compression};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{Descriptor, ImageConfig, Index, Manifest, OCI_MANIFEST, REF_NAME};
use crate::owner;
use crate::reference::Reference;

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

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
thread_local! {
    /// Rewrites of index.json by this thread, for tests that count them.
    pub(crate) static INDEX_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Makes a written blob durable and puts it under its digest's `path` in `blobs` (dropping it
/// when identical content is already there: another writer won the race).
fn place_blob(file: File, temp: &Path, path: &Path, blobs: &Path) -> Result<()> {
    file.sync_all().at("sync", temp)?;
    close(file, temp)?;
    if path.exists() {
        fs_err::remove_file(temp).map_err(|source| Error::Io {
            action: "remove",
            path: temp.to_path_buf(),
            source,
        })?;
        return Ok(());
    }
    fs_err::rename(temp, path).map_err(|source| Error::Io {
        action: "rename into place",
        path: path.to_path_buf(),
        source,
    })?;
    sync_dir(blobs)
}

/// The directory name of a layer's unpacked form under `layers/sha256`.
fn unpacked_name(diff_id: &Digest, key: &str) -> String {
    if key.is_empty() {
        diff_id.hex().to_owned()
    } else {
        format!("{}.{key}", diff_id.hex())
    }
}

/// A temp file name unique across processes and threads: `PREFIX-PID-sSTART-N-NANOS`, so that
/// a later cairn can tell whether the process that made it is gone ([`crate::owner`]).
fn temp_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        owner::token(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The owner of an entry of `tmp/`, from its name (`WORD-PID…`); None for a name that
/// carries none.
fn temp_owner(name: &str) -> Option<owner::Owner> {
    let (prefix, _) = name.split_once('-')?;
    owner::parse(name, prefix)
}

/// Closes a written file and reports what close reports: some filesystems (network ones,
/// and full ones) only tell there that the data did not make it.
fn close(file: File, path: &Path) -> Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: the descriptor was just released by its File, so it is closed exactly once.
    if unsafe { libc::close(fd) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // Linux has closed the descriptor even then; EINTR says nothing about the data.
    if e.kind() == io::ErrorKind::Interrupted {
        return Ok(());
    }
    Err(e).at("close", path)
}

/// The entries of a directory, each error naming the directory.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .at("list", dir)
}

/// fsyncs a directory so a rename into it survives a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at("sync", dir)
}

/// Writes `bytes` to `path` atomically: temp file in `tmp`, fsync, rename, fsync the directory.
fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let t = tmp.join(temp_name("write"));
    let written = (|| {
        let mut f = File::create(&t).at("create", &t)?;
        f.write_all(bytes).at("write", &t)?;
        f.sync_all().at("sync", &t)?;
        close(f, &t)?;
        fs_err::rename(&t, path).map_err(|source| Error::Io {
            action: "rename into place",
            path: path.to_path_buf(),
            source,
        })
    })();
    if written.is_err() {
        // A full disk must not keep the bytes that did fit.
        let _ = std::fs::remove_file(&t);
    }
    written?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// A blob being written: bytes go to a temp file and are hashed on the way. Dropped without
/// a commit (an error, a panic), it removes its temp file.
#[derive(Debug)]
pub struct BlobWriter<'s> {
    store: &'s Store,
    temp: PathBuf,
    /// None once a commit has taken the bytes (and with them the temp file's fate).
    out: Option<HashingWriter<io::BufWriter<Writeback>>>,
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Close before removing; what the buffer still holds is not wanted.
            let (_, _, buf) = out.finish();
            let (file, _) = buf.into_parts();
            drop(file);
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A file being written that keeps the disk busy while the caller produces more: every
/// `WRITEBACK_WINDOW` bytes, writeback of that window starts (sync_file_range, without
/// waiting). The kernel's own writeback would not start below gigabytes of dirty pages on a
/// large machine, so a big blob would otherwise reach the disk only inside the commit's
/// fsync, after all the reading, hashing and compressing; the kernel still throttles a writer
/// that outruns the disk by its dirty limits.
#[derive(Debug)]
struct Writeback {
    file: File,
    written: u64,
    started: u64,
}

/// Bytes per writeback window.
const WRITEBACK_WINDOW: u64 = 8 << 20;

impl Writeback {
    fn new(file: File) -> Writeback {
        Writeback {
            file,
            written: 0,
            started: 0,
        }
    }

    fn kick(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let (start, len) = (self.started, self.written - self.started);
        // Best effort: errors surface at the fsync in commit.
        // SAFETY: sync_file_range on our own open descriptor, plain integers.
        unsafe {
            libc::sync_file_range(
                fd,
                start as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started = self.written;
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_WINDOW {
            self.kick();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.out()?.write(buf);
        r.map_err(|e| self.named(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.out()?.flush();
        r.map_err(|e| self.named(e))
    }
}

impl BlobWriter<'_> {
    fn out(&mut self) -> io::Result<&mut HashingWriter<io::BufWriter<Writeback>>> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer used after its commit"))
    }

    /// A write error that names the file: callers see it through compressors and copies
    /// that know nothing of the store (a full disk must say which one is full).
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("write {}: {e}", self.temp.display()))
    }

    /// The bytes and the temp path, for a commit; the writer's drop then leaves the file to
    /// the commit.
    fn take(mut self) -> Result<(PathBuf, HashingWriter<io::BufWriter<Writeback>>)> {
        let out = self.out.take().ok_or_else(|| {
            Error::invalid(format!("blob {}", self.temp.display()), "committed twice")
        })?;
        Ok((std::mem::take(&mut self.temp), out))
    }

    /// Verifies the content against `expected` (when given), then moves it into place under its
    /// digest. On a mismatch nothing is stored.
    pub fn commit(self, expected: Option<(&Digest, Option<u64>)>) -> Result<(Digest, u64)> {
        let store = self.store;
        let (temp, out) = self.take()?;
        let (digest, size, buf) = out.finish();
        let result = (|| {
            let file = buf
                .into_inner()
                .map_err(|e| Error::Io {
                    action: "write",
                    path: temp.clone(),
                    source: e.into_error(),
                })?
                .file;
            if let Some((want, want_size)) = expected {
                if let Some(n) = want_size
                    && n != size
                {
                    return Err(Error::SizeMismatch {
                        what: "blob".into(),
                        digest: want.clone(),
                        expected: n,
                        actual: size,
                    });
                }
                if *want != digest {
                    return Err(Error::DigestMismatch {
                        what: "blob".into(),
                        expected: want.clone(),
                        actual: digest.clone(),
                    });
                }
            }
            place_blob(
                file,
                &temp,
                &store.blob_path(&digest),
                &store.root.join("blobs/sha256"),
            )
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map(|()| (digest, size))
    }

    /// Like [`BlobWriter::commit`] for a blob whose digest is known now and whose bytes may
    /// reach the disk later: the content is checked and flushed to the file here, and its
    /// fsync and rename run on a background thread, so that the next step can start while a
    /// large layer is still being written out. Readers through the store wait for it
    /// ([`Store::wait_blob`]); [`Store::put_image`] waits for all.
    pub fn commit_background(
        self,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<(Digest, u64)> {
        let store = self.store;
        let (temp, out) = self.take()?;
        let (digest, size, buf) = out.finish();
        let file = match buf.into_inner() {
            Ok(w) => w.file,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(Error::Io {
                    action: "write",
                    path: temp,
                    source: e.into_error(),
                });
            }
        };
        if let Some((want, want_size)) = expected
            && (*want != digest || want_size.is_some_and(|n| n != size))
        {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::DigestMismatch {
                what: "blob".into(),
                expected: want.clone(),
                actual: digest,
            });
        }
        let slot = std::sync::Arc::new(Slot::default());
        {
            let mut slots = store
                .commits
                .slots
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(earlier) = slots.get(&digest).cloned() {
                // The same content is being committed already: that one will do.
                drop(slots);
                let _ = std::fs::remove_file(&temp);
                earlier
                    .wait()
                    .map_err(|m| Error::invalid(format!("blob {digest}"), m))?;
                return Ok((digest, size));
            }
            slots.insert(digest.clone(), slot.clone());
        }
        let (commits, blobs, path) = (
            store.commits.clone(),
            store.root.join("blobs/sha256"),
            store.blob_path(&digest),
        );
        let key = digest.clone();
        let (slot_on_error, temp_on_error) = (slot.clone(), temp.clone());
        let work = move || {
            let r = place_blob(file, &temp, &path, &blobs);
            if r.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            let mut done = slot.done.lock().unwrap_or_else(|p| p.into_inner());
            *done = Some(r.as_ref().map(drop).map_err(|e| e.to_string()));
            slot.cv.notify_all();
            drop(done);
            if r.is_ok() {
                // Done and in place: later readers need not ask.
                commits
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("blob-commit".into())
            .spawn(work)
        {
            let message = format!("cannot start a commit thread: {e}");
            let _ = std::fs::remove_file(&temp_on_error);
            let mut done = slot_on_error.done.lock().unwrap_or_else(|p| p.into_inner());
            *done = Some(Err(message.clone()));
            slot_on_error.cv.notify_all();
            return Err(Error::invalid(format!("blob {digest}"), message));
        }
        Ok((digest, size))
    }

    /// Gives up on the blob; the temp file is removed (as dropping it does).
    pub fn abort(self) {}
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

    /// Starts writing a blob whose digest is known only at the end.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let temp = self.tmp().join(temp_name("blob"));
        let file = File::create(&temp).at("create", &temp)?;
        Ok(BlobWriter {
            store: self,
            temp,
            out: Some(HashingWriter::new(io::BufWriter::with_capacity(
                1 << 20,
                Writeback::new(file),
            ))),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d) {
            let mut w = self.blob_writer()?;
            w.write_all(bytes).at("write", self.tmp())?;
            w.commit(Some((&d, Some(bytes.len() as u64))))?;
        }
        Ok(d)
    }

    /// Stores what `r` yields, verified against `expected` (and `size`, when known). A blob
    /// already present is not read again.
    pub fn ingest(&self, r: &mut dyn Read, expected: &Digest, size: Option<u64>) -> Result<()> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        // Never read past the declared size: a lying source cannot fill the disk.
        let limit = size.map_or(u64::MAX, |n| n.saturating_add(1));
        if let Err(e) = io::copy(&mut r.take(limit), &mut w) {
            w.abort();
            return Err(Error::stream(
                format!("read the content of blob {expected}"),
                e,
            ));
        }
        w.commit(Some((expected, size)))?;
        Ok(())
    }

    // ---- images and tags

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = fs_err::read(&path).map_err(|source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        Index::from_slice(&bytes, &path.display().to_string())
    }

    /// Every tag, in the order of index.json.
    pub fn tags(&self) -> Result<Vec<Tagged>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for m in index.manifests {
            if let Some(name) = m.annotations.get(REF_NAME)
                && let Ok(reference) = Reference::parse(name)
            {
                out.push(Tagged {
                    reference,
                    manifest: m,
                });
            }
        }
        Ok(out)
    }

    /// The images no tag names (docker's dangling `<none>:<none>`: a build without `-t`, a
    /// load of an image without a name), in the order of index.json.
    pub fn untagged(&self) -> Result<Vec<Descriptor>> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|m| !m.annotations.contains_key(REF_NAME))
            .collect())
    }

    /// Keeps `manifest` as an image without a name, so lookups by ID, listings and prune know
    /// it, until a tag names it, `rmi` removes it, or a prune of dangling images does. An
    /// image some entry records already is left as it is.
    pub fn keep_untagged(&self, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        if index.manifests.iter().any(|m| m.digest == manifest.digest) {
            return Ok(());
        }
        let mut d = manifest.clone();
        d.annotations.remove(REF_NAME);
        index.manifests.push(d);
        self.write_index(&index)
    }

    /// Forgets the untagged images `which` picks; returns the manifests it removed. Their
    /// blobs go with the next prune.
    pub fn remove_untagged(&self, which: impl Fn(&Descriptor) -> bool) -> Result<Vec<Descriptor>> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests
            .into_iter()
            .partition(|m| !m.annotations.contains_key(REF_NAME) && which(m));
        index.manifests = kept;
        if !gone.is_empty() {
            self.write_index(&index)?;
        }
        Ok(gone)
    }

    fn chunk_index_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("chunks").join(blob.hex())
    }

    /// Keeps where a gzip blob's deflated chunks lie (see [`crate::compress::ChunkReuse`]).
    /// An index that cannot be written is only a chance lost, so nothing is reported.
    pub fn put_chunk_index(&self, blob: &Digest, chunks: &[crate::compress::Chunk]) {
        let path = self.chunk_index_path(blob);
        if let Some(dir) = path.parent()
            && fs_err::create_dir_all(dir).is_ok()
        {
            // In the store's temp directory, which prune empties, should this stop halfway.
            let tmp = self.tmp().join(temp_name("chunks"));
            let bytes = crate::compress::chunks_to_bytes(chunks);
            if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }

    /// The deflated chunks of blob `blob`, for a writer to copy from; None when the blob or
    /// its index is gone or damaged.
    pub fn chunk_reuse(&self, blob: &Digest) -> Option<crate::compress::ChunkReuse> {
        let bytes = std::fs::read(self.chunk_index_path(blob)).ok()?;
        let chunks = crate::compress::chunks_from_bytes(&bytes)?;
        let file = File::open(self.blob_path(blob)).ok()?;
        Some(crate::compress::ChunkReuse::new(file, chunks))
    }

    /// Points `reference` at `manifest` (replacing what it named before).
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        self.tag_all(&[(reference.clone(), manifest.clone())])
    }

    /// Points each reference at its manifest (a later pair wins over an earlier one of the same
    /// name) with one rewrite of index.json: a load that names thousands of images costs two
    /// fsyncs, not two per name.
    pub fn tag_all(&self, tags: &[(Reference, Descriptor)]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let mut unnamed = Vec::new();
        let mut named: BTreeMap<String, Descriptor> = BTreeMap::new();
        for m in std::mem::take(&mut index.manifests) {
            match m.annotations.get(REF_NAME) {
                Some(name) => {
                    named.insert(name.clone(), m);
                }
                None => unnamed.push(m),
            }
        }
        let before: Vec<Descriptor> = unnamed.iter().chain(named.values()).cloned().collect();
        // A named image is no longer a dangling one.
        unnamed.retain(|u| !tags.iter().any(|(_, m)| m.digest == u.digest));
        let mut moved = Vec::new();
        for (reference, manifest) in tags {
            let name = reference.to_string();
            let mut d = manifest.clone();
            d.annotations.insert(REF_NAME.to_owned(), name.clone());
            if let Some(old) = named.insert(name, d)
                && old.digest != manifest.digest
            {
                moved.push(old);
            }
        }
        // As in docker, an image whose last name moved to another is dangling, not gone: it
        // stays by its ID until a prune of dangling images.
        for mut old in moved {
            let still_named = named.values().any(|m| m.digest == old.digest);
            if !still_named && !unnamed.iter().any(|u| u.digest == old.digest) {
                old.annotations.remove(REF_NAME);
                unnamed.push(old);
            }
        }
        // Unnamed entries first, in their order, then by name: what one tag at a time gave.
        unnamed.extend(named.into_values());
        // Tagging what the tags name already (a rebuild that changed nothing) writes nothing:
        // index.json's rewrite is two fsyncs.
        if unnamed == before {
            return Ok(());
        }
        index.manifests = unnamed;
        self.write_index(&index)
    }

    /// Replaces index.json (the caller holds `index.lock`).
    fn write_index(&self, index: &Index) -> Result<()> {
        #[cfg(test)]
        INDEX_WRITES.with(|n| n.set(n.get() + 1));
        write_atomic(&self.tmp(), &self.index_path(), &index.to_bytes())
    }

    /// Removes a tag; returns the manifest it named, if it existed.
    pub fn untag(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let name = reference.to_string();
        let found = index
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME) == Some(&name))
            .cloned();
        if found.is_some() {
            index
                .manifests
                .retain(|m| m.annotations.get(REF_NAME) != Some(&name));
            self.write_index(&index)?;
        }
        Ok(found)
    }

    /// Finds an image by reference (`busybox`, `docker.io/library/busybox:latest`), by image
    /// ID or manifest digest (`sha256:…`, or a unique hex prefix of at least 4 digits).
    pub fn resolve(&self, name: &str) -> Result<(Option<Reference>, Descriptor)> {
        let tags = self.tags()?;
        if let Ok(reference) = Reference::parse(name) {
            if let Some(t) = tags.iter().find(|t| t.reference == reference) {
                return Ok((Some(t.reference.clone()), t.manifest.clone()));
            }
            if let Some(d) = reference.digest()
                && let Some(t) = tags.iter().find(|t| &t.manifest.digest == d)
            {
                return Ok((None, t.manifest.clone()));
            }
        }
        // docker's rule: `sha256:` optional, then 4 to 64 lowercase hex digits.
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if (4..=64).contains(&hex.len())
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let untagged = self.untagged()?;
            let mut found: Option<&Descriptor> = None;
            for m in tags.iter().map(|t| &t.manifest).chain(&untagged) {
                let config = self
                    .read_blob(&m.digest)
                    .ok()
                    .and_then(|b| Manifest::from_slice(&b, "manifest").ok())
                    .map(|m| m.config.digest);
                let matches = m.digest.hex().starts_with(hex)
                    || config.is_some_and(|c| c.hex().starts_with(hex));
                if matches {
                    if let Some(f) = found
                        && f.digest != m.digest
                    {
                        return Err(Error::invalid(
                            format!("image ID {name}"),
                            format!(
                                "ambiguous: it matches more than one image ({} and {}); give more digits",
                                f.digest, m.digest
                            ),
                        ));
                    }
                    found = Some(m);
                }
            }
            if let Some(m) = found {
                return Ok((None, m.clone()));
            }
        }
        Err(Error::ImageNotFound(name.to_owned()))
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

    /// The directory holding a layer unpacked as an overlay lowerdir, keyed by its diff_id and
    /// unpacked from its blob the first time it is asked for; every image and build shares it.
    /// The uncompressed stream must hash to `diff_id`, or nothing is kept.
    pub fn unpacked_layer(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        opts: &ApplyOptions,
    ) -> Result<PathBuf> {
        self.unpacked_layer_keyed(layer, diff_id, "", opts)
    }

    /// Like [`Store::unpacked_layer`], kept apart under `key` (see
    /// [`Store::unpacked_layer_with`]): `opts` map the owners to other host ids.
    pub fn unpacked_layer_keyed(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        key: &str,
        opts: &ApplyOptions,
    ) -> Result<PathBuf> {
        self.unpacked_layer_with(diff_id, key, |rootfs| {
            let compression = Compression::from_media_type(&layer.media_type)
                .ok_or_else(|| Error::MediaType(layer.media_type.clone()))?;
            let mut plain = HashingReader::new(compress::decompress(
                self.open_blob(&layer.digest)?,
                compression,
            )?);
            apply_layer(&mut plain, rootfs, opts)?;
            // Read to the end: the tar's trailing padding counts towards the diff_id.
            io::copy(&mut plain, &mut io::sink())
                .map_err(|e| Error::stream(format!("read layer {}", layer.digest), e))?;
            Ok(plain.finish().0)
        })
    }

    /// Like [`Store::unpacked_layer`], with the unpacking done by `unpack`, which writes the
    /// layer into the directory it is given and returns the digest of the tar it read. `key`
    /// tells apart unpackings of one layer that differ on disk (the owners a user namespace
    /// mapping gives the files): "" for the plain one.
    pub fn unpacked_layer_with(
        &self,
        diff_id: &Digest,
        key: &str,
        unpack: impl FnOnce(&Path) -> Result<Digest>,
    ) -> Result<PathBuf> {
        let name = unpacked_name(diff_id, key);
        let dir = self.root.join("layers/sha256").join(&name);
        let rootfs = dir.join("rootfs");
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        // One process unpacks; the others wait here and then find it done.
        let _lock = self.lock(&format!("layers/sha256/{name}.lock"), true)?;
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        let temp = self.tmp().join(temp_name("unpack"));
        let result = (|| {
            private_dir(&temp)?;
            let actual = unpack(&temp.join("rootfs"))?;
            if actual != *diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {diff_id} (diff_id)"),
                    expected: diff_id.clone(),
                    actual,
                });
            }
            fs_err::rename(&temp, &dir).map_err(|source| Error::Io {
                action: "rename into place",
                path: dir.clone(),
                source,
            })?;
            sync_dir(&self.root.join("layers/sha256"))
        })();
        if let Err(e) = result {
            // The unpacking's error says more than a failed cleanup's (a full disk, say).
            let _ = self.remove_tree(&temp);
            return Err(e);
        }
        Ok(rootfs)
    }

    /// Takes `tree` (on the store's filesystem) as the unpacked form of layer `diff_id` under
    /// `key`, as [`Store::unpacked_layer_with`] would have made it: a RUN step's overlay upper
    /// directory is exactly that, so the next step need not unpack the blob it just wrote.
    /// Returns false, leaving `tree` where it is, when the layer is unpacked already.
    pub fn adopt_unpacked(&self, diff_id: &Digest, key: &str, tree: &Path) -> Result<bool> {
        let name = unpacked_name(diff_id, key);
        let dir = self.root.join("layers/sha256").join(&name);
        if dir.join("rootfs").is_dir() {
            return Ok(false);
        }
        let _lock = self.lock(&format!("layers/sha256/{name}.lock"), true)?;
        if dir.join("rootfs").is_dir() {
            return Ok(false);
        }
        let temp = self.tmp().join(temp_name("unpack"));
        private_dir(&temp)?;
        let rootfs = temp.join("rootfs");
        if let Err(source) = std::fs::rename(tree, &rootfs) {
            let _ = std::fs::remove_dir(&temp);
            return Err(Error::Io {
                action: "move into the store",
                path: tree.to_owned(),
                source,
            });
        }
        let placed = fs_err::rename(&temp, &dir).map_err(|source| Error::Io {
            action: "rename into place",
            path: dir.clone(),
            source,
        });
        if let Err(e) = placed {
            // Back where the caller will clean it up.
            let _ = std::fs::rename(&rootfs, tree);
            let _ = std::fs::remove_dir(&temp);
            return Err(e);
        }
        sync_dir(&self.root.join("layers/sha256"))?;
        Ok(true)
    }

    /// The blobs an image manifest reaches: itself, its config and its layers.
    fn reachable_from(&self, manifest: &Digest, into: &mut BTreeSet<Digest>) -> Result<()> {
        into.insert(manifest.clone());
        let m = Manifest::from_slice(&self.read_blob(manifest)?, &format!("manifest {manifest}"))?;
        into.insert(m.config.digest.clone());
        for l in m.layers {
            into.insert(l.digest);
        }
        Ok(())
    }

    /// Removes every blob no tag reaches, unpacked layers no reachable image uses, and temp
    /// files. Waits for running writers to finish first.
    pub fn prune(&self) -> Result<PruneReport> {
        self.prune_keeping(&BTreeSet::new(), &BTreeSet::new())
    }

    /// Like [`Store::prune`], keeping also the blobs `blobs` and the unpacked forms of the
    /// layers `diff_ids` (what the build cache still records).
    pub fn prune_keeping(
        &self,
        blobs: &BTreeSet<Digest>,
        diff_ids: &BTreeSet<Digest>,
    ) -> Result<PruneReport> {
        let _gc = self.lock("gc.lock", true)?;
        let mut report = PruneReport::default();
        let mut keep = blobs.clone();
        let mut keep_layers: BTreeSet<String> =
            diff_ids.iter().map(|d| d.hex().to_owned()).collect();
        // Dangling images stay until they are removed (docker keeps them until `image prune`).
        let manifests = self
            .tags()?
            .into_iter()
            .map(|t| t.manifest)
            .chain(self.untagged()?);
        for m in manifests {
            self.reachable_from(&m.digest, &mut keep)?;
            if let Ok(img) = self.image(&m) {
                keep_layers.extend(
                    img.config
                        .rootfs
                        .diff_ids
                        .iter()
                        .map(|d| d.hex().to_owned()),
                );
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in entries(&blobs)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = format!("sha256:{name}").parse::<Digest>().ok();
            if known.as_ref().is_some_and(|d| keep.contains(d)) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs_err::remove_file(entry.path()).map_err(|source| Error::Io {
                action: "remove",
                path: entry.path(),
                source,
            })?;
            if let Some(d) = &known {
                let _ = std::fs::remove_file(self.chunk_index_path(d));
            }
            report.blobs += 1;
            report.bytes += len;
        }
        let layers = self.root.join("layers/sha256");
        for entry in entries(&layers)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<diff_id>`, `<diff_id>.<key>` and their `.lock` files.
            let diff_id = name.split('.').next().unwrap_or_default();
            if !keep_layers.contains(diff_id) {
                self.remove_tree(&entry.path())?;
                report.layers += 1;
            }
        }
        report.temp_files = self.clean_tmp()?;
        Ok(report)
    }

    /// Removes the scratch directory's entries, except those of live processes: a `cairn
    /// run` or a build of another cairn may be using them.
    fn clean_tmp(&self) -> Result<u64> {
        let tmp = self.tmp();
        let mut n = 0;
        for entry in entries(&tmp)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let live = temp_owner(&name).is_some_and(|o| !owner::is_gone(o));
            if !live {
                self.remove_tree(&entry.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Verifies every blob against its digest, and that every tag's manifest, config and
    /// layers are present and well-formed.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let blobs = self.root.join("blobs/sha256");
        let mut present = BTreeSet::new();
        for entry in entries(&blobs)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            report.blobs += 1;
            let Ok(expected) = format!("sha256:{name}").parse::<Digest>() else {
                report.problems.push(format!(
                    "{}: not named by a sha256 digest",
                    entry.path().display()
                ));
                continue;
            };
            let mut w = HashingWriter::new(io::sink());
            let copied = File::open(entry.path()).and_then(|mut f| io::copy(&mut f, &mut w));
            if let Err(e) = copied {
                report
                    .problems
                    .push(format!("{}: unreadable: {e}", entry.path().display()));
                continue;
            }
            let (actual, _, _) = w.finish();
            if actual != expected {
                report.problems.push(format!(
                    "{}: content digest is {actual}",
                    entry.path().display()
                ));
                continue;
            }
            present.insert(expected);
        }
        // Named images by name, dangling ones by manifest digest.
        let images = self
            .tags()?
            .into_iter()
            .map(|t| (t.reference.to_string(), t.manifest))
            .chain(
                self.untagged()?
                    .into_iter()
                    .map(|m| (format!("untagged image {}", m.digest), m)),
            );
        for (name, manifest) in images {
            report.images += 1;
            if !present.contains(&manifest.digest) {
                report.problems.push(format!(
                    "{name}: manifest {} is missing or corrupt",
                    manifest.digest
                ));
                continue;
            }
            match self.image(&manifest) {
                Err(e) => report.problems.push(format!("{name}: {e}")),
                Ok(img) => {
                    let wanted = std::iter::once(&img.manifest.config).chain(&img.manifest.layers);
                    for d in wanted {
                        if !present.contains(&d.digest) {
                            report
                                .problems
                                .push(format!("{name}: blob {} is missing or corrupt", d.digest));
                        }
                    }
                    if img.config.rootfs.diff_ids.len() != img.manifest.layers.len() {
                        report.problems.push(format!(
                            "{name}: {} layers but {} diff_ids in the config",
                            img.manifest.layers.len(),
                            img.config.rootfs.diff_ids.len()
                        ));
                    }
                }
            }
        }
        let tmp = self.tmp();
        report.temp_files = entries(&tmp)?.len() as u64;
        Ok(report)
    }
}

/// Creates a directory of the store's own (not image content) that only its owner may enter.
fn private_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .at("create", path)
}

/// What to do with an existing store root, from its owner and mode and who opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCheck {
    Private,
    /// Ours, but group or others have permissions on it: take them away.
    Tighten,
    /// Not ours: why it is refused.
    Refuse(String),
}

fn check_root(owner: u32, mode: u32, me: u32) -> RootCheck {
    if owner != me {
        let writable = if mode & 0o022 != 0 {
            ", and is writable by others too"
        } else {
            ""
        };
        return RootCheck::Refuse(format!(
            "it belongs to uid {owner}, not to this user (uid {me}){writable}; its owner could \
             change what cairn runs and writes there: use a store of your own (--root, \
             CAIRN_ROOT) or give this one to uid {me}"
        ));
    }
    if mode & 0o077 != 0 {
        RootCheck::Tighten
    } else {
        RootCheck::Private
    }
}

/// Creates the store root 0700 (its parents as usual), or checks an existing one.
fn make_private_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent).map_err(|source| Error::Io {
            action: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).at("create", root),
    }
    let meta = std::fs::metadata(root).at("inspect", root)?;
    if !meta.is_dir() {
        return Err(Error::UnsafeStore {
            path: root.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let me = rustix::process::geteuid().as_raw();
    match check_root(meta.uid(), meta.mode() & 0o7777, me) {
        RootCheck::Private => Ok(()),
        RootCheck::Tighten => {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .at("make private (chmod 0700)", root)
        }
        RootCheck::Refuse(reason) => Err(Error::UnsafeStore {
            path: root.to_path_buf(),
            reason,
        }),
    }
}

/// Removes a file or a directory tree, making read-only directories writable on the way (as
/// unpacked layers may have them).
fn remove_tree(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                action: "inspect",
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).at("remove", path);
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Err(Error::Io {
                action: "remove",
                path: path.to_path_buf(),
                source: e,
            });
        }
        use std::os::unix::fs::PermissionsExt;
        for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
            if entry.file_type().is_dir() {
                let _ =
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
            }
        }
        std::fs::remove_dir_all(path).at("remove", path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("store")).unwrap();
        (dir, s)
    }

    fn image(s: &Store, layer: &[u8]) -> Descriptor {
        let d = s.put_blob(layer).unwrap();
        let mut config = ImageConfig::scratch();
        config.rootfs.diff_ids.push(d.clone());
        s.put_image(
            &config,
            vec![Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: d,
                size: layer.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            }],
        )
        .unwrap()
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

    #[test]
    fn root_checks() {
        let cases = [
            (1000, 0o700, 1000, RootCheck::Private),
            (1000, 0o755, 1000, RootCheck::Tighten),
            (1000, 0o770, 1000, RootCheck::Tighten),
            (1000, 0o1777, 1000, RootCheck::Tighten),
            (0, 0o700, 0, RootCheck::Private),
        ];
        for (owner, mode, me, want) in cases {
            assert_eq!(check_root(owner, mode, me), want, "{owner} {mode:o} {me}");
        }
        for (owner, mode, me, writable) in [
            (1000, 0o700, 0, false),
            (0, 0o777, 1000, true),
            (1001, 0o755, 1000, false),
            (1001, 0o720, 1000, true),
        ] {
            let RootCheck::Refuse(why) = check_root(owner, mode, me) else {
                panic!("{owner} {mode:o} {me} is not refused");
            };
            assert!(why.contains(&format!("uid {owner}")), "{why}");
            assert_eq!(why.contains("writable by others"), writable, "{why}");
        }
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
