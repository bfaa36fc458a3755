//! The build cache: chained step keys, the records of what a step made, and the memo of file
//! content digests keyed by file metadata.
//!
//! A step's key hashes its parent step's key and, framed field by field, everything the step's
//! result depends on (see [`schema`] for every field). A record under the key holds the
//! layer the step made and its history entry; a hit adds that layer without running the step.
//! Records live in `<store>/buildcache/records/<key>.json`, the memo in
//! `<store>/buildcache/memo/` (see [`memo`]).
//!
//! [`schema`] lists every field of every kind of step's key; `key.rs` makes keys and explains
//! misses; `records.rs` holds the [`Cache`] and what it keeps on disk; `listings.rs` layer listings, read ahead; `transfer.rs` imports
//! and exports caches (`--cache-from`, `--cache-to`); `mounts.rs` the cache mounts that travel
//! with them (`mounts=true`); `prune.rs` evicts.

mod inflight;
mod key;
mod listings;
pub mod memo;
mod mounts;
mod prune;
mod records;
pub mod schema;
mod transfer;

pub use inflight::{Claim, Claimed};
pub use key::{Key, KeyHasher, Summary, SummaryParts};
pub use mounts::{DEFAULT_MAX_SIZE, IMPORT_LIMIT, MountExport};
pub use prune::{CachePruned, PrunePolicy};
pub use records::{Cache, ExportedMount, LayerRecord, Record, RemoteFetch, file_digests};
pub use transfer::{
    CACHE_CONFIG, CacheError, CacheExport, CacheImport, INLINE_FIELD, import_registry,
};
