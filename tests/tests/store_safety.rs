//! The store as a security boundary, and what killed or starved builds leave in it: other
//! users cannot reach the store's setuid files, a build SIGKILLed at any moment leaves no temp
//! files or cgroups once the next build has started, and a layer that does not fit on the disk
//! fails the build cleanly (no partial blob, no record, the space given back).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::{
    busybox_layout, cairn, context, ensure_user, is_root, loaded_busybox, ok, texts, tool,
};

/// Another local user, for what it must not reach (made here: only root can).
const OTHER: &str = "cairn-other";

/// How long a build may take to reach a moment of the kill test: a guard against hangs.
const HANG_GUARD: Duration = Duration::from_secs(600);

/// `cairn --root ROOT build --progress plain ARGS CONTEXT`, not yet run.
fn build_cmd(root: &Path, ctx: &Path, args: &[&str]) -> Command {
    let mut c = cairn();
    c.arg("--root")
        .arg(root)
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(ctx);
    c
}

/// `cairn --root ROOT ARGS`.
fn cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = cairn();
    c.arg("--root").arg(root).args(args);
    c
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every path under `dir` (not following symlinks) with its metadata; unreadable parts are
/// skipped.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let is_dir = meta.is_dir();
        out.push((e.path(), meta));
        if is_dir {
            walk(&e.path(), out);
        }
    }
}

/// `cairn fsck` passes, with no problem and no unfinished write.
fn assert_fsck_clean(root: &Path) {
    let out = ok(cmd(root, &["fsck"]));
    let (stdout, _) = texts(&out);
    assert!(stdout.starts_with("checked "), "{stdout}");
    assert!(!stdout.contains("problem"), "{stdout}");
    assert!(!stdout.contains("unfinished"), "{stdout}");
}

/// Images are unpacked with a setuid-root copy of busybox in a layer: a user other than the
/// store's owner cannot reach it (as root; the store sits in a directory everyone may enter),
/// and every directory of cairn's own on the way to it lets nobody else in (both ways).
#[test]
fn other_users_cannot_reach_setuid_files_in_the_store() {
    let s = loaded_busybox();
    let parent = s.root.parent().unwrap();
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
    // The second step runs over the first one's layer, which the store then keeps unpacked.
    let ctx = context(
        "FROM busybox\nRUN cp /bin/busybox /bin/suidbox && chmod 4755 /bin/suidbox\nRUN true\n",
    );
    ok(build_cmd(&s.root, ctx.path(), &["-t", "suid"]));

    let mut all = Vec::new();
    walk(&s.root, &mut all);
    let setuid: Vec<&PathBuf> = all
        .iter()
        .filter(|(p, m)| m.is_file() && m.mode() & 0o4000 != 0 && p.ends_with("bin/suidbox"))
        .map(|(p, _)| p)
        .collect();
    assert!(
        !setuid.is_empty(),
        "the store keeps no unpacked copy of the setuid file: {all:#?}"
    );
    for file in &setuid {
        // The store's own directories, from its root down to where image content starts.
        let rel = file.strip_prefix(&s.root).unwrap();
        let mut dir = s.root.clone();
        let mut own = vec![dir.clone()];
        for part in rel.components() {
            if part.as_os_str() == "rootfs" {
                break;
            }
            dir.push(part);
            own.push(dir.clone());
        }
        for d in &own {
            let mode = fs::metadata(d).unwrap().mode() & 0o7777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
        }
    }
    if !is_root() {
        return;
    }
    ensure_user(OTHER);
    for file in setuid {
        let mut stat = tool("runuser");
        stat.args(["-u", OTHER, "--", "stat", "-c", "%a %U"])
            .arg(file);
        let out = stat.output().unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(
            !out.status.success() && stderr.contains("Permission denied"),
            "{OTHER} reaches {}: {stdout}{stderr}",
            file.display()
        );
        let mut exec = tool("runuser");
        exec.args(["-u", OTHER, "--"]).arg(file).arg("true");
        let out = exec.output().unwrap();
        assert!(
            !out.status.success(),
            "{OTHER} runs {}: {:?}",
            file.display(),
            texts(&out)
        );
    }
}

/// The total size of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.iter()
        .filter(|(_, m)| m.is_file())
        .map(|(_, m)| m.len())
        .sum()
}

/// The entries of `tmp` whose name starts with `prefix`.
fn tmp_entries(tmp: &Path, prefix: &str) -> Vec<PathBuf> {
    fs::read_dir(tmp)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Cgroup directories of cairn named for process `pid`, in every mounted hierarchy.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    fn find(dir: &Path, depth: u32, pid: u32, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("cairn-{pid}-"))
                || name.starts_with(&format!("cairn-probe-{pid}"))
            {
                out.push(e.path());
            } else if depth > 0 {
                find(&e.path(), depth - 1, pid, out);
            }
        }
    }
    let mut out = Vec::new();
    find(Path::new("/sys/fs/cgroup"), 5, pid, &mut out);
    out
}

/// A moment of a build: its description and whether the store's tmp/ shows it reached.
type Moment = (&'static str, fn(&Path) -> bool);

/// A build writing a 200 MB layer is SIGKILLed at five moments, from its start to the middle
/// of its blob; the next build in the store then succeeds, and afterwards nothing of the
/// killed builds is left: no tmp/ entry, no cgroup (as root, with a pids limit), and fsck is
/// clean.
#[test]
fn builds_killed_at_any_moment_leave_nothing_behind() {
    let s = loaded_busybox();
    let tmp = s.root.join("tmp");
    let ctx = context("FROM busybox\nRUN head -c 200000000 /dev/urandom > /big\n");
    let args = ["--pids-limit", "1000"];
    let moments: [Moment; 5] = [
        ("the build has its directory", |t| {
            !tmp_entries(t, "build-").is_empty()
        }),
        ("the RUN step has its directory", |t| {
            !tmp_entries(t, "run-").is_empty()
        }),
        ("the RUN step has written 50 MB", |t| {
            tmp_entries(t, "run-")
                .iter()
                .any(|d| bytes_under(d) > 50_000_000)
        }),
        ("the layer blob has 10 MB", |t| {
            tmp_entries(t, "blob-")
                .iter()
                .any(|f| fs::metadata(f).is_ok_and(|m| m.len() > 10_000_000))
        }),
        ("the layer blob has 120 MB", |t| {
            tmp_entries(t, "blob-")
                .iter()
                .any(|f| fs::metadata(f).is_ok_and(|m| m.len() > 120_000_000))
        }),
    ];
    let mut killed = Vec::new();
    let mut cgroups_seen = 0;
    for (what, reached) in moments {
        let mut c = build_cmd(&s.root, ctx.path(), &args);
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let since = Instant::now();
        while !reached(&tmp) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the build ended ({status}) before {what}");
            }
            assert!(since.elapsed() < HANG_GUARD, "{what}: never happened");
            std::thread::sleep(Duration::from_millis(2));
        }
        cgroups_seen += cgroups_of(pid).len();
        child.kill().unwrap();
        child.wait().unwrap();
        killed.push(pid);
    }
    if is_root() {
        assert!(cgroups_seen > 0, "no step ran in a cgroup: nothing tested");
    }

    let out = build_cmd(&s.root, ctx.path(), &args).output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    let left = names(&tmp);
    assert!(
        left.is_empty(),
        "left in tmp/ (killed: {killed:?}): {left:?}"
    );
    assert_fsck_clean(&s.root);
    for pid in killed {
        let cgroups = cgroups_of(pid);
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }
}

/// Two cairns share a store: a build that starts (and cleans up after dead builds) while
/// another one runs a step leaves the running build's files alone, and that build then
/// finishes and leaves nothing. (A guard for the cleanup, which must tell live from dead.)
#[test]
fn a_build_never_removes_a_live_builds_files() {
    let s = loaded_busybox();
    let tmp = s.root.join("tmp");
    let slow = context("FROM busybox\nRUN head -c 20000000 /dev/urandom > /a && sleep 3\n");
    let mut running = build_cmd(&s.root, slow.path(), &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = running.id();
    let since = Instant::now();
    while tmp_entries(&tmp, "run-").is_empty() {
        assert!(
            running.try_wait().unwrap().is_none(),
            "the slow build ended"
        );
        assert!(since.elapsed() < HANG_GUARD, "the slow step never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its directories for the whole build and for the step (other entries come and go).
    let theirs: Vec<String> = names(&tmp)
        .into_iter()
        .filter(|n| n.contains(&format!("-{pid}-")))
        .filter(|n| n.starts_with("build-") || n.starts_with("run-"))
        .collect();
    assert_eq!(theirs.len(), 2, "{:?}", names(&tmp));

    let quick = context("FROM busybox\nRUN echo quick > /q\n");
    ok(build_cmd(&s.root, quick.path(), &[]));
    let now = names(&tmp);
    for name in &theirs {
        assert!(now.contains(name), "{name} was removed: {now:?}");
    }
    let out = running.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(names(&tmp), Vec::<String>::new());
    assert_fsck_clean(&s.root);
}

/// A small filesystem of its own for a store: as root an ext4 image mounted through a loop
/// device; otherwise a size-limited tmpfs in a user and mount namespace of its own, reached
/// through `/proc/PID/root` of the process holding that namespace. Unmounted and removed on
/// drop, also when the test fails.
struct SmallFs {
    dir: tempfile::TempDir,
    /// Where the filesystem is seen from here.
    path: PathBuf,
    /// The process that holds the namespace of the unprivileged kind.
    holder: Option<Child>,
}

impl SmallFs {
    fn new(megabytes: u32) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        if is_root() {
            let image = dir.path().join("fs.img");
            let mut truncate = tool("truncate");
            truncate.arg("-s").arg(format!("{megabytes}M")).arg(&image);
            ok(truncate);
            let mut mkfs = tool("mkfs.ext4");
            mkfs.args(["-q", "-F", "-m", "0"]).arg(&image);
            ok(mkfs);
            let mut mount = tool("mount");
            mount.args(["-o", "loop"]).arg(&image).arg(&mnt);
            ok(mount);
            return SmallFs {
                dir,
                path: mnt,
                holder: None,
            };
        }
        let script = format!(
            "mount -t tmpfs -o size={megabytes}m cairn-small \"$1\" && echo ready && exec sleep 100000"
        );
        let mut holder = tool("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(&mnt)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the tmpfs could not be mounted");
        let path = PathBuf::from(format!("/proc/{}/root", holder.id()))
            .join(mnt.strip_prefix("/").unwrap());
        SmallFs {
            dir,
            path,
            holder: Some(holder),
        }
    }

    /// Bytes free for an unprivileged writer.
    fn available(&self) -> u64 {
        let mut df = tool("stat");
        df.args(["-f", "-c", "%a %S"]).arg(&self.path);
        let (out, _) = texts(&ok(df));
        let f: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
        f[0] * f[1]
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            // The namespace, and the tmpfs in it, go with their last process.
            let _ = holder.kill();
            let _ = holder.wait();
            return;
        }
        let mnt = self.dir.path().join("mnt");
        let unmounted = Command::new("umount").arg(&mnt).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }
}

/// A build context whose one step makes a layer of about `bytes` random bytes: a RUN step as
/// root; otherwise a COPY of a file that size, because the RUN sandbox's user namespace may
/// not enter the namespace holding the unprivileged [`SmallFs`] (a sibling's).
fn layer_of(bytes: u64) -> tempfile::TempDir {
    if is_root() {
        return context(&format!(
            "FROM busybox\nRUN head -c {bytes} /dev/urandom > /payload\n"
        ));
    }
    let ctx = context("FROM busybox\nCOPY payload /payload\n");
    let mut head = tool("head");
    head.args(["-c", &bytes.to_string(), "/dev/urandom"])
        .stdout(fs::File::create(ctx.path().join("payload")).unwrap());
    ok(head);
    ctx
}

/// A step whose layer does not fit on the store's filesystem (as root a RUN step, whose 45 MB
/// of output fit but not again as the blob) fails saying there is no space, leaves no partial
/// blob or temp file, records no layer or image, and gives the space back; a smaller step then
/// builds and fsck is clean.
#[test]
fn a_layer_that_does_not_fit_fails_cleanly() {
    let small = SmallFs::new(80);
    let root = small.path.join("store");
    let layout = busybox_layout();
    ok(cmd(
        &root,
        &["load", "-i", layout.to_str().unwrap(), "-t", "busybox"],
    ));
    let blobs_before = names(&root.join("blobs/sha256"));
    let index_before = fs::read(root.join("index.json")).unwrap();
    let free_before = small.available();

    let big = layer_of(if is_root() { 45_000_000 } else { 100_000_000 });
    let out = build_cmd(&root, big.path(), &["-t", "big"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "the layer fitted: {stderr}");
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("no space left on device") || lower.contains("enospc"),
        "{stderr}"
    );
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new(), "{stderr}");
    assert_eq!(names(&root.join("blobs/sha256")), blobs_before);
    assert_eq!(fs::read(root.join("index.json")).unwrap(), index_before);
    let free_after = small.available();
    // The busybox layer unpacked for the step stays; the big layer does not.
    assert!(
        free_after + 8_000_000 > free_before,
        "{free_before} bytes free before the build, {free_after} after"
    );

    // Nothing recorded the step: the same build runs it again, and fails the same way.
    let again = build_cmd(&root, big.path(), &["-t", "big"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&again);
    assert!(!again.status.success(), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("no space left on device"),
        "{stderr}"
    );
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new(), "{stderr}");

    let fits = layer_of(5_000_000);
    let out = build_cmd(&root, fits.path(), &["-t", "small"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_fsck_clean(&root);
    assert_eq!(names(&root.join("tmp")), Vec::<String>::new());
}
