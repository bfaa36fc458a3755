//! The multi-platform fixtures and the machine's emulation: the arm64 busybox layout, the
//! two-platform index layout, `cairn import --platform`, and arm64 programs running here.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use cairn_e2e::registry::host_arch;
use cairn_e2e::{
    Store, busybox_arm64_layout, busybox_index_layout, busybox_layout, cairn_bin, ok, repo_root,
    require_arm64_emulation, texts, tool, umoci_unpack,
};
use serde_json::{Value, json};

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn validate(kind: &str, path: &Path) {
    let mut v = tool("oci-image-tool");
    v.args(["validate", "--type", kind]).arg(path);
    ok(v);
}

#[test]
fn arm64_layout_loads_as_an_arm64_image() {
    let layout = busybox_arm64_layout();
    let index = json_file(&layout.join("index.json"));
    assert_eq!(
        index["manifests"][0]["platform"],
        json!({"architecture": "arm64", "os": "linux"})
    );
    let s = Store::new();
    let out = s.run(&[
        "load",
        "-i",
        layout.to_str().unwrap(),
        "-t",
        "busybox-arm64",
    ]);
    assert_eq!(out, "Loaded image: busybox-arm64:latest\n");
    let img = s.inspect("busybox-arm64");
    assert_eq!(img["Architecture"], "arm64");
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["Variant"], Value::Null);
    assert_eq!(img["Config"]["Cmd"], json!(["sh"]));
}

/// Both layouts pass the OCI validator, and are the same bytes when made again. The validator
/// does not look inside a nested index, so the index blob and its manifests are checked too.
#[test]
fn layouts_are_valid_and_reproducible() {
    let arm64 = busybox_arm64_layout();
    let index = busybox_index_layout();
    validate("image", arm64);
    validate("image", index);
    let top = json_file(&index.join("index.json"));
    let nested = blob(index, top["manifests"][0]["digest"].as_str().unwrap());
    validate("imageIndex", &nested);
    for m in json_file(&nested)["manifests"].as_array().unwrap() {
        validate("manifest", &blob(index, m["digest"].as_str().unwrap()));
    }

    let dir = tempfile::tempdir().unwrap();
    let (arm64_again, index_again) = (dir.path().join("arm64"), dir.path().join("index"));
    let mut c = Command::new(repo_root().join("fixtures/busybox/make.sh"));
    c.arg(&arm64_again).arg(cairn_bin()).arg("arm64");
    ok(c);
    let mut c = Command::new(repo_root().join("fixtures/busybox/make-index.sh"));
    c.arg(&index_again).arg(busybox_layout()).arg(&arm64_again);
    ok(c);
    for (a, b) in [(arm64, &arm64_again), (index, &index_again)] {
        assert_eq!(
            fs::read(a.join("index.json")).unwrap(),
            fs::read(b.join("index.json")).unwrap(),
            "{} made twice differs",
            a.display()
        );
    }
}

/// skopeo reads the index layout as a multi-platform image and copies all of it; cairn loads
/// this machine's image from it.
#[test]
fn index_layout_is_a_two_platform_image() {
    let layout = busybox_index_layout();
    let top = json_file(&layout.join("index.json"));
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );

    let mut raw = tool("skopeo");
    raw.args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", layout.display()));
    let raw: Value = serde_json::from_slice(&ok(raw).stdout).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<&Value> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["platform"])
        .collect();
    assert_eq!(
        platforms,
        [
            &json!({"architecture": "amd64", "os": "linux"}),
            &json!({"architecture": "arm64", "os": "linux"})
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    let mut c = tool("skopeo");
    c.args(["copy", "--all", "--quiet"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("oci:{}:latest", copy.display()));
    ok(c);
    let copied = json_file(&copy.join("index.json"));
    assert_eq!(copied["manifests"][0]["digest"], entries[0]["digest"]);

    let s = Store::new();
    let out = s.run(&["load", "-i", layout.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: busybox:latest\n");
    assert_eq!(s.inspect("busybox")["Architecture"], host_arch());
}

/// The arm64 busybox runs here through qemu, and also inside a chroot of its own rootfs in a
/// user namespace, where no qemu is: what the F flag of the registration is for.
#[test]
fn arm64_busybox_runs_under_emulation() {
    require_arm64_emulation();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = umoci_unpack(busybox_arm64_layout(), "latest", &dir.path().join("bundle"));
    let mut direct = Command::new(rootfs.join("bin/busybox"));
    direct.args(["uname", "-m"]);
    assert_eq!(texts(&ok(direct)).0, "aarch64\n");
    let mut chrooted = tool("unshare");
    chrooted
        .arg("-Ur")
        // unshare's own chroot: chroot(8) is in sbin, off an ordinary user's PATH.
        .arg(format!("--root={}", rootfs.display()))
        .args(["/bin/uname", "-m"]);
    assert_eq!(texts(&ok(chrooted)).0, "aarch64\n");
}

#[test]
fn import_records_the_platform_given() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("rootfs.tar");
    let mut t = tool("tar");
    t.arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .arg("--files-from=/dev/null");
    ok(t);
    let tarball = tarball.to_str().unwrap();
    let s = Store::new();
    s.run(&["import", "--platform", "linux/arm/v7", tarball, "armv7"]);
    let img = s.inspect("armv7");
    assert_eq!(
        (&img["Os"], &img["Architecture"], &img["Variant"]),
        (&json!("linux"), &json!("arm"), &json!("v7"))
    );
    s.run(&["import", tarball, "native"]);
    let img = s.inspect("native");
    assert_eq!(img["Architecture"], host_arch());
    assert_eq!(img["Variant"], Value::Null);

    // A bare architecture is linux's, as containerd parses it; a malformed one is refused.
    s.run(&["import", "--platform", "aarch64", tarball, "bare"]);
    assert_eq!(s.inspect("bare")["Architecture"], "arm64");
    let out = s
        .cmd(&["import", "--platform", "linux/", tarball, "bad"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("expected OS/ARCH[/VARIANT]"), "{stderr}");
}
