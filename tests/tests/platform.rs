//! Builds for other platforms: `--platform` lists, RUN under binfmt_misc emulation, the
//! platform build args, stages shared between platforms, and the index a build makes.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::{
    Store, busybox_arm64_layout, busybox_index_layout, busybox_layout, context, context_with, ok,
    require_arm64_emulation, texts,
};
use serde_json::Value;

/// This machine's architecture, as OCI names it.
fn host_arch() -> &'static str {
    cairn_e2e::registry::host_arch()
}

/// A store holding the host's busybox as `busybox-<arch>` and `busybox`, and the arm64 one as
/// `busybox-arm64`.
fn store_with_both() -> Store {
    require_arm64_emulation();
    let s = Store::new();
    let host = format!("busybox-{}", host_arch());
    s.run(&[
        "load",
        "-i",
        busybox_layout().to_str().unwrap(),
        "-t",
        &host,
    ]);
    s.run(&["tag", &host, "busybox"]);
    let arm = busybox_arm64_layout().to_str().unwrap();
    s.run(&["load", "-i", arm, "-t", "busybox-arm64"]);
    s
}

fn read(dir: &Path, rel: &str) -> String {
    fs::read_to_string(dir.join(rel))
        .unwrap_or_else(|e| panic!("{}/{rel}: {e}", dir.display()))
        .trim()
        .to_owned()
}

#[test]
fn an_arm64_build_runs_its_steps_emulated() {
    let s = store_with_both();
    // The target platform comes from --platform; the build platform stays this machine's.
    let ctx = context(
        "FROM busybox-arm64\n\
         ARG TARGETPLATFORM TARGETARCH BUILDARCH\n\
         RUN uname -m > /machine && echo $TARGETPLATFORM $TARGETARCH $BUILDARCH > /args\n",
    );
    let (_d, out, stderr) = s.build_local(&["--platform", "linux/arm64", "-t", "a"], ctx.path());
    assert_eq!(read(&out, "machine"), "aarch64", "{stderr}");
    assert_eq!(
        read(&out, "args"),
        format!("linux/arm64 arm64 {}", host_arch())
    );
    let img = s.inspect("a");
    assert_eq!(img["Architecture"], "arm64");
    assert_eq!(img["Os"], "linux");

    // FROM --platform pins a stage in a build for this machine; scratch takes the platform.
    let ctx = context(
        "FROM --platform=linux/arm64 busybox-arm64 AS arm\n\
         RUN uname -m > /machine\n\
         FROM --platform=linux/arm64 scratch\n\
         COPY --from=arm /machine /machine\n",
    );
    let (_d, out, _) = s.build_local(&["-t", "b"], ctx.path());
    assert_eq!(read(&out, "machine"), "aarch64");
    assert_eq!(s.inspect("b")["Architecture"], "arm64");
}

#[test]
fn two_platforms_build_one_graph_each() {
    let s = store_with_both();
    let host = host_arch();
    // The usual cross-compiling shape: a builder on the build platform writes per-target
    // output, the final stage is the target's own base.
    let ctx = context(
        "FROM --platform=$BUILDPLATFORM busybox AS build\n\
         ARG TARGETARCH\n\
         RUN echo \"for $TARGETARCH on $(uname -m)\" > /out\n\
         FROM busybox-$TARGETARCH\n\
         COPY --from=build /out /out\n\
         RUN uname -m > /machine\n",
    );
    let platforms = format!("linux/{host},linux/arm64");
    let (_d, out, stderr) = s.build_local(&["--platform", &platforms, "-t", "m"], ctx.path());
    let uname_host = read(&out.join(format!("linux_{host}")), "machine");
    assert_ne!(uname_host, "aarch64");
    let arm = out.join("linux_arm64");
    assert_eq!(read(&arm, "machine"), "aarch64", "{stderr}");
    assert_eq!(read(&arm, "out"), format!("for arm64 on {uname_host}"));
    assert_eq!(
        read(&out.join(format!("linux_{host}")), "out"),
        format!("for {host} on {uname_host}")
    );
    // Step lines name their platform.
    assert!(stderr.contains("[linux/arm64 build 1/3]"), "{stderr}");
    // FROM shows the image its variables named; an unnamed stage of several is stage-N.
    assert!(
        stderr.contains("[linux/arm64 stage-1 1/3] FROM busybox-arm64"),
        "{stderr}"
    );

    // The tag names an index of both images.
    let tagged = s.index()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/m:latest"
        })
        .cloned()
        .unwrap();
    assert_eq!(
        tagged["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let blob = |d: &Value| -> Value {
        let hex = d["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        serde_json::from_slice(&fs::read(s.root.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index = blob(&tagged);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [format!("linux/{host}"), "linux/arm64".to_owned()]
    );
    for m in index["manifests"].as_array().unwrap() {
        let config = blob(&blob(m)["config"]);
        assert_eq!(config["architecture"], m["platform"]["architecture"]);
    }

    // A docker archive or a tar holds one platform: said, not half-written.
    let dir = tempfile::tempdir().unwrap();
    for kind in ["docker", "tar"] {
        let dest = dir.path().join(kind);
        let mut c = s.cmd(&["build", "--platform", &platforms_arg(host)]);
        c.arg("-o")
            .arg(format!("type={kind},dest={}", dest.display()))
            .arg(ctx.path());
        let o = c.output().unwrap();
        let (_, err) = texts(&o);
        assert!(!o.status.success() && err.contains("one platform"), "{err}");
        assert!(!dest.exists());
    }
}

fn platforms_arg(host: &str) -> String {
    format!("linux/{host},linux/arm64")
}

#[test]
fn a_stage_on_the_build_platform_runs_once_for_all_targets() {
    let s = store_with_both();
    // The shared stage counts its runs in a cache mount, and sleeps so that both platforms'
    // graphs reach it while it runs.
    let ctx = context(
        "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
         RUN --mount=type=cache,id=runs,target=/runs,sharing=locked \
             echo ran >> /runs/count && sleep 1 && echo tools > /tools\n\
         FROM busybox-$TARGETARCH\n\
         COPY --from=tools /tools /tools\n\
         RUN --mount=type=cache,id=runs,target=/runs,sharing=locked \
             wc -l < /runs/count > /count\n",
    );
    let (_d, out, stderr) = s.build_local(&["--platform", &platforms_arg(host_arch())], ctx.path());
    for p in [format!("linux_{}", host_arch()), "linux_arm64".into()] {
        assert_eq!(read(&out.join(&p), "count"), "1", "{p}: {stderr}");
        assert_eq!(read(&out.join(&p), "tools"), "tools");
    }
}

#[test]
fn a_platform_without_an_emulator_is_named() {
    let s = store_with_both();
    let ctx = context("FROM scratch\nRUN true\n");
    let o = s
        .cmd(&["build", "--platform", "linux/sparc64"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let (_, err) = texts(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("linux/sparc64") && err.contains("Dockerfile:2"),
        "{err}"
    );

    // A bad platform is a usage error naming the flag.
    let o = s
        .cmd(&["build", "--platform", "linux/"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let (_, err) = texts(&o);
    assert!(!o.status.success() && err.contains("--platform"), "{err}");
}

#[test]
fn the_platform_is_part_of_every_cache_key() {
    let s = store_with_both();
    // Same Dockerfile, same context: only the platform differs, and nothing may be shared.
    let ctx = context_with("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let id = |p: &str| {
        let mut c = s.cmd(&["build", "-q", "--platform", p]);
        c.arg(ctx.path());
        texts(&ok(c)).0.trim().to_owned()
    };
    let arm = id("linux/arm64");
    let host = id(&format!("linux/{}", host_arch()));
    assert_ne!(arm, host);
    assert_eq!(s.inspect(&arm)["Architecture"], "arm64");
    assert_eq!(id("linux/arm64"), arm);
}

#[test]
fn an_index_serves_each_platform_from_a_layout_and_from_the_store() {
    require_arm64_emulation();
    let s = Store::new();
    let index = busybox_index_layout().to_str().unwrap();
    let ctx = context("FROM busybox\nRUN uname -m > /machine\n");
    let check = |out: &Path, stderr: &str| {
        assert_eq!(
            read(&out.join("linux_arm64"), "machine"),
            "aarch64",
            "{stderr}"
        );
        let host = read(&out.join(format!("linux_{}", host_arch())), "machine");
        assert_ne!(host, "aarch64");
    };
    // An OCI layout holding the index, as a named context.
    let named = format!("busybox=oci-layout://{index}:latest");
    let both = platforms_arg(host_arch());
    let (_d, out, stderr) = s.build_local(
        &["--platform", &both, "--build-context", &named],
        ctx.path(),
    );
    check(&out, &stderr);
    // Loaded into the store: the tag names the index, each platform takes its image.
    s.run(&["load", "-i", index, "-t", "busybox"]);
    let (_d, out, stderr) = s.build_local(&["--platform", &both, "--no-cache"], ctx.path());
    check(&out, &stderr);
}
