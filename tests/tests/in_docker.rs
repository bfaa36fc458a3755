//! cairn's own image in Docker: builds run with `docker run` (the default seccomp profile and capabilities, never privileged), as root and as the image's `cairn` user, pushed to a registry and checked from the host with skopeo.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_e2e::docker::run_cairn_image;
use cairn_e2e::layout::{self, LayerEntry};
use cairn_e2e::registry::{Options, Registry};
use cairn_e2e::{context_with, ok, texts, tool};

/// A COPY-only build (no RUN: the sandbox needs a user namespace, which Docker's default
/// seccomp profile refuses): names resolved from the image's own passwd and group, modes,
/// metadata.
const DOCKERFILE: &str = r#"FROM scratch
COPY etc/ /etc/
COPY --chown=app:staff app/ /srv/app/
COPY --chmod=0750 bin/tool /usr/local/bin/tool
ENV GREETING="hello from docker" PATH=/usr/local/bin
WORKDIR /srv/app
CMD ["tool", "--serve"]
"#;

fn build_context() -> tempfile::TempDir {
    let ctx = context_with(
        DOCKERFILE,
        &[
            (
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/srv/app:/bin/sh\n",
            ),
            ("etc/group", "root:x:0:\nstaff:x:2345:app\n"),
            ("app/index.html", "<h1>built in docker</h1>\n"),
            ("app/static/site.css", "h1 { color: teal }\n"),
            ("bin/tool", "#!/bin/sh\necho tool\n"),
        ],
    );
    // The container's `cairn` user (1000) reads it through a bind mount: the temp dir is 0700.
    open_up(ctx.path());
    ctx
}

fn open_up(p: &Path) {
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path());
        }
    }
}

/// Builds the context with cairn's image in Docker as `user`, pushing it to `registry` as
/// `repo_tag`; returns the image ID the build printed.
fn build_in_docker(user: &str, registry: &Registry, repo_tag: &str) -> String {
    let ctx = build_context();
    let mount = format!("{}:/workspace:ro", ctx.path().display());
    let image = registry.image(repo_tag);
    // --network host: the registry listens on the host's loopback (cairn falls back to plain
    // HTTP for a loopback registry).
    let docker_args = ["--network", "host", "--user", user, "-v", &mount];
    let out = run_cairn_image(&docker_args, &["build", "-q", "-t", &image, "--push", "."])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "cairn build in docker as {user} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- registry log\n{}",
        registry.log()
    );
    let id = stdout.trim().to_owned();
    assert!(id.starts_with("sha256:"), "build -q printed {stdout:?}");
    id
}

/// `repo_tag` pulled from `registry` by skopeo into an OCI layout, and read.
fn pulled(registry: &Registry, repo_tag: &str) -> layout::LayoutImage {
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci");
    let mut args = vec!["copy".to_owned()];
    args.extend(registry.skopeo_flags("src-"));
    args.push(format!("docker://{}", registry.image(repo_tag)));
    args.push(format!("oci:{}:pushed", oci.display()));
    registry.skopeo_ok(&args);
    layout::read_gzip_too(&oci)
}

/// Pulls `repo_tag` from `registry` with skopeo into an OCI layout, checks
/// it is the image `id` and holds what DOCKERFILE says.
fn check_pushed(registry: &Registry, repo_tag: &str, id: &str) {
    let image = pulled(registry, repo_tag);
    // A push carries provenance by default: the ID is the index's digest, as the
    // registry has it, and the index's first entry is the image.
    let index = registry.skopeo_manifest(repo_tag);
    assert_eq!(
        registry.skopeo_digest(repo_tag),
        id,
        "the pushed image is the one built"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.digest"],
        entries[0]["digest"]
    );

    let config = &image.config["config"];
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/usr/local/bin", "GREETING=hello from docker"]),
        "{config}"
    );
    assert_eq!(config["Cmd"], serde_json::json!(["tool", "--serve"]));
    assert_eq!(config["WorkingDir"], "/srv/app");

    // Every layer's entries, later layers over earlier ones.
    let mut files = std::collections::BTreeMap::new();
    for l in &image.layers {
        files.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let entry = |name: &str| -> &LayerEntry {
        files
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the pushed image: {:?}", files.keys()))
    };
    for (name, kind, mode, uid, gid) in [
        ("etc/passwd", b'0', 0o644, 0, 0),
        ("srv/app", b'5', 0o755, 1234, 2345),
        ("srv/app/index.html", b'0', 0o644, 1234, 2345),
        ("srv/app/static", b'5', 0o755, 1234, 2345),
        ("srv/app/static/site.css", b'0', 0o644, 1234, 2345),
        ("usr/local/bin/tool", b'0', 0o750, 0, 0),
    ] {
        let e = entry(name);
        assert_eq!(
            (e.kind, e.mode, e.uid, e.gid),
            (kind, mode, uid, gid),
            "{name}: {e:?}"
        );
    }
}

#[test]
fn builds_and_pushes_as_root_in_docker() {
    let registry = Registry::start(Options::default());
    let id = build_in_docker("root", &registry, "in-docker:root");
    check_pushed(&registry, "in-docker:root", &id);
}

#[test]
fn builds_and_pushes_rootless_as_the_cairn_user_in_docker() {
    let registry = Registry::start(Options::default());
    let id = build_in_docker("cairn", &registry, "in-docker:cairn");
    check_pushed(&registry, "in-docker:cairn", &id);
}

/// Maps a user namespace with the image's newuidmap and newgidmap: a child unshares one, the
/// parent has the helpers write its maps from the caller's /etc/subuid and /etc/subgid ranges,
/// and the child prints the maps it then sees. Exits 0 only if both helpers succeeded.
const USERNS_MAP_C: &str = r#"
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static int helper(const char *tool, const char *pid, const char *id) {
    pid_t p = fork();
    if (p == 0) {
        execl(tool, tool, pid, "0", id, "1", "1", "100000", "65536", (char *)NULL);
        perror(tool);
        _exit(127);
    }
    int status;
    waitpid(p, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void cat(const char *path) {
    FILE *f = fopen(path, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) printf("%s %s", path, line);
}

int main(void) {
    int made[2], mapped[2], status;
    char c = 0, pid[16], uid[16], gid[16];
    if (pipe(made) || pipe(mapped)) return 1;
    pid_t child = fork();
    if (child == 0) {
        close(made[0]);
        close(mapped[1]);
        if (unshare(CLONE_NEWUSER) != 0) { perror("unshare"); _exit(2); }
        if (write(made[1], "u", 1) != 1) _exit(3);
        if (read(mapped[0], &c, 1) != 1 || c != 'm') _exit(4);
        cat("/proc/self/uid_map");
        cat("/proc/self/gid_map");
        fflush(stdout);
        _exit(0);
    }
    close(made[1]);
    close(mapped[0]);
    int ok = read(made[0], &c, 1) == 1;
    snprintf(pid, sizeof pid, "%d", child);
    snprintf(uid, sizeof uid, "%d", getuid());
    snprintf(gid, sizeof gid, "%d", getgid());
    ok = ok && helper("/usr/bin/newuidmap", pid, uid) && helper("/usr/bin/newgidmap", pid, gid);
    if (write(mapped[1], ok ? "m" : "x", 1) != 1) ok = 0;
    waitpid(child, &status, 0);
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
"#;

/// The image's newuidmap and newgidmap give `cairn` its /etc/subuid and /etc/subgid ranges in a
/// new user namespace. The one grant: seccomp unconfined, as Docker's default profile refuses
/// unshare(CLONE_NEWUSER) without CAP_SYS_ADMIN; no capability is added, so the helpers'
/// own file capabilities must do (a setuid-root helper fails here).
#[test]
fn uidmap_helpers_map_a_user_namespace_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("userns_map.c");
    let exe = dir.path().join("userns_map");
    fs::write(&src, USERNS_MAP_C).unwrap();
    let mut cc = tool("gcc");
    cc.args(["-static", "-O", "-o"]).arg(&exe).arg(&src);
    ok(cc);
    open_up(dir.path());
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let mount = format!("{}:/userns_map:ro", exe.display());
    let args = [
        "--network",
        "none",
        "--user",
        "cairn",
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &mount,
        "--entrypoint",
        "/userns_map",
    ];
    let out = run_cairn_image(&args, &[]).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let maps: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut want = Vec::new();
    for file in ["/proc/self/uid_map", "/proc/self/gid_map"] {
        want.push(vec![file, "0", "1000", "1"]);
        want.push(vec![file, "1", "100000", "65536"]);
    }
    assert_eq!(maps, want, "{stdout}");

    // And cairn itself answers as the entrypoint.
    let out = ok(run_cairn_image(&["--network", "none"], &["--version"]));
    assert!(texts(&out).0.starts_with("cairn "), "{out:?}");
}

/// A Dockerfile of the most common shape: a Debian base, `RUN apt-get install`, a user, COPY
/// with an owner.
const APT_DOCKERFILE: &str = r#"FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends jq \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 app && jq --version > /jq-version
COPY --chown=app:app hello.txt /home/app/hello.txt
USER app
CMD ["cat", "/home/app/hello.txt"]
"#;

/// Loads the Debian base into a store in `store` (a host directory), then builds APT_DOCKERFILE
/// with cairn's image under `docker_args`, pushing to `registry`; returns the build's progress.
fn build_apt_in_docker(docker_args: &[&str], registry: &Registry, repo_tag: &str) -> String {
    let ctx = context_with(APT_DOCKERFILE, &[("hello.txt", "hello from apt\n")]);
    open_up(ctx.path());
    // The store in a volume of Docker's own: what the container's root writes there is no
    // file the test's user would have to remove (the unprivileged pass could not).
    let store = cairn_e2e::docker::Volume::new();
    let volumes = [
        format!("{}:/workspace:ro", ctx.path().display()),
        format!(
            "{}:/base.tar:ro",
            cairn_e2e::docker::debian_archive().display()
        ),
        format!("{}:/store", store.name()),
    ];
    let mut args: Vec<&str> = vec!["--network", "host"];
    for v in &volumes {
        args.extend(["-v", v]);
    }
    args.extend(docker_args);
    let cairn = |cmd: &[&str]| {
        let mut full = vec!["--root", "/store"];
        full.extend(cmd);
        run_cairn_image(&args, &full).output().unwrap()
    };
    let out = cairn(&["load", "-i", "/base.tar"]);
    assert!(out.status.success(), "{}", texts(&out).1);
    let image = registry.image(repo_tag);
    let out = cairn(&["build", "--progress", "plain", "-t", &image, "--push", "."]);
    let (_, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "{stderr}\n--- registry log\n{}",
        registry.log()
    );
    stderr
}

/// What APT_DOCKERFILE's image must hold, read back from the registry.
fn check_apt_image(registry: &Registry, repo_tag: &str) {
    let image = pulled(registry, repo_tag);
    assert_eq!(image.layers.len(), 4, "base, two RUNs, COPY");
    let config = &image.config["config"];
    assert_eq!(config["User"], "app", "{config}");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["cat", "/home/app/hello.txt"])
    );
    let apt = &image.layers[1];
    let jq = apt.get("usr/bin/jq").expect("jq in the apt layer");
    assert_eq!((jq.kind, jq.mode & 0o111 != 0, jq.uid), (b'0', true, 0));
    assert!(
        !apt.keys().any(|k| k.starts_with("var/lib/apt/lists/")),
        "{:?}",
        apt.keys()
    );
    let user = &image.layers[2];
    for name in ["etc/passwd", "home/app", "jq-version"] {
        assert!(user.contains_key(name), "{name}: {:?}", user.keys());
    }
    assert_eq!(
        (user["home/app"].uid, user["home/app"].gid),
        (1000, 1000),
        "useradd -m made the home as its user's"
    );
    let hello = &image.layers[3]["home/app/hello.txt"];
    assert_eq!((hello.uid, hello.gid, hello.mode), (1000, 1000, 0o644));
    // What the staging of the chroot rung or the mounts of the others gave the steps is in
    // no layer.
    for l in &image.layers[1..] {
        for staged in ["etc/hosts", "etc/resolv.conf", "dev/null", "proc", "sys"] {
            assert!(!l.contains_key(staged), "{staged}: {:?}", l.keys());
        }
    }
}

/// Item 5: Docker's defaults (seccomp profile, capabilities, no --privileged), as root: the
/// chroot rung, which the one line says and why, runs apt-get; the pushed image is right.
#[test]
fn apt_get_builds_as_root_under_dockers_defaults_in_a_chroot() {
    let registry = Registry::start(Options::default());
    let stderr = build_apt_in_docker(&[], &registry, "apt:chroot");
    let line =
        "isolation: chroot (userns: unshare(CLONE_NEWUSER) = EPERM; rootful: no CAP_SYS_ADMIN)";
    assert!(stderr.contains(line), "{stderr}");
    check_apt_image(&registry, "apt:chroot");
}

/// Item 5: with seccomp and /proc unconfined (and the tun device for the step's own
/// network), the same build gets the userns rung, and the same image.
#[test]
fn apt_get_builds_in_user_namespaces_when_docker_allows_them() {
    let registry = Registry::start(Options::default());
    let args = [
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "systempaths=unconfined",
        "--device",
        "/dev/net/tun",
    ];
    let stderr = build_apt_in_docker(&args, &registry, "apt:userns");
    assert!(stderr.contains("isolation: userns\n"), "{stderr}");
    check_apt_image(&registry, "apt:userns");
}

/// Item 5: as the image's non-root user without user namespaces, no rung is left: a RUN fails
/// naming each call tried and what to grant (a COPY-only build works: the test above).
#[test]
fn run_as_the_cairn_user_without_user_namespaces_fails_by_name() {
    let ctx = context_with("FROM scratch\nCOPY f /f\nRUN true\n", &[("f", "x")]);
    open_up(ctx.path());
    let mount = format!("{}:/workspace:ro", ctx.path().display());
    // No network: the build fails before it would need one (and a host without Docker's
    // bridge runs it all the same).
    let args = ["--network", "none", "--user", "cairn", "-v", &mount];
    let out = run_cairn_image(&args, &["build", "--progress", "plain", "."])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    for said in [
        "Dockerfile:3",
        "RUN cannot be isolated here",
        "userns: unshare(CLONE_NEWUSER) = EPERM",
        "seccomp=unconfined",
        "rootful: not root",
        "chroot: no CAP_SYS_CHROOT",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    assert!(!stderr.contains("os error"), "{stderr}");
}
