//! Attacks on the RUN sandbox from inside a step, through the real binary: host sysctls and
//! kernel files through /proc, host cgroups through /sys, the user's terminal through the
//! step's session, and the host's files through bind sources and symlinked mount targets.
//! Each test fails on a sandbox without the matching defence and passes as root and as an
//! unprivileged user.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_e2e::{Store, cairn_bin, context_with as context, loaded_busybox, texts, tool};

/// `cairn build --progress plain --no-cache ARGS CONTEXT`, run.
fn build(s: &Store, ctx: &Path, args: &[&str]) -> Output {
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.args(args).arg(ctx);
    c.output().unwrap()
}

/// Builds, insists on success, and returns the progress (standard error).
fn build_ok(s: &Store, ctx: &Path, args: &[&str]) -> String {
    let out = build(s, ctx, args);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The step's output lines that carry `marker=` (the progress prefixes them with `#N `).
fn marked(stderr: &str, marker: &str) -> Vec<String> {
    let m = format!("{marker}=");
    stderr
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(' '))
        .filter(|(step, rest)| step.starts_with('#') && rest.starts_with(&m))
        .map(|(_, rest)| rest.to_owned())
        .collect()
}

/// A host sysctl that global uid 0 may write from any user namespace, read before and after.
const SYSCTL: &str = "/proc/sys/fs/lease-break-time";

/// Puts the host's sysctl back if a sandbox without the defence let a step change it.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        if fs::read_to_string(SYSCTL).is_ok_and(|now| now != self.0) {
            let _ = fs::write(SYSCTL, &self.0);
        }
    }
}

/// Item A: /proc/sys and /proc/sysrq-trigger are read-only, the kernel's files are masked,
/// and root in the step can neither unmount nor remount the masks nor mount a procfs of its
/// own. The host's sysctl keeps its value.
#[test]
fn proc_is_masked_and_read_only_and_the_masks_stay() {
    let s = loaded_busybox();
    let before = fs::read_to_string(SYSCTL).unwrap();
    let _restore = Restore(before.clone());
    let new = if before.trim() == "44" { "43" } else { "44" };
    let script = format!(
        "try() {{ if ( eval \"$2\" ) 2>/dev/null; then echo \"breach=$1\"; else echo \"held=$1\"; fi; }}; \
         try sysctl 'echo {new} > {SYSCTL}'; \
         try sysrq ': > /proc/sysrq-trigger'; \
         try kcore 'test -s /proc/kcore'; \
         try keys '[ -n \"$(head -c 64 /proc/keys)\" ]'; \
         try timer_list '[ -n \"$(head -c 64 /proc/timer_list)\" ]'; \
         try interrupts '[ -n \"$(head -c 64 /proc/interrupts)\" ]'; \
         try umount 'umount /proc/sys'; \
         try umount-lazy 'umount -l /proc/sysrq-trigger'; \
         try remount 'mount -o remount,rw /proc/sys'; \
         try bind-remount 'mount -o remount,bind,rw /proc/sys'; \
         try mount-proc 'mkdir -p /p && mount -t proc proc /p'; \
         try sysctl-after 'echo {new} > {SYSCTL}'; \
         try ro 'grep -q \" /proc/sys proc ro,\" /proc/mounts || exit 0; exit 1'; \
         true"
    );
    for network in ["default", "none"] {
        let ctx = context(
            &format!("FROM busybox\nRUN --network={network} {script}\n"),
            &[],
        );
        let stderr = build_ok(&s, ctx.path(), &[]);
        let breaches = marked(&stderr, "breach");
        assert!(
            breaches.is_empty(),
            "--network={network}: {breaches:?}\n{stderr}"
        );
        assert_eq!(marked(&stderr, "held").len(), 13, "{stderr}");
        assert_eq!(fs::read_to_string(SYSCTL).unwrap(), before);
    }
}

/// Item B: with limits (which apply where cairn can write a cgroup: as root here), the step
/// sees only its own cgroup (`0::/`), /sys/fs/cgroup is a read-only view without the host's
/// hierarchies (no cgroup below its top: the step's own cgroup has none), and every write
/// that would move it out of its limits or change them fails.
/// The attacks write only what is there already (a pid, a limit's own value), so a sandbox
/// without the defence is not harmed by them either.
#[test]
fn the_step_cannot_leave_or_change_its_cgroup() {
    let s = loaded_busybox();
    let script = "try() { if ( eval \"$2\" ) 2>/dev/null; then echo \"breach=$1\"; else echo \"held=$1\"; fi; }; \
         cat /proc/self/cgroup | sed 's/^/cgroup=/'; \
         join() { [ -f \"$1\" ] && echo $$ > \"$1\"; }; \
         try join-root 'join /sys/fs/cgroup/cgroup.procs'; \
         try join-v1-memory 'join /sys/fs/cgroup/memory/cgroup.procs'; \
         try join-v1-pids 'join /sys/fs/cgroup/pids/cgroup.procs'; \
         try join-any 'for f in $(find /sys/fs/cgroup -name cgroup.procs); do join $f && exit 0; done; exit 1'; \
         try host-v1-visible 'test -e /sys/fs/cgroup/memory || test -e /sys/fs/cgroup/unified'; \
         try host-tree 'find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d | grep -q .'; \
         try rewrite-limit 'for f in $(find /sys/fs/cgroup -type f -name memory.max -o -type f -name memory.limit_in_bytes -o -type f -name pids.max); do v=$(cat $f) && echo $v > $f && exit 0; done; exit 1'; \
         try mkdir 'mkdir /sys/fs/cgroup/escape-$$ && rmdir /sys/fs/cgroup/escape-$$'; \
         try umount 'umount /sys/fs/cgroup'; \
         try remount 'mount -o remount,rw /sys/fs/cgroup'; \
         try remount-sys 'mount -o remount,rw /sys'; \
         try mount-cgroup 'mkdir -p /cg && mount -t cgroup2 none /cg'; \
         try rw-mount 'grep \" /sys/fs/cgroup \" /proc/mounts | grep -qv \" ro,\"'; \
         true";
    for network in ["default", "none"] {
        let ctx = context(
            &format!("FROM busybox\nRUN --network={network} {script}\n"),
            &[],
        );
        let stderr = build_ok(&s, ctx.path(), &["--memory", "64m", "--pids-limit", "50"]);
        let breaches = marked(&stderr, "breach");
        assert!(
            breaches.is_empty(),
            "--network={network}: {breaches:?}\n{stderr}"
        );
        assert_eq!(marked(&stderr, "held").len(), 13, "{stderr}");
        let cgroups = marked(&stderr, "cgroup");
        assert!(!cgroups.is_empty(), "{stderr}");
        for line in &cgroups {
            assert!(
                line.ends_with(":/"),
                "the step sees a cgroup above its own: {cgroups:?}"
            );
        }
        assert!(cgroups.iter().any(|l| l == "cgroup=0::/"), "{cgroups:?}");
    }
}

/// A static program that pushes a command into a terminal with TIOCSTI through fds 0-2 and
/// /dev/tty, and reports its session. Compiled here: busybox has no TIOCSTI.
const TIOCSTI_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
static void push(int fd, const char *name) {
    /* The token is spelled only in what is pushed, so it can show only through the terminal. */
    const char *cmd = "echo zq-INJ" "ECTED-zq\n";
    int ok = 1;
    for (const char *p = cmd; *p; p++)
        if (ioctl(fd, TIOCSTI, p) != 0) { ok = 0; break; }
    printf("sti-%s=%s\n", name, ok ? "pushed" : strerror(errno));
}
int main(void) {
    push(0, "stdin"); push(1, "stdout"); push(2, "stderr");
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (t < 0) printf("devtty=%s\n", strerror(errno));
    else { printf("devtty=opened\n"); push(t, "devtty"); }
    printf("session=%d pid=%d\n", (int)getsid(0), (int)getpid());
    fflush(stdout);
    return 0;
}
"#;

/// Runs `inner` (a shell command line) under script(1): a pseudo-terminal becomes its
/// controlling terminal, as a user's shell would give cairn. Returns what the terminal showed.
fn on_a_terminal(inner: &str) -> String {
    let mut child = tool("script")
        .args(["-q", "-e", "-c", inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{inner} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    String::from_utf8_lossy(&reader.join().unwrap()).into_owned()
}

/// Item C: a step (and `cairn run` without -t) gets a session of its own without a
/// controlling terminal: /dev/tty does not open, pid 1 leads its session, and TIOCSTI cannot
/// push a command into the user's terminal.
#[test]
fn a_step_cannot_type_into_the_users_terminal() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nCOPY tiocsti /tiocsti\nRUN /tiocsti\n", &[]);
    fs::write(ctx.path().join("tiocsti.c"), TIOCSTI_C).unwrap();
    let mut cc = tool("gcc");
    cc.args(["-static", "-O", "-o"])
        .arg(ctx.path().join("tiocsti"))
        .arg(ctx.path().join("tiocsti.c"));
    cairn_e2e::ok(cc);
    let image = format!("sti-{}", std::process::id());
    let build = format!(
        "{} --root {} build --progress plain --no-cache -t {image} {}",
        cairn_bin().display(),
        s.root.display(),
        ctx.path().display()
    );
    let run = format!(
        "{} --root {} run --rm {image} /tiocsti",
        cairn_bin().display(),
        s.root.display(),
    );
    for (what, inner) in [("build", build), ("run", run)] {
        let out = on_a_terminal(&inner);
        let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
        assert!(
            !out.contains("zq-INJECTED-zq"),
            "{what}: the step typed into the terminal:\n{out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("devtty=No such device or address")),
            "{what}: /dev/tty must not open without a controlling terminal:\n{out}"
        );
        assert!(
            lines.iter().any(|l| l.ends_with("session=1 pid=1")),
            "{what}: pid 1 leads a session of its own:\n{out}"
        );
        for fd in ["stdin", "stdout", "stderr"] {
            assert!(
                !lines
                    .iter()
                    .any(|l| l.ends_with(&format!("sti-{fd}=pushed"))),
                "{what}: {fd}:\n{out}"
            );
        }
    }
}

/// Swaps `a` and `b` (one a directory, one a symlink to `/`) until told to stop.
fn keep_swapping(dir: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let (a, b) = (dir.join("x"), dir.join("y"));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &a,
                rustix::fs::CWD,
                &b,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .unwrap();
            n += 1;
        }
        n
    })
}

/// Item D, the race: while the context's `x` keeps turning from a directory into a symlink to
/// `/` and back, builds that bind `source=x` never see the host's root (the context's own path
/// on the host is the marker). Bounded: 40 builds or 40 seconds.
#[test]
fn a_bind_source_swapped_for_a_symlink_never_mounts_the_host_root() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nRUN --mount=type=bind,source=x,target=/m \
         if [ -e /m$CTX/Dockerfile ]; then echo saw=host-root; \
         elif [ -e /m/inside-x ]; then echo saw=x; \
         elif [ -e /m/Dockerfile ]; then echo saw=context-root; else echo saw=other; ls /m; fi\n",
        &[("x/inside-x", "")],
    );
    std::os::unix::fs::symlink("/", ctx.path().join("y")).unwrap();
    let ctx_arg = format!("CTX={}", ctx.path().display());
    // The context path reaches the step as a build arg: the Dockerfile reads it from ENV.
    fs::write(
        ctx.path().join("Dockerfile"),
        fs::read_to_string(ctx.path().join("Dockerfile"))
            .unwrap()
            .replace("FROM busybox\n", "FROM busybox\nARG CTX\n"),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = keep_swapping(ctx.path(), stop.clone());
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut builds = 0;
    while builds < 40 && started.elapsed() < Duration::from_secs(40) {
        builds += 1;
        let out = build(&s, ctx.path(), &["--build-arg", &ctx_arg]);
        let (_, stderr) = texts(&out);
        seen.extend(marked(&stderr, "saw"));
        if seen.iter().any(|l| l == "saw=host-root") {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        !seen.iter().any(|l| l == "saw=host-root"),
        "the host's root was mounted ({builds} builds, {swaps} swaps): {seen:?}"
    );
    assert!(!seen.is_empty(), "no build ran the step in {builds} tries");
    assert!(
        seen.iter().all(|l| l == "saw=x" || l == "saw=context-root"),
        "{seen:?}"
    );
}

/// Records every entry that appears in `dirs` while it runs (the sandbox removes the mount
/// points it made once the step ends, so an escape shows only while the step runs).
fn watch(
    dirs: Vec<std::path::PathBuf>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            for d in &dirs {
                for e in fs::read_dir(d).unwrap() {
                    seen.insert(e.unwrap().path().display().to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen.into_iter().collect()
    })
}

/// Item D, symlinked targets: an image whose `/evil` and `/etc` are absolute symlinks to host
/// paths that exist. tmpfs, bind, cache and secret mounts through `/evil` and the hosts and
/// resolv.conf binds through `/etc` land inside the container's root, and so do `cairn run`'s
/// volume and binds in that image; nothing appears on the host, not even while the step runs.
#[test]
fn mount_targets_through_absolute_symlinks_stay_in_the_root() {
    let s = loaded_busybox();
    let host = tempfile::tempdir().unwrap();
    let (evil, etc) = (host.path().join("evil"), host.path().join("etc"));
    fs::create_dir(&evil).unwrap();
    fs::create_dir(&etc).unwrap();
    let secret = host.path().join("secret.txt");
    fs::write(&secret, "s3cret").unwrap();
    let vol = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("v.txt"), "vol\n").unwrap();
    for snapshotter in ["overlay", "copy"] {
        // An image without /etc, its place taken by a link: COPY keeps the context's links.
        let ctx = context(
            "FROM busybox AS base\n\
             FROM scratch\n\
             COPY --from=base /bin /bin\n\
             COPY links/ /\n\
             RUN --mount=type=tmpfs,target=/evil/tmpfs \
             --mount=type=bind,source=f.txt,target=/evil/bind/f.txt \
             --mount=type=cache,target=/evil/cache \
             --mount=type=secret,id=s,target=/evil/secret \
             echo seen=$(cat /evil/bind/f.txt)-$(cat /evil/secret) && touch /evil/tmpfs/t /evil/cache/c \
             && grep -q localhost /etc/hosts && echo seen=hosts && sleep 1\n",
            &[("f.txt", "ctx")],
        );
        fs::create_dir(ctx.path().join("links")).unwrap();
        std::os::unix::fs::symlink(&evil, ctx.path().join("links/evil")).unwrap();
        std::os::unix::fs::symlink(&etc, ctx.path().join("links/etc")).unwrap();
        let src = format!("id=s,src={}", secret.display());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch(vec![evil.clone(), etc.clone()], stop.clone());
        let tag = format!("links-{snapshotter}");
        let out = build(
            &s,
            ctx.path(),
            &["--snapshotter", snapshotter, "--secret", &src, "-t", &tag],
        );
        stop.store(true, Ordering::Relaxed);
        let appeared = watcher.join().unwrap();
        let (_, stderr) = texts(&out);
        assert!(
            appeared.is_empty(),
            "{snapshotter}: the step's mount points reached the host: {appeared:?}\n{stderr}"
        );
        assert!(out.status.success(), "{snapshotter}: {stderr}");
        assert_eq!(
            marked(&stderr, "seen"),
            ["seen=ctx-s3cret", "seen=hosts"],
            "{snapshotter}: {stderr}"
        );

        // `cairn run -v` into the same image: the volume's target and the hosts bind too.
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch(vec![evil.clone(), etc.clone()], stop.clone());
        let volume = format!("{}:/evil/vol", vol.path().display());
        let out = s
            .cmd(&["run", "--rm", "-v", &volume, &tag])
            .args(["sh", "-c", "cat /evil/vol/v.txt && grep -c localhost /etc/hosts >/dev/null && echo hosts && sleep 1"])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let appeared = watcher.join().unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(
            appeared.is_empty(),
            "{snapshotter}: cairn run's mount points reached the host: {appeared:?}\n{stderr}"
        );
        assert!(out.status.success(), "{snapshotter}: {stderr}");
        assert_eq!(stdout, "vol\nhosts\n", "{snapshotter}: {stderr}");
    }
}

/// A tar holding one character device node, `1:3` (the harmless null device) mode 0666, at
/// `name`: what an image would ship to reach a host disk as `8:0`.
fn device_node_tar(name: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Char);
    h.set_path(name).unwrap();
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    b.into_inner().unwrap()
}

/// Item G: a device node an image carries is never opened by a step. Root unpacks it (a
/// user's unpacking cannot make one at all), so the step's root is mounted nodev; only the
/// step's own /dev, with the host's harmless nodes bound in, opens devices. Under chroot,
/// where nothing can be mounted nodev, the node is left out of the step's copy.
#[test]
fn a_device_node_from_an_image_does_not_open() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("nodes.tar");
    fs::write(&tar, device_node_tar("node")).unwrap();
    s.run(&["import", tar.to_str().unwrap(), "nodes"]);
    let ctx = context(
        "FROM nodes\nCOPY --from=busybox / /\n\
         RUN test -c /node && echo node=char; \
         if test -c /node && echo x > /node; then echo node=opened; else echo node=refused; fi; \
         if echo x > /dev/null; then echo devnull=opened; fi; \
         if mknod /dev/made c 1 3 || mknod /made c 1 3; then echo mknod=made; fi\n",
        &[],
    );
    if !cairn_e2e::is_root() {
        // A user's build stops at unpacking: the kernel refuses the node outright.
        let out = build(&s, ctx.path(), &[]);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("device node"), "{stderr}");
        return;
    }
    for (mode, want) in [
        ("userns", &["node=char", "node=refused"][..]),
        ("rootful", &["node=char", "node=refused"]),
        ("chroot", &["node=refused"]),
    ] {
        let stderr = build_ok(&s, ctx.path(), &["--isolation", mode]);
        assert_eq!(marked(&stderr, "node"), want, "{mode}: {stderr}");
        assert_eq!(marked(&stderr, "mknod"), Vec::<String>::new(), "{mode}");
        assert_eq!(
            marked(&stderr, "devnull"),
            ["devnull=opened"],
            "{mode}: {stderr}"
        );
    }
}
