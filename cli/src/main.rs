//! The `cairn` binary: parses the command line, runs a command, renders errors and exit codes.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod attest_args;
mod check_args;
mod commands;
mod compat_args;
mod container_args;
mod lintline;
mod progress;
mod pty;
mod rawjson;
mod sandbox_args;
mod sbom_args;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// The exit status of a command line cairn cannot parse: docker's and podman's.
const USAGE_ERROR: u8 = 125;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // cairn re-executes itself as the RUN sandbox's helper (see cairn_builder::sandbox).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(cairn_builder::sandbox::helper::ARG))
    {
        cairn_builder::sandbox::helper::main();
    }
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors: clap prints them to stdout and exits 0.
        Err(e) if !e.use_stderr() => e.exit(),
        // A usage error exits 125, as `docker build` and `podman build` do (clap's 2 would
        // read, to a script written for them, as something else).
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(USAGE_ERROR);
        }
    };
    // Only commands that run sandboxes trade the default death for a clean stop.
    let interrupted = match &cli.command {
        args::Command::Build(_)
        | args::Command::Run(_)
        | args::Command::Container(args::ContainerCommand::Run(_))
        | args::Command::Monitor(_) => on_signals(),
        _ => &NO_SIGNAL,
    };
    let result = commands::run(cli);
    if let Some(sig) = interrupted.get() {
        let _ = writeln!(std::io::stderr(), "error: interrupted");
        return ExitCode::from(128 + *sig as u8);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`cairn parse | head`) is the reader's choice, not a failure.
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| {
                        c.downcast_ref::<serde_json::Error>()
                            .and_then(serde_json::Error::io_error_kind)
                    })
                    == Some(std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            for line in error_lines(&err) {
                let _ = writeln!(stderr, "{line}");
            }
            if let Some(hint) = login_hint(&err) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            if name_conflict(&err) {
                // docker's status for a run it refused.
                return ExitCode::from(USAGE_ERROR);
            }
            ExitCode::FAILURE
        }
    }
}

/// `error: ...` and a `caused by: ...` line for each cause. A message that already quotes its
/// cause (a step's first line does) does not show it again; the cause's own causes follow.
fn error_lines(err: &anyhow::Error) -> Vec<String> {
    let mut shown = err.to_string();
    let mut lines = vec![format!("error: {shown}")];
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            lines.push(format!("  caused by: {text}"));
        }
        shown = text;
    }
    lines
}

/// A `--name` that another container has.
fn name_conflict(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<cairn_builder::Error>(),
            Some(cairn_builder::Error::Run(r))
                if matches!(**r, cairn_builder::container::RunError::NameInUse { .. })
        )
    })
}

/// A registry that refused without credentials (401), or whose token server refused the
/// ones given: the command that gives it some.
fn login_hint(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|c| match c.downcast_ref::<cairn_layers::Error>() {
            Some(cairn_layers::Error::Registry {
                status: 401, url, ..
            }) => {
                let host = url.split("://").nth(1).unwrap_or(url).split('/').next()?;
                Some(format!(
                    "the registry wants credentials: `cairn login {host}`, or --creds USER:PASSWORD"
                ))
            }
            // Stored credentials (an identity token, say) that no longer work.
            Some(cairn_layers::Error::TokenRefused { registry, .. }) => Some(format!(
                "the registry refused the stored credentials: `cairn login {registry}` again, or --creds USER:PASSWORD"
            )),
            _ => None,
        })
}

static NO_SIGNAL: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// SIGINT and SIGTERM stop every running sandbox (each kills its container and removes its
/// directories) and make the build fail, so cairn exits having cleaned up; a second signal
/// exits at once.
fn on_signals() -> &'static std::sync::OnceLock<i32> {
    static GOT: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    use signal_hook::consts::{SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if GOT.set(sig).is_err() {
                    std::process::exit(128 + sig);
                }
                cairn_builder::sandbox::cancel();
            }
        });
    }
    &GOT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap {
        message: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_the_message_quotes_is_not_repeated() {
        let quoted = Wrap {
            message: "failed to read /x: denied".into(),
            source: std::io::Error::other("denied"),
        };
        assert_eq!(
            error_lines(&anyhow::Error::new(quoted)),
            ["error: failed to read /x: denied"]
        );
        let apart = Wrap {
            message: "failed to read /x".into(),
            source: std::io::Error::other("denied"),
        };
        assert_eq!(
            error_lines(&anyhow::Error::new(apart)),
            ["error: failed to read /x", "  caused by: denied"]
        );
    }
}
