//! The helper's Run: the container's namespaces and root, pid 1 started and waited for, and
//! the step's changes written as a layer tar.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;

use cairn_layers::IdMap;
use cairn_layers::diff::TarOptions;
use rustix::process::Signal;

use super::pid1::{UsernsSync, child, host_ids, pipe, read_byte};
use super::{CANCELLED, CHILD, CONSOLE_FD, DATA_FD};
use crate::sandbox::IsolationMode;
use crate::sandbox::confine::{self, Made};
use crate::sandbox::idmapped;
use crate::sandbox::proto::{self, MountSpec, Network, Reply, RunSpec};
use crate::sandbox::snapshot::Root;
use crate::sandbox::sys::{self, HelperError};

pub(super) fn run(spec: &RunSpec, w: &mut UnixStream) -> Result<(), HelperError> {
    if let Some(ids) = &spec.userns {
        idmapped::prepare(ids)?;
    }
    // Network::Private's namespace already exists (see `serve`); only `none` is made here.
    let mut flags = sys::CLONE_NEWNS | sys::CLONE_NEWPID | sys::CLONE_NEWUTS | sys::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= sys::CLONE_NEWNET;
    }
    sys::unshare(flags)?;
    sys::make_mounts_private()?;
    sys::sethostname(&spec.hostname)?;
    if spec.network != Network::Host {
        sys::loopback_up()?;
    }
    let snapshot = spec.root.open();
    let root = snapshot.mount(spec.suppress_sync)?;
    let root_fd = confine::open_host(&root)?;
    let root_fd = root_fd.as_fd();
    // runc's mount points for /proc, /dev and /sys stay in the layer, as BuildKit leaves them
    // (its stub cleaner removes only the /etc files and the --mount targets it bound).
    let mut kept = Made::default();
    for d in ["proc", "dev", "sys"] {
        confine::ensure_in(root_fd, d, true, &mut kept)?;
    }
    let mut made = Made::default();
    for (p, _) in &spec.etc_files {
        confine::ensure_in(root_fd, p, false, &mut made)?;
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Bind {
                source,
                inside,
                target,
                create,
                owner,
                ..
            } => {
                if let Some((uid, gid, mode)) = create {
                    ensure_cache_dir(source, *uid, *gid, *mode)?;
                }
                // Container ids on disk, as a cache's (see `ensure_cache_dir`).
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(source, Some(*uid), Some(*gid))
                        .map_err(HelperError::at("chown", source))?;
                }
                // A type check only: pid 1 opens the source again to mount it.
                let dir = confine::open_source(source, inside.as_deref())
                    .is_ok_and(|fd| confine::is_dir(fd.as_fd()));
                confine::ensure_in(root_fd, target, dir, &mut made)?;
            }
            MountSpec::Tmpfs { target, .. } => {
                confine::ensure_in(root_fd, target, true, &mut made)?;
            }
        }
    }
    if spec.userns.is_some() {
        let (uid, gid) = host_ids(spec, 0, 0);
        confine::chown_made(root_fd, &kept.made, uid, gid)?;
        confine::chown_made(root_fd, &made.made, uid, gid)?;
    }
    let outcome = start_and_wait(spec, &root, w, child);
    // Mount points this step did not ask for go; a directory the process filled stays.
    confine::remove_made(root_fd, &made.made);
    let (code, _) = outcome?;
    finish(spec, &*snapshot, code, &made.touched)
}

/// A cache mount's directory, made with its owner and mode when it is missing. Container ids
/// on disk even for root's builds: the step sees the cache through an idmapped mount (see
/// `idmapped`), or, under chroot, moved into its root.
pub(super) fn ensure_cache_dir(
    source: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), HelperError> {
    if source.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(source).map_err(HelperError::at("create", source))?;
    std::os::unix::fs::chown(source, Some(uid), Some(gid))
        .map_err(HelperError::at("chown", source))?;
    std::fs::set_permissions(source, std::fs::Permissions::from_mode(mode))
        .map_err(HelperError::at("chmod", source))
}

/// After the step: the root taken down and, for a successful step that changed it, its diff
/// written to the layer pipe.
pub(super) fn finish(
    spec: &RunSpec,
    snapshot: &dyn Root,
    code: Option<i32>,
    touched: &[std::path::PathBuf],
) -> Result<(), HelperError> {
    snapshot.unmount(touched)?;
    if snapshot.unchanged() {
        return Ok(());
    }
    let written = write_layer(spec, code, &mut |out, opts| snapshot.write_diff(out, opts))?;
    if written && let Some(keep) = &spec.keep_upper {
        snapshot.keep(keep);
    }
    Ok(())
}

/// For a successful step with `diff`: its changes, as `diff` writes them, sent down the layer
/// pipe. Whether they were.
pub(super) fn write_layer(
    spec: &RunSpec,
    code: Option<i32>,
    diff: &mut dyn FnMut(&mut dyn Write, &TarOptions) -> cairn_layers::Result<()>,
) -> Result<bool, HelperError> {
    let ok = code == Some(0) && !CANCELLED.load(Ordering::SeqCst);
    if !spec.diff || !ok {
        return Ok(false);
    }
    // SAFETY: cairn places the layer pipe on fd 4 (`DATA_FD`) for a Run with `diff`, and this
    // is its only owner in the helper.
    let data = unsafe { File::from_raw_fd(DATA_FD) };
    let opts = TarOptions {
        // Root's helper sees the mapped host ids; a user's helper sees container ids.
        id_map: spec.userns.clone().unwrap_or_else(IdMap::identity),
        clamp_mtime: spec.clamp_mtime,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, data);
    diff(&mut out, &opts).map_err(|e| HelperError::from(e).context("diff"))?;
    out.into_inner()
        .map_err(|e| HelperError::call("write the layer")(e.into_error()))?
        .flush()
        .map_err(HelperError::call("write the layer"))?;
    Ok(true)
}

/// What the forked child runs until exec: returns only on failure, with the message.
pub(super) type Pid1 = fn(&RunSpec, &Path, Option<UsernsSync>) -> String;

/// Forks pid 1, reports Started and Exited, and returns its exit code or signal.
pub(super) fn start_and_wait(
    spec: &RunSpec,
    root: &Path,
    w: &mut UnixStream,
    child: Pid1,
) -> Result<(Option<i32>, Option<i32>), HelperError> {
    use rustix::process::{Pid, WaitOptions};
    let (err_r, err_w) = pipe()?;
    let sync = match spec.userns {
        Some(_) => Some(UsernsSync {
            unshared: pipe()?,
            go: pipe()?,
        }),
        None => None,
    };
    if CANCELLED.load(Ordering::SeqCst) {
        return Err("cancelled".into());
    }
    // SAFETY: the helper is single-threaded, so the child may do anything before exec; it
    // leaves only through exec or _exit. rustix's fork is not public.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HelperError::call("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_r);
        let err = child(spec, root, sync);
        let _ = rustix::io::write(&err_w, err.as_bytes());
        // SAFETY: leaving the forked child without running the helper's destructors or exit
        // handlers, which belong to the parent.
        unsafe { libc::_exit(127) }
    }
    CHILD.store(pid, Ordering::SeqCst);
    let child_pid = Pid::from_raw(pid).ok_or("fork returned pid 0 to the parent")?;
    if spec.console {
        // Only pid 1 sends on it; cairn sees the end of the socket once pid 1 has let go.
        // SAFETY: CONSOLE_FD was placed for this request and only pid 1 (which has its own
        // copy) uses it; the helper's copy is closed here, once.
        drop(unsafe { OwnedFd::from_raw_fd(CONSOLE_FD) });
    }
    if CANCELLED.load(Ordering::SeqCst) {
        let _ = rustix::process::kill_process(child_pid, Signal::KILL);
    }
    drop(err_w);
    if let (Some(s), Some(ids)) = (sync, &spec.userns) {
        let UsernsSync {
            unshared: (unshared_r, unshared_w),
            go: (go_r, go_w),
        } = s;
        drop(unshared_w);
        drop(go_r);
        // End of file: pid 1 failed before it unshared, and says why on the error pipe.
        if read_byte(&unshared_r).is_some() {
            let go: &[u8] = match crate::sandbox::ids::write_maps(pid as u32, ids) {
                Ok(()) => b"g",
                Err(_) => b"x",
            };
            let _ = rustix::io::write(&go_w, go);
        }
    }
    let mut setup_error = String::new();
    let _ = File::from(err_r).read_to_string(&mut setup_error);
    if setup_error.is_empty() {
        proto::send(w, &Reply::Started { pid: pid as u32 })
            .map_err(HelperError::call("answer cairn"))?;
    }
    let status = loop {
        match rustix::process::waitpid(Some(child_pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(HelperError::call("wait")(e)),
        }
    };
    CHILD.store(0, Ordering::SeqCst);
    if spec.isolation == IsolationMode::Chroot {
        // No pid namespace ends the step's other processes with it: its session (the process
        // group pid 1 leads) goes, best effort (one that made a session of its own stays).
        let _ = rustix::process::kill_process_group(child_pid, Signal::KILL);
    }
    if !setup_error.is_empty() {
        // pid 1's own report, as it wrote it on the error pipe.
        return Err(HelperError::Refused(setup_error));
    }
    let (code, signal) = match status.exit_status() {
        Some(code) => (Some(code), None),
        None => (None, status.terminating_signal()),
    };
    proto::send(w, &Reply::Exited { code, signal }).map_err(HelperError::call("answer cairn"))?;
    if CANCELLED.load(Ordering::SeqCst) {
        return Err("cancelled".into());
    }
    Ok((code, signal))
}
