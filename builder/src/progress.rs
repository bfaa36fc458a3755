//! Progress of a build: the events the CLI renders, and byte counting for steps that stream
//! their sources into a layer, reported a few times a second.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Progress of a build, for the CLI to render.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts: `id` numbers steps across the build; `stage` names its stage.
    Step {
        id: usize,
        stage: String,
        index: usize,
        total: usize,
        text: String,
    },
    /// A step finished after `seconds`.
    Done { id: usize, seconds: f64 },
    /// A step's result came from the cache.
    Cached { id: usize },
    /// Why a step's result could not come from the cache (one line).
    Miss { id: usize, reason: String },
    /// How far a COPY or ADD has got through the bytes of its sources: sent a few times a
    /// second while it writes its layer, the last time with `done == total`.
    Bytes { id: usize, done: u64, total: u64 },
    /// A step wrote a new layer of `size` bytes as stored (before any compression on export):
    /// what `cairn build --metadata-file` counts as the bytes a build wrote.
    Layer { id: usize, size: u64 },
    /// A line a step's process wrote (RUN's output).
    Log { id: usize, line: String },
    /// Something the user should know once (the sandbox's set-up, for instance).
    Warning(String),
    /// A lint rule's warning about the Dockerfile, sent before the first step (BuildKit
    /// lists them when the build ends).
    Lint(cairn_parser::lint::Lint),
    /// A line of information, said once (the isolation the build's steps get).
    Note(String),
    /// Where a step's time went: `seconds` spent in `phase` (`cairn build --debug-timings`).
    Timing {
        id: usize,
        phase: Phase,
        seconds: f64,
    },
}

/// The parts of a step that take time of their own, for finding where a build's time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Layers unpacked or mounted before the step could read files: the stage's own for a
    /// RUN, a stage's or an image's for `COPY --from`.
    Unpack,
    /// `--chown` user and group names looked up in the image's files.
    Names,
    /// The sandbox set up, the process run, the sandbox torn down.
    Process,
    /// The step's changes walked, written as a tar, hashed, compressed and stored.
    Layer,
    /// A RUN's upper directory kept as the next step's unpacked layer.
    Adopt,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Unpack => "unpack",
            Phase::Names => "names",
            Phase::Process => "process",
            Phase::Layer => "layer",
            Phase::Adopt => "adopt",
        }
    }
}

/// How often a step reports its bytes: enough for a bar to move smoothly, few enough events that
/// a 1 GiB COPY sends tens, not thousands.
const EVERY: Duration = Duration::from_millis(200);

/// A writer that passes everything through and reports the bytes written so far, at most every
/// [`EVERY`], and once more, complete, when dropped after reaching `total`.
pub(crate) struct Counting<'w, F: FnMut(u64)> {
    inner: &'w mut dyn Write,
    done: u64,
    total: u64,
    last: Instant,
    report: F,
}

impl<'w, F: FnMut(u64)> Counting<'w, F> {
    pub(crate) fn new(inner: &'w mut dyn Write, total: u64, report: F) -> Self {
        Counting {
            inner,
            done: 0,
            total,
            last: Instant::now(),
            report,
        }
    }
}

impl<F: FnMut(u64)> Write for Counting<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done += n as u64;
        if self.last.elapsed() >= EVERY {
            self.last = Instant::now();
            // Tar headers and padding count too, so the count can pass the sources' total.
            (self.report)(self.done.min(self.total));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F: FnMut(u64)> Drop for Counting<'_, F> {
    fn drop(&mut self) {
        if self.done >= self.total {
            (self.report)(self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_progress_and_completion() {
        let mut sink = Vec::new();
        let mut seen = Vec::new();
        {
            let mut w = Counting::new(&mut sink, 10, |d| seen.push(d));
            w.write_all(b"hello").unwrap();
            w.last -= EVERY;
            w.write_all(b"world, and tar padding").unwrap();
        }
        assert_eq!(seen, [10, 10]);
        assert_eq!(sink.len(), 27);

        // A step that fails halfway says nothing more when dropped.
        let mut seen = Vec::new();
        {
            let mut sink = Vec::new();
            let mut w = Counting::new(&mut sink, 100, |d| seen.push(d));
            w.write_all(b"half").unwrap();
        }
        assert!(seen.is_empty());
    }
}
