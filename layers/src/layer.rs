//! Writing a layer into the store in one pass: a tar producer → compression → a verified blob,
//! giving the layer's descriptor and diff_id.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use crate::compress::{self, Compression, LayerCompression, LayerWriter};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::listing::Listing;
use crate::pipeline::StretchWriter;
use crate::store::Store;

/// A layer in the store: its blob descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// Its entries, read from the tar as it was written (`None` when the tar could not be
    /// listed): a later step's directory view or name lookup need not decompress the blob.
    pub listing: Option<Listing>,
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
    let blob = store.blob_writer_trusting()?;
    let reuse = previous.and_then(|d| store.chunk_reuse(d));
    let w = LayerWriter::with_level(blob, compression, level).reusing(reuse.map(Arc::new));
    // The listing is read on another thread from a copy of the tar: the headers go by once,
    // where a later reader would have to decompress the whole blob to see them.
    let (copy, copied) = crate::pipeline::channel();
    let ((result, w), listing) = std::thread::scope(|scope| {
        let lister = scope.spawn(move || Listing::read(copied).ok());
        let mut tee = ListingTee { inner: w, copy };
        let result = produce(&mut tee).map(|()| tee.copy.send_pending());
        // Dropping the copy's writer ends the lister's input.
        let ListingTee { inner: w, copy } = tee;
        drop(copy);
        ((result, w), lister.join().ok().flatten())
    });
    if let Err(e) = result {
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
        listing,
    })
}

/// A writer that also hands a copy of what it writes to the lister, until the lister stops.
struct ListingTee<W> {
    inner: W,
    copy: StretchWriter,
}

impl<W: Write> Write for ListingTee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        // A lister that gave up (a tar it cannot list) takes no more: never an error.
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_tar::{Meta, Writer};
    use crate::listing::Kind;
    use crate::test_support::temp_store as store;

    /// A tar of `files` files (with /etc/passwd among them) big enough to cross many of the
    /// tee's stretches.
    fn write_tar(w: &mut dyn Write, files: usize) -> Result<()> {
        let mut t = Writer::new(w);
        t.dir(b"etc", Meta::default(), &[])?;
        let passwd = b"root:x:0:0::/root:/bin/sh\n";
        let len = passwd.len() as u64;
        t.file(b"etc/passwd", Meta::default(), &[], len, &passwd[..])?;
        t.symlink(b"etc/link", Meta::default(), &[], b"passwd")?;
        let body = vec![7u8; 3000];
        for i in 0..files {
            let name = format!("data/f{i}");
            t.file(name.as_bytes(), Meta::default(), &[], 3000, &body[..])?;
        }
        t.finish().map(drop)
    }

    #[test]
    fn the_listing_written_with_a_layer_is_the_one_its_blob_gives() {
        for (compression, files) in [
            (Compression::Gzip, 0),
            (Compression::Gzip, 2000),
            (Compression::None, 2000),
            (Compression::Zstd, 300),
        ] {
            let (_d, s) = store();
            let layer = write_layer(&s, compression, |w| write_tar(w, files)).unwrap();
            let blob = s.open_blob(&layer.descriptor.digest).unwrap();
            let read = Listing::read(compress::decompress(blob, compression).unwrap()).unwrap();
            let listing = layer.listing.expect("a listing");
            assert_eq!(listing, read, "{compression:?} {files}");
            assert_eq!(listing.0.len(), 3 + files);
            assert!(matches!(&listing.0[1].1, Kind::Kept(b) if b.starts_with(b"root:")));
        }
    }

    #[test]
    fn bytes_that_are_no_tar_still_make_a_layer_without_a_listing() {
        let (_d, s) = store();
        let junk = vec![b'x'; 4096];
        let layer = write_layer(&s, Compression::Gzip, |w| {
            w.write_all(&junk).map_err(|e| Error::stream("write", e))
        })
        .unwrap();
        assert_eq!(layer.diff_id, Digest::of(&junk));
        assert_eq!(layer.listing, None);
    }

    #[test]
    fn a_failed_producer_leaves_no_blob_and_no_waiting_lister() {
        let (_d, s) = store();
        let err = write_layer(&s, Compression::Gzip, |w| {
            write_tar(w, 500)?;
            Err(Error::invalid("test", "stop"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("stop"), "{err}");
        for dir in [s.tmp_dir(), s.root().join("blobs/sha256")] {
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{dir:?}");
        }
    }
}
