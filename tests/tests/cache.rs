//! The build cache through the real binary: which steps hit and miss when each input changes,
//! why a miss happened, the same image ID on a full hit, hits across checkouts, and corrupted
//! records or blobs rebuilt rather than used.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cairn_e2e::{Store, is_root, loaded_busybox, ok, texts};

const DOCKERFILE: &str = "FROM busybox\n\
    ENV GREETING=hello\n\
    WORKDIR /app\n\
    COPY src/ /app/src/\n\
    ADD extra.txt /app/\n\
    ARG VERSION=1\n\
    RUN echo \"built $VERSION\" > /app/version && echo ran-$((40+2))\n\
    COPY late.txt /app/\n\
    RUN cat /app/late.txt > /app/late-copy && echo late-$((1+2))\n\
    LABEL kind=test\n\
    CMD [\"cat\", \"/app/version\"]\n";

fn make_context(dir: &Path) {
    fs::create_dir_all(dir.join("src/sub")).unwrap();
    fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(dir.join("src/a.txt"), "a\n").unwrap();
    fs::write(dir.join("src/sub/b.txt"), "b\n").unwrap();
    fs::write(dir.join("extra.txt"), "extra\n").unwrap();
    fs::write(dir.join("late.txt"), "late\n").unwrap();
    fs::write(dir.join("ignored.log"), "noise\n").unwrap();
    fs::write(dir.join(".dockerignore"), "*.log\n").unwrap();
}

/// One build's plain progress, read per step.
struct Progress {
    stderr: String,
    image: String,
}

impl Progress {
    /// The `#N` of the step whose text starts with `instruction`.
    fn id(&self, instruction: &str) -> String {
        self.stderr
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.contains(&format!("] {instruction}")))
            })
            .and_then(|l| l.split_once(' '))
            .map(|(id, _)| id.to_owned())
            .unwrap_or_else(|| panic!("no step {instruction:?} in\n{}", self.stderr))
    }

    fn cached(&self, instruction: &str) -> bool {
        let id = self.id(instruction);
        self.stderr.lines().any(|l| l == format!("{id} CACHED"))
    }

    fn miss_reason(&self, instruction: &str) -> Option<String> {
        let id = self.id(instruction);
        let prefix = format!("{id} cache miss: ");
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

fn build(s: &Store, ctx: &Path, args: &[&str]) -> Progress {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    let out = ok(c);
    let stderr = texts(&out).1;
    let image = stderr
        .lines()
        .find_map(|l| l.strip_prefix("writing image "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image line in\n{stderr}"))
        .to_owned();
    Progress { stderr, image }
}

const STEPS: [&str; 5] = [
    "COPY src/",
    "ADD extra.txt",
    "RUN echo",
    "COPY late.txt",
    "RUN cat",
];

fn hits(p: &Progress) -> Vec<bool> {
    STEPS.iter().map(|s| p.cached(s)).collect()
}

#[test]
fn each_input_misses_only_the_steps_that_use_it_and_says_why() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    make_context(ctx);

    let first = build(&s, ctx, &[]);
    assert_eq!(hits(&first), [false; 5], "{}", first.stderr);
    assert!(first.stderr.contains("ran-42") && first.stderr.contains("late-3"));

    // Nothing changed: every step hits and the image is the same one.
    let again = build(&s, ctx, &[]);
    assert_eq!(hits(&again), [true; 5], "{}", again.stderr);
    assert!(!again.stderr.contains("ran-42"), "{}", again.stderr);
    assert_eq!(again.image, first.image);

    // An ignored file: still a full hit.
    fs::write(ctx.join("ignored.log"), "other noise\n").unwrap();
    let ignored = build(&s, ctx, &[]);
    assert_eq!(hits(&ignored), [true; 5], "{}", ignored.stderr);
    assert_eq!(ignored.image, first.image);

    // The file of the second COPY: it and what follows miss; the first steps hit.
    fs::write(ctx.join("late.txt"), "later\n").unwrap();
    let late = build(&s, ctx, &[]);
    assert_eq!(
        hits(&late),
        [true, true, true, false, false],
        "{}",
        late.stderr
    );
    assert_eq!(
        late.miss_reason("COPY late.txt").as_deref(),
        Some("1 file changed (app/late.txt)"),
        "{}",
        late.stderr
    );
    assert_eq!(
        late.miss_reason("RUN cat").as_deref(),
        Some("parent step changed")
    );
    assert_ne!(late.image, first.image);

    // A build arg: the RUN that has it in its environment misses; the COPYs before it hit.
    let arg = build(&s, ctx, &["--build-arg", "VERSION=2"]);
    assert_eq!(
        hits(&arg),
        [true, true, false, false, false],
        "{}",
        arg.stderr
    );
    assert_eq!(
        arg.miss_reason("RUN echo").as_deref(),
        Some("build arg VERSION changed"),
        "{}",
        arg.stderr
    );

    // A file in a copied directory, and the directory's new file.
    fs::write(ctx.join("src/sub/b.txt"), "B\n").unwrap();
    fs::write(ctx.join("src/new.txt"), "new\n").unwrap();
    let src = build(&s, ctx, &[]);
    assert!(!hits(&src)[0], "{}", src.stderr);
    let reason = src.miss_reason("COPY src/").unwrap();
    assert!(
        reason.starts_with("2 files changed (") && reason.contains("app/src/sub/b.txt"),
        "{reason}"
    );

    // --no-cache runs everything; --no-cache-filter only the stage it names.
    let none = build(&s, ctx, &["--no-cache"]);
    assert_eq!(hits(&none), [false; 5], "{}", none.stderr);
    let filtered = build(&s, ctx, &["--no-cache-filter", "0"]);
    assert_eq!(hits(&filtered), [false; 5], "{}", filtered.stderr);
    let other = build(&s, ctx, &["--no-cache-filter", "other"]);
    assert_eq!(hits(&other), [true; 5], "{}", other.stderr);
}

/// The same files checked out elsewhere, at another time, with another umask and owner: hits.
#[test]
fn another_checkout_of_the_same_files_hits() {
    let s = loaded_busybox();
    let a = tempfile::tempdir().unwrap();
    make_context(a.path());
    let first = build(&s, a.path(), &[]);

    let b = tempfile::tempdir().unwrap();
    make_context(b.path());
    for f in ["src/a.txt", "src/sub/b.txt", "extra.txt", "late.txt"] {
        let p = b.path().join(f);
        // umask 002 instead of 022, and a clone made at another time.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
        let status = Command::new("touch")
            .args(["-d", "2001-02-03 04:05:06"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(status.success());
        if is_root() {
            std::os::unix::fs::chown(&p, Some(4321), Some(4321)).unwrap();
        }
    }
    let second = build(&s, b.path(), &[]);
    assert_eq!(hits(&second), [true; 5], "{}", second.stderr);
    assert_eq!(second.image, first.image);

    // An executable bit is content, though: that file misses.
    let p = b.path().join("late.txt");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o775)).unwrap();
    let third = build(&s, b.path(), &[]);
    assert_eq!(
        hits(&third),
        [true, true, true, false, false],
        "{}",
        third.stderr
    );
}

/// A record that does not parse, or a layer blob whose bytes changed, is a miss: the step
/// runs again and the build is correct.
#[test]
fn corrupted_records_and_blobs_are_rebuilt_not_used() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    make_context(dir.path());
    build(&s, dir.path(), &[]);

    let records = s.root.join("buildcache/records");
    for e in fs::read_dir(&records).unwrap() {
        fs::write(e.unwrap().path(), b"{not json").unwrap();
    }
    let after_records = build(&s, dir.path(), &[]);
    assert_eq!(hits(&after_records), [false; 5], "{}", after_records.stderr);
    assert!(after_records.stderr.contains("ran-42"));

    // Every layer blob the records name, overwritten with other bytes of the same size.
    let mut damaged = 0;
    for e in fs::read_dir(&records).unwrap() {
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(e.unwrap().path()).unwrap()).unwrap();
        if let Some(d) = rec["layer"]["descriptor"]["digest"].as_str() {
            let blob = s
                .root
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            let len = fs::metadata(&blob).unwrap().len() as usize;
            std::thread::sleep(std::time::Duration::from_millis(20));
            fs::write(&blob, vec![b'x'; len]).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged >= 4, "{damaged}");
    let after_blobs = build(&s, dir.path(), &[]);
    assert_eq!(hits(&after_blobs), [false; 5], "{}", after_blobs.stderr);
    assert!(after_blobs.stderr.contains("late-3"));
}

/// `--cache-to` writes a build's steps to a directory; a fresh store reading it with
/// `--cache-from` hits every step and makes the same image. mode=min keeps only the target
/// stage's steps: a builder stage then runs again, and the final stage still hits.
#[test]
fn an_exported_cache_makes_a_fresh_store_hit() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    make_context(dir.path());
    let out = tempfile::tempdir().unwrap();
    let cache = out.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let first = build(&s, dir.path(), &["--cache-to", &to]);
    // An OCI layout that other tools read.
    let mut inspect = Command::new("skopeo");
    inspect
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:cache", cache.display()));
    let manifest: serde_json::Value = serde_json::from_slice(&ok(inspect).stdout).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cairn.cache.config.v1+json"
    );

    let fresh = loaded_busybox();
    let from = format!("type=local,src={}", cache.display());
    let second = build(&fresh, dir.path(), &["--cache-from", &from]);
    assert_eq!(hits(&second), [true; 5], "{}", second.stderr);
    assert_eq!(second.image, first.image);

    // Two stages: the builder's steps travel only with mode=max.
    let multi = tempfile::tempdir().unwrap();
    fs::write(
        multi.path().join("Dockerfile"),
        "FROM busybox AS builder\n\
         RUN echo made > /made && echo builder-$((2*3))\n\
         FROM busybox\n\
         COPY --from=builder /made /made\n\
         RUN cat /made && echo final-$((3*3))\n",
    )
    .unwrap();
    for (mode, builder_runs) in [("max", false), ("min", true)] {
        let s = loaded_busybox();
        let cache = out.path().join(format!("cache-{mode}"));
        let to = format!("type=local,dest={},mode={mode}", cache.display());
        build(&s, multi.path(), &["--cache-to", &to]);
        let fresh = loaded_busybox();
        let from = format!("type=local,src={}", cache.display());
        let again = build(&fresh, multi.path(), &["--cache-from", &from]);
        assert_eq!(
            again.stderr.contains("builder-6"),
            builder_runs,
            "{mode}: {}",
            again.stderr
        );
        assert!(
            again.cached("COPY --from=builder"),
            "{mode}: {}",
            again.stderr
        );
        assert!(
            !again.stderr.contains("final-9"),
            "{mode}: {}",
            again.stderr
        );
    }
}

/// Saves `name` as an OCI archive at `archive` and reads its config as skopeo sees it, raw
/// (fields other tools do not know included).
fn saved_config(s: &Store, name: &str, archive: &Path) -> serde_json::Value {
    let mut save = s.cmd(&["save", name, "--format", "oci-archive", "-o"]);
    save.arg(archive);
    ok(save);
    let mut config = Command::new("skopeo");
    config
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()));
    serde_json::from_slice(&ok(config).stdout).unwrap()
}

#[test]
fn an_inline_cache_travels_with_the_image() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    make_context(dir.path());
    let out = tempfile::tempdir().unwrap();
    let inline = ["--cache-to", "type=inline", "-t", "app:inline"];
    let first = build(&s, dir.path(), &inline);
    let archive = out.path().join("app.tar");
    let config = saved_config(&s, "app:inline", &archive);
    let records = config["cairn.cache.v1"]["records"].as_array().unwrap();
    assert!(records.len() >= STEPS.len(), "the stage's steps: {config}");

    // From the archive, into a fresh store: every step hits and the image is the same.
    let fresh = loaded_busybox();
    let mut with = inline.to_vec();
    let archive_arg = archive.display().to_string();
    with.extend(["--cache-from", &archive_arg]);
    let second = build(&fresh, dir.path(), &with);
    assert_eq!(hits(&second), [true; 5], "{}", second.stderr);
    assert_eq!(second.image, first.image);

    // By name, an image loaded into the store; a changed file misses from its step on.
    let other = loaded_busybox();
    let mut load = other.cmd(&["load", "-i"]);
    load.arg(&archive);
    ok(load);
    fs::write(dir.path().join("late.txt"), "later\n").unwrap();
    let third = build(&other, dir.path(), &["--cache-from", "app:inline"]);
    assert_eq!(
        hits(&third),
        [true, true, true, false, false],
        "{}",
        third.stderr
    );

    // No such image yet (a CI pipeline's first run): a warning, and the build goes on.
    let empty = loaded_busybox();
    let fourth = build(&empty, dir.path(), &["--cache-from", "nothing-here:1"]);
    assert_eq!(hits(&fourth), [false; 5], "{}", fourth.stderr);
    assert!(
        fourth
            .stderr
            .contains("--cache-from nothing-here:1: no such image"),
        "{}",
        fourth.stderr
    );

    // Without type=inline the image carries no records, even built on a base that had them.
    let plain = build(&s, dir.path(), &["-t", "app:plain"]);
    assert_ne!(plain.image, first.image);
    let config = saved_config(&s, "app:plain", &out.path().join("plain.tar"));
    assert!(config.get("cairn.cache.v1").is_none(), "{config}");
}

/// For every instruction: changing it re-runs exactly the later steps that use what it set,
/// gives another image, and changing it back gives the first image again.
#[test]
fn every_instruction_misses_only_what_it_affects() {
    // (instruction as first built, as changed, the later COPY hits, the later RUN hits)
    let table: &[(&str, &str, bool, bool)] = &[
        ("ENV A=1", "ENV A=2", true, false),
        // A RUN has the stage's build args in its environment, as in BuildKit: whether its
        // command names one or a script it runs reads it, a new value reruns it.
        ("ARG A=1", "ARG A=2", true, false),
        ("ARG B=1", "ARG B=2", true, false),
        ("LABEL l=1", "LABEL l=2", true, true),
        ("CMD [\"a\"]", "CMD [\"b\"]", true, true),
        ("ENTRYPOINT [\"a\"]", "ENTRYPOINT [\"b\"]", true, true),
        ("USER root", "USER daemon", true, false),
        ("EXPOSE 80", "EXPOSE 81", true, true),
        ("VOLUME /v1", "VOLUME /v2", true, true),
        ("STOPSIGNAL SIGTERM", "STOPSIGNAL SIGINT", true, true),
        ("HEALTHCHECK CMD true", "HEALTHCHECK CMD false", true, true),
        (
            "SHELL [\"/bin/sh\", \"-c\"]",
            "SHELL [\"/bin/sh\", \"-ec\"]",
            true,
            false,
        ),
        ("MAINTAINER a", "MAINTAINER b", true, true),
        ("ONBUILD RUN true", "ONBUILD RUN false", true, true),
        ("WORKDIR /w1", "WORKDIR /w2", false, false),
        ("RUN echo one", "RUN echo two", false, false),
        ("COPY g1.txt /g", "COPY g2.txt /g", false, false),
        ("ADD g1.txt /g", "ADD g2.txt /g", false, false),
    ];
    let s = loaded_busybox();
    for (row, (first, changed, copy_hits, run_hits)) in table.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        // Rows share the store: their own file and command keep their steps apart.
        fs::write(dir.path().join("f.txt"), format!("row {row}\n")).unwrap();
        fs::write(dir.path().join("g1.txt"), "g1\n").unwrap();
        fs::write(dir.path().join("g2.txt"), "g2\n").unwrap();
        let write = |x: &str| {
            let df =
                format!("FROM busybox\n{x}\nCOPY f.txt /f.txt\nRUN echo step-$((6*7)) $A {row}\n");
            fs::write(dir.path().join("Dockerfile"), df).unwrap();
        };
        let steps = |p: &Progress| (p.cached("COPY f.txt"), p.cached("RUN echo step"));
        write(first);
        let built = build(&s, dir.path(), &[]);
        let again = build(&s, dir.path(), &[]);
        assert_eq!(
            steps(&again),
            (true, true),
            "{first} again: {}",
            again.stderr
        );
        assert_eq!(again.image, built.image, "{first} again");
        write(changed);
        let other = build(&s, dir.path(), &[]);
        assert_eq!(
            steps(&other),
            (*copy_hits, *run_hits),
            "{first} -> {changed}: {}",
            other.stderr
        );
        assert_ne!(other.image, built.image, "{first} -> {changed}");
        write(first);
        let back = build(&s, dir.path(), &[]);
        assert_eq!(
            steps(&back),
            (true, true),
            "back to {first}: {}",
            back.stderr
        );
        assert_eq!(back.image, built.image, "back to {first}");
    }
}

/// Incompressible bytes, reproducibly.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `cairn prune` keeps the build cache unless told: `--filter until=` evicts what has not
/// been used for that long, `--keep-storage` the least recently used first, `--all`
/// everything. What a tag reaches always stays.
#[test]
fn prune_keeps_the_cache_unless_told() {
    let s = loaded_busybox();
    let contexts: Vec<tempfile::TempDir> = (0..2u64)
        .map(|i| {
            let dir = tempfile::tempdir().unwrap();
            fs::write(
                dir.path().join("Dockerfile"),
                format!("FROM busybox\nCOPY blob /blob{i}\nRUN wc -c /blob{i} > /size && echo ran-{i}x\n"),
            )
            .unwrap();
            fs::write(dir.path().join("blob"), noise(100_000, i)).unwrap();
            dir
        })
        .collect();
    let (a, b) = (contexts[0].path(), contexts[1].path());
    let hit_all = |p: &Progress| p.cached("COPY blob") && p.cached("RUN wc");
    let miss_all = |p: &Progress| !p.cached("COPY blob") && !p.cached("RUN wc");

    build(&s, a, &[]);
    s.run(&["prune"]);
    assert!(hit_all(&build(&s, a, &[])), "plain prune keeps the cache");
    s.run(&["prune", "--filter", "until=1h"]);
    assert!(hit_all(&build(&s, a, &[])));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = s.run(&["prune", "--filter", "until=1s"]);
    assert!(out.contains("2 cache records"), "{out}");
    assert!(
        miss_all(&build(&s, a, &[])),
        "unused for over a second: gone"
    );

    // a, then b, then a again: b is the least recently used.
    std::thread::sleep(std::time::Duration::from_millis(20));
    build(&s, b, &[]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(hit_all(&build(&s, a, &[])));
    // Room for one COPY layer (each about 100 kB, incompressible): b's goes, being the
    // least recently used, and its bytes with it. (b's RUN record is small and stays: it is
    // keyed by the COPY's inputs, not its layer, so it still applies when the COPY reruns.)
    let out = s.run(&["prune", "--keep-storage", "150k"]);
    assert!(!out.contains("reclaimed 0B"), "{out}");
    assert!(hit_all(&build(&s, a, &[])), "the recently used one stays");
    let again = build(&s, b, &[]);
    assert!(!again.cached("COPY blob"), "{}", again.stderr);

    s.run(&["prune", "--all"]);
    assert!(miss_all(&build(&s, a, &[])));
    // The base image, named by a tag, is still there to build from.
    assert!(s.run(&["images"]).contains("busybox"));
}

/// A user of its own for [`another_user_hits_a_cache_exported_by_root`], made here if missing
/// (only root can). Without subordinate ranges it builds with a single id, which a build whose
/// every step hits never needs.
fn other_user() -> &'static str {
    const USER: &str = "cairn-peer";
    cairn_e2e::ensure_user(USER);
    USER
}

/// Another user, building its own checkout of the same files (its owner, other mtimes, umask
/// 002) in its own rootless store from a cache that root's build exported, hits every step and
/// makes the same image. Switching users needs root, so the unprivileged pass skips this one.
#[test]
fn another_user_hits_a_cache_exported_by_root() {
    if !is_root() {
        return;
    }
    let user = other_user();
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    make_context(ctx.path());
    // Everything the user reads or writes lives under a directory it can reach.
    let shared = tempfile::tempdir().unwrap();
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let cache = shared.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let first = build(&s, ctx.path(), &["--cache-to", &to]);
    let base = shared.path().join("busybox.tar");
    s.run(&[
        "save",
        "busybox",
        "-o",
        base.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    let copy = shared.path().join("checkout");
    make_context(&copy);
    for f in ["src/a.txt", "src/sub/b.txt", "extra.txt", "late.txt"] {
        let p = copy.join(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o664)).unwrap();
        let mut touch = Command::new("touch");
        touch.args(["-d", "2002-03-04 05:06:07"]).arg(&p);
        ok(touch);
    }
    let home = shared.path().join("home");
    fs::create_dir(&home).unwrap();
    for (args, path) in [(&["-R", "a+rX"][..], &cache), (&["a+r"][..], &base)] {
        let mut chmod = Command::new("chmod");
        chmod.args(args).arg(path);
        ok(chmod);
    }
    for path in [&copy, &home] {
        let mut chown = Command::new("chown");
        chown.arg("-R").arg(user).arg(path);
        ok(chown);
    }
    let as_user = |args: &[&str]| {
        let mut c = cairn_e2e::cairn_as(user, &home, &home.join("store"));
        c.args(args);
        c
    };
    ok(as_user(&[
        "load",
        "-i",
        base.to_str().unwrap(),
        "-t",
        "busybox",
    ]));
    let from = format!("type=local,src={}", cache.display());
    let out = ok(as_user(&[
        "build",
        "--progress",
        "plain",
        "--cache-from",
        &from,
        copy.to_str().unwrap(),
    ]));
    let stderr = texts(&out).1;
    let second = Progress {
        image: stderr
            .lines()
            .find_map(|l| l.strip_prefix("writing image "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no image line in\n{stderr}"))
            .to_owned(),
        stderr,
    };
    assert_eq!(hits(&second), [true; 5], "{}", second.stderr);
    assert_eq!(second.image, first.image, "{}", second.stderr);
}

/// A COPY that misses after a large file grew at its end writes its layer partly by copying
/// deflated chunks of the layer the step wrote before: the blob must be the one a store that
/// never saw the earlier version makes from the same files.
#[test]
fn a_layer_written_from_the_previous_one_is_the_same_blob() {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY big.txt /big.txt\n",
    )
    .unwrap();
    // Text that deflates (so its chunks are worth recording), several 1 MiB chunks of it.
    let mut text = String::new();
    let mut n: u64 = 7;
    while text.len() < 6 << 20 {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(["alpha ", "bravo ", "charlie\n", "delta ", "echo "][(n >> 60) as usize % 5]);
    }
    let big = ctx.path().join("big.txt");
    fs::write(&big, &text).unwrap();
    // Compressed as they are written: by default layers stay plain until they leave the store.
    let args = ["-t", "big:1", "--compression-format", "gzip"];
    let s = loaded_busybox();
    build(&s, ctx.path(), &args);
    fs::OpenOptions::new()
        .append(true)
        .open(&big)
        .unwrap()
        .write_all(b"one more line\n")
        .unwrap();
    build(&s, ctx.path(), &args);
    let fresh = loaded_busybox();
    build(&fresh, ctx.path(), &args);
    let blobs = |s: &Store| -> Vec<String> {
        let index = s.index();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("big:1"))
            })
            .unwrap()
            .clone();
        let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(s.root.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(blobs(&s), blobs(&fresh));
    // The store kept where the chunks of the layer lie, for the next writer.
    let last = blobs(&s).pop().unwrap();
    assert!(
        s.root
            .join("chunks")
            .join(last.trim_start_matches("sha256:"))
            .is_file()
    );
}
