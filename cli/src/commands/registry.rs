//! The registry commands: pull, push, login, logout, with their progress as plain stderr lines.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use cairn_layers::Reference;
use cairn_layers::image::Platform;
use cairn_layers::registry::{self, Credentials, Event, RegistryConfig, RegistryOptions};
use cairn_layers::store::Store;

use crate::args::{LoginArgs, LogoutArgs, PullArgs, PushArgs, RegistryArgs};

/// `--platform`: `os/arch[/variant]`, normalised (see [`Platform::parse`]).
pub fn parse_platform(s: &str) -> anyhow::Result<Platform> {
    Platform::parse(s).with_context(|| format!("--platform {s:?}"))
}

/// `USER:PASSWORD` (a bare USER asks for the password on the terminal).
fn parse_creds(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u.to_owned(), p.to_owned())),
        None if !s.is_empty() => Ok((s.to_owned(), prompt("Password: ", false)?)),
        _ => bail!("--creds: expected USER[:PASSWORD]"),
    }
}

/// Asks on the terminal; `echo` false hides what is typed.
fn prompt(label: &str, echo: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "{} needed and standard input is not a terminal",
            label.trim_end_matches([':', ' '])
        );
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{label}")?;
    err.flush()?;
    let saved = if echo {
        None
    } else {
        rustix::termios::tcgetattr(&stdin).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ =
                rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet);
        })
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
        writeln!(err)?;
    }
    read.context("failed to read from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub(crate) fn options(
    args: &RegistryArgs,
    creds: Option<&str>,
    platform: Option<&str>,
) -> anyhow::Result<RegistryOptions> {
    let config = RegistryConfig::load()?;
    Ok(RegistryOptions {
        tls_verify: args.tls_verify,
        cert_dir: args.cert_dir.clone(),
        creds: creds.map(parse_creds).transpose()?,
        authfile: args.authfile.clone(),
        platform: platform.map(parse_platform).transpose()?,
        config: Arc::new(config),
        ..RegistryOptions::default()
    })
}

/// Decimal units, as registries and docker show sizes.
fn size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Pull,
    Push,
    Login,
}

/// One plain stderr line per event worth a line; nothing when quiet.
fn render(op: Op, quiet: bool) -> impl Fn(Event) + Sync {
    move |e: Event| {
        if quiet {
            return;
        }
        let line = match (&e, op) {
            (Event::Resolved { reference, digest }, Op::Pull) => {
                format!("Resolved {reference} to {digest}")
            }
            (Event::PlatformSelected { platform, digest }, _) => {
                format!("Selected {platform}: {digest}")
            }
            (Event::BlobSkipped { digest, .. }, Op::Pull) => {
                format!("Blob {digest} already present")
            }
            (Event::BlobSkipped { digest, .. }, _) => format!("Blob {digest} already exists"),
            (
                Event::BlobDone {
                    digest, size: n, ..
                },
                Op::Pull,
            ) => {
                format!("Copied blob {digest} ({})", size(*n))
            }
            (
                Event::BlobDone {
                    digest,
                    mounted: true,
                    ..
                },
                _,
            ) => format!("Mounted blob {digest}"),
            (
                Event::BlobDone {
                    digest, size: n, ..
                },
                _,
            ) => {
                format!("Pushed blob {digest} ({})", size(*n))
            }
            (
                Event::Retrying {
                    what,
                    attempt,
                    error,
                },
                _,
            ) => format!("Retrying {what} (attempt {attempt} failed: {error})"),
            (Event::MirrorFailed { endpoint, error }, _) => {
                format!("Mirror {endpoint} failed: {error}")
            }
            (Event::ManifestStored { digest }, _) => format!("Digest: {digest}"),
            (Event::ManifestPushed { reference, digest }, _) => {
                format!("Pushed {reference}\nDigest: {digest}")
            }
            _ => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A pull's progress lines, for `cairn manifest add` of a registry's image.
pub(crate) fn render_pull(quiet: bool) -> impl Fn(Event) + Sync {
    render(Op::Pull, quiet)
}

/// A push's progress lines, for `cairn build --push`.
pub(crate) fn render_push(quiet: bool) -> impl Fn(Event) + Sync {
    render(Op::Push, quiet)
}

pub fn pull(store: &Store, args: &PullArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let opts = options(
        &args.registry,
        args.creds.as_deref(),
        args.platform.as_deref(),
    )?;
    let events = render(Op::Pull, args.quiet);
    let which = if args.all_platforms {
        registry::Platforms::All
    } else {
        registry::Platforms::One
    };
    let pulled = registry::pull_platforms(store, &reference, &opts, which, &events)
        .with_context(|| format!("failed to pull {}", reference.familiar()))?;
    // The image ID of what was pulled; of every platform, the index's digest (docker's ID
    // for a multi-platform image).
    let id = match pulled.images.as_slice() {
        [one] => store.image(one)?.id().clone(),
        _ => pulled.top.digest,
    };
    writeln!(std::io::stdout().lock(), "{id}")?;
    Ok(())
}

pub fn push(store: &Store, args: &PushArgs) -> anyhow::Result<()> {
    let (name, desc) = store.resolve(&args.name)?;
    let dest = match (&args.dest, name) {
        (Some(d), _) => Reference::parse(d)?,
        (None, Some(n)) => n,
        (None, None) => match Reference::parse(&args.name) {
            Ok(r) if r.tag().is_some() || r.digest().is_some() => r,
            _ => bail!(
                "{} is an image ID: give the destination (cairn push {} REGISTRY/REPOSITORY[:TAG])",
                args.name,
                args.name
            ),
        },
    };
    let opts = options(&args.registry, args.creds.as_deref(), None)?;
    let events = render(Op::Push, args.quiet);
    let digest = registry::push(store, &desc, &dest, &opts, &events)
        .with_context(|| format!("failed to push {}", dest.familiar()))?;
    if let Some(f) = &args.digestfile {
        std::fs::write(f, digest.as_str())
            .with_context(|| format!("failed to write {}", f.display()))?;
    }
    writeln!(std::io::stdout().lock(), "{digest}")?;
    Ok(())
}

pub fn login(args: &LoginArgs) -> anyhow::Result<()> {
    let username = match &args.username {
        Some(u) => u.clone(),
        None => prompt("Username: ", true)?,
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("failed to read the password from standard input")?;
            p.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => prompt("Password: ", false)?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("login to {} needs a user name and a password", args.server);
    }
    let opts = options(&args.registry, None, None)?;
    let events = render(Op::Login, false);
    registry::login(
        &args.server,
        &Credentials::new(username, password),
        &opts,
        &events,
    )
    .with_context(|| format!("failed to log in to {}", args.server))?;
    writeln!(std::io::stdout().lock(), "Login Succeeded")?;
    Ok(())
}

pub fn logout(args: &LogoutArgs) -> anyhow::Result<()> {
    registry::logout(&args.server, args.authfile.as_deref())
        .with_context(|| format!("failed to log out of {}", args.server))?;
    writeln!(
        std::io::stdout().lock(),
        "Removed login credentials for {}",
        args.server
    )?;
    Ok(())
}
