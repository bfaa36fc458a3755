//! COPY's path rules: lexical cleaning and joining, wildcards as Go's `filepath.Match`, and
//! following a path inside a root as a chroot would.

use std::path::{Component, Path, PathBuf};

use super::error::{err, io_err};
use crate::error::Result;

/// Lexically cleans a path into its components, `..` clamped at the root.
pub(crate) fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

pub(crate) fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        return name.to_owned();
    }
    // Not format!: this runs for every entry of a COPY.
    let mut out = String::with_capacity(base.len() + 1 + name.len());
    out.push_str(base);
    out.push('/');
    out.push_str(name);
    out
}

/// Follows `rel` inside `root` as a chroot would: symlinks are resolved with absolute targets
/// taken from `root` and `..` stopping at it, so the result never leaves `root`.
pub fn resolve_in_root(root: &Path, rel: &str, follow_last: bool) -> Result<PathBuf> {
    let mut pending: Vec<String> = clean(rel).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        let candidate: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(err(format!("too many levels of symbolic links in {rel}")));
                }
                let target =
                    std::fs::read_link(&candidate).map_err(io_err("read link", &candidate))?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut parts: Vec<String> = Vec::new();
                for c in target.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => {
                            if parts.pop().is_none() {
                                // `..` above what the link added climbs from where it stands.
                                parts.push("..".into());
                            }
                        }
                        c => parts.push(c.to_owned()),
                    }
                }
                for p in parts.into_iter().rev() {
                    pending.push(p);
                }
            }
            _ => {
                if part == ".." {
                    done.pop();
                } else {
                    done.push(part);
                }
            }
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` (with `^` negation), `\`.
pub(crate) fn glob_component(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| glob_component(&pattern[1..], &name[i..])),
        Some('?') => !name.is_empty() && glob_component(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some(c) = name.first() else { return false };
            let mut i = 1;
            let negate = pattern.get(1) == Some(&'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            let start = i;
            while i < pattern.len() && (pattern[i] != ']' || i == start) {
                let lo = pattern[i];
                if pattern.get(i + 1) == Some(&'-') && pattern.get(i + 2).is_some_and(|&h| h != ']')
                {
                    if lo <= *c && *c <= pattern[i + 2] {
                        matched = true;
                    }
                    i += 3;
                } else {
                    if lo == *c {
                        matched = true;
                    }
                    i += 1;
                }
            }
            if i >= pattern.len() {
                return false;
            }
            matched != negate && glob_component(&pattern[i + 1..], &name[1..])
        }
        Some('\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && glob_component(&pattern[2..], &name[1..])
        }
        Some(p) => name.first() == Some(p) && glob_component(&pattern[1..], &name[1..]),
    }
}

pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_lexically_and_stop_at_the_root() {
        let cases: &[(&str, &[&str])] = &[
            ("a/b", &["a", "b"]),
            ("/a/./b/", &["a", "b"]),
            ("a//b", &["a", "b"]),
            ("a/../b", &["b"]),
            ("a/../../b", &["b"]),
            ("../..", &[]),
            ("/", &[]),
            ("", &[]),
            (".", &[]),
        ];
        for (path, want) in cases {
            assert_eq!(clean(path), *want, "{path}");
        }
        assert_eq!(join("", "f"), "f");
        assert_eq!(join("a/b", "f"), "a/b/f");
    }

    #[test]
    fn wildcards_match_as_go_filepath_match() {
        let cases = [
            ("*", "", true),
            ("*", "any.thing", true),
            ("*.txt", "a.txt", true),
            ("*.txt", "a.md", false),
            ("*.txt", ".txt", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("?", "a", true),
            ("?", "", false),
            ("?", "ab", false),
            ("[abc]", "b", true),
            ("[abc]", "d", false),
            ("[^abc]", "b", false),
            ("[^abc]", "d", true),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[]a]", "]", true),
            // An unterminated class matches nothing.
            ("[ab", "a", false),
            // `\` takes the next character literally.
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("\\[x]", "[x]", true),
        ];
        for (pattern, name, want) in cases {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            assert_eq!(glob_component(&p, &n), want, "{pattern} on {name:?}");
        }
        for (s, want) in [("a*", true), ("a?", true), ("[a]", true), ("a/b", false)] {
            assert_eq!(has_wildcard(s), want, "{s}");
        }
    }

    #[test]
    fn paths_resolve_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/f"), "").unwrap();
        let links = [
            ("abs", "/etc"),
            ("up", "../../../etc"),
            ("rel", "etc/sub"),
            ("file", "etc/f"),
            ("loop", "loop"),
        ];
        for (name, target) in links {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        }
        // (path, follow the last link, where it resolves below the root)
        let cases = [
            ("etc/f", true, "etc/f"),
            ("abs/f", true, "etc/f"),
            ("up/sub", true, "etc/sub"),
            ("rel", true, "etc/sub"),
            ("rel", false, "rel"),
            ("file", true, "etc/f"),
            ("../../etc", true, "etc"),
            ("missing/x", true, "missing/x"),
        ];
        for (rel, follow, want) in cases {
            assert_eq!(
                resolve_in_root(root, rel, follow).unwrap(),
                root.join(want),
                "{rel} {follow}"
            );
        }
        let looped = resolve_in_root(root, "loop", true).unwrap_err();
        assert!(
            looped
                .to_string()
                .contains("too many levels of symbolic links")
        );
    }
}
