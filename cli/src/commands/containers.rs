//! The container commands: `ps`, `rm`, `container prune`, `commit`, `logs`, `stop`, `wait`
//! and `container inspect`, over the records `cairn run` keeps.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_builder::container::{self, CommitOptions, Containers, Record, State, log};
use cairn_builder::sandbox::Sandbox;
use cairn_layers::{Reference, Store};
use rustix::process::Signal;
use serde_json::{Value, json};

use super::images::{Format, print};
use super::images::{human_duration, seconds_since};
use crate::container_args::{
    CommitArgs, ContainerInspectArgs, LogsArgs, PsArgs, RmArgs, StopArgs, WaitArgs,
};

/// How long a killed container's owner gets to record its end and clean up.
const CLEANUP: Duration = Duration::from_secs(10);
/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(25);

fn since(ts: Option<&str>) -> i64 {
    seconds_since(ts).unwrap_or(0)
}

/// docker's STATUS column.
fn status(r: &Record) -> String {
    match r.current() {
        (State::Created, _) => "Created".into(),
        (State::Running, _) => format!("Up {}", human_duration(since(r.started.as_deref()))),
        (State::Exited, code) => {
            let at = r.finished.as_deref().or(r.started.as_deref());
            format!(
                "Exited ({}) {} ago",
                code.unwrap_or(container::LOST_EXIT),
                human_duration(since(at.or(Some(&r.created))))
            )
        }
    }
}

/// A row of `cairn ps`, under docker's field names.
fn fields(r: &Record, no_trunc: bool) -> serde_json::Map<String, Value> {
    let mut command = r.command.join(" ");
    if !no_trunc && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…";
    }
    let id = if no_trunc { &r.id } else { r.short_id() };
    let json = json!({
        "Command": format!("\"{command}\""),
        "CreatedAt": r.created,
        "ID": id,
        "Image": r.image,
        "Labels": "",
        "LocalVolumes": "0",
        "Mounts": "",
        "Names": r.name,
        "Networks": "",
        "Ports": "",
        "RunningFor": format!("{} ago", human_duration(since(Some(&r.created)))),
        "Size": "",
        "State": r.current().0.as_str(),
        "Status": status(r),
    });
    match json {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn keeps(filters: &[(String, String)], r: &Record) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "status" => r.current().0.as_str() == v,
        "name" => r.name.contains(v.trim_start_matches('/')),
        "id" => r.id.starts_with(v.as_str()),
        _ => true,
    })
}

pub fn ps(store: &Store, args: &PsArgs) -> anyhow::Result<()> {
    let filters = args
        .filter
        .iter()
        .map(|f| match f.split_once('=') {
            Some((k @ ("status" | "name" | "id"), v)) => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--filter {f:?}: cairn ps filters by status=, name= and id="),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // docker shows stopped ones when a status filter asks for them.
    let all = args.all || filters.iter().any(|(k, _)| k == "status");
    let records: Vec<Record> = Containers::of(store)
        .list()?
        .into_iter()
        .filter(|r| (all || r.running()) && keeps(&filters, r))
        .collect();
    let rows: Vec<_> = records.iter().map(|r| fields(r, args.no_trunc)).collect();
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(());
    }
    let format = Format::parse(args.format.as_deref().unwrap_or("table"));
    match format {
        // docker's `ps --format json`: one object a line.
        Format::Json => {
            for r in &rows {
                writeln!(out, "{}", Value::Object(r.clone()))?;
            }
            Ok(())
        }
        other => {
            drop(out);
            print(
                &other,
                &rows,
                &[
                    ("ID", "CONTAINER ID"),
                    ("Image", "IMAGE"),
                    ("Command", "COMMAND"),
                    ("RunningFor", "CREATED"),
                    ("Status", "STATUS"),
                    ("Ports", "PORTS"),
                    ("Names", "NAMES"),
                ],
            )
        }
    }
}

fn remover(store: &Store) -> anyhow::Result<Sandbox> {
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    Ok(Sandbox::for_removal(exe, store)?)
}

/// Kills a running container and waits for its owner to clean up.
fn kill(store: &Store, r: &Record) -> anyhow::Result<()> {
    container::signal(r, Signal::KILL);
    if !container::wait_gone(store, &r.id, CLEANUP) {
        bail!("container {} did not stop after SIGKILL", r.name);
    }
    Ok(())
}

/// Runs `each` on every name, printing its error and going on as docker does; fails at the
/// end when one failed.
fn each(names: &[String], mut one: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut failed = 0;
    for n in names {
        if let Err(e) = one(n) {
            failed += 1;
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
        }
    }
    if failed > 0 {
        // Each error was shown; the exit status says so.
        std::process::exit(1);
    }
    Ok(())
}

pub fn rm(store: &Store, args: &RmArgs) -> anyhow::Result<()> {
    let containers = Containers::of(store);
    let sb = remover(store)?;
    each(&args.containers, |name| {
        let r = containers.find(name)?;
        if r.running() {
            if !args.force {
                return Err(container::RunError::Running(r.name.clone()).into());
            }
            kill(store, &r)?;
        }
        container::remove(store, &sb, &r)?;
        writeln!(std::io::stdout(), "{name}")?;
        Ok(())
    })
}

pub fn prune(store: &Store) -> anyhow::Result<()> {
    let sb = remover(store)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Deleted Containers:")?;
    for r in Containers::of(store).list()? {
        if !r.running() {
            container::remove(store, &sb, &r)?;
            writeln!(out, "{}", r.id)?;
        }
    }
    Ok(())
}

pub fn stop(store: &Store, args: &StopArgs) -> anyhow::Result<()> {
    let containers = Containers::of(store);
    each(&args.containers, |name| {
        let r = containers.find(name)?;
        if r.running() {
            container::signal(&r, Signal::TERM);
            if !container::wait_gone(store, &r.id, Duration::from_secs(args.time)) {
                kill(store, &r)?;
            }
        }
        writeln!(std::io::stdout(), "{name}")?;
        Ok(())
    })
}

pub fn wait(store: &Store, args: &WaitArgs) -> anyhow::Result<()> {
    let containers = Containers::of(store);
    each(&args.containers, |name| {
        let mut r = containers.find(name)?;
        while r.running() {
            std::thread::sleep(POLL);
            match containers.load(&r.id) {
                Ok(now) => r = now,
                // Removed (`--rm`) as it ended: its code went with it.
                Err(_) => bail!("container {name} was removed as it ended"),
            }
        }
        let code = r.current().1.unwrap_or(container::LOST_EXIT);
        writeln!(std::io::stdout(), "{code}")?;
        Ok(())
    })
}

pub fn logs(store: &Store, args: &LogsArgs) -> anyhow::Result<()> {
    let containers = Containers::of(store);
    let r = containers.find(&args.container)?;
    if r.launch.options.tty {
        bail!(
            "container {} ran with a terminal: its output went there, not to a log",
            r.name
        );
    }
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("--tail {n:?}: a number of lines, or all"))?,
        ),
    };
    let path = containers.log_path(&r.id);
    let (mut lines, mut offset) = log::read_from(&path, 0)?;
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    show(&lines, args.timestamps)?;
    if !args.follow {
        return Ok(());
    }
    loop {
        let running = containers.load(&r.id).is_ok_and(|now| now.running());
        let (more, next) = log::read_from(&path, offset)?;
        show(&more, args.timestamps)?;
        offset = next;
        if !running {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn show(lines: &[log::Line], timestamps: bool) -> anyhow::Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        let w: &mut dyn Write = if l.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            write!(w, "{} ", l.time)?;
        }
        w.write_all(l.log.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

pub fn commit(store: &Store, args: &CommitArgs) -> anyhow::Result<()> {
    let r = Containers::of(store).find(&args.container)?;
    let reference = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()?;
    let opts = CommitOptions {
        message: args.message.clone(),
        author: args.author.clone(),
        changes: args.changes.clone(),
        reference,
    };
    let id = container::commit(store, &remover(store)?, &r, &opts)?;
    writeln!(std::io::stdout(), "{id}")?;
    Ok(())
}

/// docker's `container inspect`, the fields cairn has.
pub fn inspect_json(r: &Record) -> Value {
    let (state, code) = r.current();
    let running = state == State::Running;
    json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.command.first(),
        "Args": r.command.get(1..).unwrap_or_default(),
        "State": {
            "Status": state.as_str(),
            "Running": running,
            "Pid": r.pid.filter(|_| running).map_or(0, |p| p.pid),
            "ExitCode": code.unwrap_or(0),
            "StartedAt": r.started,
            "FinishedAt": r.finished,
        },
        "Image": r.image_id,
        "Name": format!("/{}", r.name),
        "Driver": r.snapshotter,
        "Config": {
            "Hostname": r.short_id(),
            "Env": r.launch.options.env,
            "Cmd": r.cmd,
            "Image": r.image,
            "WorkingDir": r.launch.options.workdir.clone().unwrap_or_default(),
            "User": r.launch.options.user.clone().unwrap_or_default(),
            "Tty": r.launch.options.tty,
        },
        "HostConfig": {
            "AutoRemove": r.remove,
            "NetworkMode": match r.launch.options.network {
                Some(cairn_builder::sandbox::Network::Host) => "host",
                Some(cairn_builder::sandbox::Network::None) => "none",
                _ => "default",
            },
        },
    })
}

pub fn inspect(store: &Store, args: &ContainerInspectArgs) -> anyhow::Result<()> {
    let containers = Containers::of(store);
    let all = args
        .containers
        .iter()
        .map(|n| containers.find(n).map(|r| inspect_json(&r)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &all)?;
    writeln!(out)?;
    Ok(())
}
