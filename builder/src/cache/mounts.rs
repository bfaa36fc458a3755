//! Cache mounts that travel: the `type=cache` directories a build used, exported with its
//! cache as one content-addressed blob each (`--cache-to …,mounts=true`), and restored from an
//! imported cache (`--cache-from`) into a fresh store before the first step that mounts them.
//!
//! A mount is named by the directory name `step/mount.rs` derives (its id, its `from` seed
//! and its owner, hashed): the same Dockerfile on another machine names the same directory.
//! Its blob is the directory as a deterministic layer tar, so an unchanged cache exports to
//! the same digest and a registry push skips it. The blob is untrusted on the way in: before
//! anything is written, its uncompressed tar must be exactly what the cache's records say
//! (size and diff_id) and pass `check_layer` (no absolute names, no `..`, nothing below a
//! symlink the tar made); then it is unpacked by the sandbox, which keeps every path inside
//! the directory and leaves device nodes out, into scratch space renamed into place.

use std::io::Read;
use std::path::Path;

use cairn_layers::Store;
use cairn_layers::compress::{Compression, LayerCompression};
use cairn_layers::digest::HashingReader;

use super::records::{Cache, ExportedMount};
use crate::error::{CacheError, Error, Result, io_err};
use crate::sandbox::{LayerBlob, Sandbox};

/// The most an imported mount may hold, uncompressed: what its records claim is checked
/// against this before a byte is read, and the tar is read no further than that claim.
pub const IMPORT_LIMIT: u64 = 64 << 30;

/// The default of `mounts-max-size`: large enough for a distribution's package cache.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// `--cache-to …,mounts=true`: how the mounts are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountExport {
    /// The most the mounts' blobs may add up to; the least recently used are left out.
    pub max_size: u64,
}

/// Whether a key names a cache directory: a name cairn derives, never a path.
fn valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Cache {
    /// Notes that a step of this build mounts the cache under `key`, for `--cache-to`.
    pub fn mount_used(&self, key: &str, id: &str) {
        if let Ok(mut used) = self.mounts.used.lock() {
            used.entry(key.to_owned()).or_insert_with(|| id.to_owned());
        }
    }

    /// The mounts an imported cache carries (the first cache to name a key wins).
    pub(super) fn import_mounts(&self, mounts: Vec<ExportedMount>) {
        let Ok(mut imported) = self.mounts.imported.lock() else {
            return;
        };
        for m in mounts.into_iter().filter(|m| valid_key(&m.key)) {
            imported.entry(m.key.clone()).or_insert(m);
        }
    }

    /// Restores the imported mount under `key` into `dest`, which does not exist yet, with
    /// `owner` (uid, gid, mode) on the directory itself, as a new cache directory gets.
    /// False when no imported cache has it. On an error nothing is left at `dest`.
    pub fn restore_mount(
        &self,
        store: &Store,
        sb: &Sandbox,
        key: &str,
        dest: &Path,
        owner: (u32, u32, u32),
    ) -> Result<bool> {
        let Some(m) = self
            .mounts
            .imported
            .lock()
            .ok()
            .and_then(|i| i.get(key).cloned())
        else {
            return Ok(false);
        };
        if !self.fetch(store, &m.layer.digest) {
            return Err(refused(&m, "its blob cannot be fetched"));
        }
        let path = store.blob_path(&m.layer.digest);
        check_blob(&path, &m)?;
        let work = store.temp_path("mount");
        std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
        let root_entry = work.join("root.tar");
        std::fs::write(&root_entry, root_tar(owner)).map_err(io_err("write", &root_entry))?;
        let unpacked = work.join("dir");
        let blobs = vec![
            LayerBlob {
                path,
                media_type: m.layer.media_type.clone(),
            },
            LayerBlob {
                path: root_entry,
                media_type: Compression::None.layer_media_type().into(),
            },
        ];
        let result = sb.unpack_cache(blobs, &unpacked).and_then(|()| {
            match std::fs::rename(&unpacked, dest) {
                // Another step restored or made it first: theirs stands.
                Err(e) if !dest.exists() => Err(io_err("rename into", dest)(e)),
                _ => Ok(()),
            }
        });
        if work.exists() {
            let _ = sb.remove(&[work]);
        }
        result.map(|()| true)
    }

    /// The mounts to export with this build's cache: each one its steps named, tarred from
    /// its directory in `store` (under its lock, so a `sharing=locked` step elsewhere is not
    /// halfway through it), and each imported one not tarred so, carried as it came (with its
    /// last use: a step that was a hit never mounted it).
    /// Over `opts.max_size`, the least recently used are left out; `left_out` hears of each.
    pub fn export_mounts(
        &self,
        store: &Store,
        sb: &Sandbox,
        opts: MountExport,
        compression: LayerCompression,
        left_out: &dyn Fn(&ExportedMount),
    ) -> Result<Vec<ExportedMount>> {
        let used = self
            .mounts
            .used
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        let imported = self
            .mounts
            .imported
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default();
        let now = jiff::Timestamp::now().as_second();
        let dir = store.root().join("cache");
        let mut all = Vec::new();
        let empty = store.temp_path("mount");
        std::fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
        let mut tarred_keys = std::collections::BTreeSet::new();
        let tarred = (|| -> Result<()> {
            for (key, id) in &used {
                let source = dir.join(key);
                // A hit's mount that this store never made: carried below, if imported.
                if !source.is_dir() {
                    continue;
                }
                tarred_keys.insert(key.clone());
                let lock_path = dir.join(format!("{key}.lock"));
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io_err("open", &lock_path))?;
                lock.lock().map_err(io_err("lock", &lock_path))?;
                let previous = imported.get(key).map(|m| &m.layer.digest);
                let layer = sb.tar_cache_dir(&source, &empty, &mut |r| {
                    Ok(cairn_layers::layer::write_layer_reusing(
                        store,
                        compression,
                        previous,
                        |w| {
                            std::io::copy(r, w).map(drop).map_err(|source| {
                                cairn_layers::Error::Stream {
                                    action: format!("read cache mount {id}"),
                                    source,
                                }
                            })
                        },
                    )?)
                })?;
                drop(lock);
                all.push(ExportedMount {
                    key: key.clone(),
                    id: id.clone(),
                    layer: layer.descriptor,
                    diff_id: layer.diff_id,
                    size: layer.uncompressed_size,
                    last_used: now,
                });
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir(&empty);
        tarred?;
        for (key, m) in imported {
            if !tarred_keys.contains(&key) && self.fetch(store, &m.layer.digest) {
                all.push(m);
            }
        }
        let (kept, dropped) = select(all, opts.max_size);
        for m in &dropped {
            left_out(m);
        }
        Ok(kept)
    }
}

/// The mounts that fit in `max` bytes of blobs, the most recently used first (then by key,
/// so the choice is the same anywhere); and those left out.
fn select(mut all: Vec<ExportedMount>, max: u64) -> (Vec<ExportedMount>, Vec<ExportedMount>) {
    all.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
    let (mut kept, mut dropped, mut total) = (Vec::new(), Vec::new(), 0u64);
    for m in all {
        match total.checked_add(m.layer.size) {
            Some(t) if t <= max => {
                total = t;
                kept.push(m);
            }
            _ => dropped.push(m),
        }
    }
    kept.sort_by(|a, b| a.key.cmp(&b.key));
    (kept, dropped)
}

fn refused(m: &ExportedMount, reason: impl Into<String>) -> Error {
    CacheError::MountRefused {
        id: m.id.clone(),
        reason: reason.into(),
    }
    .into()
}

/// Reads the blob at `path` through: its tar must be a plain tree (`check_layer`) of exactly
/// the size and diff_id the records give, which are within [`IMPORT_LIMIT`].
fn check_blob(path: &Path, m: &ExportedMount) -> Result<()> {
    if m.size > IMPORT_LIMIT {
        return Err(refused(
            m,
            format!(
                "it claims {} bytes, more than the {IMPORT_LIMIT} an imported mount may hold",
                m.size
            ),
        ));
    }
    let compression = Compression::from_media_type(&m.layer.media_type).ok_or_else(|| {
        refused(
            m,
            format!("media type {} is not a layer's", m.layer.media_type),
        )
    })?;
    let file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let plain = cairn_layers::compress::decompress(file, compression)?;
    // One byte past the claim is enough to know it is a lie.
    let mut hashed = HashingReader::new(plain.take(m.size.saturating_add(1)));
    read_checked(&mut hashed).map_err(|source| CacheError::MountBlob {
        id: m.id.clone(),
        source,
    })?;
    let (digest, len) = hashed.finish();
    if len != m.size || digest != m.diff_id {
        return Err(refused(
            m,
            "its tar is not the one its records name (size or diff_id differ)",
        ));
    }
    Ok(())
}

/// Reads a tar through `check_layer` to its end.
fn read_checked(tar: impl Read) -> cairn_layers::Result<()> {
    let mut rest = cairn_layers::apply::check_layer(tar)?;
    std::io::copy(&mut rest, &mut std::io::sink())
        .map(drop)
        .map_err(|source| cairn_layers::Error::Stream {
            action: "read the mount's tar".into(),
            source,
        })
}

/// A tar of one entry, the directory itself (`./`) with the owner and mode a new cache
/// directory gets: the mount's blob holds only what is inside.
fn root_tar(owner: (u32, u32, u32)) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    let _ = h.set_path("./");
    h.set_uid(owner.0.into());
    h.set_gid(owner.1.into());
    h.set_mode(owner.2);
    h.set_size(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
mod tests {
    use cairn_layers::Digest;
    use cairn_layers::image::Descriptor;

    use super::*;

    fn mount(key: &str, size: u64, last_used: i64) -> ExportedMount {
        ExportedMount {
            key: key.into(),
            id: key.into(),
            layer: Descriptor {
                media_type: Compression::Gzip.layer_media_type().into(),
                digest: Digest::of(key.as_bytes()),
                size,
                platform: None,
                annotations: Default::default(),
            },
            diff_id: Digest::of(b""),
            size,
            last_used,
        }
    }

    /// Mounts as (key, blob size, last used), the cap, the keys kept, the keys left out.
    type SelectCase<'a> = (&'a [(&'a str, u64, i64)], u64, &'a [&'a str], &'a [&'a str]);
    /// A tar's entries as (name, type, link target), and whether the blob passes.
    type BlobCase<'a> = (&'a [(&'a str, tar::EntryType, &'a str)], bool);

    #[test]
    fn select_keeps_the_most_recently_used_that_fit() {
        let cases: &[SelectCase<'_>] = &[
            (&[], 10, &[], &[]),
            (&[("a", 5, 1), ("b", 5, 2)], 10, &["a", "b"], &[]),
            (&[("a", 5, 1), ("b", 6, 2)], 10, &["b"], &["a"]),
            (
                &[("a", 6, 3), ("b", 6, 2), ("c", 4, 1)],
                10,
                &["a", "c"],
                &["b"],
            ),
            (&[("a", 11, 3)], 10, &[], &["a"]),
            (&[("b", 5, 1), ("a", 5, 1)], 5, &["a"], &["b"]),
            (&[("a", u64::MAX, 2), ("b", 1, 1)], u64::MAX, &["a"], &["b"]),
        ];
        for (mounts, cap, kept, left) in cases {
            let all = mounts.iter().map(|(k, s, t)| mount(k, *s, *t)).collect();
            let (k, l) = select(all, *cap);
            let keys = |v: &[ExportedMount]| v.iter().map(|m| m.key.clone()).collect::<Vec<_>>();
            assert_eq!(keys(&k), *kept, "{mounts:?} cap {cap}");
            assert_eq!(keys(&l), *left, "{mounts:?} cap {cap}");
        }
    }

    #[test]
    fn keys_are_directory_names_only() {
        for (key, ok) in [
            ("0123456789abcdef0123456789abcdef", true),
            ("0123456789ABCDEF0123456789abcdef", false),
            ("../../../../etc/passwd0123456789", false),
            ("0123456789abcdef", false),
            ("", false),
        ] {
            assert_eq!(valid_key(key), ok, "{key}");
        }
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            // Raw names: the tar crate's own setters refuse `..` and absolute paths.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn check_blob_refuses_escapes_and_lies() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let cases: &[BlobCase<'_>] = &[
            (&[("a/", Directory, ""), ("a/f", Regular, "")], true),
            (&[("link", Symlink, "/etc"), ("other", Regular, "")], true),
            (&[("../escape", Regular, "")], false),
            (&[("/abs", Regular, "")], false),
            (
                &[("link", Symlink, "/etc"), ("link/passwd", Regular, "")],
                false,
            ),
            (&[("up", Symlink, ".."), ("up/x", Regular, "")], false),
        ];
        for (i, (entries, ok)) in cases.iter().enumerate() {
            let tar = tar_of(entries);
            let path = dir.path().join(format!("blob{i}"));
            std::fs::write(&path, &tar).unwrap();
            let mut m = mount("k", tar.len() as u64, 0);
            m.layer.media_type = Compression::None.layer_media_type().into();
            m.diff_id = Digest::of(&tar);
            assert_eq!(check_blob(&path, &m).is_ok(), *ok, "{entries:?}");
        }
        let tar = tar_of(&[("f", Regular, "")]);
        let path = dir.path().join("lie");
        std::fs::write(&path, &tar).unwrap();
        let mut m = mount("k", tar.len() as u64, 0);
        m.layer.media_type = Compression::None.layer_media_type().into();
        m.diff_id = Digest::of(b"something else");
        assert!(check_blob(&path, &m).is_err(), "a wrong diff_id");
        m.diff_id = Digest::of(&tar);
        m.size -= 512;
        assert!(check_blob(&path, &m).is_err(), "a wrong size");
        m.size = IMPORT_LIMIT + 1;
        assert!(check_blob(&path, &m).is_err(), "over the limit");
    }
}
