//! Image indexes (manifest lists) through the real binary: pulled sparse or whole and kept under
//! their names, listed, inspected, pruned, pushed, saved and loaded, made with `cairn manifest`,
//! run by platform; against the real docker-registry, with skopeo and podman reading the result.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use cairn_e2e::registry::{
    ClientEnv, LayoutImage, Options, Registry, host_arch, make_layout, sha256, skopeo, store_names,
};
use cairn_e2e::{Store, loaded_busybox, texts};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Runs a command that must succeed; returns its trimmed standard output.
fn must(mut c: Command) -> String {
    let out = c.output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "{c:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout.trim().to_owned()
}

/// Runs a command that must fail; returns its standard error.
fn must_fail(mut c: Command, what: &str) -> String {
    let out: Output = c.output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "{what} should have failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stderr
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// The other architecture of the two the tests use.
fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// Two hand-made images, the host's and the other architecture's, pushed by skopeo as
/// `multi/app:ARCH`, and an OCI index of both PUT as `multi/app:1`.
struct Multi {
    reg: Registry,
    _dir: tempfile::TempDir,
    host: LayoutImage,
    other: LayoutImage,
    /// The index's digest, as the registry has it.
    index: String,
    index_json: serde_json::Value,
}

impl Multi {
    fn start() -> Multi {
        let reg = Registry::start(Options::default());
        let dir = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        let mut entries = Vec::new();
        for arch in [host_arch(), other_arch()] {
            let img = make_layout(
                &dir.path().join(arch),
                arch,
                arch,
                &[("arch.txt", format!("{arch}\n").as_bytes())],
            );
            reg.skopeo_push(&img.skopeo_ref(), &format!("multi/app:{arch}"));
            entries.push(img.index_entry(arch));
            images.push(img);
        }
        let index_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        let bytes = index_json.to_string();
        reg.put_manifest("multi/app", "1", OCI_INDEX, bytes.as_bytes());
        let other = images.pop().unwrap();
        let host = images.pop().unwrap();
        Multi {
            reg,
            _dir: dir,
            host,
            other,
            index: sha256(bytes.as_bytes()),
            index_json,
        }
    }

    fn name(&self) -> String {
        self.reg.image("multi/app:1")
    }
}

/// `cairn inspect [--platform P] NAME`'s one object.
fn inspect(env: &ClientEnv, st: &Store, name: &str, platform: Option<&str>) -> serde_json::Value {
    let mut args = vec!["inspect"];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    args.push(name);
    let v: serde_json::Value = serde_json::from_str(&must(env.cairn(st, &args))).unwrap();
    v[0].clone()
}

/// `cairn images --format json`, by name.
fn listed(env: &ClientEnv, st: &Store) -> Vec<serde_json::Value> {
    let out = must(env.cairn(st, &["images", "--format", "json"]));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A pull names the index, fetching one platform; a second pull adds another under the same
/// name; images lists it once with its platforms; prune keeps what is present, fsck is
/// happy; rmi of the name lets prune take it all. --all-platforms fetches every platform.
#[test]
fn pulls_keep_the_index_and_add_platforms() {
    let m = Multi::start();
    let env = ClientEnv::new();
    let st = Store::new();
    let name = m.name();
    let other = format!("linux/{}", other_arch());
    let host = format!("linux/{}", host_arch());

    assert_eq!(must(env.cairn(&st, &["pull", &name])), m.host.config_digest);
    assert_eq!(
        store_names(&st).get(&name),
        Some(&m.index),
        "the name names the index"
    );
    assert_eq!(
        inspect(&env, &st, &name, None)["Id"],
        m.host.config_digest.as_str()
    );
    let e = must_fail(
        env.cairn(&st, &["inspect", "--platform", &other, &name]),
        "inspect of a platform not pulled",
    );
    assert!(
        e.contains(&m.other.manifest_digest) && e.contains(&other),
        "{e}"
    );
    let rows = listed(&env, &st);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], m.index.as_str());
    assert_eq!(rows[0]["platforms"], serde_json::json!([host]));

    // A second platform joins the same index.
    assert_eq!(
        must(env.cairn(&st, &["pull", "--platform", &other, &name])),
        m.other.config_digest
    );
    assert_eq!(store_names(&st).get(&name), Some(&m.index));
    let rows = listed(&env, &st);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let mut platforms: Vec<String> = rows[0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    platforms.sort();
    let mut want = vec![host.clone(), other.clone()];
    want.sort();
    assert_eq!(platforms, want);
    let table = must(env.cairn(&st, &["images"]));
    assert!(
        table.lines().next().unwrap().ends_with("PLATFORMS"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 2, "one line for the index:\n{table}");
    let v = inspect(&env, &st, &name, Some(&other));
    assert_eq!(v["Id"], m.other.config_digest.as_str());
    assert_eq!(v["IndexDigest"], m.index.as_str());
    assert_eq!(
        v["RepoTags"],
        serde_json::json!([m.reg.image("multi/app:1")])
    );

    // prune keeps both (it used to fail on an index), fsck finds nothing wrong.
    must(env.cairn(&st, &["prune"]));
    must(env.cairn(&st, &["fsck"]));
    assert_eq!(
        inspect(&env, &st, &name, Some(&other))["Id"],
        m.other.config_digest.as_str()
    );
    // By the index's ID, and by an image's.
    assert_eq!(
        inspect(&env, &st, &m.index[7..19], None)["IndexDigest"],
        m.index.as_str()
    );
    assert_eq!(
        inspect(&env, &st, &m.other.config_digest[7..19], None)["Id"],
        m.other.config_digest.as_str()
    );

    must(env.cairn(&st, &["rmi", &name]));
    must(env.cairn(&st, &["prune"]));
    let left = fs::read_dir(st.root.join("blobs/sha256")).unwrap().count();
    assert_eq!(left, 0, "prune took the index and its images");

    let all = Store::new();
    assert_eq!(
        must(env.cairn(&all, &["pull", "--all-platforms", &name])),
        m.index
    );
    for p in [&host, &other] {
        inspect(&env, &all, &name, Some(p));
    }
    must(env.cairn(&all, &["fsck"]));
}

/// A pushed index keeps its digest and bytes; skopeo copies it whole, podman reads it, and a
/// pull of each platform back gives the same digests. An index whose images are not all in
/// the store is refused, naming the missing one.
#[test]
fn pushed_indexes_keep_their_digest() {
    let m = Multi::start();
    let env = ClientEnv::new();
    let name = m.name();
    let other = format!("linux/{}", other_arch());

    let sparse = Store::new();
    must(env.cairn(&sparse, &["pull", &name]));
    let dest = m.reg.image("copy/app:2");
    let e = must_fail(
        env.cairn(&sparse, &["push", &name, &dest]),
        "a push of an index with an image missing",
    );
    assert!(
        e.contains(&other) && e.contains(&m.other.manifest_digest),
        "{e}"
    );

    let st = Store::new();
    must(env.cairn(&st, &["pull", "--all-platforms", &name]));
    assert_eq!(must(env.cairn(&st, &["push", &name, &dest])), m.index);
    assert_eq!(m.reg.skopeo_manifest("copy/app:2"), m.index_json);
    assert_eq!(m.reg.skopeo_digest("copy/app:2"), m.index);
    let dir = tempfile::tempdir().unwrap();
    let mut args = s(&["copy", "--all", "--preserve-digests"]);
    args.extend(m.reg.skopeo_flags("src-"));
    args.push(format!("docker://{dest}"));
    args.push(format!("oci:{}:2", dir.path().join("all").display()));
    m.reg.skopeo_ok(&args);
    let read = m.reg.podman_manifest_inspect(&dest);
    assert_eq!(read["manifests"].as_array().unwrap().len(), 2, "{read}");
    for (p, img) in [
        (format!("linux/{}", host_arch()), &m.host),
        (other.clone(), &m.other),
    ] {
        let back = Store::new();
        assert_eq!(
            must(env.cairn(&back, &["pull", "--platform", &p, &dest])),
            img.config_digest
        );
        assert_eq!(
            inspect(&env, &back, &dest, Some(&p))["ManifestDigest"],
            img.manifest_digest.as_str()
        );
        assert_eq!(store_names(&back).get(&dest), Some(&m.index));
    }
}

/// The index.json of an OCI layout.
fn layout_index(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap()
}

/// save keeps an index in the OCI formats (as sparse as the store has it) and load gives it
/// its name back; a docker-archive holds one platform, and says so of one not pulled.
#[test]
fn saves_and_loads_keep_the_index() {
    let m = Multi::start();
    let env = ClientEnv::new();
    let name = m.name();
    let other = format!("linux/{}", other_arch());
    let st = Store::new();
    must(env.cairn(&st, &["pull", &name]));
    let dir = tempfile::tempdir().unwrap();

    let layout = dir.path().join("layout");
    must(env.cairn(
        &st,
        &[
            "save",
            "--format",
            "oci-dir",
            "-o",
            layout.to_str().unwrap(),
            &name,
        ],
    ));
    let index = layout_index(&layout);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(index["manifests"][0]["mediaType"], OCI_INDEX);
    assert_eq!(index["manifests"][0]["digest"], m.index.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    // Other tools read the host's image from it.
    let mut args = s(&["inspect", "--raw"]);
    args.push(format!("oci:{}:1", layout.display()));
    let raw = skopeo(&args).output().unwrap();
    assert!(raw.status.success(), "{}", texts(&raw).1);

    let archive = dir.path().join("oci.tar");
    must(env.cairn(
        &st,
        &[
            "save",
            "--format",
            "oci-archive",
            "-o",
            archive.to_str().unwrap(),
            &name,
        ],
    ));
    for from in [&layout, &archive] {
        let back = Store::new();
        must(env.cairn(&back, &["load", "-i", from.to_str().unwrap()]));
        assert_eq!(
            store_names(&back).get(&name),
            Some(&m.index),
            "{}",
            from.display()
        );
        assert_eq!(
            inspect(&env, &back, &name, None)["Id"],
            m.host.config_digest.as_str()
        );
        must(env.cairn(&back, &["fsck"]));
    }

    let docker = dir.path().join("docker.tar");
    let path = docker.to_str().unwrap();
    must(env.cairn(
        &st,
        &["save", "--format", "docker-archive", "-o", path, &name],
    ));
    let back = Store::new();
    must(env.cairn(&back, &["load", "-i", path]));
    assert_eq!(
        inspect(&env, &back, &name, None)["Id"],
        m.host.config_digest.as_str()
    );
    let e = must_fail(
        env.cairn(
            &st,
            &[
                "save",
                "--format",
                "docker-archive",
                "--platform",
                &other,
                "-o",
                path,
                &name,
            ],
        ),
        "a docker-archive of a platform not pulled",
    );
    assert!(e.contains(&other) && e.contains("pull"), "{e}");
}

/// Per-platform images pushed by digest, stitched into a list with cairn manifest (one
/// added from the store, one from the registry) and pushed: skopeo and podman read a list
/// whose entries are those digests with their platforms.
#[test]
fn manifest_lists_are_made_and_pushed() {
    let m = Multi::start();
    let env = ClientEnv::new();
    let st = Store::new();
    let other = other_arch();
    // The other platform's image in the store, by load.
    let loaded = must(env.cairn(
        &st,
        &[
            "load",
            "-i",
            m.other.layout.to_str().unwrap(),
            "-t",
            "local/other:1",
        ],
    ));
    assert!(loaded.contains("local/other:1"), "{loaded}");
    let by_digest = m
        .reg
        .image(&format!("multi/app@{}", m.host.manifest_digest));

    let created = must(env.cairn(&st, &["manifest", "create", "local/list:1"]));
    assert!(created.starts_with("sha256:"), "{created}");
    let e = must_fail(
        env.cairn(&st, &["manifest", "create", "local/list:1"]),
        "creating a list that exists",
    );
    assert!(e.contains("--amend"), "{e}");
    must(env.cairn(&st, &["manifest", "add", "local/list:1", "local/other:1"]));
    must(env.cairn(
        &st,
        &[
            "manifest",
            "add",
            "local/list:1",
            &format!("docker://{by_digest}"),
        ],
    ));
    // Adding the same platform again replaces its entry.
    must(env.cairn(
        &st,
        &[
            "manifest",
            "add",
            "--annotation",
            "note=again",
            "local/list:1",
            "local/other:1",
        ],
    ));
    let shown: serde_json::Value = serde_json::from_str(&must(
        env.cairn(&st, &["manifest", "inspect", "local/list:1"]),
    ))
    .unwrap();
    let entries = shown["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{shown}");
    let entry = |arch: &str| {
        entries
            .iter()
            .find(|e| e["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} entry in {shown}"))
            .clone()
    };
    assert_eq!(entry(other)["digest"], m.other.manifest_digest.as_str());
    assert_eq!(entry(other)["annotations"]["note"], "again");
    assert_eq!(
        entry(host_arch())["digest"],
        m.host.manifest_digest.as_str()
    );
    must(env.cairn(&st, &["manifest", "exists", "local/list:1"]));
    assert!(
        listed(&env, &st)
            .iter()
            .any(|r| r["name"] == "docker.io/local/list:1" && r["platforms"].is_array())
    );

    let dest = m.reg.image("stitched/app:1");
    let pushed = must(env.cairn(
        &st,
        &[
            "manifest",
            "push",
            "local/list:1",
            &format!("docker://{dest}"),
        ],
    ));
    let raw = m.reg.skopeo_manifest("stitched/app:1");
    assert_eq!(raw, shown, "the registry has the list as the store had it");
    assert_eq!(m.reg.skopeo_digest("stitched/app:1"), pushed);
    let read = m.reg.podman_manifest_inspect(&dest);
    let mut digests: Vec<&str> = read["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut want = vec![
        m.host.manifest_digest.as_str(),
        m.other.manifest_digest.as_str(),
    ];
    want.sort();
    assert_eq!(digests, want);
    // inspect of the registry's copy, and rm of the list's name only.
    let remote: serde_json::Value =
        serde_json::from_str(&must(env.cairn(&st, &["manifest", "inspect", &dest]))).unwrap();
    assert_eq!(remote, shown);
    must(env.cairn(&st, &["manifest", "rm", "local/list:1"]));
    must_fail(
        env.cairn(&st, &["manifest", "exists", "local/list:1"]),
        "exists of a removed list",
    );
    inspect(&env, &st, "local/other:1", None);
    let e = must_fail(
        env.cairn(&st, &["manifest", "rm", "local/other:1"]),
        "manifest rm of an image",
    );
    assert!(e.contains("not a manifest list"), "{e}");
}

/// cairn run of a list runs the host's image; --platform picks the entry, and one the store
/// lacks is an error saying how to get it.
#[test]
fn run_picks_the_platform_of_an_index() {
    let st = loaded_busybox();
    let env = ClientEnv::new();
    must(env.cairn(&st, &["manifest", "create", "bb-list", "busybox"]));
    let out = must(env.cairn(&st, &["run", "--rm", "bb-list", "echo", "from the list"]));
    assert_eq!(out, "from the list");
    let host = format!("linux/{}", host_arch());
    let out = must(env.cairn(
        &st,
        &["run", "--rm", "--platform", &host, "bb-list", "true"],
    ));
    assert_eq!(out, "");
    let other = format!("linux/{}", other_arch());
    let e = must_fail(
        env.cairn(
            &st,
            &["run", "--rm", "--platform", &other, "bb-list", "true"],
        ),
        "run of a platform the list lacks",
    );
    assert!(e.contains(&other), "{e}");
}
