//! Layer blob compression and decompression, with diff_id, digest and size from one streaming pass.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};

mod chunks;
mod deflate;
mod gzip;

use deflate::{CHUNK, default_workers};
use gzip::GzipWriter;

pub use chunks::{Chunk, ChunkReuse, chunks_from_bytes, chunks_to_bytes};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Layer media types we read, OCI and Docker, current and deprecated (nondistributable, foreign).
const MEDIA_TYPES: &[(&str, Compression)] = &[
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        Compression::None,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        Compression::Gzip,
    ),
];

impl Compression {
    /// OCI layer media type: application/vnd.oci.image.layer.v1.tar(+gzip|+zstd)
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// From an OCI or Docker layer media type (application/vnd.docker.image.rootfs.diff.tar.gzip,
    /// ...). Parameters (`; foo=bar`) and ASCII case are ignored, as RFC 6838 allows; encrypted
    /// and unknown types give `None`.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        let base = mt.split_once(';').map_or(mt, |(base, _)| base).trim();
        MEDIA_TYPES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(base))
            .map(|&(_, c)| c)
    }

    /// Sniffs the first bytes of a stream: gzip (1f 8b), zstd (28 b5 2f fd), else None.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The level [`LayerWriter::new`] uses: gzip 5, zstd 3.
    ///
    /// Gzip 5 is what podman and buildah push with (containers.conf's `compression_level`);
    /// Docker uses 6. On text, zlib's level 6 searches four times longer match chains than 5:
    /// 2.5x the CPU for 10% less output on the benchmark's 256 MiB of words (zlib-rs, one
    /// machine), and layers are written on every build but pulled far less often than that
    /// would pay for. `--compression-level 6` gives Docker's.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 5,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }
}

/// How a build writes its layers: a compression and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCompression {
    pub compression: Compression,
    pub level: i32,
}

impl LayerCompression {
    /// `compression` at `level`, or at its default level.
    pub fn new(compression: Compression, level: Option<i32>) -> LayerCompression {
        LayerCompression {
            compression,
            level: level.unwrap_or_else(|| compression.default_level()),
        }
    }

    /// The levels each compression accepts, for checking a user's choice.
    pub fn level_range(compression: Compression) -> std::ops::RangeInclusive<i32> {
        match compression {
            Compression::Gzip => 0..=9,
            Compression::Zstd => zstd::compression_level_range(),
            Compression::None => 0..=0,
        }
    }
}

impl From<Compression> for LayerCompression {
    fn from(c: Compression) -> LayerCompression {
        LayerCompression::new(c, None)
    }
}

/// The result of writing a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// sha256 of the blob as written to `out`.
    pub digest: Digest,
    pub size: u64,
    /// Where each deflated chunk of a gzip blob lies, for a later writer to reuse
    /// ([`ChunkReuse`]); empty for other formats.
    pub chunks: Vec<Chunk>,
    /// How many of them were copied from an earlier blob.
    pub reused_chunks: usize,
}

/// Write the plain tar into it; compressed bytes go to `out`.
///
/// Memory stays bounded whatever the layer's size. The blob depends only on the bytes written
/// and the level, never on how they were split into `write` calls, on `flush`, or on thread
/// timing: `flush` flushes `out` but does not cut the compressed stream.
pub struct LayerWriter<W: Write + Send> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    None(HashingWriter<W>),
    Gzip(Box<GzipWriter<W>>),
    Zstd {
        encoder: zstd::stream::write::Encoder<'static, HashingWriter<W>>,
        plain: Sha256,
        plain_len: u64,
    },
    /// The zstd encoder could not be set up; every call reports why.
    Broken(String),
}

impl<W: Write + Send> LayerWriter<W> {
    /// A writer at the default level: gzip 5, zstd 3.
    pub fn new(out: W, compression: Compression) -> Self {
        Self::with_level(out, compression, compression.default_level())
    }

    /// A writer at `level`, clamped to what the format accepts (gzip 0–9, zstd's own range); it
    /// is ignored for `Compression::None`.
    pub fn with_level(out: W, compression: Compression, level: i32) -> Self {
        let inner = match compression {
            Compression::None => Inner::None(HashingWriter::new(out)),
            Compression::Gzip => Inner::Gzip(Box::new(GzipWriter::new(
                out,
                level,
                CHUNK,
                default_workers(),
            ))),
            Compression::Zstd => zstd_inner(out, level, ZSTD_WORKERS),
        };
        LayerWriter { inner }
    }

    /// Lets a gzip writer copy deflated chunks from an earlier blob (see [`ChunkReuse`]);
    /// other formats ignore it.
    pub fn reusing(mut self, reuse: Option<Arc<ChunkReuse>>) -> Self {
        if let Inner::Gzip(gz) = &mut self.inner {
            gz.reuse = reuse;
        }
        self
    }

    /// Gzip with a chosen chunk size and worker count (0 compresses on the calling thread), so
    /// tests can reach many chunks with little data and compare against the sequential path.
    #[cfg(test)]
    fn gzip_tuned(out: W, level: i32, chunk: usize, workers: usize) -> Self {
        LayerWriter {
            inner: Inner::Gzip(Box::new(GzipWriter::new(out, level, chunk, workers))),
        }
    }

    /// Ends the stream; returns the digests and `out`, flushed.
    pub fn finish(self) -> Result<(LayerDigests, W)> {
        match self.inner {
            Inner::None(mut out) => {
                out.flush()
                    .map_err(|e| Error::stream("write uncompressed layer", e))?;
                let (digest, size, out) = out.finish();
                let digests = LayerDigests {
                    diff_id: digest.clone(),
                    uncompressed_size: size,
                    digest,
                    size,
                    chunks: Vec::new(),
                    reused_chunks: 0,
                };
                Ok((digests, out))
            }
            Inner::Gzip(gz) => (*gz)
                .finish()
                .map_err(|e| Error::stream("write gzip layer", e)),
            Inner::Zstd {
                encoder,
                plain,
                plain_len,
            } => {
                let mut out = encoder
                    .finish()
                    .map_err(|e| Error::stream("write zstd layer", e))?;
                out.flush()
                    .map_err(|e| Error::stream("write zstd layer", e))?;
                let (digest, size, out) = out.finish();
                let digests = LayerDigests {
                    diff_id: Digest::from_hasher(plain),
                    uncompressed_size: plain_len,
                    digest,
                    size,
                    chunks: Vec::new(),
                    reused_chunks: 0,
                };
                Ok((digests, out))
            }
            Inner::Broken(why) => Err(Error::stream(
                "start zstd compressor",
                io::Error::other(why),
            )),
        }
    }
}

impl<W: Write + Send> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(out) => out.write(buf),
            Inner::Gzip(gz) => gz.write_all_input(buf).map(|()| buf.len()),
            Inner::Zstd {
                encoder,
                plain,
                plain_len,
            } => {
                let n = encoder.write(buf)?;
                plain.update(&buf[..n]);
                *plain_len += n as u64;
                Ok(n)
            }
            Inner::Broken(why) => Err(io::Error::other(why.clone())),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(out) => out.flush(),
            Inner::Gzip(gz) => gz.flush(),
            // Encoder::flush would end a zstd block and so make the blob depend on flush calls.
            Inner::Zstd { encoder, .. } => encoder.get_mut().flush(),
            Inner::Broken(why) => Err(io::Error::other(why.clone())),
        }
    }
}

impl<W: Write + Send> fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (compression, written) = match &self.inner {
            Inner::None(_) => (Compression::None, None),
            Inner::Gzip(gz) => (Compression::Gzip, Some(gz.plain_len + gz.buf.len() as u64)),
            Inner::Zstd { plain_len, .. } => (Compression::Zstd, Some(*plain_len)),
            Inner::Broken(_) => (Compression::Zstd, None),
        };
        f.debug_struct("LayerWriter")
            .field("compression", &compression)
            .field("written", &written)
            .finish_non_exhaustive()
    }
}

fn zstd_inner<W: Write>(out: W, level: i32, workers: usize) -> Inner<W> {
    let range = zstd::compression_level_range();
    let level = level.clamp(*range.start(), *range.end());
    let mut encoder = match zstd::stream::write::Encoder::new(HashingWriter::new(out), level) {
        Ok(encoder) => encoder,
        Err(e) => return Inner::Broken(e.to_string()),
    };
    let workers = u32::try_from(workers).unwrap_or(ZSTD_WORKERS as u32);
    if let Err(e) = encoder.multithread(workers) {
        return Inner::Broken(e.to_string());
    }
    Inner::Zstd {
        encoder,
        plain: Sha256::new(),
        plain_len: 0,
    }
}

/// zstd compression threads. zstd's multithreaded output is the same for any number of workers
/// (only single-threaded mode differs), so this is about memory: each worker holds an 8 MiB job
/// in and out at level 3, and 2 workers peaked at 73 MiB RSS over 1.25 GiB.
const ZSTD_WORKERS: usize = 2;

/// A reader of the uncompressed stream.
///
/// Gzip accepts several concatenated members and zstd several frames, as containerd does.
pub fn decompress<'a, R: Read + 'a>(r: R, c: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(r)
                .map_err(|e| Error::stream("start zstd decompressor", e))?,
        ),
        // Tar readers ask for one 512-byte header at a time: on a file each would be a
        // system call (the decompressors buffer their input already).
        Compression::None => Box::new(io::BufReader::with_capacity(PLAIN_READ_BUFFER, r)),
    })
}

/// The read buffer under an uncompressed stream.
const PLAIN_READ_BUFFER: usize = 64 * 1024;

/// Like [`decompress`], for a stream whose compression is unknown: sniffs its first bytes with
/// [`Compression::detect`] and says what it found.
pub fn decompress_detected<'a, R: Read + 'a>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match r.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::stream("read layer blob", e)),
        }
    }
    let head = head[..filled].to_vec();
    let c = Compression::detect(&head);
    let reader = decompress(io::Cursor::new(head).chain(r), c)?;
    Ok((c, reader))
}

// ---- gzip, pigz-style ----
//
// The plain stream is cut into CHUNK-sized pieces that workers deflate independently, each primed
// with the 32 KiB before it as a dictionary (so the ratio is within a fraction of a percent of a
// single stream) and ended with a sync flush (so the byte-aligned pieces concatenate into one
// deflate stream); the last piece ends with a final block. Output is deterministic because every
// piece depends only on its own bytes, the bytes before it and the level.

#[cfg(test)]
mod tests {
    use super::deflate::{
        Deflater, FLAT_BITS, SAMPLE_LEN, SAMPLES, STORED_MAX, Worth, order0_bits, store, stored_len,
    };
    use super::*;
    use std::process::{Command, Stdio};

    /// xorshift64*: reproducible data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v = Vec::with_capacity(n + 8);
            while v.len() < n {
                v.extend_from_slice(&self.next().to_le_bytes());
            }
            v.truncate(n);
            v
        }
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        Rng(seed | 1).bytes(n)
    }

    fn text(n: usize, seed: u64) -> Vec<u8> {
        const WORDS: &str = "layer image the of /usr/lib/ digest sha256 RUN apt-get install -y \n config tar 0644 { }";
        let words: Vec<&str> = WORDS.split(' ').collect();
        let mut rng = Rng(seed | 1);
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(words[rng.below(words.len())].as_bytes());
            v.push(b' ');
        }
        v.truncate(n);
        v
    }

    /// Alternating text and random runs of a few KiB to a few hundred KiB.
    fn mix(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let run = 1 + rng.below(300_000);
            let part = if rng.below(2) == 0 {
                text(run, rng.next())
            } else {
                random(run, rng.next())
            };
            v.extend_from_slice(&part);
        }
        v.truncate(n);
        v
    }

    /// A small alphabet with no repeats: compressible only by Huffman coding.
    fn base64ish(n: usize, seed: u64) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        random(n, seed)
            .iter()
            .map(|b| ALPHABET[usize::from(b % 64)])
            .collect()
    }

    /// Writes `data` in random-sized pieces.
    fn feed(w: &mut impl Write, data: &[u8], seed: u64) {
        let mut rng = Rng(seed | 1);
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + rng.below(70_000)).min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
    }

    fn compress_with(
        mut w: LayerWriter<Vec<u8>>,
        data: &[u8],
        seed: u64,
    ) -> (LayerDigests, Vec<u8>) {
        feed(&mut w, data, seed);
        w.finish().unwrap()
    }

    fn compress(data: &[u8], c: Compression) -> (LayerDigests, Vec<u8>) {
        compress_with(LayerWriter::new(Vec::new(), c), data, 7)
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    /// Checks digests, sizes and every decoder we have against `data`.
    fn check(name: &str, c: Compression, data: &[u8], digests: &LayerDigests, blob: &[u8]) {
        let expected = LayerDigests {
            diff_id: Digest::of(data),
            uncompressed_size: data.len() as u64,
            digest: Digest::of(blob),
            size: blob.len() as u64,
            chunks: digests.chunks.clone(),
            reused_chunks: digests.reused_chunks,
        };
        assert_eq!(digests, &expected, "{name} {c:?}");
        // Every recorded chunk is where it says, as it says.
        for ch in &digests.chunks {
            let bytes = &blob[ch.offset as usize..(ch.offset + ch.len) as usize];
            assert_eq!(
                Sha256::digest(bytes)[..],
                ch.sha256[..],
                "{name} {c:?}: chunk"
            );
        }
        assert!(
            read_all(decompress(blob, c).unwrap()) == data,
            "{name} {c:?}: decompress"
        );
        assert_eq!(
            Compression::detect(blob),
            if blob.is_empty() {
                Compression::None
            } else {
                c
            },
            "{name}"
        );
        if c == Compression::Gzip {
            // Single-member decoder: the chunks must form one gzip member.
            let single = read_all(flate2::read::GzDecoder::new(blob));
            assert!(single == data, "{name}: GzDecoder");
        }
    }

    const ALL: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::None];

    #[test]
    fn round_trips() {
        // gzip at a small chunk size (the smallest at which the probe engages) so that debug
        // builds stay quick; other tests use the real one.
        const C: usize = 2 * SAMPLES * SAMPLE_LEN;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("one byte", vec![b'x']),
            ("exactly one chunk", text(C, 1)),
            ("chunks and a tail", mix(5 * C + 12_345, 2)),
            ("compressible text", text(300_000, 3)),
            ("random", random(3 * C + 70_000, 4)),
        ];
        for (name, data) in &cases {
            for c in ALL {
                let w = match c {
                    Compression::Gzip => LayerWriter::gzip_tuned(Vec::new(), 6, C, 2),
                    _ => LayerWriter::new(Vec::new(), c),
                };
                let (digests, blob) = compress_with(w, data, 3);
                check(name, c, data, &digests, &blob);
            }
        }
    }

    #[test]
    fn gzip_many_small_chunks() {
        // Chunks smaller than the window, a chunk size that does not divide the input, and
        // chunk sizes where the probe engages; worker counts 0 (this thread), 1 and 3.
        let data = mix(1_500_000, 5);
        let mut first: Option<Vec<u8>> = None;
        for (chunk, workers) in [
            (1000, 2),
            (40_000, 1),
            (128 * 1024, 0),
            (128 * 1024, 3),
            (333_333, 2),
        ] {
            let w = LayerWriter::gzip_tuned(Vec::new(), 6, chunk, workers);
            let (digests, blob) = compress_with(w, &data, chunk as u64);
            check(
                &format!("chunk {chunk}"),
                Compression::Gzip,
                &data,
                &digests,
                &blob,
            );
            if chunk == 128 * 1024 {
                // Same chunking, different threads: same bytes.
                match &first {
                    None => first = Some(blob),
                    Some(f) => assert!(f == &blob, "worker count changed the blob"),
                }
            }
        }
    }

    #[test]
    fn reused_chunks_give_the_same_blob() {
        // A layer, then the same layer grown at its end, written with and without the first
        // blob's chunks: the same bytes either way, most of them copied.
        const C: usize = 128 * 1024;
        let first = text(20 * C + 100, 11);
        let mut grown = first.clone();
        grown.extend_from_slice(&text(3 * C, 12));
        let (a, blob_a) = compress_with(
            LayerWriter::gzip_tuned(Vec::new(), 5, C, 2),
            &first,
            1 << 16,
        );
        assert!(a.chunks.len() > 15, "{} chunks recorded", a.chunks.len());
        let (fresh, fresh_blob) = compress_with(
            LayerWriter::gzip_tuned(Vec::new(), 5, C, 2),
            &grown,
            1 << 16,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, &blob_a).unwrap();
        let reuse = || {
            let file = std::fs::File::open(&path).unwrap();
            Some(Arc::new(ChunkReuse::new(file, a.chunks.clone())))
        };
        let w = LayerWriter::gzip_tuned(Vec::new(), 5, C, 2).reusing(reuse());
        let (b, blob_b) = compress_with(w, &grown, 1 << 16);
        assert!(blob_b == fresh_blob, "reuse changed the blob");
        assert_eq!((&b.digest, &b.chunks), (&fresh.digest, &fresh.chunks));
        check("reused", Compression::Gzip, &grown, &b, &blob_b);
        assert!(b.reused_chunks >= 19, "{} chunks reused", b.reused_chunks);

        // Another level is other bytes: nothing to reuse, and still the fresh blob's bytes.
        let w = LayerWriter::gzip_tuned(Vec::new(), 6, C, 2).reusing(reuse());
        let (six, _) = compress_with(w, &grown, 1 << 16);
        assert_eq!(six.reused_chunks, 0);

        // A damaged earlier blob is deflated around, never copied.
        let mut damaged = blob_a.clone();
        let c = a.chunks[3];
        damaged[(c.offset + c.len / 2) as usize] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        let w = LayerWriter::gzip_tuned(Vec::new(), 5, C, 2).reusing(reuse());
        let (d, blob_d) = compress_with(w, &grown, 1 << 16);
        assert!(blob_d == fresh_blob, "a damaged chunk was copied");
        assert_eq!(d.reused_chunks, b.reused_chunks - 1);

        // The index survives a round trip and refuses damage.
        let bytes = chunks_to_bytes(&a.chunks);
        assert_eq!(chunks_from_bytes(&bytes), Some(a.chunks.clone()));
        assert_eq!(chunks_from_bytes(&bytes[..bytes.len() - 1]), None);
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(chunks_from_bytes(&flipped), None);
    }

    #[test]
    fn gzip_levels() {
        let data = mix(300_000, 6);
        for level in [-3, 0, 1, 2, 6, 9, 42] {
            let w = LayerWriter::with_level(Vec::new(), Compression::Gzip, level);
            let (digests, blob) = compress_with(w, &data, 1);
            check(
                &format!("level {level}"),
                Compression::Gzip,
                &data,
                &digests,
                &blob,
            );
            assert_eq!(
                blob[8],
                match level.clamp(0, 9) {
                    1 => 4,
                    9 => 2,
                    _ => 0,
                }
            );
            if level <= 0 {
                assert!(
                    blob.len() <= stored_len(data.len(), true) + 18,
                    "level {level}"
                );
            }
        }
    }

    #[test]
    fn incompressible_chunks_are_stored() {
        let n = 3 * CHUNK + 1000;
        let data = random(n, 8);
        let (digests, blob) = compress(&data, Compression::Gzip);
        check("random", Compression::Gzip, &data, &digests, &blob);
        // Header and trailer, and 5 bytes per stored block of each chunk.
        let chunks = n.div_ceil(CHUNK);
        let bound = 18 + n + 5 * (n / STORED_MAX + chunks + 1);
        assert!(blob.len() <= bound, "{} > {bound}", blob.len());
        for c in [Compression::Zstd, Compression::None] {
            let (digests, blob) = compress(&data, c);
            check("random", c, &data, &digests, &blob);
            assert!(blob.len() <= n + n / 1000 + 64, "{c:?}: {}", blob.len());
        }
    }

    #[test]
    fn probe_keeps_deflating_what_compresses() {
        let cases: [(&str, Vec<u8>, f64); 3] = [
            // Huffman-only data: level 1 (fixed codes) would call it incompressible.
            ("base64", base64ish(2 * CHUNK, 9), 0.80),
            // One compressible stretch among random ones in each chunk.
            (
                "text then random",
                [text(CHUNK / 2, 10), random(CHUNK / 2, 11)].concat(),
                0.75,
            ),
            ("text", text(CHUNK, 12), 0.5),
        ];
        let mut d = Deflater::new(6);
        for (name, data, ratio) in &cases {
            assert!(!d.looks_incompressible(&data[..CHUNK]).unwrap(), "{name}");
            let (digests, blob) = compress(data, Compression::Gzip);
            check(name, Compression::Gzip, data, &digests, &blob);
            assert!(
                (blob.len() as f64) < ratio * data.len() as f64,
                "{name}: {}",
                blob.len()
            );
        }
        assert!(d.looks_incompressible(&random(CHUNK, 13)).unwrap());
    }

    #[test]
    fn order0_entropy_tells_flat_bytes_from_the_rest() {
        let gz = {
            let (_, blob) = compress(&text(32 * SAMPLE_LEN, 21), Compression::Gzip);
            blob[64..64 + SAMPLE_LEN].to_vec()
        };
        let cases: [(&str, Vec<u8>, bool); 5] = [
            ("random", random(SAMPLE_LEN, 20), true),
            ("gzip output", gz, true),
            ("text", text(SAMPLE_LEN, 22), false),
            ("base64", base64ish(SAMPLE_LEN, 23), false),
            ("zeros", vec![0; SAMPLE_LEN], false),
        ];
        for (name, data, flat) in cases {
            let bits = order0_bits(&data);
            assert_eq!(bits > FLAT_BITS, flat, "{name}: {bits:.3} bits per byte");
        }
    }

    /// A tar of random files (headers and padding between incompressible data) is worth a
    /// little: deflated fast, still smaller than stored; text stays at the full level.
    #[test]
    fn low_gain_chunks_are_deflated_fast() {
        let mut data = Vec::new();
        let mut i = 0u64;
        while data.len() < 2 * CHUNK {
            let mut header = vec![0u8; 512];
            let name = format!("tree/d{:02}/file{i:06}", i % 100);
            header[..name.len()].copy_from_slice(name.as_bytes());
            data.extend_from_slice(&header);
            let len = 1024 + (i as usize * 7919) % 7168;
            data.extend_from_slice(&random(len, 100 + i));
            data.resize(data.len().div_ceil(512) * 512, 0);
            i += 1;
        }
        let mut d = Deflater::new(6);
        assert_eq!(d.probe(&data[..CHUNK]).unwrap(), Worth::Little);
        assert_eq!(d.probe(&text(CHUNK, 21)).unwrap(), Worth::Full);
        assert_eq!(d.probe(&random(CHUNK, 22)).unwrap(), Worth::Nothing);
        let (digests, blob) = compress(&data, Compression::Gzip);
        check("random files", Compression::Gzip, &data, &digests, &blob);
        assert!(
            (blob.len() as f64) < 0.97 * data.len() as f64,
            "{} of {}",
            blob.len(),
            data.len()
        );
    }

    #[test]
    fn gzip_binary_accepts_multi_chunk_output() {
        let data = mix(3 * CHUNK + 777, 14);
        let (digests, blob) = compress(&data, Compression::Gzip);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar.gz");
        std::fs::write(&path, &blob).unwrap();
        // The digest, by another implementation.
        let sum = Command::new("sha256sum").arg(&path).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(sum.split_whitespace().next(), Some(digests.digest.hex()));
        let status = Command::new("gzip").arg("-t").arg(&path).status().unwrap();
        assert!(status.success(), "gzip -t");
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout == data, "gzip -dc");
        // pigz is not a test requirement; check it when it is there.
        if let Ok(out) = Command::new("pigz").arg("-dc").arg(&path).output() {
            assert!(out.status.success() && out.stdout == data, "pigz -dc");
        }
    }

    #[test]
    fn deterministic() {
        let data = mix(2 * CHUNK + 4321, 15);
        for c in ALL {
            let (d1, b1) = compress_with(LayerWriter::new(Vec::new(), c), &data, 1);
            // Different write sizes, and flushes, must not change a byte.
            let mut w = LayerWriter::new(Vec::new(), c);
            for piece in data.chunks(100_003) {
                w.write_all(piece).unwrap();
                w.flush().unwrap();
            }
            let (d2, b2) = w.finish().unwrap();
            assert_eq!(d1, d2, "{c:?}");
            assert!(b1 == b2, "{c:?}");
        }
    }

    #[test]
    fn zstd_workers_do_not_change_the_blob() {
        // Several zstd jobs' worth, so the workers really split it.
        let data = mix(20 << 20, 16);
        let blobs: Vec<Vec<u8>> = [1, 2, 3]
            .into_iter()
            .map(|workers| {
                let mut w = LayerWriter {
                    inner: zstd_inner(Vec::new(), 3, workers),
                };
                w.write_all(&data).unwrap();
                w.finish().unwrap().1
            })
            .collect();
        assert!(blobs[0] == blobs[1] && blobs[1] == blobs[2]);
    }

    #[test]
    fn media_types() {
        let cases: &[(&str, Option<Compression>)] = &[
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "Application/VND.OCI.image.layer.v1.tar+gzip; x=y",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                None,
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/gzip", None),
            ("", None),
        ];
        for &(mt, want) in cases {
            assert_eq!(Compression::from_media_type(mt), want, "{mt}");
        }
        for c in ALL {
            assert_eq!(Compression::from_media_type(c.layer_media_type()), Some(c));
        }
    }

    #[test]
    fn detect() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8, 0], Compression::Gzip),
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x04], Compression::Zstd),
            (&[0x28, 0xb5, 0x2f], Compression::None),
            (&[0x1f], Compression::None),
            (b"ustar", Compression::None),
            (b"", Compression::None),
        ];
        for &(head, want) in cases {
            assert_eq!(Compression::detect(head), want, "{head:02x?}");
        }
    }

    #[test]
    fn decompress_detected_sniffs() {
        let data = text(50_000, 17);
        for c in ALL {
            let (_, blob) = compress(&data, c);
            // One byte per read, so sniffing must cope with short reads.
            let (found, r) = decompress_detected(OneByte(&blob)).unwrap();
            assert_eq!(found, c);
            assert!(read_all(r) == data, "{c:?}");
        }
        let (found, r) = decompress_detected(&b"ab"[..]).unwrap();
        assert_eq!((found, read_all(r)), (Compression::None, b"ab".to_vec()));
    }

    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn concatenated_members_and_frames_decompress() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let (_, a) = compress(b"hello ", c);
            let (_, b) = compress(b"world", c);
            let joined = [a, b].concat();
            assert_eq!(
                read_all(decompress(&joined[..], c).unwrap()),
                b"hello world",
                "{c:?}"
            );
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let (_, mut blob) = compress(&text(10_000, 18), Compression::Gzip);
        let n = blob.len();
        blob[n - 6] ^= 0xff; // the CRC
        let mut out = Vec::new();
        assert!(
            decompress(&blob[..], Compression::Gzip)
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    /// Accepts `room` bytes, then fails.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors_surface() {
        let data = random(3 * CHUNK, 19);
        for c in ALL {
            let mut w = LayerWriter::new(Full { room: 1000 }, c);
            let wrote = w.write_all(&data);
            let finished = w.finish();
            assert!(wrote.is_err() || finished.is_err(), "{c:?}");
            if let Err(e) = finished {
                assert!(matches!(e, Error::Stream { .. }), "{c:?}: {e}");
            }
        }
    }

    #[test]
    fn dropping_unfinished_writer_is_clean() {
        let mut w = LayerWriter::new(Vec::new(), Compression::Gzip);
        feed(&mut w, &mix(3 * CHUNK, 20), 1);
        drop(w);
    }

    #[test]
    fn stored_blocks_are_valid_deflate() {
        for (n, last) in [
            (0, true),
            (1, true),
            (STORED_MAX, true),
            (STORED_MAX + 1, true),
            (200_000, false),
        ] {
            let data = random(n, 21);
            let mut raw = Vec::new();
            store(&data, last, &mut raw);
            assert_eq!(raw.len(), stored_len(n, last));
            if !last {
                // A non-final run needs something to end the stream.
                let mut end = Vec::new();
                store(&[], true, &mut end);
                raw.extend_from_slice(&end);
            }
            let back = read_all(flate2::read::DeflateDecoder::new(&raw[..]));
            assert!(back == data, "{n}");
        }
    }
}
