//! The build flags of `docker buildx build` and `podman build` that CI scripts pass, through the
//! real binary: accepted no-ops, build args from a file, an ignore file, pull policies, the
//! timestamp, edits of the final image, RUN's /etc/hosts, registry options, the warning for
//! unused build args, and the exit status of a usage error.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::{Store, context, context_with, loaded_busybox, ok, texts};

/// Builds `ctx` with `args`, insisting on success; returns standard error.
fn build(s: &Store, args: &[&str], ctx: &Path) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    texts(&ok(c)).1
}

/// Builds `ctx` with `args`, insisting on failure; returns standard error.
fn build_fails(s: &Store, args: &[&str], ctx: &Path) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    let out = c.args(args).arg(ctx).output().unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// The manifest and config of the first image of an OCI layout.
fn layout_image(layout: &Path) -> (serde_json::Value, serde_json::Value) {
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs")
            .join(d["digest"].as_str().unwrap().replace(':', "/"))
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]));
    let config = json(&blob(&manifest["config"]));
    (manifest, config)
}

#[test]
fn docker_and_podman_no_op_flags_are_accepted_without_a_word() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nLABEL a=b\n");
    let err = build(
        &s,
        &[
            "--rm",
            "--force-rm",
            "--layers",
            "--layers=false",
            "--rm=true",
            "--force-rm=false",
            "-t",
            "img",
        ],
        ctx.path(),
    );
    assert!(!err.to_lowercase().contains("warning"), "{err}");
    assert_eq!(s.inspect("img")["Config"]["Labels"]["a"], "b");
}

#[test]
fn a_usage_error_exits_125_as_docker_and_podman_do() {
    let s = Store::new();
    let ctx = context("FROM busybox\n");
    for bad in [&["--nope"][..], &["--pull=sometimes"], &["--layers=maybe"]] {
        let out = s
            .cmd(&["build"])
            .args(bad)
            .arg(ctx.path())
            .output()
            .unwrap();
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(125), "{bad:?}: {stderr}");
        assert!(
            stderr.contains(bad[0].split('=').next().unwrap()),
            "{stderr}"
        );
    }
    // Help and the version are not errors.
    for ok_args in [&["build", "--help"][..], &["--version"]] {
        let out = s.cmd(ok_args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{ok_args:?}");
    }
}

#[test]
fn build_arg_files_give_args_that_build_arg_overrides_and_unused_ones_are_named() {
    let s = loaded_busybox();
    let ctx = context_with(
        "FROM busybox\nARG A\nARG B\nLABEL a=$A b=$B\n",
        &[(
            "args.conf",
            "# CI's defaults\nA=from-file\n\n  B=b value = kept\nUNUSED_TOO=1\n",
        )],
    );
    let file = ctx.path().join("args.conf");
    let err = build(
        &s,
        &[
            "--build-arg-file",
            file.to_str().unwrap(),
            "--build-arg",
            "A=from-flag",
            "--build-arg",
            "NOPE=1",
            "--build-arg",
            "HTTP_PROXY=http://proxy.invalid",
            "-t",
            "img",
        ],
        ctx.path(),
    );
    let labels = &s.inspect("img")["Config"]["Labels"];
    assert_eq!(labels["a"], "from-flag");
    assert_eq!(labels["b"], "b value = kept");
    // BuildKit's words; a proxy arg is never reported.
    assert!(
        err.contains("[Warning] One or more build-args [NOPE UNUSED_TOO] were not consumed"),
        "{err}"
    );

    // An arg only a stage the target does not need declares is unused too.
    let ctx = context("FROM busybox AS other\nARG ONLY_OTHER\nFROM busybox\nARG USED\n");
    let err = build(
        &s,
        &["--build-arg", "ONLY_OTHER=1", "--build-arg", "USED=1"],
        ctx.path(),
    );
    assert!(
        err.contains("build-args [ONLY_OTHER] were not consumed"),
        "{err}"
    );

    // A line that is not KEY=VALUE fails the build, named by file and line.
    fs::write(&file, "# fine\nA=1\nnot an assignment\n").unwrap();
    let err = build_fails(
        &s,
        &["--build-arg-file", file.to_str().unwrap()],
        ctx.path(),
    );
    assert!(err.contains("--build-arg-file"), "{err}");
    assert!(err.contains("args.conf:3"), "{err}");
}

#[test]
fn ignorefile_replaces_the_contexts_dockerignore() {
    let s = loaded_busybox();
    let ctx = context_with(
        "FROM busybox\nCOPY . /c/\n",
        &[
            ("keep.txt", "k"),
            ("drop.txt", "d"),
            (".dockerignore", "keep.txt\n"),
        ],
    );
    let other = tempfile::tempdir().unwrap();
    let ignore = other.path().join("ci.ignore");
    fs::write(&ignore, "# the CI's own\ndrop.txt\n").unwrap();
    let (_dir, out, _) = s.build_local(&["--ignorefile", ignore.to_str().unwrap()], ctx.path());
    assert!(out.join("c/keep.txt").is_file());
    assert!(out.join("c/.dockerignore").is_file());
    assert!(!out.join("c/drop.txt").exists());

    let missing = other.path().join("missing.ignore");
    let err = build_fails(&s, &["--ignorefile", missing.to_str().unwrap()], ctx.path());
    assert!(err.contains("--ignorefile"), "{err}");
    assert!(err.contains("missing.ignore"), "{err}");
}

#[test]
fn pull_policies_decide_when_the_registry_is_asked() {
    let s = loaded_busybox();
    // A registry that refuses at once: port 1 of loopback.
    s.run(&["tag", "busybox", "localhost:1/busybox:latest"]);
    let ctx = context("FROM localhost:1/busybox\nLABEL x=y\n");
    // No retries: a refused connection would otherwise be tried again for seconds.
    for policy in [
        "--pull=missing",
        "--pull=never",
        "--pull=false",
        "--pull=newer",
    ] {
        build(&s, &[policy, "--retry", "0"], ctx.path());
    }
    // Asked every time, and the registry's failure is the build's.
    for policy in ["--pull", "--pull=always", "--pull=true"] {
        let err = build_fails(&s, &[policy, "--retry", "0"], ctx.path());
        assert!(err.contains("localhost:1"), "{policy}: {err}");
    }
    // Never: what the store lacks is not looked for.
    let ctx = context("FROM localhost:1/absent\n");
    let err = build_fails(&s, &["--pull=never"], ctx.path());
    assert!(err.contains("localhost:1/absent"), "{err}");
    assert!(!err.contains("pulling"), "{err}");
}

#[test]
fn timestamp_and_source_date_epoch_set_the_creation_time() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nLABEL a=b\n");
    for flag in ["--timestamp", "--source-date-epoch"] {
        build(&s, &[flag, "1700000000", "-t", "img"], ctx.path());
        assert_eq!(
            s.inspect("img")["Created"],
            "2023-11-14T22:13:20Z",
            "{flag}"
        );
    }
    // The flag wins over the environment.
    let mut c = s.cmd(&["build", "-q", "--timestamp", "1700000000", "-t", "env"]);
    c.arg(ctx.path()).env("SOURCE_DATE_EPOCH", "0");
    ok(c);
    assert_eq!(s.inspect("env")["Created"], "2023-11-14T22:13:20Z");
}

#[test]
fn env_unsetenv_unsetlabel_omit_history_and_annotations_edit_the_final_image() {
    let s = loaded_busybox();
    let ctx =
        context("FROM busybox\nENV KEEP=1 DROP=2\nLABEL keep=1 drop=2\nRUN echo $DROP >/seen\n");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    build(
        &s,
        &[
            "--env",
            "NEW=a=b",
            "--env",
            "KEEP=changed",
            "--unsetenv",
            "DROP",
            "--unsetlabel",
            "drop",
            "--label",
            "added=x",
            "--omit-history",
            "--annotation",
            "org.example.plain=1",
            "--annotation",
            "manifest:org.example.level=url:http://x",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
            "-o",
            &format!("type=local,dest={}", out.path().join("fs").display()),
        ],
        ctx.path(),
    );
    let (manifest, config) = layout_image(&layout);
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"KEEP=changed"), "{env:?}");
    assert!(env.contains(&"NEW=a=b"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("DROP=")), "{env:?}");
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["keep"], "1");
    assert_eq!(labels["added"], "x");
    assert!(labels.get("drop").is_none(), "{labels}");
    assert!(config.get("history").is_none(), "{config}");
    let a = &manifest["annotations"];
    assert_eq!(a["org.example.plain"], "1", "{manifest}");
    assert_eq!(a["org.example.level"], "url:http://x", "{manifest}");
    // The steps saw the Dockerfile's environment: the edits are the final image's only.
    assert_eq!(
        fs::read_to_string(out.path().join("fs/seen")).unwrap(),
        "2\n"
    );

    // Other levels are refused by name.
    let err = build_fails(&s, &["--annotation", "index:a=b"], ctx.path());
    assert!(
        err.contains("--annotation") && err.contains("index"),
        "{err}"
    );
}

#[test]
fn add_host_lines_reach_run_steps_etc_hosts() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nRUN cat /etc/hosts\n");
    let err = build(
        &s,
        &[
            "--add-host",
            "db.example.test:10.1.2.3",
            "--add-host",
            "v6.example.test=[fd00::1]",
        ],
        ctx.path(),
    );
    assert!(err.contains("10.1.2.3\tdb.example.test"), "{err}");
    assert!(err.contains("fd00::1\tv6.example.test"), "{err}");
    assert!(err.contains("localhost"), "{err}");

    let err = build_fails(&s, &["--add-host", "db:not-an-ip"], ctx.path());
    assert!(
        err.contains("--add-host") && err.contains("not-an-ip"),
        "{err}"
    );
}

#[test]
fn registry_flags_are_taken_and_checked() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nLABEL a=b\n");
    build(
        &s,
        &[
            "--creds",
            "user:secret",
            "--retry",
            "0",
            "--retry-delay",
            "1s",
        ],
        ctx.path(),
    );
    let err = build_fails(&s, &["--retry-delay", "soon"], ctx.path());
    assert!(err.contains("--retry-delay"), "{err}");
}

#[test]
fn ulimit_and_shm_size_reach_run_steps() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\nRUN echo soft=$(ulimit -n) hard=$(ulimit -Hn) && df -k /dev/shm | tail -n 1\n",
    );
    let err = build(
        &s,
        &["--ulimit", "nofile=512:1024", "--shm-size", "32m"],
        ctx.path(),
    );
    assert!(err.contains("soft=512 hard=1024"), "{err}");
    // df's second column: the tmpfs's size in KiB.
    let shm = err
        .lines()
        .find(|l| l.trim_end().ends_with(" /dev/shm"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(shm.split_whitespace().any(|w| w == "32768"), "{shm}");

    for (flag, bad) in [
        ("--ulimit", "nofiles=1"),
        ("--ulimit", "nofile=2:1"),
        ("--shm-size", "lots"),
    ] {
        let err = build_fails(&s, &[flag, bad], ctx.path());
        assert!(err.contains(flag), "{err}");
    }
}
