//! The image commands through the real binary, checked with real validators: the busybox
//! fixture, load/save in every format, import, tag/rmi/prune/fsck, and crash safety.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use cairn_e2e::{
    Store, busybox_layout, cairn_bin, loaded_busybox, ok, repo_root, texts, tool, umoci_unpack,
};

#[test]
fn busybox_fixture_is_reproducible_and_valid() {
    let a = busybox_layout();
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("again");
    let mut c = Command::new(repo_root().join("fixtures/busybox/make.sh"));
    c.arg(&b).arg(cairn_bin());
    ok(c);
    assert_eq!(
        fs::read(a.join("index.json")).unwrap(),
        fs::read(b.join("index.json")).unwrap()
    );
    let mut v = tool("oci-image-tool");
    v.args(["validate", "--type", "image", "--ref", "name=latest"])
        .arg(a);
    ok(v);
    let mut inspect = tool("skopeo");
    inspect
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:latest", a.display()));
    let config: serde_json::Value = serde_json::from_slice(&ok(inspect).stdout).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
}

#[test]
fn load_names_tags_and_inspects() {
    let s = loaded_busybox();
    let images = s.run(&["images"]);
    let line = images.lines().nth(1).unwrap();
    assert!(line.starts_with("busybox "), "{images}");
    assert!(line.contains(" latest "), "{images}");
    let img = s.inspect("busybox");
    assert_eq!(img["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(
        img["Config"]["Env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH=")
    );
    // The store itself is an OCI layout that validators accept, named by the full reference.
    assert_eq!(
        s.index()["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "docker.io/library/busybox:latest"
    );
    let mut v = tool("oci-image-tool");
    v.args([
        "validate",
        "--type",
        "image",
        "--ref",
        "name=docker.io/library/busybox:latest",
    ])
    .arg(&s.root);
    ok(v);
    // By ID, and a second name; rmi by ID needs -f when it has several names.
    let id = img["Id"].as_str().unwrap().to_owned();
    s.run(&["tag", &id[7..19], "localhost:5000/bb:v1"]);
    assert_eq!(s.inspect("localhost:5000/bb:v1")["Id"], img["Id"]);
    let out = s.cmd(&["rmi", &id[7..19]]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        texts(&out).1.contains("has several names"),
        "{}",
        texts(&out).1
    );
    assert_eq!(
        s.run(&["rmi", "localhost:5000/bb:v1"]),
        "Untagged: localhost:5000/bb:v1\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.run(&["images", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    // Nothing to prune while busybox is named; everything once it is not.
    assert!(s.run(&["prune"]).starts_with("Deleted 0 blobs"));
    s.run(&["rmi", "busybox"]);
    assert!(s.run(&["prune"]).starts_with("Deleted 3 blobs"));
    s.run(&["fsck"]);
}

#[test]
fn save_in_every_format_is_read_by_other_tools() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let oci_dir = dir.path().join("layout");
    let oci_tar = dir.path().join("image.oci.tar");
    let docker_tar = dir.path().join("image.docker.tar");
    s.run(&[
        "save",
        "busybox",
        "--format",
        "oci-dir",
        "-o",
        oci_dir.to_str().unwrap(),
    ]);
    s.run(&[
        "save",
        "busybox",
        "--format",
        "oci-archive",
        "-o",
        oci_tar.to_str().unwrap(),
    ]);
    s.run(&[
        "save",
        "busybox",
        "--format",
        "docker-archive",
        "-o",
        docker_tar.to_str().unwrap(),
    ]);

    let mut v = tool("oci-image-tool");
    v.args(["validate", "--type", "image", "--ref", "name=latest"])
        .arg(&oci_dir);
    ok(v);
    for reference in [
        format!("oci:{}:latest", oci_dir.display()),
        format!("oci-archive:{}:latest", oci_tar.display()),
        format!("docker-archive:{}", docker_tar.display()),
    ] {
        let mut i = tool("skopeo");
        i.args(["inspect", "--config", &reference]);
        let config: serde_json::Value = serde_json::from_slice(&ok(i).stdout).unwrap();
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!(["sh"]),
            "{reference}"
        );
        let copy_to = dir
            .path()
            .join(format!("copy-{}", reference.split(':').next().unwrap()));
        let mut c = tool("skopeo");
        c.args(["copy", &reference])
            .arg(format!("oci:{}:latest", copy_to.display()));
        ok(c);
    }
    // umoci unpacks what cairn saved into a runnable bundle.
    let rootfs = umoci_unpack(&oci_dir, "latest", &dir.path().join("bundle"));
    assert!(rootfs.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );

    // podman loads the docker-archive.
    let pod = tempfile::tempdir().unwrap();
    let mut p = tool("podman");
    p.arg("--root").arg(pod.path().join("root"));
    p.arg("--runroot").arg(pod.path().join("run"));
    p.args(["--storage-driver", "vfs", "load", "-i"])
        .arg(&docker_tar);
    let out = ok(p);
    assert!(texts(&out).0.contains("busybox"), "{}", texts(&out).0);
}

#[test]
fn round_trips_keep_digests() {
    let s = loaded_busybox();
    let original = s.inspect("busybox");
    let dir = tempfile::tempdir().unwrap();
    for (format, file) in [
        ("oci-archive", "a.tar"),
        ("docker-archive", "d.tar"),
        ("oci-dir", "layout"),
    ] {
        let path = dir.path().join(file);
        s.run(&[
            "save",
            "busybox",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
        ]);
        let fresh = Store::new();
        let out = fresh.run(&["load", "-i", path.to_str().unwrap()]);
        assert_eq!(out, "Loaded image: busybox:latest\n", "{format}");
        let again = fresh.inspect("busybox");
        assert_eq!(again["Id"], original["Id"], "{format}: image ID");
        assert_eq!(again["RootFS"], original["RootFS"], "{format}: diff_ids");
        if format != "docker-archive" {
            // docker-archive layers are stored uncompressed, so only its manifest differs.
            assert_eq!(
                again["ManifestDigest"], original["ManifestDigest"],
                "{format}: manifest"
            );
        }
        fresh.run(&["fsck"]);
    }
}

#[test]
fn import_with_changes_and_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("app")).unwrap();
    fs::write(rootfs.join("app/hello"), "hi\n").unwrap();
    let tarball = dir.path().join("rootfs.tar.gz");
    let mut t = tool("tar");
    t.arg("-C")
        .arg(&rootfs)
        .arg("-czf")
        .arg(&tarball)
        .arg("app");
    ok(t);
    let s = Store::new();
    let id = s.run(&[
        "import",
        tarball.to_str().unwrap(),
        "myapp:1",
        "--change",
        "ENV GREETING=hello",
        "--change",
        "WORKDIR /app",
        "--change",
        "ENTRYPOINT [\"cat\"]",
        "--change",
        "CMD hello",
        "--change",
        "USER 1000",
        "--change",
        "EXPOSE 8080",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    let img = s.inspect("myapp:1");
    assert_eq!(img["Id"].as_str().unwrap(), id.trim());
    let c = &img["Config"];
    assert_eq!(c["Env"], serde_json::json!(["GREETING=hello"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "hello"]));
    assert_eq!(c["User"], "1000");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));

    // The same tarball through stdin, with SOURCE_DATE_EPOCH, twice: the same image ID.
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let mut c = s.cmd(&["import", "-", "fromstdin"]);
            c.env("SOURCE_DATE_EPOCH", "1700000000");
            let out = cairn_e2e::run_with_stdin(c, &fs::read(&tarball).unwrap());
            assert!(out.status.success(), "{}", texts(&out).1);
            texts(&out).0
        })
        .collect();
    assert_eq!(ids[0], ids[1]);

    // A bad --change is refused before anything is stored.
    let blobs = || fs::read_dir(s.root.join("blobs/sha256")).unwrap().count();
    let before = blobs();
    for (change, message) in [
        ("RUNN x", "unknown instruction: RUNN"),
        ("EXPOSE 80/icmp", "invalid protocol"),
    ] {
        let out = s
            .cmd(&[
                "import",
                tarball.to_str().unwrap(),
                "bad",
                "--change",
                change,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(texts(&out).1.contains(message), "{}", texts(&out).1);
    }
    assert_eq!(blobs(), before);
}

#[test]
fn bad_archives_are_refused_and_store_nothing() {
    let s = Store::new();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let out = s
        .cmd(&["load", "-i", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(texts(&out).1.contains("junk.tar"), "{}", texts(&out).1);

    // An OCI layout whose layer blob was tampered with: the load fails naming the digest, and
    // nothing is stored under it.
    let layout = dir.path().join("layout");
    let mut cp = tool("cp");
    cp.arg("-r").arg(busybox_layout()).arg(&layout);
    ok(cp);
    let manifest_index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = manifest_index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(&mdigest[7..])).unwrap())
            .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = layout.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let out = s
        .cmd(&["load", "-i", layout.to_str().unwrap(), "-t", "busybox"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&layer) && stderr.contains("does not match"),
        "{stderr}"
    );
    assert!(!s.root.join("blobs/sha256").join(&layer[7..]).exists());
    assert_eq!(s.index()["manifests"], serde_json::json!([]));
    s.run(&["fsck"]);
}

/// Bytes under `dir` (recursively) and whether it holds anything at all.
fn bytes_under(dir: &Path) -> (u64, bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, false);
    };
    let mut total = (0, false);
    for e in entries.flatten() {
        total.1 = true;
        match e.metadata() {
            Ok(m) if m.is_dir() => total.0 += bytes_under(&e.path()).0,
            Ok(m) => total.0 += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// Kills `cairn load` of a large archive at moments chosen by what it has written so far (in
/// the store's scratch space and its blobs), each proved to land while the load runs; after
/// each kill the store is consistent, and the same load then succeeds in it.
#[test]
fn load_survives_sigkill_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    // A large image: 160 MiB of incompressible data in a few files.
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..4 {
        let mut data = vec![0u8; 40 << 20];
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        fs::write(rootfs.join(format!("data{i}")), &data).unwrap();
    }
    let tarball = dir.path().join("big.tar");
    let mut t = tool("tar");
    t.arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg(".");
    ok(t);
    let source = Store::new();
    source.run(&["import", tarball.to_str().unwrap(), "big:1"]);
    let archive = dir.path().join("big.oci.tar");
    source.run(&[
        "save",
        "big:1",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
    ]);

    // Kill points: as soon as it starts, once scratch space is in use, and with the layer blob
    // part written (1, 32 and 128 MiB of its ~160 MiB).
    type Reached = fn(u64, bool) -> bool;
    let points: [(&str, Reached); 5] = [
        ("at once", |_, _| true),
        ("scratch in use", |_, used| used),
        ("1 MiB written", |tmp, _| tmp >= 1 << 20),
        ("32 MiB written", |tmp, _| tmp >= 32 << 20),
        ("128 MiB written", |tmp, _| tmp >= 128 << 20),
    ];
    for (what, reached) in points {
        let target = Store::new();
        let mut child = target
            .cmd(&["load", "-i", archive.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let landed = loop {
            let (tmp, used) = bytes_under(&target.root.join("tmp"));
            if reached(tmp, used) {
                // Still running after the point was seen: the kill lands mid-load.
                let running = child.try_wait().unwrap().is_none();
                let _ = child.kill(); // SIGKILL
                break running;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let _ = child.wait();
        assert!(landed, "{what}: the load ended before the kill could land");
        let index = fs::read_to_string(target.root.join("index.json")).unwrap_or_default();
        assert!(
            !index.contains("big:1"),
            "{what}: the killed load had already tagged its image"
        );
        let out = target.cmd(&["fsck"]).output().unwrap();
        assert!(
            out.status.success(),
            "{what}: the kill left a broken store:\n{}",
            texts(&out).0
        );
        assert_eq!(
            target.run(&["load", "-i", archive.to_str().unwrap()]),
            "Loaded image: big:1\n",
            "{what}"
        );
        target.run(&["fsck"]);
        assert_eq!(target.inspect("big:1")["Id"], source.inspect("big:1")["Id"]);
        // Leftovers of the killed load go with prune; what the tag reaches stays.
        target.run(&["prune"]);
        assert_eq!(
            fs::read_dir(target.root.join("tmp")).unwrap().count(),
            0,
            "{what}"
        );
        target.run(&["fsck"]);
    }
}

#[test]
fn images_lists_as_scripts_ask_and_history_shows_the_steps() {
    let s = cairn_e2e::loaded_busybox();
    s.run(&["tag", "busybox", "someone/app:1"]);
    let ctx = cairn_e2e::context("FROM busybox\nRUN echo hi > /hi\nLABEL x=1\n");
    let dangling = s
        .run(&["build", "-q", ctx.path().to_str().unwrap()])
        .trim()
        .to_owned();
    let busybox_id = s.inspect("busybox")["Id"].as_str().unwrap().to_owned();

    let names = s.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["<none>:<none>", "busybox:latest", "someone/app:1"]);
    // -q: each ID once (busybox and someone/app share one), short unless --no-trunc.
    let ids = s.run(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    assert!(ids.lines().all(|l| l.len() == 12), "{ids}");
    let full = s.run(&["images", "-q", "--no-trunc"]);
    assert!(full.lines().any(|l| l == busybox_id), "{full}");
    assert!(full.lines().any(|l| l == dangling), "{full}");
    // Filters and the REPOSITORY argument.
    let only = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        s.run(&a).lines().map(str::to_owned).collect()
    };
    assert_eq!(only(&["--filter", "dangling=true"]), ["<none>:<none>"]);
    assert_eq!(only(&["-f", "reference=some*/*"]), ["someone/app:1"]);
    assert_eq!(only(&["busybox"]), ["busybox:latest"]);
    assert_eq!(only(&["busybox:nope"]), Vec::<String>::new());
    let bad = s.cmd(&["images", "--filter", "until=1h"]).output().unwrap();
    assert!(!bad.status.success() && texts(&bad).1.contains("until=1h"));
    // --digests adds a column; a table template has a header.
    let digests = s.run(&["images", "--digests", "busybox"]);
    assert!(
        digests.starts_with("REPOSITORY   TAG      DIGEST"),
        "{digests}"
    );
    assert!(digests.contains("sha256:"), "{digests}");
    let table = s.run(&[
        "images",
        "--format",
        "table {{.Repository}}\\t{{.ID}}",
        "busybox",
    ]);
    assert_eq!(table.lines().next(), Some("REPOSITORY\tIMAGE ID"));

    // history: newest first, the image's ID on its own step, the RUN's layer sized.
    let hist = s.run(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
        &dangling,
    ]);
    let lines: Vec<&str> = hist.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{dangling}|LABEL x=1|0B")),
        "{hist}"
    );
    assert!(
        lines[1].starts_with("<missing>|RUN /bin/sh -c echo hi > /hi"),
        "{hist}"
    );
    assert!(!lines[1].ends_with("|0B"), "{hist}");
    let q = s.run(&["history", "-q", &dangling]);
    assert_eq!(q.lines().next(), Some(&dangling[7..19]));

    // docker's `image` group spells the same commands; `system df` sizes the store.
    assert_eq!(s.run(&["image", "ls", "-q"]), ids);
    let df: serde_json::Value =
        serde_json::from_str(&s.run(&["system", "df", "--format", "json"])).unwrap();
    assert_eq!(df[0]["Type"], "Images");
    assert_eq!(df[0]["TotalCount"], 3);
    assert_ne!(
        df[0]["Reclaimable"], "0B",
        "the dangling image's layer: {df}"
    );
    s.run(&["image", "rm", "someone/app:1"]);
    assert_eq!(s.run(&["image", "list", "-q"]).lines().count(), 2);
    s.run(&["image", "prune"]);
    let df: serde_json::Value =
        serde_json::from_str(&s.run(&["system", "df", "--format", "json"])).unwrap();
    assert_eq!(
        (&df[0]["TotalCount"], &df[0]["Reclaimable"]),
        (&serde_json::json!(1), &serde_json::json!("0B"))
    );
}
