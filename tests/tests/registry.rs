//! Registries through the real binary: cairn pull/push/login/logout and registry builds, against the real docker-registry, with skopeo as the other client.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use cairn_e2e::registry::{
    Auth, ClientEnv, Fault, FaultProxy, LayoutImage, Options, Registry, base64_decode, build_big,
    build_small, host_arch, inspect, make_layout, noise, skopeo, store_names,
};
use cairn_e2e::{Store, busybox_layout, ok, run_with_stdin, texts, umoci_unpack};

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

/// Waits until `client`'s upload is held by the proxy; if the client ends first, shows why.
fn held_or_show(proxy: &FaultProxy, client: &mut Child) {
    if !proxy.wait_held(|| client.try_wait().unwrap().is_none()) {
        let mut stderr = String::new();
        if let Some(mut e) = client.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!(
            "the client ended ({:?}) before its upload reached the hold point\n--- stderr\n{stderr}\n--- requests\n{}",
            client.try_wait().unwrap(),
            proxy.requests_text()
        );
    }
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
    let mut child = push()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    held_or_show(&proxy, &mut child);
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

// ---- cairn against the registry (these need `cairn pull/push/login/logout`)

/// Runs a cairn command that must succeed; returns its stdout, trimmed. On failure shows its
/// output and the registry's log.
fn must(c: Command, reg: &Registry) -> String {
    cairn_e2e::registry::must_run(c, reg).0.trim().to_owned()
}

/// Runs a cairn command that must fail; returns its stderr.
fn must_fail(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap();
    fails(&out, what)
}

fn is_digest(s: &str) -> bool {
    s.len() == 71
        && s.starts_with("sha256:")
        && s[7..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// An unauthorised request's error: non-zero exit (checked by the caller), the registry, and the
/// status or the registry's error code.
fn assert_unauthorized(stderr: &str, addr: &str) {
    assert!(
        stderr.contains(addr),
        "the error names the registry: {stderr}"
    );
    assert!(
        stderr.contains("401") || stderr.contains("UNAUTHORIZED"),
        "the error says unauthorised: {stderr}"
    );
}

/// The reference name an OCI layout's index gives its (first) image.
fn layout_ref(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_owned()
}

/// Saves `name` from `store` as an OCI layout, unpacks it with umoci and returns the rootfs.
fn unpack(env: &ClientEnv, store: &Store, name: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("saved");
    let mut c = env.cairn(store, &["save", name, "--format", "oci-dir", "-o"]);
    c.arg(&layout);
    ok(c);
    let tag = layout_ref(&layout);
    umoci_unpack(&layout, &tag, &dir.join("bundle"))
}

#[test]
fn push_then_pull_round_trips_anonymously() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let src = Store::new();
    let name = reg.image("round/trip:1");
    let id = build_small(&src, &name);

    // Plain HTTP on 127.0.0.1 needs no flag.
    let digest = must(env.cairn(&src, &["push", &name]), &reg);
    assert!(
        is_digest(&digest),
        "stdout is only the manifest digest: {digest:?}"
    );
    let pushed = inspect(&env, &src, &name);
    assert_eq!(pushed["ManifestDigest"], digest.as_str());
    assert_eq!(pushed["Id"], id.as_str());
    assert_eq!(reg.skopeo_digest("round/trip:1"), digest);
    assert_eq!(
        reg.skopeo_manifest("round/trip:1")["config"]["digest"],
        id.as_str(),
        "the registry's manifest names cairn's config"
    );

    let dst = Store::new();
    let pulled = must(env.cairn(&dst, &["pull", &name]), &reg);
    assert_eq!(pulled, id, "stdout is only the image ID");
    let got = inspect(&env, &dst, &name);
    assert_eq!(got["Id"], id.as_str());
    assert_eq!(got["ManifestDigest"], digest.as_str());
    assert_eq!(got["RootFS"], pushed["RootFS"]);
    ok(env.cairn(&dst, &["fsck"]));

    // The files came through intact.
    let dir = tempfile::tempdir().unwrap();
    let rootfs = unpack(&env, &dst, &name, dir.path());
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hello from a registry test\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/app/config.toml")).unwrap(),
        "answer = 42\n"
    );

    // -q: the ID and nothing else, on a pull that has nothing to fetch.
    let out = env.cairn(&dst, &["pull", "-q", &name]).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), id);
    assert!(stderr.is_empty(), "-q prints no progress: {stderr}");

    // A tag the registry does not have: the reference, the status and the registry's code.
    let missing = reg.image("round/trip:nope");
    let err = must_fail(
        env.cairn(&dst, &["pull", &missing]),
        "pull of a missing tag",
    );
    assert!(err.contains(&missing), "{err}");
    assert!(
        err.contains("404") || err.contains("MANIFEST_UNKNOWN"),
        "{err}"
    );
}

#[test]
fn skopeo_and_cairn_exchange_images() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let dir = tempfile::tempdir().unwrap();

    // skopeo → cairn: an image cairn did not make.
    let img = hand_made(dir.path(), "1", b"pushed by skopeo\n");
    assert_eq!(
        reg.skopeo_push(&img.skopeo_ref(), "from/skopeo:1"),
        img.manifest_digest
    );
    let dst = Store::new();
    let name = reg.image("from/skopeo:1");
    assert_eq!(
        must(env.cairn(&dst, &["pull", &name]), &reg),
        img.config_digest
    );
    let got = inspect(&env, &dst, &name);
    assert_eq!(got["ManifestDigest"], img.manifest_digest.as_str());
    assert_eq!(got["RootFS"]["Layers"], serde_json::json!([img.diff_id]));
    let rootfs = unpack(&env, &dst, &name, &dir.path().join("u1"));
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "pushed by skopeo\n"
    );

    // skopeo → cairn: an image cairn made and saved, carried by skopeo.
    let src = Store::new();
    let id = build_small(&src, "local/app:1");
    let saved = dir.path().join("saved");
    let mut c = env.cairn(&src, &["save", "local/app:1", "--format", "oci-dir", "-o"]);
    c.arg(&saved);
    ok(c);
    let digest = reg.skopeo_push(
        &format!("oci:{}:{}", saved.display(), layout_ref(&saved)),
        "from/saved:1",
    );
    assert_eq!(digest, inspect(&env, &src, "local/app:1")["ManifestDigest"]);
    let dst2 = Store::new();
    assert_eq!(
        must(
            env.cairn(&dst2, &["pull", &reg.image("from/saved:1")]),
            &reg
        ),
        id
    );

    // cairn → skopeo.
    let name = reg.image("from/cairn:1");
    ok(env.cairn(&src, &["tag", "local/app:1", &name]));
    let digest = must(env.cairn(&src, &["push", &name]), &reg);
    let out = dir.path().join("by-skopeo");
    reg.skopeo_ok(&[
        "copy".to_owned(),
        "--preserve-digests".to_owned(),
        "--src-tls-verify=false".to_owned(),
        format!("docker://{name}"),
        format!("oci:{}:1", out.display()),
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    assert!(out.join("blobs/sha256").join(&id[7..]).is_file());
    let rootfs = umoci_unpack(&out, "1", &dir.path().join("u2"));
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hello from a registry test\n"
    );
}

#[test]
fn pull_picks_the_platform_from_an_index() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let host = host_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let mut images = Vec::new();
    for arch in [host, other] {
        let img = make_layout(
            &dir.path().join(arch),
            arch,
            arch,
            &[("arch.txt", format!("{arch}\n").as_bytes())],
        );
        assert_eq!(
            reg.skopeo_push(&img.skopeo_ref(), &format!("multi/app:{arch}")),
            img.manifest_digest
        );
        images.push((arch, img));
    }
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(arch, img)| img.index_entry(arch))
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    reg.put_manifest(
        "multi/app",
        "1",
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    let name = reg.image("multi/app:1");
    let (host_img, other_img) = (&images[0].1, &images[1].1);

    let s1 = Store::new();
    assert_eq!(
        must(env.cairn(&s1, &["pull", &name]), &reg),
        host_img.config_digest,
        "a default pull takes the host's platform ({host})"
    );
    let s2 = Store::new();
    let platform = format!("linux/{other}");
    assert_eq!(
        must(
            env.cairn(&s2, &["pull", "--platform", &platform, &name]),
            &reg
        ),
        other_img.config_digest
    );
    assert_eq!(inspect(&env, &s2, &name)["Architecture"], other);
    // Into the store that has the host's image: the name still names the index, which now
    // holds both; inspect shows the host's unless asked for the other.
    assert_eq!(
        must(
            env.cairn(&s1, &["pull", "--platform", &platform, &name]),
            &reg
        ),
        other_img.config_digest
    );
    assert_eq!(
        inspect(&env, &s1, &name)["Id"],
        host_img.config_digest.as_str()
    );
    let out = must(
        env.cairn(&s1, &["inspect", "--platform", &platform, &name]),
        &reg,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], other_img.config_digest.as_str());
    // A platform the index does not have.
    let err = must_fail(
        env.cairn(&Store::new(), &["pull", "--platform", "linux/s390x", &name]),
        "a pull for a missing platform",
    );
    assert!(err.contains("s390x"), "the error names the platform: {err}");
}

#[test]
fn pushing_or_pulling_again_moves_no_blob() {
    let reg = Registry::start(Options::default());
    let proxy = FaultProxy::start(&reg.addr(), Fault::None);
    let env = ClientEnv::new();
    let src = Store::new();
    let name = proxy.image("again/app:1");
    build_small(&src, &name);

    let first = must(env.cairn(&src, &["push", &name]), &reg);
    assert!(
        proxy.requests().iter().any(|r| r.is_blob_upload()),
        "the first push uploads:\n{}",
        proxy.requests_text()
    );
    proxy.clear();
    let second = must(env.cairn(&src, &["push", &name]), &reg);
    assert_eq!(second, first);
    let seen = proxy.requests();
    assert!(
        !seen.iter().any(|r| r.is_blob_upload()),
        "the second push uploads no blob:\n{}",
        proxy.requests_text()
    );
    assert!(
        seen.iter().filter(|r| r.is_manifest_put()).count() <= 1,
        "{}",
        proxy.requests_text()
    );

    let dst = Store::new();
    proxy.clear();
    let id = must(env.cairn(&dst, &["pull", &name]), &reg);
    assert!(
        proxy.requests().iter().any(|r| r.is_blob_download()),
        "the first pull downloads:\n{}",
        proxy.requests_text()
    );
    proxy.clear();
    assert_eq!(must(env.cairn(&dst, &["pull", &name]), &reg), id);
    assert!(
        !proxy.requests().iter().any(|r| r.is_blob_download()),
        "the second pull fetches no blob:\n{}",
        proxy.requests_text()
    );
}

#[test]
fn basic_auth_login_logout_and_credential_helpers() {
    let (user, pass) = ("alice", "wonder land");
    let reg = Registry::start(Options {
        auth: Auth::basic(user, pass),
        tls: false,
    });
    let addr = reg.addr();
    let env = ClientEnv::new();
    let src = Store::new();
    let name = reg.image("private/app:1");
    let id = build_small(&src, &name);

    let err = must_fail(
        env.cairn(&src, &["push", &name]),
        "a push without credentials",
    );
    assert_unauthorized(&err, &addr);
    // And says how to give it credentials.
    assert!(
        err.contains(&format!(
            "hint: the registry wants credentials: `cairn login {addr}`"
        )),
        "{err}"
    );

    // A wrong password is refused at login, and nothing is written.
    let c = env.cairn_bare(&["login", "-u", user, "--password-stdin", &addr]);
    let out = run_with_stdin(c, b"not it\n");
    let err = fails(&out, "a login with a wrong password");
    assert_unauthorized(&err, &addr);
    let config = env.docker_config().join("config.json");
    let has_entry = || {
        fs::read(&config)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["auths"].get(&addr).is_some())
    };
    assert!(!has_entry());

    let c = env.cairn_bare(&["login", "-u", user, "--password-stdin", &addr]);
    let out = run_with_stdin(c, format!("{pass}\n").as_bytes());
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}\n{}", reg.log());
    assert_eq!(stdout.trim(), "Login Succeeded");
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    let auth = saved["auths"][&addr]["auth"].as_str().unwrap_or_else(|| {
        panic!("config.json has auths.{addr}.auth: {saved}");
    });
    assert_eq!(
        base64_decode(auth).unwrap(),
        format!("{user}:{pass}").into_bytes()
    );

    let digest = must(env.cairn(&src, &["push", &name]), &reg);
    assert_eq!(reg.skopeo_digest("private/app:1"), digest);
    let dst = Store::new();
    assert_eq!(must(env.cairn(&dst, &["pull", &name]), &reg), id);

    ok(env.cairn_bare(&["logout", &addr]));
    assert!(!has_entry(), "logout removed the entry");
    let err = must_fail(
        env.cairn(&Store::new(), &["pull", &name]),
        "a pull after logout",
    );
    assert_unauthorized(&err, &addr);

    // --authfile, and REGISTRY_AUTH_FILE, instead of DOCKER_CONFIG.
    let authfile = env.path("auth.json");
    let af = authfile.to_str().unwrap();
    let out = env
        .cairn_bare(&["login", "-u", user, "-p", pass, "--authfile", af, &addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(!has_entry(), "--authfile leaves DOCKER_CONFIG alone");
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
    assert!(saved["auths"].get(&addr).is_some(), "{saved}");
    must(
        env.cairn(&Store::new(), &["pull", "--authfile", af, &name]),
        &reg,
    );
    let mut c = env.cairn(&Store::new(), &["pull", &name]);
    c.env("REGISTRY_AUTH_FILE", &authfile);
    must(c, &reg);
    ok(env.cairn_bare(&["logout", "--authfile", af, &addr]));
    let err = must_fail(
        env.cairn(&Store::new(), &["pull", "--authfile", af, &name]),
        "a pull after logout from the authfile",
    );
    assert_unauthorized(&err, &addr);

    // --creds, with nothing saved anywhere.
    let creds = format!("{user}:{pass}");
    must(
        env.cairn(&Store::new(), &["pull", "--creds", &creds, &name]),
        &reg,
    );

    // A credential helper on PATH, through credHelpers and then credsStore.
    let calls = env.path("helper-calls");
    let helper = env.bin().join("docker-credential-cairntest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             # Answers `get` for the test registry only, as docker-credential-* helpers do.\n\
             echo \"$1\" >>'{calls}'\n\
             [ \"$1\" = get ] || exit 1\n\
             read -r server\n\
             case \"$server\" in\n\
             *{addr}*) printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pass}\"}}\\n' \"$server\" ;;\n\
             *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
             esac\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    for config_json in [
        serde_json::json!({"credHelpers": {addr.clone(): "cairntest"}}),
        serde_json::json!({"credsStore": "cairntest"}),
    ] {
        fs::write(&config, config_json.to_string()).unwrap();
        let _ = fs::remove_file(&calls);
        let dst = Store::new();
        assert_eq!(
            must(env.cairn(&dst, &["pull", &name]), &reg),
            id,
            "{config_json}"
        );
        assert!(
            fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .any(|l| l == "get"),
            "the helper was asked: {config_json}"
        );
    }
}

#[test]
fn token_auth_round_trip() {
    let reg = Registry::start(Options {
        auth: Auth::token("bob", "t0ken"),
        tls: false,
    });
    let addr = reg.addr();
    let env = ClientEnv::new();
    let src = Store::new();
    let name = reg.image("tok/app:1");
    let id = build_small(&src, &name);

    let err = must_fail(
        env.cairn(&src, &["push", &name]),
        "a push without credentials",
    );
    assert_unauthorized(&err, &addr);
    let err = must_fail(
        env.cairn(&src, &["push", "--creds", "bob:wrong", &name]),
        "a push with a wrong password",
    );
    assert_unauthorized(&err, &addr);

    let digest = must(
        env.cairn(&src, &["push", "--creds", "bob:t0ken", &name]),
        &reg,
    );
    assert_eq!(reg.skopeo_digest("tok/app:1"), digest);
    let dst = Store::new();
    assert_eq!(
        must(
            env.cairn(&dst, &["pull", "--creds", "bob:t0ken", &name]),
            &reg
        ),
        id
    );
    assert_eq!(
        inspect(&env, &dst, &name)["ManifestDigest"],
        digest.as_str()
    );
    let tokens = reg.token_server().requests();
    assert!(
        tokens
            .iter()
            .any(|l| l.contains("user=bob") && l.contains("push") && l.ends_with("-> 200")),
        "cairn got a push token: {tokens:?}"
    );
}

#[test]
fn tls_with_the_test_ca() {
    let reg = Registry::start(Options {
        auth: Auth::None,
        tls: true,
    });
    let addr = reg.addr();
    let env = ClientEnv::new();
    let ca = reg.ca_dir();
    let ca = ca.to_str().unwrap();
    let src = Store::new();
    let name = reg.image("secure/app:1");
    let id = build_small(&src, &name);

    let err = must_fail(env.cairn(&src, &["push", &name]), "a push without the CA");
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.to_lowercase().contains("certificate"),
        "a certificate error, not a fallback to plain HTTP: {err}"
    );

    let digest = must(env.cairn(&src, &["push", "--cert-dir", ca, &name]), &reg);
    assert_eq!(reg.skopeo_digest("secure/app:1"), digest);
    assert_eq!(
        must(
            env.cairn(&Store::new(), &["pull", "--cert-dir", ca, &name]),
            &reg
        ),
        id
    );
    let err = must_fail(
        env.cairn(&Store::new(), &["pull", &name]),
        "a pull without the CA",
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(
        must(
            env.cairn(&Store::new(), &["pull", "--tls-verify=false", &name]),
            &reg
        ),
        id
    );

    // The per-registry certificate directory.
    let certs = env.xdg_config_home().join("cairn/certs.d").join(&addr);
    fs::create_dir_all(&certs).unwrap();
    fs::copy(reg.ca_dir().join("ca.crt"), certs.join("ca.crt")).unwrap();
    assert_eq!(must(env.cairn(&Store::new(), &["pull", &name]), &reg), id);
}

#[test]
fn push_survives_the_registry_dying_mid_upload() {
    let mut reg = Registry::start(Options::default());
    let proxy = FaultProxy::start(&reg.addr(), Fault::HoldUploadsAfter(1 << 20));
    let env = ClientEnv::new();
    let src = Store::new();
    let name = proxy.image("big/app:1");
    let id = build_big(&src, &name, 1);

    let mut child = env
        .cairn(&src, &["push", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    held_or_show(&proxy, &mut child);
    reg.stop();
    proxy.release();
    let out = child.wait_with_output().unwrap();
    let err = fails(&out, "a push whose registry died");
    assert!(
        err.contains(&proxy.addr()),
        "the error names the registry: {err}"
    );

    reg.restart();
    let digest = must(env.cairn(&src, &["push", &name]), &reg);
    assert_eq!(
        inspect(&env, &src, &name)["ManifestDigest"],
        digest.as_str()
    );
    assert_eq!(reg.skopeo_digest("big/app:1"), digest);
    let dst = Store::new();
    assert_eq!(
        must(env.cairn(&dst, &["pull", &reg.image("big/app:1")]), &reg),
        id
    );
    ok(env.cairn(&dst, &["fsck"]));
}

#[test]
fn a_corrupted_blob_is_refused_and_not_stored() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let src = Store::new();
    let name = reg.image("bad/app:1");
    build_small(&src, &name);
    must(env.cairn(&src, &["push", &name]), &reg);
    let manifest = reg.skopeo_manifest("bad/app:1");
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for l in manifest["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_owned());
    }

    let proxy = FaultProxy::start(&reg.addr(), Fault::CorruptBlobs);
    let dst = Store::new();
    let bad = proxy.image("bad/app:1");
    let err = must_fail(
        env.cairn(&dst, &["pull", &bad]),
        "a pull of corrupted blobs",
    );
    assert!(err.contains("does not match"), "{err}");
    assert!(
        blobs.iter().any(|d| err.contains(d.as_str())),
        "the error names the blob ({blobs:?}): {err}"
    );
    assert!(
        !store_names(&dst).keys().any(|n| n.contains("bad/app")),
        "{:?}",
        store_names(&dst)
    );
    for d in &blobs {
        assert!(
            !dst.root.join("blobs/sha256").join(&d[7..]).exists(),
            "{d} is not stored"
        );
    }
    if dst.root.exists() {
        let images = must(env.cairn(&dst, &["images"]), &reg);
        assert!(!images.contains("bad/app"), "{images}");
        ok(env.cairn(&dst, &["fsck"]));
    }
}

#[test]
fn a_cut_download_leaves_a_consistent_store() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let src = Store::new();
    let name = reg.image("cut/app:1");
    let id = build_big(&src, &name, 2);
    must(env.cairn(&src, &["push", &name]), &reg);

    let proxy = FaultProxy::start(&reg.addr(), Fault::CutBlobsAfter(4 << 20));
    let dst = Store::new();
    let via = proxy.image("cut/app:1");
    // cairn may resume or retry the cut download, or fail; if it fails it says where.
    let out = env.cairn(&dst, &["pull", &via]).output().unwrap();
    assert!(proxy.fault_fired(), "{}", proxy.requests_text());
    if out.status.success() {
        assert_eq!(texts(&out).0.trim(), id);
    } else {
        assert!(texts(&out).1.contains(&proxy.addr()), "{}", texts(&out).1);
    }
    if dst.root.exists() {
        ok(env.cairn(&dst, &["fsck"]));
    }
    assert_eq!(must(env.cairn(&dst, &["pull", &via]), &reg), id);
    ok(env.cairn(&dst, &["fsck"]));
}

#[test]
fn mirrors_are_tried_first_and_fall_back() {
    let a = Registry::start(Options::default());
    let mut b = Registry::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let in_a = hand_made(dir.path(), "a", b"from the rewritten location\n");
    let in_b = hand_made(dir.path(), "b", b"from the mirror\n");
    assert_ne!(in_a.config_digest, in_b.config_digest);
    a.skopeo_push(&in_a.skopeo_ref(), "library/testimg:1");
    b.skopeo_push(&in_b.skopeo_ref(), "library/testimg:1");

    let env = ClientEnv::new();
    let conf_dir = env.xdg_config_home().join("cairn");
    fs::create_dir_all(&conf_dir).unwrap();
    fs::write(
        conf_dir.join("config.toml"),
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            a.addr(),
            b.addr()
        ),
    )
    .unwrap();
    let reference = "docker.io/library/testimg:1";

    let s1 = Store::new();
    assert_eq!(
        must(env.cairn(&s1, &["pull", reference]), &b),
        in_b.config_digest,
        "the mirror first"
    );
    assert_eq!(
        inspect(&env, &s1, "testimg:1")["Id"],
        in_b.config_digest.as_str(),
        "stored under the normalised name"
    );

    b.stop();
    assert_eq!(
        must(env.cairn(&Store::new(), &["pull", reference]), &a),
        in_a.config_digest,
        "the location when the mirror is down"
    );

    // CAIRN_CONFIG names another file, which wins over XDG_CONFIG_HOME's.
    b.restart();
    let other = env.path("other.toml");
    fs::write(
        &other,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{}\"\ninsecure = true\n",
            a.addr()
        ),
    )
    .unwrap();
    let mut c = env.cairn(&Store::new(), &["pull", reference]);
    c.env("CAIRN_CONFIG", &other);
    assert_eq!(must(c, &a), in_a.config_digest);
}

/// Plain progress of one build: the `#N` ids of its COPY and RUN steps, and whether each hit.
fn steps_cached(stderr: &str) -> Vec<(String, bool)> {
    stderr
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(' ')?;
            let (_, instr) = rest.strip_prefix('[')?.split_once("] ")?;
            (instr.starts_with("COPY") || instr.starts_with("RUN"))
                .then(|| (id.to_owned(), instr.to_owned()))
        })
        .map(|(id, instr)| {
            let hit = stderr.lines().any(|l| l == format!("{id} CACHED"));
            (instr, hit)
        })
        .collect()
}

#[test]
fn builds_pull_push_and_share_cache_through_a_registry() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let busybox = reg.skopeo_push(
        &format!("oci:{}:latest", busybox_layout().display()),
        "base/busybox:1",
    );
    let base = reg.image("base/busybox:1");

    // FROM a registry image that is not in the store pulls it; --push pushes the tag.
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("app.txt"), "app\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.txt /app/\n"),
    )
    .unwrap();
    let s = Store::new();
    let app = reg.image("app/web:1");
    let mut c = env.cairn(&s, &["build", "-q", "--push", "-t", &app]);
    c.arg(&ctx);
    let id = must(c, &reg);
    assert_eq!(inspect(&env, &s, &base)["ManifestDigest"], busybox.as_str());
    // A push carries provenance: the ID is the index's digest, as the registry has it, and
    // the index's image is the stored image.
    let built = inspect(&env, &s, &app);
    assert_eq!(built["IndexDigest"], id.as_str());
    assert_eq!(reg.skopeo_digest("app/web:1"), id);
    let index = reg.skopeo_manifest("app/web:1");
    let image = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(image, built["ManifestDigest"].as_str().unwrap());
    assert_eq!(
        reg.skopeo_manifest(&format!("app/web@{image}"))["config"]["digest"],
        built["Id"]
    );

    // -o type=registry pushes without naming the image in the store.
    let out_ref = reg.image("app/out:1");
    let mut c = env.cairn(
        &s,
        &[
            "build",
            "-q",
            "-o",
            &format!("type=registry,name={out_ref}"),
        ],
    );
    c.arg(&ctx);
    let id2 = must(c, &reg);
    assert_eq!(reg.skopeo_digest("app/out:1"), id2);

    // --pull re-checks a moving tag; without it the stored base is used.
    let moving = reg.image("base/moving:1");
    reg.skopeo_push(
        &format!("oci:{}:latest", busybox_layout().display()),
        "base/moving:1",
    );
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {moving}\nCOPY app.txt /app/\n"),
    )
    .unwrap();
    let first_layer = |name: &str| inspect(&env, &s, name)["RootFS"]["Layers"][0].clone();
    let mut c = env.cairn(&s, &["build", "-q", "-t", "moving-app:1"]);
    c.arg(&ctx);
    must(c, &reg);
    let old = first_layer("moving-app:1");
    let replacement = hand_made(dir.path(), "moved", b"the tag moved\n");
    reg.skopeo_push(&replacement.skopeo_ref(), "base/moving:1");
    let mut c = env.cairn(&s, &["build", "-q", "-t", "moving-app:2"]);
    c.arg(&ctx);
    must(c, &reg);
    assert_eq!(
        first_layer("moving-app:2"),
        old,
        "no --pull: the stored base"
    );
    let mut c = env.cairn(&s, &["build", "-q", "--pull", "-t", "moving-app:3"]);
    c.arg(&ctx);
    must(c, &reg);
    assert_eq!(
        first_layer("moving-app:3"),
        replacement.diff_id.as_str(),
        "--pull: the registry's base"
    );

    // A registry cache: a fresh store rebuilds from it with every step a hit.
    let cctx = dir.path().join("cache-ctx");
    fs::create_dir_all(&cctx).unwrap();
    fs::write(cctx.join("a.txt"), "a\n").unwrap();
    fs::write(cctx.join("c.txt"), "c\n").unwrap();
    fs::write(
        cctx.join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && echo ran-$((40+2))\nCOPY c.txt /c.txt\n"
        ),
    )
    .unwrap();
    let cache = reg.image("cache/app:1");
    let build = |store: &Store, cache_flag: &str, cache_arg: String, iid: &Path| {
        let mut c = env.cairn(
            store,
            &["build", "--progress", "plain", cache_flag, &cache_arg],
        );
        c.arg("--iidfile").arg(iid).arg(&cctx);
        let out = c.output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}\n{}", reg.log());
        (stderr, fs::read_to_string(iid).unwrap().trim().to_owned())
    };
    let (first, first_id) = build(
        &Store::new(),
        "--cache-to",
        format!("type=registry,ref={cache},mode=max"),
        &dir.path().join("iid1"),
    );
    assert!(first.contains("ran-42"), "{first}");
    reg.skopeo_manifest("cache/app:1");
    let (again, again_id) = build(
        &Store::new(),
        "--cache-from",
        format!("type=registry,ref={cache}"),
        &dir.path().join("iid2"),
    );
    let steps = steps_cached(&again);
    assert_eq!(steps.len(), 3, "{again}");
    assert!(steps.iter().all(|(_, hit)| *hit), "{steps:?}\n{again}");
    assert!(!again.contains("ran-42"), "{again}");
    assert_eq!(again_id, first_id);
}

#[test]
fn an_image_loaded_from_a_docker_archive_is_pushed_compressed() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    let src = cairn_e2e::loaded_busybox();
    src.run(&[
        "save",
        "busybox",
        "-o",
        archive.to_str().unwrap(),
        "--format",
        "docker-archive",
    ]);
    let s = Store::new();
    s.run(&["load", "-i", archive.to_str().unwrap()]);
    let name = reg.image("loaded/busybox:1");
    must(env.cairn(&s, &["push", "busybox", &name]), &reg);
    let pushed = reg.skopeo_manifest("loaded/busybox:1");
    for l in pushed["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{pushed}"
        );
    }
    // A save back to a docker-archive still gives the layers as docker wrote them.
    let again = dir.path().join("again.tar");
    s.run(&[
        "save",
        "busybox",
        "-o",
        again.to_str().unwrap(),
        "--format",
        "docker-archive",
    ]);
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());
}
