//! Hostile inputs through the real binary: a RUN that prints one endless line, layouts and
//! archives made to exhaust memory, disk or the stack or to block `cairn load`, secrets that
//! never end, and rootfs tarballs that reach outside their root. Each must be refused cleanly
//! (an error naming the file or entry, no panic, nothing stored, no temp file left) or, for the
//! log line, handled in bounded memory.
//!
//! Every cairn run here is guarded (address space, file size, time), so that the unfixed
//! behaviour fails the test instead of eating the machine.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_e2e::{Store, cairn_bin, loaded_busybox, ok, texts};
use serde_json::Value;

/// `cairn --root STORE ARGS` under limits that turn a runaway into a failure: 4 GiB of address
/// space, no file over 2 GiB, killed after two minutes (a guard against hangs, not a timing).
fn guarded(s: &Store, args: &[&str]) -> Output {
    let mut c = Command::new("prlimit");
    c.args(["--as=4294967296", "--fsize=2147483648", "--"])
        .args(["timeout", "-s", "KILL", "120"])
        .arg(cairn_bin())
        .arg("--root")
        .arg(&s.root)
        .args(args)
        .env_remove("CAIRN_ROOT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c.output().unwrap()
}

/// The names in the store's index.json (none when the store was never made).
fn tags(s: &Store) -> Vec<String> {
    let Ok(bytes) = fs::read(s.root.join("index.json")) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Insists that cairn refused with an error (exit 1, not a signal, not a panic) whose message
/// holds every one of `wanted`, and that it named nothing and left no temp file.
fn assert_refused(case: &str, s: &Store, out: &Output, wanted: &[&str]) {
    let (_, stderr) = texts(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{case}: {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "{case}: no {w:?} in:\n{stderr}");
    }
    assert_eq!(tags(s), Vec::<String>::new(), "{case}: names were written");
    assert_eq!(
        entries(&s.root.join("tmp")),
        Vec::<String>::new(),
        "{case}: temp files left"
    );
}

// ---- tar archives, written by hand so that they can say anything ------------------------

/// One tar entry: name, type flag, link name, content; `size` overrides the header's size.
struct Entry<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: &'a [u8],
    size: Option<u64>,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: b'0',
        link: "",
        data,
        size: None,
    }
}

fn link<'a>(name: &'a str, kind: u8, target: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind,
        link: target,
        data: b"",
        size: None,
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(e: &Entry<'_>) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..e.name.len()].copy_from_slice(e.name.as_bytes());
    octal(&mut h[100..108], if e.kind == b'5' { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    let size = e.size.unwrap_or(e.data.len() as u64);
    if size < 1 << 33 {
        octal(&mut h[124..136], size);
    } else {
        // GNU base-256: what a header must use beyond 8 GiB.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], 0);
    h[156] = e.kind;
    h[157..157 + e.link.len()].copy_from_slice(e.link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar of `entries`; `end` adds the two zero blocks that close an archive.
fn tar(entries: &[Entry<'_>], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&header(e));
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end {
        out.resize(out.len() + 1024, 0);
    }
    out
}

// ---- files -----------------------------------------------------------------------------

/// A FIFO at `p`.
fn mkfifo(p: &Path) {
    ok({
        let mut c = Command::new("mkfifo");
        c.arg(p);
        c
    });
}

/// Sets `p`'s size without writing its bytes.
fn sparse(p: &Path, size: u64) {
    fs::File::create(p).unwrap().set_len(size).unwrap();
}

// ---- D: import ---------------------------------------------------------------------------

/// Rootfs tarballs with entries that reach outside the root, or through a link they made, are
/// refused at import naming the entry, and nothing is stored; a well-behaved one imports.
#[test]
fn import_refuses_entries_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<Entry<'_>>, &str); 6] = [
        ("../x", vec![file("../x", b"out")], "\"../x\""),
        ("/abs", vec![file("/abs", b"abs")], "\"/abs\""),
        (
            "a/../../x",
            vec![link("a/", b'5', ""), file("a/../../x", b"out")],
            "\"a/../../x\"",
        ),
        (
            "a hard link to ../x",
            vec![file("x", b"in"), link("h", b'1', "../x")],
            "\"h\"",
        ),
        ("a hard link to ../", vec![link("h", b'1', "../")], "\"h\""),
        (
            "l -> /etc, then l/passwd",
            vec![
                link("l", b'2', "/etc"),
                file("l/passwd", b"root::0:0::/:/bin/sh\n"),
            ],
            "\"l/passwd\"",
        ),
    ];
    for (i, (case, list, entry)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.tar"));
        fs::write(&path, tar(&list, true)).unwrap();
        let s = Store::new();
        let out = guarded(&s, &["import", path.to_str().unwrap(), "hostile:import"]);
        assert_refused(case, &s, &out, &[entry]);
        assert_eq!(
            entries(&s.root.join("blobs/sha256")),
            Vec::<String>::new(),
            "{case}: a blob was stored"
        );
    }
    // What real rootfs tarballs hold: `./` names, absolute symlink targets, hard links.
    let good = [
        link("./", b'5', ""),
        link("./etc/", b'5', ""),
        file("./etc/passwd", b"root::0:0::/:/bin/sh\n"),
        link("./etc/mtab", b'2', "/proc/mounts"),
        link("./etc/passwd-", b'1', "./etc/passwd"),
        link("./lib", b'2', "usr/lib"),
    ];
    let path = dir.path().join("good.tar");
    fs::write(&path, tar(&good, true)).unwrap();
    let s = Store::new();
    let out = guarded(&s, &["import", path.to_str().unwrap(), "fine:import"]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(tags(&s), ["docker.io/library/fine:import"]);
}

// ---- C: secrets --------------------------------------------------------------------------

/// `--secret` sources that never end, block, or are too large are refused naming the file;
/// a small regular file is still mounted.
#[test]
fn secrets_are_bounded_regular_files() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=a cat /run/secrets/a\n",
    )
    .unwrap();
    let fifo = ctx.path().join("fifo");
    mkfifo(&fifo);
    let big = ctx.path().join("big");
    sparse(&big, 100 << 20);
    let link = ctx.path().join("link-to-zero");
    symlink("/dev/zero", &link).unwrap();
    let cases: [(&str, &Path, &str); 4] = [
        ("/dev/zero", Path::new("/dev/zero"), "a character device"),
        ("a FIFO", &fifo, "a FIFO"),
        ("a symlink to /dev/zero", &link, "a character device"),
        ("a sparse 100 MiB file", &big, "more than the 512000 bytes"),
    ];
    let before = tags(&s);
    for (case, src, why) in cases {
        let spec = format!("id=a,src={}", src.display());
        let out = guarded(
            &s,
            &[
                "build",
                "--progress",
                "plain",
                "--secret",
                &spec,
                ctx.path().to_str().unwrap(),
            ],
        );
        let (_, stderr) = texts(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&src.display().to_string()),
            "{case}: {stderr}"
        );
        assert!(stderr.contains(why), "{case}: {stderr}");
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    }
    assert_eq!(tags(&s), before);
    let small = ctx.path().join("small");
    fs::write(&small, "s3cret-value").unwrap();
    let spec = format!("id=a,src={}", small.display());
    let out = guarded(
        &s,
        &[
            "build",
            "--progress",
            "plain",
            "--secret",
            &spec,
            ctx.path().to_str().unwrap(),
        ],
    );
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("s3cret-value"), "{stderr}");
}

// ---- A: log lines ------------------------------------------------------------------------

/// A RUN printing a 200 MB line without a newline builds, every byte of it reaches the
/// progress output in bounded lines, and cairn's peak memory stays far below the line.
#[test]
fn an_endless_log_line_keeps_memory_bounded() {
    const LINE: u64 = 200_000_000;
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM busybox\nRUN head -c {LINE} /dev/zero | tr '\\0' a\n"),
    )
    .unwrap();
    let rusage = ctx.path().join("rusage");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-v")
        .arg("-o")
        .arg(&rusage)
        .args(["timeout", "-s", "KILL", "600"])
        .arg(cairn_bin())
        .arg("--root")
        .arg(&s.root)
        .args(["build", "--progress", "plain"])
        .arg(ctx.path())
        .env_remove("CAIRN_ROOT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Counted as it streams, never held: the longest line, the bytes of `a`, the tail.
    let mut err = child.stderr.take().unwrap();
    let (mut longest, mut current, mut a_bytes) = (0usize, 0usize, 0u64);
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = err.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                longest = longest.max(current);
                current = 0;
            } else {
                current += 1;
            }
            a_bytes += u64::from(b == b'a');
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 8192 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let status = child.wait().unwrap();
    let tail = String::from_utf8_lossy(&tail).into_owned();
    assert!(status.success(), "{status:?}\n{tail}");
    // "#N " before each piece of the line; the rest of the output has few a's of its own.
    assert!(
        longest <= (64 << 10) + 16,
        "a line of {longest} bytes\n{tail}"
    );
    assert!(
        (LINE..LINE + 1000).contains(&a_bytes),
        "{a_bytes} bytes of the line arrived"
    );
    let report = fs::read_to_string(&rusage).unwrap();
    let max_kb: u64 = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .unwrap_or_else(|| panic!("no maximum RSS in {report}"))
        .parse()
        .unwrap();
    assert!(max_kb < 300 * 1024, "cairn peaked at {max_kb} KiB");
}
