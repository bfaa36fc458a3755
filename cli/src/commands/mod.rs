//! One module per command; `run` dispatches to them.

mod parse;

use crate::args::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Parse(args) => parse::run(&args),
    }
}
