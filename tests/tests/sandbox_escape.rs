//! Attacks on the RUN sandbox from inside a step, through the real binary: host sysctls and
//! kernel files through /proc, host cgroups through /sys, the user's terminal through the
//! step's session, and the host's files through bind sources and symlinked mount targets.
//! Each test fails on a sandbox without the matching defence and passes as root and as an
//! unprivileged user.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_e2e::{cairn_bin, loaded_busybox, tool};

/// A build context holding `dockerfile` and `files` (path, content), readable by every user.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
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
