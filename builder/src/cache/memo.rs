//! The memo of context file digests: a file's sha256 remembered with the metadata it had
//! (inode, size, mtime, ctime), as git's index does, so an unchanged file costs a stat.
//!
//! One memo file per context directory (`<store>/buildcache/memo/<hash of the root>`), so a
//! build reads and writes only the entries of its own context. The file is binary, read on a
//! thread of its own while the context is walked, and ends with the sha256 of what precedes it:
//! a torn or corrupted memo reads as empty (every file is hashed again), never as wrong digests.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

const MAGIC: &[u8] = b"cairn-memo 1\n";

/// Saves an entry has gone unused before it is dropped: a context's files that no build
/// copies any more (deleted, renamed, no longer named) leave the memo after a while.
const MAX_AGE: u32 = 32;

/// A file whose mtime or ctime is this close to the moment its digest was taken may change
/// again within the same timestamp tick without its metadata showing it ("racy git"): its
/// digest is used for this build only.
const RACY_NS: i64 = 2_000_000_000;

/// What the memo keeps of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            size: m.len(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    stamp: Stamp,
    digest: [u8; 32],
    /// The save generation that last used it.
    generation: u32,
}

#[derive(Debug, Default)]
struct Table {
    generation: u32,
    /// By path relative to the shard's root, as bytes.
    entries: HashMap<Box<[u8]>, Entry>,
}

/// The memo of one context directory.
#[derive(Debug)]
struct Shard {
    root: PathBuf,
    file: PathBuf,
    table: OnceLock<Mutex<Table>>,
    loading: Mutex<Option<JoinHandle<Table>>>,
    changed: AtomicBool,
}

impl Shard {
    fn table(&self) -> &Mutex<Table> {
        self.table.get_or_init(|| {
            let handle = self.loading.lock().ok().and_then(|mut l| l.take());
            Mutex::new(handle.and_then(|h| h.join().ok()).unwrap_or_default())
        })
    }
}

/// The memos of the context directories a build reads.
#[derive(Debug)]
pub struct FileMemo {
    dir: PathBuf,
    shards: Mutex<Vec<Arc<Shard>>>,
    racy_ns: i64,
}

impl FileMemo {
    /// Memos kept under `dir`; nothing is read until [`FileMemo::watch`].
    pub fn new(dir: PathBuf) -> FileMemo {
        FileMemo {
            dir,
            shards: Mutex::default(),
            racy_ns: RACY_NS,
        }
    }

    /// A memo that trusts files changed a moment ago: a test's files all are.
    #[cfg(test)]
    pub(crate) fn trusting(dir: PathBuf) -> FileMemo {
        FileMemo {
            racy_ns: 0,
            ..FileMemo::new(dir)
        }
    }

    /// Remembers digests for files under `root` (absolute), starting to read what earlier
    /// builds learned about it on a thread of its own. Files elsewhere are hashed each time.
    pub fn watch(&self, root: &Path) {
        let Ok(mut shards) = self.shards.lock() else {
            return;
        };
        if shards.iter().any(|s| s.root == root) {
            return;
        }
        let name = hex::encode(&Sha256::digest(root.as_os_str().as_bytes())[..16]);
        let file = self.dir.join("memo").join(name);
        let path = file.clone();
        let loading = std::thread::Builder::new()
            .name("cairn-memo".into())
            .spawn(move || read_table(&path).unwrap_or_default())
            .ok();
        shards.push(Arc::new(Shard {
            root: root.to_path_buf(),
            file,
            table: OnceLock::new(),
            loading: Mutex::new(loading),
            changed: AtomicBool::new(false),
        }));
    }

    /// The shard `path` falls under, and the path relative to its root.
    fn shard_of<'p>(&self, path: &'p Path) -> Option<(Arc<Shard>, &'p [u8])> {
        let shards = self.shards.lock().ok()?;
        let (i, rel) = innermost(&shards, path)?;
        Some((shards[i].clone(), rel))
    }

    /// The sha256 of a file's content: remembered when its metadata is what it was, else read.
    pub fn digest(&self, path: &Path, meta: &std::fs::Metadata) -> io::Result<[u8; 32]> {
        let stamp = Stamp::of(meta);
        let shard = self.shard_of(path);
        if let Some((shard, rel)) = &shard
            && let Ok(mut t) = shard.table().lock()
        {
            let generation = t.generation;
            if let Some(e) = t.entries.get_mut(*rel)
                && e.stamp == stamp
            {
                e.generation = generation;
                return Ok(e.digest);
            }
        }
        let digest = sha256_file(path)?;
        if let Some((shard, rel)) = shard
            && !racy(&stamp, self.racy_ns)
            && let Ok(mut t) = shard.table().lock()
        {
            let generation = t.generation;
            t.entries.insert(
                rel.into(),
                Entry {
                    stamp,
                    digest,
                    generation,
                },
            );
            shard.changed.store(true, Ordering::Relaxed);
        }
        Ok(digest)
    }

    /// The remembered digest of each of `files`, in order (None where the memo has none
    /// for the file as it is now), in one pass under one lock per shard.
    pub fn lookup(&self, files: &[(&Path, &std::fs::Metadata)]) -> Vec<Option<[u8; 32]>> {
        let shards: Vec<Arc<Shard>> = match self.shards.lock() {
            Ok(s) => s.clone(),
            Err(_) => return vec![None; files.len()],
        };
        let mut tables: Vec<_> = shards.iter().map(|s| s.table().lock().ok()).collect();
        files
            .iter()
            .map(|(p, m)| {
                let (i, rel) = innermost(&shards, p)?;
                let t = tables[i].as_mut()?;
                let generation = t.generation;
                let e = t.entries.get_mut(rel)?;
                (e.stamp == Stamp::of(m)).then(|| {
                    e.generation = generation;
                    e.digest
                })
            })
            .collect()
    }

    /// Writes back the memos that learned something, dropping entries no save has used for
    /// a while.
    pub fn save(&self) -> io::Result<()> {
        let shards: Vec<Arc<Shard>> = match self.shards.lock() {
            Ok(s) => s.clone(),
            Err(_) => return Ok(()),
        };
        for s in shards {
            if !s.changed.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(mut t) = s.table().lock() else {
                continue;
            };
            let now = t.generation;
            t.entries
                .retain(|_, e| now.wrapping_sub(e.generation) <= MAX_AGE);
            write_table(&s.file, &t, now.wrapping_add(1))?;
        }
        Ok(())
    }
}

/// The index of the innermost shard whose root holds `path`, and the path relative to it.
/// Compared as bytes: `Path::strip_prefix` walks components, a third of a no-op rebuild's
/// lookups.
fn innermost<'p>(shards: &[Arc<Shard>], path: &'p Path) -> Option<(usize, &'p [u8])> {
    let p = path.as_os_str().as_bytes();
    shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let root = s.root.as_os_str().as_bytes();
            let rest = p.strip_prefix(root)?;
            let rel = if root.ends_with(b"/") {
                rest
            } else {
                rest.strip_prefix(b"/")?
            };
            Some((i, rel))
        })
        .max_by_key(|(i, _)| shards[*i].root.as_os_str().len())
}

/// Lower-case hex of `bytes`, by table: the `hex` crate's char iterator is a tenth of a
/// no-op rebuild's key work.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Whether a file changed so recently that a later change could keep its metadata.
fn racy(stamp: &Stamp, window_ns: i64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    now.saturating_sub(stamp.mtime_ns.max(stamp.ctime_ns)) < window_ns
}

/// The sha256 of a file's content.
pub(crate) fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// Reads a memo file; None when it is missing, torn or not one.
fn read_table(path: &Path) -> Option<Table> {
    let bytes = std::fs::read(path).ok()?;
    let mut r = cairn_layers::digest::unseal(&bytes)?.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = r.split_at_checked(n)?;
        r = rest;
        Some(head)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let generation = u32_of(take(4)?);
    let count = u32_of(take(4)?) as usize;
    let mut entries = HashMap::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let len = u32_of(take(4)?) as usize;
        let rel: Box<[u8]> = take(len)?.into();
        let fixed = take(8 * 4 + 4 + 32)?;
        let stamp = Stamp {
            ino: u64_of(&fixed[0..8]),
            size: u64_of(&fixed[8..16]),
            mtime_ns: u64_of(&fixed[16..24]) as i64,
            ctime_ns: u64_of(&fixed[24..32]) as i64,
        };
        let entry = Entry {
            stamp,
            generation: u32_of(&fixed[32..36]),
            digest: fixed[36..68].try_into().ok()?,
        };
        entries.insert(rel, entry);
    }
    take(1).is_none().then_some(Table {
        generation,
        entries,
    })
}

/// Writes a memo file, sealed, in place of the old one.
fn write_table(path: &Path, t: &Table, generation: u32) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 + t.entries.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(t.entries.len() as u32).to_le_bytes());
    for (rel, e) in &t.entries {
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        out.extend_from_slice(rel);
        out.extend_from_slice(&e.stamp.ino.to_le_bytes());
        out.extend_from_slice(&e.stamp.size.to_le_bytes());
        out.extend_from_slice(&e.stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&e.stamp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&e.generation.to_le_bytes());
        out.extend_from_slice(&e.digest);
    }
    crate::fsutil::write_atomic(path, &cairn_layers::digest::seal(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memo that trusts files changed a moment ago (the tests' files all are).
    fn trusting(dir: &Path) -> FileMemo {
        FileMemo {
            racy_ns: 0,
            ..FileMemo::new(dir.join("cache"))
        }
    }

    fn old(path: &Path) -> std::fs::Metadata {
        // Old enough not to be racy.
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
        std::fs::metadata(path).unwrap()
    }

    /// A context directory under `dir` holding one old file `f` that says "one".
    fn one_file(dir: &Path) -> (PathBuf, PathBuf, std::fs::Metadata) {
        let ctx = dir.join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let f = ctx.join("f");
        std::fs::write(&f, "one").unwrap();
        let m = old(&f);
        (ctx, f, m)
    }

    /// How many of `files` the memo has no digest for.
    fn unknown(memo: &FileMemo, files: &[(&Path, &std::fs::Metadata)]) -> usize {
        memo.lookup(files).iter().filter(|d| d.is_none()).count()
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        for bytes in [&b""[..], b"\x00\x0f\xf0\xff", b"cairn"] {
            assert_eq!(hex(bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn remembers_by_metadata_and_across_saves() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, f, m) = one_file(dir.path());
        let memo = trusting(dir.path());
        memo.watch(&ctx);
        let one: [u8; 32] = Sha256::digest(b"one").into();
        assert_eq!(memo.digest(&f, &m).unwrap(), one);
        assert_eq!(unknown(&memo, &[(&f, &m)]), 0);
        memo.save().unwrap();

        // The same metadata: the memo answers, even when the content went behind its back.
        std::fs::write(&f, "six").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(m.modified().unwrap())
            .unwrap();
        let again = trusting(dir.path());
        again.watch(&ctx);
        let mut same = std::fs::metadata(&f).unwrap();
        // ctime moved with the write: the memo notices.
        assert_ne!(Stamp::of(&same), Stamp::of(&m));
        assert_eq!(unknown(&again, &[(&f, &same)]), 1);
        same = old(&f);
        let six: [u8; 32] = Sha256::digest(b"six").into();
        assert_eq!(again.digest(&f, &same).unwrap(), six);
    }

    #[test]
    fn racy_files_and_files_outside_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let fresh = ctx.join("fresh");
        std::fs::write(&fresh, "x").unwrap();
        let mf = std::fs::metadata(&fresh).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "y").unwrap();
        let mo = std::fs::metadata(&outside).unwrap();

        // Just written: a change within the same tick could keep its metadata.
        let careful = FileMemo::new(dir.path().join("cache"));
        careful.watch(&ctx);
        careful.digest(&fresh, &mf).unwrap();
        assert_eq!(unknown(&careful, &[(&fresh, &mf)]), 1);

        let memo = trusting(dir.path());
        memo.watch(&ctx);
        memo.digest(&fresh, &mf).unwrap();
        memo.digest(&outside, &mo).unwrap();
        assert_eq!(unknown(&memo, &[(&fresh, &mf)]), 0);
        assert_eq!(unknown(&memo, &[(&outside, &mo)]), 1);
    }

    #[test]
    fn a_damaged_memo_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, f, m) = one_file(dir.path());
        let memo = trusting(dir.path());
        memo.watch(&ctx);
        memo.digest(&f, &m).unwrap();
        memo.save().unwrap();
        let file = std::fs::read_dir(dir.path().join("cache/memo"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = std::fs::read(&file).unwrap();
        assert!(read_table(&file).is_some());
        for cut in [good.len() - 1, good.len() / 2, 3] {
            std::fs::write(&file, &good[..cut]).unwrap();
            assert!(read_table(&file).is_none(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        let at = MAGIC.len() + 20;
        flipped[at] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(read_table(&file).is_none());
        let again = trusting(dir.path());
        again.watch(&ctx);
        assert_eq!(unknown(&again, &[(&f, &m)]), 1);
    }

    #[test]
    fn unused_entries_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        let (a, b) = (ctx.join("a"), ctx.join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let (ma, mb) = (old(&a), old(&b));
        let memo = trusting(dir.path());
        memo.watch(&ctx);
        memo.digest(&a, &ma).unwrap();
        memo.digest(&b, &mb).unwrap();
        memo.save().unwrap();
        // Each later build uses only `a` and learns one new file, so it saves.
        for i in 0..=MAX_AGE {
            let memo = trusting(dir.path());
            memo.watch(&ctx);
            memo.digest(&a, &ma).unwrap();
            let n = ctx.join(format!("n{i}"));
            std::fs::write(&n, "n").unwrap();
            let mn = old(&n);
            memo.digest(&n, &mn).unwrap();
            memo.save().unwrap();
        }
        let memo = trusting(dir.path());
        memo.watch(&ctx);
        assert_eq!(unknown(&memo, &[(&a, &ma)]), 0);
        assert_eq!(unknown(&memo, &[(&b, &mb)]), 1);
    }
}
