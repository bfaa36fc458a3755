//! Docker for the end-to-end tests: the daemon's client, and cairn's own image loaded into it.

// The image is dist/Dockerfile around the static cairn users get (scripts/dist.sh), built by
// the cairn under test, once per test process, and run by ID so parallel runs never race on
// a tag. The daemon is the machine's; scripts/dockerd.sh starts one when none answers.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{Store, ok, repo_root, texts};

/// A `docker` command.
pub fn docker() -> Command {
    Command::new("docker")
}

/// The static cairn that goes into the image: `$CAIRN_DIST_BIN`, which scripts/test.sh sets
/// after `scripts/dist.sh` built it (a release build is minutes: once per suite, not per test).
pub fn dist_bin() -> PathBuf {
    let bin = std::env::var_os("CAIRN_DIST_BIN")
        .map(PathBuf::from)
        .expect(
            "CAIRN_DIST_BIN is not set: build the static cairn with scripts/dist.sh and set \
         CAIRN_DIST_BIN=target/dist/cairn (scripts/test.sh does both)",
        );
    assert!(
        bin.is_file(),
        "CAIRN_DIST_BIN={} is missing: run scripts/dist.sh",
        bin.display()
    );
    bin
}

/// The ID of cairn's own image in the Docker daemon, built and loaded on first use.
pub fn cairn_image() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut info = docker();
        info.args(["info", "--format", "{{.ServerVersion}}"]);
        let out = info.output().expect("docker runs (install docker.io)");
        assert!(
            out.status.success(),
            "no Docker daemon answers: start one with scripts/dockerd.sh\n{}",
            texts(&out).1
        );

        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("context");
        let mut stage = Command::new(repo_root().join("scripts/dist.sh"));
        stage.arg("context").arg(&ctx).arg(dist_bin());
        ok(stage);

        let archive = dir.path().join("image.tar");
        let iid = dir.path().join("iid");
        let store = Store::new();
        let mut build = store.cmd(&["build", "-q", "-t", "cairn-e2e:latest", "-f"]);
        build
            .arg(repo_root().join("dist/Dockerfile"))
            .args(["--build-arg", "VERSION=e2e", "-o"])
            .arg(format!("type=docker-archive,dest={}", archive.display()))
            .arg("--iidfile")
            .arg(&iid)
            .arg(&ctx)
            .env("SOURCE_DATE_EPOCH", "0");
        ok(build);

        let mut load = docker();
        load.args(["load", "-q", "-i"]).arg(&archive);
        ok(load);
        fs::read_to_string(iid).unwrap().trim().to_owned()
    })
}

/// `docker run --rm` of cairn's image with `args` before the image (options) and `cmd` after
/// it (cairn's arguments); no options of its own: default seccomp profile and capabilities.
pub fn run_cairn_image(args: &[&str], cmd: &[&str]) -> Command {
    let mut c = docker();
    c.args(["run", "--rm"])
        .args(args)
        .arg(cairn_image())
        .args(cmd);
    c
}

/// A Debian bookworm base as a docker-archive: fixtures/debian/make.sh debootstraps it once per
/// machine and keeps it in its cache, readable by all, where the tests mount it from.
pub fn debian_archive() -> &'static std::path::Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let mut make = Command::new(repo_root().join("fixtures/debian/make.sh"));
        make.arg(crate::cairn_bin());
        let out = ok(make);
        PathBuf::from(texts(&out).0.trim())
    })
}

/// A Docker volume of the test's own, removed when dropped.
#[derive(Debug)]
pub struct Volume(String);

impl Volume {
    pub fn new() -> Volume {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cairn-e2e-{}-{n}", std::process::id());
        let mut c = docker();
        c.args(["volume", "create", &name]);
        ok(c);
        Volume(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Default for Volume {
    fn default() -> Volume {
        Volume::new()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker().args(["volume", "rm", "-f", &self.0]).output();
    }
}
