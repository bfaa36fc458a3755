//! The build flags that shape the image a build leaves, through the real binary: `--squash`
//! and `--squash-all`, `rewrite-timestamp`, `--logfile`, and `--annotation`'s levels.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::layout::{self, LayoutImage};
use cairn_e2e::{Store, context_with, loaded_busybox, ok, texts, tool, umoci_unpack};

/// Builds `ctx` with `args`, insisting on success; returns standard error.
fn build(s: &Store, args: &[&str], ctx: &Path) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    texts(&ok(c)).1
}

fn validate(layout: &Path, tag: &str) {
    let mut v = tool("oci-image-tool");
    v.args(["validate", "--type", "image", "--ref"])
        .arg(format!("name={tag}"))
        .arg(layout);
    ok(v);
}

/// The image's history entries that made a layer.
fn layered_history(image: &LayoutImage) -> usize {
    image.config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count()
}

const SQUASHED: &str = "FROM busybox
RUN mkdir /app && echo tmp >/app/tmp && echo keep >/app/keep && chown 1234:1234 /app/keep
RUN rm /app/tmp /bin/zcat
COPY a.txt /app/
";

/// Builds SQUASHED with `flag` into an OCI layout tagged `1` under `dir`; returns the layout.
fn squashed(s: &Store, flag: &str, dir: &Path) -> std::path::PathBuf {
    let ctx = context_with(SQUASHED, &[("a.txt", "a\n")]);
    let out = dir.join(flag.trim_start_matches('-'));
    let dest = format!("type=oci,dest={}", out.display());
    build(s, &[flag, "-t", "img:1", "-o", &dest], ctx.path());
    validate(&out, "1");
    out
}

#[test]
fn squash_folds_the_new_layers_over_the_base() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let out = squashed(&s, "--squash", dir.path());
    let image = layout::read_gzip_too(&out);
    // busybox's one layer, and one for the three steps.
    assert_eq!(image.layers.len(), 2);
    assert_eq!(layered_history(&image), 2);
    assert_eq!(image.config["history"].as_array().unwrap().len(), 4);
    let layer = &image.layers[1];
    assert_eq!(layer["app/keep"].uid, 1234, "{layer:?}");
    assert!(layer.contains_key("app/a.txt"), "{layer:?}");
    // Made and deleted within the squashed steps: no trace; the base's file: a whiteout.
    assert!(!layer.keys().any(|k| k.contains("tmp")), "{layer:?}");
    assert!(layer.contains_key("bin/.wh.zcat"), "{layer:?}");
    assert_eq!(layer.keys().filter(|k| k.contains(".wh.")).count(), 1);

    let rootfs = umoci_unpack(&out, "1", &dir.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("app/keep")).unwrap(),
        "keep\n"
    );
    assert!(!rootfs.join("app/tmp").exists());
    assert!(fs::symlink_metadata(rootfs.join("bin/zcat")).is_err());
    assert!(rootfs.join("bin/busybox").exists());
}

#[test]
fn squash_all_makes_one_layer_of_everything() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let out = squashed(&s, "--squash-all", dir.path());
    let image = layout::read_gzip_too(&out);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(layered_history(&image), 1);
    let layer = &image.layers[0];
    assert!(!layer.keys().any(|k| k.contains(".wh.")), "{layer:?}");
    assert!(layer.contains_key("bin/busybox") && layer.contains_key("app/a.txt"));
    assert!(!layer.contains_key("bin/zcat"));
    let rootfs = umoci_unpack(&out, "1", &dir.path().join("bundle"));
    assert_eq!(fs::read_to_string(rootfs.join("app/a.txt")).unwrap(), "a\n");
}

#[test]
fn a_squashed_image_from_the_cache_is_the_same_image() {
    let s = loaded_busybox();
    let ctx = context_with(SQUASHED, &[("a.txt", "a\n")]);
    let digest = |args: &[&str]| {
        let mut all = vec!["--squash", "-t", "img", "--source-date-epoch", "1700000000"];
        all.extend(args);
        build(&s, &all, ctx.path());
        s.inspect("img")["ManifestDigest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = digest(&[]);
    let again = digest(&[]);
    assert_eq!(first, again);
    // Run again from scratch, the squash gives the same bytes.
    assert_eq!(digest(&["--no-cache"]), first);
    // Not squashed: another image, of four layers.
    build(
        &s,
        &["-t", "plain", "--source-date-epoch", "1700000000"],
        ctx.path(),
    );
    let plain = s.inspect("plain");
    assert_ne!(plain["ManifestDigest"], first.as_str());
    assert_eq!(plain["RootFS"]["Layers"].as_array().unwrap().len(), 4);
}

#[test]
fn logfile_takes_the_builds_output_and_leaves_the_error_on_the_terminal() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("build.log");
    let ctx = context_with("FROM busybox\nRUN echo hello-from-run\n", &[]);
    let mut c = s.cmd(&["build", "--progress", "plain", "-t", "img", "--logfile"]);
    c.arg(&log).arg(ctx.path());
    let (stdout, stderr) = texts(&ok(c));
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("RUN echo hello-from-run"), "{text}");
    assert!(text.contains("hello-from-run\n"), "{text}");
    assert!(
        text.contains("naming to docker.io/library/img:latest done"),
        "{text}"
    );

    let ctx = context_with("FROM busybox\nRUN echo failing-step && exit 3\n", &[]);
    let mut c = s.cmd(&["build", "--progress", "plain", "--logfile"]);
    let out = c.arg(&log).arg(ctx.path()).output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(!stderr.contains("#1 "), "{stderr}");
    // Emptied first: the log is this build's alone.
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("failing-step") && !text.contains("hello-from-run"),
        "{text}"
    );
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, d: &serde_json::Value) -> serde_json::Value {
    json(
        &layout
            .join("blobs")
            .join(d["digest"].as_str().unwrap().replace(':', "/")),
    )
}

#[test]
fn annotations_land_on_each_level_of_a_multi_platform_build() {
    let s = Store::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("oci");
    let ctx = context_with("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    let dest = format!("type=oci,dest={}", out.display());
    let mut args = vec![
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "multi:1",
        "-o",
    ];
    args.push(&dest);
    for a in [
        "all=1",
        "index:i=2",
        "index-descriptor:d=3",
        "manifest-descriptor:m=4",
        "manifest[linux/arm64]:arm=5",
        "manifest-descriptor[linux/amd64]:amd=6",
    ] {
        args.extend(["--annotation", a]);
    }
    build(&s, &args, ctx.path());
    validate(&out, "1");
    let top = &json(&out.join("index.json"))["manifests"][0];
    assert_eq!(top["annotations"]["d"], "3", "{top}");
    let index = blob(&out, top);
    assert_eq!(index["annotations"]["i"], "2", "{index}");
    assert!(index["annotations"].get("d").is_none(), "{index}");
    for entry in index["manifests"].as_array().unwrap() {
        let arch = entry["platform"]["architecture"].as_str().unwrap();
        let manifest = blob(&out, entry);
        assert_eq!(entry["annotations"]["m"], "4", "{entry}");
        assert_eq!(
            entry["annotations"].get("amd").is_some(),
            arch == "amd64",
            "{entry}"
        );
        assert_eq!(manifest["annotations"]["all"], "1", "{manifest}");
        assert_eq!(
            manifest["annotations"].get("arm").is_some(),
            arch == "arm64"
        );
    }
}

#[test]
fn a_single_platform_build_takes_descriptor_annotations_and_refuses_index_ones() {
    let s = Store::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("oci");
    let ctx = context_with("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    let dest = format!("type=oci,dest={}", out.display());
    let args = [
        "-t",
        "one:1",
        "-o",
        &dest,
        "--annotation",
        "manifest-descriptor:m=4",
    ];
    build(&s, &args, ctx.path());
    validate(&out, "1");
    let top = &json(&out.join("index.json"))["manifests"][0];
    assert_eq!(top["annotations"]["m"], "4", "{top}");
    assert_eq!(top["annotations"]["org.opencontainers.image.ref.name"], "1");
    assert!(blob(&out, top)["annotations"].get("m").is_none());
    // In the store too: a later save keeps it.
    let saved = dir.path().join("saved");
    s.run(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        saved.to_str().unwrap(),
        "one:1",
    ]);
    assert_eq!(
        json(&saved.join("index.json"))["manifests"][0]["annotations"]["m"],
        "4"
    );

    for (a, says) in [
        ("index:i=1", "single-platform build makes no image index"),
        (
            "index-descriptor:i=1",
            "single-platform build makes no image index",
        ),
        (
            "manifest[linux/s390x]:k=v",
            "makes no image for linux/s390x",
        ),
    ] {
        let mut c = s.cmd(&["build", "--annotation", a]);
        let out = c.arg(ctx.path()).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{a}: {stderr}"
        );
    }
}

#[test]
fn rewrite_timestamp_makes_layers_of_different_times_the_same() {
    let s = loaded_busybox();
    // A file dated by the machine's uptime in hundredths: no two builds share it.
    let ctx = context_with(
        "FROM busybox\nRUN touch -d @$(tr -d . </proc/uptime | cut -d' ' -f1) /stamp\n",
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let dest = format!(
            "type=oci,dest={},rewrite-timestamp=true",
            dir.path().join("o").display()
        );
        let mut args = vec!["--no-cache", "-t", "img", "-o", &dest];
        args.extend(extra);
        let err = build(&s, &args, ctx.path());
        let image = s.inspect("img");
        let layers = image["RootFS"]["Layers"].as_array().unwrap().clone();
        (image["ManifestDigest"].clone(), layers, err)
    };
    let epoch = ["--source-date-epoch", "1000"];
    let (first, first_layers, _) = run(&epoch);
    let (second, second_layers, _) = run(&epoch);
    assert_eq!(first, second);
    assert_eq!(first_layers, second_layers);
    // Without an epoch the file keeps its time, and BuildKit's warning says why.
    let (_, a, err) = run(&[]);
    let (_, b, _) = run(&[]);
    assert_ne!(a.last(), b.last());
    assert!(
        err.contains("rewrite-timestamp is specified, but no source-date-epoch"),
        "{err}"
    );
    let mut c = s.cmd(&["build", "-o", "type=oci,dest=x,rewrite-timestamp=yes"]);
    let out = c.arg(ctx.path()).output().unwrap();
    assert!(texts(&out).1.contains("rewrite-timestamp is true or false"));
}
