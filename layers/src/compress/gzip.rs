//! Parallel (pigz-style) gzip: chunks deflated on a pool, written in order, digests on the way.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TryRecvError};
use std::thread::{self, JoinHandle};

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};

use super::LayerDigests;
use super::chunks::{Chunk, ChunkReuse};
use super::deflate::{Deflated, Deflater, Done, Job, Pending, Pool, WINDOW, gzip_header};

/// The sha256 of the plain stream: on the calling thread for a layer of one chunk, else on a
/// thread fed the chunks in order.
enum PlainHash {
    Here(Sha256),
    Thread {
        chunks: SyncSender<Arc<Vec<u8>>>,
        done: JoinHandle<Sha256>,
    },
}

impl PlainHash {
    /// Moves the hashing to a thread, carrying over what was hashed so far; stays here when no
    /// thread can be had.
    fn onto_thread(self) -> PlainHash {
        let PlainHash::Here(sha) = self else {
            return self;
        };
        // A few chunks of slack, so a burst of stored chunks does not wait on the hash.
        let (chunks, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
        let mut carried = sha.clone();
        let started = thread::Builder::new()
            .name("cairn-sha256".into())
            .spawn(move || {
                for chunk in rx {
                    carried.update(&chunk[..]);
                }
                carried
            });
        match started {
            Ok(done) => PlainHash::Thread { chunks, done },
            Err(_) => PlainHash::Here(sha),
        }
    }

    fn update(&mut self, chunk: &Arc<Vec<u8>>) -> io::Result<()> {
        match self {
            PlainHash::Here(sha) => sha.update(&chunk[..]),
            PlainHash::Thread { chunks, .. } => chunks
                .send(Arc::clone(chunk))
                .map_err(|_| io::Error::other("the layer's hashing thread has exited"))?,
        }
        Ok(())
    }

    pub(super) fn finish(self) -> io::Result<Sha256> {
        match self {
            PlainHash::Here(sha) => Ok(sha),
            PlainHash::Thread { chunks, done } => {
                drop(chunks);
                done.join()
                    .map_err(|_| io::Error::other("the layer's hashing thread panicked"))
            }
        }
    }
}

/// The calling thread's side: cuts chunks, hashes the plain bytes, writes the compressed ones in
/// order. `out` is not `'static`, so it stays here and only owned buffers go to the workers.
pub(super) struct GzipWriter<W: Write> {
    out: HashingWriter<W>,
    level: u32,
    chunk: usize,
    /// The chunk being filled.
    pub(super) buf: Vec<u8>,
    /// The last WINDOW plain bytes before `buf`: its dictionary.
    tail: Vec<u8>,
    plain: PlainHash,
    pub(super) plain_len: u64,
    crc: crc32fast::Hasher,
    header_written: bool,
    pending: VecDeque<Pending>,
    /// At most this many chunks in flight, so memory is bounded if `out` or the workers lag.
    depth: usize,
    /// Threads to start at the second chunk: a layer that fits in one chunk (most small layers
    /// do) is deflated on this thread and costs no thread.
    workers: usize,
    pool: Option<Pool>,
    /// Compresses on this thread when there are no workers.
    local: Option<Deflater>,
    spare_data: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    spare_dict: Vec<Vec<u8>>,
    /// A failed write may have left part of a chunk in `out`: nothing can follow.
    failed: bool,
    /// An earlier blob's chunks to copy from.
    pub(super) reuse: Option<Arc<ChunkReuse>>,
    /// Bytes written to `out` so far, and the deflated chunks among them.
    written: u64,
    chunks: Vec<Chunk>,
    reused_chunks: usize,
}

impl<W: Write> GzipWriter<W> {
    pub(super) fn new(out: W, level: i32, chunk: usize, workers: usize) -> Self {
        let level = u32::try_from(level.clamp(0, 9)).unwrap_or(6);
        GzipWriter {
            out: HashingWriter::new(out),
            level,
            chunk: chunk.max(1),
            buf: Vec::new(),
            tail: Vec::with_capacity(WINDOW),
            plain: PlainHash::Here(Sha256::new()),
            plain_len: 0,
            crc: crc32fast::Hasher::new(),
            header_written: false,
            pending: VecDeque::new(),
            depth: 2,
            workers,
            pool: None,
            local: None,
            spare_data: Vec::new(),
            spare_out: Vec::new(),
            spare_dict: Vec::new(),
            failed: false,
            reuse: None,
            written: 0,
            chunks: Vec::new(),
            reused_chunks: 0,
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write to the gzip layer failed",
            ));
        }
        Ok(())
    }

    pub(super) fn write_all_input(&mut self, mut input: &[u8]) -> io::Result<()> {
        self.check()?;
        while !input.is_empty() {
            if self.buf.capacity() < self.chunk {
                self.buf.reserve_exact(self.chunk - self.buf.len());
            }
            let take = input.len().min(self.chunk - self.buf.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() == self.chunk {
                self.dispatch(false)?;
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let fresh = self.spare_data.pop().unwrap_or_default();
        let data = Arc::new(mem::replace(&mut self.buf, fresh));
        if !last && matches!(self.plain, PlainHash::Here(_)) && self.workers > 0 {
            let here = mem::replace(&mut self.plain, PlainHash::Here(Sha256::new()));
            self.plain = here.onto_thread();
        }
        // On random data the stored path leaves this thread reading the sources, hashing both
        // streams and writing the blob while the workers idle: the plain stream's hash goes to
        // a thread of its own (the chunk is shared, not copied), which took a third off a
        // 1 GiB layer of random files on two cores.
        if let Err(e) = self.plain.update(&data) {
            return Err(self.fail(e));
        }
        self.plain_len += data.len() as u64;
        let mut dict = self.spare_dict.pop().unwrap_or_default();
        dict.clear();
        dict.extend_from_slice(&self.tail);
        push_tail(&mut self.tail, &data);
        let job = Job {
            data,
            dict,
            last,
            out: self.spare_out.pop().unwrap_or_default(),
            reuse: self.reuse.clone(),
        };
        if !last && self.workers > 0 && self.pool.is_none() {
            self.pool = Pool::new(mem::take(&mut self.workers), self.level);
            // Two chunks per worker: one being deflated, one queued so that no worker idles
            // while this thread hashes and writes.
            self.depth = 2 * self.pool.as_ref().map_or(1, |p| p.threads.len());
        }
        if self.pool.is_none() && self.local.is_none() {
            self.local = Some(Deflater::new(self.level));
        }
        while self.pending.len() >= self.depth {
            self.write_oldest()?;
        }
        let pending = match (&self.pool, &mut self.local) {
            (Some(pool), _) => {
                let (reply, done) = mpsc::sync_channel(1);
                let sent = pool
                    .jobs
                    .as_ref()
                    .is_some_and(|jobs| jobs.send((job, reply)).is_ok());
                if !sent {
                    return Err(self.fail(io::Error::other("the gzip workers have exited")));
                }
                Pending::Running(done)
            }
            (None, Some(local)) => Pending::Ready(local.run(job)),
            (None, None) => return Err(self.fail(io::Error::other("no gzip compressor"))),
        };
        self.pending.push_back(pending);
        self.write_finished()
    }

    /// Writes the chunks that are already compressed, in order, without waiting.
    fn write_finished(&mut self) -> io::Result<()> {
        loop {
            let ready = match self.pending.front_mut() {
                Some(Pending::Ready(_)) => true,
                Some(Pending::Running(rx)) => match rx.try_recv() {
                    Ok(done) => {
                        if let Some(front) = self.pending.front_mut() {
                            *front = Pending::Ready(done);
                        }
                        true
                    }
                    Err(TryRecvError::Empty) => false,
                    // write_oldest reports it.
                    Err(TryRecvError::Disconnected) => true,
                },
                None => false,
            };
            if !ready {
                return Ok(());
            }
            self.write_oldest()?;
        }
    }

    /// Waits for the oldest chunk and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let done = match self.pending.pop_front() {
            None => return Ok(()),
            Some(Pending::Ready(done)) => done,
            Some(Pending::Running(rx)) => match rx.recv() {
                Ok(done) => done,
                Err(_) => return Err(self.fail(io::Error::other("a gzip worker panicked"))),
            },
        };
        let Done {
            out,
            crc,
            data,
            dict,
            mut how,
            last,
        } = done;
        let mut out = match out {
            Ok(out) => out,
            Err(e) => return Err(self.fail(e)),
        };
        if let Deflated::Reused(c) = how {
            match self.reuse.as_ref().and_then(|r| r.read(&c)) {
                Some(bytes) => {
                    out = bytes;
                    self.reused_chunks += 1;
                    how = Deflated::Made {
                        key: c.key,
                        sha256: c.sha256,
                    };
                }
                // The earlier blob changed or went: deflate the chunk after all.
                None => match Deflater::new(self.level).deflate(&data, &dict, last, &mut out, None)
                {
                    Ok(h) => how = h,
                    Err(e) => return Err(self.fail(e)),
                },
            }
        }
        if !self.header_written {
            let header = gzip_header(self.level);
            if let Err(e) = self.out.write_all(&header) {
                return Err(self.fail(e));
            }
            self.header_written = true;
            self.written += header.len() as u64;
        }
        if let Err(e) = self.out.write_all(&out) {
            return Err(self.fail(e));
        }
        if let Deflated::Made { key, sha256 } = how {
            self.chunks.push(Chunk {
                key,
                offset: self.written,
                len: out.len() as u64,
                sha256,
            });
        }
        self.written += out.len() as u64;
        self.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            crc,
            data.len() as u64,
        ));
        self.recycle(data, out, dict);
        Ok(())
    }

    fn recycle(&mut self, data: Arc<Vec<u8>>, out: Vec<u8>, dict: Vec<u8>) {
        // Keep at most one buffer per in-flight chunk, and only chunk-sized ones; a chunk the
        // hashing thread still holds is simply let go.
        if let Ok(mut data) = Arc::try_unwrap(data)
            && self.spare_data.len() < self.depth
            && data.capacity() >= self.chunk
        {
            data.clear();
            self.spare_data.push(data);
        }
        if self.spare_out.len() < self.depth {
            self.spare_out.push(out);
        }
        if self.spare_dict.len() < self.depth {
            self.spare_dict.push(dict);
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = true;
        e
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        self.write_finished()?;
        self.out.flush()
    }

    pub(super) fn finish(mut self) -> io::Result<(LayerDigests, W)> {
        self.check()?;
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let crc = mem::take(&mut self.crc).finalize();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        // ISIZE is the length modulo 2^32.
        trailer[4..].copy_from_slice(&(self.plain_len as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        let GzipWriter {
            out,
            plain,
            plain_len,
            pool,
            chunks,
            reused_chunks,
            ..
        } = self;
        drop(pool);
        let plain = plain.finish()?;
        let (digest, size, out) = out.finish();
        let digests = LayerDigests {
            diff_id: Digest::from_hasher(plain),
            uncompressed_size: plain_len,
            digest,
            size,
            chunks,
            reused_chunks,
        };
        Ok((digests, out))
    }
}

/// Keeps `tail` as the last WINDOW bytes of everything pushed through it.
fn push_tail(tail: &mut Vec<u8>, data: &[u8]) {
    if data.len() >= WINDOW {
        tail.clear();
        tail.extend_from_slice(&data[data.len() - WINDOW..]);
    } else {
        tail.extend_from_slice(data);
        if tail.len() > WINDOW {
            tail.drain(..tail.len() - WINDOW);
        }
    }
}
