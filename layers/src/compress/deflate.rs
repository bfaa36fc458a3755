//! The deflate workers behind parallel gzip: a chunk each, primed with the window before it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use flate2::{Compress, FlushCompress, Status};
use sha2::{Digest as _, Sha256};

use super::chunks::{Chunk, ChunkReuse, chunk_key};

/// Plain bytes per chunk. Speed measured the same from 128 KiB to 2 MiB (within the noise of a
/// shared machine) and the ratio equal to three digits; 1 MiB keeps the fixed costs per chunk
/// (loading the 32 KiB dictionary, about 3% of deflating a 128 KiB chunk; the sync flush; a
/// channel round trip) negligible, while in-flight memory stays about 2 MiB per chunk.
pub(super) const CHUNK: usize = 1 << 20;
/// Deflate's window: how far back a match may reach, so how much dictionary is worth giving.
pub(super) const WINDOW: usize = 32 * 1024;
/// The largest stored block.
pub(super) const STORED_MAX: usize = 65535;
/// Probe for incompressible chunks: this many samples of this size, spread over the chunk.
pub(super) const SAMPLES: usize = 8;
pub(super) const SAMPLE_LEN: usize = 8 * 1024;
/// deflate level used on the samples (zlib-rs level 1 only emits fixed Huffman codes, which
/// cannot tell base64 or other small-alphabet data from random; level 2 builds dynamic trees).
const PROBE_LEVEL: u32 = 2;
/// A sample is incompressible when level-2 deflate saves less than this percentage of it.
const PROBE_MIN_SAVING_PCT: usize = 2;
/// A chunk whose samples save less than this percentage together (random data with tar
/// headers and padding, for instance) is deflated at `FAST_LEVEL`: the configured level's
/// effort buys a few percent of little there (level 6 is 2.6x slower than level 1 on a tar of
/// random files for 5% less output), while text and code save far more than this.
const PROBE_LOW_GAIN_PCT: usize = 22;
const FAST_LEVEL: u32 = 1;

/// What the probe found a chunk to be worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Worth {
    /// Store it.
    Nothing,
    /// Deflate it quickly.
    Little,
    /// Deflate it at the configured level.
    Full,
}

pub(super) fn default_workers() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// The 10-byte gzip header: no name, mtime 0, XFL as gzip sets it for the level, and OS 255
/// ("unknown"), as Go's compress/gzip writes it, so blobs do not depend on the building OS.
pub(super) fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

pub(super) struct Job {
    /// Shared with the thread that hashes the plain stream.
    pub(super) data: Arc<Vec<u8>>,
    /// Up to the last 32 KiB of plain bytes before `data`.
    pub(super) dict: Vec<u8>,
    pub(super) last: bool,
    /// A recycled buffer for the compressed bytes.
    pub(super) out: Vec<u8>,
    /// An earlier blob's chunks to copy from.
    pub(super) reuse: Option<Arc<ChunkReuse>>,
}

pub(super) struct Done {
    /// Raw deflate, byte-aligned at both ends (empty when `reused`).
    pub(super) out: io::Result<Vec<u8>>,
    pub(super) crc: u32,
    pub(super) data: Arc<Vec<u8>>,
    pub(super) dict: Vec<u8>,
    /// What became of the chunk (with `Reused`, `out` is empty).
    pub(super) how: Deflated,
    pub(super) last: bool,
}

/// What a worker did with a chunk.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deflated {
    /// Stored: not worth reusing.
    Stored,
    /// Deflated: its key and the sha256 of its bytes, for the blob's chunk index.
    Made { key: [u8; 32], sha256: [u8; 32] },
    /// An earlier blob holds the same chunk: its bytes are to be copied.
    Reused(Chunk),
}

pub(super) enum Pending {
    Ready(Done),
    Running(Receiver<Done>),
}

type JobQueue = Arc<Mutex<Receiver<(Job, SyncSender<Done>)>>>;

/// Deflate worker threads fed from one queue, so slow (compressible) and fast (stored) chunks
/// balance across them. Dropping it closes the queue and joins them.
pub(super) struct Pool {
    pub(super) jobs: Option<Sender<(Job, SyncSender<Done>)>>,
    pub(super) threads: Vec<JoinHandle<()>>,
    /// Set when the writer is dropped unfinished, so queued chunks are skipped, not deflated.
    abandoned: Arc<AtomicBool>,
}

impl Pool {
    /// Up to `workers` threads at `level`; `None` when none could be spawned.
    pub(super) fn new(workers: usize, level: u32) -> Option<Pool> {
        let (tx, rx) = mpsc::channel();
        let rx: JobQueue = Arc::new(Mutex::new(rx));
        let abandoned = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..workers)
            .filter_map(|i| {
                let (rx, abandoned) = (Arc::clone(&rx), Arc::clone(&abandoned));
                thread::Builder::new()
                    .name(format!("cairn-gzip-{i}"))
                    .spawn(move || worker(&rx, &abandoned, level))
                    .ok()
            })
            .collect();
        (!threads.is_empty()).then(|| Pool {
            jobs: Some(tx),
            threads,
            abandoned,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // After finish nothing is queued; otherwise the queued chunks are wasted work.
        self.abandoned.store(true, Ordering::Relaxed);
        self.jobs = None;
        for t in self.threads.drain(..) {
            // A worker that panicked has already dropped its reply; its job surfaced as an error.
            let _ = t.join();
        }
    }
}

fn worker(rx: &JobQueue, abandoned: &AtomicBool, level: u32) {
    let mut deflater = Deflater::new(level);
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((job, reply)) = next else { return };
        if abandoned.load(Ordering::Relaxed) {
            return;
        }
        // The writer may have been dropped mid-stream; nobody is waiting then.
        let _ = reply.send(deflater.run(job));
    }
}

/// One worker's deflate state, reused across chunks.
pub(super) struct Deflater {
    level: u32,
    main: Compress,
    probe: Compress,
    scratch: Vec<u8>,
}

impl Deflater {
    pub(super) fn new(level: u32) -> Deflater {
        Deflater {
            level,
            main: Compress::new(flate2::Compression::new(level), false),
            probe: Compress::new(flate2::Compression::new(PROBE_LEVEL), false),
            scratch: Vec::new(),
        }
    }

    pub(super) fn run(&mut self, job: Job) -> Done {
        let Job {
            data,
            dict,
            last,
            mut out,
            reuse,
        } = job;
        let crc = crc32fast::hash(&data);
        out.clear();
        let how = self.deflate(&data, &dict, last, &mut out, reuse.as_deref());
        let (out, how) = match how {
            Ok(how) => (Ok(out), how),
            Err(e) => (Err(e), Deflated::Stored),
        };
        Done {
            out,
            crc,
            data,
            dict,
            how,
            last,
        }
    }

    /// Deflates `data` into `out`, unless `reuse` holds a chunk made from the same input
    /// (then `out` is left empty).
    pub(super) fn deflate(
        &mut self,
        data: &[u8],
        dict: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        reuse: Option<&ChunkReuse>,
    ) -> io::Result<Deflated> {
        let worth = if self.level == 0 {
            Worth::Nothing
        } else {
            self.probe(data)?
        };
        let level = match worth {
            Worth::Nothing => {
                store(data, last, out);
                return Ok(Deflated::Stored);
            }
            Worth::Little => FAST_LEVEL.min(self.level),
            Worth::Full => self.level,
        };
        let key = chunk_key(self.level, last, dict, data);
        if let Some(c) = reuse.and_then(|r| r.chunks.get(&key)) {
            return Ok(Deflated::Reused(*c));
        }
        // A fresh deflater for every chunk: `reset` on a reused one did not give byte-identical
        // output (the blob then depended on which worker had compressed what before), and a
        // blob must depend only on its input. The allocation is small next to a 1 MiB chunk.
        self.main = Compress::new(flate2::Compression::new(level), false);
        if !dict.is_empty() {
            self.main.set_dictionary(dict).map_err(io::Error::other)?;
        }
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        deflate_all(&mut self.main, data, flush, out)?;
        // zlib already falls back to stored blocks per deflate block; this also covers the flush
        // overhead, so a chunk never costs more than its stored form.
        if out.len() > stored_len(data.len(), last) {
            store(data, last, out);
            return Ok(Deflated::Stored);
        }
        Ok(Deflated::Made {
            key,
            sha256: Sha256::digest(&out[..]).into(),
        })
    }

    /// What deflating `data` would pay, from samples deflated at a fast level.
    ///
    /// Sampling rather than deflating the chunk and checking the size (which zlib does anyway,
    /// per block) is what saves the time: a full level-6 pass over random data costs as much as
    /// over text, while the probe deflates 64 KiB per MiB at level 2 and stops as soon as the
    /// samples so far settle the answer, so text pays for a few samples only. Worthless only
    /// when every sample fails, so that a chunk mixing compressed files with text (tar headers,
    /// small files) is deflated.
    pub(super) fn probe(&mut self, data: &[u8]) -> io::Result<Worth> {
        if data.len() < 2 * SAMPLES * SAMPLE_LEN {
            return Ok(Worth::Full);
        }
        let stride = data.len() / SAMPLES;
        let total = SAMPLES * SAMPLE_LEN;
        let (mut saved, mut any_saves) = (0usize, false);
        for i in 0..SAMPLES {
            let sample = &data[i * stride..i * stride + SAMPLE_LEN];
            // Bytes as even as random ones leave Huffman coding nothing to save, and a sample's
            // histogram costs a fraction of deflating it: on a tar of random files the samples'
            // deflate was a tenth of the layer's CPU time.
            if order0_bits(sample) > FLAT_BITS {
                continue;
            }
            // Fresh, like the main deflater: the decision must not depend on earlier chunks.
            self.probe = Compress::new(flate2::Compression::new(PROBE_LEVEL), false);
            self.scratch.clear();
            deflate_all(
                &mut self.probe,
                sample,
                FlushCompress::Finish,
                &mut self.scratch,
            )?;
            if self.scratch.len() * 100 < sample.len() * (100 - PROBE_MIN_SAVING_PCT) {
                any_saves = true;
            }
            saved += sample.len().saturating_sub(self.scratch.len());
            if saved * 100 >= total * PROBE_LOW_GAIN_PCT {
                return Ok(Worth::Full);
            }
        }
        Ok(if !any_saves {
            Worth::Nothing
        } else {
            Worth::Little
        })
    }

    #[cfg(test)]
    pub(super) fn looks_incompressible(&mut self, data: &[u8]) -> io::Result<bool> {
        Ok(self.probe(data)? == Worth::Nothing)
    }
}

/// Bits per byte above which a sample counts as incompressible without deflating it: random
/// 8 KiB samples measure about 7.98, gzip or JPEG data about 7.97, text under 5.
pub(super) const FLAT_BITS: f64 = 7.9;

/// The order-0 entropy of `data` in bits per byte: what Huffman coding of single bytes could
/// reach at best.
pub(super) fn order0_bits(data: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Deflates all of `data` into `out` and completes `flush` (Sync or Finish).
fn deflate_all(
    c: &mut Compress,
    data: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // deflateBound plus room for the flush markers, so one call normally suffices.
    out.reserve(data.len() + data.len() / 1000 + 64);
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity() / 2 + 4096);
        }
        let (in_before, out_before) = (c.total_in(), c.total_out());
        let status = c
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        // At most data.len(), which is a usize.
        consumed += (c.total_in() - in_before) as usize;
        let done = if flush == FlushCompress::Finish {
            status == Status::StreamEnd
        } else {
            // zlib's rule: a flush is complete once it returns with output space left.
            consumed >= data.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(());
        }
        if c.total_in() == in_before && c.total_out() == out_before && out.len() < out.capacity() {
            return Err(io::Error::other("deflate made no progress"));
        }
    }
}

/// `data` as stored blocks (BTYPE 00, LEN/NLEN), the last one final if `last`.
pub(super) fn store(data: &[u8], last: bool, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(stored_len(data.len(), last));
    if data.is_empty() {
        if last {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        return;
    }
    let mut blocks = data.chunks(STORED_MAX).peekable();
    while let Some(block) = blocks.next() {
        let is_final = last && blocks.peek().is_none();
        // Fits: chunks() yields at most STORED_MAX (u16::MAX) bytes.
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.push(u8::from(is_final));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

pub(super) fn stored_len(n: usize, last: bool) -> usize {
    let blocks = n.div_ceil(STORED_MAX).max(usize::from(last));
    n + 5 * blocks
}
