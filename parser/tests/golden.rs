//! cairn's own golden cases: `fixtures/parser/ok/*.Dockerfile` parse to their `.golden` dump,
#![allow(clippy::unwrap_used)]
//! warnings and typed JSON; `fixtures/parser/err/*.Dockerfile` fail with their `.golden` message.
//! Set `CAIRN_UPDATE_GOLDEN=1` to rewrite the golden files after a deliberate change, then
//! review the diff.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cairn_parser::StageGraph;

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/parser")
        .join(kind)
}

fn inputs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir(kind))
        .expect("fixtures/parser present")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
        .collect();
    v.sort();
    v
}

/// Every `ARG` named in a `# build-arg K=V` comment of the case, for the graph.
fn case_args(src: &str) -> BTreeMap<String, String> {
    src.lines()
        .filter_map(|l| l.strip_prefix("# build-arg "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn render_ok(src: &str) -> Result<String, String> {
    let ast = cairn_parser::parse_ast("Dockerfile", src).map_err(|e| e.to_string())?;
    let df = cairn_parser::parse("Dockerfile", src).map_err(|e| e.to_string())?;
    let graph = StageGraph::new(&df, &case_args(src))
        .map_err(|e| e.with_source("Dockerfile", src).to_string())?;
    let target = graph.target(&df, None).map_err(|e| e.to_string())?;
    let mut out = String::from("# ast\n");
    out.push_str(&cairn_parser::dump(&ast));
    out.push_str("\n# warnings\n");
    for w in &df.warnings {
        out.push_str(&format!("{}: {}\n", w.span.start, w.message));
    }
    out.push_str("# build order\n");
    out.push_str(&format!("{:?}\n", graph.reachable(target)));
    out.push_str("# dockerfile\n");
    out.push_str(&serde_json::to_string_pretty(&df).map_err(|e| e.to_string())?);
    out.push_str("\n# graph\n");
    out.push_str(&serde_json::to_string_pretty(&graph).map_err(|e| e.to_string())?);
    out.push('\n');
    Ok(out)
}

fn render_err(bytes: &[u8]) -> Result<String, String> {
    let src = match cairn_parser::decode("Dockerfile", bytes) {
        Ok(s) => s,
        Err(e) => return Ok(format!("{e}\n")),
    };
    let df = match cairn_parser::parse("Dockerfile", &src) {
        Ok(df) => df,
        Err(e) => return Ok(format!("{e}\n")),
    };
    match StageGraph::new(&df, &case_args(&src)) {
        Ok(_) => Err("parsed without error".to_owned()),
        Err(e) => Ok(format!("{}\n", e.with_source("Dockerfile", &src))),
    }
}

fn check(kind: &str, render: impl Fn(&[u8]) -> Result<String, String>) {
    let update = std::env::var_os("CAIRN_UPDATE_GOLDEN").is_some();
    let cases = inputs(kind);
    assert!(
        cases.len() >= 5,
        "too few {kind} cases found in {}",
        dir(kind).display()
    );
    let mut failures = Vec::new();
    for input in &cases {
        let golden = input.with_extension("golden");
        let bytes = fs::read(input).expect("readable case");
        let got = match render(&bytes) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}", input.display()));
                continue;
            }
        };
        if update {
            fs::write(&golden, &got).expect("writable golden");
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{} differs from {}:\n--- want\n{want}--- got\n{got}",
                input.display(),
                golden.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ok_cases() {
    check("ok", |b| {
        render_ok(std::str::from_utf8(b).map_err(|e| e.to_string())?)
    });
}

#[test]
fn error_cases() {
    check("err", render_err);
}
