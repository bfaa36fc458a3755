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

use std::iter::Peekable;
use std::str::Chars;

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

// ---- compile-time syntax: Go's filepath.Match ----
//
// patternmatcher calls `filepath.Match(pattern, ".")` for its error only. Match checks every
// chunk (the text between unbracketed `*`s) with the same parser whether or not it matches, so
// checking all chunks is exactly its verdict. It works on bytes.

fn check_syntax(pattern: &str) -> Result<(), &'static str> {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        let (chunk, after) = scan_chunk(rest);
        check_chunk(chunk)?;
        rest = after;
    }
    Ok(())
}

/// Go's `scanChunk`: skips leading stars, then takes bytes up to the next star outside `[...]`.
fn scan_chunk(mut pattern: &[u8]) -> (&[u8], &[u8]) {
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    pattern.split_at(i)
}

/// The syntax half of Go's `matchChunk`.
fn check_chunk(mut chunk: &[u8]) -> Result<(), &'static str> {
    while let Some(&b) = chunk.first() {
        match b {
            b'[' => {
                chunk = &chunk[1..];
                if let [b'^', rest @ ..] = chunk {
                    chunk = rest;
                }
                let mut ranges = 0;
                loop {
                    if let [b']', rest @ ..] = chunk
                        && ranges > 0
                    {
                        chunk = rest;
                        break;
                    }
                    chunk = class_char(chunk)?;
                    if let [b'-', rest @ ..] = chunk {
                        chunk = class_char(rest)?;
                    }
                    ranges += 1;
                }
            }
            b'\\' => match chunk {
                [_, _, rest @ ..] => chunk = rest,
                _ => return Err("trailing backslash"),
            },
            _ => chunk = &chunk[1..],
        }
    }
    Ok(())
}

/// Go's `getEsc`: one class character (maybe escaped), which must be followed by more pattern.
fn class_char(chunk: &[u8]) -> Result<&[u8], &'static str> {
    let chunk = match chunk {
        [] => return Err("unterminated character class"),
        [b'-', ..] => return Err("character range without a start"),
        [b']', ..] => return Err("empty character class or range without an end"),
        [b'\\', rest @ ..] => rest,
        _ => chunk,
    };
    let len = match chunk.first() {
        None => return Err("unterminated character class"),
        Some(&b) if b < 0x80 => 1,
        Some(&b) if b & 0xe0 == 0xc0 => 2,
        Some(&b) if b & 0xf0 == 0xe0 => 3,
        Some(&b) if b & 0xf8 == 0xf0 => 4,
        Some(_) => return Err("invalid UTF-8 in character class"),
    };
    match chunk.get(len..) {
        Some(rest) if !rest.is_empty() => Ok(rest),
        _ => Err("unterminated character class"),
    }
}

// ---- patternmatcher's translation ----

/// patternmatcher's `Pattern.compile` with `/` as the separator: the match type and, for the
/// regexp type, the regexp text, compiled here rather than by Go.
fn translate(text: &str) -> Kind {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut chars = text.chars().peekable();
    // Go's text/scanner skips a byte order mark at the very start.
    if chars.peek() == Some(&'\u{feff}') {
        chars.next();
    }
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let mut i = 0usize;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is treated as `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if i == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    detected = Detected::Regex;
                }
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(ch);
                detected = Detected::Regex;
            }
            _ => re.push(ch),
        }
        i += 1;
    }
    match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix,
        Detected::Suffix => Kind::Suffix,
        Detected::Regex => {
            re.push('$');
            Kind::Regex(Program::compile(&re))
        }
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

// ---- the regexp engine: Go RE2 syntax (Perl flags) for translated patterns ----
//
// Parsed like Go's regexp/syntax with the flags `regexp.Compile` uses (ClassNL, OneLine, PerlX,
// UnicodeGroups): `.` does not match `\n`, negated classes do, `^`/`$` are text anchors, stacked
// repetitions are errors. Matching is a Pike VM over chars (Go decodes runes), anchored at the
// start, which equals Go's unanchored search because every translation starts with `^` and ends
// with `$`.

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    AnyNotNl,
    Class(Class),
    Look(Look),
    Group(Vec<Node>),
    Repeat(Box<Node>, Rep),
}

#[derive(Debug, Clone, Copy)]
enum Rep {
    Star,
    Plus,
    Quest,
}

#[derive(Debug, Clone, Copy)]
enum Look {
    Start,
    End,
    WordBoundary,
    NotWordBoundary,
}

impl Look {
    fn holds(self, prev: Option<char>, next: Option<char>) -> bool {
        let word = |c: Option<char>| c.is_some_and(is_word);
        match self {
            Look::Start => prev.is_none(),
            Look::End => next.is_none(),
            Look::WordBoundary => word(prev) != word(next),
            Look::NotWordBoundary => word(prev) == word(next),
        }
    }
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Debug, Clone)]
enum ClassItem {
    Range(char, char),
    /// A Perl (`\d`) or POSIX (`[:alpha:]`) class: all ASCII in Go; `true` negates it.
    Ascii(fn(char) -> bool, bool),
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match *item {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Ascii(test, negated) => test(c) != negated,
        });
        hit != self.negated
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Go's `\d \s \w` and their negations (`\s` is `[\t\n\f\r ]`).
fn perl_class(letter: char) -> Option<ClassItem> {
    Some(match letter {
        'd' => ClassItem::Ascii(|c| c.is_ascii_digit(), false),
        'D' => ClassItem::Ascii(|c| c.is_ascii_digit(), true),
        's' => ClassItem::Ascii(|c| c.is_ascii_whitespace(), false),
        'S' => ClassItem::Ascii(|c| c.is_ascii_whitespace(), true),
        'w' => ClassItem::Ascii(is_word, false),
        'W' => ClassItem::Ascii(is_word, true),
        _ => return None,
    })
}

/// Go's POSIX classes (`[:alpha:]`, `[:^alpha:]`, ...).
fn posix_class(name: &str) -> Option<ClassItem> {
    let (negated, name) = match name.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let test: fn(char) -> bool = match name {
        "alnum" => |c| c.is_ascii_alphanumeric(),
        "alpha" => |c| c.is_ascii_alphabetic(),
        "ascii" => |c| c.is_ascii(),
        "blank" => |c| c == '\t' || c == ' ',
        "cntrl" => |c| c.is_ascii_control(),
        "digit" => |c| c.is_ascii_digit(),
        "graph" => |c| c.is_ascii_graphic(),
        "lower" => |c| c.is_ascii_lowercase(),
        "print" => |c| c == ' ' || c.is_ascii_graphic(),
        "punct" => |c| c.is_ascii_punctuation(),
        "space" => |c| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '),
        "upper" => |c| c.is_ascii_uppercase(),
        "word" => is_word,
        "xdigit" => |c| c.is_ascii_hexdigit(),
        _ => return None,
    };
    Some(ClassItem::Ascii(test, negated))
}

struct Parser<'a> {
    chars: Peekable<Chars<'a>>,
    /// The regexp, for error messages.
    source: &'a str,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn rest(&self) -> String {
        self.chars.clone().collect()
    }

    fn starts_with(&self, prefix: &str) -> bool {
        let mut ahead = self.chars.clone();
        prefix.chars().all(|p| ahead.next() == Some(p))
    }

    /// A concatenation, up to the end or (inside a group) the closing `)`.
    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, String> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut last_was_repeat = false;
        while let Some(c) = self.peek() {
            let node = match c {
                ')' if depth > 0 => return Ok(nodes),
                ')' => return Err(format!("unexpected ): `{}`", self.source)),
                '(' => {
                    self.chars.next();
                    if self.peek() == Some('?') {
                        return Err(format!("unsupported group syntax in `{}`", self.source));
                    }
                    let inner = self.sequence(depth + 1)?;
                    if self.chars.next() != Some(')') {
                        return Err(format!("missing closing ): `{}`", self.source));
                    }
                    Node::Group(inner)
                }
                '|' => return Err(format!("unsupported alternation in `{}`", self.source)),
                '*' | '+' | '?' => {
                    self.chars.next();
                    let rep = match c {
                        '*' => Rep::Star,
                        '+' => Rep::Plus,
                        _ => Rep::Quest,
                    };
                    // A trailing `?` makes it non-greedy: the same set of matches.
                    if self.peek() == Some('?') {
                        self.chars.next();
                    }
                    if last_was_repeat {
                        return Err(format!("invalid nested repetition operator: `{c}`"));
                    }
                    let Some(operand) = nodes.pop() else {
                        return Err(format!("missing argument to repetition operator: `{c}`"));
                    };
                    nodes.push(Node::Repeat(Box::new(operand), rep));
                    last_was_repeat = true;
                    continue;
                }
                '{' if self.counted_repetition_ahead() => {
                    return Err(format!(
                        "unsupported counted repetition in `{}`",
                        self.source
                    ));
                }
                '.' => {
                    self.chars.next();
                    Node::AnyNotNl
                }
                '^' => {
                    self.chars.next();
                    Node::Look(Look::Start)
                }
                '$' => {
                    self.chars.next();
                    Node::Look(Look::End)
                }
                '[' => self.class()?,
                '\\' => self.escape()?,
                _ => {
                    self.chars.next();
                    Node::Char(c)
                }
            };
            nodes.push(node);
            last_was_repeat = false;
        }
        if depth > 0 {
            return Err(format!("missing closing ): `{}`", self.source));
        }
        Ok(nodes)
    }

    /// Whether a `{` starts `{n}`, `{n,}` or `{n,m}` (otherwise Go takes it literally).
    fn counted_repetition_ahead(&self) -> bool {
        let rest = self.rest();
        let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match inner.0.split_once(',') {
            None => digits(inner.0),
            Some((min, max)) => digits(min) && (max.is_empty() || digits(max)),
        }
    }

    /// An escape outside a class: anchors, `\Q...\E`, Perl classes, then single characters.
    fn escape(&mut self) -> Result<Node, String> {
        let mut ahead = self.chars.clone();
        ahead.next();
        let look = match ahead.next() {
            Some('A') => Some(Look::Start),
            Some('z') => Some(Look::End),
            Some('b') => Some(Look::WordBoundary),
            Some('B') => Some(Look::NotWordBoundary),
            Some('C') => return Err("invalid escape sequence: `\\C`".to_owned()),
            Some('Q') => {
                self.chars.next();
                self.chars.next();
                let rest = self.rest();
                let (literal, after) = rest.split_once("\\E").unwrap_or((rest.as_str(), ""));
                let consumed = rest.chars().count() - after.chars().count();
                for _ in 0..consumed {
                    self.chars.next();
                }
                return Ok(Node::Group(literal.chars().map(Node::Char).collect()));
            }
            Some(letter @ ('p' | 'P')) => {
                return Err(format!("unsupported Unicode class escape `\\{letter}`"));
            }
            Some(letter) => {
                if let Some(item) = perl_class(letter) {
                    self.chars.next();
                    self.chars.next();
                    return Ok(Node::Class(Class {
                        negated: false,
                        items: vec![item],
                    }));
                }
                None
            }
            None => None,
        };
        if let Some(look) = look {
            self.chars.next();
            self.chars.next();
            return Ok(Node::Look(look));
        }
        Ok(Node::Char(self.single_escape()?))
    }

    /// Go's `parseEscape`, at a `\`: punctuation, octal, hex and C escapes.
    fn single_escape(&mut self) -> Result<char, String> {
        self.chars.next();
        let Some(c) = self.chars.next() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        let invalid = |text: String| Err(format!("invalid escape sequence: `\\{text}`"));
        match c {
            _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            '1'..='7' if !self.peek().is_some_and(|d| ('0'..='7').contains(&d)) => {
                // A lone non-zero digit would be a backreference.
                invalid(c.to_string())
            }
            '0'..='7' => {
                let mut value = u32::from(c) - u32::from('0');
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            self.chars.next();
                            value = value * 8 + (u32::from(d) - u32::from('0'));
                        }
                        _ => break,
                    }
                }
                char::from_u32(value)
                    .ok_or_else(|| format!("invalid octal escape in `{}`", self.source))
            }
            'x' => self.hex_escape(),
            'a' => Ok('\x07'),
            'f' => Ok('\x0c'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0b'),
            _ => invalid(c.to_string()),
        }
    }

    /// After `\x`: two hex digits, or any number in braces.
    fn hex_escape(&mut self) -> Result<char, String> {
        let bad = || format!("invalid escape sequence: `\\x` in `{}`", self.source);
        let first = self.chars.next().ok_or_else(bad)?;
        let value = if first == '{' {
            let mut value: u32 = 0;
            let mut digits = 0;
            loop {
                match self.chars.next() {
                    Some('}') => break,
                    Some(d) => {
                        let v = d.to_digit(16).ok_or_else(bad)?;
                        value = value.checked_mul(16).map(|x| x + v).ok_or_else(bad)?;
                        if value > 0x10ffff {
                            return Err(bad());
                        }
                        digits += 1;
                    }
                    None => return Err(bad()),
                }
            }
            if digits == 0 {
                return Err(bad());
            }
            value
        } else {
            let second = self.chars.next().ok_or_else(bad)?;
            match (first.to_digit(16), second.to_digit(16)) {
                (Some(x), Some(y)) => x * 16 + y,
                _ => return Err(bad()),
            }
        };
        char::from_u32(value).ok_or_else(bad)
    }

    /// Go's `parseClass`, at a `[`.
    fn class(&mut self) -> Result<Node, String> {
        let whole = self.rest();
        let missing = || format!("missing closing ]: `{whole}`");
        self.chars.next();
        let mut class = Class {
            negated: false,
            items: Vec::new(),
        };
        if self.peek() == Some('^') {
            self.chars.next();
            class.negated = true;
        }
        // `]` (and `-`) are literal as the first character.
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err(missing()),
                Some(']') if !first => {
                    self.chars.next();
                    break;
                }
                _ => {}
            }
            first = false;
            if self.starts_with("[:") {
                let rest = self.rest();
                if rest.len() > 2
                    && let Some(end) = rest[2..].find(":]")
                {
                    let name = &rest[..end + 4];
                    let Some(item) = posix_class(&name[2..name.len() - 2]) else {
                        return Err(format!("invalid character class range: `{name}`"));
                    };
                    for _ in 0..name.chars().count() {
                        self.chars.next();
                    }
                    class.items.push(item);
                    continue;
                }
            }
            if self.starts_with("\\p") || self.starts_with("\\P") {
                return Err(format!("unsupported Unicode class escape in `{whole}`"));
            }
            if self.peek() == Some('\\') {
                let mut ahead = self.chars.clone();
                ahead.next();
                if let Some(item) = ahead.next().and_then(perl_class) {
                    self.chars.next();
                    self.chars.next();
                    class.items.push(item);
                    continue;
                }
            }
            let lo = self.class_char().map_err(|e| e.unwrap_or_else(missing))?;
            let mut hi = lo;
            let mut ahead = self.chars.clone();
            if ahead.next() == Some('-') && ahead.next().is_some_and(|c| c != ']') {
                self.chars.next();
                hi = self.class_char().map_err(|e| e.unwrap_or_else(missing))?;
                if hi < lo {
                    return Err(format!("invalid character class range: `{lo}-{hi}`"));
                }
            }
            class.items.push(ClassItem::Range(lo, hi));
        }
        Ok(Node::Class(class))
    }

    /// Go's `parseClassChar`; `Err(None)` is "missing closing ]".
    fn class_char(&mut self) -> Result<char, Option<String>> {
        match self.peek() {
            None => Err(None),
            Some('\\') => self.single_escape().map_err(Some),
            Some(c) => {
                self.chars.next();
                Ok(c)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Inst {
    Char(char),
    AnyNotNl,
    Class(Class),
    Look(Look),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

#[derive(Debug, Clone)]
struct Program {
    insts: Vec<Inst>,
}

impl Program {
    /// Parses Go regexp text; the error is what Go's `regexp.Compile` would complain about.
    fn compile(re: &str) -> Result<Program, String> {
        let mut parser = Parser {
            chars: re.chars().peekable(),
            source: re,
        };
        let nodes = parser.sequence(0)?;
        let mut insts = Vec::new();
        for node in &nodes {
            emit(node, &mut insts);
        }
        insts.push(Inst::Match);
        Ok(Program { insts })
    }

    /// Whether the program matches `text` from its start (a Pike VM: linear in the text).
    fn is_match(&self, text: &str) -> bool {
        let mut seen = vec![false; self.insts.len()];
        let mut current = Vec::new();
        let mut chars = text.chars().peekable();
        self.add(&mut current, &mut seen, 0, None, chars.peek().copied());
        loop {
            if current
                .iter()
                .any(|&pc| matches!(self.insts[pc], Inst::Match))
            {
                return true;
            }
            let Some(c) = chars.next() else {
                return false;
            };
            if current.is_empty() {
                return false;
            }
            let next = chars.peek().copied();
            seen.iter_mut().for_each(|s| *s = false);
            let mut following = Vec::new();
            for &pc in &current {
                let step = match &self.insts[pc] {
                    Inst::Char(want) => *want == c,
                    Inst::AnyNotNl => c != '\n',
                    Inst::Class(class) => class.matches(c),
                    _ => false,
                };
                if step {
                    self.add(&mut following, &mut seen, pc + 1, Some(c), next);
                }
            }
            current = following;
        }
    }

    /// Adds `pc` and everything reachable from it without consuming a character.
    fn add(
        &self,
        list: &mut Vec<usize>,
        seen: &mut [bool],
        pc: usize,
        prev: Option<char>,
        next: Option<char>,
    ) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if seen[pc] {
                continue;
            }
            seen[pc] = true;
            match &self.insts[pc] {
                Inst::Jmp(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Look(look) => {
                    if look.holds(prev, next) {
                        stack.push(pc + 1);
                    }
                }
                _ => list.push(pc),
            }
        }
    }
}

fn emit(node: &Node, insts: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => insts.push(Inst::Char(*c)),
        Node::AnyNotNl => insts.push(Inst::AnyNotNl),
        Node::Class(class) => insts.push(Inst::Class(class.clone())),
        Node::Look(look) => insts.push(Inst::Look(*look)),
        Node::Group(nodes) => nodes.iter().for_each(|n| emit(n, insts)),
        Node::Repeat(inner, Rep::Star) => {
            let split = insts.len();
            insts.push(Inst::Jmp(0));
            emit(inner, insts);
            insts.push(Inst::Jmp(split));
            insts[split] = Inst::Split(split + 1, insts.len());
        }
        Node::Repeat(inner, Rep::Quest) => {
            let split = insts.len();
            insts.push(Inst::Jmp(0));
            emit(inner, insts);
            insts[split] = Inst::Split(split + 1, insts.len());
        }
        Node::Repeat(inner, Rep::Plus) => {
            let start = insts.len();
            emit(inner, insts);
            insts.push(Inst::Split(start, insts.len() + 1));
        }
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
