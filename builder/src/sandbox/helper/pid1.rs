//! The step's pid 1 until exec: its session, cgroup and mount namespace, the container's
//! mounts and /dev, pivot_root, the terminal, credentials and the PATH search.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::process::Signal;

use super::{CGROUP_PROCS, CONSOLE_FD};
use crate::sandbox::IsolationMode;
use crate::sandbox::confine::{self, Made};
use crate::sandbox::proto::{MountSpec, Network, RunSpec};

/// `CAP_MKNOD` (linux/capability.h).
const CAP_MKNOD: u32 = 27;
use crate::sandbox::snapshot::overlay;
use crate::sandbox::sys::{self, HelperError};

/// The host ids that stand for container ids `uid` and `gid` where the helper is (root's
/// helper is outside the step's user namespace); ids outside the maps stay as they are.
pub(super) fn host_ids(spec: &RunSpec, uid: u32, gid: u32) -> (u32, u32) {
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
pub(super) struct UsernsSync {
    pub unshared: (OwnedFd, OwnedFd),
    pub go: (OwnedFd, OwnedFd),
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), HelperError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(HelperError::call("pipe"))
}

/// Reads one byte, or none at the end of the pipe.
pub(super) fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut byte = [0u8];
    loop {
        match rustix::io::read(fd, &mut byte) {
            Ok(1) => return Some(byte[0]),
            Err(rustix::io::Errno::INTR) => continue,
            _ => return None,
        }
    }
}

/// pid 1: its own mount table, the container's mounts, pivot_root, credentials, exec.
/// Returns only on failure, with the message.
pub(super) fn child(spec: &RunSpec, root: &Path, sync: Option<UsernsSync>) -> String {
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
    default_signals();
    // A mount table of its own: pivot_root moves every process of a mount namespace, and the
    // helper must keep its view to diff the step afterwards.
    sys::unshare(sys::CLONE_NEWNS)?;
    sys::make_mounts_private()?;
    sys::bind(root, root, true)?;
    // Opened after the bind, so the mounts below land on the tree pivot_root keeps; every
    // mount point is found from here without following a link out of the root.
    let root_fd = confine::open_host(root)?;
    let root_fd = root_fd.as_fd();
    // An image's device nodes stay files: a layer can carry `b 8 0` mode 0666, which root's
    // unpacking creates and a mount of the host's user namespace would open, disk and all.
    // Docker relies on the devices cgroup for this; nodev needs nothing cairn may lack. The
    // step's own /dev is a tmpfs mounted below, with the host's few safe nodes bound in.
    sys::set_mount_attrs(root_fd, true, libc::MOUNT_ATTR_NODEV, root)?;
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
        // nodev: a node the step makes here (rootful steps keep no CAP_MKNOD, but a user
        // namespace's root never could) opens nothing; the safe ones are bound in below.
        sys::MS_NOSUID | sys::MS_NODEV,
        Some(&format!("mode=755,size=65536k{}", tmpfs_owner(spec))),
    )?;
    // The fresh tmpfs, empty and ours alone: names made in it are what they say.
    let dev = confine::open_in(root_fd, "/dev").map_err(HelperError::call("open /dev"))?;
    mount_dev(&sys::fd_path(dev.as_fd()), spec.shm_size)?;
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
    if spec.suppress_sync {
        // While pid 1 still holds CAP_SYS_ADMIN in its user namespace.
        super::super::seccomp::suppress_sync()?;
    }
    // Without a user namespace (`rootful`) the step's capabilities are the host's: with
    // CAP_MKNOD it could make a disk's node on a bind mount or a cache and open it.
    let also: &[u32] = if spec.userns.is_none() && spec.isolation == IsolationMode::Rootful {
        &[CAP_MKNOD]
    } else {
        &[]
    };
    become_and_exec(spec, also)
}

/// Back to the default dispositions for the step: no handler of the helper's runs in it.
pub(super) fn default_signals() {
    // SAFETY: setting dispositions to SIG_DFL installs no code. rustix has no signal handlers.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The last of a step's set-up, on every rung: capabilities beyond Docker's (and `also`)
/// dropped, the step's user and groups, the helper's descriptors left behind, exec.
pub(super) fn become_and_exec(
    spec: &RunSpec,
    also: &[u32],
) -> Result<std::convert::Infallible, HelperError> {
    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    for u in &spec.ulimits {
        let limit = libc::rlimit {
            rlim_cur: u.soft,
            rlim_max: u.hard,
        };
        // SAFETY: setrlimit(2) reads the struct it is given; rustix's takes only its own
        // resource enum, with no way to name one by number.
        if unsafe { libc::setrlimit(u.resource as _, &limit) } != 0 {
            return Err(HelperError::call(format!("set --ulimit {}", u.name()))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    sys::drop_capabilities(also)?;
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
pub(super) fn join_cgroups() -> Result<bool, HelperError> {
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
fn mount_dev(dev: &Path, shm_size: Option<u64>) -> Result<(), HelperError> {
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
        Some(&match shm_size {
            Some(bytes) => format!("mode=1777,size={bytes}"),
            None => "mode=1777,size=65536k".to_owned(),
        }),
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
        .unwrap_or(crate::sandbox::DEFAULT_PATH);
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
