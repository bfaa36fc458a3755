//! Conformance of `cairn_parser::expand` with BuildKit's shell-lexer test data
#![allow(clippy::unwrap_used)]
//! (fixtures/conformance/shell-lexer, consumed as its README section 2 prescribes).

use std::collections::{BTreeMap, BTreeSet};

use cairn_parser::expand::Lexer;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/{name}",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/conformance/shell-lexer"
        )
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn report(file: &str, run: usize, expected_run: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{file}: {} of {run} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(run, expected_run, "{file}: number of lines run");
}

#[test]
fn env_var_test() {
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lexer = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for (index, raw) in fixture("envVarTest").lines().enumerate() {
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.trim().split('|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            panic!("envVarTest:{}: want 3 fields: {raw:?}", index + 1);
        };
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("envVarTest:{}: unknown platform {other:?}", index + 1),
        }
        run += 1;
        let actual = lexer.process_word(input, &env);
        let ok = match &actual {
            Ok(value) => expected != "error" && value == expected,
            Err(_) => expected == "error",
        };
        if !ok {
            failures.push(format!(
                "  line {}: {raw:?}\n    expected {expected:?}, got {actual:?}",
                index + 1
            ));
        }
    }
    report("envVarTest", run, 228, &failures);
}

#[test]
fn words_test() {
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut run, mut failures) = (0, Vec::new());
    for (index, raw) in fixture("wordsTest").lines().enumerate() {
        if raw.starts_with('#') {
            continue;
        }
        if let Some(definition) = raw.strip_prefix("ENV ") {
            // Trailing spaces in the value are significant.
            let definition = definition.trim_start_matches(' ');
            let (name, value) = definition.split_once('=').unwrap_or((definition, ""));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let parts: Vec<&str> = raw.split('|').collect();
        let [input, expected] = parts[..] else {
            panic!("wordsTest:{}: want exactly one '|': {raw:?}", index + 1);
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        run += 1;
        let actual = lexer
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_owned()]);
        if actual != expected {
            failures.push(format!(
                "  line {}: {raw:?}\n    expected {expected:?}, got {actual:?}",
                index + 1
            ));
        }
    }
    report("wordsTest", run, 24, &failures);
}

fn string_set(row: &Value, field: &str) -> BTreeSet<String> {
    row[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is not an array in {row}"))
        .iter()
        .map(|name| name.as_str().expect("names are strings").to_owned())
        .collect()
}

#[test]
fn process_word_cases() {
    let lexer = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for (index, raw) in fixture("process_word_cases.jsonl").lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("process_word_cases.jsonl:{}: {e}", index + 1));
        let id = row["id"].as_str().expect("id");
        let input = row["input"].as_str().expect("input");
        let env: BTreeMap<String, String> = row["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("env value").to_owned()))
            .collect();
        run += 1;
        let actual = lexer.process_word_with_matches(input, &env);
        let mut problems = Vec::new();
        match (&actual, row["error"].as_bool().expect("error")) {
            (Err(err), true) => {
                if let Some(want) = row.get("error_contains").and_then(Value::as_str)
                    && !err.message.contains(want)
                {
                    problems.push(format!("error should contain {want:?}"));
                }
            }
            (Ok(_), true) => problems.push("expected an error".to_owned()),
            (Err(_), false) => problems.push("unexpected error".to_owned()),
            (Ok(got), false) => {
                let want = row["expected"].as_str().expect("expected");
                if got.value != want {
                    problems.push(format!("value should be {want:?}"));
                }
                if row["check_sets"].as_bool() == Some(true) {
                    let (matched, unmatched) =
                        (string_set(&row, "matched"), string_set(&row, "unmatched"));
                    if got.matched != matched {
                        problems.push(format!("matched should be {matched:?}"));
                    }
                    if got.unmatched != unmatched {
                        problems.push(format!("unmatched should be {unmatched:?}"));
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "  {id}: {input:?} with {env:?}\n    {}; got {actual:?}",
                problems.join(", ")
            ));
        }
    }
    report("process_word_cases.jsonl", run, 56, &failures);
}
