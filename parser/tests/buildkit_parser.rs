//! BuildKit's parser test files: dumps byte for byte, the must-fail cases, and line numbers.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/conformance/dockerfile-parser")
}

fn read(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each case directory with the expectation file it holds.
fn cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(cases_dir())
        .expect("conformance data present")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

#[test]
fn dumps_match_buildkit() {
    let mut failures = Vec::new();
    let mut run = 0;
    for (name, dir) in cases() {
        let result = dir.join("result");
        if !result.exists() {
            continue;
        }
        run += 1;
        let src = read(&dir.join("Dockerfile"));
        match cairn_parser::parse_ast("Dockerfile", &src) {
            Ok(ast) => {
                let got = cairn_parser::dump(&ast) + "\n";
                let want = read(&result);
                if got != want {
                    failures.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: unexpected error: {e}")),
        }
    }
    assert_eq!(run, 33, "expected 33 dump cases");
    assert!(
        failures.is_empty(),
        "{} of {run} dumps differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail() {
    let mut run = 0;
    for (name, dir) in cases() {
        if !dir.join("expect-error").exists() {
            continue;
        }
        run += 1;
        let src = read(&dir.join("Dockerfile"));
        let err = cairn_parser::parse_ast("Dockerfile", &src);
        assert!(err.is_err(), "{name} must fail to parse");
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with("Dockerfile:"),
            "{name}: error names the file: {err}"
        );
    }
    assert_eq!(run, 4, "expected 4 must-fail cases");
}

#[test]
fn line_numbers() {
    let dir = cases_dir().join("testfile-line");
    let src = read(&dir.join("Dockerfile"));
    let want: serde_json::Value = serde_json::from_str(&read(&dir.join("lines.json"))).unwrap();
    let ast = cairn_parser::parse_ast("Dockerfile", &src).unwrap();
    let lines: Vec<[u64; 2]> = ast
        .nodes
        .iter()
        .map(|n| [n.span.start.line as u64, n.span.end.line as u64])
        .collect();
    let want_children: Vec<[u64; 2]> = serde_json::from_value(want["children"].clone()).unwrap();
    assert_eq!(lines, want_children);
    assert_eq!(lines.first().unwrap()[0], want["start"].as_u64().unwrap());
    assert_eq!(lines.last().unwrap()[1], want["end"].as_u64().unwrap());
}

#[test]
fn warnings_for_empty_continuation_lines() {
    let expected = [
        ("brimstone-consuldock", 1),
        ("brimstone-docker-consul", 2),
        ("continueIndent", 1),
        ("escapes", 1),
    ];
    for (name, count) in expected {
        let src = read(&cases_dir().join(name).join("Dockerfile"));
        let ast = cairn_parser::parse_ast("Dockerfile", &src).unwrap();
        assert_eq!(ast.warnings.len(), count, "{name}");
    }
}

/// The typed layer must never panic on these files; where it refuses one, the error names a
/// location inside the file.
#[test]
fn typed_parse_of_every_case_is_clean() {
    for (name, dir) in cases() {
        let src = read(&dir.join("Dockerfile"));
        if let Err(e) = cairn_parser::parse("Dockerfile", &src) {
            let lines = src.lines().count().max(1) as u32;
            assert!(
                e.span.start.line >= 1 && e.span.start.line <= lines,
                "{name}: {e}"
            );
        }
    }
}
