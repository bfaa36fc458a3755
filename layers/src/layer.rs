//! Writing a layer into the store in one pass: a tar producer → compression → a verified blob,
//! giving the layer's descriptor and diff_id.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use crate::compress::{self, Compression, LayerCompression, LayerWriter};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::store::Store;

/// A layer in the store: its blob descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Runs `produce` with a writer that compresses into a new blob of the store. Nothing is left
/// under a digest unless `produce` succeeds and the blob is complete.
pub fn write_layer<F>(
    store: &Store,
    compression: impl Into<LayerCompression>,
    produce: F,
) -> Result<StoredLayer>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    write_layer_reusing(store, compression, None, produce)
}

/// [`write_layer`], copying deflated chunks from the blob `previous` (an earlier version of
/// the same layer) where the same input would be deflated again: the blob is the same, made
/// faster. A gzip blob of more than one chunk leaves its chunk index in the store for the next
/// writer.
pub fn write_layer_reusing<F>(
    store: &Store,
    compression: impl Into<LayerCompression>,
    previous: Option<&Digest>,
    produce: F,
) -> Result<StoredLayer>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let LayerCompression { compression, level } = compression.into();
    let blob = store.blob_writer()?;
    let reuse = previous.and_then(|d| store.chunk_reuse(d));
    let mut w = LayerWriter::with_level(blob, compression, level).reusing(reuse.map(Arc::new));
    if let Err(e) = produce(&mut w) {
        if let Ok((_, blob)) = w.finish() {
            blob.abort();
        }
        return Err(e);
    }
    let (digests, blob) = w.finish()?;
    let (digest, size) = blob.commit_background(Some((&digests.digest, Some(digests.size))))?;
    if digests.chunks.len() > 1 {
        store.put_chunk_index(&digest, &digests.chunks);
    }
    Ok(StoredLayer {
        descriptor: Descriptor {
            media_type: compression.layer_media_type().to_owned(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
        },
        diff_id: digests.diff_id,
        uncompressed_size: digests.uncompressed_size,
    })
}

/// A rootfs tarball (plain, gzip or zstd) as one layer, as `docker import` makes it, its
/// entries checked by [`crate::apply::check_layer`]; `what` names the source in errors.
pub fn import_tarball(
    store: &Store,
    source: impl Read,
    what: &str,
    compression: Compression,
) -> Result<StoredLayer> {
    let (_, mut plain) = compress::decompress_detected(source)?;
    write_layer(store, compression, |w| {
        // Checked as it streams into the layer: a refused entry stores nothing.
        let mut rest = crate::apply::check_layer(Tee {
            inner: &mut plain,
            out: w,
        })?;
        std::io::copy(&mut rest, &mut std::io::sink())
            .map_err(|e| Error::stream(format!("read {what}"), e))?;
        Ok(())
    })
}

/// A reader that writes what it reads to `out` as well.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut dyn Write,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}
