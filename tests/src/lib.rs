//! Helpers for cairn's end-to-end tests: find the real `cairn` binary and run it.
// This crate is test support: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub mod docker;
pub mod layout;
pub mod registry;

/// The `cairn` binary under test: `$CAIRN_BIN`, else the one cargo built next to this test.
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p cairn) or set CAIRN_BIN",
        bin.display()
    );
    bin
}

/// The repository's root, for fixtures: `$CAIRN_REPO_ROOT` (set when the suite runs as another
/// user from a staged copy), else where this crate was built.
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_REPO_ROOT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// A `cairn` command with a clean, predictable environment.
pub fn cairn() -> Command {
    let mut cmd = Command::new(cairn_bin());
    cmd.env_remove("CAIRN_ROOT").env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` with `stdin` fed to it and returns what it did.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("cairn finishes")
}

/// Stdout and stderr as text, for assertions and failure messages.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs a command and insists it succeeds, showing its output when it does not.
pub fn ok(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "{cmd:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    out
}

pub fn tool(name: &str) -> Command {
    Command::new(name)
}

/// A local user named `name`, made here if it does not exist (only root can).
pub fn ensure_user(name: &str) {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let mut add = tool("useradd");
        add.args(["--create-home", "--shell", "/bin/sh", name]);
        ok(add);
    }
}

/// `cairn --root STORE` run as `user` through runuser, with a clean environment and `home` as
/// its HOME; add the command's arguments.
pub fn cairn_as(user: &str, home: &Path, store: &Path) -> Command {
    let mut c = tool("runuser");
    c.args([
        "-u",
        user,
        "--",
        "env",
        "-i",
        "PATH=/usr/local/bin:/usr/bin:/bin",
    ])
    .arg(format!("HOME={}", home.display()))
    .arg(cairn_bin())
    .arg("--root")
    .arg(store);
    c
}

/// A store in its own temp dir, driven through `--root`.
#[derive(Debug)]
pub struct Store {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Store { _dir: dir, root }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cairn();
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        texts(&ok(self.cmd(args))).0
    }

    /// Builds `context` with `args` plus a local output, insists on success, and returns the
    /// output directory (inside the returned temp dir) and the build's standard error.
    pub fn build_local(
        &self,
        args: &[&str],
        context: &Path,
    ) -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("out");
        let mut c = self.cmd(&["build"]);
        c.args(args)
            .arg("-o")
            .arg(format!("type=local,dest={}", local.display()));
        let out = c.arg(context).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        (dir, local, stderr)
    }

    pub fn index(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.root.join("index.json")).unwrap()).unwrap()
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.run(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

/// A build context holding `dockerfile` and `files` (path, content).
pub fn context_with(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

/// A build context holding only `dockerfile`.
pub fn context(dockerfile: &str) -> tempfile::TempDir {
    context_with(dockerfile, &[])
}

/// This test process's directory for the fixtures it builds. A static is never dropped, so the
/// directory is named by the process and removed by a later test process once its own is gone
/// (a temp dir would be left behind by every test binary).
fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "cairn-e2e-busybox-";
        let tmp = std::env::temp_dir();
        for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let gone = name
                .strip_prefix(PREFIX)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if gone {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        dir
    })
}

/// A fixture script of fixtures/busybox run with `args`, writing `name` in this process's
/// directory; returns where.
fn make_fixture(script: &str, name: &str, args: &[&Path]) -> PathBuf {
    let out = process_dir().join(name);
    let mut c = Command::new(repo_root().join("fixtures/busybox").join(script));
    c.arg(&out).args(args);
    ok(c);
    out
}

/// The busybox fixture (this machine's busybox-static), built once per test process.
pub fn busybox_layout() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| make_fixture("make.sh", "busybox", &[&cairn_bin()]))
}

/// The arm64 busybox fixture (Debian's busybox-static:arm64, platform linux/arm64), built once
/// per test process from the package fixtures/busybox/fetch-arm64.sh caches.
pub fn busybox_arm64_layout() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        make_fixture(
            "make.sh",
            "busybox-arm64",
            &[&cairn_bin(), Path::new("arm64")],
        )
    })
}

/// The two busybox fixtures as one multi-platform image: index.json names (`latest`) an image
/// index of the amd64 and arm64 manifests, as `docker buildx build -o type=oci` writes it.
pub fn busybox_index_layout() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        make_fixture(
            "make-index.sh",
            "busybox-index",
            &[busybox_layout(), busybox_arm64_layout()],
        )
    })
}

/// Insists that the kernel runs arm64 programs through qemu, registered with the F flag (so a
/// chroot or user namespace without qemu in it runs them too). Panics rather than skipping: a
/// machine without it must fail the multi-platform tests, not pass them unseen.
pub fn require_arm64_emulation() {
    let entry = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    let problem = match fs::read_to_string(entry) {
        Err(e) => Some(format!("{}: {e}", entry.display())),
        Ok(s) if s.lines().next() != Some("enabled") => {
            Some(format!("{} is not enabled", entry.display()))
        }
        Ok(s) => match s.lines().find_map(|l| l.strip_prefix("flags:")) {
            Some(f) if f.contains('F') => None,
            f => Some(format!(
                "{} has no F (fix-binary) flag: flags:{}",
                entry.display(),
                f.unwrap_or_default()
            )),
        },
    };
    if let Some(p) = problem {
        panic!("arm64 emulation is not set up ({p}): run scripts/binfmt.sh as root");
    }
}

pub fn loaded_busybox() -> Store {
    let s = Store::new();
    let out = s.run(&[
        "load",
        "-i",
        busybox_layout().to_str().unwrap(),
        "-t",
        "busybox",
    ]);
    assert_eq!(out, "Loaded image: busybox:latest\n");
    s
}

/// Unpacks an OCI layout's image with umoci and returns the bundle's rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, into: &Path) -> PathBuf {
    let mut u = tool("umoci");
    u.arg("unpack");
    if !is_root() {
        u.arg("--rootless");
    }
    u.arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(into);
    ok(u);
    into.join("rootfs")
}
