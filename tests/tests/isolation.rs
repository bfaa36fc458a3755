//! The isolation ladder through the real binary: every rung makes the same layers, `auto` says
//! what it chose and why, a blocked user namespace falls back to the next rung (and with no
//! rung left RUN fails naming what was tried while COPY still builds), and a chrooted step
//! reaches neither cairn, its store nor the host's devices.
//!
//! A blocked user namespace is made for real: `unshare -U -r` with
//! `user.max_user_namespaces` set to 0 inside, which is the kernel's own refusal (ENOSPC)
//! that a container's seccomp profile or a distribution's sysctl gives cairn; `setpriv` then
//! drops the capabilities a default container's non-root user lacks.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use cairn_e2e::{Store, busybox_layout, cairn_bin, context_with, is_root, loaded_busybox, texts};

/// `cairn build` with SOURCE_DATE_EPOCH, so layers made at different times compare equal.
fn build(s: &Store, ctx: &Path, args: &[&str]) -> Output {
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.env("SOURCE_DATE_EPOCH", "0").args(args).arg(ctx);
    c.output().unwrap()
}

fn build_ok(s: &Store, ctx: &Path, args: &[&str]) -> String {
    let out = build(s, ctx, args);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{args:?}: {stderr}");
    stderr
}

/// The step's output lines that start with `marker=`, without it.
fn marked(stderr: &str, marker: &str) -> Vec<String> {
    let m = format!("{marker}=");
    stderr
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(step, _)| step.starts_with('#'))
        .filter_map(|(_, rest)| rest.strip_prefix(&m).map(str::to_owned))
        .collect()
}

fn diff_ids(s: &Store, name: &str) -> Vec<serde_json::Value> {
    s.inspect(name)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .clone()
}

/// Everything a step can be given by mounts elsewhere: /etc files, a heredoc script, a cache,
/// a bind of the context, a tmpfs; and owners other than root in its layer.
const EVERYTHING: &str = "FROM busybox
COPY f.txt /f.txt
RUN --mount=type=cache,target=/cache echo hi > /made && chown 1:2 /made && mkdir -p /d/e \\
    && echo x >> /cache/count && wc -l < /cache/count > /d/e/count
RUN <<EOF
grep -q buildkitsandbox /etc/hosts && echo hosts=ok
test -c /dev/null && echo x > /dev/null && echo devnull=ok
EOF
RUN --mount=type=bind,target=/ctx --mount=type=tmpfs,target=/tmp cp /ctx/f.txt /copied \\
    && touch /tmp/gone
";

/// Item 1: the three rungs build the same image (root); a user gets userns and is told why
/// the others are not there.
#[test]
fn every_rung_makes_the_same_layers() {
    let ctx = context_with(EVERYTHING, &[("f.txt", "context file\n")]);
    let modes: &[&str] = if is_root() {
        &["userns", "rootful", "chroot"]
    } else {
        &["userns"]
    };
    // What `cairn info` offers is what builds get.
    let s = loaded_busybox();
    let out = s.cmd(&["info", "--format", "json"]).output().unwrap();
    let i: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(i["isolation"]["auto"], "userns", "{i}");
    for m in i["isolation"]["modes"].as_array().unwrap() {
        let offered = modes.contains(&m["mode"].as_str().unwrap());
        assert_eq!(m["available"], offered, "{i}");
    }
    // Stamped from git (the suite runs in a checkout).
    assert_ne!(i["commit"], "unknown", "{i}");
    let mut layers = Vec::new();
    for mode in modes {
        let s = loaded_busybox();
        let stderr = build_ok(&s, ctx.path(), &["--isolation", mode, "-t", "out"]);
        assert!(
            stderr.contains(&format!("isolation: {mode}")),
            "{mode}: {stderr}"
        );
        assert_eq!(marked(&stderr, "hosts"), ["ok"], "{mode}: {stderr}");
        assert_eq!(marked(&stderr, "devnull"), ["ok"], "{mode}: {stderr}");
        layers.push((mode, diff_ids(&s, "out")));
    }
    for (mode, l) in &layers[1..] {
        assert_eq!(l, &layers[0].1, "{mode} vs {}", layers[0].0);
    }
    if !is_root() {
        let s = loaded_busybox();
        for (mode, why) in [
            (
                "rootful",
                "isolation rootful is not available here: not root",
            ),
            (
                "chroot",
                "isolation chroot is not available here: no CAP_SYS_CHROOT",
            ),
        ] {
            let out = build(&s, ctx.path(), &["--isolation", mode]);
            let (_, stderr) = texts(&out);
            assert!(!out.status.success(), "{mode}: {stderr}");
            assert!(stderr.contains(why), "{mode}: {stderr}");
        }
    }
}

/// `cairn ARGS` inside a user namespace of its own in which no further one may be made
/// (ENOSPC, as the issue's users saw), with `drop_caps` also without any capability (a
/// default container's non-root user).
fn blocked(store: &Path, drop_caps: bool, args: &[&str]) -> Output {
    let mut inner = String::from("echo 0 > /proc/sys/user/max_user_namespaces && exec ");
    if drop_caps {
        inner.push_str("setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all ");
    }
    inner.push_str("\"$@\"");
    let mut c = Command::new("unshare");
    c.args(["-U", "-r", "sh", "-c", &inner, "sh"])
        .arg(cairn_bin())
        .arg("--root")
        .arg(store)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "0");
    c.output().unwrap()
}

/// Items 1, 2 and 5: with user namespaces blocked auto falls back and says why (and `cairn
/// info` too); with no rung left, COPY still builds and RUN fails naming each call tried and
/// what to grant.
#[test]
fn a_blocked_user_namespace_falls_back_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let bb = busybox_layout().to_str().unwrap();
    let out = blocked(&store, false, &["load", "-i", bb, "-t", "busybox"]);
    assert!(out.status.success(), "{}", texts(&out).1);

    let run = context_with("FROM busybox\nRUN echo ran=yes\n", &[]);
    let ctx = run.path().to_str().unwrap();
    let out = blocked(&store, false, &["build", "--progress", "plain", ctx]);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(marked(&stderr, "ran"), ["yes"], "{stderr}");
    assert!(
        stderr.contains("isolation: rootful (userns: unshare(CLONE_NEWUSER) = ENOSPC"),
        "{stderr}"
    );

    // No capabilities: no rung at all.
    let args = ["build", "--progress", "plain", "--no-cache", ctx];
    let out = blocked(&store, true, &args);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    for said in [
        "RUN cannot be isolated here",
        "userns: unshare(CLONE_NEWUSER) = ENOSPC",
        "rootful: no CAP_SYS_ADMIN",
        "chroot: no CAP_SYS_CHROOT",
        "seccomp=unconfined",
        "SYS_CHROOT",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    assert!(!stderr.contains("os error 28"), "{stderr}");
    assert!(!stderr.contains("overlay"), "{stderr}");

    // `cairn info` says the same, as JSON.
    let info = |drop_caps: bool| -> serde_json::Value {
        let out = blocked(&store, drop_caps, &["info", "--format", "json"]);
        assert!(out.status.success(), "{}", texts(&out).1);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let i = info(false);
    assert_eq!(i["isolation"]["auto"], "rootful", "{i}");
    let userns = &i["isolation"]["modes"][0];
    assert_eq!(userns["mode"], "userns");
    assert_eq!(userns["available"], false);
    assert!(userns["reason"].as_str().unwrap().contains("ENOSPC"), "{i}");
    let i = info(true);
    assert_eq!(i["isolation"]["auto"], serde_json::Value::Null, "{i}");
    let reasons: Vec<&str> = i["isolation"]["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[1].starts_with("no CAP_SYS_ADMIN"), "{reasons:?}");
    assert!(reasons[2].starts_with("no CAP_SYS_CHROOT"), "{reasons:?}");

    let copy = context_with("FROM busybox\nCOPY f.txt /f.txt\n", &[("f.txt", "x")]);
    let ctx = copy.path().to_str().unwrap();
    let out = blocked(&store, true, &["build", "-t", "copied", ctx]);
    assert!(out.status.success(), "{}", texts(&out).1);
}

/// `cairn --root STORE ARGS` as root directly, as a user inside a user namespace of its own:
/// there it holds CAP_SYS_CHROOT, but can make no device node, so the rung is refused.
fn where_chroot_works(store: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        Command::new(cairn_bin())
    } else {
        let mut c = Command::new("unshare");
        c.args(["-U", "-r"]).arg(cairn_bin());
        c
    };
    cmd.arg("--root").arg(store).args(args);
    cmd.output().unwrap()
}

fn chroot_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let bb = busybox_layout().to_str().unwrap();
    let out = where_chroot_works(&store, &["load", "-i", bb, "-t", "busybox"]);
    assert!(out.status.success(), "{}", texts(&out).1);
    (dir, store)
}

/// Item 1's promise for the chroot rung: the step cannot leave its root (no CAP_SYS_CHROOT),
/// make a device node, see cairn's store or binary or anyone's /proc, or leave a process
/// behind; what was staged for it is not in its layer.
#[test]
fn a_chrooted_step_reaches_neither_cairn_nor_the_host() {
    let (_dir, store) = chroot_store();
    let script = format!(
        "try() {{ if ( eval \"$2\" ) >/dev/null 2>&1; then echo \"breach=$1\"; else echo \"held=$1\"; fi; }}
try chroot 'mkdir -p /j && chroot /j /bin/sh -c true'
try mknod 'mknod /n c 1 3'
try store 'test -e {store}'
try binary 'test -e {cairn}'
try proc 'test -e /proc/1/environ'
sleep 3171 &
grep -q s3cret /run/secrets/tok && echo secret=seen
echo done=yes",
        store = store.display(),
        cairn = cairn_bin().display(),
    );
    let ctx = context_with(
        &format!("FROM busybox\nRUN --mount=type=secret,id=tok <<EOF\n{script}\nEOF\n"),
        &[],
    );
    let out_dir = tempfile::tempdir().unwrap();
    let secret = out_dir.path().join("tok.secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let layout = out_dir.path().join("oci");
    let out = where_chroot_works(
        &store,
        &[
            "build",
            "--isolation",
            "chroot",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "--progress",
            "plain",
            "--compression-format",
            "uncompressed",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    let (_, stderr) = texts(&out);
    if !is_root() {
        assert!(!out.status.success(), "{stderr}");
        let why = "isolation chroot is not available here: mknod(/dev/null) = EPERM";
        assert!(stderr.contains(why), "{stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert_eq!(marked(&stderr, "breach"), Vec::<String>::new(), "{stderr}");
    assert_eq!(marked(&stderr, "held").len(), 5, "{stderr}");
    assert_eq!(marked(&stderr, "done"), ["yes"], "{stderr}");
    assert_eq!(marked(&stderr, "secret"), ["seen"], "{stderr}");
    assert!(
        stderr.contains("a step has no /proc of its own, no pid namespace"),
        "{stderr}"
    );
    // The background sleep went with the step.
    let ps = Command::new("pgrep")
        .args(["-f", "^sleep 3171$"])
        .output()
        .unwrap();
    assert!(!ps.status.success(), "{}", texts(&ps).0);
    // The layer holds the step's own files only: not the heredoc, the /etc files, the device
    // nodes or the mount points staged for it.
    let img = cairn_e2e::layout::read(&layout);
    let names: Vec<&String> = img.layers.last().unwrap().keys().collect();
    assert_eq!(names, ["j"], "{names:?}");
}

/// A step that asks for no network cannot have it under chroot, which has no network
/// namespace: the build says so rather than running it with cairn's network.
#[test]
fn no_network_under_chroot_is_refused_by_name() {
    let (_dir, store) = chroot_store();
    let ctx = context_with("FROM busybox\nRUN --network=none true\n", &[]);
    let c = ctx.path().to_str().unwrap();
    let out = where_chroot_works(&store, &["build", "--isolation", "chroot", c]);
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    let said: &[&str] = if is_root() {
        &["Dockerfile:2", "--network=none needs a network namespace"]
    } else {
        &["mknod(/dev/null) = EPERM"]
    };
    for said in said {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
}

/// Under chroot a cache directory is moved into the step's root: two stages running at once
/// with one cache take turns (shared acts as locked), so each finds the cache, both writes
/// stay in it, and neither step's layer holds the cache's files.
#[test]
fn a_cache_shared_by_parallel_stages_under_chroot_keeps_both_writes() {
    let (_dir, store) = chroot_store();
    let dockerfile = "FROM busybox AS a
RUN --mount=type=cache,target=/c,id=shared echo a > /c/a && sleep 1 && echo a > /done-a
FROM busybox AS b
RUN --mount=type=cache,target=/c,id=shared echo b > /c/b && sleep 1 && echo b > /done-b
FROM busybox
COPY --from=a /done-a /
COPY --from=b /done-b /
RUN --mount=type=cache,target=/c,id=shared ls /c | tr '\\n' ' ' | sed 's/^/cache=/'; echo
";
    let ctx = context_with(dockerfile, &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("oci");
    let out = where_chroot_works(
        &store,
        &[
            "build",
            "--isolation",
            "chroot",
            "--progress",
            "plain",
            "--compression-format",
            "uncompressed",
            "--target",
            "a",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
            ctx.path().to_str().unwrap(),
        ],
    );
    let (_, stderr) = texts(&out);
    if !is_root() {
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("mknod(/dev/null) = EPERM"), "{stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let img = cairn_e2e::layout::read(&layout);
    let names: Vec<&String> = img.layers.last().unwrap().keys().collect();
    assert_eq!(names, ["done-a"], "the cache stays out of the layer");
    let out = where_chroot_works(
        &store,
        &[
            "build",
            "--isolation",
            "chroot",
            "--progress",
            "plain",
            "--no-cache",
            ctx.path().to_str().unwrap(),
        ],
    );
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(marked(&stderr, "cache"), ["a b "], "{stderr}");
}
