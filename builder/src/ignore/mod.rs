//! `.dockerignore`: Docker's reader (`ignorefile.ReadAll`) and matcher (moby/patternmatcher v0.6.1).
//!
//! # Reading
//!
//! [`Matcher::read_patterns`] splits the text into lines (`\n`, `\r\n`), strips a UTF-8 BOM from
//! the first line, skips lines whose first character is `#`, trims whitespace, takes a leading
//! `!` off (and trims again), cleans the rest lexically like Go's `filepath.Clean`, removes one
//! leading `/` of a longer pattern and puts the `!` back.
//!
//! # Matching
//!
//! patternmatcher turns each pattern into a Go regexp, with shortcuts for patterns that are
//! literal (compared for equality), literal then `**` (a prefix) or `**` then literal (a
//! suffix). Those shortcuts are not equivalent to the regexp (`**file` also matches `myfile`), so
//! they are reproduced as they are. For the regexp case this module builds the very same regexp
//! text and runs it on a small engine for the part of Go's RE2 syntax that text can contain; so
//! even the accidents of the translation behave as in Docker: a `^` outside a class is a
//! start-of-text anchor, `\d` is a digit, `\b` a word boundary, `\q` an error when matching, and
//! a `*` inside a class closes it early (`[*]` becomes `[[^/]*]`). The only Go constructs left
//! out are Unicode classes (`\pL`): a pattern using one fails when matched, naming the pattern.
//!
//! Compile errors follow Go's `filepath.Match` syntax check exactly (patternmatcher calls it),
//! and regexp errors surface at match time as in patternmatcher: `[Local-Only]` compiles and
//! then fails on its backwards range `l-O`.
//!
//! A path is matched when a pattern matches it or any ancestor directory; the last matching
//! pattern decides (an exception keeps the path). [`Matcher::excluded`] is patternmatcher's
//! `MatchesOrParentMatches`; [`Matcher::excluded_with_parent`] is the incremental
//! `MatchesUsingParentResults` that buildkit's context transfer (fsutil) walks with, which the
//! build context uses so that a single-path question and a walk always agree.

mod regexp;
mod syntax;

use regexp::Program;
use syntax::{check_syntax, translate};

/// Why a pattern list cannot be read, compiled or matched. Messages name the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern rejected when compiled, or failing when matched; `index` is its position in the
    /// list given to [`Matcher::new`] (empty patterns included).
    #[error("pattern {pattern:?}: {reason}")]
    Pattern {
        index: usize,
        pattern: String,
        reason: String,
    },
    /// A line of the ignore file longer than Go's line scanner accepts (64 KiB).
    #[error("line {line} is longer than 64 KiB")]
    LineTooLong { line: usize },
    /// [`Matcher::excluded_with_parent`] was given information from another pattern list.
    #[error("parent match information has {got} values for {expected} patterns")]
    ParentInfo { got: usize, expected: usize },
}

/// Go's `bufio.Scanner` limit: a line (with a trailing `\r`) must be shorter than this.
const MAX_LINE: usize = 64 * 1024;

/// A compiled pattern list.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
    /// No exception has a wildcard once a trailing `/**` or `/*` is removed: then an excluded
    /// directory needs walking only when an exception names something below it (fsutil's
    /// `onlyPrefixExcludeExceptions`).
    only_prefix_exceptions: bool,
}

/// Per-pattern results for a directory, handed to [`Matcher::excluded_with_parent`] for its
/// children (patternmatcher's `MatchInfo`). The default value means "no parent information".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo(Vec<bool>);

#[derive(Debug, Clone)]
struct Pattern {
    /// Position in the list given to `new`, for errors.
    index: usize,
    /// The pattern as given, for errors.
    original: String,
    /// Cleaned, without the `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Equal to the text.
    Exact,
    /// Starts with the text minus its trailing `**`.
    Prefix,
    /// Ends with the text minus its leading `**` (or is that minus a leading `/`).
    Suffix,
    /// The translated regexp, or why Go's regexp package would reject it.
    Regex(Result<Program, String>),
}

impl Matcher {
    /// Compiles patterns as passed to the matcher (patternmatcher.New); errors name the pattern.
    ///
    /// Each pattern is trimmed (empty ones are dropped), cleaned, split into `!` and the rest (a
    /// lone `!` is an error) and checked with Go's `filepath.Match` syntax rules.
    pub fn new(patterns: &[String]) -> Result<Matcher, IgnoreError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for (index, original) in patterns.iter().enumerate() {
            let trimmed = original.trim();
            if trimmed.is_empty() {
                continue;
            }
            let error = |reason: String| IgnoreError::Pattern {
                index,
                pattern: original.clone(),
                reason,
            };
            // The whole pattern is cleaned before its `!` is looked at, as patternmatcher does:
            // `!./x` stays `./x` after the `!`, which then matches nothing.
            let cleaned = go_clean(trimmed);
            let (exception, text) = match cleaned.strip_prefix('!') {
                Some("") => return Err(error("illegal exclusion pattern \"!\"".to_owned())),
                Some(rest) => (true, rest.to_owned()),
                None => (false, cleaned),
            };
            check_syntax(&text)
                .map_err(|detail| error(format!("syntax error in pattern: {detail}")))?;
            let kind = translate(&text);
            compiled.push(Pattern {
                index,
                original: original.clone(),
                text,
                exception,
                kind,
            });
        }
        let has_exceptions = compiled.iter().any(|p| p.exception);
        let only_prefix_exceptions = !compiled.iter().any(|p| {
            p.exception && without_trailing_glob(&p.text).contains(['*', '[', ']', '?', '^', '\\'])
        });
        Ok(Matcher {
            patterns: compiled,
            has_exceptions,
            only_prefix_exceptions,
        })
    }

    /// Reads .dockerignore text (ignorefile.ReadAll) into patterns.
    pub fn read_patterns(text: &str) -> Result<Vec<String>, IgnoreError> {
        Ok(read_lines(text)?.into_iter().map(|(_, p)| p).collect())
    }

    /// Whether `path` (relative, slash-separated, no leading ./) is excluded: matched by the last
    /// matching pattern that is not an exception — taking ancestors into account.
    ///
    /// This is `MatchesOrParentMatches`, except that the context root (`""` or `"."`) is never
    /// excluded (patternmatcher's package-level functions answer the same for `.`).
    pub fn excluded(&self, path: &str) -> Result<bool, IgnoreError> {
        if path.is_empty() || path == "." {
            return Ok(false);
        }
        let parent = go_dir(path);
        // Every ancestor of the parent and the parent itself: "a", "a/b", ...
        let ancestors: Vec<&str> = if parent == "." {
            Vec::new()
        } else {
            parent
                .match_indices('/')
                .map(|(i, _)| &parent[..i])
                .chain(std::iter::once(parent.as_str()))
                .collect()
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that can change the answer is evaluated (and can fail).
            if pattern.exception != matched {
                continue;
            }
            let mut hit = pattern.matches(path)?;
            if !hit {
                // patternmatcher ignores errors here: the pattern matched the path without one.
                hit = ancestors
                    .iter()
                    .any(|a| pattern.matches(a).unwrap_or(false));
            }
            if hit {
                matched = !pattern.exception;
            }
        }
        Ok(matched)
    }

    /// The incremental form of [`Matcher::excluded`] (`MatchesUsingParentResults`): `parent` is
    /// what this returned for the parent directory, or the default for a top-level path (then
    /// ancestors are checked as [`Matcher::excluded`] does). Returns whether `path` is excluded
    /// and the information its children need.
    ///
    /// A pattern that matched the parent counts as matching the child; the others are tried on
    /// the child alone. That is what buildkit's context walk does, and it can differ from
    /// [`Matcher::excluded`] when a pattern appears after an exception that covers it.
    pub fn excluded_with_parent(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), IgnoreError> {
        let parent_matched = &parent.0;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(IgnoreError::ParentInfo {
                got: parent_matched.len(),
                expected: self.patterns.len(),
            });
        }
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent_matched.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exception != matched {
                    continue;
                }
                hit = pattern.matches(path)?;
                if !hit && parent_matched.is_empty() {
                    let dir = go_dir(path);
                    if dir != "." {
                        hit = dir
                            .match_indices('/')
                            .map(|(slash, _)| &dir[..slash])
                            .chain(std::iter::once(dir.as_str()))
                            .any(|a| pattern.matches(a).unwrap_or(false));
                    }
                }
            }
            info[i] = hit;
            if hit {
                matched = !pattern.exception;
            }
        }
        Ok((matched, MatchInfo(info)))
    }

    /// Whether any exception pattern could re-include something below the excluded directory
    /// `dir` (so a walk must still descend into it): true if an exception has wildcards or
    /// starts with `dir/` (fsutil's rule).
    ///
    /// Precisely fsutil's: a trailing `/**` or `/*` of an exception is ignored, and as soon as
    /// one exception has a wildcard (`*[]?^\`) every excluded directory is walked.
    pub fn may_include_below(&self, dir: &str) -> bool {
        if !self.has_exceptions {
            return false;
        }
        if !self.only_prefix_exceptions {
            return true;
        }
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let mut text = without_trailing_glob(&p.text).to_owned();
            text.push('/');
            text.starts_with(&dir_slash)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The number of patterns kept (empty ones are dropped).
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    /// Whether a pattern excludes every entry at the top of the context (`*`, `**`, `**/*`),
    /// so that `COPY . .` copies nothing: BuildKit's test before it warns about copying `.`.
    pub fn excludes_every_root_entry(&self) -> bool {
        self.patterns
            .iter()
            .any(|p| !p.exception && matches!(p.text.as_str(), "*" | "**" | "**/*"))
    }
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(text: &str) -> &str {
    let text = text.strip_suffix("/**").unwrap_or(text);
    text.strip_suffix("/*").unwrap_or(text)
}

/// ignorefile.ReadAll with each pattern's 1-based line number.
pub(crate) fn read_lines(text: &str) -> Result<Vec<(usize, String)>, IgnoreError> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut out = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        let line = i + 1;
        if raw.len() >= MAX_LINE {
            return Err(IgnoreError::LineTooLong { line });
        }
        let mut pattern = raw.strip_suffix('\r').unwrap_or(raw);
        if line == 1 {
            pattern = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        }
        // Only column 0 starts a comment: ` # x` is the pattern `# x`.
        if pattern.starts_with('#') {
            continue;
        }
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        let (invert, rest) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, pattern),
        };
        let mut cleaned = String::new();
        if !rest.is_empty() {
            cleaned = go_clean(rest);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push((line, cleaned));
    }
    Ok(out)
}

/// Go's `filepath.Clean` on Unix: purely lexical.
pub(crate) fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                // `..` at the root stays at the root.
                _ if rooted => {}
                _ => out.push(".."),
            },
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// Go's `filepath.Dir` on Unix: everything before the last `/`, cleaned.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => go_clean(&path[..=i]),
        None => ".".to_owned(),
    }
}

impl Pattern {
    /// patternmatcher's `Pattern.match`. The literal kinds compare bytes, as Go does (a `**`
    /// after a byte order mark slices into it, harmlessly).
    fn matches(&self, path: &str) -> Result<bool, IgnoreError> {
        let text = self.text.as_bytes();
        let path_bytes = path.as_bytes();
        Ok(match &self.kind {
            Kind::Exact => path_bytes == text,
            Kind::Prefix => path_bytes.starts_with(&text[..text.len().saturating_sub(2)]),
            Kind::Suffix => {
                let suffix = text.get(2..).unwrap_or_default();
                path_bytes.ends_with(suffix)
                    || matches!(suffix, [b'/', rest @ ..] if path_bytes == rest)
            }
            Kind::Regex(Ok(program)) => program.is_match(path),
            Kind::Regex(Err(reason)) => {
                return Err(IgnoreError::Pattern {
                    index: self.index,
                    pattern: self.original.clone(),
                    reason: format!("cannot be matched: {reason}"),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Matcher::new(&patterns).unwrap()
    }

    #[test]
    fn matching() {
        // (patterns, path, excluded)
        let cases: &[(&[&str], &str, bool)] = &[
            // Not gitignore: a pattern without `/` is anchored at the root.
            (&["*.log"], "a.log", true),
            (&["*.log"], "dir/a.log", false),
            (&["**/*.log"], "dir/a.log", true),
            (&["**/*.log"], "a.log", true),
            // A pattern matches a directory's contents.
            (&["dir"], "dir/sub/file", true),
            (&["dir/"], "dir/sub/file", true),
            // The reader strips a leading `/`; the matcher takes patterns as they are.
            (&["/dir"], "dir/file", false),
            (&["dir/*"], "dir", false),
            (&["dir/**"], "dir", false),
            (&["dir/**"], "dir/x", true),
            // Last match wins; an exception keeps.
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep", "keep"], "keep", true),
            (&["!keep", "*"], "keep", true),
            (&["dir", "!dir/keep"], "dir/keep/inner", false),
            (&["dir", "!dir/keep"], "dir/other", true),
            // `**` at the start is a byte suffix, so it also matches inside a name.
            (&["**file"], "myfile", true),
            (&["**/file"], "myfile", false),
            (&["**"], "anything/at/all", true),
            // Literal punctuation; `[!x]` is a class holding `!`.
            (&["a+b(c)"], "a+b(c)", true),
            (&["[!x]"], "!", true),
            (&["[!x]"], "y", false),
            (&["[^x]"], "y", true),
            (&["\\*"], "*", true),
            (&["\\*"], "a", false),
            // `?` and `*` stop at `/`, and work on characters, not bytes.
            (&["a?c"], "a/c", false),
            (&["a?c"], "aéc", true),
            (&["x/*/z"], "x/y/z", true),
            (&["x/*/z"], "x/y/y/z", false),
            (&["x/**/z"], "x/z", true),
            (&["x/**/z"], "x/y/y/z", true),
            // Patterns are trimmed and cleaned; empty ones vanish.
            (&["  a/./b/  ", ""], "a/b", true),
            (&["a/../b"], "b", true),
            // Go regexp accidents reproduced: `^` anchors outside a class in a regexp pattern but
            // is literal in a literal one; `\d` is a digit; `[*]` is a class closed early.
            (&["a^b"], "a^b", true),
            (&["a^b*"], "a^b", false),
            (&["file\\d"], "file7", true),
            (&["file\\d"], "filed", false),
            (&["[*]"], "]", true),
            (&["[*]"], "*", false),
            (&["a\\b"], "a", true),
            (&["\\Qa*\\E"], "a[^/]*", true),
            (&["[[:digit:]]"], "5", true),
            (&["[[:digit:]]"], "a", false),
            (&["x\\101"], "xA", true),
            (&["x\\x41"], "xA", true),
            // text/scanner drops a leading byte order mark from the regexp only.
            (&["\u{feff}*.txt"], "a.txt", true),
            (&["\u{feff}a.txt"], "a.txt", false),
            // The root is never excluded.
            (&["**"], "", false),
            (&["**"], ".", false),
            (&[], "anything", false),
        ];
        for (patterns, path, want) in cases {
            let m = matcher(patterns);
            assert_eq!(m.excluded(path).unwrap(), *want, "{patterns:?} vs {path:?}");
        }
    }

    #[test]
    fn incremental_can_differ_after_an_exception() {
        // buildkit's walk keeps x/y/z: the last `x` is tried on the child alone, while the
        // whole-path check matches it through the ancestor `x`.
        let m = matcher(&["x", "!x/y", "x"]);
        assert!(m.excluded("x/y/z").unwrap());
        let mut info = MatchInfo::default();
        let mut last = false;
        for path in ["x", "x/y", "x/y/z"] {
            (last, info) = m.excluded_with_parent(path, &info).unwrap();
        }
        assert!(!last);
        let err = m
            .excluded_with_parent("a", &MatchInfo(vec![true]))
            .unwrap_err();
        assert_eq!(
            err,
            IgnoreError::ParentInfo {
                got: 1,
                expected: 3
            }
        );
    }

    #[test]
    fn errors_name_the_pattern() {
        // (pattern, fails when compiled, reason fragment)
        let cases = [
            ("[", true, "unterminated character class"),
            ("a[b", true, "unterminated"),
            ("[]a]", true, "empty character class"),
            ("[-x]", true, "without a start"),
            ("[x-]", true, "without an end"),
            ("[a-b-c]", true, "without a start"),
            ("x\\", true, "trailing backslash"),
            (" ! ", true, "illegal exclusion pattern"),
            ("!", true, "illegal exclusion pattern"),
            // Valid for filepath.Match, rejected by Go's regexp when first matched.
            ("[b-a]", false, "invalid character class range: `b-a`"),
            ("a\\q", false, "invalid escape sequence: `\\q`"),
            ("a\\pL", false, "unsupported Unicode class"),
            ("x\\1", false, "invalid escape sequence"),
            ("[[:nope:]]", false, "invalid character class range"),
        ];
        for (pattern, at_compile, reason) in cases {
            let patterns = vec!["ok".to_owned(), pattern.to_owned()];
            let err = match Matcher::new(&patterns) {
                Err(e) => {
                    assert!(at_compile, "{pattern:?} rejected when compiled: {e}");
                    e
                }
                Ok(m) => {
                    assert!(!at_compile, "{pattern:?} compiled");
                    m.excluded("some/path").unwrap_err()
                }
            };
            match &err {
                IgnoreError::Pattern {
                    index, pattern: p, ..
                } => assert_eq!((*index, p.as_str()), (1, pattern)),
                other => panic!("{other:?}"),
            }
            let message = err.to_string();
            assert!(message.contains(&format!("{pattern:?}")), "{message}");
            assert!(message.contains(reason), "{pattern:?}: {message}");
        }
    }

    #[test]
    fn failing_patterns_are_only_tried_when_they_could_decide() {
        // patternmatcher skips an exception while nothing is excluded, and never evaluates a
        // bad pattern it skips.
        let m = matcher(&["!x[b-a]"]);
        assert!(!m.excluded("x").unwrap());
        let m = matcher(&["*", "!x[b-a]"]);
        assert!(m.excluded("x").is_err());
    }

    #[test]
    fn may_include_below() {
        // (patterns, directory, answer)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["dir"], "dir", false),
            (&["dir", "!dir/keep"], "dir", true),
            (&["dir", "!dir/keep"], "di", false),
            (&["dir", "!dir/keep"], "dir/keep", true),
            (&["dir", "!dir/keep"], "dir/other", false),
            (&["dir", "!dir/keep"], "other", false),
            // A trailing glob is not a wildcard for this rule.
            (&["dir", "!dir/sub/**"], "dir/sub", true),
            (&["dir", "!dir/sub/*"], "dir/other", false),
            // Any wildcard exception makes every excluded directory worth entering.
            (&["dir", "!*.txt"], "other", true),
            (&["dir", "!dir/sub/*.go"], "elsewhere", true),
            (&["dir", "!a\\b"], "elsewhere", true),
        ];
        for (patterns, dir, want) in cases {
            assert_eq!(
                matcher(patterns).may_include_below(dir),
                *want,
                "{patterns:?} {dir:?}"
            );
        }
    }

    #[test]
    fn reading() {
        // (text, patterns)
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("\n\n", &[]),
            ("\u{feff}# comment\nx\n", &["x"]),
            ("a\r\n\r\nb", &["a", "b"]),
            ("\t# not a comment\n", &["# not a comment"]),
            ("!  /a/b/../c/  \n", &["!a/c"]),
            ("/\n!/\n", &["/", "!/"]),
            ("./\n", &["."]),
        ];
        for (text, want) in cases {
            assert_eq!(Matcher::read_patterns(text).unwrap(), *want, "{text:?}");
        }
        let long = format!("a\n{}\n", "x".repeat(MAX_LINE));
        assert_eq!(
            Matcher::read_patterns(&long).unwrap_err(),
            IgnoreError::LineTooLong { line: 2 }
        );
        assert!(Matcher::read_patterns(&"x".repeat(MAX_LINE - 1)).is_ok());
        assert_eq!(
            read_lines("# c\n\nfoo\n  \nbar").unwrap(),
            [(3, "foo".to_owned()), (5, "bar".to_owned())]
        );
    }

    #[test]
    fn go_clean_and_dir() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("a//b/./c/", "a/b/c"),
            ("a/../..", ".."),
            ("../../a/..", "../.."),
            ("/../a", "/a"),
            ("!./x", "!./x"),
        ];
        for (input, want) in cases {
            assert_eq!(go_clean(input), want, "{input:?}");
        }
        for (input, want) in [
            ("a", "."),
            ("a/b", "a"),
            ("a/b/", "a/b"),
            ("/", "/"),
            ("/x", "/"),
        ] {
            assert_eq!(go_dir(input), want, "{input:?}");
        }
    }

    #[test]
    fn regexp_engine() {
        // (Go regexp, text, matches)
        let cases = [
            ("^(.*/)?[^/]*\\.txt$", "a/b/c.txt", true),
            ("^(.*/)?[^/]*\\.txt$", "c.txt", true),
            ("^(.*/)?[^/]*\\.txt$", "a/b/ctxt", false),
            ("^a.*$", "a\nb", false),
            ("^a[^x]b$", "a\nb", true),
            ("^a\\bb$", "ab", false),
            ("^a\\Bb$", "ab", true),
            ("^x+$", "xxx", true),
            ("^x+$", "", false),
            ("^[]a]$", "]", true),
            ("^[a-]$", "-", true),
            ("^[\\d\\s]$", " ", true),
            ("^[^\\D]$", "4", true),
            ("^[[:^alpha:]]$", "4", true),
            ("^a\\z$", "a", true),
            ("^\\x{263a}$", "☺", true),
            ("^a{2$", "a{2", true),
        ];
        for (re, text, want) in cases {
            let program = Program::compile(re).unwrap();
            assert_eq!(program.is_match(text), want, "{re:?} vs {text:?}");
        }
        // Go accepts `^*` (a repeated anchor), so the engine does too.
        assert!(Program::compile("^*a$").unwrap().is_match("a"));
        for bad in [
            "^a**$", "*a", "^(*a)$", "^(a$", "^a)$", "^[a$", "^a{2}$", "^\\C$", "^(?i)a$", "^a|b$",
        ] {
            assert!(Program::compile(bad).is_err(), "{bad:?}");
        }
    }
}
