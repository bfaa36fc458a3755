//! Provenance attestations: on by default for a push, attached as BuildKit attaches them (an
//! attestation manifest in the image index), read back by skopeo, `cairn inspect
//! --attestations` and a real OCI validator; reproducible with SOURCE_DATE_EPOCH.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::registry::{ClientEnv, Options, Registry, host_arch, must_run, pushed_digest};
use cairn_e2e::{Store, busybox_layout, context_with, loaded_busybox, ok, texts, tool};
use serde_json::Value;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    fs::read(layout.join("blobs").join(alg).join(hex)).unwrap()
}

/// The in-toto statements of an OCI layout's image index (`index.json`'s one entry), each
/// with the attestation manifest's subject annotation.
fn layout_statements(layout: &Path) -> (Value, Vec<(String, Value)>) {
    let top = json(&layout.join("index.json"));
    let entry = &top["manifests"][0];
    let index: Value =
        serde_json::from_slice(&blob(layout, entry["digest"].as_str().unwrap())).unwrap();
    let mut out = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        if m["annotations"]["vnd.docker.reference.type"] != "attestation-manifest" {
            continue;
        }
        assert_eq!(m["platform"]["os"], "unknown", "{m}");
        let subject = m["annotations"]["vnd.docker.reference.digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let manifest: Value =
            serde_json::from_slice(&blob(layout, m["digest"].as_str().unwrap())).unwrap();
        for l in manifest["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
            let s: Value =
                serde_json::from_slice(&blob(layout, l["digest"].as_str().unwrap())).unwrap();
            assert_eq!(
                l["annotations"]["in-toto.io/predicate-type"],
                s["predicateType"]
            );
            out.push((subject.clone(), s));
        }
    }
    (index, out)
}

/// `name` copied whole (every index entry) from the registry by skopeo into an OCI layout:
/// the temp dir holding it and the layout's path.
fn copied_by_skopeo(reg: &Registry, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let mut args = vec!["copy".to_owned(), "--all".to_owned()];
    args.extend(reg.skopeo_flags("src-"));
    args.push(format!("docker://{name}"));
    args.push(format!("oci:{}:copied", layout.display()));
    reg.skopeo_ok(&args);
    (out, layout)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn a_push_carries_provenance_that_names_what_the_build_read() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let base_digest = reg.skopeo_push(
        &format!("oci:{}:latest", busybox_layout().display()),
        "base/busybox:1",
    );
    let base = reg.image("base/busybox:1");
    let dockerfile = format!(
        "FROM {base}\nARG VERSION\nCOPY app.txt /app/\n\
         RUN --mount=type=secret,id=token test -s /run/secrets/token && echo $VERSION > /v\n"
    );
    let ctx = context_with(&dockerfile, &[("app.txt", "app\n"), ("unread.txt", "x\n")]);
    let secret = ctx.path().join("token.txt");
    fs::write(&secret, "s3cret-value\n").unwrap();
    let s = Store::new();
    let name = reg.image("app/web:1");
    let meta = ctx.path().join("meta.json");
    let mut c = env.cairn(
        &s,
        &[
            "build",
            "--push",
            "-t",
            &name,
            "--build-arg",
            "VERSION=7",
            "--secret",
            &format!("id=token,src={}", secret.display()),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    c.arg(ctx.path());
    must_run(c, &reg);

    // The registry holds an index: the image, and its attestation manifest.
    let index = reg.skopeo_manifest("app/web:1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[0]["platform"]["architecture"], host_arch());
    let image_digest = entries[0]["digest"].as_str().unwrap();
    assert_eq!(
        entries[1]["annotations"]["vnd.docker.reference.digest"],
        image_digest
    );
    // --metadata-file reports what the registry has.
    let m = json(&meta);
    assert_eq!(
        m["containerimage.digest"].as_str().unwrap(),
        reg.skopeo_digest("app/web:1")
    );

    // skopeo copies it all, and the statement is about that image.
    let (_copy, layout) = copied_by_skopeo(&reg, &name);
    let (_, statements) = layout_statements(&layout);
    assert_eq!(statements.len(), 1);
    let (subject, st) = &statements[0];
    assert_eq!(subject, image_digest);
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        image_digest.trim_start_matches("sha256:")
    );
    let repo = reg.image("app/web").replace(':', "%3A");
    assert_eq!(
        st["subject"][0]["name"],
        format!("pkg:docker/{repo}@1?platform=linux%2F{}", host_arch())
    );
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(
        def["externalParameters"]["configSource"]["digest"]["sha256"],
        sha256_hex(dockerfile.as_bytes())
    );
    let request = &def["externalParameters"]["request"];
    assert_eq!(request["args"]["build-arg:VERSION"], "7");
    assert_eq!(request["secrets"][0]["id"], "token");
    assert!(!st.to_string().contains("s3cret"), "{st}");
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let base_dep = deps
        .iter()
        .find(|d| d["uri"].as_str().unwrap().starts_with("pkg:docker/"))
        .unwrap();
    assert_eq!(
        format!("sha256:{}", base_dep["digest"]["sha256"].as_str().unwrap()),
        base_digest
    );
    let context_dep = deps.iter().find(|d| d["name"] == "context").unwrap();
    assert_eq!(context_dep["annotations"]["files"], "1", "{context_dep}");
    // min mode leaves the steps out.
    assert!(def["internalParameters"].get("buildConfig").is_none());

    // Pulled back whole, cairn reads the same statement, and runs the image, not the
    // attestation.
    let s2 = Store::new();
    must_run(env.cairn(&s2, &["pull", "--all-platforms", &name]), &reg);
    let (read, _) = must_run(env.cairn(&s2, &["inspect", "--attestations", &name]), &reg);
    let read: Value = serde_json::from_str(&read).unwrap();
    assert_eq!(read.as_array().unwrap().len(), 1);
    assert_eq!(&read[0], st);
    let (v, _) = must_run(env.cairn(&s2, &["run", "--rm", &name, "cat", "/v"]), &reg);
    assert_eq!(v.trim(), "7");

    // Editing a file the build never read leaves the context's digest as it was.
    fs::write(ctx.path().join("unread.txt"), "y\n").unwrap();
    let mut c = env.cairn(&s, &["build", "--push", "-t", &name]);
    c.args(["--build-arg", "VERSION=7", "--secret"])
        .arg(format!("id=token,src={}", secret.display()))
        .arg(ctx.path());
    must_run(c, &reg);
    let (again, _) = must_run(env.cairn(&s, &["inspect", "--attestations", &name]), &reg);
    let again: Value = serde_json::from_str(&again).unwrap();
    let find_context = |v: &Value| {
        v[0]["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "context")
            .unwrap()["digest"]
            .clone()
    };
    assert_eq!(find_context(&again), context_dep["digest"]);
}

#[test]
fn provenance_can_be_turned_off_for_a_push() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let ctx = context_with("FROM scratch\nCOPY a /\n", &[("a", "a\n")]);
    let s = Store::new();
    for (flag, env_var) in [(Some("--provenance=false"), None), (None, Some("1"))] {
        let name = reg.image("plain/app:1");
        let mut c = env.cairn(&s, &["build", "-q", "--push", "-t", &name]);
        c.args(flag);
        if let Some(v) = env_var {
            c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", v);
        }
        c.arg(ctx.path());
        let (id, _) = must_run(c, &reg);
        let m = reg.skopeo_manifest("plain/app:1");
        assert_eq!(
            m["config"]["digest"],
            id.trim(),
            "{flag:?} {env_var:?}: {m}"
        );
    }
}

#[test]
fn max_provenance_lists_steps_and_an_epoch_makes_it_reproducible() {
    let ctx = context_with(
        "FROM busybox AS build\nRUN echo built > /out\nFROM busybox\nCOPY --from=build /out /out\n",
        &[],
    );
    let build = |s: &Store, out: &Path| {
        let mut c = s.cmd(&[
            "build",
            "-q",
            "--provenance=mode=max",
            "--source-date-epoch",
            "1700000000",
            "-t",
            "app:1",
            "-o",
        ]);
        c.arg(format!("type=oci,dest={}", out.display()))
            .arg(ctx.path());
        texts(&ok(c)).0.trim().to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (loaded_busybox(), loaded_busybox());
    let id_a = build(&a, &dir.path().join("a"));
    let id_b = build(&b, &dir.path().join("b"));
    // Two stores, two runs, one index: the statement is reproducible.
    assert_eq!(id_a, id_b);
    let (index, statements) = layout_statements(&dir.path().join("a"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let st = &statements[0].1;
    let steps = st["predicate"]["buildDefinition"]["internalParameters"]["buildConfig"]["steps"]
        .as_array()
        .unwrap();
    let texts: Vec<&str> = steps
        .iter()
        .map(|s| s["instruction"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"RUN echo built > /out"), "{texts:?}");
    assert!(texts.contains(&"COPY --from=build /out /out"), "{texts:?}");
    assert!(
        steps
            .iter()
            .all(|s| s["cacheKey"].as_str().unwrap().len() == 64)
    );
    assert!(steps.iter().all(|s| s["cached"] == false));
    let meta = &st["predicate"]["runDetails"]["metadata"];
    assert_eq!(meta["startedOn"], "2023-11-14T22:13:20Z");
    assert!(meta.get("invocationID").is_none());

    // A real validator accepts the index and each manifest, the attestation's included.
    let layout = dir.path().join("a");
    let validate = |kind: &str, digest: &str| {
        let mut v = tool("oci-image-tool");
        v.args(["validate", "--type", kind])
            .arg(layout.join("blobs/sha256").join(&digest[7..]));
        ok(v);
    };
    validate("imageIndex", &id_a);
    for m in index["manifests"].as_array().unwrap() {
        validate("manifest", m["digest"].as_str().unwrap());
    }

    // Built again in the same store, the steps say they came from the cache.
    let id_again = build(&a, &dir.path().join("c"));
    assert_ne!(id_again, id_a);
    let (_, statements) = layout_statements(&dir.path().join("c"));
    let steps = &statements[0].1["predicate"]["buildDefinition"]["internalParameters"]["buildConfig"]
        ["steps"];
    assert!(
        steps
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["cached"] == true),
        "{steps}"
    );
    // Listed under its image's platform alone: an attestation is no platform of its own.
    let listed = a.run(&["images", "app"]);
    assert!(
        listed.contains(&format!("linux/{}", host_arch())),
        "{listed}"
    );
    assert!(!listed.contains("unknown"), "{listed}");
    // The store's image is the index; `cairn run` runs the image in it.
    let out = a.run(&["run", "--rm", "app:1", "cat", "/out"]);
    assert_eq!(out.trim(), "built");
}

#[test]
fn an_sbom_travels_with_provenance_and_validates() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let s = loaded_busybox();
    let metadata = "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.2.3\nLicense: MIT\n";
    let ctx = context_with(
        "FROM busybox\n\
         COPY METADATA /usr/lib/python3/dist-packages/Demo_Pkg-1.2.3.dist-info/METADATA\n",
        &[("METADATA", metadata)],
    );
    let name = reg.image("app/sbom:1");
    let mut c = env.cairn(&s, &["build", "--push", "--sbom", "-t", &name]);
    c.arg(ctx.path());
    must_run(c, &reg);

    // One attestation manifest holding both statements, each about the image.
    let (out, layout) = copied_by_skopeo(&reg, &name);
    let (index, statements) = layout_statements(&layout);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let kinds: Vec<&str> = statements
        .iter()
        .map(|(_, s)| s["predicateType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ]
    );
    let image = index["manifests"][0]["digest"].as_str().unwrap();
    let (subject, spdx) = &statements[1];
    assert_eq!(subject, image);
    let doc = &spdx["predicate"];
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let names: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"demo-pkg") || names.contains(&"Demo_Pkg"),
        "{names:?}"
    );

    // The document inside the statement is one the SPDX validator accepts.
    let file = out.path().join("sbom.spdx.json");
    fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let mut v = std::process::Command::new("/opt/cairn-tests/spdx-tools/bin/pyspdxtools");
    v.arg("-i").arg(&file);
    ok(v);
}

#[test]
fn per_arch_pushes_with_provenance_stitch_with_their_attestations() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let s = Store::new();
    let ctx = context_with("FROM scratch\nCOPY a /\n", &[("a", "a\n")]);
    let repo = reg.image("stitched");
    // One job per architecture (no RUN: no emulation needed), each pushing its index — the
    // image and its provenance — by digest alone.
    let mut digests = Vec::new();
    for p in [format!("linux/{}", host_arch()), "linux/arm64".to_owned()] {
        let mut c = env.cairn(&s, &["build", "--platform", &p, "-o"]);
        c.arg(format!("type=registry,name={repo},push-by-digest=true"))
            .arg(ctx.path());
        let (_, stderr) = must_run(c, &reg);
        let digest = pushed_digest(&stderr);
        digests.push(digest);
    }
    let list = format!("{repo}:1");
    let fresh = Store::new();
    must_run(env.cairn(&fresh, &["manifest", "create", &list]), &reg);
    for d in &digests {
        let image = format!("docker://{repo}@{d}");
        must_run(env.cairn(&fresh, &["manifest", "add", &list, &image]), &reg);
    }
    must_run(env.cairn(&fresh, &["manifest", "push", &list]), &reg);

    // The list has both images, then each one's attestation manifest naming it.
    let index = reg.skopeo_manifest("stitched:1");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{index}");
    let mut platforms: Vec<String> = entries[..2]
        .iter()
        .map(|e| e["platform"]["architecture"].as_str().unwrap().to_owned())
        .collect();
    platforms.sort();
    let mut want = vec![host_arch().to_owned(), "arm64".to_owned()];
    want.sort();
    assert_eq!(platforms, want);
    for (image, att) in entries[..2].iter().zip(&entries[2..]) {
        assert_eq!(
            att["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            att["annotations"]["vnd.docker.reference.digest"],
            image["digest"]
        );
    }
    // Read back whole, each statement is about its own image.
    let (_copy, layout) = copied_by_skopeo(&reg, &reg.image("stitched:1"));
    let (_, statements) = layout_statements(&layout);
    assert_eq!(statements.len(), 2);
    for (subject, st) in &statements {
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            *subject
        );
    }
}
