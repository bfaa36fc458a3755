//! `cairn parse` through the real binary: BuildKit's dumps, JSON with the stage graph, errors.
#![allow(clippy::unwrap_used)]

use std::fs;

use cairn_e2e::{cairn, repo_root, run_with_stdin, texts};

fn conformance() -> std::path::PathBuf {
    repo_root().join("fixtures/conformance/dockerfile-parser")
}

#[test]
fn version_and_help() {
    let out = cairn().arg("--version").output().unwrap();
    let (stdout, _) = texts(&out);
    assert!(out.status.success());
    assert_eq!(
        stdout.trim(),
        format!("cairn {}", env!("CARGO_PKG_VERSION"))
    );
    let out = cairn().arg("--help").output().unwrap();
    let (stdout, _) = texts(&out);
    assert!(out.status.success());
    assert!(stdout.contains("parse"), "{stdout}");
}

#[test]
fn ast_reproduces_buildkit_dumps_and_rejects_negative_cases() {
    let (mut dumps, mut negatives) = (0, 0);
    for entry in fs::read_dir(conformance()).unwrap() {
        let dir = entry.unwrap().path();
        let out = cairn()
            .args(["parse", "--format", "ast", "-f"])
            .arg(dir.join("Dockerfile"))
            .output()
            .unwrap();
        let (stdout, stderr) = texts(&out);
        if dir.join("result").exists() {
            dumps += 1;
            assert!(out.status.success(), "{}: {stderr}", dir.display());
            assert_eq!(
                out.stdout,
                fs::read(dir.join("result")).unwrap(),
                "{}: {stdout}",
                dir.display()
            );
        } else if dir.join("expect-error").exists() {
            negatives += 1;
            assert_eq!(out.status.code(), Some(1), "{}", dir.display());
            assert!(stdout.is_empty());
            assert!(stderr.starts_with("error: "), "{stderr}");
            assert!(stderr.contains("Dockerfile:"), "names the file: {stderr}");
        }
    }
    assert_eq!((dumps, negatives), (33, 4));
}

#[test]
fn json_shows_stage_edges_and_build_order() {
    let ctx = repo_root().join("fixtures/examples/hello");
    let out = cairn().arg("parse").arg(&ctx).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["schema_version"], 1);
    let names: Vec<&str> = doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(names, ["build", "docs", "-"]);
    let edges: Vec<(u64, u64, &str)> = doc["graph"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stage"].as_u64().unwrap(),
                e["needs"].as_u64().unwrap(),
                e["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(edges, [(2, 0, "copy-from"), (2, 1, "copy-from")]);
    assert_eq!(
        doc["graph"]["build_order"],
        serde_json::json!([[0, 1], [2]])
    );
    assert_eq!(
        doc["graph"]["bases"],
        serde_json::json!(["busybox", "scratch", "busybox"])
    );
    // Every instruction carries its span as [line, col] pairs.
    let copy = &doc["stages"][2]["instructions"][1];
    assert_eq!(copy["instruction"], "COPY");
    assert_eq!(copy["from"], "build");
    assert_eq!(copy["span"]["start"], serde_json::json!([18, 1]));

    // --target and --build-arg reach the graph.
    let out = cairn()
        .args(["parse", "--target", "DOCS", "--build-arg", "BASE=debian:12"])
        .arg(&ctx)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["graph"]["target"], 1);
    assert_eq!(doc["graph"]["build_order"], serde_json::json!([[1]]));
    assert_eq!(doc["graph"]["bases"][0], "debian:12");
}

#[test]
fn errors_name_file_line_column_with_a_caret() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox\n\nRUNN echo hi\n",
    )
    .unwrap();
    let out = cairn().arg("parse").arg(dir.path()).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.is_empty());
    let want_loc = format!(
        "{}:3:1: unknown instruction: RUNN (did you mean RUN?)",
        dir.path().join("Dockerfile").display()
    );
    assert!(stderr.contains(&want_loc), "{stderr}");
    assert!(stderr.contains("3 | RUNN echo hi\n  | ^^^^"), "{stderr}");
}

#[test]
fn stdin_containerfile_and_missing_file() {
    let out = run_with_stdin(
        {
            let mut c = cairn();
            c.args(["parse", "--format", "ast", "-f", "-"]);
            c
        },
        b"FROM scratch\nCOPY --link a /b\n",
    );
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "(from \"scratch\")\n(copy [\"--link\"] \"a\" \"/b\")\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = cairn().arg("parse").arg(dir.path()).output().unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no Dockerfile found"), "{stderr}");

    fs::write(dir.path().join("Containerfile"), "FROM scratch\n").unwrap();
    let out = cairn()
        .args(["parse", "--format", "ast"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(texts(&out).0, "(from \"scratch\")\n");
}

#[test]
fn warnings_go_to_stderr() {
    let out = run_with_stdin(
        {
            let mut c = cairn();
            c.args(["parse", "--format", "ast", "-f", "-"]);
            c
        },
        b"FROM scratch\nRUN a \\\n\n  b\n",
    );
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success());
    assert_eq!(stdout, "(from \"scratch\")\n(run \"a   b\")\n");
    assert!(
        stderr.contains("warning: <stdin>:3:1: empty continuation line"),
        "{stderr}"
    );
}

#[test]
fn a_file_where_the_context_goes_is_the_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile.prod");
    fs::write(&file, "FROM scratch AS base\nCOPY a b\n").unwrap();
    let by_flag = cairn()
        .args(["parse", "--format", "ast", "-f"])
        .arg(&file)
        .arg(dir.path())
        .output()
        .unwrap();
    let by_path = cairn()
        .args(["parse", "--format", "ast"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(by_path.status.success(), "{}", texts(&by_path).1);
    assert_eq!(texts(&by_path).0, texts(&by_flag).0);
    assert!(texts(&by_path).0.contains("(copy \"a\" \"b\")"));
    // The file's name shows in errors, as with -f.
    fs::write(&file, "FROM scratch\nRUNN x\n").unwrap();
    let bad = cairn().arg("parse").arg(&file).output().unwrap();
    assert!(
        texts(&bad).1.contains("Dockerfile.prod:2:1"),
        "{}",
        texts(&bad).1
    );
}
