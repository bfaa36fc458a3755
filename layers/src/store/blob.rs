//! Blob writes: temp file, fsync, verify, rename into place; and each gzip blob's chunk index.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::owner;

use super::{Slot, Store};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

/// A temp file name unique across processes and threads: `PREFIX-PID-sSTART-N-NANOS`, so that
/// a later cairn can tell whether the process that made it is gone ([`crate::owner`]).
pub(super) fn temp_name(prefix: &str) -> String {
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
pub(super) fn temp_owner(name: &str) -> Option<owner::Owner> {
    let (prefix, _) = name.split_once('-')?;
    owner::parse(name, prefix)
}

/// Closes a written file and reports what close reports: some filesystems (network ones,
/// and full ones) only tell there that the data did not make it.
fn close(file: File, path: &Path) -> Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // libc, not rustix: rustix::io::close drops close's error, which is the point here, and its
    // try_close is an opt-in feature its authors ask people not to rely on.
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

/// fsyncs a directory so a rename into it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at("sync", dir)
}

/// Writes `bytes` to `path` atomically: temp file in `tmp`, fsync, rename, fsync the directory.
pub(super) fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
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

/// A blob being written: bytes go to a temp file and are hashed on the way (unless its
/// producer hashes them itself: a layer writer's). Dropped without a commit (an error, a
/// panic), it removes its temp file.
#[derive(Debug)]
pub struct BlobWriter<'s> {
    store: &'s Store,
    temp: PathBuf,
    /// None once a commit has taken the bytes (and with them the temp file's fate).
    out: Option<Out>,
}

/// The bytes' way to the file: hashed here, or counted only when the producer hashes them
/// itself (a layer writer already computes the blob's digest; hashing a large layer twice
/// was a third of its cost).
#[derive(Debug)]
enum Out {
    Hashed(HashingWriter<io::BufWriter<Writeback>>),
    Trusted {
        buf: io::BufWriter<Writeback>,
        len: u64,
    },
}

impl Out {
    /// The digest (None for a trusted writer), the length, and the buffered file.
    fn finish(self) -> (Option<Digest>, u64, io::BufWriter<Writeback>) {
        match self {
            Out::Hashed(h) => {
                let (digest, len, buf) = h.finish();
                (Some(digest), len, buf)
            }
            Out::Trusted { buf, len } => (None, len, buf),
        }
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Hashed(h) => h.write(buf),
            Out::Trusted { buf: out, len } => {
                let n = out.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Hashed(h) => h.flush(),
            Out::Trusted { buf, .. } => buf.flush(),
        }
    }
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
pub(super) const WRITEBACK_WINDOW: u64 = 8 << 20;

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
        // Best effort: errors surface at the fsync in commit. libc, as rustix has no
        // sync_file_range.
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
    fn out(&mut self) -> io::Result<&mut Out> {
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
    fn take(mut self) -> Result<(PathBuf, Out)> {
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
            let digest = trusted(digest, expected, &temp)?;
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
            .map(|()| digest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map(|digest| (digest, size))
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
        let digest = match trusted(digest, expected, &temp) {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
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

/// The blob's digest: the one hashed here, or for a trusted writer the one its producer
/// computed, which a commit must then be given.
fn trusted(
    hashed: Option<Digest>,
    expected: Option<(&Digest, Option<u64>)>,
    temp: &Path,
) -> Result<Digest> {
    match (hashed, expected) {
        (Some(d), _) => Ok(d),
        (None, Some((want, _))) => Ok(want.clone()),
        (None, None) => Err(Error::invalid(
            format!("blob {}", temp.display()),
            "committed without the digest its producer computed",
        )),
    }
}

impl Store {
    /// Starts writing a blob whose digest is known only at the end.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        self.new_blob_writer(|buf| Out::Hashed(HashingWriter::new(buf)))
    }

    /// A [`Store::blob_writer`] for a producer that hashes every byte it writes itself: the
    /// commit must be given that digest and stores the blob under it without hashing again.
    pub(crate) fn blob_writer_trusting(&self) -> Result<BlobWriter<'_>> {
        self.new_blob_writer(|buf| Out::Trusted { buf, len: 0 })
    }

    fn new_blob_writer(
        &self,
        out: impl FnOnce(io::BufWriter<Writeback>) -> Out,
    ) -> Result<BlobWriter<'_>> {
        let temp = self.tmp().join(temp_name("blob"));
        let file = File::create(&temp).at("create", &temp)?;
        let buf = io::BufWriter::with_capacity(1 << 20, Writeback::new(file));
        Ok(BlobWriter {
            store: self,
            temp,
            out: Some(out(buf)),
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

    pub(super) fn chunk_index_path(&self, blob: &Digest) -> PathBuf {
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
}
