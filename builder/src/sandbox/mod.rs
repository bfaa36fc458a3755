//! RUN's sandbox, cairn's side: the build's id mapping and snapshotter, chosen once; the
//! helper process (cairn re-executed, see [`helper`]) spawned per operation; unpacking layers
//! with their owners, running a step and turning its changes into a layer.
//!
//! Where each concern lives, cairn's side first:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Sandbox`]: made once per build; unpack, remove, prepare a root, run a step |
//! | `ids.rs` | the id mapping and the `uid_map`/`gid_map` writes |
//! | `isolation.rs` | the ladder (userns, rootful, chroot): the probe, the choice, its line |
//! | `snapshot/` | overlay and copy: the root over the layers, the diff after the step |
//! | `spawn.rs` | starting a helper, its descriptors, answers and the layer pipe's verdict |
//! | `stdio.rs` | a step's streams, the container terminal, bounded output lines |
//! | `etc.rs` | the step's /etc/hosts and /etc/resolv.conf |
//! | `cgroup.rs` | resource limits |
//! | `net.rs` | the step's user-mode network (pasta, slirp4netns) |
//! | `proto.rs` | the messages between cairn and the helper |
//! | `error.rs` | the errors of both sides |
//! | `helper/` | the helper: its request loop, a step's Run, pid 1 until exec, the chroot rung |
//! | `confine.rs` | paths resolved inside the container's root, mount points, masks |
//! | `idmapped.rs` | root's idmapped mounts of host-owned trees |
//! | `sys.rs` | the system calls the helper makes, with their errors |
//! | `seccomp.rs` | a build step's filter: sync calls succeed without flushing |

pub mod cgroup;
mod confine;
pub mod emulation;
mod etc;
pub mod helper;
mod idmapped;
pub mod ids;
mod isolation;
pub mod net;
pub mod proto;
mod seccomp;
mod snapshot;
mod spawn;
mod stdio;
mod sys;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_layers::image::Descriptor;
use cairn_layers::store::RemoveFn;
use cairn_layers::{Digest, IdMap, Store};

/// The sandbox's errors live below it, with the builder's other module errors.
pub use crate::error::sandbox as error;
use crate::error::{Error, Result, io_err};
pub use cgroup::Limits;
pub use error::{Error as SandboxError, HelperError};
pub use etc::{etc_files, hosts_file};
pub use ids::{Mapping, MappingKind};
pub use isolation::{Chosen, Isolation, Mode as IsolationMode, Probe, Refusal};
pub use proto::LayerBlob;
pub use proto::{MountSpec, Network, RootSpec, RunSpec, Ulimit};
use proto::{Reply, Request};
pub use snapshot::IMAGE_FILE_LIMIT;
use snapshot::Snapshot;
use spawn::{Checked, terminate};
use stdio::read_lines;
pub use stdio::{MAX_LINE, Stdio3, Tail, receive_console};

/// Docker's PATH for a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a step's filesystem is made and diffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// overlay when it mounts here, else copy.
    Auto,
    /// The kernel's overlayfs over the unpacked layers; the upper directory is the diff.
    Overlay,
    /// A full copy of the parent filesystem, compared with it after the step.
    Copy,
}

impl std::str::FromStr for Snapshotter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Snapshotter::Auto),
            "overlay" | "overlayfs" => Ok(Snapshotter::Overlay),
            "copy" | "native" => Ok(Snapshotter::Copy),
            _ => Err(format!(
                "unknown snapshotter {s:?} (expected overlay, copy or auto)"
            )),
        }
    }
}

static CANCELLED: AtomicBool = AtomicBool::new(false);
static REMOVALS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Removes a tree cairn can remove itself (a root build's run directory) on a thread of its
/// own: a copied root of thousands of files takes seconds to unlink, which the next step
/// need not wait for. [`wait_removals`] waits for them all.
pub fn remove_in_background(path: PathBuf) {
    let h = std::thread::spawn(move || {
        let _ = std::fs::remove_dir_all(&path);
    });
    if let Ok(mut v) = REMOVALS.lock() {
        v.push(h);
    }
}

/// Waits for every [`remove_in_background`]: a build leaves no run directory behind.
pub fn wait_removals() {
    let handles = REMOVALS
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    for h in handles {
        let _ = h.join();
    }
}
static HELPERS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Stops every running step (SIGINT/SIGTERM to cairn): each helper kills its container's
/// whole pid namespace, removes its directories and exits; builds then fail as cancelled.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
    if let Ok(pids) = HELPERS.lock() {
        for &pid in pids.iter() {
            terminate(pid);
        }
    }
}

/// Whether [`cancel`] was called.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// What every sandbox of one build shares.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: PathBuf,
    pub mapping: Mapping,
    /// Overlay or copy, resolved from the option when the sandbox is made.
    snapshot: &'static dyn Snapshot,
    pub limits: Limits,
    /// The rung of the isolation ladder this build's steps get.
    pub isolation: Chosen,
    /// Said once, for the CLI to show (single-id mapping, limits not applied, copy fallback).
    pub warnings: Vec<String>,
    limits_usable: bool,
}

/// Reads a step's diff tar into whatever it makes of it (a stored layer).
pub type LayerSink<'a, T> = &'a mut dyn FnMut(&mut dyn Read) -> Result<T>;

/// The end of a step's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The memory limit's OOM killer ended it.
    pub oom_killed: bool,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The exit code a shell would report (128 + signal for a killed process).
    pub fn status(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

impl Sandbox {
    /// Chooses the build's isolation, mapping and snapshotter. `helper` is the cairn binary.
    pub fn new(
        helper: PathBuf,
        store: &Store,
        snapshotter: Snapshotter,
        limits: Limits,
        isolation: Isolation,
    ) -> Result<Sandbox> {
        let chosen = Probe::run(&store.temp_path("probe"))
            .choose(isolation)
            .map_err(SandboxError::Isolation)?;
        let (mapping, warning) = match chosen.mode {
            IsolationMode::Userns => Mapping::detect(store.root())?,
            IsolationMode::Rootful | IsolationMode::Chroot => (Mapping::identity(), None),
        };
        let mut sb = Sandbox {
            helper,
            mapping,
            snapshot: snapshot::unused(),
            limits,
            isolation: chosen,
            warnings: warning.into_iter().collect(),
            limits_usable: false,
        };
        if !sb.limits.is_empty() {
            match cgroup::Cgroup::create(
                &format!("cairn-probe-{}", cairn_layers::owner::token()),
                &sb.limits,
            ) {
                Ok(Some(_)) => sb.limits_usable = true,
                Ok(None) => sb.warnings.push(
                    "resource limits are not applied: cairn cannot write a cgroup here (run as \
                     root, or delegate a cgroup v2 subtree to this user)"
                        .into(),
                ),
                Err(e) => sb
                    .warnings
                    .push(format!("resource limits are not applied: {e}")),
            }
        }
        let (chosen, warning) = snapshot::choose(&sb, store, snapshotter)?;
        sb.snapshot = chosen;
        sb.warnings.extend(warning);
        Ok(sb)
    }

    /// The network a step asking for `requested` gets: under `chroot` there is no network
    /// namespace, so a step shares cairn's network and one that must have none cannot run.
    pub fn network_for(&self, requested: Network) -> std::result::Result<Network, String> {
        match (self.isolation.mode, requested) {
            (IsolationMode::Chroot, Network::None) => Err(
                "--network=none needs a network namespace, which isolation chroot cannot make \
                 (see `cairn info` for what would allow userns or rootful isolation)"
                    .into(),
            ),
            (IsolationMode::Chroot, _) => Ok(Network::Host),
            (_, n) => Ok(n),
        }
    }

    /// The snapshotter this sandbox uses: overlay or copy (`auto` resolved).
    pub fn snapshotter(&self) -> Snapshotter {
        self.snapshot.kind()
    }

    /// Just enough of a sandbox to delete trees with mapped owners (`cairn prune`).
    pub fn for_removal(helper: PathBuf, store: &Store) -> Result<Sandbox> {
        Ok(Sandbox {
            helper,
            mapping: Mapping::detect(store.root())?.0,
            snapshot: snapshot::unused(),
            limits: Limits::default(),
            isolation: Chosen {
                mode: IsolationMode::Userns,
                passed_over: Vec::new(),
            },
            warnings: Vec::new(),
            limits_usable: false,
        })
    }

    /// A remover for the store: trees with mapped owners are deleted inside the namespace.
    pub fn remover(&self) -> Arc<RemoveFn> {
        let sb = self.clone();
        Arc::new(move |path: &Path| {
            sb.remove(&[path.to_path_buf()])
                .map_err(|e| std::io::Error::other(error::report(&e)))
        })
    }

    /// Deletes paths from inside the user namespace.
    pub fn remove(&self, paths: &[PathBuf]) -> Result<()> {
        if self.mapping.kind.cairn_is_root() {
            for p in paths {
                let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
            }
            return Ok(());
        }
        let mut h = self.spawn(
            &Request::Remove {
                paths: paths.to_vec(),
            },
            Stdio3::Inherit,
            None,
            None,
        )?;
        h.finish()
    }

    /// A container's root filesystem over an image's layers, its working directories made
    /// under `dir`: overlay lowers from the store (an empty one for an image without layers),
    /// or the copy snapshotter's two trees.
    pub fn prepare_root(
        &self,
        store: &Store,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        dir: &Path,
    ) -> Result<RootSpec> {
        self.snapshot.prepare(self, store, layers, diff_ids, dir)
    }

    /// Gives `dir` (made by cairn) to the container's root where that is not who cairn is:
    /// root's builds, whose mapped root could not write a directory host root owns.
    fn own_as_container_root(&self, dir: &Path) -> Result<()> {
        if !matches!(
            self.mapping.kind,
            MappingKind::Root | MappingKind::RootNested
        ) {
            return Ok(());
        }
        let (uid, gid) = (
            self.mapping.ids.uid_to_host(0),
            self.mapping.ids.gid_to_host(0),
        );
        std::os::unix::fs::lchown(dir, uid, gid).map_err(io_err("chown", dir))
    }

    /// Applies layers onto `dir` with their owners (the copy snapshotter's trees); returns
    /// their diff_ids.
    pub fn unpack(
        &self,
        store: &Store,
        layers: &[Descriptor],
        dir: &Path,
        overlay: bool,
    ) -> Result<Vec<Digest>> {
        for l in layers {
            store.wait_blob(&l.digest)?;
        }
        let blobs: Vec<LayerBlob> = layers
            .iter()
            .map(|l| LayerBlob {
                path: store.blob_path(&l.digest),
                media_type: l.media_type.clone(),
            })
            .collect();
        let ids = if self.mapping.kind.cairn_is_root() {
            // Root chowns to the mapped host ids itself, with the helper's own unpacking.
            // A chroot's tree cannot be mounted nodev: an image's device nodes stay out of it.
            let skip_devices = self.isolation.mode == IsolationMode::Chroot;
            let ids = helper::unpack(&blobs, dir, overlay, &self.mapping.ids, skip_devices)
                .map_err(|e| Error::Sandbox(self.mapping.explain(e.report())))?;
            self.own_as_container_root(dir)?;
            ids
        } else {
            self.unpack_in_namespace(blobs, dir, overlay)?
        };
        ids.iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| SandboxError::BadDigest(Box::new(e.into())).into())
            })
            .collect()
    }

    /// [`Sandbox::unpack`] by a helper inside the user namespace (a user's builds).
    fn unpack_in_namespace(
        &self,
        blobs: Vec<LayerBlob>,
        dir: &Path,
        overlay: bool,
    ) -> Result<Vec<String>> {
        let req = Request::Unpack {
            layers: blobs,
            target: dir.to_path_buf(),
            overlay,
            ids: self.mapping.ids.inside(),
        };
        let mut h = self.spawn(&req, Stdio3::Inherit, None, None)?;
        let ids = match h.recv()? {
            Reply::Unpacked { diff_ids } => diff_ids,
            Reply::Failed { message } => {
                return Err(Error::Sandbox(self.mapping.explain(message)));
            }
            other => return Err(SandboxError::Unexpected(format!("{other:?}")).into()),
        };
        h.finish()?;
        Ok(ids)
    }

    /// A cache mount's directory as a layer tar for `sink` (`--cache-to ...,mounts=true`),
    /// read by a helper that sees its owners: a user's caches hold mapped ids. The owners on
    /// disk are container ids in every mode (root's steps see caches through an idmapped
    /// mount), so the tar keeps them as they are. `empty` is an empty directory to compare
    /// with: every entry is new, and the directory itself is not one.
    pub fn tar_cache_dir<T>(&self, dir: &Path, empty: &Path, sink: LayerSink<'_, T>) -> Result<T> {
        let root = RootSpec::Copy {
            lower: empty.to_path_buf(),
            root: dir.to_path_buf(),
        };
        self.diff_root(&root, IdMap::identity(), sink)
    }

    /// Unpacks checked blobs (a cache mount's, then its directory's own entry) onto `dir` with
    /// their owners as container ids, as [`Sandbox::tar_cache_dir`] reads them. Device nodes
    /// are left out: a cache holds files, and its directory is mounted into steps as it is.
    pub fn unpack_cache(&self, blobs: Vec<LayerBlob>, dir: &Path) -> Result<()> {
        if self.mapping.kind.cairn_is_root() {
            helper::unpack(&blobs, dir, false, &IdMap::identity(), true)
                .map_err(|e| Error::Sandbox(self.mapping.explain(e.report())))?;
            return Ok(());
        }
        // Inside the namespace a device node cannot be made at all.
        self.unpack_in_namespace(blobs, dir, false).map(drop)
    }

    /// Runs a container. `on_line` gets each line of output (with `Stdio3::Capture`);
    /// `layer` reads the step's diff tar when `spec.diff` is set and the process succeeded.
    pub fn run<T>(
        &self,
        spec: RunSpec,
        stdio: Stdio3,
        on_line: &(dyn Fn(&str) + Sync),
        layer: Option<LayerSink<'_, T>>,
    ) -> Result<(Exit, Option<T>)> {
        self.run_watched(spec, stdio, on_line, layer, &|_| {})
    }

    /// A container of `cairn run`: `on_started` gets its process's host pid once it runs.
    pub fn run_container(
        &self,
        spec: RunSpec,
        stdio: Stdio3,
        on_started: &dyn Fn(u32),
    ) -> Result<Exit> {
        self.run_watched::<()>(spec, stdio, &|_| {}, None, on_started)
            .map(|(exit, _)| exit)
    }

    /// The changes of a kept container's root, as a layer tar read by `sink`, its owners
    /// through `id_map`.
    pub fn diff_root<T>(
        &self,
        root: &RootSpec,
        id_map: IdMap,
        sink: LayerSink<'_, T>,
    ) -> Result<T> {
        let (data_r, data_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(SandboxError::os("make a pipe"))?;
        let req = Request::Diff {
            root: root.clone(),
            id_map,
        };
        let mut h = self.spawn(&req, Stdio3::Inherit, None, Some(data_w))?;
        let mut file = std::fs::File::from(data_r);
        Checked::sink(&mut h, &mut file, sink)
    }

    fn run_watched<T>(
        &self,
        spec: RunSpec,
        stdio: Stdio3,
        on_line: &(dyn Fn(&str) + Sync),
        layer: Option<LayerSink<'_, T>>,
        on_started: &dyn Fn(u32),
    ) -> Result<(Exit, Option<T>)> {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let mut spec = spec;
        spec.console = matches!(stdio, Stdio3::Console(_));
        let capture = matches!(stdio, Stdio3::Capture);
        let (log_r, log_w) = if capture {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(SandboxError::os("make a pipe"))?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (data_r, data_w) = if spec.diff {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(SandboxError::os("make a pipe"))?;
            // A layer of hundreds of megabytes crosses this pipe: at the default 64 KiB each
            // side waits on the other thousands of times. The size is a hint (capped by
            // fs.pipe-max-size), so a refusal changes nothing but speed.
            let _ = rustix::pipe::fcntl_setpipe_size(&w, DIFF_PIPE_SIZE);
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        // The owner token lets a later build tell this cgroup's creator is gone.
        let name = format!("cairn-{}-{}", cairn_layers::owner::token(), unique());
        let cg = if self.limits_usable {
            cgroup::Cgroup::create(&name, &self.limits).map_err(SandboxError::Cgroup)?
        } else {
            None
        };
        if let Some(cg) = &cg {
            spec.cgroup_procs = cg.procs_files();
        }
        let mut h = self.spawn(&Request::Run(Box::new(spec)), stdio, log_w, data_w)?;
        std::thread::scope(|scope| {
            let reader = log_r.map(|r| {
                scope.spawn(move || read_lines(std::fs::File::from(r), MAX_LINE, on_line))
            });
            let result = (|| {
                match h.recv()? {
                    Reply::Started { pid } => on_started(pid),
                    Reply::Failed { message } => {
                        return Err(Error::Sandbox(self.mapping.explain(message)));
                    }
                    other => return Err(SandboxError::Unexpected(format!("{other:?}")).into()),
                }
                let exit = match h.recv()? {
                    Reply::Exited { code, signal } => Exit {
                        code,
                        signal,
                        oom_killed: false,
                    },
                    Reply::Failed { .. } if cancelled() => return Err(Error::Cancelled),
                    Reply::Failed { message } => return Err(Error::Sandbox(message)),
                    other => return Err(SandboxError::Unexpected(format!("{other:?}")).into()),
                };
                let exit = Exit {
                    oom_killed: !exit.success() && cg.as_ref().is_some_and(|c| c.oom_killed()),
                    ..exit
                };
                let mut out = None;
                if let (Some(r), Some(sink), true) = (data_r, layer, exit.success()) {
                    let mut file = std::fs::File::from(r);
                    out = Some(Checked::sink(&mut h, &mut file, sink)?);
                } else {
                    h.finish()?;
                }
                Ok((exit, out))
            })();
            if result.is_err() {
                terminate(h.child.id());
            }
            drop(h);
            if let Some(r) = reader {
                let _ = r.join();
            }
            result
        })
    }
}

/// The step's layer pipe's capacity asked for.
const DIFF_PIPE_SIZE: usize = 1 << 20;

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
