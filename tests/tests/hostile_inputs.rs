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
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_e2e::{Store, cairn_bin, loaded_busybox, ok, texts};
use serde_json::{Value, json};
use sha2::Digest as _;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// The bound on JSON documents that cairn applies (the registry client's manifest limit).
const DOCUMENT_LIMIT: usize = 8 << 20;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

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
// ---- OCI layouts ------------------------------------------------------------------------

/// An OCI image layout being made in a temp dir.
struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layout");
        fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { _dir: dir, root }
    }

    fn path(&self) -> &str {
        self.root.to_str().unwrap()
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    /// Writes `bytes` as a blob; its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = sha256(bytes);
        fs::write(self.blob_path(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// A manifest of one empty layer, with `pad` bytes of annotation to make it large.
    fn manifest_bytes(&self, pad: usize) -> Vec<u8> {
        let layer = tar(&[], true);
        let layer_desc = self.blob(OCI_LAYER, &layer);
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]},
        });
        let config_desc = self.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config_desc, "layers": [layer_desc],
            "annotations": {"pad": " ".repeat(pad)},
        });
        serde_json::to_vec(&manifest).unwrap()
    }

    /// A whole image; the manifest's descriptor.
    fn image(&self) -> Value {
        let m = self.manifest_bytes(0);
        self.blob(OCI_MANIFEST, &m)
    }

    /// index.json naming each descriptor `hostile/img:N`.
    fn index(&self, manifests: &[Value]) {
        let named: Vec<Value> = manifests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut d = d.clone();
                d["annotations"] = json!({"io.containerd.image.name": format!("hostile/img:{i}")});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": named});
        fs::write(
            self.root.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// The layout as an OCI archive (a plain tar) next to it.
    fn archive(&self) -> PathBuf {
        let mut owned: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                fs::read(self.root.join("oci-layout")).unwrap(),
            ),
            (
                "index.json".into(),
                fs::read(self.root.join("index.json")).unwrap(),
            ),
        ];
        for name in entries(&self.root.join("blobs/sha256")) {
            let bytes = fs::read(self.blob_path(&name)).unwrap();
            owned.push((format!("blobs/sha256/{name}"), bytes));
        }
        let list: Vec<Entry<'_>> = owned.iter().map(|(n, b)| file(n, b)).collect();
        let out = self.root.with_extension("tar");
        fs::write(&out, tar(&list, true)).unwrap();
        out
    }
}

// ---- B: load -----------------------------------------------------------------------------

/// Files of a layout that are not regular files inside it: refused by name, never read.
#[test]
fn load_reads_only_regular_files_inside_the_layout() {
    type Spoil = fn(&Layout, &str);
    let cases: [(&str, Spoil, &[&str]); 5] = [
        (
            "index.json -> /dev/zero",
            |l, _| {
                fs::remove_file(l.root.join("index.json")).unwrap();
                symlink("/dev/zero", l.root.join("index.json")).unwrap();
            },
            &["index.json", "a symbolic link"],
        ),
        (
            "index.json is a FIFO",
            |l, _| {
                fs::remove_file(l.root.join("index.json")).unwrap();
                mkfifo(&l.root.join("index.json"));
            },
            &["index.json", "a FIFO"],
        ),
        (
            "the manifest is a FIFO",
            |l, hex| {
                fs::remove_file(l.blob_path(hex)).unwrap();
                mkfifo(&l.blob_path(hex));
            },
            &["a FIFO"],
        ),
        (
            "the manifest is a symlink to /dev/zero",
            |l, hex| {
                fs::remove_file(l.blob_path(hex)).unwrap();
                symlink("/dev/zero", l.blob_path(hex)).unwrap();
            },
            &["a symbolic link"],
        ),
        (
            "blobs/sha256 is a symlink to a directory outside",
            |l, _| {
                let outside = l.root.with_extension("elsewhere");
                fs::rename(l.root.join("blobs/sha256"), &outside).unwrap();
                symlink(&outside, l.root.join("blobs/sha256")).unwrap();
            },
            &["sha256 is not a directory"],
        ),
    ];
    for (case, spoil, wanted) in cases {
        let l = Layout::new();
        let m = l.image();
        l.index(std::slice::from_ref(&m));
        let hex = m["digest"].as_str().unwrap()[7..].to_owned();
        spoil(&l, &hex);
        let s = Store::new();
        let out = guarded(&s, &["load", "-i", l.path()]);
        assert_refused(case, &s, &out, wanted);
        assert!(!s.root.join("blobs/sha256").join(&hex).exists(), "{case}");
    }
}

/// A docker-archive of one empty layer next to `l`, its config and manifest.json padded by
/// `config_pad` and `manifest_pad` bytes.
fn docker_archive(l: &Layout, config_pad: usize, manifest_pad: usize) -> PathBuf {
    let layer = tar(&[], true);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]},
        "comment": " ".repeat(config_pad),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let mut manifest = serde_json::to_vec(
        &json!([{"Config": "c.json", "RepoTags": ["hostile/docker:1"],
            "Layers": ["l/layer.tar"]}]),
    )
    .unwrap();
    manifest.extend(std::iter::repeat_n(b' ', manifest_pad));
    let out = l.root.with_extension("docker.tar");
    let list = [
        file("c.json", &config),
        file("l/layer.tar", &layer),
        file("manifest.json", &manifest),
    ];
    fs::write(&out, tar(&list, true)).unwrap();
    out
}

/// Index, manifest and config are JSON documents bounded like a registry's manifests, in a
/// layout and in an archive, whether the size is declared or only found.
#[test]
fn load_bounds_json_documents() {
    let over = DOCUMENT_LIMIT + 1024;
    type Make = fn(&Layout, usize) -> PathBuf;
    let cases: [(&str, Make, &[&str]); 7] = [
        (
            "a docker-archive whose config is over the limit",
            |l, over| docker_archive(l, over, 0),
            &["c.json", "more than the 8388608 bytes"],
        ),
        (
            "a docker-archive whose manifest.json is over the limit",
            |l, over| docker_archive(l, 0, over),
            &["manifest.json", "more than the 8388608 bytes"],
        ),
        (
            "a layout whose manifest is over the limit",
            |l, over| {
                let m = l.manifest_bytes(over);
                let d = l.blob(OCI_MANIFEST, &m);
                l.index(&[d]);
                l.root.clone()
            },
            &["more than the 8388608 bytes"],
        ),
        (
            "an archive whose manifest is over the limit",
            |l, over| {
                let m = l.manifest_bytes(over);
                let d = l.blob(OCI_MANIFEST, &m);
                l.index(&[d]);
                l.archive()
            },
            &["more than the 8388608 bytes"],
        ),
        (
            "a layout whose index.json is over the limit",
            |l, over| {
                let d = l.image();
                l.index(&[d]);
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(l.root.join("index.json"))
                    .unwrap();
                f.write_all(&vec![b' '; over]).unwrap();
                l.root.clone()
            },
            &["index.json", "more than the 8388608 bytes"],
        ),
        (
            "an archive whose index.json is over the limit",
            |l, over| {
                let d = l.image();
                l.index(&[d]);
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(l.root.join("index.json"))
                    .unwrap();
                f.write_all(&vec![b' '; over]).unwrap();
                l.archive()
            },
            &["index.json", "more than the 8388608 bytes"],
        ),
        (
            "a layout whose manifest declares 1.5 GB (a sparse file)",
            |l, _| {
                let hex = sha256(b"never read");
                sparse(&l.blob_path(&hex), 1_500_000_000);
                l.index(&[json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": format!("sha256:{hex}"),
                    "size": 1_500_000_000u64,
                })]);
                l.root.clone()
            },
            &["1500000000 bytes", "more than the 8388608 bytes"],
        ),
    ];
    for (case, make, wanted) in cases {
        let l = Layout::new();
        let src = make(&l, over);
        let s = Store::new();
        let out = guarded(&s, &["load", "-i", src.to_str().unwrap()]);
        assert_refused(case, &s, &out, wanted);
    }
}

/// 30,000 indexes each naming the next: refused at the depth limit, not by a stack overflow.
#[test]
fn load_refuses_deeply_nested_indexes() {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    // Each level names the next for this machine's platform, so that it is followed.
    let chain = |levels: usize| {
        let l = Layout::new();
        let mut next = l.image();
        for _ in 0..levels {
            next["platform"] = json!({"os": "linux", "architecture": arch});
            let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [next]});
            next = l.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap());
        }
        l.index(&[next]);
        l
    };
    let deep = chain(30_000);
    // An archive's blobs are stored as they stream by, before any is known to be an index:
    // a shorter chain says the same at a thousandth of the writes.
    let archived = chain(1_000);
    for (case, src) in [
        ("layout", deep.root.clone()),
        ("archive", archived.archive()),
    ] {
        let s = Store::new();
        let out = guarded(&s, &["load", "-i", src.to_str().unwrap()]);
        assert_refused(case, &s, &out, &["nested 9 levels deep", "at most 8"]);
    }
}

/// A layer that declares a terabyte is refused before a byte of it is written.
#[test]
fn load_refuses_a_layer_larger_than_the_free_space() {
    const TB: u64 = 1 << 40;
    // A layout whose layer blob is a sparse file of a terabyte.
    let l = Layout::new();
    let hex = sha256(b"a terabyte");
    sparse(&l.blob_path(&hex), TB);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{hex}")]}});
    let config = l.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
    let layer = json!({"mediaType": OCI_LAYER, "digest": format!("sha256:{hex}"), "size": TB});
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config, "layers": [layer]});
    let manifest = l.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
    l.index(&[manifest]);
    // An archive whose blob entry's header declares a terabyte, and then ends.
    let archive = l.root.with_extension("tar");
    let name = format!("blobs/sha256/{hex}");
    let mut entry = file(&name, b"");
    entry.size = Some(TB);
    fs::write(
        &archive,
        tar(
            &[
                file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                entry,
            ],
            false,
        ),
    )
    .unwrap();
    for (case, src) in [("layout", l.root.clone()), ("archive", archive)] {
        let s = Store::new();
        let out = guarded(&s, &["load", "-i", src.to_str().unwrap()]);
        assert_refused(
            case,
            &s,
            &out,
            &[&hex, "declares 1099511627776 bytes", "free"],
        );
        assert!(!s.root.join("blobs/sha256").join(&hex).exists(), "{case}");
    }
}

/// One image under 5,000 names: every name is listed after one load.
#[test]
fn load_names_thousands_of_images() {
    let l = Layout::new();
    let m = l.image();
    l.index(&std::iter::repeat_n(m, 5000).collect::<Vec<_>>());
    let s = Store::new();
    let out = guarded(&s, &["load", "-i", l.path()]);
    assert!(out.status.success(), "{}", texts(&out).1);
    let mut names = tags(&s);
    names.sort();
    let mut want: Vec<String> = (0..5000)
        .map(|i| format!("docker.io/hostile/img:{i}"))
        .collect();
    want.sort();
    assert_eq!(names, want);
}

// ---- E: an image's /etc files ------------------------------------------------------------

/// `cairn build` of `dockerfile` (with a file `f` beside it) with `flags`, guarded; and the
/// local output.
fn build_guarded(s: &Store, dockerfile: &str, flags: &[&str]) -> (Output, tempfile::TempDir) {
    let ctx = cairn_e2e::context_with(dockerfile, &[("f", "f")]);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    let args = ["build", "--progress", "plain", "--no-cache", "-o", &dest];
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(flags);
    all.push(ctx.path().to_str().unwrap());
    (guarded(s, &all), out)
}

/// USER and `--chown` names come from the image's /etc/passwd and /etc/group as the step
/// would see them: a symlink to a host file resolves inside the image (where nothing is), so
/// the host's entries never decide an owner; a FIFO in their place is not waited on.
#[test]
fn user_names_are_read_inside_the_image_never_through_it() {
    let s = loaded_busybox();
    // Host files the links point at, readable by whoever runs cairn (a temp dir is 0700).
    let host = tempfile::tempdir().unwrap();
    let readable = |p: &Path, mode| {
        fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    readable(host.path(), 0o755);
    for (name, text) in [
        ("passwd", "evil:x:4242:4343::/evil:/bin/sh\n"),
        ("group", "evilgrp:x:4444:\n"),
    ] {
        fs::write(host.path().join(name), text).unwrap();
        readable(&host.path().join(name), 0o644);
    }
    let h = host.path().display();
    let links = format!("RUN ln -sf {h}/passwd /etc/passwd && ln -sf {h}/group /etc/group\n");

    // --chown: names not found leave 0:0 (BuildKit warns), never the host's 4242:4444.
    let (out, local) = build_guarded(
        &s,
        &format!(
            "FROM busybox\n{links}COPY --chown=evil:evilgrp f /f\n\
             RUN stat -c %u:%g /f > /owner\n"
        ),
        &[],
    );
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        fs::read_to_string(local.path().join("owner")).unwrap(),
        "0:0\n"
    );

    // USER: a name the image lacks is an error, as runc makes it.
    let (out, _) = build_guarded(
        &s,
        &format!("FROM busybox\n{links}USER evil\nRUN id -u\n"),
        &[],
    );
    let (_, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "USER evil resolved through the host:\n{stderr}"
    );
    assert!(stderr.contains("evil"), "{stderr}");

    // A link to a file of the image resolves as in the step, across the layers below it.
    for snapshotter in ["overlay", "copy"] {
        let (out, local) = build_guarded(
            &s,
            "FROM busybox\nRUN mkdir -p /usr/lib && cp /etc/passwd /usr/lib/passwd && \
                 echo app:x:1234:1235::/:/bin/sh >> /usr/lib/passwd\n\
                 RUN ln -sf ../usr/lib/passwd /etc/passwd\nRUN ln -sf /etc/passwd /etc/pw\n\
                 USER app\nRUN id -u > /tmp/uid\n",
            &["--snapshotter", snapshotter],
        );
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            fs::read_to_string(local.path().join("tmp/uid")).unwrap(),
            "1234\n"
        );
    }

    // A FIFO as /etc/group: COPY --chown and RUN's USER read it without blocking.
    let (out, local) = build_guarded(
        &s,
        "FROM busybox\nRUN rm /etc/group && mkfifo /etc/group\n\
         COPY --chown=0:staff f /f\nUSER 0:0\nRUN stat -c %u:%g /f > /owner\n",
        &[],
    );
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        fs::read_to_string(local.path().join("owner")).unwrap(),
        "0:0\n"
    );
}
