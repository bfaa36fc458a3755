//! The history lines BuildKit's dockerfile2llb writes: `ARG k=v ...` (dispatchArg), the
//! `|N k=v ...` prefix of a RUN (runCommandString), and the metadata instructions' lines, built
//! with Go's `%v` and `%q` of the values they set.

use std::collections::HashMap;

/// One ARG declaration of a stage, as BuildKit keeps it in `buildArgs`: the name and the value
/// it resolved to (a build arg's, the expanded default, or the global's), none for a bare name
/// nothing gave a value.
pub type ArgDecl = (String, Option<String>);

/// `ARG k=v k2 ...` for the declarations of one ARG instruction.
pub fn arg_line(decls: &[ArgDecl]) -> String {
    let parts: Vec<String> = decls
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    format!("ARG {}", parts.join(" "))
}

/// `|N k=v ...` for a RUN (empty when the stage declared no ARG): each name once, where it
/// was first declared, with the value the step environment `env` (`k=v` entries) has for it,
/// else the last declared value, else empty.
pub fn run_prefix(decls: &[ArgDecl], env: &[String]) -> String {
    if decls.is_empty() {
        return String::new();
    }
    let env: HashMap<&str, &str> = env
        .iter()
        .map(|e| e.split_once('=').unwrap_or((e.as_str(), "")))
        .collect();
    let mut order: Vec<&str> = Vec::new();
    let mut values: HashMap<&str, &str> = HashMap::new();
    for (k, v) in decls {
        let value = env
            .get(k.as_str())
            .copied()
            .unwrap_or_else(|| v.as_deref().unwrap_or(""));
        if values.insert(k, value).is_none() {
            order.push(k);
        }
    }
    let mut out = format!("|{}", order.len());
    for k in order {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.push_str(values[k]);
    }
    out
}

/// What BuildKit's COPY/ADD history line names.
#[derive(Debug)]
pub struct CopyLine<'a> {
    pub is_add: bool,
    pub parents: bool,
    pub chown: Option<&'a str>,
    pub chmod: Option<&'a str>,
    /// Source paths and URLs, expanded.
    pub paths: &'a [String],
    /// Heredoc sources as `<<NAME`.
    pub docs: &'a [String],
    pub dest: &'a str,
}

/// BuildKit's COPY/ADD line (dispatchCopy's commit message): the keyword, `--parents`,
/// `--chown=`, `--chmod=`, the sources and the destination as expanded, and no other flag
/// (`--from`, `--link`, `--exclude` are not named).
pub fn copy_line(c: &CopyLine<'_>) -> String {
    let mut out = String::from(if c.is_add { "ADD" } else { "COPY" });
    if c.parents {
        out.push_str(" --parents");
    }
    if let Some(u) = c.chown.filter(|u| !u.is_empty()) {
        out.push_str(" --chown=");
        out.push_str(u);
    }
    if let Some(m) = c.chmod.filter(|m| !m.is_empty()) {
        out.push_str(" --chmod=");
        out.push_str(m);
    }
    for p in c.paths.iter().chain(c.docs) {
        out.push(' ');
        out.push_str(p);
    }
    out.push(' ');
    out.push_str(c.dest);
    out.push_str(" # buildkit");
    out
}

/// The history entry a metadata instruction gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaLine {
    /// The instruction as written, with BuildKit's ` # buildkit` (EXPOSE, HEALTHCHECK).
    AsWritten,
    /// BuildKit's own line for it.
    Line(String),
    /// No entry: BuildKit's dispatchOnbuild commits none.
    Nothing,
}

/// Go's `%v` of a string slice: `[a b c]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a string slice: `["a" "b"]`, each as strconv.Quote writes it.
pub fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// strconv.Quote: `"` and `\` escaped, control characters as Go escapes them, the rest kept.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String` of `nanos`: `0s`, `500ns`, `1.5µs`, `100ms`, `1m30s`, `2h0m0s`.
pub fn go_duration(nanos: i64) -> String {
    /// `n / div` with its remainder as trimmed decimals.
    fn frac(n: u64, div: u64) -> String {
        let (int, rem) = (n / div, n % div);
        if rem == 0 {
            return int.to_string();
        }
        let width = div.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let secs = u / 1_000_000_000;
        let sec = frac(secs % 60 * 1_000_000_000 + u % 1_000_000_000, 1_000_000_000);
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            format!("{h}h{m}m{sec}s")
        } else if m > 0 {
            format!("{m}m{sec}s")
        } else {
            format!("{sec}s")
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(k: &str, v: Option<&str>) -> ArgDecl {
        (k.to_owned(), v.map(str::to_owned))
    }

    #[test]
    fn lines_are_buildkits() {
        let decls = [
            d("foo", Some("bar")),
            d("bar", Some("123")),
            d("foo", Some("bar2")),
            d("bare", None),
        ];
        let env = ["PATH=/bin".to_owned(), "bar=env".to_owned()];
        let cases: [(&[ArgDecl], &[String], &str); 4] = [
            (&decls, &env, "|3 foo=bar2 bar=env bare="),
            (&decls[..1], &[], "|1 foo=bar"),
            (&[], &env, ""),
            (&[d("a", None)], &["a=x".to_owned()], "|1 a=x"),
        ];
        for (decls, env, want) in cases {
            assert_eq!(run_prefix(decls, env), want, "{decls:?} {env:?}");
        }
        assert_eq!(arg_line(&decls[2..]), "ARG foo=bar2 bare");
    }

    #[test]
    fn go_formats() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            go_quoted_list(&v(&["/bin/sh", "-c", "echo \"hi\"\\n\tx\u{1}é"])),
            r#"["/bin/sh" "-c" "echo \"hi\"\\n\tx\x01é"]"#
        );
        assert_eq!(go_list(&v(&["/bin/bash", "-c"])), "[/bin/bash -c]");
        assert_eq!(go_list(&[]), "[]");
        let durations = [
            (0, "0s"),
            (500, "500ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (7_200_000_000_000, "2h0m0s"),
            (-3_000_000_000, "-3s"),
        ];
        for (n, want) in durations {
            assert_eq!(go_duration(n), want, "{n}");
        }
    }
}
