//! A gzip blob's chunk index, and the reuse of unchanged chunks when a layer is compressed again.

use sha2::{Digest as _, Sha256};

/// One deflated chunk of a gzip blob: what it was made from (`key`), where its bytes lie in
/// the blob, and their sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub key: [u8; 32],
    pub offset: u64,
    pub len: u64,
    pub sha256: [u8; 32],
}

const CHUNK_INDEX_MAGIC: &[u8] = b"cairn-chunks 1\n";

/// Serializes a blob's chunks, [sealed](crate::digest::seal).
pub fn chunks_to_bytes(chunks: &[Chunk]) -> Vec<u8> {
    let mut out = CHUNK_INDEX_MAGIC.to_vec();
    for c in chunks {
        out.extend_from_slice(&c.key);
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
        out.extend_from_slice(&c.sha256);
    }
    crate::digest::seal(out)
}

/// Parses [`chunks_to_bytes`]; None when torn, damaged or something else.
pub fn chunks_from_bytes(bytes: &[u8]) -> Option<Vec<Chunk>> {
    let entries = crate::digest::unseal(bytes)?.strip_prefix(CHUNK_INDEX_MAGIC)?;
    if entries.len() % 80 != 0 {
        return None;
    }
    entries
        .chunks_exact(80)
        .map(|e| {
            Some(Chunk {
                key: e[..32].try_into().ok()?,
                offset: u64::from_le_bytes(e[32..40].try_into().ok()?),
                len: u64::from_le_bytes(e[40..48].try_into().ok()?),
                sha256: e[48..80].try_into().ok()?,
            })
        })
        .collect()
}

/// The deflated chunks of an earlier gzip blob, by what they were deflated from: a writer
/// copies one instead of deflating again when a chunk's bytes, the 32 KiB before them and the
/// level match (a file that grew at its end costs a chunk or two, not a deflate of all of it).
/// The bytes copied are checked against their sha256, so a damaged blob is deflated around,
/// never copied; and they are the bytes deflating would give, so the blob is the same.
#[derive(Debug)]
pub struct ChunkReuse {
    file: std::fs::File,
    pub(super) chunks: std::collections::HashMap<[u8; 32], Chunk>,
}

impl ChunkReuse {
    pub fn new(blob: std::fs::File, chunks: Vec<Chunk>) -> ChunkReuse {
        ChunkReuse {
            file: blob,
            chunks: chunks.into_iter().map(|c| (c.key, c)).collect(),
        }
    }

    /// The chunk's bytes, if the blob still holds them as they were.
    pub(super) fn read(&self, c: &Chunk) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; usize::try_from(c.len).ok()?];
        self.file.read_exact_at(&mut buf, c.offset).ok()?;
        (Sha256::digest(&buf)[..] == c.sha256[..]).then_some(buf)
    }
}

/// What a chunk's deflated bytes depend on: the level asked for (the probe's choice follows
/// from the bytes), whether it ends the stream, its dictionary and its bytes.
pub(super) fn chunk_key(level: u32, last: bool, dict: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cairn-gzip-chunk 1\0");
    h.update(level.to_le_bytes());
    h.update([u8::from(last)]);
    h.update((dict.len() as u64).to_le_bytes());
    h.update(dict);
    h.update(data);
    h.finalize().into()
}
