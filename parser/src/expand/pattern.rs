//! Shell patterns for trims and replacements: `*`, `?`, `[…]` matched as BuildKit matches them.

use super::{MAX_EXPANSION_LEN, is_name_char};

/// Reverses a pattern while keeping each `\x` pair in order, so that it still escapes `x`.
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let mut units: Vec<&str> = Vec::new();
    let mut rest = pattern;
    while let Some(ch) = rest.chars().next() {
        let mut len = ch.len_utf8();
        if ch == '\\' {
            len += rest[len..].chars().next().map_or(0, char::len_utf8);
        }
        let (unit, tail) = rest.split_at(len);
        units.push(unit);
        rest = tail;
    }
    units.into_iter().rev().collect()
}

/// Go's `Regexp.Expand` as BuildKit's replace-all reaches it, appended to `out`. The compiled
/// pattern has no groups, so `$0` or `${0}` is the matched text, other references are empty, and
/// `$$` is a `$`. False if `out` would grow past `MAX_EXPANSION_LEN` (it is then left unfinished).
pub(super) fn expand_template(template: &str, matched: &str, out: &mut String) -> bool {
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_reference(rest) {
            Some((name, after)) => {
                if name == "0" {
                    if out.len() + matched.len() > MAX_EXPANSION_LEN {
                        return false;
                    }
                    out.push_str(matched);
                }
                rest = after;
            }
            // Not a reference: the `$` is literal.
            None => out.push('$'),
        }
    }
    out.push_str(rest);
    out.len() <= MAX_EXPANSION_LEN
}

/// Splits `name…` or `{name}…` off the text after a `$` in a replacement template.
fn template_reference(text: &str) -> Option<(&str, &str)> {
    let (body, braced) = match text.strip_prefix('{') {
        Some(body) => (body, true),
        None => (text, false),
    };
    let len = body.find(|c| !is_name_char(c)).unwrap_or(body.len());
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        return after.strip_prefix('}').map(|after| (name, after));
    }
    Some((name, after))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    AnyChar,
    Literal(char),
}

/// A `${…}` pattern. BuildKit compiles it into a Go regular expression in which `*` and `?` are
/// wildcards, `\*`, `\?` and `\\` are literal, `\}` and `\/` are `}` and `/`, any other escape is
/// an error, and every other character is literal, `[` and `]` included: there are no bracket
/// expressions. The wildcards become the regular expression `.`, so they never match a newline.
#[derive(Debug)]
pub(super) struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub(super) fn parse(pattern: &str) -> Result<Self, String> {
        // The pattern is read with Go's text/scanner too, which skips a leading byte-order mark.
        let pattern = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(ch) = chars.next() {
            tokens.push(match ch {
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => match chars.peek() {
                    // Escaped only to get past the `${…}` syntax: the next turn reads it plainly.
                    Some('}' | '/') => continue,
                    Some(&escaped @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Token::Literal(escaped)
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("trailing '\\'".to_owned()),
                },
                other => Token::Literal(other),
            });
        }
        Ok(Glob { tokens })
    }

    /// The leftmost match at or after `from`, preferring long wildcard runs, as Go's regexp does
    /// for the unanchored greedy expression BuildKit builds for `/`. Offsets count characters.
    pub(super) fn find(&self, text: &[char], from: usize) -> Option<(usize, usize)> {
        let mut failed = Visited::new(self.tokens.len() + 1, text.len() + 1);
        (from..=text.len()).find_map(|start| {
            self.search(text, start, true, &mut failed)
                .map(|end| (start, end))
        })
    }

    /// The end of the match that starts at `start`, if any. `greedy` picks the longest or the
    /// shortest wildcard runs first.
    pub(super) fn match_at(&self, text: &[char], start: usize, greedy: bool) -> Option<usize> {
        let mut failed = Visited::new(self.tokens.len() + 1, text.len() + 1);
        self.search(text, start, greedy, &mut failed)
    }

    /// Depth-first search in the order a backtracking matcher tries alternatives, which is the
    /// leftmost-first answer Go's regexp gives. A state reached twice has already failed (every
    /// step moves forward, so it cannot be on the current path), which keeps this O(pattern × text)
    /// and lets `find` share the record between start positions.
    fn search(
        &self,
        text: &[char],
        start: usize,
        greedy: bool,
        failed: &mut Visited,
    ) -> Option<usize> {
        let mut stack = vec![(0, start)];
        while let Some((at, pos)) = stack.pop() {
            if !failed.insert(at, pos) {
                continue;
            }
            let Some(token) = self.tokens.get(at) else {
                return Some(pos);
            };
            let next = text.get(pos).copied();
            let wildcard_fits = next.is_some_and(|ch| ch != '\n');
            match *token {
                Token::Literal(ch) if next == Some(ch) => stack.push((at + 1, pos + 1)),
                Token::Literal(_) => {}
                Token::AnyChar if wildcard_fits => stack.push((at + 1, pos + 1)),
                Token::AnyChar => {}
                Token::Star => {
                    // Last pushed is tried first.
                    if greedy {
                        stack.push((at + 1, pos));
                        if wildcard_fits {
                            stack.push((at, pos + 1));
                        }
                    } else {
                        if wildcard_fits {
                            stack.push((at, pos + 1));
                        }
                        stack.push((at + 1, pos));
                    }
                }
            }
        }
        None
    }
}

/// A set of (pattern position, text position) pairs.
struct Visited {
    width: usize,
    bits: Vec<u64>,
}

impl Visited {
    fn new(rows: usize, width: usize) -> Self {
        Visited {
            width,
            bits: vec![0; (rows * width).div_ceil(64)],
        }
    }

    /// Adds the pair; false if it was already there.
    fn insert(&mut self, row: usize, col: usize) -> bool {
        let index = row * self.width + col;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        fresh
    }
}
