//! Source positions and spans: where every instruction, flag and error sits in the Dockerfile.

use serde::Serialize;

/// A position in the source text: 1-based line and column (columns count characters, not
/// bytes, so a caret lines up under the character a person sees). Serialized as `[line, col]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }
}

/// A range of source text, from `start` to `end` inclusive of the last character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    pub const fn new(start: Pos, end: Pos) -> Self {
        Span { start, end }
    }

    /// A span that covers a single point.
    pub const fn point(p: Pos) -> Self {
        Span { start: p, end: p }
    }

    /// Whether the span covers more than one physical line.
    pub fn is_multiline(&self) -> bool {
        self.start.line != self.end.line
    }
}

impl Serialize for Pos {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.line, self.col).serialize(s)
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}
