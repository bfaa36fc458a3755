//! `cairn prune` of the build cache: records evicted by age, size or all, then the store
//! pruned of what no tag or remaining record needs.

use std::collections::HashMap;

use cairn_layers::image::Descriptor;
use cairn_layers::{Digest, Store};

use super::key::Key;
use super::records::{Cache, Record};
use crate::error::Result;

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
