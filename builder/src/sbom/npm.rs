//! npm packages: a `node_modules`' hidden lockfile (`.package-lock.json`), the `package.json` of
//! each package in it, and an application's `package-lock.json` (v1, v2 and v3).

use serde_json::Value;

use super::{Ecosystem, Package};

/// The packages a lockfile lists (docs.npmjs.com, "package-lock.json"): v2 and v3 under
/// `packages`, keyed by their path (`node_modules/a/node_modules/@s/b`); v1 under nested
/// `dependencies`. The root entry (`""`, the project itself) and links to workspace folders
/// are not installed packages. Err when the file is not a JSON object.
pub fn parse_lock(text: &[u8], source: &str) -> Result<Vec<Package>, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let mut out = Vec::new();
    if let Some(packages) = obj.get("packages").and_then(Value::as_object) {
        for (path, entry) in packages {
            let Some((_, tail)) = path.rsplit_once("node_modules/") else {
                continue;
            };
            if entry.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            // An aliased dependency (`"a": "npm:b@1"`) is installed under its alias and names
            // its package in `name`.
            let name = text_of(entry, "name").unwrap_or(tail);
            if let Some(p) = package(name, entry, source) {
                out.push(p);
            }
        }
    } else if let Some(deps) = obj.get("dependencies").and_then(Value::as_object) {
        v1(deps, source, &mut out);
    }
    Ok(out)
}

/// Lockfile v1's tree; serde_json's recursion limit bounds its depth.
fn v1(deps: &serde_json::Map<String, Value>, source: &str, out: &mut Vec<Package>) {
    for (name, entry) in deps {
        if let Some(p) = package(name, entry, source) {
            out.push(p);
        }
        if let Some(nested) = entry.get("dependencies").and_then(Value::as_object) {
            v1(nested, source, out);
        }
    }
}

/// An installed package's own `package.json`. Err when it is not JSON; None when it names no
/// package or version (a folder of a package's own, not a package).
pub fn parse_manifest(text: &[u8], source: &str) -> Result<Option<Package>, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    Ok(text_of(&v, "name").and_then(|name| package(name, &v, source)))
}

fn package(name: &str, entry: &Value, source: &str) -> Option<Package> {
    let version = text_of(entry, "version")?;
    if name.is_empty() || version.starts_with("file:") || version.starts_with("link:") {
        return None;
    }
    // `license` is an SPDX expression; old packages give `{ "type": ... }`.
    let license = text_of(entry, "license").or_else(|| {
        entry
            .get("license")
            .and_then(|l| l.get("type"))
            .and_then(Value::as_str)
    });
    let author = match entry.get("author") {
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(a @ Value::Object(_)) => text_of(a, "name").map(|n| match text_of(a, "email") {
            Some(e) => format!("{n} <{e}>"),
            None => n.to_owned(),
        }),
        _ => None,
    };
    Some(Package {
        ecosystem: Ecosystem::Npm,
        name: name.to_owned(),
        version: version.to_owned(),
        arch: None,
        license: license.map(str::to_owned),
        supplier: None,
        originator: author.filter(|a| !a.is_empty()),
        source_package: None,
        source: source.to_owned(),
    })
}

fn text_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 lockfile as npm 9 writes it (the hidden lockfile has the same shape).
    const V3: &str = r#"{
  "name": "app",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": { "name": "app", "version": "1.0.0", "license": "ISC",
          "dependencies": { "@babel/code-frame": "^7.22.13", "ms": "2.1.3", "lp": "npm:left-pad@1.3.0" } },
    "node_modules/@babel/code-frame": {
      "version": "7.22.13",
      "resolved": "https://registry.npmjs.org/@babel/code-frame/-/code-frame-7.22.13.tgz",
      "integrity": "sha512-XktuhWlJ5g+3TJXc5upd9Ks1HutSArik6jf2eAjYFyIOf4ej3RN+184cZbzDvbPnuTJIUhPKKJE3cIsYTiAT3w==",
      "dependencies": { "chalk": "^2.4.2" },
      "engines": { "node": ">=6.9.0" }
    },
    "node_modules/@babel/code-frame/node_modules/chalk": {
      "version": "2.4.2", "license": "MIT", "dev": true
    },
    "node_modules/ms": { "version": "2.1.3", "license": "MIT" },
    "node_modules/lp": { "name": "left-pad", "version": "1.3.0", "license": "WTFPL" },
    "node_modules/workspace-a": { "resolved": "packages/a", "link": true },
    "packages/a": { "name": "workspace-a", "version": "0.1.0" }
  }
}"#;

    /// A v1 lockfile (npm 6).
    const V1: &str = r#"{
  "name": "old", "version": "1.0.0", "lockfileVersion": 1, "requires": true,
  "dependencies": {
    "debug": { "version": "2.6.9", "requires": { "ms": "2.0.0" },
               "dependencies": { "ms": { "version": "2.0.0" } } },
    "ms": { "version": "2.1.3" }
  }
}"#;

    fn got(p: &[Package]) -> Vec<(&str, &str, Option<&str>)> {
        p.iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.license.as_deref()))
            .collect()
    }

    #[test]
    fn lockfiles() {
        type Want<'a> = Result<Vec<(&'a str, &'a str, Option<&'a str>)>, &'a str>;
        let cases: &[(&str, &str, Want<'_>)] = &[
            (
                "v3",
                V3,
                Ok(vec![
                    ("@babel/code-frame", "7.22.13", None),
                    ("chalk", "2.4.2", Some("MIT")),
                    ("left-pad", "1.3.0", Some("WTFPL")),
                    ("ms", "2.1.3", Some("MIT")),
                ]),
            ),
            (
                "v1",
                V1,
                Ok(vec![
                    ("debug", "2.6.9", None),
                    ("ms", "2.0.0", None),
                    ("ms", "2.1.3", None),
                ]),
            ),
            ("no packages", r#"{"lockfileVersion": 3}"#, Ok(vec![])),
            ("not an object", "[1, 2]", Err("not a JSON object")),
            (
                "wrong types",
                r#"{"packages": {"node_modules/a": {"version": 3}}}"#,
                Ok(vec![]),
            ),
            ("packages not an object", r#"{"packages": "x"}"#, Ok(vec![])),
        ];
        for (name, text, want) in cases {
            let p = parse_lock(text.as_bytes(), "package-lock.json");
            match (p, want) {
                (Ok(p), Ok(w)) => assert_eq!(got(&p), *w, "{name}"),
                (Err(e), Err(w)) => assert_eq!(e, *w, "{name}"),
                (p, w) => panic!("{name}: got {p:?}, want {w:?}"),
            }
        }
        assert!(
            parse_lock(b"{\"packages\": ", "x")
                .unwrap_err()
                .starts_with("not JSON: ")
        );
        let deep = "[".repeat(100_000);
        assert!(parse_lock(deep.as_bytes(), "x").is_err());
    }

    #[test]
    fn manifests() {
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[(&str, Option<Row<'_>>)] = &[
            (
                r#"{"name": "ms", "version": "2.1.3", "license": "MIT", "author": "Vercel"}"#,
                Some(("ms", "2.1.3", Some("MIT"), Some("Vercel"))),
            ),
            (
                r#"{"name": "x", "version": "1.0.0", "license": {"type": "BSD"},
                   "author": {"name": "A", "email": "a@example.com"}}"#,
                Some(("x", "1.0.0", Some("BSD"), Some("A <a@example.com>"))),
            ),
            (r#"{"name": "x"}"#, None),
            (r#"{"version": "1"}"#, None),
            (r#""just a string""#, None),
        ];
        for (text, want) in cases {
            let p = parse_manifest(text.as_bytes(), "package.json").unwrap();
            let p = p.as_ref().map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.license.as_deref(),
                    p.originator.as_deref(),
                )
            });
            assert_eq!(p, *want, "{text}");
        }
    }
}
