//! Config, USER, WORKDIR and RUN-environment parity with BuildKit, through the real binary:
//! the image config as `cairn inspect` shows it and what RUN steps print in plain progress.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::{Store, context, loaded_busybox, ok, texts};

/// Builds `ctx` tagged `img` with plain progress; returns the progress (standard error).
fn build(s: &Store, ctx: &Path) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain", "-t", "img"]);
    c.arg(ctx);
    texts(&ok(c)).1
}

/// The lines RUN steps printed after `marker` (`echo marker...`), without the step prefixes.
fn printed(progress: &str, marker: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter(|l| l.starts_with(marker))
        .map(str::to_owned)
        .collect()
}

#[test]
fn workdir_after_user_is_made_as_that_user_and_keeps_its_spelling() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nUSER daemon\nWORKDIR /app/sub/\nRUN echo \"owner=$(stat -c %u:%g /app /app/sub | tr '\\n' ' ')\"\nUSER 4242\nWORKDIR /num\nRUN echo \"owner=$(stat -c %u:%g /num)\"\nUSER root\nWORKDIR rel/../r2\n",
    );
    let progress = build(&s, ctx.path());
    assert_eq!(
        printed(&progress, "owner="),
        ["owner=1:1 1:1 ", "owner=4242:4242"],
        "WORKDIR after USER makes its directories as that user (name: passwd's uid and gid; \
         a number: the number twice):\n{progress}"
    );
    let config = &s.inspect("img")["Config"];
    assert_eq!(
        config["WorkingDir"], "/num/r2",
        "a relative WORKDIR is joined and cleaned"
    );
    let ctx = context("FROM busybox\nWORKDIR /app/\n");
    build(&s, ctx.path());
    assert_eq!(
        s.inspect("img")["Config"]["WorkingDir"],
        "/app/",
        "an absolute WORKDIR is recorded as written, as BuildKit's NormalizeWorkdir does"
    );
}

#[test]
fn run_gets_home_from_passwd_and_the_config_does_not() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nRUN echo \"home=$HOME\"\nUSER daemon\nRUN echo \"home=$HOME\"\nUSER 4242\nRUN echo \"home=$HOME\"\nUSER root\nENV HOME=/mine\nRUN echo \"home=$HOME\"\n",
    );
    let progress = build(&s, ctx.path());
    assert_eq!(
        printed(&progress, "home="),
        ["home=/root", "home=/usr/sbin", "home=/", "home=/mine"],
        "{progress}"
    );
    let env = s.inspect("img")["Config"]["Env"].clone();
    let homes: Vec<_> = env
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.as_str().unwrap().starts_with("HOME="))
        .collect();
    assert_eq!(
        homes,
        ["HOME=/mine"],
        "only the ENV's HOME is in the config"
    );
}

#[test]
fn scratch_gets_the_default_path_and_root_workdir() {
    let s = Store::new();
    let ctx = context("FROM scratch\nENV A=1\n");
    build(&s, ctx.path());
    let config = &s.inspect("img")["Config"];
    assert_eq!(
        config["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1"
        ])
    );
    assert_eq!(config["WorkingDir"], "/");
}

#[test]
fn entrypoint_with_trailing_text_is_shell_form_as_buildkit_parses_it() {
    let s = Store::new();
    let ctx = context("FROM scratch\nENTRYPOINT [\"x\"] # comment\nCMD [\"y\"]   \n");
    build(&s, ctx.path());
    let config = &s.inspect("img")["Config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c", "[\"x\"] # comment"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["y"]));
}

#[test]
fn sandbox_hostname_and_hosts_are_buildkits() {
    let s = loaded_busybox();
    let ctx =
        context("FROM busybox\nRUN echo \"host=$(hostname)\" && sed 's/^/hosts=/' /etc/hosts\n");
    let progress = build(&s, ctx.path());
    assert_eq!(
        printed(&progress, "host"),
        [
            "host=buildkitsandbox",
            "hosts=127.0.0.1\tlocalhost buildkitsandbox",
            "hosts=::1\tlocalhost ip6-localhost ip6-loopback",
        ],
        "{progress}"
    );
}

#[test]
fn env_is_atomic_and_a_later_arg_beats_an_inherited_env() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox AS base\nENV a=one V=from-env\n\nFROM base\nENV a=two b=$a\nARG V=from-arg W=$a-$V\nRUN echo \"vals=$a $b $V $W\"\nLABEL v=$V\nENV V=env-again\nRUN echo \"again=$V\"\n",
    );
    let progress = build(&s, ctx.path());
    assert_eq!(
        printed(&progress, "vals="),
        ["vals=two one from-arg two-from-arg"],
        "ENV expands with the environment before it; an ARG with a value declared after \
         an inherited ENV wins, as in BuildKit (the ARG sets the state's env):\n{progress}"
    );
    assert_eq!(
        printed(&progress, "again="),
        ["again=env-again"],
        "an ENV after the ARG wins again:\n{progress}"
    );
    let config = &s.inspect("img")["Config"];
    assert_eq!(config["Labels"]["v"], "from-arg");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"b=one"), "{env:?}");
    assert!(env.contains(&"V=env-again"), "{env:?}");
}

/// A copy of the busybox layout whose image config says `WorkingDir: relwd`, as a malformed
/// image may (kaniko's mz725 case): config blob, manifest and index rewritten.
fn layout_with_relative_workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = cairn_e2e::busybox_layout();
    let layout = dir.path().join("l");
    ok({
        let mut c = cairn_e2e::tool("cp");
        c.arg("-a").arg(src).arg(&layout);
        c
    });
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &str| layout.join("blobs").join(d.replace(':', "/"));
    let put = |v: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(v).unwrap();
        let d = cairn_e2e::registry::sha256(&bytes);
        fs::write(blob(&d), &bytes).unwrap();
        (d, bytes.len())
    };
    let mut index = json(&layout.join("index.json"));
    let mut manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    config["config"]["WorkingDir"] = "relwd".into();
    let (d, n) = put(&config);
    manifest["config"]["digest"] = d.into();
    manifest["config"]["size"] = n.into();
    let (d, n) = put(&manifest);
    index["manifests"][0]["digest"] = d.into();
    index["manifests"][0]["size"] = n.into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn a_relative_base_workdir_is_joined_to_itself_as_buildkits_from_does() {
    let s = Store::new();
    let l = layout_with_relative_workdir();
    s.run(&[
        "load",
        "-i",
        l.path().join("l").to_str().unwrap(),
        "-t",
        "malformed",
    ]);
    let ctx = context("FROM malformed\nWORKDIR sub\nRUN pwd\n");
    let progress = build(&s, ctx.path());
    assert_eq!(
        s.inspect("img")["Config"]["WorkingDir"],
        "/relwd/relwd/sub",
        "{progress}"
    );
}
