//! cairn's Dockerfile parser: text to typed instructions with spans, stages and the stage graph.
//!
//! The parser is pure: it does no I/O, prints nothing and expands no variables. Its layers follow
//! BuildKit's frontend: [`lexer`] turns bytes into logical lines (directives, continuations,
//! comments, heredocs), [`raw`] turns each line into an untyped node (keyword, flags, arguments)
//! that [`raw::dump`] prints in BuildKit's AST format, [`instruction`] types and validates each
//! node, [`stage`] groups them into stages, and [`graph`] links the stages. [`expand`] is the
//! shell-word expansion the builder applies at dispatch time with each stage's environment.

pub mod expand;
pub mod span;

pub use span::{Pos, Span};
