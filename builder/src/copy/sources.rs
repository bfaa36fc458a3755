//! Which paths a COPY source names and where each lands, as BuildKit decides: `--parents`
//! sources with their `/./` pivot and `**` include patterns, and the destination decided
//! source by source (BuildKit copies each source on its own to the destination as written).

use super::SourceRoot;
use super::error::err;
use super::path::{clean, has_wildcard, join, resolve_in_root};
use crate::error::Result;

/// A path a `--parents` source matched: `rel` in the source root, of which what follows
/// `pivot` is kept below the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kept {
    pub rel: String,
    pub pivot: String,
}

impl Kept {
    /// The part of `rel` kept below the destination (`""` for the pivot itself).
    pub fn kept(&self) -> &str {
        self.rel[self.pivot.len()..].trim_start_matches('/')
    }
}

/// Splits a `--parents` source at its first `/./` into the pivot and the pattern below it, as
/// dispatchCopy does; without one the pivot is the root and the whole source the pattern.
fn split_pivot(src: &str) -> (String, String) {
    match src.split_once("/./") {
        Some((pivot, pattern)) => (clean(pivot).join("/"), clean(pattern).join("/")),
        None => (String::new(), clean(src).join("/")),
    }
}

/// The paths a `--parents` source matches. BuildKit copies the pivot (wildcards in it
/// resolved as any source's) with the pattern as an include pattern: `**` is any number of
/// directories, a directory that matches brings everything below it, and a pattern with a
/// wildcard may match nothing. A literal one is returned as it is, for the caller's "not
/// found" (BuildKit's required path).
///
/// Also says whether a pivot exists: BuildKit's copy of it then makes the destination even
/// when the pattern matches nothing.
pub(super) fn expand_parents(from: &SourceRoot<'_>, src: &str) -> Result<(Vec<Kept>, bool)> {
    let (pivot, pattern) = split_pivot(src);
    let pivots = if has_wildcard(&pivot) {
        from.expand(&pivot)?
    } else {
        vec![pivot.clone()]
    };
    let found = !pivots.is_empty();
    if !has_wildcard(&pattern) {
        if !has_wildcard(&pivot) {
            let kept = Kept {
                rel: join(&pivot, &pattern),
                pivot,
            };
            return Ok((vec![kept], true));
        }
        let mut out = Vec::new();
        for p in pivots {
            let rel = join(&p, &pattern);
            if from.exists(&rel)? {
                out.push(Kept { rel, pivot: p });
            }
        }
        return Ok((out, found));
    }
    let matcher = crate::ignore::Matcher::new(std::slice::from_ref(&pattern))
        .map_err(|e| err(format!("{src}: {e}")))?;
    // Only below the pattern's literal directories can anything match.
    let literal: Vec<&str> = pattern
        .split('/')
        .take_while(|c| !has_wildcard(c))
        .collect();
    let prefix = literal.join("/");
    let mut out = Vec::new();
    for p in pivots {
        let start = join(&p, &prefix);
        let real = resolve_in_root(from.root(), &start, true)?;
        if !real.is_dir() {
            continue;
        }
        // A walk is parents first, so what is below a matched directory follows it.
        let mut matched_dir: Option<String> = None;
        for b in from.below(&start, &real)? {
            let (rel, meta) = (join(&prefix, &b.sub), b.meta);
            if let Some(d) = &matched_dir
                && rel.len() > d.len()
                && rel.starts_with(d.as_str())
                && rel.as_bytes()[d.len()] == b'/'
            {
                continue;
            }
            let hit = matcher
                .excluded(&rel)
                .map_err(|e| err(format!("{src}: {e}")))?;
            if hit {
                if meta.is_dir() {
                    matched_dir = Some(rel.clone());
                }
                out.push(Kept {
                    rel: join(&p, &rel),
                    pivot: p.clone(),
                });
            }
        }
    }
    Ok((out, found))
}

/// The destination as the sources of one COPY leave it, one after the other: a directory
/// (written with a trailing slash, one in the image, or made by a directory source) takes
/// each file by its name; otherwise a file source becomes the destination itself, and a
/// later one replaces it.
#[derive(Debug)]
pub(super) struct Dest {
    /// Its place in the image (symlinks resolved), and as written, for errors.
    rel: String,
    shown: String,
    is_dir: bool,
    /// A file source was copied as the destination itself.
    is_file: bool,
}

impl Dest {
    pub fn new(rel: String, shown: String, is_dir: bool) -> Dest {
        Dest {
            rel,
            shown,
            is_dir,
            is_file: false,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Where a file source named `name` lands, and whether it replaces the destination file
    /// an earlier source wrote.
    pub fn file(&mut self, name: &str) -> Result<(String, bool)> {
        if self.is_dir {
            if name.is_empty() {
                return Err(err(format!(
                    "the source gives no file name: name the file in the destination, not {}",
                    self.shown
                )));
            }
            return Ok((join(&self.rel, name), false));
        }
        let replaces = self.is_file;
        self.is_file = true;
        Ok((self.rel.clone(), replaces))
    }

    /// A directory source (or an archive ADD unpacks) fills the destination as a directory:
    /// onto a file an earlier source wrote it fails, as fsutil's copy does.
    pub fn dir(&mut self) -> Result<()> {
        if self.is_file {
            return Err(err(format!("cannot copy to non-directory: {}", self.shown)));
        }
        self.is_dir = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pivots_split_at_the_first_dot_component() {
        let cases = [
            ("/test/a/b/./c/d", ("test/a/b", "c/d")),
            ("/test/a/b/c/d/.", ("", "test/a/b/c/d")),
            ("./test/a/b/c/d", ("", "test/a/b/c/d")),
            ("/test/a/./b/./c", ("test/a", "b/c")),
            ("a/b*/./c/**/e", ("a/b*", "c/**/e")),
        ];
        for (src, (pivot, pattern)) in cases {
            assert_eq!(
                split_pivot(src),
                (pivot.to_owned(), pattern.to_owned()),
                "{src}"
            );
        }
    }

    #[test]
    fn the_destination_follows_the_sources_in_order() {
        let mut d = Dest::new("f".into(), "/f".into(), false);
        assert_eq!(d.file("a").unwrap(), ("f".to_owned(), false));
        assert_eq!(d.file("b").unwrap(), ("f".to_owned(), true));
        assert!(
            d.dir()
                .unwrap_err()
                .to_string()
                .contains("non-directory: /f")
        );
        let mut d = Dest::new("m".into(), "/m".into(), false);
        d.dir().unwrap();
        assert_eq!(d.file("a").unwrap(), ("m/a".to_owned(), false));
        assert!(d.file("").is_err());
    }
}
