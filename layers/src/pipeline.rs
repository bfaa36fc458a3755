//! Two halves of a stream on two threads: one writes (decompresses, hashes), the other reads
//! (applies), the bytes crossing in bounded stretches.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::apply::{ApplyOptions, apply_layer};
use crate::compress::{self, Compression};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};

/// Bytes per stretch handed across.
const STRETCH: usize = 256 * 1024;
/// Stretches that may wait before the writer waits.
const QUEUE: usize = 8;

/// Runs `produce` on a thread of its own while `consume` reads what it writes on this one,
/// and returns both results. A layer's inflating and hashing then overlap with writing its
/// files, which a single thread does one after the other.
///
/// When `consume` returns before the end (a tar reader stops at the end-of-archive blocks),
/// `produce` still runs to its end, its writes discarded: a digest of the whole stream stays
/// whole. An error of `produce`'s writing reaches `consume` as a read error.
pub fn pipelined<T, U>(
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T> + Send,
    consume: impl FnOnce(&mut dyn Read) -> U,
) -> (io::Result<T>, U)
where
    T: Send,
{
    let (mut w, mut r) = channel();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let result = produce(&mut w);
            w.send_pending();
            if let (Err(e), Some(tx)) = (&result, &w.tx) {
                // The reader sees the failure where the bytes stop.
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        });
        let consumed = consume(&mut r);
        // Hanging up lets the producer finish without waiting for a reader.
        drop(r);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the stream's producer panicked")));
        (produced, consumed)
    })
}

/// Applies the layer blob `blob` (compressed as `c`) onto `target`, inflated and hashed on a
/// thread of its own while this one writes the files; returns the diff_id of the whole tar
/// (its trailing padding included). `what` names the blob in a read error.
pub fn apply_blob(
    blob: impl Read + Send,
    c: Compression,
    target: &Path,
    opts: &ApplyOptions,
    what: &str,
) -> Result<Digest> {
    let (diff_id, applied) = pipelined(
        |w| {
            let mut plain =
                HashingReader::new(compress::decompress(blob, c).map_err(io::Error::other)?);
            io::copy(&mut plain, w)?;
            Ok(plain.finish().0)
        },
        |r| apply_layer(r, target, opts),
    );
    applied?;
    diff_id.map_err(|e| Error::stream(format!("read {what}"), e))
}

/// The two ends of a bounded channel of stretches.
pub(crate) fn channel() -> (StretchWriter, ChannelReader) {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(QUEUE);
    let w = StretchWriter {
        tx: Some(tx),
        pending: Vec::with_capacity(STRETCH),
    };
    (w, ChannelReader::new(rx))
}

/// The writer's end: whole stretches to the reader while it listens, nothing after (writes
/// then succeed and go nowhere). Dropping it ends the reader's input.
pub(crate) struct StretchWriter {
    tx: Option<SyncSender<io::Result<Vec<u8>>>>,
    pending: Vec<u8>,
}

impl StretchWriter {
    /// Hands over what is buffered (a flush does the same).
    pub(crate) fn send_pending(&mut self) {
        let stretch = std::mem::replace(&mut self.pending, Vec::with_capacity(STRETCH));
        if let Some(tx) = &self.tx
            && !stretch.is_empty()
            && tx.send(Ok(stretch)).is_err()
        {
            self.tx = None;
        }
    }
}

impl Write for StretchWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx.is_none() {
            return Ok(buf.len());
        }
        let n = buf.len().min(STRETCH - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == STRETCH {
            self.send_pending();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending();
        Ok(())
    }
}

/// The reader's side: the stretches sent, then the end when the sender is gone.
pub(crate) struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<io::Result<Vec<u8>>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    self.buf = next;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn what_is_written_is_read_in_order_whatever_its_size() {
        for n in [0, 1, STRETCH - 1, STRETCH, 3 * STRETCH + 17] {
            let data = bytes(n);
            let (produced, read) = pipelined(
                |w| {
                    for piece in data.chunks(1000) {
                        w.write_all(piece)?;
                    }
                    Ok(n)
                },
                |r| {
                    let mut got = Vec::new();
                    r.read_to_end(&mut got).map(|_| got)
                },
            );
            assert_eq!(produced.unwrap(), n);
            assert_eq!(read.unwrap(), data, "{n}");
        }
    }

    #[test]
    fn a_reader_that_stops_early_leaves_the_producer_running_to_its_end() {
        let data = bytes(20 * STRETCH);
        let (produced, first) = pipelined(
            |w| {
                let mut total = 0;
                for piece in data.chunks(4096) {
                    w.write_all(piece)?;
                    total += piece.len();
                }
                Ok(total)
            },
            |r| {
                let mut head = [0u8; 10];
                r.read_exact(&mut head).map(|()| head)
            },
        );
        assert_eq!(produced.unwrap(), data.len());
        assert_eq!(first.unwrap()[..], data[..10]);
    }

    #[test]
    fn a_producers_failure_reaches_the_reader_after_its_bytes() {
        let (produced, read) = pipelined(
            |w| {
                w.write_all(b"some")?;
                Err::<(), _>(io::Error::new(io::ErrorKind::InvalidData, "bad gzip"))
            },
            |r| {
                let mut got = Vec::new();
                let e = r.read_to_end(&mut got).unwrap_err();
                (got, e.to_string())
            },
        );
        assert_eq!(produced.unwrap_err().to_string(), "bad gzip");
        assert_eq!(read, (b"some".to_vec(), "bad gzip".to_string()));
    }
}
