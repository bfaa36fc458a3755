//! The registry client against a real docker-registry (push, pull, chunks, mounts, indexes,
//! digests, Basic auth) and against a scripted server that corrupts and breaks transfers.

// Helpers outside #[test] functions panic on broken fixtures too.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_layers::image::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, ImageConfig, Index, Manifest,
    OCI_INDEX, OCI_MANIFEST, Platform,
};
use cairn_layers::registry::{self, Client, Event, Registry, RegistryConfig};
use cairn_layers::{Digest, Reference};
use support::*;

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn done_count(events: &[Event]) -> (usize, usize, usize) {
    let mut uploaded = 0;
    let mut mounted = 0;
    let mut skipped = 0;
    for e in events {
        match e {
            Event::BlobDone { mounted: true, .. } => mounted += 1,
            Event::BlobDone { .. } => uploaded += 1,
            Event::BlobSkipped { .. } => skipped += 1,
            _ => {}
        }
    }
    (uploaded, mounted, skipped)
}

#[test]
fn registry_push_pull_round_trip() {
    let reg = TestRegistry::start();
    let (_a, src) = store();
    let desc = image(&src, 1, &[1000, 20_000], "amd64");
    let opts = opts();
    let ev = Events::default();
    let dest = r(&format!("{}/app:1", reg.addr));
    let pushed = registry::push(&src, &desc, &dest, &opts, &ev.sink()).unwrap();
    assert_eq!(pushed, desc.digest);
    assert_eq!(
        done_count(&ev.take()),
        (3, 0, 0),
        "config and two layers uploaded"
    );

    // Again: the registry has every blob, nothing is uploaded.
    let again = registry::push(&src, &desc, &dest, &opts, &ev.sink()).unwrap();
    assert_eq!(again, desc.digest);
    assert_eq!(done_count(&ev.take()), (0, 0, 3));

    let (_b, dst) = store();
    let pulled = registry::pull(&dst, &dest, &opts, &ev.sink()).unwrap();
    assert_eq!(pulled.digest, desc.digest);
    assert_eq!(pulled.media_type, OCI_MANIFEST);
    let events = ev.take();
    assert!(events.contains(&Event::ManifestStored {
        digest: desc.digest.clone()
    }));
    assert_eq!(done_count(&events), (3, 0, 0));
    let img = dst
        .image(&dst.resolve(&dest.to_string()).unwrap().1)
        .unwrap();
    assert_eq!(img.id(), src.image(&desc).unwrap().id());
    assert!(dst.fsck().unwrap().problems.is_empty());

    // Pulled again: only the manifest is fetched.
    registry::pull(&dst, &dest, &opts, &ev.sink()).unwrap();
    assert_eq!(done_count(&ev.take()), (0, 0, 3));

    // A tag the registry does not have: its error code, named.
    let e = registry::pull(
        &dst,
        &r(&format!("{}/app:nope", reg.addr)),
        &opts,
        &ev.sink(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("MANIFEST_UNKNOWN") && e.contains("HTTP 404"),
        "{e}"
    );
    assert!(e.contains(&format!("{}/app", reg.addr)), "{e}");
}

#[test]
fn registry_chunked_upload_and_mount() {
    let reg = TestRegistry::start();
    let (_a, src) = store();
    let desc = image(&src, 2, &[10_000, 100], "amd64");
    let mut opts = opts();
    opts.chunk_threshold = 4096;
    opts.chunk_size = 3000;
    let ev = Events::default();
    let dest = r(&format!("{}/big/one:1", reg.addr));
    registry::push(&src, &desc, &dest, &opts, &ev.sink()).unwrap();
    assert_eq!(done_count(&ev.take()), (3, 0, 0));

    // Same registry, other repository: the store knows where the blobs are, so they mount.
    let other = r(&format!("{}/big/two:1", reg.addr));
    registry::push(&src, &desc, &other, &opts, &ev.sink()).unwrap();
    assert_eq!(done_count(&ev.take()), (0, 3, 0));

    let (_b, dst) = store();
    for d in [&dest, &other] {
        let pulled = registry::pull(&dst, d, &opts, &ev.sink()).unwrap();
        assert_eq!(pulled.digest, desc.digest);
    }
    let big = &src.image(&desc).unwrap().manifest.layers;
    for l in big {
        assert_eq!(
            dst.read_blob(&l.digest).unwrap(),
            src.read_blob(&l.digest).unwrap()
        );
    }
}

/// Pushes a hand-made manifest (any media type) and returns its descriptor.
fn push_raw(
    client: &Client,
    store: &cairn_layers::Store,
    manifest: &Manifest,
    media_type: &str,
    tag: Option<&str>,
) -> Descriptor {
    let opts = opts();
    let ev = Events::default();
    for b in std::iter::once(&manifest.config).chain(&manifest.layers) {
        client
            .push_blob(store, &b.digest, b.size, &[], &opts, &ev.sink())
            .unwrap();
    }
    let bytes = manifest.to_bytes();
    let digest = Digest::of(&bytes);
    client
        .put_manifest(
            tag.unwrap_or(digest.as_str()),
            &bytes,
            media_type,
            &ev.sink(),
        )
        .unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

#[test]
fn registry_index_platforms_docker_types_and_digests() {
    let reg = TestRegistry::start();
    let (_a, src) = store();
    let opts = opts();
    let ev = Events::default();
    let registry = Arc::new(Registry::new(&reg.addr, false, &opts).unwrap());
    let client = Client::new(registry, "multi", true);

    // An OCI image for amd64, and a Docker schema 2 image for arm64/v8.
    let amd = image(&src, 3, &[500], "amd64");
    let amd_m = src.image(&amd).unwrap().manifest;
    let amd = push_raw(&client, &src, &amd_m, OCI_MANIFEST, None);
    let mut cfg = ImageConfig::scratch();
    cfg.architecture = "arm64".into();
    cfg.variant = Some("v8".into());
    let cfg_bytes = cfg.to_bytes();
    let layer = noise(4, 700);
    let layer_d = src.put_blob(&layer).unwrap();
    let arm_m = Manifest {
        schema_version: 2,
        media_type: Some(DOCKER_MANIFEST.into()),
        config: Descriptor {
            media_type: DOCKER_CONFIG.into(),
            digest: src.put_blob(&cfg_bytes).unwrap(),
            size: cfg_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
            digest: layer_d,
            size: 700,
            platform: None,
            annotations: BTreeMap::new(),
        }],
        annotations: BTreeMap::new(),
    };
    let arm = push_raw(&client, &src, &arm_m, DOCKER_MANIFEST, None);
    let plat = |arch: &str, variant: Option<&str>| Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
    };
    for (tag, list_type) in [("oci", OCI_INDEX), ("docker", DOCKER_MANIFEST_LIST)] {
        let mut index = Index::new(vec![
            Descriptor {
                platform: Some(plat("amd64", None)),
                ..amd.clone()
            },
            Descriptor {
                platform: Some(plat("arm64", Some("v8"))),
                ..arm.clone()
            },
        ]);
        index.media_type = Some(list_type.into());
        client
            .put_manifest(tag, &index.to_bytes(), list_type, &ev.sink())
            .unwrap();
    }

    let cases: &[(&str, Option<Platform>, &Descriptor)] = &[
        ("oci", Some(plat("amd64", None)), &amd),
        ("oci", Some(plat("arm64", None)), &arm),
        ("docker", Some(plat("arm64", Some("v8"))), &arm),
        ("docker", Some(plat("amd64", None)), &amd),
    ];
    for (tag, platform, want) in cases {
        let (_b, dst) = store();
        let mut o = opts.clone();
        o.platform = platform.clone();
        let name = r(&format!("{}/multi:{tag}", reg.addr));
        let got = registry::pull(&dst, &name, &o, &ev.sink()).unwrap();
        assert_eq!(got.digest, want.digest, "{tag} {platform:?}");
        assert_eq!(got.media_type, want.media_type, "{tag} {platform:?}");
        // Stored verbatim: the registry's digest is the store's.
        assert_eq!(
            Digest::of(&dst.read_blob(&got.digest).unwrap()),
            want.digest
        );
        dst.image(&got).unwrap();
    }
    let mut o = opts.clone();
    o.platform = Some(plat("s390x", None));
    let e = registry::pull(
        &store().1,
        &r(&format!("{}/multi:oci", reg.addr)),
        &o,
        &ev.sink(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("linux/s390x") && e.contains("linux/arm64/v8"),
        "{e}"
    );

    // By digest: no tag, still resolvable by the reference.
    let (_c, dst) = store();
    let by_digest = r(&format!("{}/multi@{}", reg.addr, arm.digest));
    let got = registry::pull(&dst, &by_digest, &opts, &ev.sink()).unwrap();
    assert_eq!(got.digest, arm.digest);
    assert_eq!(
        dst.resolve(&by_digest.to_string()).unwrap().1.digest,
        arm.digest
    );
    assert_eq!(
        dst.resolve(arm.digest.as_str()).unwrap().1.digest,
        arm.digest
    );
    let missing = r(&format!("{}/multi@{}", reg.addr, Digest::of(b"nothing")));
    let e = registry::pull(&dst, &missing, &opts, &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("MANIFEST_UNKNOWN"), "{e}");
}

#[test]
fn registry_basic_auth() {
    let reg = TestRegistry::start_with_auth(Some(("alice", "s3cret")));
    let (_a, src) = store();
    let desc = image(&src, 5, &[300], "amd64");
    let ev = Events::default();
    let dest = r(&format!("{}/private:1", reg.addr));
    let dir = tempfile::tempdir().unwrap();
    // An empty auth file: nothing from the environment leaks in.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();

    let mut anon = opts();
    anon.authfile = Some(empty.clone());
    let e = registry::push(&src, &desc, &dest, &anon, &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("UNAUTHORIZED") && e.contains("401"), "{e}");

    let mut wrong = anon.clone();
    wrong.creds = Some(("alice".into(), "nope".into()));
    let e = registry::login(
        &reg.addr,
        &registry::Credentials::new("alice", "nope"),
        &wrong,
        &ev.sink(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("UNAUTHORIZED"), "{e}");

    // login checks and writes the auth file; push and pull then find the credentials there.
    let authfile = dir.path().join("auth.json");
    let mut with_file = opts();
    with_file.authfile = Some(authfile.clone());
    registry::login(
        &format!("https://{}/", reg.addr),
        &registry::Credentials::new("alice", "s3cret"),
        &with_file,
        &ev.sink(),
    )
    .unwrap();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).unwrap()).unwrap();
    assert!(saved["auths"][&reg.addr]["auth"].is_string(), "{saved}");
    registry::push(&src, &desc, &dest, &with_file, &ev.sink()).unwrap();
    let (_b, dst) = store();
    registry::pull(&dst, &dest, &with_file, &ev.sink()).unwrap();

    registry::logout(&reg.addr, Some(&authfile)).unwrap();
    assert!(registry::logout(&reg.addr, Some(&authfile)).is_err());
    let (_c, dst) = store();
    let e = registry::pull(&dst, &dest, &with_file, &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("UNAUTHORIZED"), "{e}");
}

#[test]
fn registry_mirrors_then_location() {
    let reg = TestRegistry::start();
    let (_a, src) = store();
    let desc = image(&src, 6, &[400], "amd64");
    let ev = Events::default();
    let opts0 = opts();
    registry::push(
        &src,
        &desc,
        &r(&format!("{}/library/app:1", reg.addr)),
        &opts0,
        &ev.sink(),
    )
    .unwrap();
    // A mirror that is down, then the (rewritten) location that has it.
    let dead = TestRegistry::start();
    let dead_addr = dead.addr.clone();
    drop(dead);
    let text = format!(
        "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{}\"\n\
         [[registry.mirror]]\nlocation = \"{dead_addr}\"\n",
        reg.addr
    );
    let mut o = opts();
    o.config = Arc::new(RegistryConfig::parse(&text, std::path::Path::new("c.toml")).unwrap());
    let (_b, dst) = store();
    let got = registry::pull(&dst, &r("app:1"), &o, &ev.sink()).unwrap();
    assert_eq!(got.digest, desc.digest);
    assert!(ev.take().iter().any(
        |e| matches!(e, Event::MirrorFailed { endpoint, .. } if endpoint.starts_with(&dead_addr))
    ));
    // Tagged by the name asked for, not the rewritten one.
    assert_eq!(
        dst.resolve("docker.io/library/app:1").unwrap().1.digest,
        desc.digest
    );
    // Missing everywhere: every place's error is reported.
    let e = registry::pull(&dst, &r("app:2"), &o, &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&dead_addr) && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
}

/// A scripted registry serving one image whose layer the `layer` closure answers for.
fn serve_image(
    layer_bytes: Vec<u8>,
    served: impl Fn(&Seen, &[u8], usize) -> Reply + Send + 'static,
) -> (String, Digest, Arc<std::sync::Mutex<Vec<Seen>>>) {
    let cfg = ImageConfig::scratch().to_bytes();
    let config = Descriptor {
        media_type: cairn_layers::image::OCI_CONFIG.into(),
        digest: Digest::of(&cfg),
        size: cfg.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let layer = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: Digest::of(&layer_bytes),
        size: layer_bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let manifest = Manifest::new(config.clone(), vec![layer.clone()]).to_bytes();
    let layer_digest = layer.digest.clone();
    let tries = AtomicUsize::new(0);
    let (addr, seen) = scripted_server(move |req, _| {
        let p = req.path.as_str();
        if p == "/v2/" {
            Reply::ok("application/json", b"{}".to_vec())
        } else if p.ends_with("/manifests/1") {
            Reply::ok(OCI_MANIFEST, manifest.clone())
        } else if p.ends_with(config.digest.as_str()) {
            Reply::ok("application/octet-stream", cfg.clone())
        } else if p.ends_with(layer.digest.as_str()) {
            served(req, &layer_bytes, tries.fetch_add(1, Ordering::SeqCst))
        } else {
            Reply::not_found()
        }
    });
    (addr, layer_digest, seen)
}

#[test]
fn registry_corrupt_blob_is_refused_and_nothing_kept() {
    for same_size in [true, false] {
        let bytes = noise(7, 5000);
        let (addr, digest, _) = serve_image(bytes, move |_, b, _| {
            let mut bad = b.to_vec();
            if same_size {
                bad[100] ^= 0xff;
            } else {
                bad.extend_from_slice(b"trailing");
            }
            Reply::ok("application/octet-stream", bad)
        });
        let (_a, dst) = store();
        let ev = Events::default();
        let e = registry::pull(&dst, &r(&format!("{addr}/x:1")), &opts(), &ev.sink())
            .unwrap_err()
            .to_string();
        let want = format!("blob {digest} from {addr}/x does not match its digest: got sha256:");
        assert!(e.contains(&want), "{e}");
        assert!(!dst.has_blob(&digest));
        assert!(files_under(&dst.tmp_dir()).is_empty(), "temp files left");
        assert!(dst.tags().unwrap().is_empty());
    }
}

#[test]
fn registry_broken_transfer_resumes() {
    // Cut after 3000 bytes, then honour Range: two requests, the second from byte 3000.
    let bytes = noise(8, 10_000);
    let (addr, digest, seen) = serve_image(bytes.clone(), |req, b, n| {
        if n == 0 {
            let mut r = Reply::ok("application/octet-stream", b.to_vec());
            r.cut = Some(3000);
            return r;
        }
        let from: usize = req
            .headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        let mut r = Reply::ok("application/octet-stream", b[from..].to_vec());
        r.status = 206;
        r.headers.push((
            "Content-Range".into(),
            format!("bytes {from}-{}/{}", b.len() - 1, b.len()),
        ));
        r
    });
    let (_a, dst) = store();
    let ev = Events::default();
    registry::pull(&dst, &r(&format!("{addr}/x:1")), &opts(), &ev.sink()).unwrap();
    assert_eq!(dst.read_blob(&digest).unwrap(), bytes);
    let ranges: Vec<Option<String>> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.ends_with(digest.as_str()))
        .map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, vec![None, Some("bytes=3000-".into())]);
    assert!(
        ev.take()
            .iter()
            .any(|e| matches!(e, Event::Retrying { .. }))
    );

    // A server that ignores Range: the blob starts over and still comes out right.
    let (addr, digest, _) = serve_image(bytes.clone(), |_, b, n| {
        let mut r = Reply::ok("application/octet-stream", b.to_vec());
        if n == 0 {
            r.cut = Some(4000);
        }
        r
    });
    let (_b, dst) = store();
    registry::pull(&dst, &r(&format!("{addr}/x:1")), &opts(), &ev.sink()).unwrap();
    assert_eq!(dst.read_blob(&digest).unwrap(), bytes);
}
