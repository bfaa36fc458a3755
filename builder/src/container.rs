//! `cairn run`: a container from an image in the store, in the same sandbox RUN steps use,
//! with its writable layer kept under `containers/` unless removed.

use std::path::PathBuf;

use cairn_layers::Store;
use serde::{Deserialize, Serialize};

pub use crate::error::RunError;
use crate::error::{Result, io_err};
use crate::meta;
use crate::sandbox::{self, Exit, MountSpec, Network, RunSpec, Sandbox, Stdio3};
use crate::users;

/// What `cairn run` asks for.
#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What `containers/<id>/container.json` records of a kept container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    pub image_id: String,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub snapshotter: String,
}

/// Runs the container to its end and returns how it ended, with its id.
pub fn run(
    store: &Store,
    sb: &Sandbox,
    opts: &RunOptions,
    stdio: Stdio3,
) -> Result<(Exit, String)> {
    let (_, manifest) = store.resolve(&opts.image).map_err(|e| RunError::NoImage {
        image: opts.image.clone(),
        source: match e {
            // The message says so already.
            cairn_layers::Error::ImageNotFound(_) => None,
            other => Some(Box::new(other)),
        },
    })?;
    let img = store.image(&store.pick_image(&manifest, opts.platform.as_ref())?)?;
    // Another architecture's image runs under binfmt_misc emulation: said up front, naming
    // what to install, rather than as an exec format error from inside the container.
    crate::sandbox::emulation::check(
        &cairn_layers::platform::Platform::of_config(&img.config),
        std::path::Path::new(crate::sandbox::emulation::BINFMT_DIR),
    )?;
    let config = &img.config.config;
    let id = {
        use sha2::Digest as _;
        let seed = format!(
            "{}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond(),
            img.id()
        );
        hex::encode(sha2::Sha256::digest(seed.as_bytes()))
    };
    let short = id[..12].to_owned();
    let dir = if opts.remove {
        store
            .tmp_dir()
            .join(format!("run-{}-{short}", std::process::id()))
    } else {
        store.root().join("containers").join(&id)
    };
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;

    let layers = &img.manifest.layers;
    let diff_ids = &img.config.rootfs.diff_ids;
    let root = sb.prepare_root(store, layers, diff_ids, &dir)?;
    let read_file = |rel: &str| root.read_image_file(rel);
    let user_spec = opts.user.clone().unwrap_or_else(|| config.user.clone());
    let user = users::resolve_exec(&user_spec, &read_file).map_err(|source| RunError::User {
        spec: user_spec.clone(),
        source,
    })?;

    let mut argv: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    if opts.command.is_empty() {
        argv.extend(config.cmd.clone().unwrap_or_default());
    } else {
        argv.extend(opts.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(RunError::NoCommand {
            image: opts.image.clone(),
        }
        .into());
    }
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
        argv: argv.clone(),
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
    let result = sb.run::<()>(spec, stdio, &|_| {}, None);
    if !opts.remove {
        let record = Record {
            id: id.clone(),
            name: opts.name.clone(),
            image: opts.image.clone(),
            image_id: img.id().to_string(),
            command: argv,
            exit_code: result.as_ref().ok().map(|(e, _)| e.status()),
            snapshotter: format!("{:?}", sb.snapshotter()).to_lowercase(),
        };
        let path = dir.join("container.json");
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        std::fs::write(&path, json).map_err(io_err("write", &path))?;
    } else if dir.exists() {
        let _ = sb.remove(std::slice::from_ref(&dir));
    }
    let (exit, _) = result?;
    Ok((exit, id))
}
