//! `--env-file`: docker's format, `KEY=VALUE` lines, `#` comments, a bare `KEY` taken from
//! cairn's environment (left out when unset there).

use std::path::Path;

use crate::error::{Result, RunError, io_err};

/// The `KEY=VALUE` entries of `file`, in order; `lookup` gives a bare KEY's value.
pub fn read(file: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let bytes = std::fs::read(file).map_err(io_err("read", file))?;
    let text = String::from_utf8(bytes).map_err(|_| RunError::EnvFile {
        file: file.to_path_buf(),
        line: 0,
        reason: "not UTF-8 text".into(),
    })?;
    parse(&text, lookup).map_err(|(line, reason)| {
        RunError::EnvFile {
            file: file.to_path_buf(),
            line,
            reason,
        }
        .into()
    })
}

/// The entries of an env file's text, or the (1-based) line that is not one and why.
fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Vec<String>, (usize, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        // As docker: leading whitespace goes, the value keeps everything after the `=`.
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            return Err((i + 1, format!("no variable name before '=' in {raw:?}")));
        }
        if key.chars().any(char::is_whitespace) {
            return Err((i + 1, format!("variable {key:?} has white spaces")));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => out.extend(lookup(key).map(|v| format!("{key}={v}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "FROM_HOST").then(|| "h".to_owned())
    }

    #[test]
    fn lines_read_as_docker_reads_them() {
        for (text, want) in [
            ("A=1\nB=two words\n", vec!["A=1", "B=two words"]),
            ("# c\n\n  A=1\n", vec!["A=1"]),
            ("A=\n", vec!["A="]),
            ("A=x=y\n", vec!["A=x=y"]),
            ("FROM_HOST\nUNSET\n", vec!["FROM_HOST=h"]),
        ] {
            assert_eq!(parse(text, &env).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [("A=1\n=2\n", 2), ("A B=1\n", 1), ("# x\nBAD KEY\n", 2)] {
            assert_eq!(parse(text, &env).unwrap_err().0, line, "{text:?}");
        }
    }
}
