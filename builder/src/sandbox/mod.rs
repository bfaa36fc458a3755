//! RUN's sandbox, cairn's side: the build's id mapping and snapshotter, chosen once; the
//! helper process (cairn re-executed, see [`helper`]) spawned per operation; unpacking layers
//! with their owners, running a step and turning its changes into a layer.

pub mod cgroup;
mod confine;
pub mod error;
pub mod helper;
mod idmapped;
pub mod ids;
pub mod net;
pub mod proto;
mod snapshot;
mod sys;

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_layers::image::Descriptor;
use cairn_layers::store::RemoveFn;
use cairn_layers::{Digest, Store};

use crate::error::{Error, Result, io_err};
pub use cgroup::Limits;
pub use error::{Error as SandboxError, HelperError};
pub use ids::{Mapping, MappingKind};
use proto::{Go, LayerBlob, Reply, Request};
pub use proto::{MountSpec, Network, RootSpec, RunSpec};
use snapshot::Snapshot;

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

/// The standard streams of a step's process.
#[derive(Debug)]
pub enum Stdio3 {
    /// stdin from /dev/null; stdout and stderr merged and handed line by line to a callback.
    Capture,
    /// cairn's own streams (`cairn run`).
    Inherit,
    /// Given descriptors.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal of the container's own (`cairn run -t`): its master arrives on this Unix
    /// socket (SCM_RIGHTS, see [`receive_console`]) once the container has made it.
    Console(OwnedFd),
}

/// Waits on the socket given as [`Stdio3::Console`] for the container terminal's master;
/// `None` when the container ended without making one.
pub fn receive_console(sock: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    loop {
        let r = rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        );
        match r {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => break,
        }
    }
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

struct Helper {
    child: Child,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// The step's user-mode networking, stopped after the helper has ended (field drop order).
    _net: Option<net::Net>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let pid = self.child.id();
        // A helper still waiting for a message (cairn failed between its steps) must see the
        // socket end, or it would wait for cairn while cairn waits for it.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
        if let Ok(mut set) = HELPERS.lock() {
            set.remove(&pid);
        }
    }
}

impl Helper {
    fn recv(&mut self) -> Result<Reply> {
        match proto::recv::<Reply>(&mut self.reader) {
            Ok(Some(r)) => Ok(r),
            Ok(None) if cancelled() => Err(Error::Cancelled),
            Ok(None) => Err(SandboxError::HelperGone.into()),
            Err(source) => Err(SandboxError::Helper {
                action: "read the answer of",
                source,
            }
            .into()),
        }
    }

    /// The final answer: Done, or Failed as an error.
    fn finish(&mut self) -> Result<()> {
        match self.recv()? {
            Reply::Done => Ok(()),
            Reply::Failed { .. } if cancelled() => Err(Error::Cancelled),
            Reply::Failed { message } => Err(Error::Sandbox(message)),
            other => Err(SandboxError::Unexpected(format!("{other:?}")).into()),
        }
    }
}

impl Sandbox {
    /// Chooses the build's mapping and snapshotter. `helper` is the cairn binary.
    pub fn new(
        helper: PathBuf,
        store: &Store,
        snapshotter: Snapshotter,
        limits: Limits,
    ) -> Result<Sandbox> {
        let (mapping, warning) = Mapping::detect(store.root())?;
        let mut sb = Sandbox {
            helper,
            mapping,
            snapshot: snapshot::unused(),
            limits,
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
            warnings: Vec::new(),
            limits_usable: false,
        })
    }

    /// A remover for the store: trees with mapped owners are deleted inside the namespace.
    pub fn remover(&self) -> Arc<RemoveFn> {
        let sb = self.clone();
        Arc::new(move |path: &Path| {
            sb.remove(&[path.to_path_buf()])
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }

    /// Deletes paths from inside the user namespace.
    pub fn remove(&self, paths: &[PathBuf]) -> Result<()> {
        if self.mapping.kind == MappingKind::Root {
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
        if self.mapping.kind != MappingKind::Root {
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
        let ids = if self.mapping.kind == MappingKind::Root {
            // Root chowns to the mapped host ids itself, with the helper's own unpacking.
            let ids = helper::unpack(&blobs, dir, overlay, &self.mapping.ids)
                .map_err(|e| Error::Sandbox(self.mapping.explain(e.report())))?;
            self.own_as_container_root(dir)?;
            ids
        } else {
            self.unpack_in_namespace(blobs, dir, overlay)?
        };
        ids.iter()
            .map(|d| {
                d.parse::<Digest>()
                    .map_err(|e| SandboxError::BadDigest(Box::new(e)).into())
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

    /// Runs a container. `on_line` gets each line of output (with `Stdio3::Capture`);
    /// `layer` reads the step's diff tar when `spec.diff` is set and the process succeeded.
    pub fn run<T>(
        &self,
        spec: RunSpec,
        stdio: Stdio3,
        on_line: &(dyn Fn(&str) + Sync),
        layer: Option<LayerSink<'_, T>>,
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
                    Reply::Started => {}
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
                    // The helper's verdict on the tar comes after its last byte: a failed diff
                    // must not store a layer, so it is checked before the sink returns.
                    let mut checked = Checked {
                        inner: &mut file,
                        helper: &mut h,
                        verdict: None,
                    };
                    let v = sink(&mut checked)?;
                    match checked.verdict.take() {
                        Some(r) => r?,
                        None => h.finish()?,
                    }
                    out = Some(v);
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

    /// Starts the helper, sends `req`, writes the id maps and lets it go. (A step's cgroup is
    /// joined by its pid 1, not here: see `RunSpec::cgroup_procs`.)
    fn spawn(
        &self,
        req: &Request,
        stdio: Stdio3,
        log: Option<OwnedFd>,
        data: Option<OwnedFd>,
    ) -> Result<Helper> {
        // Known before the helper starts: a missing tool costs no helper.
        let net_tools = match req {
            Request::Run(spec) if spec.network == Network::Private => Some(net::Tool::available()?),
            _ => None,
        };
        let (ours, theirs) = UnixStream::pair().map_err(SandboxError::os("make a socket pair"))?;
        let mut cmd = Command::new(&self.helper);
        cmd.arg(helper::ARG);
        let mut console = None;
        match stdio {
            Stdio3::Capture => {
                let w = log.ok_or_else(|| SandboxError::Unexpected("no log pipe".into()))?;
                let w2 = w
                    .try_clone()
                    .map_err(SandboxError::os("copy a descriptor"))?;
                cmd.stdin(Stdio::null()).stdout(w).stderr(w2);
            }
            Stdio3::Inherit => {}
            Stdio3::Fds {
                stdin,
                stdout,
                stderr,
            } => {
                cmd.stdin(stdin).stdout(stdout).stderr(stderr);
            }
            Stdio3::Console(sock) => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                console = Some(sock);
            }
        }
        let control = theirs.as_raw_fd();
        let data_fd = data.as_ref().map(|d| d.as_raw_fd());
        let console_fd = console.as_ref().map(|c| c.as_raw_fd());
        // SAFETY: the closure runs between fork and exec, where only async-signal-safe calls
        // are allowed: `place_fd` makes only fcntl and dup2, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                place_fd(control, helper::CONTROL_FD)?;
                if let Some(d) = data_fd {
                    place_fd(d, helper::DATA_FD)?;
                }
                if let Some(c) = console_fd {
                    place_fd(c, helper::CONSOLE_FD)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| Error::Io {
            action: "start the sandbox helper",
            path: self.helper.clone(),
            source,
        })?;
        drop(theirs);
        drop(data);
        drop(console);
        drop(cmd);
        if let Ok(mut set) = HELPERS.lock() {
            set.insert(child.id());
        }
        let reader = BufReader::new(
            ours.try_clone()
                .map_err(SandboxError::os("copy a descriptor"))?,
        );
        let mut h = Helper {
            child,
            writer: ours,
            reader,
            _net: None,
        };
        proto::send(&mut h.writer, req).map_err(|source| SandboxError::Helper {
            action: "write to",
            source,
        })?;
        match h.recv()? {
            Reply::Ready => {}
            Reply::Failed { message } => {
                return Err(Error::Sandbox(format!(
                    "cannot create a user namespace: {message}"
                )));
            }
            other => return Err(SandboxError::Unexpected(format!("{other:?}")).into()),
        }
        self.mapping.write(h.child.id())?;
        if let Some(tools) = &net_tools {
            // The helper made its network namespace with its user namespace; the step starts
            // (at Go) only once the namespace is configured.
            h._net = Some(net::attach_any(tools, h.child.id())?);
        }
        proto::send(&mut h.writer, &Go).map_err(|source| SandboxError::Helper {
            action: "write to",
            source,
        })?;
        Ok(h)
    }
}

/// A reader of the layer pipe that, at its end, collects the helper's verdict.
struct Checked<'a> {
    inner: &'a mut std::fs::File,
    helper: &'a mut Helper,
    verdict: Option<Result<()>>,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.verdict.is_none() {
            let v = self.helper.finish();
            if let Err(e) = &v {
                let msg = e.to_string();
                self.verdict = Some(v);
                return Err(std::io::Error::other(msg));
            }
            self.verdict = Some(v);
        }
        Ok(n)
    }
}

/// BuildKit's hosts file for a step (its `initHostsFile`): loopback names only, so no entry
/// of the host's own file reaches the step or its layer.
pub fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// The container's /etc/hosts (BuildKit's minimal file) and a copy of the host's
/// /etc/resolv.conf under `dir`, to be bind-mounted over the container's: a process can neither
/// change the host's files nor leave them in its layer. With a network of its own, the
/// nameserver is the DNS forwarder of its user-mode networking.
pub fn etc_files(dir: &Path, hostname: &str, network: Network) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for name in ["hosts", "resolv.conf"] {
        let text = if name == "hosts" {
            hosts_file(hostname)
        } else {
            let text = std::fs::read_to_string(Path::new("/etc").join(name)).unwrap_or_default();
            if network == Network::Private {
                net::resolv_conf(&text)
            } else {
                text
            }
        };
        let copy = dir.join(name);
        std::fs::write(&copy, text).map_err(io_err("write", &copy))?;
        out.push((format!("/etc/{name}"), copy));
    }
    Ok(out)
}

/// SIGTERM to a helper cairn spawned and still tracks (not yet waited for, so its pid is
/// still its own).
fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// dup2 `fd` onto `to`, clearing close-on-exec even when they are the same descriptor.
fn place_fd(fd: i32, to: i32) -> std::io::Result<()> {
    // SAFETY: fcntl and dup2 on descriptors the parent keeps open until after the spawn
    // (`theirs`, `data`, `console`); raw calls, since the pre-exec child may not allocate and
    // rustix's dup2 would need an owned target.
    unsafe {
        if fd == to {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        } else if libc::dup2(fd, to) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The longest piece of output passed on as one line: a process that prints an endless line
/// must not make cairn hold it whole.
pub const MAX_LINE: usize = 64 << 10;

/// Passes each line of `r` to `on_line` without its line ending; a line longer than
/// `max` bytes is passed on in pieces of at most that many, cut between characters.
fn read_lines(r: impl Read, max: usize, on_line: &(dyn Fn(&str) + Sync)) {
    let mut lines = BufReader::new(r);
    let mut buf = Vec::with_capacity(max);
    loop {
        let room = (max - buf.len()) as u64;
        match (&mut lines).take(room).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    on_line(&String::from_utf8_lossy(&buf));
                }
                break;
            }
            Ok(_) if buf.ends_with(b"\n") => {
                let text = String::from_utf8_lossy(&buf);
                on_line(text.trim_end_matches(['\n', '\r']));
                buf.clear();
            }
            Ok(_) if buf.len() < max => {}
            Ok(_) => {
                // Cut before a character split at the bound; its bytes start the next piece.
                let cut = utf8_cut(&buf);
                on_line(&String::from_utf8_lossy(&buf[..cut]));
                buf.drain(..cut);
                // A line of exactly the bound ends here, not in an empty piece after it.
                if buf.is_empty() && lines.fill_buf().is_ok_and(|b| b.first() == Some(&b'\n')) {
                    lines.consume(1);
                }
            }
        }
    }
}

/// Where to cut `buf` so that no UTF-8 character is split: before a sequence that its last
/// bytes start but do not finish, else at its end.
fn utf8_cut(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 != 0x80 {
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            // A piece is never empty, or the reader would make no progress.
            return if need > back && buf.len() > back {
                buf.len() - back
            } else {
                buf.len()
            };
        }
    }
    buf.len()
}

/// The last `n` lines of output, kept for the error message of a failed step.
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
}

impl Tail {
    pub const KEEP: usize = 10;

    pub fn push(&self, line: &str) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == Self::KEEP {
                l.pop_front();
            }
            l.push_back(line.to_owned());
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cuts_between_characters() {
        let cases: [(&[u8], usize); 8] = [
            (b"abc", 3),
            (b"ab\xC3", 2),
            ("aé".as_bytes(), 3),
            (b"a\xE2\x82", 1),
            (b"a\xF0\x9F\x98", 1),
            ("a😀".as_bytes(), 5),
            (b"\xC3", 1),
            (b"\x80\x80\x80\x80", 4),
        ];
        for (buf, want) in cases {
            assert_eq!(utf8_cut(buf), want, "{buf:?}");
        }
    }

    #[test]
    fn long_lines_come_in_bounded_pieces() {
        let cases: [(&[u8], &[&str]); 8] = [
            (b"", &[]),
            (b"one\ntwo\r\n", &["one", "two"]),
            (b"no newline", &["no newl", "ine"]),
            (b"abcdefghijklmnopq\nr", &["abcdefg", "hijklmn", "opq", "r"]),
            (b"1234567\n", &["1234567"]),
            (b"1234567\n\nx", &["1234567", "", "x"]),
            ("abcdeé€x".as_bytes(), &["abcdeé", "€x"]),
            (b"abcdef\xE2\x82\xAC\n", &["abcdef", "€"]),
        ];
        for (input, want) in cases {
            let got = Mutex::new(Vec::new());
            read_lines(input, 7, &|l: &str| got.lock().unwrap().push(l.to_owned()));
            assert_eq!(got.into_inner().unwrap(), want, "{input:?}");
        }
    }
}
