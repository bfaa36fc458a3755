//! `cairn run`: an image's command in a container, its terminal relayed, its exit status
//! returned as cairn's.

use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, bail};
use cairn_builder::container::{self, RunOptions, Volume};
use cairn_builder::sandbox::{self, Network, Sandbox, Stdio3};
use cairn_layers::Store;

use crate::args::RunArgs;
use crate::pty;

fn dup(fd: impl AsFd) -> anyhow::Result<OwnedFd> {
    fd.as_fd()
        .try_clone_to_owned()
        .context("failed to duplicate a descriptor")
}

pub fn run(store: &Store, args: &RunArgs) -> anyhow::Result<()> {
    let network = match args.network.as_deref() {
        None | Some("default" | "bridge" | "private") => None,
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        Some(other) => bail!("--network {other:?}: cairn run supports default, none and host"),
    };
    let env = args
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            // docker's `-e KEY`: the value from here, or nothing when unset.
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect();
    let volumes = args
        .volumes
        .iter()
        .map(|v| Volume::parse(v).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = RunOptions {
        image: args.image.clone(),
        command: args.command.clone(),
        env,
        volumes,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        network,
        remove: args.rm,
        tty: args.tty,
        name: args.name.clone(),
        platform: args
            .platform
            .as_deref()
            .map(crate::commands::registry::parse_platform)
            .transpose()?,
    };
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    let sb = Sandbox::new(
        exe,
        store,
        args.snapshotter
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--snapshotter: {e}"))?,
        crate::commands::build_opts::limits(&args.limits)?,
        args.isolation.parse()?,
    )?;
    if sb.isolation.mode != cairn_builder::sandbox::IsolationMode::Userns
        || !sb.isolation.passed_over.is_empty()
    {
        eprintln!("{}", sb.isolation.line());
    }
    for w in &sb.warnings {
        eprintln!("WARNING: {w}");
    }
    let null = || -> anyhow::Result<OwnedFd> {
        Ok(std::fs::File::open("/dev/null")
            .context("failed to open /dev/null")?
            .into())
    };
    let (exit, _id) = if args.tty {
        // The terminal is made inside the container, in its own /dev/pts (so `tty` there names
        // it), and its master comes back over this socket.
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().context("failed to make a socket pair")?;
        let ours = OwnedFd::from(ours);
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        let _raw = if stdin.is_terminal() && args.interactive {
            Some(pty::raw_mode(stdin.as_fd()).context("failed to put the terminal in raw mode")?)
        } else {
            None
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let relay = scope.spawn(|| -> anyhow::Result<()> {
                let Some(master) = sandbox::receive_console(&ours)
                    .context("failed to receive the container's terminal")?
                else {
                    return Ok(());
                };
                if let Some((rows, cols)) = pty::window_size(stdin.as_fd()) {
                    let _ = pty::set_window_size(master.as_fd(), rows, cols);
                }
                let input = args.interactive.then(|| stdin.as_fd());
                pty::relay_until(master.as_fd(), input, stdout.as_fd(), &|| {
                    done.load(std::sync::atomic::Ordering::SeqCst)
                })?;
                Ok(())
            });
            let r = container::run(store, &sb, &opts, Stdio3::Console(theirs.into()));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = relay.join();
            r
        })?
    } else {
        let stdio = Stdio3::Fds {
            stdin: if args.interactive {
                dup(std::io::stdin())?
            } else {
                null()?
            },
            stdout: dup(std::io::stdout())?,
            stderr: dup(std::io::stderr())?,
        };
        container::run(store, &sb, &opts, stdio)?
    };
    if exit.oom_killed {
        eprintln!("cairn: the container was killed for going over its memory limit");
    }
    // The container's status is cairn's, as with docker run.
    std::process::exit(exit.status());
}
