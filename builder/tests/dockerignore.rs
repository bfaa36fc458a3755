//! Conformance of the `.dockerignore` reader and matcher against fixtures/conformance/dockerignore.

use cairn_builder::ignore::{MatchInfo, Matcher};
use serde_json::Value;

fn rows(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/../fixtures/conformance/dockerignore/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{path} is not UTF-8: {e}"));
    text.split('\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: {e}: {line}")))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

/// patternmatcher's `MatchesUsingParentResults` test harness: the parent chain first (from
/// `filepath.Dir` split at `/`), then the path with its parent's information.
fn incremental(matcher: &Matcher, path: &str) -> Result<bool, String> {
    let parent = match path.rfind('/') {
        Some(i) => {
            let dir = path[..=i].trim_end_matches('/');
            if dir.is_empty() { "/" } else { dir }
        }
        None => ".",
    };
    let mut info = MatchInfo::default();
    if parent != "." {
        let dirs: Vec<&str> = parent.split('/').collect();
        for i in 0..dirs.len() {
            let ancestor = dirs[..=i].join("/");
            info = matcher
                .excluded_with_parent(&ancestor, &info)
                .map_err(|e| e.to_string())?
                .1;
        }
    }
    matcher
        .excluded_with_parent(path, &info)
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

#[test]
fn matcher_cases() {
    let rows = rows("cases.jsonl");
    let mut failures = Vec::new();
    for row in &rows {
        let id = row["id"].as_str().expect("id");
        let patterns = strings(&row["patterns"]);
        let path = row["path"].as_str().expect("path");
        let expect = row["expect"].as_str().expect("expect");
        let error_at = row["error_at"].as_str();
        let (outcome, failed_at_new) = match Matcher::new(&patterns) {
            Err(e) => {
                // Errors name the pattern.
                if !patterns
                    .iter()
                    .any(|p| e.to_string().contains(&format!("{p:?}")))
                {
                    failures.push(format!("{id}: error does not name the pattern: {e}"));
                }
                ("error", true)
            }
            Ok(m) => match m.excluded(path) {
                Err(e) => {
                    if !patterns
                        .iter()
                        .any(|p| e.to_string().contains(&format!("{p:?}")))
                    {
                        failures.push(format!("{id}: error does not name the pattern: {e}"));
                    }
                    ("error", false)
                }
                Ok(true) => ("match", false),
                Ok(false) => ("no-match", false),
            },
        };
        if outcome != expect {
            failures.push(format!(
                "{id}: {patterns:?} vs {path:?}: expected {expect}, got {outcome}"
            ));
            continue;
        }
        if expect == "error" && error_at == Some("new") && !failed_at_new {
            failures.push(format!(
                "{id}: expected the pattern list to be rejected by new"
            ));
        }
        // Every row gives the same answer through the incremental walk.
        if expect != "error" {
            let m = Matcher::new(&patterns).expect("compiled above");
            match incremental(&m, path) {
                Ok(got) if got == (expect == "match") => {}
                other => failures.push(format!(
                    "{id}: incremental: {patterns:?} vs {path:?}: expected {expect}, got {other:?}"
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows.len(), 144, "cases.jsonl row count");
}

#[test]
fn readall_cases() {
    let rows = rows("readall_cases.jsonl");
    let mut failures = Vec::new();
    for row in &rows {
        let id = row["id"].as_str().expect("id");
        let expected = strings(&row["expected"]);
        // `null` is "no file": no patterns.
        let got = match row["input"].as_str() {
            None => Ok(Vec::new()),
            Some(input) => Matcher::read_patterns(input),
        };
        match got {
            Ok(got) if got == expected => {}
            other => failures.push(format!("{id}: expected {expected:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows.len(), 20, "readall_cases.jsonl row count");
}

#[test]
fn pattern_list_cases() {
    let rows = rows("pattern_list_cases.jsonl");
    let mut failures = Vec::new();
    for row in &rows {
        let id = row["id"].as_str().expect("id");
        let patterns = strings(&row["patterns"]);
        let error = row["error"].as_bool().expect("error");
        match Matcher::new(&patterns) {
            Err(e) if error => {
                if !patterns
                    .iter()
                    .any(|p| e.to_string().contains(&format!("{p:?}")))
                {
                    failures.push(format!("{id}: error does not name the pattern: {e}"));
                }
            }
            Err(e) => failures.push(format!("{id}: {patterns:?} rejected: {e}")),
            Ok(_) if error => failures.push(format!("{id}: {patterns:?} accepted")),
            Ok(m) => {
                if let Some(n) = row["active_patterns"].as_u64()
                    && m.len() as u64 != n
                {
                    failures.push(format!("{id}: {} active patterns, expected {n}", m.len()));
                }
                if let Some(x) = row["has_exclusions"].as_bool()
                    && m.has_exceptions() != x
                {
                    failures.push(format!(
                        "{id}: has_exceptions {}, expected {x}",
                        m.has_exceptions()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rows.len(), 7, "pattern_list_cases.jsonl row count");
}
