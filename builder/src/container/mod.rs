//! `cairn run` and its containers: a container from an image in the store, in the same
//! sandbox RUN steps use, with its record and writable layer kept under `containers/<id>/`
//! until removed; stopped, waited for and committed as an image.

mod commit;
pub mod envfile;
pub mod log;
pub mod monitor;
mod record;

use std::path::PathBuf;

use cairn_layers::Store;
use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::error::RunError;
use crate::meta;
use crate::sandbox::{self, Exit, MountSpec, Network, RunSpec, Sandbox, Stdio3};
use crate::users;
pub use commit::{CommitOptions, commit};
pub use record::{Containers, LOST_EXIT, Proc, Record, State, check_name};

/// What `cairn run` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOptions {
    pub image: String,
    /// Replaces the image's CMD (the ENTRYPOINT stays).
    pub command: Vec<String>,
    /// `-e K=V` (or a bare `K`, taken from cairn's environment by the caller).
    pub env: Vec<String>,
    /// `-v HOST:CTR[:ro]`.
    pub volumes: Vec<Volume>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub network: Option<Network>,
    /// `--rm`: remove the writable layer when the container exits.
    pub remove: bool,
    /// `-t`: stdin is a terminal to make the process's controlling terminal.
    pub tty: bool,
    pub name: Option<String>,
    /// The platform to run of a multi-platform image [default: the host's, else the one the
    /// store holds].
    pub platform: Option<cairn_layers::platform::Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub container: String,
    pub readonly: bool,
}

impl Volume {
    /// `HOST:CTR[:ro|rw]`; HOST must be an absolute or relative path that exists.
    pub fn parse(spec: &str) -> std::result::Result<Volume, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, ctr, mode) = match parts.as_slice() {
            [h, c] => (*h, *c, None),
            [h, c, m] => (*h, *c, Some(*m)),
            _ => return Err(format!("-v {spec:?}: expected HOST:CONTAINER[:ro]")),
        };
        let readonly = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(m) => return Err(format!("-v {spec:?}: unknown mode {m:?} (ro or rw)")),
        };
        if !ctr.starts_with('/') {
            return Err(format!("-v {spec:?}: the container path must be absolute"));
        }
        let host = std::fs::canonicalize(host).map_err(|e| format!("-v {spec:?}: {host}: {e}"))?;
        Ok(Volume {
            host,
            container: ctr.to_owned(),
            readonly,
        })
    }
}

/// Everything a container is started from: the options and the sandbox's, as given (the
/// monitor of a detached container makes its sandbox from them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Launch {
    pub options: RunOptions,
    pub snapshotter: String,
    pub isolation: String,
    pub limits: sandbox::Limits,
}

/// The image `opts` names, as the store has it for the platform asked for.
fn image_of(store: &Store, opts: &RunOptions) -> Result<cairn_layers::store::Image> {
    let (_, manifest) = store.resolve(&opts.image).map_err(|e| RunError::NoImage {
        image: opts.image.clone(),
        source: match e {
            // The message says so already.
            cairn_layers::Error::ImageNotFound(_) => None,
            other => Some(Box::new(other)),
        },
    })?;
    Ok(store.image(&store.pick_image(&manifest, opts.platform.as_ref())?)?)
}

/// ENTRYPOINT and the command (the given one, else CMD), and the CMD part alone.
fn argv_of(
    config: &cairn_layers::image::ContainerConfig,
    opts: &RunOptions,
) -> (Vec<String>, Vec<String>) {
    let cmd = if opts.command.is_empty() {
        config.cmd.clone().unwrap_or_default()
    } else {
        opts.command.clone()
    };
    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    argv.extend(cmd.iter().cloned());
    (argv, cmd)
}

/// Makes a container's record (state `created`, owned by this process), its name checked
/// free; nothing runs yet.
pub fn create(store: &Store, launch: Launch, detached: bool) -> Result<Record> {
    let opts = &launch.options;
    let img = image_of(store, opts)?;
    // Another architecture's image runs under binfmt_misc emulation: said up front, naming
    // what to install, rather than as an exec format error from inside the container.
    crate::sandbox::emulation::check(
        &cairn_layers::platform::Platform::of_config(&img.config),
        std::path::Path::new(crate::sandbox::emulation::BINFMT_DIR),
    )?;
    let (command, cmd) = argv_of(&img.config.config, opts);
    if command.is_empty() {
        return Err(RunError::NoCommand {
            image: opts.image.clone(),
        }
        .into());
    }
    let record = Record {
        id: record::new_id()?,
        name: String::new(),
        image: opts.image.clone(),
        image_id: img.id().to_string(),
        command,
        cmd,
        created: jiff::Timestamp::now().to_string(),
        state: State::Created,
        exit_code: None,
        started: None,
        finished: None,
        pid: None,
        owner: Some(Proc::own()),
        detached,
        remove: opts.remove,
        snapshotter: String::new(),
        root: None,
        id_map: None,
        launch: launch.clone(),
    };
    let name = opts.name.clone();
    Containers::of(store).create(record, name.as_deref())
}

/// Runs a created container to its end, recording its start (then `on_started`) and its
/// exit; `--rm`'s container is removed after.
pub fn start(
    store: &Store,
    sb: &Sandbox,
    record: &Record,
    stdio: Stdio3,
    on_started: &dyn Fn(),
) -> Result<Exit> {
    let containers = Containers::of(store);
    let id = record.id.clone();
    let result = start_inner(store, sb, record, stdio, on_started);
    let code = match &result {
        Ok(exit) => exit.status(),
        // docker's code for a container that could not be started.
        Err(_) => 125,
    };
    let dir = containers.dir(&id);
    if record.remove {
        let _lock = containers.lock();
        if dir.exists() {
            let _ = sb.remove(std::slice::from_ref(&dir));
        }
    } else {
        containers.update(&id, |r| {
            r.state = State::Exited;
            r.exit_code = Some(code);
            r.finished = Some(jiff::Timestamp::now().to_string());
            r.pid = None;
        })?;
    }
    result
}

fn start_inner(
    store: &Store,
    sb: &Sandbox,
    record: &Record,
    stdio: Stdio3,
    on_started: &dyn Fn(),
) -> Result<Exit> {
    let containers = Containers::of(store);
    let opts = &record.launch.options;
    let img = image_of(store, opts)?;
    let config = &img.config.config;
    let id = record.id.clone();
    let short = record.short_id().to_owned();
    let dir = containers.dir(&id);

    let layers = &img.manifest.layers;
    let diff_ids = &img.config.rootfs.diff_ids;
    let root = sb.prepare_root(store, layers, diff_ids, &dir)?;
    containers.update(&id, |r| {
        r.root = Some(root.clone());
        r.id_map = Some(
            sb.mapping
                .for_pid1()
                .unwrap_or_else(cairn_layers::IdMap::identity),
        );
        r.snapshotter = format!("{:?}", sb.snapshotter()).to_lowercase();
        r.owner = Some(Proc::own());
    })?;
    let read_file = |rel: &str| root.read_image_file(rel);
    let user_spec = opts.user.clone().unwrap_or_else(|| config.user.clone());
    let user = users::resolve_exec(&user_spec, &read_file).map_err(|source| RunError::User {
        spec: user_spec.clone(),
        source,
    })?;
    let mut env = config.env.clone();
    for e in &opts.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        let value = e.split_once('=').map_or("", |(_, v)| v);
        meta::set_env(&mut env, key, value);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", sandbox::DEFAULT_PATH));
    }
    env.extend(users::home_for(&env, user.home.as_deref()));
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    // A namespace of the container's own, as docker's bridge, unless asked for the host's.
    let network = opts.network.unwrap_or(Network::Private);
    let etc_files = sandbox::etc_files(&dir, &short, network, &[])?;
    let mounts = opts
        .volumes
        .iter()
        .map(|v| MountSpec::Bind {
            source: v.host.clone(),
            inside: None,
            target: meta::clean_abs(&v.container),
            readonly: v.readonly,
            scratch: None,
            create: None,
            owner: None,
        })
        .collect();
    let cwd = opts
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| config.working_dir.clone());
    let mut cleanup = Vec::new();
    if opts.remove {
        cleanup.push(dir.clone());
    } else if let Some(work) = root.scratch() {
        cleanup.push(work);
    }
    let spec = RunSpec {
        root,
        argv: record.command.clone(),
        env,
        cwd: if cwd.is_empty() { "/".into() } else { cwd },
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname: short.clone(),
        network,
        etc_files,
        mounts,
        ulimits: Vec::new(),
        shm_size: None,
        diff: false,
        clamp_mtime: None,
        tty: opts.tty,
        console: false,
        cgroup_procs: Vec::new(),
        userns: sb.mapping.for_pid1(),
        keep_upper: None,
        cleanup,
        cleanup_on_failure_only: false,
        suppress_sync: false,
        isolation: sb.isolation.mode,
    };
    let started = |pid: u32| {
        let _ = containers.update(&id, |r| {
            r.state = State::Running;
            r.pid = Some(Proc::of(pid));
            r.started = Some(jiff::Timestamp::now().to_string());
        });
        on_started();
    };
    sb.run_container(spec, stdio, &started)
}

/// Sends `signal` to a running container's process; false when it is not running.
pub fn signal(record: &Record, signal: rustix::process::Signal) -> bool {
    if !record.running() {
        return false;
    }
    // Not started yet: its owner stops it (and cleans up) on SIGTERM.
    let target = record.pid.filter(|p| p.alive()).or(record.owner);
    match target
        .and_then(|p| i32::try_from(p.pid).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        Some(pid) => rustix::process::kill_process(pid, signal).is_ok(),
        None => false,
    }
}

/// Waits until the container's owner is gone (it records the exit, then cleans up), up to
/// `timeout`; whether it is.
pub fn wait_gone(store: &Store, id: &str, timeout: std::time::Duration) -> bool {
    let containers = Containers::of(store);
    let deadline = std::time::Instant::now() + timeout;
    // The owner as first seen: a `--rm` container's record goes before its owner does.
    let mut owner = None;
    loop {
        if let Ok(r) = containers.load(id) {
            owner = r.owner;
        }
        if !owner.is_some_and(|o| o.alive()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes a container that is not running: its record and writable layer.
pub fn remove(store: &Store, sb: &Sandbox, record: &Record) -> Result<()> {
    let containers = Containers::of(store);
    let _lock = containers.lock()?;
    let dir = containers.dir(&record.id);
    if dir.exists() {
        sb.remove(std::slice::from_ref(&dir))?;
    }
    Ok(())
}
