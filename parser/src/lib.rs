//! cairn's Dockerfile parser: text to typed instructions with spans, stages and the stage graph.
//!
//! The parser is pure: it does no I/O, prints nothing and expands no variables while parsing.
//! Its layers follow BuildKit's frontend: `lexer` turns text into logical lines (directives,
//! continuations, comments, heredoc bodies); [`raw`] cuts each line into an untyped node
//! (keyword, flags, arguments) that [`raw::dump`] prints in BuildKit's AST format;
//! [`instruction`] types and checks each node; [`stage`] groups them into stages; [`graph`]
//! links the stages. [`expand`] is the shell-word expansion the builder applies at dispatch
//! time with each stage's environment.

pub mod chmod;
pub mod directive;
mod duration;
pub mod error;
pub mod expand;
mod flags;
pub mod graph;
pub mod instruction;
mod lexer;
pub mod lint;
pub mod mount;
pub mod raw;
pub mod span;
pub mod stage;
mod suggest;

pub use directive::{Directive, Directives};
pub use duration::parse_go_duration;
pub use error::{ErrorKind, ParseError, Warning};
pub use graph::{Edge, EdgeKind, ImageUse, StageGraph};
pub use instruction::{Instruction, InstructionKind};
pub use raw::{Ast, Node, dump};
pub use span::{Pos, Span};
pub use stage::{Dockerfile, Stage};

/// Parses a Dockerfile into typed stages. `file` names it in error messages.
pub fn parse(file: &str, src: &str) -> Result<Dockerfile, ParseError> {
    parse_ast(file, src).and_then(|ast| stage::build(&ast).map_err(|e| e.with_source(file, src)))
}

/// Parses a Dockerfile into BuildKit's untyped AST, with no instruction checks beyond
/// BuildKit's parser's own (so unknown instructions and flags pass, as they do there).
pub fn parse_ast(file: &str, src: &str) -> Result<Ast, ParseError> {
    raw::parse_nodes(src).map_err(|e| e.with_source(file, src))
}

/// Checks that `bytes` are UTF-8 and returns them as text, or an error at the first bad byte.
pub fn decode(file: &str, bytes: &[u8]) -> Result<String, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
            let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&good[line_start..]).chars().count() as u32 + 1;
            let err = ParseError::new(ErrorKind::InvalidUtf8, Span::point(Pos::new(line, col)));
            Err(err.with_source(file, &String::from_utf8_lossy(bytes)))
        }
    }
}
