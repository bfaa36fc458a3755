//! The command line, as clap parses it: commands, flags and their docker-compatible spellings.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// cairn: a daemonless, rootless image builder for Dockerfile recipes.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse a Dockerfile and print its stages, instructions and stage graph.
    Parse(ParseArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParseFormat {
    /// Typed stages and instructions with spans, and the stage graph (see docs/parse-json.md).
    Json,
    /// BuildKit's AST dump: one `(keyword [flags] "arg"...)` line per instruction.
    Ast,
}

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The Dockerfile to read; `-` reads standard input.
    /// [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ParseFormat::Json)]
    pub format: ParseFormat,

    /// The stage to build; the graph's build order lists only the stages it needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// A build argument, used to resolve stage references in FROM and --from
    /// (a bare KEY takes its value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// The build context directory, where the Dockerfile is looked for.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}
