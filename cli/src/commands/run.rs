//! `cairn run`: an image's command in a container, its terminal relayed, its exit status
//! returned as cairn's; with `-d`, in the background under a monitor of its own.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, bail};
use cairn_builder::container::{self, Containers, Launch, Proc, Record, RunOptions, Volume, log};
use cairn_builder::sandbox::{self, Network, Sandbox, Stdio3};
use cairn_layers::Store;

use crate::args::{MonitorArgs, RunArgs};
use crate::pty;

fn dup(fd: impl AsFd) -> anyhow::Result<OwnedFd> {
    fd.as_fd()
        .try_clone_to_owned()
        .context("failed to duplicate a descriptor")
}

fn null() -> anyhow::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")
        .context("failed to open /dev/null")?
        .into())
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("failed to make a pipe")
}

/// What the command line asks for, checked: the options and the sandbox's.
fn launch(args: &RunArgs) -> anyhow::Result<Launch> {
    if let Some(p) = args.publish.first() {
        bail!(
            "-p {p}: cairn publishes no ports: a container's default network is its own, \
             reachable only from inside; use --network host to serve on the host's ports"
        );
    }
    let network = match args.network.as_deref() {
        None | Some("default" | "bridge" | "private") => None,
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        Some(other) => bail!("--network {other:?}: cairn run supports default, none and host"),
    };
    let from_here = |k: &str| std::env::var(k).ok();
    let mut env = Vec::new();
    // docker's order: the files first, then -e, a later value winning.
    for f in &args.env_file {
        env.extend(container::envfile::read(f, &from_here)?);
    }
    env.extend(args.env.iter().filter_map(|e| match e.split_once('=') {
        Some(_) => Some(e.clone()),
        // docker's `-e KEY`: the value from here, or nothing when unset.
        None => from_here(e).map(|v| format!("{e}={v}")),
    }));
    let volumes = args
        .volumes
        .iter()
        .map(|v| Volume::parse(v).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(n) = &args.name {
        container::check_name(n.strip_prefix('/').unwrap_or(n))?;
    }
    let options = RunOptions {
        image: args.image.clone(),
        command: args.command.clone(),
        env,
        volumes,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        network,
        remove: args.rm,
        // A detached container never has a terminal.
        tty: args.tty && !args.detach,
        name: args.name.clone(),
        platform: args
            .platform
            .as_deref()
            .map(crate::commands::registry::parse_platform)
            .transpose()?,
    };
    Ok(Launch {
        options,
        snapshotter: args.snapshotter.clone(),
        isolation: args.isolation.value.clone(),
        limits: crate::commands::build_opts::limits(&args.limits)?,
    })
}

/// The sandbox a launch asks for; its isolation line and warnings go to `say`.
fn sandbox_for(store: &Store, l: &Launch, say: &mut dyn FnMut(String)) -> anyhow::Result<Sandbox> {
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    let isolation: sandbox::Isolation = l
        .isolation
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--isolation: {e}"))?;
    let sb = Sandbox::new(
        exe,
        store,
        l.snapshotter
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--snapshotter: {e}"))?,
        l.limits.clone(),
        isolation,
    )?;
    if sb.isolation.mode != sandbox::IsolationMode::Userns || !sb.isolation.passed_over.is_empty() {
        say(sb.isolation.line());
    }
    for w in &sb.warnings {
        say(format!("WARNING: {w}"));
    }
    Ok(sb)
}

pub fn run(store: &Store, args: &RunArgs) -> anyhow::Result<()> {
    let launch = launch(args)?;
    if args.detach {
        if args.tty || args.interactive {
            eprintln!(
                "WARNING: -i and -t do nothing with -d: a detached container has no terminal \
                 and reads /dev/null"
            );
        }
        return detach(store, launch);
    }
    let sb = sandbox_for(store, &launch, &mut |line| eprintln!("{line}"))?;
    let record = container::create(store, launch, false)?;
    let exit = if args.tty {
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
            let r = container::start(store, &sb, &record, Stdio3::Console(theirs.into()), &|| {});
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = relay.join();
            r
        })?
    } else {
        foreground(store, &sb, &record, args.interactive)?
    };
    if exit.oom_killed {
        eprintln!("cairn: the container was killed for going over its memory limit");
    }
    // The container's status is cairn's, as with docker run.
    std::process::exit(exit.status());
}

/// A container without a terminal: its output relayed here and kept in its log.
fn foreground(
    store: &Store,
    sb: &Sandbox,
    record: &Record,
    interactive: bool,
) -> anyhow::Result<sandbox::Exit> {
    let sink = log::open(&Containers::of(store).log_path(&record.id))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdio = Stdio3::Fds {
        stdin: if interactive {
            dup(std::io::stdin())?
        } else {
            null()?
        },
        stdout: out_w,
        stderr: err_w,
    };
    let echo_out = std::fs::File::from(dup(std::io::stdout())?);
    let echo_err = std::fs::File::from(dup(std::io::stderr())?);
    std::thread::scope(|scope| {
        let a =
            scope.spawn(|| log::pump(std::fs::File::from(out_r), "stdout", &sink, Some(echo_out)));
        let b =
            scope.spawn(|| log::pump(std::fs::File::from(err_r), "stderr", &sink, Some(echo_err)));
        let r = container::start(store, sb, record, stdio, &|| {});
        let _ = a.join();
        let _ = b.join();
        Ok(r?)
    })
}

/// `-d`: the record made here, the container started by a monitor process of its own
/// session, which outlives cairn; its ID printed once the monitor says it runs.
fn detach(store: &Store, launch: Launch) -> anyhow::Result<()> {
    let record = container::create(store, launch, true)?;
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    let mut ready = container::monitor::spawn(&exe, store.root(), &record.id)?;
    let mut said = String::new();
    ready
        .read_to_string(&mut said)
        .context("failed to read the monitor's answer")?;
    match said.strip_prefix("ok") {
        Some(_) => {
            writeln!(std::io::stdout(), "{}", record.id)?;
            Ok(())
        }
        None if said.is_empty() => bail!("the container's monitor exited before starting it"),
        None => bail!("{}", said.trim_end()),
    }
}

/// `cairn __monitor ID`: owns a detached container's sandbox, writes its output to its log,
/// records its end, and cleans up.
pub fn monitor(store: &Store, args: &MonitorArgs) -> anyhow::Result<()> {
    // Closed on exec: were the helper to inherit it, cairn run would wait for the end.
    let ready = std::sync::Mutex::new(Some(container::monitor::ready_pipe()?));
    let tell = |text: &str| {
        if let Some(mut f) = ready.lock().ok().and_then(|mut r| r.take()) {
            let _ = f.write_all(text.as_bytes());
        }
    };
    let containers = Containers::of(store);
    let result = (|| -> anyhow::Result<sandbox::Exit> {
        containers.update(&args.id, |r| r.owner = Some(Proc::own()))?;
        let record = containers.load(&args.id)?;
        let sink = log::open(&containers.log_path(&record.id))?;
        let mut said = Vec::new();
        let sb = sandbox_for(store, &record.launch, &mut |l| said.push(l))?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdio = Stdio3::Fds {
            stdin: null()?,
            stdout: out_w,
            stderr: err_w,
        };
        std::thread::scope(|scope| {
            let a = scope.spawn(|| log::pump(std::fs::File::from(out_r), "stdout", &sink, None));
            let b = scope.spawn(|| log::pump(std::fs::File::from(err_r), "stderr", &sink, None));
            let r = container::start(store, &sb, &record, stdio, &|| tell("ok\n"));
            let _ = a.join();
            let _ = b.join();
            Ok(r?)
        })
    })();
    if let Err(e) = &result {
        let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
        tell(&format!("{}\n", chain.join(": ")));
    }
    result.map(drop)
}
