//! cairn's own image in Docker: builds run with `docker run` (the default seccomp profile and capabilities, never privileged), as root and as the image's `cairn` user, pushed to a registry and checked from the host with skopeo.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_e2e::docker::run_cairn_image;
use cairn_e2e::layout::{self, LayerEntry};
use cairn_e2e::registry::{Options, Registry};
use cairn_e2e::{context_with, ok, texts};

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

/// Pulls `repo_tag` from `registry` with skopeo into an OCI layout, checks
/// it is the image `id` and holds what DOCKERFILE says.
fn check_pushed(registry: &Registry, repo_tag: &str, id: &str) {
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci");
    let mut args = vec!["copy".to_owned()];
    args.extend(registry.skopeo_flags("src-"));
    args.push(format!("docker://{}", registry.image(repo_tag)));
    args.push(format!("oci:{}:pushed", oci.display()));
    registry.skopeo_ok(&args);

    let manifest = registry.skopeo_manifest(repo_tag);
    assert_eq!(
        manifest["config"]["digest"], id,
        "the pushed image is the one built"
    );

    let image = layout::read_gzip_too(&oci);
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

/// newuidmap and newgidmap find their libraries and run setuid root: as `cairn`, /proc/1 (the
/// tool itself) is root's, which only a setuid exec makes it, and the user is looked up.
#[test]
fn uidmap_helpers_run_setuid_in_the_image() {
    for tool in ["newuidmap", "newgidmap"] {
        let entry = format!("/usr/bin/{tool}");
        let args = ["--user", "cairn", "--entrypoint", entry.as_str()];
        let out = run_cairn_image(&args, &["1", "0", "1000", "1"])
            .output()
            .unwrap();
        let (_, stderr) = texts(&out);
        assert!(
            stderr.contains("is owned by a different user: uid:1000 pw_uid:1000 st_uid:0"),
            "{tool} as cairn: {:?}\n{stderr}",
            out.status
        );
    }
    // Run with no arguments, each prints its usage: the loader and libraries are there.
    let out = run_cairn_image(&["--entrypoint", "/usr/bin/newgidmap"], &[])
        .output()
        .unwrap();
    assert!(texts(&out).1.contains("usage: newgidmap"), "{out:?}");
    // And cairn itself answers as the entrypoint.
    let out = ok(run_cairn_image(&[], &["--version"]));
    assert!(texts(&out).0.starts_with("cairn "), "{out:?}");
}
