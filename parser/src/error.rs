//! The parser's error type and warnings: what went wrong, where, rendered with a caret.

use std::fmt;

use serde::Serialize;

use crate::expand::ExpandError;
use crate::span::Span;

/// What went wrong. Messages are lowercase and name the offending text; the location is
/// carried by [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("the Dockerfile is not valid UTF-8")]
    InvalidUtf8,
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    #[error("unknown instruction: {name}{}", suggestion_suffix(.suggestion))]
    UnknownInstruction {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("unterminated heredoc: no line equal to {0:?} before the end of the file")]
    UnterminatedHeredoc(String),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("{instruction} must have two arguments")]
    KeyValueMissingValue { instruction: String },
    #[error("syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals { word: String },
    #[error(
        "unknown flag: --{flag} for {instruction}{} (allowed: {})",
        flag_suggestion(.suggestion),
        allowed_list(.allowed)
    )]
    UnknownFlag {
        instruction: String,
        flag: String,
        suggestion: Option<&'static str>,
        allowed: Vec<&'static str>,
    },
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("invalid value for --{flag}: {message}")]
    FlagValue { flag: String, message: String },
    #[error("invalid --mount: {0}")]
    Mount(String),
    #[error("{instruction} {message}")]
    Instruction {
        instruction: String,
        message: String,
    },
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildNotAllowed(String),
    #[error("{0} instruction is not allowed before the first FROM (only ARG may precede it)")]
    BeforeFrom(String),
    #[error(
        "invalid stage name {0:?}: it must start with a letter and hold only letters, digits, '-', '_' and '.'"
    )]
    InvalidStageName(String),
    #[error("duplicate stage name {name:?}: first defined on line {first_line}")]
    DuplicateStageName { name: String, first_line: u32 },
    #[error("stage index {index} is out of range: this Dockerfile has stages 0 to {max}")]
    StageIndexOutOfRange { index: usize, max: usize },
    #[error(
        "cannot copy from stage {from:?}, it needs to be defined before current stage {current:?}"
    )]
    CopyFromLaterStage { from: String, current: String },
    #[error("circular dependency between stages: {0}")]
    StageCycle(String),
    #[error(
        "target stage {target:?} could not be found{}",
        suggestion_suffix(&.suggestion.as_deref())
    )]
    UnknownTarget {
        target: String,
        /// A stage name close enough to be what was meant, as BuildKit suggests it.
        suggestion: Option<String>,
    },
    #[error("{0}")]
    Expand(#[from] ExpandError),
}

fn suggestion_suffix(s: &Option<&str>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn flag_suggestion(s: &Option<&'static str>) -> String {
    match s {
        Some(s) => format!(" (did you mean --{s}?)"),
        None => String::new(),
    }
}

fn allowed_list(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        "none".to_owned()
    } else {
        allowed
            .iter()
            .map(|a| format!("--{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A parse error with its location: the file, the span, and the text of the line it starts on,
/// so it renders as `file:line:col: message` followed by the line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Boxed so that `Result<_, ParseError>` stays small on the happy path.
    pub kind: Box<ErrorKind>,
    pub file: String,
    pub span: Span,
    /// The physical source line `span.start.line` (without its newline), for the caret.
    pub line_text: String,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, span: Span) -> Self {
        ParseError {
            kind: Box::new(kind),
            file: String::new(),
            span,
            line_text: String::new(),
        }
    }

    /// The `file:line:col` this error points at.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file, self.span.start.line, self.span.start.col
        )
    }

    /// Fills in the file name and the source line (for the caret), which the layers that
    /// work on parsed values (the stage graph, the builder) do not know.
    pub fn with_source(mut self, file: &str, src: &str) -> Self {
        self.file = file.to_owned();
        if self.span.start.line >= 1 {
            self.line_text = src
                .split('\n')
                .nth(self.span.start.line as usize - 1)
                .unwrap_or("")
                .trim_end_matches(['\r', '\n'])
                .trim_start_matches('\u{feff}')
                .to_owned();
        }
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.kind)?;
        if self.span.start.line == 0 || self.line_text.is_empty() {
            return Ok(());
        }
        let num = self.span.start.line.to_string();
        let pad = " ".repeat(num.len());
        // Tabs are shown as one space so the caret stays under the right character.
        let shown: String = self
            .line_text
            .chars()
            .map(|c| if c == '\t' { ' ' } else { c })
            .collect();
        let width = shown.chars().count() as u32;
        let start = self.span.start.col.max(1);
        let end = if self.span.is_multiline() {
            width.max(start)
        } else {
            self.span.end.col.clamp(start, width.max(start))
        };
        write!(
            f,
            "\n{pad} |\n{num} | {shown}\n{pad} | {}{}",
            " ".repeat(start as usize - 1),
            "^".repeat((end - start + 1) as usize)
        )
    }
}

/// A problem that does not stop the parse, returned with the result for the caller to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub span: Span,
    pub message: String,
}
