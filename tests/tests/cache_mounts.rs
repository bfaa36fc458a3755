//! Cache mounts that travel (`--cache-to …,mounts=true`): exported with the cache, restored on a
//! fresh store by `--cache-from`, the same blob for an unchanged mount, the least recently used
//! left out over the size cap, a hostile mount blob refused, and `apt-get install` on a fresh
//! store downloading no package once its caches were imported.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::registry::{ClientEnv, Options, Registry, must_run, sha256};
use cairn_e2e::{Store, context, loaded_busybox, ok, texts};

/// Finds out whether the cache mount `x` held a file when the step ran, and leaves one.
const DOCKERFILE: &str = "FROM busybox\n\
    RUN --mount=type=cache,target=/c,id=x sh -c 'if test -f /c/seen; then echo FOUND-$((2+3)); \
    else echo MISS-$((1+1)); date > /c/seen; fi'\n";

fn build(s: &Store, ctx: &Path, args: &[&str]) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    texts(&ok(c)).1
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The cache config of a layout that `--cache-to type=local` wrote.
fn cache_config(dir: &Path) -> serde_json::Value {
    let blob = |d: &serde_json::Value| {
        dir.join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(&dir.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    json(&blob(&manifest["config"]["digest"]))
}

/// (id, blob digest) of each mount in a cache config.
fn mounts(config: &serde_json::Value) -> Vec<(String, String)> {
    config["mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
                    (s(&m["id"]), s(&m["layer"]["digest"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cache_mounts_travel_through_a_local_cache() {
    let ctx = context(DOCKERFILE);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let local = format!("type=local,dest={},mounts=true", cache.display());
    let a = loaded_busybox();
    let first = build(&a, ctx.path(), &["--cache-to", &local]);
    assert!(first.contains("MISS-2"), "{first}");
    let exported = mounts(&cache_config(&cache));
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0].0, "x");

    // A fresh store: the step runs (--no-cache) and finds what the first build left.
    let b = loaded_busybox();
    let from = format!("type=local,src={}", cache.display());
    let again = dir.path().join("again");
    let to = format!("type=local,dest={},mounts=true", again.display());
    let second = build(
        &b,
        ctx.path(),
        &["--no-cache", "--cache-from", &from, "--cache-to", &to],
    );
    assert!(second.contains("FOUND-5"), "{second}");
    assert!(!second.contains("MISS-2"), "{second}");
    // Restored as it was, it exports to the same blob; so does the first store's, unchanged.
    assert_eq!(mounts(&cache_config(&again)), exported);
    let third = dir.path().join("third");
    let to = format!("type=local,dest={},mounts=true", third.display());
    build(&a, ctx.path(), &["--no-cache", "--cache-to", &to]);
    assert_eq!(mounts(&cache_config(&third)), exported);

    // Without mounts=true, no mount travels.
    let plain = dir.path().join("plain");
    let to = format!("type=local,dest={}", plain.display());
    build(&a, ctx.path(), &["--cache-to", &to]);
    assert!(mounts(&cache_config(&plain)).is_empty());

    // A step that is a hit names its mounts too: a CI run that changed nothing keeps them.
    let c = loaded_busybox();
    let hits = dir.path().join("hits");
    let to = format!("type=local,dest={},mounts=true", hits.display());
    let out = build(&c, ctx.path(), &["--cache-from", &from, "--cache-to", &to]);
    assert!(out.contains("CACHED"), "{out}");
    assert!(!out.contains("MISS-2") && !out.contains("FOUND-5"), "{out}");
    assert_eq!(mounts(&cache_config(&hits)), exported);
}

#[test]
fn cache_mounts_travel_through_a_registry() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let ctx = context(DOCKERFILE);
    let cache = reg.image("cache/mounts:1");
    let run = |s: &Store, args: &[&str]| {
        let mut c = env.cairn(s, &["build", "--progress", "plain"]);
        c.args(args).arg(ctx.path());
        must_run(c, &reg).1
    };
    let to = format!("type=registry,ref={cache},mounts=true");
    let first = run(&loaded_busybox(), &["--cache-to", &to]);
    assert!(first.contains("MISS-2"), "{first}");
    let manifest = reg.skopeo_manifest("cache/mounts:1");

    let from = format!("type=registry,ref={cache}");
    let fresh = loaded_busybox();
    let second = run(
        &fresh,
        &["--no-cache", "--cache-from", &from, "--cache-to", &to],
    );
    assert!(second.contains("FOUND-5"), "{second}");
    assert!(!second.contains("MISS-2"), "{second}");
    // The mount is one of the cache's layers, and re-exported unchanged it is the same one.
    let again = reg.skopeo_manifest("cache/mounts:1");
    let (before, after) = (
        registry_mounts(&reg, &manifest),
        registry_mounts(&reg, &again),
    );
    assert_eq!(before.len(), 1, "{manifest}");
    assert_eq!(before, after);
    let digest = &before[0].1;
    let has = |m: &serde_json::Value| {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["digest"] == digest.as_str())
    };
    assert!(has(&manifest) && has(&again), "{manifest}\n{again}");
}

/// The mounts of a cache manifest in `reg`, its config read from the registry's storage.
fn registry_mounts(reg: &Registry, manifest: &serde_json::Value) -> Vec<(String, String)> {
    let hex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let data = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    mounts(&json(&data))
}

#[test]
fn the_least_recently_used_mounts_are_left_out_over_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    // Two mounts of 100 kB of noise each, which gzip cannot shrink.
    let both = context(
        "FROM busybox\n\
         RUN --mount=type=cache,target=/a,id=old head -c 100000 /dev/urandom > /a/noise\n\
         RUN --mount=type=cache,target=/b,id=new head -c 100000 /dev/urandom > /b/noise\n",
    );
    let s = loaded_busybox();
    let all = dir.path().join("all");
    let to = format!("type=local,dest={},mounts=true", all.display());
    build(&s, both.path(), &["--cache-to", &to]);
    let ids = |c: &Path| {
        let mut v: Vec<String> = mounts(&cache_config(c)).into_iter().map(|m| m.0).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&all), ["new", "old"]);

    // A later build uses only `new`: `old`, carried from the import, is the older one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let only_new = context(
        "FROM busybox\n\
         RUN --mount=type=cache,target=/b,id=new ls -l /b/noise\n",
    );
    let capped = dir.path().join("capped");
    let from = format!("type=local,src={}", all.display());
    let to = format!(
        "type=local,dest={},mounts=true,mounts-max-size=150k",
        capped.display()
    );
    let out = build(
        &loaded_busybox(),
        only_new.path(),
        &["--cache-from", &from, "--cache-to", &to],
    );
    assert_eq!(ids(&capped), ["new"]);
    assert!(
        out.contains("cache mount old") && out.contains("left out"),
        "{out}"
    );
    // With room for both, the carried one travels on.
    let roomy = dir.path().join("roomy");
    let to = format!("type=local,dest={},mounts=true", roomy.display());
    build(
        &loaded_busybox(),
        only_new.path(),
        &["--cache-from", &from, "--cache-to", &to],
    );
    assert_eq!(ids(&roomy), ["new", "old"]);
}

/// A tar of `entries` (name, symlink target or None for an empty file) with raw names.
fn crafted_tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if link.is_some() {
            tar::EntryType::Symlink
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(0o644);
        h.set_size(0);
        // The tar crate's setters refuse `..`: an attacker's tool does not.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Replaces the one mount of the cache layout at `dir` with `tar` (its records made to match,
/// as an attacker who writes the whole cache would).
fn replace_mount(dir: &Path, tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        d
    };
    let index_path = dir.join("index.json");
    let mut index = json(&index_path);
    let blob =
        |d: &serde_json::Value| blobs.join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let mut manifest = json(&blob(&index["manifests"][0]["digest"]));
    let mut config = json(&blob(&manifest["config"]["digest"]));
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": put(tar),
        "size": tar.len(),
    });
    let m = &mut config["mounts"][0];
    m["layer"] = layer.clone();
    m["diff_id"] = sha256(tar).into();
    m["size"] = tar.len().into();
    manifest["layers"].as_array_mut().unwrap().push(layer);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put(&config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = put(&manifest_bytes).into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_hostile_mount_blob_writes_nothing_outside_its_directory() {
    let ctx = context(DOCKERFILE);
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_link = outside.display().to_string();
    let cases: [&[(&str, Option<&str>)]; 3] = [
        &[("../../escaped", None)],
        &[("/escaped", None)],
        &[
            ("link", Some(outside_link.as_str())),
            ("link/escaped", None),
        ],
    ];
    for entries in cases {
        let cache = dir.path().join("cache");
        let _ = fs::remove_dir_all(&cache);
        let to = format!("type=local,dest={},mounts=true", cache.display());
        build(&loaded_busybox(), ctx.path(), &["--cache-to", &to]);
        replace_mount(&cache, &crafted_tar(entries));

        let s = loaded_busybox();
        let from = format!("type=local,src={}", cache.display());
        let out = build(&s, ctx.path(), &["--no-cache", "--cache-from", &from]);
        // Refused whole: the step starts with an empty cache, and says why.
        assert!(out.contains("MISS-2"), "{entries:?}\n{out}");
        assert!(
            out.contains("cache mount x is not restored") && out.contains("refused"),
            "{entries:?}\n{out}"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{entries:?}");
        let found = walk(s.root.parent().unwrap())
            .into_iter()
            .chain(walk(Path::new("/escaped")))
            .find(|p| p.file_name().is_some_and(|n| n == "escaped"));
        assert_eq!(found, None, "{entries:?}");
    }
}

/// Every path below `dir` (or `dir` itself when it is not a directory but exists).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Vec::new();
    };
    if !meta.is_dir() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// `apt-get install` with its caches mounted: a fresh store that imported them downloads no
/// package. apt says what it fetched ("Need to get 0 B/… of archives", no `Get:` line of a
/// package): the step's network never reaches the host's loopback, where a counting proxy
/// would listen, so apt's own account is the count.
#[test]
fn apt_get_on_a_fresh_store_downloads_no_package_after_the_import() {
    let archive = cairn_e2e::docker::debian_archive();
    let debian = || {
        let s = Store::new();
        s.run(&["load", "-i", archive.to_str().unwrap(), "-t", "debian"]);
        s
    };
    let ctx = context(
        "FROM debian\n\
         RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
         --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
         rm -f /etc/apt/apt.conf.d/docker-clean; \
         apt-get update && apt-get install -y --no-install-recommends jq xz-utils\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},mounts=true", cache.display());
    let first = build(&debian(), ctx.path(), &["--cache-to", &to]);
    let packages = |out: &str| {
        out.lines()
            .filter(|l| l.contains(" Get:") && l.contains(" amd64 "))
            .count()
    };
    assert!(packages(&first) >= 2, "{first}");
    assert_eq!(mounts(&cache_config(&cache)).len(), 2);

    let from = format!("type=local,src={}", cache.display());
    let second = build(
        &debian(),
        ctx.path(),
        &["--no-cache", "--cache-from", &from],
    );
    assert_eq!(packages(&second), 0, "{second}");
    assert!(second.contains("Need to get 0 B/"), "{second}");
    assert!(second.contains("Setting up jq"), "{second}");

    // Without the import, the same build downloads them again.
    let third = build(&debian(), ctx.path(), &["--no-cache"]);
    assert_eq!(packages(&third), packages(&first), "{third}");
}
