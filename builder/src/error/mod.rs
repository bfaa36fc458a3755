//! The builder's error type: what failed, naming the Dockerfile location or the path; each module's own error below it, in this directory, so wrapping them imports nothing above.

use std::path::{Path, PathBuf};

use cairn_parser::{ErrorKind, ParseError, Span};

mod cache;
mod copy;
mod download;
mod emulation;
mod git;
mod image;
mod mount;
mod run;
pub mod sandbox;
mod sbom;
mod user;

pub use cache::CacheError;
pub use copy::CopyError;
pub use download::DownloadError;
pub use emulation::EmulationError;
pub use git::GitError;
pub use image::ImageError;
pub use mount::MountError;
pub use run::RunError;
pub use sbom::SbomError;
pub use user::LookupError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Layers(#[from] cairn_layers::Error),
    /// A COPY or ADD that cannot be done.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// A cache that cannot be imported or exported.
    #[error(transparent)]
    Cache(Box<CacheError>),
    /// The `--target` stage that is not in the Dockerfile.
    #[error("--target: {0}")]
    Target(#[source] ErrorKind),
    /// An ADD of a URL that could not download it.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// An ADD of a git repository (or a git context) that could not be had.
    #[error(transparent)]
    Git(Box<GitError>),
    /// An image a step names that cannot be had.
    #[error(transparent)]
    Image(Box<ImageError>),
    /// A RUN --mount that cannot be set up.
    #[error(transparent)]
    Mount(Box<MountError>),
    /// `cairn run` that could not start its container.
    #[error(transparent)]
    Run(Box<RunError>),
    /// A RUN for another platform that no emulator here runs.
    #[error(transparent)]
    Emulation(Box<EmulationError>),
    /// An image whose packages cannot be listed.
    #[error(transparent)]
    Sbom(Box<SbomError>),
    /// A user or group that the image's files do not resolve.
    #[error(transparent)]
    User(#[from] LookupError),
    /// A word whose variables cannot be expanded.
    #[error(transparent)]
    Expand(#[from] cairn_parser::expand::ExpandError),
    /// A step that failed, at its instruction, with what made it fail.
    #[error(transparent)]
    Step(Box<StepError>),
    /// An instruction that cannot be applied, with the reason.
    #[error("{instruction}: {message}")]
    Instruction {
        instruction: String,
        message: String,
    },
    /// An instruction, as written, that another failure stops.
    #[error("{instruction}: {source}")]
    InstructionFailed {
        instruction: String,
        #[source]
        source: Box<Error>,
    },
    /// A `.dockerignore` line that cannot be read, or a pattern that cannot be compiled or
    /// matched.
    #[error("{}: line {line}: pattern {pattern:?}: {reason}", file.display())]
    Ignore {
        file: PathBuf,
        line: usize,
        pattern: String,
        reason: String,
    },
    /// A build-context path that cannot be used, with the reason.
    #[error("build context path {}: {reason}", path.display())]
    Context { path: PathBuf, reason: String },
    /// The RUN sandbox could not be set up or failed outside the step's own process.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// cairn's side of the sandbox failed: starting or talking to its helper, or what a step
    /// needs from the host.
    #[error(transparent)]
    SandboxFailed(#[from] sandbox::Error),
    /// A failure met once and shared by every step that needs what failed (the RUN
    /// sandbox, made at the first RUN).
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
    /// `# check=error=true` and a lint rule warned: BuildKit's message, naming the rules.
    #[error("{0}")]
    Lint(String),
    /// The build was interrupted (SIGINT or SIGTERM).
    #[error("build cancelled")]
    Cancelled,
    /// A filesystem operation failed; `action` says what ("read", "stat", ...).
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where in the Dockerfile a step's error points: the instruction's span, the text of the
/// line it starts on (for the caret) and its keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub span: Span,
    pub line_text: String,
    pub instruction: String,
}

impl Location {
    /// The location of `span` in the Dockerfile `src`, named `file`.
    pub fn new(file: &str, src: &str, span: Span, instruction: &str) -> Self {
        // The parser finds and cleans the line for its own errors; this uses the same code.
        let found = parse_error(span, "", "").with_source(file, src);
        Location {
            file: found.file,
            span,
            line_text: found.line_text,
            instruction: instruction.to_owned(),
        }
    }
}

fn parse_error(span: Span, instruction: &str, message: &str) -> ParseError {
    ParseError {
        kind: Box::new(ErrorKind::Instruction {
            instruction: instruction.to_owned(),
            message: message.to_owned(),
        }),
        file: String::new(),
        span,
        line_text: String::new(),
    }
}

/// A step's failure at its instruction. It renders as the parser's errors do, so a build
/// error and a parse error look alike: `Dockerfile:L:C: KEYWORD message`, then the line with
/// a caret under the instruction. The cause, when there is one, stays the error's source.
#[derive(Debug)]
pub struct StepError {
    pub at: Location,
    /// The first line's text after the keyword.
    pub message: String,
    pub cause: Option<Box<Error>>,
}

impl StepError {
    /// The parser's error this renders as: its location and caret, the keyword and message.
    pub fn as_parse_error(&self) -> ParseError {
        ParseError {
            file: self.at.file.clone(),
            line_text: self.at.line_text.clone(),
            ..parse_error(self.at.span, &self.at.instruction, &self.message)
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_parse_error().fmt(f)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Self {
        Error::Step(Box::new(e))
    }
}

/// `From` for the variants that box their error: they hold a registry's error, which would
/// make every `Result` of the crate as large.
macro_rules! from_boxed {
    ($($variant:ident($error:ty)),*) => {
        $(impl From<$error> for Error {
            fn from(e: $error) -> Self {
                Error::$variant(Box::new(e))
            }
        })*
    };
}

from_boxed!(
    Cache(CacheError),
    Git(GitError),
    Image(ImageError),
    Mount(MountError),
    Run(RunError),
    Emulation(EmulationError),
    Sbom(SbomError)
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` for a filesystem call: the action and the path it failed on.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use cairn_parser::span::Pos;

    use super::*;

    fn span(line: u32, start: u32, end: u32) -> Span {
        Span {
            start: Pos { line, col: start },
            end: Pos { line, col: end },
        }
    }

    #[test]
    fn a_step_error_renders_as_the_parser_does() {
        let src = "FROM scratch\nCOPY a /b\n";
        let at = Location::new("Dockerfile", src, span(2, 1, 9), "COPY");
        let step = StepError {
            at,
            message: "a: not found".into(),
            cause: None,
        };
        let parsed = ParseError {
            kind: Box::new(ErrorKind::Instruction {
                instruction: "COPY".into(),
                message: "a: not found".into(),
            }),
            file: String::new(),
            span: span(2, 1, 9),
            line_text: String::new(),
        }
        .with_source("Dockerfile", src);
        assert_eq!(step.to_string(), parsed.to_string());
        assert!(
            step.to_string()
                .starts_with("Dockerfile:2:1: COPY a: not found\n  |\n2 | COPY a /b\n")
        );
    }

    #[test]
    fn a_step_error_keeps_its_cause() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cause = Error::Io {
            action: "read",
            path: "/x".into(),
            source: io,
        };
        let e: Error = StepError {
            at: Location::new("Dockerfile", "RUN x\n", span(1, 1, 5), "RUN"),
            message: cause.to_string(),
            cause: Some(Box::new(cause)),
        }
        .into();
        let mut chain = vec![e.to_string()];
        let mut next = e.source();
        while let Some(c) = next {
            chain.push(c.to_string());
            next = c.source();
        }
        assert!(chain[0].starts_with("Dockerfile:1:1: RUN failed to read /x\n"));
        assert_eq!(chain[1], "failed to read /x");
        assert_eq!(chain.len(), 3, "{chain:?}");
    }
}
