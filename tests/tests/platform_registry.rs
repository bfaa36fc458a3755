//! Multi-platform images through a real registry: bases resolved per platform from an index,
//! the index a build pushes read by skopeo and podman and pulled back per platform, and
//! per-architecture builds pushed by digest and stitched with `cairn manifest`.
#![allow(clippy::unwrap_used)]

use std::fs;

use cairn_e2e::registry::{
    ClientEnv, Options, Registry, host_arch, must_run, pushed_digest, skopeo,
};
use cairn_e2e::{Store, busybox_index_layout, context, require_arm64_emulation, tool};
use serde_json::Value;

/// A registry holding the two-platform busybox as `busybox:latest`.
fn registry_with_busybox() -> Registry {
    require_arm64_emulation();
    let reg = Registry::start(Options::default());
    let mut args = vec!["copy".to_owned(), "--all".to_owned()];
    args.extend(reg.skopeo_flags("dest-"));
    args.push(format!("oci:{}:latest", busybox_index_layout().display()));
    args.push(format!("docker://{}", reg.image("busybox:latest")));
    reg.skopeo_ok(&args);
    reg
}

/// The cross-building Dockerfile: a builder stage on the build platform, the target's base.
fn dockerfile(reg: &Registry) -> String {
    let base = reg.image("busybox:latest");
    format!(
        "FROM --platform=$BUILDPLATFORM {base} AS build\n\
         ARG TARGETARCH\n\
         RUN echo $TARGETARCH > /target\n\
         FROM {base}\n\
         COPY --from=build /target /target\n\
         RUN uname -m | tee /machine\n"
    )
}

/// The entries of an index: (platform, manifest digest).
fn entries(index: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (
                format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                m["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn both() -> String {
    format!("linux/{},linux/arm64", host_arch())
}

#[test]
fn a_two_platform_build_pushes_an_index_that_others_read() {
    let reg = registry_with_busybox();
    let env = ClientEnv::new();
    let s = Store::new();
    let ctx = context(&dockerfile(&reg));
    let name = reg.image("app:multi");
    let layout = tempfile::tempdir().unwrap();
    let dest = layout.path().join("oci");
    // Without the default provenance: the layout is validated by a tool that predates
    // attestation layers (attestations.rs covers them).
    let mut c = env.cairn(&s, &["build", "--platform", &both(), "-t", &name, "--push"]);
    c.arg("--provenance=false")
        .arg("-o")
        .arg(format!("type=oci,dest={}", dest.display()))
        .arg(ctx.path());
    let (_, stderr) = must_run(c, &reg);
    // Each platform's base came from the registry's index.
    assert!(stderr.contains("aarch64"), "{stderr}");

    // The OCI layout: valid, one index naming both images.
    let mut v = tool("oci-image-tool");
    v.args(["validate", "--type", "image"]).arg(&dest);
    cairn_e2e::ok(v);
    let skopeo_raw = |reference: &str| -> Value {
        let mut args = vec!["inspect".to_owned(), "--raw".to_owned()];
        args.extend(reg.skopeo_flags(""));
        args.push(reference.to_owned());
        serde_json::from_slice(&reg.skopeo_ok(&args).stdout).unwrap()
    };
    let local = skopeo_raw(&format!("oci:{}", dest.display()));
    assert_eq!(
        local["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let got = entries(&local);
    let mut want = vec![format!("linux/{}", host_arch()), "linux/arm64".to_owned()];
    want.sort();
    assert_eq!(got.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), want);

    // The registry has the same index, byte for byte, and skopeo copies all of it.
    let pushed = reg.skopeo_manifest("app:multi");
    assert_eq!(entries(&pushed), got);
    let copy = tempfile::tempdir().unwrap();
    let mut args = vec!["copy".to_owned(), "--all".to_owned()];
    args.extend(reg.skopeo_flags("src-"));
    args.push(format!("docker://{name}"));
    args.push(format!("oci:{}:x", copy.path().display()));
    reg.skopeo_ok(&args);

    // podman reads it as a manifest list.
    assert_eq!(entries(&reg.podman_manifest_inspect(&name)), got);

    // Pulled back per platform into fresh stores: the pushed index and image, digest for
    // digest.
    let index_digest = reg.skopeo_digest("app:multi");
    for (platform, digest) in &got {
        let fresh = Store::new();
        must_run(
            env.cairn(&fresh, &["pull", "--platform", platform, &name]),
            &reg,
        );
        let tagged = tagged(&fresh, &name);
        assert_eq!(tagged["digest"].as_str(), Some(index_digest.as_str()));
        let manifest = blob(&fresh, digest);
        let config = blob(&fresh, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(
            config["architecture"].as_str(),
            platform.rsplit('/').next(),
            "{platform}"
        );
    }
}

/// The store's index.json entry that names `name` (a full reference).
fn tagged(s: &Store, name: &str) -> Value {
    let full = if name.contains(':') && !name.rsplit('/').next().unwrap().contains(':') {
        format!("{name}:latest")
    } else {
        name.to_owned()
    };
    s.index()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == full.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{full} is not tagged: {}", s.index()))
}

/// A JSON blob of the store.
fn blob(s: &Store, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(s.root.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

#[test]
fn per_arch_builds_pushed_by_digest_stitch_into_the_one_command_index() {
    let reg = registry_with_busybox();
    let env = ClientEnv::new();
    let s = Store::new();
    let ctx = context(&dockerfile(&reg));
    let repo = reg.image("stitched");
    // One job per architecture, each pushing its image by digest alone.
    let mut digests = Vec::new();
    for p in [format!("linux/{}", host_arch()), "linux/arm64".to_owned()] {
        // Plain images, as the digest-stitching flow without attestations pushes them.
        let mut c = env.cairn(&s, &["build", "--platform", &p, "--provenance=false"]);
        c.arg("-o")
            .arg(format!("type=registry,name={repo},push-by-digest=true"))
            .arg(ctx.path());
        let (_, stderr) = must_run(c, &reg);
        let digest = pushed_digest(&stderr);
        // By digest, no tag: the registry has no tag for the repository yet.
        let pushed = reg.skopeo_manifest(&format!("stitched@{digest}"));
        assert_eq!(
            pushed["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let mut args = vec!["list-tags".to_owned()];
        args.extend(reg.skopeo_flags(""));
        args.push(format!("docker://{repo}"));
        let listed = skopeo(&args).output().unwrap();
        let tags: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        assert!(
            tags["Tags"].as_array().is_none_or(|t| t.is_empty()),
            "{tags}"
        );
        digests.push((p, digest));
    }
    // The last job stitches them.
    let list = format!("{repo}:1");
    let fresh = Store::new();
    must_run(env.cairn(&fresh, &["manifest", "create", &list]), &reg);
    for (_, d) in &digests {
        let image = format!("docker://{repo}@{d}");
        must_run(env.cairn(&fresh, &["manifest", "add", &list, &image]), &reg);
    }
    must_run(env.cairn(&fresh, &["manifest", "push", &list]), &reg);
    let stitched = reg.skopeo_manifest("stitched:1");

    // The same build in one command, in the same store (its steps all hit).
    let one = reg.image("stitched:one");
    let mut c = env.cairn(&s, &["build", "--platform", &both(), "-t", &one, "--push"]);
    c.arg("--provenance=false").arg(ctx.path());
    must_run(c, &reg);
    let whole = reg.skopeo_manifest("stitched:one");
    assert_eq!(entries(&stitched), entries(&whole));
    // The same document, so the same digest: CI can stitch what one machine would have built.
    assert_eq!(stitched, whole);
    let mut want: Vec<(String, String)> = digests;
    want.sort();
    assert_eq!(entries(&whole), want);
}
