//! `RUN` through the real binary: the sandbox (namespaces, users, mounts, network, signals) and
//! the layers it leaves, checked in the layer tars and in images unpacked with umoci and run by runc.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::{
    Store, context_with as context, is_root, loaded_busybox, ok, texts, tool, umoci_unpack,
};

/// Both ways a RUN step gets its filesystem; every filesystem-shaped test runs under each.
const SNAPSHOTTERS: [&str; 2] = ["overlay", "copy"];

/// `cairn build --progress plain ARGS CONTEXT`, not yet run.
fn build_cmd(s: &Store, ctx: &Path, args: &[&str]) -> Command {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    c
}

/// Builds and insists on success; returns standard error (the plain progress).
fn build(s: &Store, ctx: &Path, args: &[&str]) -> String {
    texts(&ok(build_cmd(s, ctx, args))).1
}

/// Builds into an OCI layout and returns it (kept alive by the temp dir) with the progress.
fn build_image(s: &Store, ctx: &Path, args: &[&str]) -> (tempfile::TempDir, Image, String) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let mut all = args.to_vec();
    let dest = format!("type=oci,dest={}", layout.display());
    all.extend(["-o", &dest]);
    let stderr = build(s, ctx, &all);
    (dir, Image::open(&layout), stderr)
}

/// The output lines of the step whose progress header ends with `instruction` (a prefix of
/// the instruction's text), without the `#N ` prefix and without its header and DONE lines.
fn step_output(stderr: &str, instruction: &str) -> Vec<String> {
    let header = stderr
        .lines()
        .find(|l| {
            l.starts_with('#')
                && l.split_once(' ').is_some_and(|(_, rest)| {
                    rest.starts_with('[') && rest.contains(&format!("] {instruction}"))
                })
        })
        .unwrap_or_else(|| panic!("no step {instruction:?} in the progress:\n{stderr}"));
    let prefix = format!("{} ", header.split_once(' ').unwrap().0);
    stderr
        .lines()
        .filter(|l| *l != header)
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| {
            !l.starts_with("DONE ") && !l.starts_with("CACHED") && !l.starts_with("cache miss: ")
        })
        .map(str::to_owned)
        .collect()
}

/// An image in an OCI layout: its manifest and config, and its layers as tar listings.
#[derive(Debug)]
struct Image {
    layout: PathBuf,
    manifest: serde_json::Value,
    config: serde_json::Value,
}

impl Image {
    fn open(layout: &Path) -> Image {
        let json = |p: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&fs::read(&p).unwrap()).unwrap()
        };
        let index = json(layout.join("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "{index}");
        let manifest = json(blob_path(layout, &manifests[0]["digest"]));
        let config = json(blob_path(layout, &manifest["config"]["digest"]));
        Image {
            layout: layout.to_path_buf(),
            manifest,
            config,
        }
    }

    fn layers(&self) -> Vec<PathBuf> {
        self.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| blob_path(&self.layout, &l["digest"]))
            .collect()
    }

    /// The entries of the `i`th layer; negative `i` counts from the top (-1 is the last).
    fn layer(&self, i: isize) -> Vec<Entry> {
        let layers = self.layers();
        let i = if i < 0 {
            layers.len().checked_sub(i.unsigned_abs()).unwrap()
        } else {
            i.unsigned_abs()
        };
        tar_entries(&layers[i])
    }

    fn history(&self) -> &Vec<serde_json::Value> {
        self.config["history"].as_array().unwrap()
    }
}

fn blob_path(layout: &Path, digest: &serde_json::Value) -> PathBuf {
    let d = digest.as_str().unwrap();
    layout
        .join("blobs/sha256")
        .join(d.strip_prefix("sha256:").unwrap())
}

/// One tar header as GNU tar lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `-` file, `d` directory, `h` hard link, `l` symlink, `c` character device, …
    kind: char,
    /// Permission bits with setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    /// Relative, without `./` or a trailing slash.
    path: String,
    /// The target of a hard link or symlink.
    link: Option<String>,
}

/// The headers of a gzip (or plain) layer tar, through GNU tar so the test shares no tar code
/// with cairn.
fn tar_entries(blob: &Path) -> Vec<Entry> {
    let mut t = tool("tar");
    t.env("LC_ALL", "C")
        .args(["--numeric-owner", "-tvf"])
        .arg(blob);
    let listing = texts(&ok(t)).0;
    listing.lines().map(parse_tar_line).collect()
}

/// `hrw-r--r-- 0/0   0 2024-01-01 00:00 h2 link to h1`
fn parse_tar_line(line: &str) -> Entry {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 6, "unexpected tar listing line {line:?}");
    let perms = fields[0];
    let (uid, gid) = fields[1].split_once('/').unwrap();
    let rest = fields[5..].join(" ");
    let (name, link) = match (rest.split_once(" link to "), rest.split_once(" -> ")) {
        (Some((n, l)), _) => (n.to_owned(), Some(l.to_owned())),
        (None, Some((n, l))) => (n.to_owned(), Some(l.to_owned())),
        (None, None) => (rest.clone(), None),
    };
    Entry {
        kind: perms.chars().next().unwrap(),
        mode: mode_bits(&perms[1..]),
        uid: uid.parse().unwrap(),
        gid: gid.parse().unwrap(),
        path: name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned(),
        link,
    }
}

/// `rwsr-xr-x` → 0o4755.
fn mode_bits(perms: &str) -> u32 {
    let c: Vec<char> = perms.chars().collect();
    let mut mode = 0;
    for (i, bit) in [0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1]
        .into_iter()
        .enumerate()
    {
        if !matches!(c[i], '-' | 'S' | 'T') {
            mode |= bit;
        }
    }
    if matches!(c[2], 's' | 'S') {
        mode |= 0o4000;
    }
    if matches!(c[5], 's' | 'S') {
        mode |= 0o2000;
    }
    if matches!(c[8], 't' | 'T') {
        mode |= 0o1000;
    }
    mode
}

fn paths(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.path.clone()).collect()
}

fn entry<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no {path} in the layer: {entries:#?}"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The busybox base image's layer count, as the store reports it.
fn busybox_layers(s: &Store) -> usize {
    s.inspect("busybox")["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn layers_record_whiteouts_opaque_dirs_hardlinks_owners_and_setuid() {
    let ctx = context(
        "FROM busybox\n\
         RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b\n\
         RUN rm /etc/nsswitch.conf && rm -rf /d && mkdir /d && echo c > /d/c \\\n\
         \x20 && echo h > /h1 && ln /h1 /h2 \\\n\
         \x20 && echo o > /owned && chown 1000:1000 /owned \\\n\
         \x20 && echo s > /suid && chmod 4755 /suid\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (dir, image, _) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(image.layers().len(), busybox_layers(&s) + 2, "{snap}");
        let top = image.layer(-1);
        let names = paths(&top);
        let opaque = names.contains("d/.wh..wh..opq");
        let explicit = names.contains("d/.wh.a") && names.contains("d/.wh.sub");
        assert!(
            opaque || explicit,
            "{snap}: the old children of /d are hidden: {names:?}"
        );
        if snap == "overlay" {
            assert!(
                opaque,
                "overlay marks a replaced directory opaque: {names:?}"
            );
        }
        let mut want = set(&[
            "d",
            "d/c",
            "etc",
            "etc/.wh.nsswitch.conf",
            "h1",
            "h2",
            "owned",
            "suid",
        ]);
        want.extend(names.iter().filter(|n| n.starts_with("d/.wh.")).cloned());
        assert_eq!(names, want, "{snap}: exactly what the RUN changed");

        // One of the two names is the file, the other a hard link to it.
        let (h1, h2) = (entry(&top, "h1"), entry(&top, "h2"));
        let linked = (h1.kind == '-' && h2.kind == 'h' && h2.link.as_deref() == Some("h1"))
            || (h2.kind == '-' && h1.kind == 'h' && h1.link.as_deref() == Some("h2"));
        assert!(linked, "{snap}: {h1:?} {h2:?}");
        let owned = entry(&top, "owned");
        assert_eq!((owned.uid, owned.gid), (1000, 1000), "{snap}: {owned:?}");
        assert_eq!(entry(&top, "suid").mode, 0o4755, "{snap}");
        assert_eq!(entry(&top, "etc/.wh.nsswitch.conf").kind, '-', "{snap}");

        let rootfs = umoci_unpack(&image.layout, "latest", &dir.path().join("bundle"));
        assert!(!rootfs.join("etc/nsswitch.conf").exists(), "{snap}");
        assert!(
            rootfs.join("etc/passwd").is_file(),
            "{snap}: /etc itself stays"
        );
        assert!(!rootfs.join("d/a").exists(), "{snap}");
        assert!(!rootfs.join("d/sub").exists(), "{snap}");
        assert_eq!(
            fs::read_to_string(rootfs.join("d/c")).unwrap(),
            "c\n",
            "{snap}"
        );
        let (m1, m2) = (
            fs::metadata(rootfs.join("h1")).unwrap(),
            fs::metadata(rootfs.join("h2")).unwrap(),
        );
        assert_eq!(m1.ino(), m2.ino(), "{snap}: h1 and h2 are one file");
        assert_eq!(m1.nlink(), 2, "{snap}");
        if is_root() {
            // umoci --rootless owns everything itself and may drop setuid.
            let owned = fs::metadata(rootfs.join("owned")).unwrap();
            assert_eq!((owned.uid(), owned.gid()), (1000, 1000), "{snap}");
            let suid = fs::metadata(rootfs.join("suid")).unwrap();
            assert_eq!(suid.permissions().mode() & 0o7777, 0o4755, "{snap}");
        }
    }
}

/// Later steps see earlier steps' changes (deletions, a replaced directory, owners). With
/// overlay, a step's upper directory becomes its layer's lowerdir in the store: each layer is
/// on disk once, and nothing is unpacked again from the blob just written.
#[test]
fn later_steps_see_earlier_changes_through_the_kept_layers() {
    let ctx = context(
        "FROM busybox\n\
         RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && echo x > /x\n\
         RUN rm /etc/nsswitch.conf /x && rm -rf /d && mkdir /d && echo c > /d/c \\\n\
         \x20 && echo o > /owned && chown 1000:1000 /owned\n\
         RUN ls -A /d; test -e /etc/nsswitch.conf && echo nsswitch; test -e /x && echo x; \\\n\
         \x20 stat -c %u:%g /owned; cat /d/c; test -f /etc/passwd && echo passwd\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let stderr = build(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(
            step_output(&stderr, "RUN ls -A /d"),
            ["c", "1000:1000", "c", "passwd"],
            "{snap}"
        );
        if snap == "overlay" {
            let unpacked: Vec<String> = fs::read_dir(s.root.join("layers/sha256"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect();
            assert_eq!(unpacked.len(), busybox_layers(&s) + 2, "{unpacked:?}");
        }
        assert!(tmp_entries(&s).is_empty(), "{snap}: {:?}", tmp_entries(&s));
    }
}

/// A stage that another one copies from is brought up to date only at the paths the COPY
/// --from lines name (when they are plain paths); the copies are the same either way, with
/// deletions of earlier steps honoured and a symlink on the way followed (by settling it all).
#[test]
fn copy_from_a_stage_gets_its_files_whichever_way_it_was_settled() {
    let stages = "FROM busybox AS gen\n\
               RUN mkdir -p /out/keep/sub /out/skip && echo k > /out/keep/k \\\n\
               \x20 && echo old > /out/keep/sub/old && echo s > /out/skip/s\n\
               RUN rm /out/keep/sub/old && echo new > /out/keep/new && ln -s /out/keep /link\n\
               FROM busybox\n\
               COPY --from=gen /out/keep/ /keep/\n";
    for (extra, via_link) in [("", false), ("COPY --from=gen /link/k /via-link\n", true)] {
        let ctx = context(&format!("{stages}{extra}"), &[]);
        for snap in SNAPSHOTTERS {
            let s = loaded_busybox();
            let (_dir, local, _) =
                s.build_local(&["--progress", "plain", "--snapshotter", snap], ctx.path());
            let mut names: Vec<String> = walkdir(&local.join("keep"));
            names.sort();
            assert_eq!(names, ["k", "new", "sub"], "{snap} {extra:?}");
            assert_eq!(fs::read_to_string(local.join("keep/new")).unwrap(), "new\n");
            assert!(!local.join("skip").exists() && !local.join("out").exists());
            if via_link {
                assert_eq!(fs::read_to_string(local.join("via-link")).unwrap(), "k\n");
            }
        }
    }
}

/// Paths below `dir`, relative to it.
fn walkdir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn user_switches_to_numeric_and_named_users() {
    let ctx = context(
        "FROM busybox\n\
         RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd \\\n\
         \x20 && echo 'app:x:1234:' >> /etc/group && echo 'extra:x:2345:app' >> /etc/group \\\n\
         \x20 && mkdir -m 1777 /out\n\
         USER 1000:1000\n\
         RUN echo \"ids:$(id -u):$(id -g)\"; touch /out/by-1000\n\
         USER app\n\
         RUN echo \"app:$(id -u):$(id -g):$(id -G)\"; touch /out/by-app\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (_dir, image, stderr) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(
            step_output(&stderr, "RUN echo \"ids:"),
            ["ids:1000:1000"],
            "{snap}: {stderr}"
        );
        assert_eq!(
            step_output(&stderr, "RUN echo \"app:"),
            ["app:1234:1234:1234 2345"],
            "{snap}: {stderr}"
        );
        // Appending to /etc/passwd keeps the base's owner and mode.
        let passwd = image.layer(-3);
        let p = entry(&passwd, "etc/passwd");
        assert_eq!((p.mode, p.uid, p.gid), (0o644, 0, 0), "{snap}: {p:?}");
        let by_1000 = image.layer(-2);
        assert_eq!(paths(&by_1000), set(&["out", "out/by-1000"]), "{snap}");
        let f = entry(&by_1000, "out/by-1000");
        assert_eq!((f.uid, f.gid), (1000, 1000), "{snap}");
        let by_app = image.layer(-1);
        let f = entry(&by_app, "out/by-app");
        assert_eq!((f.uid, f.gid), (1234, 1234), "{snap}");
    }
}

#[test]
fn env_args_workdir_shell_and_exec_form_reach_the_process() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\n\
         ARG BAR=bar-default\n\
         ENV FOO=foo-value\n\
         WORKDIR /work/dir\n\
         RUN echo \"vars:$FOO:$BAR\"; echo \"cwd:$(pwd)\"; echo \"flags:$-\"\n\
         RUN [\"/bin/echo\", \"exec form\"]\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec:$FOO:$BAR:$(pwd)\"]\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         RUN echo \"shell flags:$-\"\n",
        &[],
    );
    let stderr = build(&s, ctx.path(), &["--build-arg", "BAR=bar-given"]);
    let out = step_output(&stderr, "RUN echo \"vars:");
    assert_eq!(
        out[..2],
        ["vars:foo-value:bar-given", "cwd:/work/dir"],
        "{stderr}"
    );
    let flags = out[2].strip_prefix("flags:").unwrap();
    assert!(
        !flags.contains('e'),
        "the default shell is `/bin/sh -c`: {flags}"
    );
    assert_eq!(step_output(&stderr, "RUN [\"/bin/echo\""), ["exec form"]);
    assert_eq!(
        step_output(&stderr, "RUN [\"/bin/sh\""),
        ["exec:foo-value:bar-given:/work/dir"]
    );
    let out = step_output(&stderr, "RUN echo \"shell flags:");
    let flags = out[0].strip_prefix("shell flags:").unwrap();
    assert!(flags.contains('e'), "SHELL [\"/bin/sh\", \"-ec\"]: {flags}");
}

#[test]
fn failing_steps_report_the_exit_code_the_line_and_the_last_output() {
    let s = loaded_busybox();
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM busybox\nRUN echo one\nRUN echo before-fail && exit 3\nRUN echo never\n",
            &[
                "Dockerfile:3:1: RUN process \"/bin/sh -c echo before-fail && exit 3\" did not complete successfully: exit code: 3",
                "last output:",
                "| before-fail",
                "3 | RUN echo before-fail && exit 3",
            ],
        ),
        (
            "FROM busybox\nRUN [\"/bin/sh\", \"-c\", \"echo to-stderr >&2; exit 4\"]\n",
            &[
                "Dockerfile:2:1: RUN process \"/bin/sh -c echo to-stderr >&2; exit 4\" did not complete successfully: exit code: 4",
                "| to-stderr",
            ],
        ),
        (
            "FROM busybox\nRUN no-such-command\n",
            &[
                "Dockerfile:2:1: RUN process \"/bin/sh -c no-such-command\" did not complete successfully: exit code: 127",
                "no-such-command: not found",
            ],
        ),
    ];
    for (dockerfile, wants) in cases {
        let ctx = context(dockerfile, &[]);
        let out = build_cmd(&s, ctx.path(), &[]).output().unwrap();
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}\n{stderr}");
        let flat = stderr.replace(&format!("{}/", ctx.path().display()), "");
        for want in *wants {
            assert!(
                flat.contains(want),
                "{dockerfile:?}\nwant {want:?}\ngot {stderr}"
            );
        }
        assert!(stderr.contains(" | ^"), "a caret under the line: {stderr}");
        assert!(
            !stderr.contains("RUN echo never"),
            "later steps do not run: {stderr}"
        );
    }
    assert_eq!(fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
}

/// A host process for the duration of a test, killed when dropped (also on panic).
#[derive(Debug)]
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_step_is_pid_1_on_host_cairn_and_sees_no_host_process() {
    let s = loaded_busybox();
    let host_sleep = Reaped(Command::new("sleep").arg("301").spawn().unwrap());
    let ctx = context(
        "FROM busybox\n\
         RUN echo \"pid:$$\"; echo \"host:$(hostname)\"; \\\n\
         \x20 for p in /proc/[0-9]*; do echo \"proc:${p#/proc/}:$(tr '\\0' ' ' < $p/cmdline)\"; done\n",
        &[],
    );
    let stderr = build(&s, ctx.path(), &[]);
    let out = step_output(&stderr, "RUN echo \"pid:");
    assert_eq!(out[..2], ["pid:1", "host:buildkitsandbox"], "{stderr}");
    let procs: Vec<&String> = out.iter().filter(|l| l.starts_with("proc:")).collect();
    assert!(
        procs.iter().any(|l| l.starts_with("proc:1:/bin/sh -c ")),
        "the step's shell is in its /proc: {procs:?}"
    );
    assert!(procs.len() < 10, "only the step's processes: {procs:?}");
    let host_pid = format!("proc:{}:", host_sleep.0.id());
    assert!(
        procs
            .iter()
            .all(|l| !l.contains("sleep 301") && !l.starts_with(&host_pid)),
        "{procs:?}"
    );
    // The host sleep was running all along, so the check above had something to miss.
    assert!(Path::new(&format!("/proc/{}", host_sleep.0.id())).exists());
}

/// The interface names in a /proc/net/dev listing.
fn interfaces(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| !name.contains('|'))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

#[test]
fn network_none_has_only_loopback() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\n\
         RUN --network=none cat /proc/net/dev\n\
         RUN cat /proc/net/dev\n",
        &[],
    );
    let stderr = build(&s, ctx.path(), &[]);
    let none = step_output(&stderr, "RUN --network=none cat /proc/net/dev");
    assert_eq!(interfaces(&none), ["lo"], "{stderr}");
    let default = step_output(&stderr, "RUN cat /proc/net/dev");
    assert!(
        interfaces(&default).contains(&"lo".to_owned()),
        "the default network lists loopback too: {stderr}"
    );
}

/// Every regular file under `dir` with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else if t.is_file() {
            out.insert(e.path(), fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn nothing_is_written_outside_the_rootfs() {
    let host_files = ["/etc/hosts", "/etc/resolv.conf"];
    let before: Vec<Vec<u8>> = host_files.iter().map(|f| fs::read(f).unwrap()).collect();
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let marker = format!("cairn-e2e-marker-{}-{snap}", std::process::id());
        let ctx = context(
            &format!(
                "FROM busybox\n\
                 RUN echo inside > /tmp/{marker} && echo '192.0.2.1 evil' >> /etc/hosts \\\n\
                 \x20 && echo 'nameserver 192.0.2.53' >> /etc/resolv.conf && grep -c evil /etc/hosts\n\
                 RUN --mount=type=bind,rw,target=/ctx echo changed > /ctx/in.txt \\\n\
                 \x20 && echo new > /ctx/new.txt && rm /ctx/keep.txt && mkdir /ctx/newdir && cat /ctx/in.txt\n"
            ),
            &[
                ("in.txt", "original\n"),
                ("keep.txt", "keep\n"),
                ("sub/x", "x\n"),
            ],
        );
        let ctx_before = files_under(ctx.path());
        let (_dir, image, stderr) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(
            step_output(&stderr, "RUN echo inside"),
            ["1"],
            "{snap}: {stderr}"
        );
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=bind,rw"),
            ["changed"],
            "{snap}: the rw bind is writable inside: {stderr}"
        );
        assert!(
            !Path::new("/tmp").join(&marker).exists(),
            "{snap}: /tmp/{marker} reached the host"
        );
        for (f, content) in host_files.iter().zip(&before) {
            assert_eq!(
                &fs::read(f).unwrap(),
                content,
                "{snap}: the host's {f} changed"
            );
        }
        assert_eq!(
            files_under(ctx.path()),
            ctx_before,
            "{snap}: the context changed"
        );
        assert!(!ctx.path().join("newdir").exists(), "{snap}");
        // The write went to the image's /tmp; /etc/hosts and /etc/resolv.conf never do, and
        // the rw bind's writes are not the image's (its step's layer is empty).
        assert_eq!(image.layers().len(), busybox_layers(&s) + 2, "{snap}");
        assert_eq!(paths(&image.layer(-1)), set(&[]), "{snap}");
        assert_eq!(
            paths(&image.layer(-2)),
            set(&["tmp", &format!("tmp/{marker}")]),
            "{snap}"
        );
    }
}

/// 16 random bytes from the kernel, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of every regular file under `dir`, and for gzip files their decompressed bytes too.
fn contents_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for (path, bytes) in files_under(dir) {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut z = tool("gzip");
            z.arg("-dc").arg(&path);
            out.push((path.with_extension("gunzipped"), ok(z).stdout));
        }
        out.push((path, bytes));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_reach_the_step_but_no_layer_history_or_store_file() {
    let secrets = tempfile::tempdir().unwrap();
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (file_token, env_token) = (random_token(), random_token());
        let src = secrets.path().join(format!("token-{snap}"));
        fs::write(&src, &file_token).unwrap();
        let ctx = context(
            "FROM busybox\n\
             RUN --mount=type=secret,id=tok cat /run/secrets/tok && echo && echo kept-one > /kept1\n\
             RUN --mount=type=secret,id=tok,target=/etc/app/key --mount=type=secret,id=fromenv,env=TOK \\\n\
             \x20 echo \"file:$(cat /etc/app/key)\" && echo \"env:$TOK\" && echo kept-two > /kept2\n",
            &[],
        );
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("oci");
        let mut c = build_cmd(
            &s,
            ctx.path(),
            &[
                "--snapshotter",
                snap,
                "--secret",
                &format!("id=tok,src={}", src.display()),
                "--secret",
                "id=fromenv,env=CAIRN_E2E_SECRET",
                "-o",
                &format!("type=oci,dest={}", layout.display()),
            ],
        );
        c.env("CAIRN_E2E_SECRET", &env_token);
        let stderr = texts(&ok(c)).1;
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=secret,id=tok cat"),
            [file_token.as_str()],
            "{snap}: {stderr}"
        );
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=secret,id=tok,target="),
            [format!("file:{file_token}"), format!("env:{env_token}")],
            "{snap}: {stderr}"
        );
        let image = Image::open(&layout);
        assert_eq!(paths(&image.layer(-2)), set(&["kept1"]), "{snap}");
        assert_eq!(paths(&image.layer(-1)), set(&["kept2"]), "{snap}");
        let everything: Vec<_> = contents_under(&layout)
            .into_iter()
            .chain(contents_under(&s.root))
            .collect();
        // The search does see inside the compressed layers.
        assert!(
            everything
                .iter()
                .any(|(p, b)| p.extension().is_some_and(|e| e == "gunzipped")
                    && contains(b, b"kept-two")),
            "{snap}"
        );
        for token in [&file_token, &env_token] {
            let leaks: Vec<_> = everything
                .iter()
                .filter(|(_, b)| contains(b, token.as_bytes()))
                .map(|(p, _)| p)
                .collect();
            assert!(leaks.is_empty(), "{snap}: the secret is in {leaks:?}");
        }
    }

    // A required secret that was not given stops the build before the step runs.
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nRUN --mount=type=secret,id=tok,required=true echo ran-anyway\n",
        &[],
    );
    let out = build_cmd(&s, ctx.path(), &[]).output().unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:2:1:") && stderr.contains("secret tok is required"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--secret id=tok"),
        "says how to give it: {stderr}"
    );
    assert!(!stderr.contains("#2 ran-anyway"), "{stderr}");
}

#[test]
fn cache_mounts_persist_between_builds_and_stay_out_of_the_image() {
    let ctx = context(
        "FROM busybox\n\
         ARG N\n\
         RUN --mount=type=cache,target=/c echo \"run $N\" >> /c/log && echo \"count:$(wc -l < /c/log)\" \\\n\
         \x20 && echo built > /built\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let counts: Vec<Vec<String>> = ["1", "2"]
            .into_iter()
            .map(|n| {
                let stderr = build(
                    &s,
                    ctx.path(),
                    &["--snapshotter", snap, "--build-arg", &format!("N={n}")],
                );
                step_output(&stderr, "RUN --mount=type=cache")
            })
            .collect();
        assert_eq!(counts, [["count:1"], ["count:2"]], "{snap}");
        let (_dir, image, stderr) = build_image(
            &s,
            ctx.path(),
            &["--snapshotter", snap, "--build-arg", "N=3"],
        );
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=cache"),
            ["count:3"],
            "{snap}"
        );
        assert_eq!(paths(&image.layer(-1)), set(&["built"]), "{snap}");
    }
}

/// `from`/`source` seed a new cache with a stage's directory once; `private` gives steps that
/// run at the same time separate instances; `locked` lets one step at a time in. The two
/// parallel stages meet through a shared cache, so their private steps provably overlap.
#[test]
fn cache_mounts_seed_from_a_stage_and_honour_sharing() {
    let stage = |name: &str| {
        format!(
            "FROM busybox AS {name}\n\
             ARG N\n\
             RUN --mount=type=cache,id=meet,target=/meet \\\n\
             \x20   --mount=type=cache,id=p,sharing=private,target=/p \\\n\
             \x20 touch /p/{name} /meet/{name}-$N; i=0; \\\n\
             \x20 while [ $i -lt 100 ] && [ $(ls /meet | grep -c -- -$N) -lt 2 ]; do sleep 0.1; i=$((i+1)); done; \\\n\
             \x20 ls /meet | grep -c -- -$N > /met && ls /p | tr '\\n' ' ' > /private\n\
             RUN --mount=type=cache,id=l,sharing=locked,target=/l \\\n\
             \x20 echo start {name} >> /l/log && sleep 0.3 && echo end {name} >> /l/log && cp /l/log /locked\n"
        )
    };
    let dockerfile = format!(
        "FROM busybox AS seed\n\
         COPY sub/ /s/sub/\n\
         {}{}\
         FROM busybox\n\
         ARG N\n\
         RUN --mount=type=cache,target=/c,from=seed,source=/s/sub \\\n\
         \x20 echo \"run $N\" >> /c/log && echo \"$(cat /c/file) $(wc -l < /c/log)\"\n\
         COPY --from=a /met /a-met\nCOPY --from=b /met /b-met\n\
         COPY --from=a /private /a-private\nCOPY --from=b /private /b-private\n\
         COPY --from=b /locked /locked\n",
        stage("a"),
        stage("b")
    );
    // The seed comes from the context, so both builds see the same seed stage (a cache over
    // another base is another cache).
    let ctx = context(&dockerfile, &[("sub/file", "seeded\n")]);
    let s = loaded_busybox();
    for n in ["1", "2"] {
        let (_dir, local, stderr) = s.build_local(
            &["--progress", "plain", "--build-arg", &format!("N={n}")],
            ctx.path(),
        );
        let read = |f: &str| fs::read_to_string(local.join(f)).unwrap();
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=cache,target=/c,from=seed"),
            [format!("seeded {n}")],
            "the seed is copied once, then the cache is kept"
        );
        assert_eq!((read("a-met"), read("b-met")), ("2\n".into(), "2\n".into()));
        if n == "1" {
            // Both instances were new: each holds only what its own step wrote. (In build 2
            // either step may get either instance, so only overlap is checked there.)
            assert_eq!(
                (read("a-private"), read("b-private")),
                ("a ".into(), "b ".into())
            );
        }
        let log = read("locked");
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.len() >= 2 && lines.len().is_multiple_of(2), "{log}");
        for pair in lines.chunks(2) {
            let who = pair[0].strip_prefix("start ").unwrap();
            assert_eq!(
                pair.get(1).copied(),
                Some(format!("end {who}").as_str()),
                "{log}"
            );
        }
    }
}

#[test]
fn tmpfs_and_bind_mounts() {
    let ctx = context(
        "FROM busybox AS other\n\
         RUN echo from-other > /o.txt\n\
         FROM busybox\n\
         RUN echo changed > /etc/nsswitch.conf\n\
         RUN --mount=type=tmpfs,target=/t echo x > /t/x && echo \"tmpfs:$(cat /t/x)\" && echo y > /made\n\
         RUN --mount=type=bind,source=in.txt,target=/in.txt echo \"ctx:$(cat /in.txt)\"; \\\n\
         \x20 if echo y > /in.txt; then echo bind:writable; else echo bind:read-only; fi\n\
         RUN --mount=type=bind,from=other,source=/o.txt,target=/o.txt cat /o.txt\n\
         RUN --mount=type=bind,from=busybox,source=/etc,target=/base-etc cat /base-etc/nsswitch.conf\n",
        &[("in.txt", "from-context\n")],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (_dir, image, stderr) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=tmpfs"),
            ["tmpfs:x"],
            "{snap}"
        );
        let bind = step_output(&stderr, "RUN --mount=type=bind,source=in.txt");
        assert_eq!(
            bind.first().map(String::as_str),
            Some("ctx:from-context"),
            "{snap}"
        );
        assert_eq!(
            bind.last().map(String::as_str),
            Some("bind:read-only"),
            "{snap}: {bind:?}"
        );
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=bind,from=other"),
            ["from-other"],
            "{snap}"
        );
        assert_eq!(
            step_output(&stderr, "RUN --mount=type=bind,from=busybox"),
            ["hosts: files dns"],
            "{snap}: from= an image reads the image, not this stage"
        );
        assert_eq!(
            fs::read_to_string(ctx.path().join("in.txt")).unwrap(),
            "from-context\n"
        );
        // The bind-only steps add empty layers (one per RUN, as BuildKit); the tmpfs step
        // adds only /made.
        assert_eq!(image.layers().len(), busybox_layers(&s) + 5, "{snap}");
        assert_eq!(paths(&image.layer(-4)), set(&["made"]), "{snap}");
        for i in [-3, -2, -1] {
            assert_eq!(paths(&image.layer(i)), set(&[]), "{snap}: layer {i}");
        }
    }
}

#[test]
fn heredocs_run_scripts_and_write_files() {
    let ctx = context(
        "# syntax=docker/dockerfile:1\n\
         FROM busybox\n\
         ENV WHO=heredoc\n\
         RUN <<EOF\n\
         echo \"$WHO-script\" > /h1\n\
         echo line2 >> /h1\n\
         EOF\n\
         RUN <<EOF\n\
         #!/bin/awk -f\n\
         BEGIN { print \"from awk\" > \"/h2\" }\n\
         EOF\n\
         RUN cat <<A > /h3\n\
         from cat heredoc\n\
         A\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (dir, image, _) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        let rootfs = umoci_unpack(&image.layout, "latest", &dir.path().join("bundle"));
        for (file, want) in [
            ("h1", "heredoc-script\nline2\n"),
            // Run by awk through its #! line: sh would fail on BEGIN.
            ("h2", "from awk\n"),
            ("h3", "from cat heredoc\n"),
        ] {
            assert_eq!(
                fs::read_to_string(rootfs.join(file)).unwrap(),
                want,
                "{snap}: /{file}"
            );
        }
    }
}

#[test]
fn built_images_run_under_runc() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nRUN echo built > /msg\nCMD [\"cat\", \"/msg\"]\n",
        &[],
    );
    let (dir, image, _) = build_image(&s, ctx.path(), &[]);
    let bundle = dir.path().join("bundle");
    // As another user umoci --rootless writes a rootless runtime spec (user namespace with the
    // caller mapped to root, no cgroup limits), as `runc spec --rootless` would.
    umoci_unpack(&image.layout, "latest", &bundle);
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["cat", "/msg"]));
    spec["process"]["terminal"] = serde_json::Value::Bool(false);
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let mut r = tool("runc");
    r.arg("--root")
        .arg(dir.path().join("runc-state"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("cairn-e2e-{}", std::process::id()))
        .stdin(Stdio::null());
    let out = ok(r);
    assert_eq!(texts(&out).0, "built\n");
}

/// Pids of processes whose command line is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Polls `done` every 50 ms for up to `limit`; whether it became true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let mut k = tool("kill");
    k.arg(format!("-{sig}")).arg(pid.to_string());
    ok(k);
}

/// The store's mount lines in this process's mount table.
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(root))
        .map(str::to_owned)
        .collect()
}

fn tmp_entries(s: &Store) -> Vec<String> {
    fs::read_dir(s.root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Starts `cairn build` of a `RUN sleep SECONDS` step and returns once the sleep runs.
fn start_sleeping_build(s: &Store, snap: &str, seconds: &str) -> (tempfile::TempDir, Reaped) {
    let ctx = context(&format!("FROM busybox\nRUN sleep {seconds}\n"), &[]);
    let mut c = build_cmd(s, ctx.path(), &["--snapshotter", snap]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let cairn = Reaped(c.spawn().unwrap());
    assert!(
        wait_for(Duration::from_secs(30), || {
            !pids_running(&["sleep", seconds]).is_empty()
        }),
        "{snap}: the step never started"
    );
    assert!(
        !tmp_entries(s).is_empty(),
        "{snap}: the run has its directories"
    );
    (ctx, cairn)
}

fn wait_exit(cairn: &mut Reaped) -> ExitStatus {
    let mut status = None;
    let exited = wait_for(Duration::from_secs(30), || {
        status = cairn.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(exited, "cairn did not exit after the signal");
    status.unwrap()
}

#[test]
fn sigterm_stops_the_step_and_removes_its_directories() {
    for (snap, seconds) in [("overlay", "311"), ("copy", "312")] {
        let s = loaded_busybox();
        let (_ctx, mut cairn) = start_sleeping_build(&s, snap, seconds);
        signal(cairn.0.id(), "TERM");
        let status = wait_exit(&mut cairn);
        assert_eq!(status.code(), Some(143), "{snap}: {status:?}");
        assert!(
            wait_for(Duration::from_secs(5), || pids_running(&["sleep", seconds])
                .is_empty()),
            "{snap}: the step's process outlived cairn"
        );
        assert_eq!(mounts_under(&s.root), Vec::<String>::new(), "{snap}");
        assert_eq!(tmp_entries(&s), Vec::<String>::new(), "{snap}");
    }
}

#[test]
fn sigkill_leaves_no_process_or_mount_and_the_next_build_cleans_up() {
    for (snap, seconds) in [("overlay", "321"), ("copy", "322")] {
        let s = loaded_busybox();
        let (_ctx, mut cairn) = start_sleeping_build(&s, snap, seconds);
        signal(cairn.0.id(), "KILL");
        let status = wait_exit(&mut cairn);
        assert!(!status.success(), "{snap}: {status:?}");
        assert!(
            wait_for(Duration::from_secs(5), || pids_running(&["sleep", seconds])
                .is_empty()),
            "{snap}: the step's process outlived cairn"
        );
        assert_eq!(mounts_under(&s.root), Vec::<String>::new(), "{snap}");
        // The sandbox helper outlives cairn long enough to remove its own run directory.
        assert!(
            wait_for(Duration::from_secs(5), || {
                tmp_entries(&s).iter().all(|e| !e.starts_with("run-"))
            }),
            "{snap}: {:?}",
            tmp_entries(&s)
        );
        let ctx = context("FROM busybox\nRUN echo after > /after\n", &[]);
        let (_dir, image, _) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(paths(&image.layer(-1)), set(&["after"]), "{snap}");
        assert_eq!(tmp_entries(&s), Vec::<String>::new(), "{snap}");
        assert_eq!(mounts_under(&s.root), Vec::<String>::new(), "{snap}");
    }
}

#[test]
fn a_step_that_changes_nothing_adds_an_empty_layer() {
    // As today's BuildKit (its history test has `RUN ls` as a layer): one layer per RUN, the
    // empty tar when nothing changed, whichever snapshotter ran it.
    let ctx = context(
        "FROM busybox\nRUN true\nRUN cat /etc/hosts /etc/resolv.conf > /dev/null\n",
        &[],
    );
    for snap in SNAPSHOTTERS {
        let s = loaded_busybox();
        let (_dir, image, _) = build_image(&s, ctx.path(), &["--snapshotter", snap]);
        assert_eq!(image.layers().len(), busybox_layers(&s) + 2, "{snap}");
        let history = image.history();
        let runs: Vec<_> = history
            .iter()
            .filter(|h| h["created_by"].as_str().unwrap().starts_with("RUN "))
            .collect();
        assert_eq!(runs.len(), 2, "{snap}: {history:?}");
        assert!(
            runs.iter().all(|h| h["empty_layer"] != true),
            "{snap}: {runs:?}"
        );
        let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
        assert_eq!(non_empty, image.layers().len(), "{snap}");
    }
}

/// `--memory`: where cairn can write a cgroup (root, as here) a step over the limit is killed
/// and the error says so; where it cannot (the unprivileged user here, who has no delegated
/// cgroup), the build warns once that limits are not applied and the step runs unlimited.
/// Which of the two is expected is decided by who runs the test, never by what the build said.
#[test]
fn memory_limit_kills_the_step_or_is_reported_as_not_applied() {
    let s = loaded_busybox();
    let ctx = context(
        // The OOM killer may pick the shell or one of its children: either way the step fails
        // (the length check catches a killed child).
        "FROM busybox\nRUN x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo len=${#x}; test ${#x} = 100000000\n",
        &[],
    );
    let out = build_cmd(&s, ctx.path(), &["--memory", "32m"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    let unlimited = stderr.contains("WARNING: resource limits are not applied");
    if is_root() {
        assert!(!unlimited, "root could not apply the limit:\n{stderr}");
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("killed by the kernel for going over the memory limit"),
            "{stderr}"
        );
        assert!(stderr.contains("Dockerfile:2:1"), "{stderr}");
    } else {
        assert!(out.status.success(), "{stderr}");
        assert!(unlimited, "{stderr}");
        assert_eq!(
            stderr.matches("resource limits are not applied").count(),
            1,
            "{stderr}"
        );
        assert!(stderr.contains("len=100000000"), "{stderr}");
    }
    assert!(tmp_entries(&s).is_empty(), "{:?}", tmp_entries(&s));
}

/// `cairn run`: the command's status is cairn's, -e and -v (ro and rw) reach the container,
/// and --rm leaves nothing in the store's scratch space.
#[test]
fn cairn_run_passes_env_volumes_and_exit_status() {
    let s = loaded_busybox();
    let vol = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("in.txt"), "from-host\n").unwrap();
    let v_rw = format!("{}:/data", vol.path().display());
    let v_ro = format!("{}:/ro:ro", vol.path().display());
    let out = s
        .cmd(&[
            "run",
            "--rm",
            "-e",
            "GREETING=hi",
            "-v",
            &v_rw,
            "-v",
            &v_ro,
            "busybox",
            "sh",
            "-c",
            "echo $GREETING $$; cat /data/in.txt; echo out > /data/out.txt; \
             touch /ro/x 2>/dev/null && echo ro-writable; exit 7",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(stdout, "hi 1\nfrom-host\n", "{stderr}");
    assert_eq!(
        fs::read_to_string(vol.path().join("out.txt")).unwrap(),
        "out\n"
    );
    assert!(!vol.path().join("x").exists());
    assert!(tmp_entries(&s).is_empty(), "{:?}", tmp_entries(&s));
}

/// A context with only a Dockerfile, readable by every user.
fn readable_context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = context(dockerfile, &[]);
    fs::set_permissions(ctx.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let file = ctx.path().join("Dockerfile");
    fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
    ctx
}

/// A user with no subordinate ranges, made (or stripped of its ranges) here: only root can.
fn user_without_ranges() -> &'static str {
    const USER: &str = "cairn-single";
    cairn_e2e::ensure_user(USER);
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(f).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{USER}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept != text {
            fs::write(f, kept).unwrap();
        }
    }
    USER
}

/// Without /etc/subuid ranges a build gets a single id: one warning, root-owned results, and
/// an image with files of other owners fails saying how to add a range. Switching users needs
/// root, so the unprivileged pass of the suite skips this one (it has ranges anyway).
#[test]
fn a_user_without_ranges_builds_with_one_id_and_is_told_how_to_get_more() {
    if !is_root() {
        return;
    }
    let user = user_without_ranges();
    let s = loaded_busybox();
    let owned = context(
        "FROM busybox\nCOPY --chown=1000:1000 f /owned\n",
        &[("f", "x\n")],
    );
    build(&s, owned.path(), &["-t", "owned:1"]);
    // Everything the user touches lives in a directory it can reach.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (image, file) in [("busybox", "busybox.tar"), ("owned:1", "owned.tar")] {
        let dest = dir.path().join(file);
        s.run(&[
            "save",
            image,
            "-o",
            dest.to_str().unwrap(),
            "--format",
            "oci-archive",
        ]);
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    ok({
        let mut c = tool("chown");
        c.arg(user).arg(&home);
        c
    });
    let store = home.join("store");
    let as_user = |args: &[&str]| {
        let mut c = cairn_e2e::cairn_as(user, &home, &store);
        c.args(args);
        c
    };
    for (file, tag) in [("busybox.tar", "busybox"), ("owned.tar", "owned:1")] {
        let archive = dir.path().join(file);
        ok(as_user(&[
            "load",
            "-i",
            archive.to_str().unwrap(),
            "-t",
            tag,
        ]));
    }

    let ctx = readable_context("FROM busybox\nRUN echo hi > /hi && id -u > /uid\n");
    let tar = home.join("rootfs.tar");
    let dest = format!("type=tar,dest={}", tar.display());
    let out = ok(as_user(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &dest,
        ctx.path().to_str().unwrap(),
    ]));
    let stderr = texts(&out).1;
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("single id") && warnings[0].contains("usermod --add-subuids"),
        "{stderr}"
    );
    let listing = texts(&ok({
        let mut c = tool("tar");
        c.args(["-tvf"]).arg(&tar).arg("--numeric-owner");
        c
    }))
    .0;
    for name in ["hi", "uid"] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no {name} in\n{listing}"));
        assert!(line.contains(" 0/0 "), "{line}");
    }

    let needs_more = readable_context("FROM owned:1\nRUN cat /owned\n");
    let out = as_user(&[
        "build",
        "--progress",
        "plain",
        needs_more.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = texts(&out).1;
    assert!(!out.status.success(), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.contains("uid 1000 is outside the build's id mapping"))
        .unwrap_or_else(|| panic!("no id error in\n{stderr}"));
    assert!(
        error.contains("usermod --add-subuids") && error.contains(user),
        "{error}"
    );
    // The failed unpack left nothing half-made for the next build to trip on.
    ok(as_user(&[
        "build",
        "--progress",
        "plain",
        ctx.path().to_str().unwrap(),
    ]));
}

/// `cairn run -it` from a terminal: script(1) gives cairn a pseudo-terminal, as a user's shell
/// would. The container's shell runs on a terminal of its own (`tty` names it inside), reads
/// what is typed, and its exit status is cairn's.
#[test]
fn cairn_run_it_gives_an_interactive_shell_on_a_terminal() {
    let s = loaded_busybox();
    let inner = format!(
        "{} --root {} run -it --rm busybox sh",
        cairn_e2e::cairn_bin().display(),
        s.root.display()
    );
    let mut child = tool("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin
        .write_all(b"tty; [ -t 0 ] && echo stdin-is-a-terminal; echo $((6*7)); exit 3\n")
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("cairn run -it did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(lines.contains(&"42"), "{out}");
    assert!(lines.contains(&"stdin-is-a-terminal"), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("/dev/pts/")),
        "the container's own terminal: {out}"
    );
    assert!(tmp_entries(&s).is_empty(), "{:?}", tmp_entries(&s));
}

/// A build step's sync calls succeed without flushing anything (dpkg's fsync of every file it
/// unpacks is a fifth of an apt install), as systemd-nspawn's --suppress-sync makes them: the
/// kernel refuses to fsync /dev/null, and in RUN it "succeeds". `cairn run` keeps real syncs:
/// its volumes hold the user's own data.
#[test]
fn a_build_steps_syncs_flush_nothing_but_cairn_runs_do() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\n\
         RUN sync /dev/null && sync -d /dev/null && sync -f / && sync \\\n\
         \x20&& grep -E '^Seccomp:[[:space:]]+2' /proc/self/status\n",
        &[],
    );
    build(&s, ctx.path(), &["-t", "synced"]);
    let out = s
        .cmd(&["run", "--rm", "busybox", "sync", "/dev/null"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Invalid argument"), "{stderr}");
}

/// A build step's overlay root is mounted volatile: its changes matter only as the layer read
/// after the step, and without it the overlay's unmount syncs the whole store filesystem (a
/// second or more after an apt install). `cairn run`'s root is the user's and is not.
#[test]
fn a_build_steps_overlay_is_volatile_but_a_cairn_runs_is_not() {
    let s = loaded_busybox();
    let root_mount = r"^[0-9]+ [0-9]+ [^ ]+ / / .* - overlay [^ ]+ .*\bvolatile\b";
    let ctx = context(
        &format!("FROM busybox\nRUN grep -E '{root_mount}' /proc/self/mountinfo\n"),
        &[],
    );
    build(&s, ctx.path(), &["-t", "volatile"]);
    let out = s
        .cmd(&["run", "--rm", "busybox", "cat", "/proc/self/mountinfo"])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let root = stdout
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount in\n{stdout}"));
    assert!(root.contains(" - overlay "), "{root}");
    assert!(!root.contains("volatile"), "{root}");
}
