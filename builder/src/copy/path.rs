//! COPY's path rules: lexical cleaning and joining, wildcards as Go's `filepath.Match`, and
//! following a path inside a root as a chroot would.

use std::path::{Path, PathBuf};

use cairn_layers::rootfs;

use super::error::{err, io_err};
use crate::error::Result;

/// Lexically cleans a path into its components, `..` clamped at the root.
pub(crate) use cairn_layers::rootfs::clean_names as clean;

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

/// Follows `rel` inside `root` as a chroot would (see [`rootfs::resolve_names`]): the host
/// path it leads to, never outside `root`.
pub fn resolve_in_root(root: &Path, rel: &str, follow_last: bool) -> Result<PathBuf> {
    match rootfs::resolve_names(root, rel, follow_last) {
        Ok(names) => {
            let mut path = root.to_path_buf();
            path.extend(names);
            Ok(path)
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            Err(err(format!("too many levels of symbolic links in {rel}")))
        }
        Err(e) => Err(io_err("resolve", &root.join(rel.trim_start_matches('/')))(
            e,
        )),
    }
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
    fn paths_join() {
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
    fn resolving_names_the_root_and_the_loop() {
        // How names resolve is tested with the resolver (cairn_layers::rootfs); here, what
        // COPY makes of its answers.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let cases = [("abs/f", "etc/f"), ("/etc", "etc"), ("", "")];
        for (rel, want) in cases {
            let got = resolve_in_root(root, rel, true).unwrap();
            assert_eq!(got, root.join(want), "{rel}");
        }
        let looped = resolve_in_root(root, "loop/x", true).unwrap_err();
        let shown = looped.to_string();
        assert!(
            shown.contains("too many levels of symbolic links in loop/x"),
            "{shown}"
        );
    }
}
