//! `cairn parse`: a Dockerfile as typed JSON with the stage graph, or as BuildKit's AST dump.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_parser::{Directives, Dockerfile, Instruction, Stage, StageGraph, Warning};
use serde::Serialize;

use crate::args::{ParseArgs, ParseFormat};

/// The version of the JSON document below; bumped on any incompatible change.
const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    file: &'a str,
    directives: &'a Directives,
    global_args: &'a [Instruction],
    stages: &'a [Stage],
    graph: Graph<'a>,
    warnings: &'a [Warning],
}

#[derive(Serialize)]
struct Graph<'a> {
    #[serde(flatten)]
    resolved: &'a StageGraph,
    target: usize,
    /// The stages the target needs, in waves that can each be built in parallel.
    build_order: Vec<Vec<usize>>,
}

/// Reads the Dockerfile named by `-f`, or the default one in the context.
/// The Dockerfile's names in a context, in the order looked for: BuildKit falls back to a
/// lowercase `dockerfile`, podman to `Containerfile`.
pub const DOCKERFILE_NAMES: [&str; 3] = ["Dockerfile", "dockerfile", "Containerfile"];

pub fn read_dockerfile(file: Option<&Path>, context: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    match file {
        Some(p) if p == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("failed to read the Dockerfile from standard input")?;
            Ok(("<stdin>".to_owned(), buf))
        }
        Some(p) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("failed to read {}", p.display()))?;
            Ok((p.display().to_string(), bytes))
        }
        None => {
            let candidates: Vec<PathBuf> =
                DOCKERFILE_NAMES.iter().map(|n| context.join(n)).collect();
            for p in &candidates {
                if p.is_file() {
                    let bytes = std::fs::read(p)
                        .with_context(|| format!("failed to read {}", p.display()))?;
                    let shown = p.strip_prefix(".").unwrap_or(p);
                    return Ok((shown.display().to_string(), bytes));
                }
            }
            bail!(
                "no Dockerfile found: none of {}, {} or {} exists (use -f FILE)",
                candidates[0].display(),
                candidates[1].display(),
                candidates[2].display()
            )
        }
    }
}

/// `--build-arg K=V`, or `K` alone to take the value from the environment.
pub fn build_args(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_owned(), v.to_owned())),
            None => std::env::var(a).ok().map(|v| (a.clone(), v)),
        })
        .collect()
}

fn print_warnings(file: &str, warnings: &[Warning]) {
    let mut err = std::io::stderr().lock();
    for w in warnings {
        let _ = writeln!(err, "warning: {file}:{}: {}", w.span.start, w.message);
    }
}

pub fn run(args: &ParseArgs) -> anyhow::Result<()> {
    // A file where the context goes is the Dockerfile, as people try first.
    let (file, context) = match (&args.file, args.context.is_file()) {
        (None, true) => (
            Some(args.context.clone()),
            args.context
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
        ),
        _ => (args.file.clone(), args.context.clone()),
    };
    let (name, bytes) = read_dockerfile(file.as_deref(), &context)?;
    let src = cairn_parser::decode(&name, &bytes)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        ParseFormat::Ast => {
            let ast = cairn_parser::parse_ast(&name, &src)?;
            print_warnings(&name, &ast.warnings);
            writeln!(out, "{}", cairn_parser::dump(&ast))?;
        }
        ParseFormat::Json => {
            let df: Dockerfile = cairn_parser::parse(&name, &src)?;
            print_warnings(&name, &df.warnings);
            let graph = StageGraph::new(&df, &build_args(&args.build_args))
                .map_err(|e| locate(e, &name, &src))?;
            let target = graph
                .target(&df, args.target.as_deref())
                .map_err(|e| anyhow::anyhow!("{}", e.kind))?;
            let doc = Document {
                schema_version: SCHEMA_VERSION,
                file: &name,
                directives: &df.directives,
                global_args: &df.global_args,
                stages: &df.stages,
                graph: Graph {
                    resolved: &graph,
                    target,
                    build_order: graph.reachable(target),
                },
                warnings: &df.warnings,
            };
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Graph errors come from the parser crate without the file's text; add it for the caret.
fn locate(e: cairn_parser::ParseError, file: &str, src: &str) -> cairn_parser::ParseError {
    e.with_source(file, src)
}
