//! Layer compression throughput, and the same data through `pigz -p2` for comparison.
//!
//! `cargo bench -p cairn-layers --bench compress` compresses 256 MiB of text-like and 256 MiB of
//! random data with each `Compression` and, when `pigz` is installed, runs the shell pipeline
//! cairn replaces (`tee >(sha256sum) | pigz -p2 | sha256sum`) over the same bytes in /tmp.
//! `-- rss [gzip|zstd|none]` instead streams 1.25 GiB of generated data (text and random in
//! turn) and reports peak RSS.
//! `-- file PATH [gzip|zstd|none]` compresses one file, to time against other tools
//! (`CAIRN_BENCH_LEVEL` sets the level).
//! `-- write [DIR]` only writes the two data sets to DIR (default /tmp), for other tools.
//! `CAIRN_BENCH_MIB` changes the data size.

#![allow(clippy::print_stdout)]

use std::error::Error;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cairn_layers::compress::{Compression, LayerWriter};

type Res<T> = Result<T, Box<dyn Error>>;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        for piece in buf.chunks_mut(8) {
            let n = piece.len();
            piece.copy_from_slice(&self.next().to_le_bytes()[..n]);
        }
    }
}

/// Text-like bytes: words from a 4096-word vocabulary, common ones far more often (the smaller
/// of two draws), with punctuation and line breaks; gzip -6 shrinks it about as much as prose.
struct Text {
    rng: Rng,
    words: Vec<Vec<u8>>,
}

impl Text {
    fn new(seed: u64) -> Text {
        let mut rng = Rng(seed | 1);
        let words = (0..4096)
            .map(|_| {
                let len = 2 + (rng.next() % 9) as usize;
                (0..len).map(|_| b'a' + (rng.next() % 26) as u8).collect()
            })
            .collect();
        Text { rng, words }
    }

    fn fill(&mut self, buf: &mut Vec<u8>, n: usize) {
        buf.clear();
        while buf.len() < n {
            let r = self.rng.next();
            let (a, b) = ((r & 0xfff) as usize, ((r >> 12) & 0xfff) as usize);
            buf.extend_from_slice(&self.words[a.min(b)]);
            buf.push(match (r >> 24) % 16 {
                0 => b'\n',
                1 => b',',
                2 => b'.',
                _ => b' ',
            });
        }
        buf.truncate(n);
    }
}

fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    Text::new(1).fill(&mut v, n);
    v
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    Rng(2).fill_random(&mut v);
    v
}

/// CPU seconds used by this process and by its waited-for children, from /proc (100 Hz ticks).
fn cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let field = |k: usize| f.get(k - 3).copied().unwrap_or(0.0) / 100.0;
    (field(14) + field(15), field(16) + field(17))
}

/// Wall-clock and CPU seconds (ours, or the children's for pigz): the machine is shared, so CPU
/// time is the steadier figure.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

fn timed<T>(children: bool, f: impl FnOnce() -> Res<T>) -> Res<(Timing, T)> {
    let pick = |(own, kids): (f64, f64)| if children { kids } else { own };
    let (start, cpu0) = (Instant::now(), pick(cpu_secs()));
    let out = f()?;
    let timing = Timing {
        wall: start.elapsed().as_secs_f64(),
        cpu: pick(cpu_secs()) - cpu0,
    };
    Ok((timing, out))
}

/// Feeds `data` in 64 KiB writes; returns the blob's size.
fn run(data: &[u8], c: Compression) -> Res<(Timing, u64)> {
    timed(false, || {
        let mut w = LayerWriter::new(io::sink(), c);
        for piece in data.chunks(64 * 1024) {
            w.write_all(piece)?;
        }
        Ok(w.finish()?.0.size)
    })
}

/// The same, reading `path` as pigz does.
fn run_file(path: &Path, c: Compression) -> Res<Timing> {
    let size = std::cell::Cell::new(0);
    let mut level = 0;
    let (t, ()) = timed(false, || {
        level = match std::env::var("CAIRN_BENCH_LEVEL") {
            Ok(l) => l.parse()?,
            Err(_) => c.default_level(),
        };
        let mut w = LayerWriter::with_level(io::sink(), c, level);
        io::copy(
            &mut BufReader::with_capacity(64 * 1024, File::open(path)?),
            &mut w,
        )?;
        let d = w.finish()?;
        size.set(d.0.size);
        Ok(())
    })?;
    println!("  level {level}: {} bytes", size.get());
    Ok(t)
}

fn pigz(path: &Path) -> Res<Option<Timing>> {
    if Command::new("pigz").arg("--version").output().is_err() {
        return Ok(None);
    }
    // `wait` so the process substitution's sha256sum is done (and counted) before we stop.
    let script = "tee >(sha256sum >/dev/null) < \"$1\" | pigz -p2 -6 | sha256sum >/dev/null; wait";
    let (t, status) = timed(true, || {
        Ok(Command::new("bash")
            .args(["-c", script, "bash"])
            .arg(path)
            .status()?)
    })?;
    if !status.success() {
        return Err(format!("pigz pipeline failed: {status}").into());
    }
    Ok(Some(t))
}

fn line(what: &str, n: usize, t: Timing, extra: &str) {
    println!(
        "{what:<44} {:7.1} MB/s wall {:7.1} MB/cpu-s{extra}",
        n as f64 / t.wall / 1e6,
        n as f64 / t.cpu.max(0.01) / 1e6,
    );
}

fn throughput(mib: usize) -> Res<()> {
    let n = mib << 20;
    let dir = std::env::temp_dir();
    for (name, data) in [("text", text(n)), ("random", random(n))] {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let (t, size) = run(&data, c)?;
            let what = format!("{name} {mib} MiB {c:?}").to_lowercase();
            line(
                &what,
                n,
                t,
                &format!("  ratio {:.3}", size as f64 / n as f64),
            );
        }
        let path = dir.join(format!("cairn-bench-{name}-{}", std::process::id()));
        std::fs::write(&path, &data)?;
        drop(data);
        let ours = run_file(&path, Compression::Gzip);
        let theirs = pigz(&path);
        std::fs::remove_file(&path)?;
        line(&format!("{name} gzip, from a /tmp file"), n, ours?, "");
        match theirs? {
            Some(t) => line(
                &format!("{name} tee >(sha256sum) | pigz -p2 | sha256sum"),
                n,
                t,
                "",
            ),
            None => println!("{name}: pigz is not installed; apt-get install pigz to compare"),
        }
    }
    Ok(())
}

/// Streams generated data (text and random in 4 MiB runs) through gzip without holding it.
fn rss(mib: usize, c: Compression) -> Res<()> {
    let mut text = Text::new(3);
    let mut rng = Rng(4);
    let mut buf = Vec::with_capacity(4 << 20);
    let mut w = LayerWriter::new(io::sink(), c);
    let (start, cpu0) = (Instant::now(), cpu_secs().0);
    for i in 0..mib / 4 {
        if i % 2 == 0 {
            text.fill(&mut buf, 4 << 20);
        } else {
            buf.resize(4 << 20, 0);
            rng.fill_random(&mut buf);
        }
        for piece in buf.chunks(64 * 1024) {
            w.write_all(piece)?;
        }
    }
    let (digests, _) = w.finish()?;
    let t = Timing {
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_secs().0 - cpu0,
    };
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    let extra = format!(
        "  ratio {:.3}, peak RSS {}",
        digests.size as f64 / digests.uncompressed_size as f64,
        hwm.trim_start_matches("VmHWM:").trim(),
    );
    line(&format!("{c:?} streamed {mib} MiB"), mib << 20, t, &extra);
    Ok(())
}

/// Writes the data sets to `dir` for runs of other tools.
fn write_data(mib: usize, dir: &Path) -> Res<()> {
    let n = mib << 20;
    for (name, data) in [("text", text(n)), ("random", random(n))] {
        let path = dir.join(format!("cairn-bench-{name}"));
        std::fs::write(&path, data)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> Res<()> {
    // cargo bench adds --bench.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let compression = |i: usize| match arg(i) {
        None | Some("gzip") => Ok(Compression::Gzip),
        Some("zstd") => Ok(Compression::Zstd),
        Some("none") => Ok(Compression::None),
        Some(other) => Err(format!("unknown compression {other}")),
    };
    let mib = std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok());
    match arg(0) {
        None => throughput(mib.unwrap_or(256)),
        Some("rss") => rss(mib.unwrap_or(1280), compression(1)?),
        Some("write") => {
            let dir = arg(1).map_or_else(std::env::temp_dir, Into::into);
            write_data(mib.unwrap_or(256), &dir)
        }
        Some("file") => {
            let path = Path::new(arg(1).ok_or("file needs a path")?);
            let c = compression(2)?;
            let n = usize::try_from(std::fs::metadata(path)?.len())?;
            line(
                &format!("{} {c:?}", path.display()),
                n,
                run_file(path, c)?,
                "",
            );
            Ok(())
        }
        Some(other) => Err(format!("unknown mode {other}: rss, write or file").into()),
    }
}
