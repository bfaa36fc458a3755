//! A pattern's syntax, checked as Go's `filepath.Match` checks it, and its translation to a regexp.

use super::Kind;
use super::regexp::Program;

// ---- compile-time syntax: Go's filepath.Match ----
//
// patternmatcher calls `filepath.Match(pattern, ".")` for its error only. Match checks every
// chunk (the text between unbracketed `*`s) with the same parser whether or not it matches, so
// checking all chunks is exactly its verdict. It works on bytes.

pub(super) fn check_syntax(pattern: &str) -> Result<(), &'static str> {
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
pub(super) fn translate(text: &str) -> Kind {
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
