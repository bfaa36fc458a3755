//! Physical lines to logical lines: directives, continuations, comments and heredoc bodies.
//!
//! The rules are BuildKit's (`frontend/dockerfile/parser/parser.go`): a line continues when its
//! last non-blank character is an unescaped escape token; comment lines inside a continuation
//! are dropped; blank lines inside one are dropped with a warning; the escape token is set by
//! the `# escape=` directive, which is only honoured at the very top of the file.

use crate::directive::Directives;
use crate::error::{ErrorKind, ParseError, Warning};
use crate::span::{Pos, Span};

/// One physical line: its 1-based number and its text without the line terminator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhysLine<'a> {
    pub number: u32,
    /// The text with trailing `\r`/`\n` removed (and the BOM removed from line 1).
    pub text: &'a str,
    /// The text as read, terminator included (heredoc bodies keep it).
    pub raw: &'a str,
}

/// Iterates the physical lines of a source, as Go's line scanner with kept terminators does.
#[derive(Debug)]
pub(crate) struct PhysLines<'a> {
    rest: &'a str,
    number: u32,
}

impl<'a> PhysLines<'a> {
    pub fn new(src: &'a str) -> Self {
        PhysLines {
            rest: src,
            number: 0,
        }
    }

    /// The number of the last line handed out (0 before the first).
    pub fn current(&self) -> u32 {
        self.number
    }
}

impl<'a> Iterator for PhysLines<'a> {
    type Item = PhysLine<'a>;

    fn next(&mut self) -> Option<PhysLine<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let mut raw = &self.rest[..end];
        self.rest = &self.rest[end..];
        self.number += 1;
        if self.number == 1 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        Some(PhysLine {
            number: self.number,
            text: raw.trim_end_matches(['\r', '\n']),
            raw,
        })
    }
}

/// Where a run of logical-line text came from, to map byte offsets back to line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Byte offset of the segment's first character in the logical text.
    pub offset: usize,
    pub line: u32,
    /// Column of the segment's first character on its physical line.
    pub col: u32,
}

/// An instruction's text with continuations joined, and where each part came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogicalLine {
    pub text: String,
    pub segments: Vec<Segment>,
    pub start: Pos,
    pub end: Pos,
    /// The comment lines right before the instruction (BuildKit's `PrevComment`): text after
    /// `#`, trimmed; an empty `#` line starts the list again, blank lines do not.
    pub comments: Vec<String>,
}

impl LogicalLine {
    fn push(&mut self, text: &str, line: u32, col: u32) {
        self.segments.push(Segment {
            offset: self.text.len(),
            line,
            col,
        });
        self.text.push_str(text);
    }

    /// The source position of the character at byte `offset` of the logical text.
    #[cfg(test)]
    pub fn pos_at(&self, offset: usize) -> Pos {
        pos_in(&self.text, &self.segments, offset)
    }

    #[cfg(test)]
    pub fn span(&self) -> Span {
        Span::new(self.start, self.end)
    }
}

/// Maps a byte offset in a logical text to its source position, using its segments.
pub(crate) fn pos_in(text: &str, segments: &[Segment], offset: usize) -> Pos {
    let offset = offset.min(text.len());
    let idx = segments.partition_point(|s| s.offset <= offset);
    let Some(seg) = segments.get(idx.saturating_sub(1)) else {
        return Pos::default();
    };
    let chars = text
        .get(seg.offset..offset)
        .map_or(0, |s| s.chars().count() as u32);
    Pos::new(seg.line, seg.col + chars)
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Whether a physical line is a comment: its first non-blank character is `#`.
fn is_comment(text: &str) -> bool {
    text.trim_start_matches(is_space).starts_with('#')
}

/// Removes a trailing escape token (and the blanks after it) when it continues the line.
/// Returns the text and whether the logical line ends here.
fn trim_continuation(text: &str, escape: char) -> (&str, bool) {
    let body = text.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (text, true);
    };
    // An escaped escape token (`\\`) at the end is literal, not a continuation.
    if before.ends_with(escape) {
        return (text, true);
    }
    (before, false)
}

/// The lexer: hands out logical lines, and heredoc bodies when the caller asks for them.
#[derive(Debug)]
pub(crate) struct Lexer<'a> {
    lines: PhysLines<'a>,
    pub directives: Directives,
    pub warnings: Vec<Warning>,
    /// Comments seen since the last instruction, for the next one.
    comments: Vec<String>,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            lines: PhysLines::new(src),
            directives: Directives::default(),
            warnings: Vec::new(),
            comments: Vec::new(),
        }
    }

    /// The number of the last physical line consumed.
    pub fn current_line(&self) -> u32 {
        self.lines.current()
    }

    /// The next logical line, or `None` at the end of the input.
    pub fn next_logical(&mut self) -> Result<Option<LogicalLine>, ParseError> {
        while let Some(line) = self.lines.next() {
            let trimmed = line.text.trim_start_matches(is_space);
            let lead = (line.text.len() - trimmed.len()) as u32;
            let directive = self.directives.observe(trimmed, line.number)?;
            if let Some(comment) = trimmed.strip_prefix('#') {
                let comment = comment.trim();
                if comment.is_empty() {
                    self.comments.clear();
                } else if !directive {
                    self.comments.push(comment.to_owned());
                }
                continue;
            }
            let escape = self.directives.escape;
            let (first, mut done) = trim_continuation(trimmed, escape);
            if done && first.is_empty() {
                continue;
            }
            let lead_col = line.text[..lead as usize].chars().count() as u32 + 1;
            let mut logical = LogicalLine {
                start: Pos::new(line.number, lead_col),
                comments: std::mem::take(&mut self.comments),
                ..LogicalLine::default()
            };
            logical.push(first, line.number, lead_col);
            let mut last = line;
            let mut empty_line = None;
            while !done {
                let Some(next) = self.lines.next() else { break };
                last = next;
                if is_comment(next.text) {
                    continue;
                }
                if next.text.trim_start_matches(is_space).is_empty() {
                    // One warning per instruction, at its first empty line, as BuildKit does.
                    empty_line.get_or_insert(next.number);
                    continue;
                }
                let (part, end) = trim_continuation(next.text, escape);
                done = end;
                logical.push(part, next.number, 1);
            }
            logical.end = end_of(last);
            if let Some(n) = empty_line {
                self.warnings.push(Warning {
                    span: Span::point(Pos::new(n, 1)),
                    message: "empty continuation line in an instruction: empty continuation \
                              lines will become errors in a future release"
                        .to_owned(),
                });
            }
            return Ok(Some(logical));
        }
        Ok(None)
    }

    /// Reads a heredoc body up to its terminator line; returns the body (terminators kept on
    /// each line, as written) and the position of the terminator's end.
    pub fn heredoc_body(
        &mut self,
        terminator: &str,
        chomp: bool,
        opened_at: Span,
    ) -> Result<(String, Pos), ParseError> {
        let mut body = String::new();
        for line in self.lines.by_ref() {
            let candidate = if chomp {
                line.text.trim_start_matches('\t')
            } else {
                line.text
            };
            if candidate == terminator {
                return Ok((body, end_of(line)));
            }
            body.push_str(line.raw);
        }
        Err(ParseError::new(
            ErrorKind::UnterminatedHeredoc(terminator.to_owned()),
            opened_at,
        ))
    }
}

/// The position of the last character of a physical line (column 1 for an empty line).
fn end_of(line: PhysLine<'_>) -> Pos {
    Pos::new(line.number, (line.text.chars().count() as u32).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        let cases: &[(&str, char, &str, bool)] = &[
            ("echo hi", '\\', "echo hi", true),
            ("echo hi \\", '\\', "echo hi ", false),
            ("echo hi \\  \t", '\\', "echo hi ", false),
            ("trailing\\\\", '\\', "trailing\\\\", true),
            ("\\", '\\', "", false),
            ("echo `", '`', "echo ", false),
            ("echo \\", '`', "echo \\", true),
        ];
        for &(input, esc, want, want_done) in cases {
            assert_eq!(
                trim_continuation(input, esc),
                (want, want_done),
                "{input:?}"
            );
        }
    }

    #[test]
    fn logical_lines_and_positions() {
        let src = "FROM a\n  RUN echo \\\n# comment\n\n    there\nCMD x";
        let mut lx = Lexer::new(src);
        let l1 = lx.next_logical().unwrap().unwrap();
        assert_eq!(l1.text, "FROM a");
        assert_eq!(l1.span(), Span::new(Pos::new(1, 1), Pos::new(1, 6)));
        let l2 = lx.next_logical().unwrap().unwrap();
        assert_eq!(l2.text, "RUN echo     there");
        assert_eq!(l2.start, Pos::new(2, 3));
        assert_eq!(l2.end.line, 5);
        assert_eq!(l2.pos_at(4), Pos::new(2, 7));
        assert_eq!(l2.pos_at(l2.text.find("there").unwrap()), Pos::new(5, 5));
        assert_eq!(lx.warnings.len(), 1);
        assert_eq!(lx.warnings[0].span.start.line, 4);
        let l3 = lx.next_logical().unwrap().unwrap();
        assert_eq!(l3.text, "CMD x");
        assert!(lx.next_logical().unwrap().is_none());
    }

    #[test]
    fn crlf_and_bom() {
        let mut lx = Lexer::new("\u{feff}FROM a\r\nRUN b \\\r\n c\r\n");
        assert_eq!(lx.next_logical().unwrap().unwrap().text, "FROM a");
        let run = lx.next_logical().unwrap().unwrap();
        assert_eq!(run.text, "RUN b  c");
        assert_eq!(run.start, Pos::new(2, 1));
    }

    #[test]
    fn heredoc_bodies() {
        let mut lx = Lexer::new("RUN <<EOF\n\techo hi\nEOF\n");
        lx.next_logical().unwrap().unwrap();
        let (body, end) = lx.heredoc_body("EOF", false, Span::default()).unwrap();
        assert_eq!(body, "\techo hi\n");
        assert_eq!(end, Pos::new(3, 3));
        let mut lx = Lexer::new("RUN <<-EOF\n\techo hi\n\tEOF\n");
        lx.next_logical().unwrap().unwrap();
        assert!(lx.heredoc_body("EOF", true, Span::default()).is_ok());
        let mut lx = Lexer::new("RUN <<EOF\nbody\n");
        lx.next_logical().unwrap().unwrap();
        let err = lx.heredoc_body("EOF", false, Span::default()).unwrap_err();
        assert_eq!(*err.kind, ErrorKind::UnterminatedHeredoc("EOF".into()));
    }
}
