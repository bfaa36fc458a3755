//! `cairn info`: what this cairn is and what it can do here — version, store, the isolation
//! rungs and why each missing one is missing, snapshotter, cgroups, id ranges, emulators and
//! the config files it reads — as text or JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_builder::sandbox::{
    Isolation, IsolationMode, Limits, MappingKind, Probe, Sandbox, Snapshotter, cgroup, emulation,
};
use cairn_layers::Store;
use serde::Serialize;

use crate::args::{InfoArgs, ListFormat};

#[derive(Debug, Serialize)]
struct Info {
    version: &'static str,
    commit: &'static str,
    store: StoreInfo,
    isolation: IsolationInfo,
    snapshotter: Option<String>,
    /// Said when the sandbox was set up (a single-id mapping, the copy fallback).
    warnings: Vec<String>,
    cgroups: String,
    ids: IdsInfo,
    emulators: Vec<emulation::Emulator>,
    config_files: Vec<ConfigFile>,
}

#[derive(Debug, Serialize)]
struct StoreInfo {
    path: PathBuf,
    blobs: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct IsolationInfo {
    /// What `--isolation auto` picks, or null when no rung works.
    auto: Option<&'static str>,
    modes: Vec<Rung>,
}

#[derive(Debug, Serialize)]
struct Rung {
    mode: &'static str,
    available: bool,
    /// The call that failed and what to change, for one that is not available.
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct IdsInfo {
    mapping: &'static str,
    /// `container:host:size` ranges of the build's user namespace.
    uids: Vec<String>,
    gids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ConfigFile {
    what: &'static str,
    path: PathBuf,
    exists: bool,
}

pub fn info(store: &Store, args: &InfoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the cairn binary")?;
    let probe = Probe::run(&store.temp_path("probe"));
    let modes = IsolationMode::ALL
        .iter()
        .map(|&m| {
            let r = probe.get(m);
            Rung {
                mode: m.name(),
                available: r.is_ok(),
                reason: r.as_ref().err().map(ToString::to_string),
            }
        })
        .collect();
    let auto = probe.choose(Isolation::Auto).ok().map(|c| c.mode.name());
    let sandbox = Sandbox::new(
        exe,
        store,
        Snapshotter::Auto,
        Limits::default(),
        Isolation::Auto,
    );
    let (snapshotter, warnings, ids) = match &sandbox {
        Ok(sb) => (
            Some(format!("{:?}", sb.snapshotter()).to_lowercase()),
            sb.warnings.clone(),
            ids(&sb.mapping),
        ),
        Err(e) => (
            None,
            vec![format!("{e}")],
            IdsInfo {
                mapping: "none",
                uids: Vec::new(),
                gids: Vec::new(),
            },
        ),
    };
    let (blobs, bytes) = blob_totals(&store.root().join("blobs"));
    let info = Info {
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("CAIRN_COMMIT").unwrap_or("unknown"),
        store: StoreInfo {
            path: store.root().to_path_buf(),
            blobs,
            bytes,
        },
        isolation: IsolationInfo { auto, modes },
        snapshotter,
        warnings,
        cgroups: cgroups(),
        ids,
        emulators: emulation::registered(Path::new(emulation::BINFMT_DIR)),
        config_files: config_files(),
    };
    match args.format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        ListFormat::Table => print!("{}", text(&info)),
    }
    Ok(())
}

fn ids(m: &cairn_builder::sandbox::Mapping) -> IdsInfo {
    let ranges = |r: &[cairn_layers::IdRange]| {
        r.iter()
            .map(|r| format!("{}:{}:{}", r.container, r.host, r.size))
            .collect()
    };
    IdsInfo {
        mapping: match m.kind {
            MappingKind::Root => "root's range",
            MappingKind::RootNested => "root's range, from a user namespace of its own",
            MappingKind::Subordinate => "this user's /etc/subuid and /etc/subgid ranges",
            MappingKind::Single => "a single id (no /etc/subuid range)",
            MappingKind::Identity => "none (host ids)",
        },
        uids: ranges(&m.ids.uids),
        gids: ranges(&m.ids.gids),
    }
}

/// Blobs in the store (`blobs/ALGORITHM/HEX`) and their bytes.
fn blob_totals(dir: &Path) -> (u64, u64) {
    let files = |d: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(d)
            .map(|r| r.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    files(dir)
        .iter()
        .flat_map(|alg| files(&alg.path()))
        .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// Whether RUN's resource limits can be applied: a cgroup made and removed again.
fn cgroups() -> String {
    let limits = Limits {
        pids: Some(1 << 20),
        ..Limits::default()
    };
    let name = format!("cairn-info-{}", cairn_layers::owner::token());
    match cgroup::Cgroup::create(&name, &limits) {
        Ok(Some(c)) => format!("delegated ({:?})", c.version()).to_lowercase(),
        Ok(None) => "not writable: --memory, --cpu-* and --pids-limit are not applied \
                     (run as root, or delegate a cgroup v2 subtree to this user)"
            .into(),
        Err(e) => format!("not usable: {e}"),
    }
}

fn config_files() -> Vec<ConfigFile> {
    let mut out = Vec::new();
    if let Some(p) = cairn_layers::registry::RegistryConfig::default_path() {
        out.push(ConfigFile {
            what: "registries",
            exists: p.exists(),
            path: p,
        });
    }
    for p in cairn_layers::registry::auth::auth_files(None) {
        out.push(ConfigFile {
            what: "credentials",
            exists: p.exists(),
            path: p,
        });
    }
    out
}

fn text(i: &Info) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "version: {} ({})", i.version, i.commit);
    let _ = writeln!(
        s,
        "store: {} ({} blobs, {} bytes)",
        i.store.path.display(),
        i.store.blobs,
        i.store.bytes
    );
    let _ = writeln!(
        s,
        "isolation: {} (auto)",
        i.isolation.auto.unwrap_or("none: RUN cannot run here")
    );
    for r in &i.isolation.modes {
        match &r.reason {
            None => {
                let _ = writeln!(s, "  {}: available", r.mode);
            }
            Some(why) => {
                let _ = writeln!(s, "  {}: not available: {why}", r.mode);
            }
        }
    }
    let _ = writeln!(
        s,
        "snapshotter: {}",
        i.snapshotter.as_deref().unwrap_or("none")
    );
    let _ = writeln!(s, "cgroups: {}", i.cgroups);
    let _ = writeln!(s, "ids: {}", i.ids.mapping);
    if !i.ids.uids.is_empty() {
        let _ = writeln!(s, "  uids: {}", i.ids.uids.join(" "));
        let _ = writeln!(s, "  gids: {}", i.ids.gids.join(" "));
    }
    if i.emulators.is_empty() {
        let _ = writeln!(s, "emulators: none registered (binfmt_misc)");
    } else {
        let _ = writeln!(s, "emulators:");
        for e in &i.emulators {
            let state = if e.enabled { "enabled" } else { "disabled" };
            let _ = writeln!(
                s,
                "  {}: {state}, {} (flags {})",
                e.name, e.interpreter, e.flags
            );
        }
    }
    let _ = writeln!(s, "config files:");
    for c in &i.config_files {
        let state = if c.exists { "" } else { " (absent)" };
        let _ = writeln!(s, "  {}: {}{state}", c.what, c.path.display());
    }
    for w in &i.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
