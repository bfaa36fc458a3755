//! The sandbox helper: cairn re-executed inside the build's user namespace, where it unpacks
//! layers with their real owners, mounts a container's root filesystem, runs the step's
//! process as pid 1 of fresh namespaces, and writes the step's changes as a layer tar.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use cairn_layers::IdMap;
use cairn_layers::apply::{ApplyOptions, Whiteouts, apply_layer};
use cairn_layers::compress::{self, Compression};
use cairn_layers::diff::TarOptions;
use cairn_layers::digest::HashingReader;

use super::confine::{self, Made};
use super::idmapped;
use super::proto::{self, Go, LayerBlob, MountSpec, Network, Reply, Request, RunSpec};
use super::snapshot::overlay;
use super::sys::{self, HelperError};
use rustix::process::Signal;

/// The hidden first argument that makes the cairn binary act as the helper.
pub const ARG: &str = "__sandbox";
/// The control socket's descriptor in the helper.
pub const CONTROL_FD: i32 = 3;
/// The layer tar's descriptor in the helper (Run with `diff`).
pub const DATA_FD: i32 = 4;
/// The socket that receives the container terminal's master (Run with `console`).
pub const CONSOLE_FD: i32 = 5;

/// The opaque-directory attribute overlayfs uses inside a user namespace (`userxattr`).
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

thread_local! {
    /// The limits cgroup's `cgroup.procs` files, opened before the helper entered its user
    /// namespace (or why not): the kernel checks a migration with the opener's credentials,
    /// and mapped root may not write a file the host's root owns.
    static CGROUP_PROCS: std::cell::RefCell<Vec<(PathBuf, std::io::Result<File>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    CANCELLED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    // kill is async-signal-safe (rustix makes the bare system call). Killing pid 1 of the
    // container's pid namespace kills every process in it.
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

/// The helper's whole life; the cairn binary calls this when its first argument is [`ARG`].
pub fn main() -> ! {
    // Killed or interrupted cairn: stop the step and clean up rather than linger.
    sys::die_with_parent(Signal::TERM);
    // SAFETY: `on_term` only touches atomics and calls kill, both async-signal-safe; SIG_IGN
    // for SIGPIPE makes a closed pipe an EPIPE error instead. rustix has no signal handlers.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: cairn passes the control socket as fd 3 (`CONTROL_FD`, placed before exec), and
    // nothing else in the helper claims it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let code = match serve(control) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

fn serve(control: UnixStream) -> Result<(), HelperError> {
    let mut reader = BufReader::new(
        control
            .try_clone()
            .map_err(HelperError::call("dup the control socket"))?,
    );
    let mut w = control;
    let req: Request = proto::recv(&mut reader)
        .map_err(HelperError::call("read the request"))?
        .ok_or("no request")?;
    let cleanup = match &req {
        Request::Run(spec) => spec.cleanup.clone(),
        _ => Vec::new(),
    };
    // Root's helper stays in the host's user namespace: it needs root's reach into the store,
    // and its pid 1 alone enters a user namespace with the build's (unprivileged) maps.
    let host_root = rustix::process::getuid().is_root();
    if let Request::Run(spec) = &req {
        let opened = spec
            .cgroup_procs
            .iter()
            .map(|p| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p);
                (p.clone(), f)
            })
            .collect();
        CGROUP_PROCS.with(|c| *c.borrow_mut() = opened);
    }
    let result = (|| {
        if host_root
            && let Request::Run(spec) = &req
            && spec.userns.is_none()
        {
            return Err("a step run by root needs an id mapping".into());
        }
        // A step with a network of its own gets its network namespace here, with the user
        // namespace where the helper makes one: cairn attaches pasta or slirp4netns to it
        // before its go-ahead, so the step starts with its network ready.
        let mut flags = if host_root { 0 } else { sys::CLONE_NEWUSER };
        if let Request::Run(spec) = &req
            && spec.network == Network::Private
        {
            flags |= sys::CLONE_NEWNET;
        }
        if flags != 0 {
            sys::unshare(flags)?;
        }
        proto::send(&mut w, &Reply::Ready).map_err(HelperError::call("answer cairn"))?;
        let _: Go = proto::recv(&mut reader)
            .map_err(HelperError::call("read cairn's go-ahead"))?
            .ok_or("cairn went away before writing the id maps")?;
        match &req {
            Request::Probe { dir } => {
                let overlay = overlay::probe(dir).map_err(|e| e.report());
                let _ = std::fs::remove_dir_all(dir);
                proto::send(&mut w, &Reply::Probed { overlay })
                    .map_err(HelperError::call("answer cairn"))
            }
            Request::Unpack {
                layers,
                target,
                overlay,
                ids,
            } => {
                let diff_ids = unpack(layers, target, *overlay, ids)?;
                proto::send(&mut w, &Reply::Unpacked { diff_ids })
                    .map_err(HelperError::call("answer cairn"))
            }
            Request::Remove { paths } => {
                for p in paths {
                    remove(p)?;
                }
                Ok(())
            }
            Request::Run(spec) => run(spec, &mut w),
        }
    })();
    // A step stopped early may still have its overlay mounted under the run directory:
    // detach it first, or removing the directory would reach into the mount.
    if let Request::Run(spec) = &req {
        spec.root.open().detach();
    }
    for p in &cleanup {
        let _ = remove(p);
    }
    let reply = match &result {
        Ok(()) => Reply::Done,
        // Text: the error crosses to another process as a line of JSON.
        Err(e) => Reply::Failed {
            message: e.report(),
        },
    };
    let _ = proto::send(&mut w, &reply);
    result
}

fn remove(p: &Path) -> Result<(), HelperError> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(HelperError::at("remove", p)),
        Ok(_) => std::fs::remove_file(p).map_err(HelperError::at("remove", p)),
    }
}

/// Applies layer blobs onto `target` in order, owners through `ids` (container ids to the ids
/// this process sees: itself inside the namespace, the mapped host range for root outside);
/// returns each layer's diff_id.
pub(super) fn unpack(
    layers: &[LayerBlob],
    target: &Path,
    overlay: bool,
    ids: &IdMap,
) -> Result<Vec<String>, HelperError> {
    let opts = ApplyOptions {
        whiteouts: if overlay {
            Whiteouts::Overlay {
                opaque_xattr: OPAQUE_XATTR,
            }
        } else {
            Whiteouts::Apply
        },
        id_map: ids.clone(),
        chown: true,
    };
    std::fs::create_dir_all(target).map_err(HelperError::at("create", target))?;
    let mut out = Vec::new();
    for l in layers {
        let c = Compression::from_media_type(&l.media_type).ok_or_else(|| {
            HelperError::Refused(format!(
                "layer media type {} is not supported",
                l.media_type
            ))
        })?;
        let blob = File::open(&l.path).map_err(HelperError::at("open", &l.path))?;
        let plain = compress::decompress(blob, c)?;
        let mut r = HashingReader::new(plain);
        apply_layer(&mut r, target, &opts)?;
        std::io::copy(&mut r, &mut std::io::sink()).map_err(HelperError::at("read", &l.path))?;
        out.push(r.finish().0.to_string());
    }
    Ok(out)
}

fn run(spec: &RunSpec, w: &mut UnixStream) -> Result<(), HelperError> {
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
    let root = snapshot.mount()?;
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
                ..
            } => {
                if let Some((uid, gid, mode)) = create
                    && !source.exists()
                {
                    std::fs::create_dir_all(source).map_err(HelperError::at("create", source))?;
                    // Container ids on disk even for root's builds: the step sees the cache
                    // through an idmapped mount (see `idmapped`).
                    std::os::unix::fs::chown(source, Some(*uid), Some(*gid))
                        .map_err(HelperError::at("chown", source))?;
                    std::fs::set_permissions(source, std::fs::Permissions::from_mode(*mode))
                        .map_err(HelperError::at("chmod", source))?;
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
    let outcome = start_and_wait(spec, &root, w);
    // Mount points this step did not ask for go; a directory the process filled stays.
    confine::remove_made(root_fd, &made.made);
    let (code, _) = outcome?;
    snapshot.unmount(&made.touched)?;
    let ok = code == Some(0) && !CANCELLED.load(Ordering::SeqCst);
    if spec.diff && ok && !snapshot.unchanged() {
        // SAFETY: cairn places the layer pipe on fd 4 (`DATA_FD`) for a Run with `diff`, and
        // this is its only owner in the helper.
        let data = unsafe { File::from_raw_fd(DATA_FD) };
        let opts = TarOptions {
            // Root's helper sees the mapped host ids; a user's helper sees container ids.
            id_map: spec.userns.clone().unwrap_or_else(IdMap::identity),
            clamp_mtime: spec.clamp_mtime,
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, data);
        snapshot
            .write_diff(&mut out, &opts)
            .map_err(|e| HelperError::from(e).context("diff"))?;
        out.into_inner()
            .map_err(|e| HelperError::call("write the layer")(e.into_error()))?
            .flush()
            .map_err(HelperError::call("write the layer"))?;
        if let Some(keep) = &spec.keep_upper {
            snapshot.keep(keep);
        }
    }
    Ok(())
}

/// The host ids that stand for container ids `uid` and `gid` where the helper is (root's
/// helper is outside the step's user namespace); ids outside the maps stay as they are.
fn host_ids(spec: &RunSpec, uid: u32, gid: u32) -> (u32, u32) {
    match &spec.userns {
        Some(m) => (
            m.uid_to_host(uid).unwrap_or(uid),
            m.gid_to_host(gid).unwrap_or(gid),
        ),
        None => (uid, gid),
    }
}

/// `,uid=U,gid=G` for a tmpfs root's builds mount: the container root's host ids, so the step
/// sees the tmpfs as root's as in Docker (a user's helper mounts as the container's root).
fn tmpfs_owner(spec: &RunSpec) -> String {
    match &spec.userns {
        Some(_) => {
            let (uid, gid) = host_ids(spec, 0, 0);
            format!(",uid={uid},gid={gid}")
        }
        None => String::new(),
    }
}

/// Two pipes for pid 1's entry into its user namespace (root's builds): pid 1 says it has
/// unshared, the helper writes its maps and says go. Each side closes the other's ends, so
/// either sees the end of its pipe when the other is gone.
struct UsernsSync {
    unshared: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
}

fn pipe() -> Result<(OwnedFd, OwnedFd), HelperError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(HelperError::call("pipe"))
}

/// Reads one byte, or none at the end of the pipe.
fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut byte = [0u8];
    loop {
        match rustix::io::read(fd, &mut byte) {
            Ok(1) => return Some(byte[0]),
            Err(rustix::io::Errno::INTR) => continue,
            _ => return None,
        }
    }
}

/// Forks pid 1, reports Started and Exited, and returns its exit code or signal.
fn start_and_wait(
    spec: &RunSpec,
    root: &Path,
    w: &mut UnixStream,
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
            let go: &[u8] = match super::ids::write_maps(pid as u32, ids) {
                Ok(()) => b"g",
                Err(_) => b"x",
            };
            let _ = rustix::io::write(&go_w, go);
        }
    }
    let mut setup_error = String::new();
    let _ = File::from(err_r).read_to_string(&mut setup_error);
    if setup_error.is_empty() {
        proto::send(w, &Reply::Started).map_err(HelperError::call("answer cairn"))?;
    }
    let status = loop {
        match rustix::process::waitpid(Some(child_pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(HelperError::call("wait")(e)),
        }
    };
    CHILD.store(0, Ordering::SeqCst);
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

/// pid 1: its own mount table, the container's mounts, pivot_root, credentials, exec.
/// Returns only on failure, with the message.
fn child(spec: &RunSpec, root: &Path, sync: Option<UsernsSync>) -> String {
    match child_setup(spec, root, sync) {
        Ok(never) => match never {},
        Err(e) => e.report(),
    }
}

fn child_setup(
    spec: &RunSpec,
    root: &Path,
    sync: Option<UsernsSync>,
) -> Result<std::convert::Infallible, HelperError> {
    sys::die_with_parent(Signal::KILL);
    // A session of its own, never cairn's: the step must not reach the user's terminal
    // (TIOCSTI pushes input into it) or signal cairn's process group. With -t the terminal
    // becomes the new session's below.
    sys::setsid()?;
    let own_cgroup2 = join_cgroups()?;
    // Its own cgroup namespace, rooted at the limits cgroup just joined: /proc/self/cgroup and
    // the cgroup2 mount below show nothing above it, so the step cannot move out of it.
    sys::unshare(sys::CLONE_NEWCGROUP)?;
    // SAFETY: back to the default dispositions for the step (no handler of the helper's runs
    // in pid 1). rustix has no signal handlers.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A mount table of its own: pivot_root moves every process of a mount namespace, and the
    // helper must keep its view to diff the step afterwards.
    sys::unshare(sys::CLONE_NEWNS)?;
    sys::make_mounts_private()?;
    sys::bind(root, root, true)?;
    // Opened after the bind, so the mounts below land on the tree pivot_root keeps; every
    // mount point is found from here without following a link out of the root.
    let root_fd = confine::open_host(root)?;
    let root_fd = root_fd.as_fd();
    let mut made = Made::default();
    let proc = confine::ensure_in(root_fd, "/proc", true, &mut made)?;
    sys::mount(
        "proc",
        &sys::fd_path(proc.as_fd()),
        "proc",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        None,
    )?;
    let dev = confine::ensure_in(root_fd, "/dev", true, &mut made)?;
    sys::mount(
        "tmpfs",
        &sys::fd_path(dev.as_fd()),
        "tmpfs",
        sys::MS_NOSUID,
        Some(&format!("mode=755,size=65536k{}", tmpfs_owner(spec))),
    )?;
    // The fresh tmpfs, empty and ours alone: names made in it are what they say.
    let dev = confine::open_in(root_fd, "/dev").map_err(HelperError::call("open /dev"))?;
    mount_dev(&sys::fd_path(dev.as_fd()))?;
    confine::mount_sys(root_fd, spec.network != Network::Host, &mut made)?;
    confine::mask(root_fd)?;
    confine::mount_cgroup(root_fd, own_cgroup2)?;
    for (p, file) in &spec.etc_files {
        let source = confine::open_host(file)?;
        let target = confine::ensure_in(root_fd, p, false, &mut made)?;
        confine::bind_in(source.as_fd(), target.as_fd(), 0, p)?;
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Bind {
                source,
                inside,
                target,
                readonly,
                scratch,
                ..
            } => {
                let src = confine::open_source(source, inside.as_deref())?;
                // Targets under /dev live in the fresh tmpfs, made only now.
                let t =
                    confine::ensure_in(root_fd, target, confine::is_dir(src.as_fd()), &mut made)?;
                match scratch {
                    Some(s) => {
                        let (upper, work) = (s.join("upper"), s.join("work"));
                        for d in [&upper, &work] {
                            std::fs::create_dir_all(d).map_err(HelperError::at("create", d))?;
                        }
                        // overlayfs cannot itself be idmapped, but its layers can: the
                        // source goes in through an (idmapped, for root) bind of its own.
                        let lower = s.join("lower");
                        std::fs::create_dir_all(&lower)
                            .map_err(HelperError::at("create", &lower))?;
                        let lower_fd = confine::open_host(&lower)?;
                        confine::bind_in(src.as_fd(), lower_fd.as_fd(), 0, target)?;
                        // The merged root takes the upper directory's owner and mode: the
                        // source's, as the step sees them.
                        if let Ok(m) = std::fs::metadata(&lower) {
                            use std::os::unix::fs::MetadataExt;
                            let _ = std::os::unix::fs::chown(&upper, Some(m.uid()), Some(m.gid()));
                            let _ = std::fs::set_permissions(
                                &upper,
                                std::fs::Permissions::from_mode(m.mode() & 0o7777),
                            );
                        }
                        overlay::mount(
                            std::slice::from_ref(&lower),
                            &upper,
                            &work,
                            &sys::fd_path(t.as_fd()),
                        )
                        .map_err(|e| e.context(format!("--mount target={target}")))?;
                    }
                    None => {
                        let attrs = if *readonly {
                            libc::MOUNT_ATTR_RDONLY
                        } else {
                            0
                        };
                        confine::bind_in(src.as_fd(), t.as_fd(), attrs, target)?;
                    }
                }
            }
            MountSpec::Tmpfs { target, size } => {
                let t = confine::ensure_in(root_fd, target, true, &mut made)?;
                let owner = tmpfs_owner(spec);
                let data = match size {
                    Some(s) => Some(format!("size={s}{owner}")),
                    None => owner.strip_prefix(',').map(str::to_owned),
                };
                sys::mount(
                    "tmpfs",
                    &sys::fd_path(t.as_fd()),
                    "tmpfs",
                    sys::MS_NOSUID | sys::MS_NODEV,
                    data.as_deref(),
                )
                .map_err(|e| e.context(format!("--mount target={target}")))?;
            }
        }
    }
    sys::chdir(root)?;
    sys::pivot_root_here()?;
    sys::chdir(Path::new("/"))?;
    if spec.console {
        let (uid, gid) = host_ids(spec, spec.uid, spec.gid);
        console(uid, gid)?;
    }
    if let Some(s) = sync {
        enter_userns(s)?;
    }
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    if std::fs::metadata(cwd).map(|m| !m.is_dir()).unwrap_or(true) {
        // Docker creates a missing working directory for the step (as the container's root,
        // so that its owner is one the layer can hold).
        let _ = std::fs::create_dir_all(cwd);
    }
    sys::chdir(Path::new(cwd))?;
    if spec.tty || spec.console {
        let _ = rustix::process::ioctl_tiocsctty(std::io::stdin());
    }
    sys::drop_capabilities()?;
    sys::set_credentials(spec.uid, spec.gid, &spec.groups)?;
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC closes nothing: it marks every
    // descriptor above stderr close-on-exec, so exec drops the helper's. rustix has no
    // close_range.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    exec(&spec.argv, &spec.env)
}

/// pid 1 of a root build leaves host root behind: a user namespace of its own, whose maps the
/// helper writes. Its mounts stay in a mount namespace of the host's user namespace, which
/// the step therefore cannot change.
fn enter_userns(s: UsernsSync) -> Result<(), HelperError> {
    let UsernsSync {
        unshared: (unshared_r, unshared_w),
        go: (go_r, go_w),
    } = s;
    drop(unshared_r);
    drop(go_w);
    sys::unshare(sys::CLONE_NEWUSER)?;
    let _ = rustix::io::write(&unshared_w, b"u");
    if read_byte(&go_r) != Some(b'g') {
        return Err("the helper could not write the step's id maps".into());
    }
    Ok(())
}

/// Moves pid 1 into the limits cgroup through the descriptors `serve` opened before the user
/// namespace existed; a file that would not open then is tried by name now. Whether one of
/// them was a cgroup2 cgroup: only then is the cgroup2 root of the namespace the step's own.
fn join_cgroups() -> Result<bool, HelperError> {
    /// `CGROUP2_SUPER_MAGIC`.
    const CGROUP2: u64 = 0x6367_7270;
    let files = CGROUP_PROCS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let mut v2 = false;
    for (path, file) in files {
        let r = match file {
            Ok(mut f) => {
                v2 |= rustix::fs::fstatfs(&f).is_ok_and(|s| s.f_type as u64 == CGROUP2);
                f.write_all(b"0")
            }
            Err(open) => {
                v2 |= rustix::fs::statfs(&path).is_ok_and(|s| s.f_type as u64 == CGROUP2);
                std::fs::write(&path, "0")
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{e} (open: {open})")))
            }
        };
        r.map_err(HelperError::call(format!(
            "join the cgroup {}",
            path.display()
        )))?;
    }
    Ok(v2)
}

/// A terminal from the container's own /dev/pts becomes the process's stdin, stdout and
/// stderr; its master goes to cairn over `CONSOLE_FD`. Inside, `tty` names /dev/pts/N.
fn console(uid: u32, gid: u32) -> Result<(), HelperError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let err = |what: &str, e: rustix::io::Errno| HelperError::call(format!("console: {what}"))(e);
    // /dev/ptmx is the link to this devpts instance's pts/ptmx.
    let master = rustix::pty::openpt(flags).map_err(|e| err("open /dev/ptmx", e))?;
    rustix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(s) => s,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new()).map_err(|e| err("ptsname", e))?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| err("open the terminal", e))?
        }
    };
    // The process's own terminal, as login and runc leave it.
    let _ = rustix::fs::fchown(
        &slave,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    // SAFETY: CONSOLE_FD was placed for this request (spec.console) and pid 1 owns its copy
    // (the helper closed its own after the fork); it is taken once, here.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(CONSOLE_FD) };
    let fds = [std::os::fd::AsFd::as_fd(&master)];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = rustix::net::SendAncillaryBuffer::new(&mut space);
    anc.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        &sock,
        &[std::io::IoSlice::new(b"t")],
        &mut anc,
        rustix::net::SendFlags::empty(),
    )
    .map_err(|e| err("send the terminal to cairn", e))?;
    drop(sock);
    drop(master);
    rustix::stdio::dup2_stdin(&slave)
        .and_then(|()| rustix::stdio::dup2_stdout(&slave))
        .and_then(|()| rustix::stdio::dup2_stderr(&slave))
        .map_err(HelperError::call("console: dup2"))?;
    Ok(())
}

/// The host's device nodes that a container may use, bind-mounted into the fresh tmpfs `dev`
/// (a user namespace cannot make device nodes). /dev/tty stays, as runc keeps it: it is the
/// generic node that opens the opener's controlling terminal, which after `setsid` is none
/// (ENXIO) and with -t the container's own.
fn mount_dev(dev: &Path) -> Result<(), HelperError> {
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target).map_err(HelperError::at("create", &target))?;
        sys::bind(&Path::new("/dev").join(name), &target, false)?;
    }
    for d in ["pts", "shm", "mqueue"] {
        std::fs::create_dir(dev.join(d)).map_err(HelperError::call(format!("create /dev/{d}")))?;
    }
    sys::mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        sys::MS_NOSUID | sys::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    sys::mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let _ = sys::mount(
        "mqueue",
        &dev.join("mqueue"),
        "mqueue",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        None,
    );
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(HelperError::call(format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

/// execve with a PATH search in the container (the process's own PATH, else Docker's default).
fn exec(argv: &[String], env: &[String]) -> Result<std::convert::Infallible, HelperError> {
    let prog = argv.first().ok_or("no command to run")?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(super::DEFAULT_PATH);
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        path_var
            .split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(prog))
            .filter(|p| {
                std::fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
            .collect()
    };
    let Some(path) = candidates.first() else {
        return Err(HelperError::Refused(format!(
            "exec: {prog:?}: executable file not found in $PATH"
        )));
    };
    let c = |s: &str| {
        CString::new(s).map_err(|_| HelperError::Refused(format!("{s:?} has a NUL byte")))
    };
    let args = argv.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let envs = env.iter().map(|a| c(a)).collect::<Result<Vec<_>, _>>()?;
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let p = sys::cstr(path)?;
    // SAFETY: NUL-terminated arrays of pointers to NUL-terminated strings, all alive across
    // the call. rustix's execve is not public.
    unsafe {
        libc::execve(p.as_ptr(), argp.as_ptr(), envp.as_ptr());
    }
    Err(HelperError::at("exec", path)(
        std::io::Error::last_os_error(),
    ))
}
