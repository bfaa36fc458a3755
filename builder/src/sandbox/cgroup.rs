//! A step's resource limits: the cgroup (v2, or one v1 directory per controller) holding it.
//!
//! `--memory`, `--cpu-shares`, `--cpu-quota`, `--cpu-period` and `--pids-limit` become
//! cgroup files; on drop the cgroup's processes are killed and its directories removed.
//!
//! Where the cgroup goes is found by trying, not by asking who we are: cgroup v2 at the root
//! of a cgroup2 mount that has the controllers, then v2 in this process's own cgroup (a
//! delegated subtree, for rootless), then the v1 hierarchies of each controller. The first
//! place that accepts `mkdir` and the controllers wins; if none does, there is no cgroup and
//! the caller warns that limits are not applied. Every cairn cgroup sits under a `cairn`
//! directory of its hierarchy, e.g. `/sys/fs/cgroup/memory/cairn/cairn-1234-5`.
//!
//! References: Documentation/admin-guide/cgroup-v2.rst (controllers, delegation, the "no
//! internal processes" rule, `cgroup.kill`), Documentation/admin-guide/cgroup-v1/memory.rst,
//! and proc(5) for `/proc/self/cgroup` and `/proc/self/mountinfo`.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

pub use crate::error::sandbox::CgroupError;

/// The directory, in each hierarchy, under which cairn's cgroups are created.
const PARENT_DIR: &str = "cairn";

/// Rounds of SIGKILL sent to what is left in a v1 cgroup (or a v2 one without `cgroup.kill`).
const KILL_ROUNDS: u32 = 20;
/// Attempts at `rmdir`, which fails with EBUSY until the last task has exited.
const RMDIR_ROUNDS: u32 = 50;
/// Pause between two rounds of either.
const PAUSE: Duration = Duration::from_millis(10);

/// The CFS period the kernel (and Docker) use when only a quota is given, in microseconds.
const DEFAULT_CPU_PERIOD: u64 = 100_000;

/// Limits asked for with `--memory`, `--cpu-shares`, `--cpu-quota`, `--cpu-period`, `--pids-limit`.
///
/// As with Docker, 0 means "not set" for every field, and so does -1 for `cpu_quota` and
/// `pids` (the kernel's "unlimited"): such values are never written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed on top of it).
    pub memory: Option<u64>,
    /// Relative CPU weight, cgroup v1 scale (2..=262144, default 1024).
    pub cpu_shares: Option<u64>,
    /// CPU time allowed per period, in microseconds.
    pub cpu_quota: Option<i64>,
    /// CFS period, in microseconds.
    pub cpu_period: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<i64>,
}

impl Limits {
    /// Whether no limit would change anything, so no cgroup is needed.
    pub fn is_empty(&self) -> bool {
        self.controllers().is_empty()
    }

    fn memory(&self) -> Option<u64> {
        self.memory.filter(|&m| m > 0)
    }

    fn cpu_shares(&self) -> Option<u64> {
        self.cpu_shares.filter(|&s| s > 0)
    }

    fn cpu_quota(&self) -> Option<i64> {
        self.cpu_quota.filter(|&q| q > 0)
    }

    fn cpu_period(&self) -> Option<u64> {
        self.cpu_period.filter(|&p| p > 0)
    }

    fn pids(&self) -> Option<i64> {
        self.pids.filter(|&p| p > 0)
    }

    /// The controllers these limits need, in a fixed order.
    fn controllers(&self) -> Vec<Controller> {
        let mut out = Vec::new();
        if self.memory().is_some() {
            out.push(Controller::Memory);
        }
        if self.cpu_shares().is_some() || self.cpu_quota().is_some() || self.cpu_period().is_some()
        {
            out.push(Controller::Cpu);
        }
        if self.pids().is_some() {
            out.push(Controller::Pids);
        }
        out
    }
}

/// Docker's size syntax for `--memory`: a whole or decimal number, an optional space, then an
/// optional unit `k`, `m`, `g`, `t` or `p` (powers of 1024), an optional `i` and an optional
/// `b`, case-insensitive: "1048576", "512m", "1.5g", "100kb", "2GiB", "64 MB".
///
/// The arithmetic is exact (no float): "1.5k" is 1536, and fractions of a byte are dropped.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid size {text:?}: expected a number with an optional unit b, k, m, g, t or p \
             (e.g. 512m)"
        )
    };
    let number_len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_len);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let number_ok = !whole.is_empty()
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !number_ok {
        return Err(invalid());
    }
    // Docker's pattern after the number: ` ?([kKmMgGtTpP])?[iI]?[bB]?`.
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let power = match unit.as_bytes().first() {
        Some(b'k') => 1,
        Some(b'm') => 2,
        Some(b'g') => 3,
        Some(b't') => 4,
        Some(b'p') => 5,
        _ => 0,
    };
    let rest = if power > 0 { &unit[1..] } else { unit.as_str() };
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    if !rest.strip_prefix('b').unwrap_or(rest).is_empty() {
        return Err(invalid());
    }
    let multiplier = 1024u128.pow(power);
    let too_big = || format!("invalid size {text:?}: too large");
    let whole: u128 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
    if let Some(fraction) = fraction {
        // Digits past the 20th cannot change the result (multiplier ≤ 2^50 < 10^16).
        let digits = &fraction[..fraction.len().min(20)];
        let scale = 10u128.pow(digits.len() as u32);
        let fraction: u128 = digits.parse().map_err(|_| invalid())?;
        bytes += fraction * multiplier / scale;
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

/// Docker/runc's conversion of v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000):
/// linear, so the v1 default of 1024 becomes 39, not v2's default of 100. (runc and crun
/// moved to a curve through 1024 → 100 in 2025; cairn keeps the long-standing formula.)
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    // The kernel clamps v1 shares to this range (MIN_SHARES, MAX_SHARES in kernel/sched).
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Which cgroup interface a [`Cgroup`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One directory per controller, each in its own hierarchy.
    V1,
    /// One directory in the unified hierarchy.
    V2,
}

/// One cgroup (v2 directory, or one directory per v1 controller) holding a step's processes;
/// removed on drop (after killing anything left in it).
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// The directories created, in creation order (removed in reverse).
    dirs: Vec<PathBuf>,
    /// The directory holding the memory controller's files, if a memory limit was set.
    memory_dir: Option<PathBuf>,
    memory_limit: Option<u64>,
}

impl Cgroup {
    /// Creates a fresh cgroup named `name` (e.g. `cairn-<pid>-<n>`) with `limits` written,
    /// where this process can: cgroup v2 in a subtree it may write, else the cgroup v1
    /// hierarchies of the controllers the limits need.
    ///
    /// Returns `Ok(None)` when `limits` is empty, or when no cgroup with the controllers can
    /// be created here (no permission, controllers not enabled or not mounted); the caller
    /// then warns that limits are not applied. Errors are for a cgroup that could be created
    /// but not set up: a name already taken by a busy cgroup, or a limit the kernel rejects.
    pub fn create(name: &str, limits: &Limits) -> Result<Option<Cgroup>, CgroupError> {
        let controllers = limits.controllers();
        if controllers.is_empty() {
            return Ok(None);
        }
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(CgroupError::InvalidName {
                name: name.to_owned(),
            });
        }
        // Without /proc there is nothing to find: the same as no cgroup at all.
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .map(|text| parse_cgroup_mounts(&text))
            .unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let own = unified_path(&own);

        for base in v2_candidates(&mounts, own) {
            if let Some(parent) = prepare_v2_parent(&base, &controllers) {
                let mut cgroup = Cgroup::empty(Version::V2, limits);
                let dir = parent.join(name);
                if !cgroup.make_dir(&dir)? {
                    continue;
                }
                cgroup.write_v2(limits)?;
                return Ok(Some(cgroup));
            }
        }

        let Some(v1) = v1_mounts(&mounts, &controllers) else {
            return Ok(None);
        };
        let mut cgroup = Cgroup::empty(Version::V1, limits);
        for hierarchy in &v1 {
            let parent = hierarchy.mount_point.join(PARENT_DIR);
            if !make_dir_existing_ok(&parent) || !cgroup.make_dir(&parent.join(name))? {
                // Dropping `cgroup` removes the directories already made.
                return Ok(None);
            }
        }
        for hierarchy in &v1 {
            let dir = hierarchy.mount_point.join(PARENT_DIR).join(name);
            if hierarchy.controllers.contains(&Controller::Memory) {
                cgroup.memory_dir = Some(dir.clone());
            }
            write_v1(&dir, &hierarchy.controllers, limits)?;
        }
        Ok(Some(cgroup))
    }

    /// Moves process `pid` (and so its future children) into the cgroup: the v2
    /// `cgroup.procs`, or that of every v1 controller directory.
    /// The `cgroup.procs` files a process writes "0" to in order to join (one per v1
    /// hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            write_value(&path, &pid.to_string()).map_err(|source| CgroupError::AddProcess {
                pid,
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup because of the memory
    /// limit.
    ///
    /// v2: `memory.events` counts `oom_kill`. v1: `memory.oom_control` has the same counter
    /// since Linux 4.13; before that the best sign is that the limit was hit (`failcnt`) with
    /// usage having reached it, which page-cache pressure alone can also produce.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
        match self.version {
            Version::V2 => read("memory.events")
                .and_then(|text| keyed_value(&text, "oom_kill"))
                .is_some_and(|n| n > 0),
            Version::V1 => {
                if let Some(n) =
                    read("memory.oom_control").and_then(|t| keyed_value(&t, "oom_kill"))
                {
                    return n > 0;
                }
                let number = |file| read(file).and_then(|t| t.trim().parse::<u64>().ok());
                let failed = number("memory.failcnt").is_some_and(|n| n > 0);
                let peak = number("memory.max_usage_in_bytes");
                failed
                    && match (peak, self.memory_limit) {
                        (Some(peak), Some(limit)) => peak >= limit,
                        _ => false,
                    }
            }
        }
    }

    /// Where it lives (for messages): one directory for v2, one per controller for v1.
    pub fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Which cgroup interface it uses.
    pub fn version(&self) -> Version {
        self.version
    }

    fn empty(version: Version, limits: &Limits) -> Cgroup {
        Cgroup {
            version,
            dirs: Vec::new(),
            memory_dir: None,
            memory_limit: limits.memory(),
        }
    }

    /// Creates `dir` and records it for removal. `Ok(false)` when this place is not usable
    /// (no permission, read-only): the caller tries elsewhere. A directory left by an earlier
    /// run with the same name is removed first if it is empty.
    fn make_dir(&mut self, dir: &Path) -> Result<bool, CgroupError> {
        let mut result = fs::create_dir(dir);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
            // rmdir only succeeds on a cgroup without tasks or children, so a live one stays.
            let _ = fs::remove_dir(dir);
            result = fs::create_dir(dir);
        }
        match result {
            Ok(()) => {
                self.dirs.push(dir.to_owned());
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::CreateDir {
                path: dir.to_owned(),
                source: e,
            }),
            Err(_) => Ok(false),
        }
    }

    fn write_v2(&mut self, limits: &Limits) -> Result<(), CgroupError> {
        let Some(dir) = self.dirs.first().cloned() else {
            return Ok(());
        };
        if let Some(memory) = limits.memory() {
            write(&dir.join("memory.max"), &memory.to_string())?;
            // Without this the step could use as much swap again (the v2 default is "max").
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
            self.memory_dir = Some(dir.clone());
        }
        if let Some(shares) = limits.cpu_shares() {
            write(
                &dir.join("cpu.weight"),
                &cpu_shares_to_weight(shares).to_string(),
            )?;
        }
        if limits.cpu_quota().is_some() || limits.cpu_period().is_some() {
            write(&dir.join("cpu.max"), &cpu_max(limits))?;
        }
        if let Some(pids) = limits.pids() {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// Kills whatever is still in the cgroup: `cgroup.kill` where the kernel has it (v2,
    /// Linux 5.14), which also catches processes forking meanwhile; otherwise SIGKILL to each
    /// listed pid, a few rounds, since a process may fork between the read and the kill.
    fn kill_all(&self) {
        if self.version == Version::V2
            && let Some(dir) = self.dirs.first()
        {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                let _ = write_value(&kill, "1");
            }
        }
        for _ in 0..KILL_ROUNDS {
            let mut any = false;
            for dir in &self.dirs {
                let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) else {
                    continue;
                };
                for pid in parse_pids(&text) {
                    any = true;
                    // A pid read here could in principle exit and be reused before the kill;
                    // the window is microseconds and pids are handed out in increasing order.
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            if !any {
                return;
            }
            thread::sleep(PAUSE);
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        for dir in self.dirs.iter().rev() {
            // rmdir gives EBUSY while a killed task has not finished exiting.
            for _ in 0..RMDIR_ROUNDS {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => thread::sleep(PAUSE),
                }
            }
        }
    }
}

/// Removes the cgroups of cairn processes that are gone: `cairn-PID-…` (a step's) and
/// `cairn-probe-PID…` under the `cairn` directory of every place [`Cgroup::create`] may use.
/// A build killed outright leaves its step's cgroup behind, possibly with what the step
/// started still in it; that is killed first. Cgroups of live processes (other builds) stay.
/// Returns how many were removed; one that will not go is left for the next try.
pub fn remove_stale() -> usize {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mounts = parse_cgroup_mounts(&text);
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2 = v2_candidates(&mounts, unified_path(&own))
        .into_iter()
        .map(|base| (Version::V2, base.join(PARENT_DIR)));
    let v1 = mounts
        .iter()
        .filter(|m| m.v1_options.is_some())
        .map(|m| (Version::V1, m.mount_point.join(PARENT_DIR)));
    let mut removed = 0;
    for (version, parent) in v2.chain(v1) {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !stale_name(&name) || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            drop(Cgroup {
                version,
                dirs: vec![dir.clone()],
                memory_dir: None,
                memory_limit: None,
            });
            if !dir.exists() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a cgroup named `name` is cairn's and its creator is gone.
fn stale_name(name: &str) -> bool {
    cairn_layers::owner::parse(name, "cairn-probe")
        .or_else(|| cairn_layers::owner::parse(name, "cairn"))
        .is_some_and(cairn_layers::owner::is_gone)
}

/// A resource controller cairn sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    /// Its name in `cgroup.controllers` and in v1 mount options.
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// One cgroup file system mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// The cgroup, within its hierarchy, that the mount point shows (usually "/").
    root: String,
    /// `None` for cgroup2; the controllers (and `name=` options) of a v1 hierarchy.
    v1_options: Option<Vec<String>>,
}

/// The cgroup and cgroup2 mounts in /proc/self/mountinfo text (proc(5)): fields are
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn parse_cgroup_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut before = before.split(' ');
            let root = unescape_mountinfo(before.nth(3)?);
            let mount_point = PathBuf::from(unescape_mountinfo(before.next()?));
            let mut after = after.split(' ');
            let (fstype, _source, options) = (after.next()?, after.next()?, after.next()?);
            let v1_options = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(options.split(',').map(str::to_owned).collect()),
                _ => return None,
            };
            Some(CgroupMount {
                mount_point,
                root,
                v1_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path from /proc/self/cgroup text: the `0::/path` line.
fn unified_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// Where a v2 cgroup may be tried, best first: the root of each cgroup2 hierarchy (it alone
/// may hold processes and enable controllers at once, but only root may write it), then this
/// process's own cgroup (a subtree delegated to the user, for rootless).
fn v2_candidates(mounts: &[CgroupMount], own: Option<&str>) -> Vec<PathBuf> {
    let v2 = mounts.iter().filter(|m| m.v1_options.is_none());
    let mut out: Vec<PathBuf> = v2
        .clone()
        .filter(|m| m.root == "/")
        .map(|m| m.mount_point.clone())
        .collect();
    if let Some(own) = own {
        let dir = v2.clone().find_map(|m| {
            let rest = if m.root == "/" {
                Some(own)
            } else {
                own.strip_prefix(m.root.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            }?;
            Some(m.mount_point.join(rest.trim_start_matches('/')))
        });
        if let Some(dir) = dir.filter(|dir| !out.contains(dir)) {
            out.push(dir);
        }
    }
    out
}

/// Makes `base/cairn` ready to hold cgroups with `controllers`, if this process may: the
/// controllers available in `base`, enabled for its children and for cairn's. Enabling
/// fails with EBUSY where `base` holds processes and is not a hierarchy root (cgroup-v2.rst,
/// "No Internal Process Constraint"), which rules out a non-delegated own cgroup.
fn prepare_v2_parent(base: &Path, controllers: &[Controller]) -> Option<PathBuf> {
    let available = fs::read_to_string(base.join("cgroup.controllers")).ok()?;
    let has = |c: &Controller| available.split_whitespace().any(|a| a == c.name());
    if !controllers.iter().all(has) {
        return None;
    }
    enable_controllers(base, controllers).ok()?;
    let parent = base.join(PARENT_DIR);
    if !make_dir_existing_ok(&parent) {
        return None;
    }
    enable_controllers(&parent, controllers).ok()?;
    Some(parent)
}

/// Adds the controllers missing from `dir/cgroup.subtree_control`.
fn enable_controllers(dir: &Path, controllers: &[Controller]) -> io::Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&path)?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == c.name()))
        .map(|c| format!("+{}", c.name()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_value(&path, &missing.join(" "))
}

/// A v1 hierarchy and the controllers cairn needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Hierarchy {
    mount_point: PathBuf,
    controllers: Vec<Controller>,
}

/// The v1 hierarchy of each controller needed, one entry per distinct mount (cpu and cpuacct
/// are often mounted together); `None` if one is not mounted.
fn v1_mounts(mounts: &[CgroupMount], controllers: &[Controller]) -> Option<Vec<V1Hierarchy>> {
    let mut out: Vec<V1Hierarchy> = Vec::new();
    for &controller in controllers {
        let mount = mounts.iter().find(|m| {
            m.v1_options
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o == controller.name()))
        })?;
        match out.iter_mut().find(|h| h.mount_point == mount.mount_point) {
            Some(h) => h.controllers.push(controller),
            None => out.push(V1Hierarchy {
                mount_point: mount.mount_point.clone(),
                controllers: vec![controller],
            }),
        }
    }
    Some(out)
}

/// Writes the limits that belong to the v1 controllers `has` into `dir`.
fn write_v1(dir: &Path, has: &[Controller], limits: &Limits) -> Result<(), CgroupError> {
    if has.contains(&Controller::Memory)
        && let Some(memory) = limits.memory()
    {
        let memory = memory.to_string();
        write(&dir.join("memory.limit_in_bytes"), &memory)?;
        // Memory plus swap, so no swap on top; absent without swap accounting, and must not
        // be below memory.limit_in_bytes, hence written second.
        let _ = write_value(&dir.join("memory.memsw.limit_in_bytes"), &memory);
    }
    if has.contains(&Controller::Cpu) {
        if let Some(shares) = limits.cpu_shares() {
            write(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        // The period first: the kernel checks the quota against the period in force.
        if let Some(period) = limits.cpu_period() {
            write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = limits.cpu_quota() {
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
    }
    if has.contains(&Controller::Pids)
        && let Some(pids) = limits.pids()
    {
        write(&dir.join("pids.max"), &pids.to_string())?;
    }
    Ok(())
}

/// The v2 `cpu.max` line: "$QUOTA $PERIOD", the quota "max" when unlimited.
fn cpu_max(limits: &Limits) -> String {
    let period = limits.cpu_period().unwrap_or(DEFAULT_CPU_PERIOD);
    match limits.cpu_quota() {
        Some(quota) => format!("{quota} {period}"),
        None => format!("max {period}"),
    }
}

/// The value of `key` in a flat keyed file such as `memory.events` or `memory.oom_control`
/// ("key value" per line).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim().split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The pids listed in a `cgroup.procs` file, one per line.
fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `mkdir`, where an existing directory is fine. `false` when it cannot be made.
fn make_dir_existing_ok(dir: &Path) -> bool {
    match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir(),
    }
}

/// Writes `value` to a cgroup file in one write(2), as the kernel parses each write whole.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_value(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn sizes() {
        const K: u64 = 1024;
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(1_048_576)),
            ("100b", Some(100)),
            ("100B", Some(100)),
            ("100k", Some(100 * K)),
            ("100K", Some(100 * K)),
            ("100kb", Some(100 * K)),
            ("100KiB", Some(100 * K)),
            ("512m", Some(512 * K * K)),
            ("512M", Some(512 * K * K)),
            ("512 MB", Some(512 * K * K)),
            ("1g", Some(K * K * K)),
            ("1.5g", Some(3 * K * K * K / 2)),
            ("1.5k", Some(1536)),
            ("0.5b", Some(0)),
            ("1.0001k", Some(1024)),
            ("2t", Some(2 * K * K * K * K)),
            ("1p", Some(K * K * K * K * K)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("16384p", None),
            ("", None),
            ("m", None),
            ("-1", None),
            ("1.", None),
            (".5g", None),
            ("1.2.3", None),
            ("1x", None),
            ("1mm", None),
            ("1ib", Some(1)),
            ("1i", Some(1)),
            ("1 ", Some(1)),
            ("1bb", None),
            ("1 kk", None),
            (" 1", None),
            ("1  m", None),
            ("1e3", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_size(text).ok(), want, "parse_size({text:?})");
        }
    }

    #[test]
    fn size_error_names_the_text() {
        let err = parse_size("12q").unwrap_err();
        assert!(err.contains("\"12q\""), "{err}");
    }

    #[test]
    fn shares_to_weight() {
        // Values from runc's ConvertCPUSharesToCgroupV2Value tests, plus the clamped ends.
        let cases: &[(u64, u64)] = &[
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 1),
            (512, 20),
            (1024, 39),
            (2048, 79),
            (262_143, 9_999),
            (262_144, 10_000),
            (1_000_000, 10_000),
        ];
        for &(shares, weight) in cases {
            assert_eq!(cpu_shares_to_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn limits_emptiness_and_controllers() {
        use Controller::*;
        let cases: &[(Limits, &[Controller])] = &[
            (Limits::default(), &[]),
            (
                Limits {
                    memory: Some(0),
                    cpu_shares: Some(0),
                    cpu_quota: Some(-1),
                    cpu_period: Some(0),
                    pids: Some(-1),
                },
                &[],
            ),
            (
                Limits {
                    memory: Some(1 << 20),
                    ..Limits::default()
                },
                &[Memory],
            ),
            (
                Limits {
                    cpu_period: Some(50_000),
                    pids: Some(10),
                    ..Limits::default()
                },
                &[Cpu, Pids],
            ),
            (
                Limits {
                    memory: Some(1),
                    cpu_shares: Some(512),
                    cpu_quota: Some(1000),
                    cpu_period: None,
                    pids: Some(1),
                },
                &[Memory, Cpu, Pids],
            ),
        ];
        for (limits, want) in cases {
            assert_eq!(limits.controllers(), *want, "{limits:?}");
            assert_eq!(limits.is_empty(), want.is_empty(), "{limits:?}");
        }
    }

    #[test]
    fn cpu_max_lines() {
        let cases: &[(Option<i64>, Option<u64>, &str)] = &[
            (None, Some(50_000), "max 50000"),
            (Some(-1), Some(50_000), "max 50000"),
            (Some(25_000), None, "25000 100000"),
            (Some(25_000), Some(50_000), "25000 50000"),
        ];
        for &(cpu_quota, cpu_period, want) in cases {
            let limits = Limits {
                cpu_quota,
                cpu_period,
                ..Limits::default()
            };
            assert_eq!(cpu_max(&limits), want, "{limits:?}");
        }
    }

    #[test]
    fn unified_paths() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0::/\n", Some("/")),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/a.scope\n",
                Some("/user.slice/user-1000.slice/user@1000.service/app.slice/a.scope"),
            ),
            (
                "9:name=systemd:/\n4:memory:/process_api/8eb5\n1:cpu:/\n0::/\n",
                Some("/"),
            ),
            ("4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n", None),
            ("", None),
        ];
        for &(text, want) in cases {
            assert_eq!(unified_path(text), want, "{text:?}");
        }
    }

    #[test]
    fn keyed_values() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        let old_oom_control = "oom_kill_disable 0\nunder_oom 0\n";
        let cases: &[(&str, &str, Option<u64>)] = &[
            (events, "oom_kill", Some(2)),
            (events, "oom", Some(3)),
            (events, "oom_group_kill", Some(0)),
            (events, "missing", None),
            (oom_control, "oom_kill", Some(1)),
            (old_oom_control, "oom_kill", None),
            ("oom_kill x\n", "oom_kill", None),
            ("", "oom_kill", None),
        ];
        for &(text, key, want) in cases {
            assert_eq!(keyed_value(text, key), want, "{key} in {text:?}");
        }
    }

    #[test]
    fn mountinfo() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:38 /user.slice /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw
60 23 8:1 / / rw - ext4 /dev/sda1 rw
";
        let v1 = |options: &[&str]| Some(options.iter().map(|o| (*o).to_owned()).collect());
        let want = vec![
            CgroupMount {
                mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                root: "/".into(),
                v1_options: v1(&["rw", "cpu", "cpuacct"]),
            },
            CgroupMount {
                mount_point: "/sys/fs/cgroup/memory".into(),
                root: "/".into(),
                v1_options: v1(&["rw", "memory"]),
            },
            CgroupMount {
                mount_point: "/sys/fs/cgroup/systemd".into(),
                root: "/".into(),
                v1_options: v1(&["rw", "xattr", "name=systemd"]),
            },
            CgroupMount {
                mount_point: "/sys/fs/cgroup/unified".into(),
                root: "/".into(),
                v1_options: None,
            },
            CgroupMount {
                mount_point: "/mnt/my cgroups".into(),
                root: "/user.slice".into(),
                v1_options: None,
            },
        ];
        assert_eq!(parse_cgroup_mounts(text), want);
    }

    #[test]
    fn mountinfo_escapes() {
        let cases: &[(&str, &str)] = &[
            ("/plain", "/plain"),
            ("/a\\040b", "/a b"),
            ("/tab\\011x", "/tab\tx"),
            ("/back\\134slash", "/back\\slash"),
            ("/not\\08", "/not\\08"),
            ("/end\\", "/end\\"),
        ];
        for &(field, want) in cases {
            assert_eq!(unescape_mountinfo(field), want, "{field:?}");
        }
    }

    fn mount(point: &str, root: &str, v1: Option<&[&str]>) -> CgroupMount {
        CgroupMount {
            mount_point: point.into(),
            root: root.into(),
            v1_options: v1.map(|o| o.iter().map(|o| (*o).to_owned()).collect()),
        }
    }

    #[test]
    fn v2_candidate_order() {
        let unified = [mount("/sys/fs/cgroup", "/", None)];
        let hybrid = [
            mount("/sys/fs/cgroup/memory", "/", Some(&["rw", "memory"])),
            mount("/sys/fs/cgroup/unified", "/", None),
        ];
        let bind = [mount("/mnt/u", "/user.slice", None)];
        let cases: &[(&[CgroupMount], Option<&str>, &[&str])] = &[
            (&unified, Some("/"), &["/sys/fs/cgroup"]),
            (
                &unified,
                Some("/user.slice/u@1000.service/app.slice/a.scope"),
                &[
                    "/sys/fs/cgroup",
                    "/sys/fs/cgroup/user.slice/u@1000.service/app.slice/a.scope",
                ],
            ),
            (&hybrid, Some("/"), &["/sys/fs/cgroup/unified"]),
            (&hybrid, None, &["/sys/fs/cgroup/unified"]),
            (&bind, Some("/user.slice/a.scope"), &["/mnt/u/a.scope"]),
            (&bind, Some("/user.slicex/a.scope"), &[]),
            (&bind, Some("/system.slice"), &[]),
            (&[], Some("/"), &[]),
        ];
        for &(mounts, own, want) in cases {
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(v2_candidates(mounts, own), want, "{own:?} in {mounts:?}");
        }
    }

    #[test]
    fn v1_mount_choice() {
        use Controller::*;
        let mounts = [
            mount("/sys/fs/cgroup/cpuset", "/", Some(&["rw", "cpuset"])),
            mount("/sys/fs/cgroup/cpuacct", "/", Some(&["rw", "cpuacct"])),
            mount("/c", "/", Some(&["rw", "cpu", "cpuacct"])),
            mount("/m", "/", Some(&["rw", "memory", "pids"])),
            mount("/u", "/", None),
        ];
        let h = |mount_point: &str, controllers: &[Controller]| V1Hierarchy {
            mount_point: mount_point.into(),
            controllers: controllers.to_vec(),
        };
        let cases: &[(&[Controller], Vec<V1Hierarchy>)] = &[
            (&[Memory], vec![h("/m", &[Memory])]),
            (&[Cpu], vec![h("/c", &[Cpu])]),
            (
                &[Memory, Cpu, Pids],
                vec![h("/m", &[Memory, Pids]), h("/c", &[Cpu])],
            ),
        ];
        for (controllers, want) in cases {
            assert_eq!(
                v1_mounts(&mounts, controllers).as_ref(),
                Some(want),
                "{controllers:?}"
            );
        }
        assert_eq!(v1_mounts(&mounts[..3], &[Memory]), None);
    }

    #[test]
    fn invalid_names() {
        let limits = Limits {
            pids: Some(1),
            ..Limits::default()
        };
        for name in ["", ".", "..", "a/b", "a\0b"] {
            let result = Cgroup::create(name, &limits);
            assert!(
                matches!(result, Err(CgroupError::InvalidName { .. })),
                "{name:?}: {result:?}"
            );
        }
    }

    /// A pid that has exited (or, rarely, been handed out again since).
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn stale_names() {
        let dead = dead_pid();
        let reused = cairn_layers::owner::start_time(dead).is_some();
        let me = std::process::id();
        let cases = [
            (format!("cairn-{}-3", cairn_layers::owner::token()), false),
            (
                format!("cairn-probe-{}", cairn_layers::owner::token()),
                false,
            ),
            (format!("cairn-{me}-3"), false),
            (format!("cairn-{me}-s1-3"), true),
            (format!("cairn-{dead}-s1-0"), !reused),
            (format!("cairn-probe-{dead}"), !reused),
            (format!("cairn-test-{dead}-0"), false),
            ("cairn".to_owned(), false),
            ("other-1-s1-0".to_owned(), false),
        ];
        for (name, stale) in cases {
            assert_eq!(stale_name(&name), stale, "{name}");
        }
    }

    /// As root, a cgroup left by a process that is gone, with a process still in it, is
    /// emptied and removed; one of this live process stays.
    #[test]
    fn stale_cgroups_are_removed() {
        if !is_root() {
            return;
        }
        let limits = Limits {
            pids: Some(32),
            ..Limits::default()
        };
        let dead = dead_pid();
        if cairn_layers::owner::start_time(dead).is_some() {
            return;
        }
        let stale_name = format!("cairn-{dead}-s1-0");
        let Some(stale) = Cgroup::create(&stale_name, &limits).unwrap() else {
            return;
        };
        let live_name = format!("cairn-{}-999", cairn_layers::owner::token());
        let live = Cgroup::create(&live_name, &limits).unwrap().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        stale.add(child.id()).unwrap();
        let stale_paths = stale.paths().to_vec();
        // As a SIGKILLed cairn leaves it: never dropped.
        std::mem::forget(stale);

        assert!(remove_stale() >= 1);
        for path in &stale_paths {
            assert!(!path.exists(), "{} still exists", path.display());
        }
        assert!(
            !child.wait().unwrap().success(),
            "the step's process was killed"
        );
        for path in live.paths() {
            assert!(path.exists(), "{} was removed", path.display());
        }
    }

    #[test]
    fn empty_limits_need_no_cgroup() {
        let result = Cgroup::create("cairn-empty", &Limits::default());
        assert!(matches!(result, Ok(None)), "{result:?}");
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn unique_name() -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("cairn-test-{}-{n}", std::process::id())
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// As root, where a memory hierarchy can be written: limits read back, the process is
    /// inside, and drop kills it and removes every directory.
    #[test]
    fn limits_process_and_cleanup() {
        if !is_root() {
            return;
        }
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(32),
            ..Limits::default()
        };
        let Some(cgroup) = Cgroup::create(&unique_name(), &limits).unwrap() else {
            return;
        };
        let paths = cgroup.paths().to_vec();
        assert_eq!(
            paths.len(),
            if cgroup.version() == Version::V2 {
                1
            } else {
                2
            }
        );
        for path in &paths {
            assert_eq!(
                path.parent().and_then(Path::file_name),
                Some(PARENT_DIR.as_ref())
            );
        }

        let mut child = Command::new("sh").args(["-c", "sleep 5"]).spawn().unwrap();
        cgroup.add(child.id()).unwrap();
        for path in &paths {
            let procs = read(&path.join("cgroup.procs"));
            let pid = i32::try_from(child.id()).unwrap();
            assert!(
                parse_pids(&procs).contains(&pid),
                "{}: {procs:?}",
                path.display()
            );
        }
        let (memory_file, pids_dir) = match cgroup.version() {
            Version::V2 => (paths[0].join("memory.max"), &paths[0]),
            Version::V1 => (paths[0].join("memory.limit_in_bytes"), &paths[1]),
        };
        assert_eq!(read(&memory_file).trim(), (64u64 << 20).to_string());
        assert_eq!(read(&pids_dir.join("pids.max")).trim(), "32");
        assert!(!cgroup.oom_killed());

        drop(cgroup);
        for path in &paths {
            assert!(!path.exists(), "{} still exists", path.display());
        }
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// As root: a process that outgrows a 32 MiB limit is killed by the OOM killer, and the
    /// cgroup says so (it leaves an OOM report in the kernel log). The limit also caps swap
    /// where the kernel accounts it (memsw), so the process cannot escape into swap.
    #[test]
    fn oom_kill_is_detected() {
        if !is_root() {
            return;
        }
        let limits = Limits {
            memory: Some(32 << 20),
            ..Limits::default()
        };
        let Some(cgroup) = Cgroup::create(&unique_name(), &limits).unwrap() else {
            return;
        };
        // The shell waits for a line on stdin so it is inside the cgroup before allocating;
        // the command substitution keeps all 200 MB in the shell's own memory.
        let script =
            "read go; x=$(head -c 200000000 /dev/zero | tr '\\0' a); test ${#x} = 200000000";
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        cgroup.add(child.id()).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let status = child.wait().unwrap();
        // The killer may pick the shell or a child of it: either way the script does not finish.
        assert!(!status.success(), "{status:?}");
        assert!(cgroup.oom_killed());
    }
}
