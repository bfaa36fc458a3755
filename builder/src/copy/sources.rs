//! Which paths a `--parents` COPY source names, as BuildKit decides: the `/./` pivot and `**`
//! include patterns.

use super::error::pattern_err;
use super::path::{clean, has_wildcard, join, resolve_in_root};
use super::root::SourceRoot;
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
    let matcher =
        crate::ignore::Matcher::new(std::slice::from_ref(&pattern)).map_err(pattern_err(src))?;
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
            let hit = matcher.excluded(&rel).map_err(pattern_err(src))?;
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
}
