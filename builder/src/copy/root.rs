//! Where COPY reads from, and what a source names there: wildcards expanded as BuildKit's
//! ResolveWildcards, entries below a directory walked, .dockerignore honoured.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use super::error::{CopyError, err, io_err};
use super::path::{clean, glob_component, has_wildcard, join, resolve_in_root};
use crate::context::BuildContext;
use crate::error::{Error, Result};

/// Where COPY reads from: the build context (with .dockerignore) or another stage's rootfs.
#[derive(Debug, Clone, Copy)]
pub enum SourceRoot<'a> {
    Context(&'a BuildContext),
    Dir(&'a Path),
}

/// An entry below a directory source: its path below it (with U+FFFD for bytes that are not
/// UTF-8, and then `raw` with the bytes), where it is, and its lstat.
pub(super) struct Below {
    pub(super) sub: String,
    pub(super) raw: Option<PathBuf>,
    pub(super) path: PathBuf,
    pub(super) meta: Metadata,
    /// Its content is withheld ([`BuildContext::withholds`]): written empty.
    pub(super) withheld: bool,
}

impl Below {
    fn new(sub: &Path, path: PathBuf, meta: Metadata, withheld: bool) -> Below {
        let (sub, raw) = match sub.to_str() {
            Some(s) => (s.to_owned(), None),
            None => (sub.to_string_lossy().into_owned(), Some(sub.to_path_buf())),
        };
        Below {
            sub,
            raw,
            path,
            meta,
            withheld,
        }
    }
}

impl SourceRoot<'_> {
    pub(super) fn root(&self) -> &Path {
        match self {
            SourceRoot::Context(c) => c.root(),
            SourceRoot::Dir(d) => d,
        }
    }

    pub(super) fn ignored(&self, rel: &str) -> Result<bool> {
        match self {
            SourceRoot::Context(c) => Ok(!c.is_sent(rel)?),
            SourceRoot::Dir(_) => Ok(false),
        }
    }

    /// The context-relative paths matching a (possibly wildcard) source, in order.
    ///
    /// As BuildKit's ResolveWildcards: the directories before the first wildcard must exist
    /// (its walk of them fails otherwise); below them only what exists and is not ignored
    /// matches, so a plain file where a directory is wanted simply does not, and a wildcard
    /// may match nothing.
    pub(super) fn expand(&self, src: &str) -> Result<Vec<String>> {
        let parts = clean(src);
        if !has_wildcard(src) {
            return Ok(vec![parts.join("/")]);
        }
        let literal = parts.iter().take_while(|p| !has_wildcard(p)).count();
        let prefix = parts[..literal].join("/");
        if !prefix.is_empty() && !self.exists(&prefix)? {
            return Err(self.not_found(&prefix));
        }
        let mut found = vec![prefix];
        for part in &parts[literal..] {
            let pat: Vec<char> = part.chars().collect();
            let mut next = Vec::new();
            for base in &found {
                if !has_wildcard(part) {
                    next.push(join(base, part));
                    continue;
                }
                let dir = resolve_in_root(self.root(), base, true)?;
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob_component(&pat, &n.chars().collect::<Vec<_>>()))
                    .collect();
                names.sort();
                for n in names {
                    let rel = join(base, &n);
                    if !self.ignored(&rel)? {
                        next.push(rel);
                    }
                }
            }
            found = next;
        }
        let mut out = Vec::with_capacity(found.len());
        for rel in found {
            if self.exists(&rel)? && !self.ignored(&rel)? {
                out.push(rel);
            }
        }
        Ok(out)
    }

    /// Whether `rel` names something (a dangling symlink too), its parents' symlinks followed.
    pub(super) fn exists(&self, rel: &str) -> Result<bool> {
        let real = resolve_in_root(self.root(), rel, false)?;
        Ok(real.symlink_metadata().is_ok())
    }

    pub(super) fn not_found(&self, rel: &str) -> Error {
        err(format!(
            "{}: not found{}",
            if rel.is_empty() { "." } else { rel },
            match self {
                SourceRoot::Context(_) => " in the build context",
                SourceRoot::Dir(_) => " in the stage",
            }
        ))
    }

    /// Everything below the directory `rel`, sorted, ignored entries left out; `real` is
    /// where `rel` resolves ([`resolve_in_root`]).
    pub(super) fn below(&self, rel: &str, real: &Path) -> Result<Vec<Below>> {
        match self {
            SourceRoot::Context(c) => {
                // Entries are named by the real path, which differs when `rel` is a symlink.
                Ok(c.walk(rel)?
                    .into_iter()
                    .filter_map(|e| {
                        let sub = e.path.strip_prefix(real).ok()?.to_path_buf();
                        (!sub.as_os_str().is_empty())
                            .then(|| Below::new(&sub, e.path, e.metadata, e.withheld))
                    })
                    .collect())
            }
            SourceRoot::Dir(_) => {
                let mut out = Vec::new();
                for e in walkdir::WalkDir::new(real).min_depth(1).sort_by_file_name() {
                    let e = e.map_err(|source| CopyError::Walk {
                        path: real.to_path_buf(),
                        source,
                    })?;
                    let meta = e
                        .path()
                        .symlink_metadata()
                        .map_err(io_err("stat", e.path()))?;
                    let sub = e.path().strip_prefix(real).unwrap_or(e.path());
                    out.push(Below::new(sub, e.path().to_path_buf(), meta, false));
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_expand_as_buildkit_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        for f in ["f", "a.txt", "b.txt", "c.md", "d/x", "d/sub/y"] {
            std::fs::write(root.join(f), "").unwrap();
        }
        std::os::unix::fs::symlink("x", root.join("d/link")).unwrap();
        let from = SourceRoot::Dir(root);
        let cases: &[(&str, &[&str])] = &[
            // A literal source is itself, found or not (the caller says "not found").
            ("missing", &["missing"]),
            ("a.txt", &["a.txt"]),
            ("./d/../a.txt", &["a.txt"]),
            // Matches in name order.
            ("*.txt", &["a.txt", "b.txt"]),
            ("[ab].txt", &["a.txt", "b.txt"]),
            ("d/*", &["d/link", "d/sub", "d/x"]),
            ("d/s?b", &["d/sub"]),
            ("*/sub/y", &["d/sub/y"]),
            // A file where a directory is wanted does not match; nor does nothing.
            ("f/*", &[]),
            ("*.none", &[]),
        ];
        for (src, want) in cases {
            let got = from.expand(src).unwrap();
            assert_eq!(got, *want, "{src}");
        }
        // The directories before the first wildcard must exist.
        let e = from.expand("nope/*").unwrap_err().to_string();
        assert!(e.contains("nope: not found in the stage"), "{e}");
    }
}
