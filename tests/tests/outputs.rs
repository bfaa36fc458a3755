//! Machine-readable outputs through the real binary: `--metadata-file` (checked against the
//! store and a real registry), `--progress rawjson`, and archives through pipes.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::{Command, Stdio};

use cairn_e2e::registry::{ClientEnv, Options, Registry, base64_decode};
use cairn_e2e::{context, loaded_busybox, ok, texts};

const DOCKERFILE: &str =
    "FROM busybox\nRUN echo out-line && echo err-line >&2\nRUN echo two > /two\n";

fn metadata(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn metadata_file_names_what_the_store_holds() {
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meta.json");
    let mut c = s.cmd(&["build", "-t", "meta:1", "-t", "meta:2", "--metadata-file"]);
    c.arg(&file).arg(ctx.path());
    ok(c);
    let m = metadata(&file);
    let image = s.inspect("meta:1");
    assert_eq!(m["containerimage.digest"], image["ManifestDigest"], "{m}");
    assert_eq!(m["containerimage.config.digest"], image["Id"], "{m}");
    assert_eq!(
        m["containerimage.descriptor"]["digest"],
        m["containerimage.digest"]
    );
    assert!(m["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);
    assert!(
        m["containerimage.descriptor"]["mediaType"]
            .as_str()
            .unwrap()
            .contains("manifest")
    );
    let names = m["image.name"].as_str().unwrap();
    assert!(
        names.ends_with("meta:1,docker.io/library/meta:2") || names == "meta:1,meta:2",
        "{names}"
    );
    // FROM and two RUNs, none cached; each RUN wrote a layer.
    assert_eq!(m["cairn.steps.run"], 3, "{m}");
    assert_eq!(m["cairn.steps.cached"], 0, "{m}");
    assert!(m["cairn.bytes.written"].as_u64().unwrap() > 0, "{m}");

    // Again: both RUNs come from the cache and nothing is written.
    let mut c = s.cmd(&["build", "-t", "meta:1", "--metadata-file"]);
    c.arg(&file).arg(ctx.path());
    ok(c);
    let again = metadata(&file);
    assert_eq!(again["containerimage.digest"], m["containerimage.digest"]);
    assert_eq!(again["cairn.steps.cached"], 2, "{again}");
    assert_eq!(again["cairn.bytes.written"], 0, "{again}");
}

#[test]
fn metadata_file_after_push_names_the_pushed_digest() {
    let reg = Registry::start(Options::default());
    let env = ClientEnv::new();
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let name = reg.image("meta/pushed:1");
    let file = env.path("meta.json");
    let mut c = env.cairn(&s, &["build", "--push", "-t", &name, "--metadata-file"]);
    c.arg(&file).arg(ctx.path());
    let out = c.output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}\n{}", reg.log());
    let m = metadata(&file);
    let pushed = reg.skopeo_digest("meta/pushed:1");
    assert_eq!(m["containerimage.digest"], pushed.as_str(), "{m}");
    assert_eq!(m["containerimage.descriptor"]["digest"], pushed.as_str());
    assert!(
        stderr.contains(&format!("pushed {name} {pushed}")),
        "{stderr}"
    );
    // A push carries provenance by default: an index whose image names the same config.
    let index = reg.skopeo_manifest("meta/pushed:1");
    let image = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        reg.skopeo_manifest(&format!("meta/pushed@{image}"))["config"]["digest"],
        m["containerimage.config.digest"]
    );
}

#[test]
fn rawjson_carries_logs_as_base64_and_marks_cached_steps() {
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let build = |envvar: Option<&str>| {
        let mut c = s.cmd(&["build", "-t", "raw:1"]);
        match envvar {
            Some(v) => c.env("BUILDKIT_PROGRESS", v),
            None => c.args(["--progress", "rawjson"]),
        };
        let out = c.arg(ctx.path()).output().unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout, "", "rawjson writes nothing on standard output");
        stderr
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
            })
            .collect::<Vec<_>>()
    };
    let lines = build(None);
    let vertexes: Vec<&serde_json::Value> = lines
        .iter()
        .filter_map(|l| l["vertexes"].as_array())
        .flatten()
        .collect();
    let run = vertexes
        .iter()
        .find(|v| v["name"].as_str().unwrap().contains("RUN echo out-line"))
        .unwrap();
    let digest = run["digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{run}");
    let logs: String = lines
        .iter()
        .filter_map(|l| l["logs"].as_array())
        .flatten()
        .filter(|l| l["vertex"] == digest)
        .map(|l| {
            assert_eq!(l["stream"], 1);
            String::from_utf8(base64_decode(l["data"].as_str().unwrap()).unwrap()).unwrap()
        })
        .collect();
    assert!(logs.contains("out-line\n"), "{logs:?}");
    assert!(logs.contains("err-line\n"), "{logs:?}");
    let completed = vertexes
        .iter()
        .filter(|v| v["digest"] == digest && v["completed"].is_string())
        .count();
    assert_eq!(completed, 1);

    // BUILDKIT_PROGRESS alone picks rawjson; the RUNs are now cached.
    let lines = build(Some("rawjson"));
    let cached = lines
        .iter()
        .filter_map(|l| l["vertexes"].as_array())
        .flatten()
        .filter(|v| v["cached"] == true && v["completed"].is_string())
        .count();
    assert_eq!(cached, 2, "{lines:?}");
}

#[test]
fn progress_tty_off_a_terminal_is_plain() {
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let out = s
        .cmd(&["build", "--progress", "tty"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("out-line"), "RUN output is kept: {stderr}");
    assert!(stderr.contains("#2 DONE"), "{stderr}");
}

/// `a | b`, both succeeding; gives b's standard output.
fn pipe(mut a: Command, mut b: Command) -> String {
    let mut first = a.stdout(Stdio::piped()).spawn().unwrap();
    let out = b.stdin(first.stdout.take().unwrap()).output().unwrap();
    assert!(first.wait().unwrap().success(), "the first command failed");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
}

#[test]
fn save_pipes_into_load_of_another_store() {
    let s = loaded_busybox();
    let other = cairn_e2e::Store::new();
    let out = pipe(s.cmd(&["save", "busybox"]), other.cmd(&["load"]));
    assert_eq!(out, "Loaded image: busybox:latest\n");
    assert_eq!(other.inspect("busybox")["Id"], s.inspect("busybox")["Id"]);
    // An OCI archive too, through `-o -` and `-i -`.
    let third = cairn_e2e::Store::new();
    let out = pipe(
        s.cmd(&["save", "--format", "oci-archive", "-o", "-", "busybox"]),
        third.cmd(&["load", "-i", "-", "-t", "again:1"]),
    );
    assert_eq!(out, "Loaded image: again:1\n");
}

#[test]
fn build_writes_tars_to_standard_output() {
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let mut tar = Command::new("tar");
    tar.arg("t");
    let mut c = s.cmd(&["build", "-o", "-"]);
    c.arg(ctx.path());
    let listing = pipe(c, tar);
    assert!(
        listing.lines().any(|l| l.trim_start_matches("./") == "two"),
        "{listing}"
    );

    let mut tar = Command::new("tar");
    tar.arg("t");
    let mut c = s.cmd(&["build", "-o", "type=docker-archive,dest=-"]);
    c.arg(ctx.path());
    let listing = pipe(c, tar);
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");

    // Two outputs cannot share standard output, nor can -q's image ID.
    let out = s
        .cmd(&["build", "-o", "-", "-o", "type=oci,dest=-"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = s
        .cmd(&["build", "-q", "-o", "-"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(texts(&out).1.contains("-q"), "{}", texts(&out).1);
}

#[test]
fn cacheonly_records_the_cache_and_names_nothing() {
    let s = loaded_busybox();
    let ctx = context(DOCKERFILE);
    let before = s.run(&["images", "--format", "json"]);
    let mut c = s.cmd(&["build", "--progress", "plain", "-o", "type=cacheonly"]);
    c.arg(ctx.path());
    let (_, stderr) = texts(&ok(c));
    assert!(!stderr.contains("writing image"), "{stderr}");
    assert_eq!(s.run(&["images", "--format", "json"]), before);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meta.json");
    let mut c = s.cmd(&["build", "--metadata-file"]);
    c.arg(&file).arg(ctx.path());
    ok(c);
    assert_eq!(metadata(&file)["cairn.steps.cached"], 2);
}

#[test]
fn plain_progress_keeps_its_prefix_and_ends_a_failed_step_with_error() {
    let s = loaded_busybox();
    // A progress bar redrawn with carriage returns, then a step that fails.
    let ctx = context("FROM busybox\nRUN printf 'one\\rtwo\\rthree\\n'\nRUN echo going; exit 3\n");
    let out = s
        .cmd(&["build", "--progress", "plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    for word in ["one", "two", "three"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with('#') && l.ends_with(&format!(" {word}"))),
            "{word} on a line of its own: {stderr:?}"
        );
    }
    assert!(!stderr.contains('\r'), "{stderr:?}");
    let failed = stderr
        .lines()
        .find(|l| l.contains("RUN echo going; exit 3"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{failed} ERROR: "))),
        "{stderr}"
    );
}
