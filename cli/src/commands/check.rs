//! `cairn check` and `cairn build --check`: BuildKit's lint warnings as text with the lines
//! they are about, as BuildKit's JSON, or as GitHub Actions annotations.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use cairn_builder::context::BuildContext;
use cairn_builder::lint::{Checked, LintInput, check};
use cairn_layers::Store;
use cairn_layers::platform::Platform;
use serde_json::{Value, json};

use crate::args::CheckArgs;
use crate::check_args::CheckFormat;
use crate::commands::parse::{build_args, read_dockerfile};

/// What was linted, for the renderers.
struct Linted<'a> {
    /// The Dockerfile's name as the lines are shown under (`Dockerfile`).
    name: &'a str,
    /// Its path for GitHub annotations.
    path: &'a str,
    text: &'a str,
    checked: Checked,
}

pub fn run(store: Option<&Store>, args: &CheckArgs) -> anyhow::Result<()> {
    let context = &args.context;
    if !context.is_dir() {
        anyhow::bail!("build context {} is not a directory", context.display());
    }
    let (name, bytes) = read_dockerfile(args.file.as_deref(), context)?;
    let text = cairn_parser::decode(&name, &bytes)?;
    let platform = match &args.platform {
        Some(p) => crate::commands::registry::parse_platform(p)?,
        None => Platform::host(),
    };
    let build_args = build_args(&args.build_args);
    let dockerfile_path = args.file.clone().unwrap_or_else(|| context.join(&name));
    let ctx = BuildContext::open(context, Some(&dockerfile_path))?;
    let input = LintInput {
        dockerfile_name: &name,
        dockerfile: &text,
        target: args.target.as_deref(),
        platform: &platform,
        build_args: &build_args,
        all_stages: true,
    };
    let checked = check(store, input, &ctx)?;
    let path = dockerfile_path.to_string_lossy();
    report(
        &Linted {
            name: &name,
            path: &path,
            text: &text,
            checked,
        },
        args.format,
    )
}

/// `cairn build --check`: the build's Dockerfile, context and flags, linted, nothing built.
pub fn run_build(
    store: &Store,
    opts: &cairn_builder::build::BuildOptions,
    format: CheckFormat,
) -> anyhow::Result<()> {
    let ctx = match &opts.ignorefile {
        Some(f) => BuildContext::open_with_ignore(&opts.context, f)?,
        None => BuildContext::open(&opts.context, opts.dockerfile_path.as_deref())?,
    };
    let platform = opts
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::host);
    let input = LintInput {
        all_stages: true,
        ..LintInput::of_build(opts, &platform)
    };
    let checked = check(Some(store), input, &ctx)?;
    let path = opts
        .dockerfile_path
        .as_deref()
        .unwrap_or(Path::new(&opts.dockerfile_name))
        .to_string_lossy()
        .into_owned();
    report(
        &Linted {
            name: &opts.dockerfile_name,
            path: &path,
            text: &opts.dockerfile,
            checked,
        },
        format,
    )
}

/// Prints the result; an error when the Dockerfile does not parse or `error=true` and a rule
/// warned (so the exit status is not 0), as `docker build --check` fails.
fn report(l: &Linted<'_>, format: CheckFormat) -> anyhow::Result<()> {
    let violation = l.checked.report.violation();
    let out = match format {
        CheckFormat::Text => text(l),
        CheckFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json_result(l, violation.as_deref()))
                .context("failed to write the lint result")?;
            s.push('\n');
            s
        }
        CheckFormat::Github => github(l),
    };
    print!("{out}");
    if let Some(e) = &l.checked.error {
        return Err(anyhow::Error::new(e.clone()));
    }
    if let Some(v) = violation {
        anyhow::bail!(v);
    }
    Ok(())
}

fn text(l: &Linted<'_>) -> String {
    let lints = &l.checked.report.lints;
    let mut out = String::new();
    match lints.len() {
        0 => out.push_str("Check complete, no warnings found.\n"),
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => {
            let _ = writeln!(out, "Check complete, {n} warnings have been found!");
        }
    }
    for lint in lints {
        let _ = write!(out, "\nWARNING: {}", lint.rule.name);
        if let Some(url) = lint.rule.url {
            let _ = write!(out, " - {url}");
        }
        let _ = writeln!(out, "\n{}", lint.message);
        source(
            &mut out,
            l.name,
            l.text,
            lint.span.start.line,
            lint.span.end.line,
        );
    }
    out
}

/// The lines a warning is about with a few around them, marked `>>>`, as BuildKit prints a
/// source range.
fn source(out: &mut String, name: &str, text: &str, first: u32, last: u32) {
    let lines: Vec<&str> = text.split('\n').collect();
    let (mut start, mut end) = (first as usize, (last.max(first)) as usize);
    if start < 1 || start > lines.len() {
        return;
    }
    end = end.min(lines.len());
    let (marked_start, marked_end) = (start, end);
    let pad = if start == end { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let _ = writeln!(out, "{name}:{marked_start}\n--------------------");
    for (i, line) in lines.iter().enumerate().take(end).skip(start - 1) {
        let n = i + 1;
        let mark = if (marked_start..=marked_end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(out, " {n:>3} | {mark} {}", line.trim_end_matches('\r'));
    }
    out.push_str("--------------------\n");
}

/// BuildKit's `LintResults`: warnings with the rule, description, URL, detail and lines;
/// the source; and the build error, if any.
fn json_result(l: &Linted<'_>, violation: Option<&str>) -> Value {
    let range = |first: u32, last: u32| json!({"ranges": [{"start": {"line": first}, "end": {"line": last.max(first)}}]});
    let warnings: Vec<Value> = l
        .checked
        .report
        .lints
        .iter()
        .map(|w| {
            let mut v = json!({
                "ruleName": w.rule.name,
                "description": w.rule.description,
                "detail": w.message,
                "location": range(w.span.start.line, w.span.end.line),
            });
            if let Some(url) = w.rule.url {
                v["url"] = json!(url);
            }
            v
        })
        .collect();
    let mut result = json!({
        "warnings": warnings,
        "sources": [{
            "filename": l.name,
            "language": "Dockerfile",
            "data": crate::rawjson::b64(l.text.as_bytes()),
        }],
    });
    let error = match (&l.checked.error, violation) {
        (Some(e), _) => Some((e.to_string(), e.span.start.line, e.span.end.line)),
        (None, Some(v)) => {
            let first = l
                .checked
                .report
                .lints
                .first()
                .map_or(0, |w| w.span.start.line);
            Some((v.to_owned(), first, first))
        }
        (None, None) => None,
    };
    if let Some((message, first, last)) = error {
        let message = message.lines().next().unwrap_or_default().to_owned();
        result["buildError"] = json!({"message": message, "location": range(first, last)});
    }
    result
}

/// GitHub's escaping of a workflow command's message and of its properties.
fn gh_escape(s: &str, property: bool) -> String {
    let mut out = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

fn github(l: &Linted<'_>) -> String {
    let file = gh_escape(l.path, true);
    let mut out = String::new();
    for w in &l.checked.report.lints {
        let _ = writeln!(
            out,
            "::warning file={file},line={},endLine={},title={}::{}",
            w.span.start.line,
            w.span.end.line.max(w.span.start.line),
            gh_escape(w.rule.name, true),
            gh_escape(&w.message, false),
        );
    }
    if let Some(e) = &l.checked.error {
        let message = e.to_string();
        let _ = writeln!(
            out,
            "::error file={file},line={}::{}",
            e.span.start.line,
            gh_escape(message.lines().next().unwrap_or_default(), false),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lines_are_marked() {
        let text = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let mut out = String::new();
        source(&mut out, "Dockerfile", text, 4, 4);
        assert_eq!(
            out,
            "Dockerfile:4\n--------------------\n   2 |     b\n   3 |     c\n   4 | >>> d\n   5 |     e\n   6 |     f\n--------------------\n"
        );
        let mut out = String::new();
        source(&mut out, "Dockerfile", "FROM x\n", 1, 1);
        assert_eq!(
            out,
            "Dockerfile:1\n--------------------\n   1 | >>> FROM x\n   2 |     \n--------------------\n"
        );
    }

    #[test]
    fn github_escapes() {
        assert_eq!(gh_escape("a,b:c%\n", true), "a%2Cb%3Ac%25%0A");
        assert_eq!(gh_escape("a,b:c", false), "a,b:c");
    }
}
