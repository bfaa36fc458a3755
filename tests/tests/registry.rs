//! Registries through the real binary: cairn pull/push/login/logout and registry builds, against the real docker-registry, with skopeo as the other client.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Output, Stdio};

use cairn_e2e::registry::{
    Auth, ClientEnv, Fault, FaultProxy, LayoutImage, Options, Registry, build_big, build_small,
    host_arch, inspect, make_layout, noise, skopeo, store_names,
};
use cairn_e2e::{Store, busybox_layout, ok, texts, umoci_unpack};

// ---- the harness itself, proven with skopeo (these pass without cairn's registry commands)

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// A small hand-made image (not made by cairn), in its own layout.
fn hand_made(dir: &Path, tag: &str, content: &[u8]) -> LayoutImage {
    make_layout(
        &dir.join(format!("layout-{tag}")),
        tag,
        host_arch(),
        &[("hello.txt", content), ("etc/motd", b"made by hand\n")],
    )
}

fn fails(out: &Output, what: &str) -> String {
    let (stdout, stderr) = texts(out);
    assert!(
        !out.status.success(),
        "{what} should have failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stderr
}

#[test]
fn harness_serves_skopeo_in_every_setup() {
    let dir = tempfile::tempdir().unwrap();
    let img = hand_made(dir.path(), "1", b"hello through the harness\n");
    let setups = [
        ("anonymous", Auth::None, false),
        ("basic", Auth::basic("alice", "s3cret"), false),
        ("token", Auth::token("bob", "t0ken-pass"), false),
        ("tls", Auth::None, true),
        ("tls+basic", Auth::basic("carol", "pw"), true),
        ("tls+token", Auth::token("dave", "pw2"), true),
    ];
    for (name, auth, tls) in setups {
        let reg = Registry::start(Options {
            auth: auth.clone(),
            tls,
        });
        let digest = reg.skopeo_push(&img.skopeo_ref(), "harness/img:1");
        assert_eq!(digest, img.manifest_digest, "{name}");
        assert_eq!(reg.skopeo_digest("harness/img:1"), digest, "{name}");
        // And back out into a layout, intact.
        let back = dir.path().join(format!("back-{name}"));
        let mut args = s(&["copy", "--preserve-digests"]);
        args.extend(reg.skopeo_flags("src-"));
        args.push(format!("docker://{}", reg.image("harness/img:1")));
        args.push(format!("oci:{}:1", back.display()));
        reg.skopeo_ok(&args);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(back.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            img.manifest_digest.as_str()
        );
        assert!(
            back.join("blobs/sha256")
                .join(&img.layer_digest[7..])
                .is_file(),
            "{name}"
        );

        // The protections are real: no or wrong credentials, an unknown CA, are refused.
        let tls_flag = if tls {
            format!("--cert-dir={}", reg.ca_dir().display())
        } else {
            "--tls-verify=false".to_owned()
        };
        let target = format!("docker://{}", reg.image("harness/img:1"));
        if let Some((user, _)) = auth.creds().as_deref().and_then(|c| c.split_once(':')) {
            let out = skopeo(&s(&["inspect", "--no-creds", &tls_flag, &target]))
                .output()
                .unwrap();
            let err = fails(&out, &format!("{name}: anonymous inspect"));
            assert!(
                err.to_lowercase().contains("unauthorized")
                    || err.contains("authentication required"),
                "{name}: {err}"
            );
            let wrong = format!("--creds={user}:wrong");
            let out = skopeo(&s(&["inspect", &wrong, &tls_flag, &target]))
                .output()
                .unwrap();
            fails(&out, &format!("{name}: inspect with a wrong password"));
        }
        if let Auth::Token { .. } = auth {
            let log = reg.token_server().requests();
            assert!(
                log.iter()
                    .any(|l| l.contains("push") && l.ends_with("-> 200")),
                "{name}: tokens for push were issued: {log:?}"
            );
            assert!(
                log.iter().any(|l| l.ends_with("-> 401")),
                "{name}: the wrong password was refused: {log:?}"
            );
        }
        if tls {
            let creds = auth
                .creds()
                .map(|c| format!("--creds={c}"))
                .unwrap_or_else(|| "--no-creds".to_owned());
            let out = skopeo(&s(&["inspect", &creds, &target])).output().unwrap();
            let err = fails(&out, &format!("{name}: inspect without the CA"));
            assert!(err.contains("certificate"), "{name}: {err}");
        }
    }
}

#[test]
fn harness_proxy_records_and_corrupts_blob_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let img = hand_made(dir.path(), "1", &noise(256 << 10, 7));
    let reg = Registry::start(Options::default());
    reg.skopeo_push(&img.skopeo_ref(), "proxied/img:1");
    let pull = |proxy: &FaultProxy, to: &str| {
        skopeo(&s(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}", proxy.image("proxied/img:1")),
            &format!("oci:{}:1", dir.path().join(to).display()),
        ]))
        .output()
        .unwrap()
    };

    let clean = FaultProxy::start(&reg.addr(), Fault::None);
    let out = pull(&clean, "clean");
    assert!(out.status.success(), "{}", texts(&out).1);
    let seen = clean.requests();
    for digest in [&img.layer_digest, &img.config_digest] {
        assert!(
            seen.iter().any(|r| r.is_blob_download()
                && r.path.ends_with(digest.as_str())
                && r.status == 200),
            "{digest} was fetched through the proxy:\n{}",
            clean.requests_text()
        );
    }
    clean.clear();
    assert!(clean.requests().is_empty());

    let corrupt = FaultProxy::start(&reg.addr(), Fault::CorruptBlobs);
    let out = pull(&corrupt, "corrupt");
    let err = fails(&out, "a pull of corrupted blobs");
    assert!(
        err.contains(&img.layer_digest) || err.contains(&img.config_digest),
        "skopeo names the blob: {err}"
    );
}

#[test]
fn harness_proxy_cuts_a_download_once() {
    let dir = tempfile::tempdir().unwrap();
    let img = hand_made(dir.path(), "1", &noise(4 << 20, 11));
    let reg = Registry::start(Options::default());
    reg.skopeo_push(&img.skopeo_ref(), "cut/img:1");
    let proxy = FaultProxy::start(&reg.addr(), Fault::CutBlobsAfter(1 << 20));
    let pull = |to: &str| {
        skopeo(&s(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}", proxy.image("cut/img:1")),
            &format!("oci:{}:1", dir.path().join(to).display()),
        ]))
        .output()
        .unwrap()
    };
    // skopeo may or may not retry the cut download itself; either way the cut happened, and a
    // pull after it (the fault is spent) is whole.
    let _ = pull("first");
    assert!(proxy.fault_fired(), "{}", proxy.requests_text());
    let out = pull("second");
    assert!(out.status.success(), "{}", texts(&out).1);
    let layer_gets = proxy
        .requests()
        .iter()
        .filter(|r| r.is_blob_download() && r.path.ends_with(img.layer_digest.as_str()))
        .count();
    assert!(layer_gets >= 2, "{}", proxy.requests_text());
}

#[test]
fn harness_registry_restarts_after_being_killed_mid_upload() {
    let dir = tempfile::tempdir().unwrap();
    let img = hand_made(dir.path(), "1", &noise(40 << 20, 3));
    let mut reg = Registry::start(Options::default());
    let proxy = FaultProxy::start(&reg.addr(), Fault::HoldUploadsAfter(1 << 20));
    let push = || {
        skopeo(&s(&[
            "copy",
            "--dest-tls-verify=false",
            &img.skopeo_ref(),
            &format!("docker://{}", proxy.image("big/img:1")),
        ]))
    };
    let child = push()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    proxy.wait_held();
    reg.stop();
    proxy.release();
    let out = child.wait_with_output().unwrap();
    fails(&out, "a push whose registry died");
    reg.restart();
    let out = push().output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        texts(&out).1,
        proxy.requests_text()
    );
    assert_eq!(reg.skopeo_digest("big/img:1"), img.manifest_digest);
}
