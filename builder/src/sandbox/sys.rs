//! Thin checked wrappers over the Linux calls the sandbox helper makes (mount, unshare,
//! pivot_root, credentials, loopback), each error naming what it was doing.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS,
};

pub use super::error::HelperError;

pub const MS_NODEV: MountFlags = MountFlags::NODEV;
pub const MS_NOEXEC: MountFlags = MountFlags::NOEXEC;
pub const MS_NOSUID: MountFlags = MountFlags::NOSUID;
pub const MS_RDONLY: MountFlags = MountFlags::RDONLY;

pub fn cstr(p: &Path) -> Result<CString, HelperError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| HelperError::Refused(format!("{} has a NUL byte", p.display())))
}

pub fn unshare(flags: libc::c_int) -> Result<(), HelperError> {
    // SAFETY: unshare(2) is unsafe only for CLONE_FILES and CLONE_FS pulling state from under
    // other threads (which is why rustix's is `unshare_unsafe`); cairn never passes those, and
    // the helper and its pid 1 are single-threaded.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(HelperError::call(format!("unshare({flags:#x})"))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Mounts a filesystem of type `fstype` (not a bind: see [`bind`]).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> Result<(), HelperError> {
    let data = data
        .map(|d| CString::new(d).map_err(|_| HelperError::Refused(format!("{d:?} has a NUL byte"))))
        .transpose()?;
    rustix::mount::mount(source, target, fstype, flags, data.as_deref()).map_err(HelperError::call(
        format!("mount {source} on {} ({fstype})", target.display()),
    ))
}

/// Binds `source` on `target`; `recursive` brings the mounts below `source` along.
pub fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), HelperError> {
    let r = if recursive {
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        rustix::mount::mount_bind(source, target)
    };
    r.map_err(HelperError::call(format!(
        "mount {} on {} (bind)",
        source.display(),
        target.display()
    )))
}

/// Stops mount events crossing into or out of a fresh mount namespace.
pub fn make_mounts_private() -> Result<(), HelperError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(HelperError::call("mount none on / (bind)"))
}

/// `struct mount_attr` of mount_setattr(2), which libc does not define.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the mount `fd` is the root of and, with `recursive`, on
/// every mount below it: a remount reaches only one mount, and a recursive bind brings
/// submounts (cgroup controllers under /sys) that would otherwise keep their own flags.
pub fn set_mount_attrs(
    fd: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
    attrs: u64,
    what: &Path,
) -> Result<(), HelperError> {
    if mount_setattr(fd, recursive, attrs, 0) != 0 {
        return Err(HelperError::call(format!(
            "set mount attributes on {}",
            what.display()
        ))(io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes the detached mount tree `fd` (and every mount below it) idmapped through the user
/// namespace `userns`; the kernel's answer as a raw return code, since a filesystem without
/// idmapped mounts (EINVAL) is something callers expect.
pub fn set_mount_idmap(fd: std::os::fd::BorrowedFd<'_>, userns: std::os::fd::RawFd) -> i64 {
    /// `MOUNT_ATTR_IDMAP`, which libc does not define.
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    mount_setattr(fd, true, MOUNT_ATTR_IDMAP, userns as u64)
}

fn mount_setattr(
    fd: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
    attrs: u64,
    userns_fd: u64,
) -> i64 {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: mount_setattr on a live descriptor with an empty path and a struct of the
    // kernel's layout and size, which the kernel only reads. Neither libc nor rustix wraps it.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// `/proc/self/fd/N`: the path a descriptor's file is reached by, for calls that take a path
/// (mount(2)); the walk jumps to the descriptor's file without looking at a name again.
pub fn fd_path(fd: std::os::fd::BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
}

/// A session of its own, without a controlling terminal: the step can neither reach the
/// user's terminal through /dev/tty nor signal cairn's process group.
pub fn setsid() -> Result<(), HelperError> {
    rustix::process::setsid()
        .map(drop)
        .map_err(HelperError::call("setsid"))
}

/// The capabilities a step keeps: Docker's (and BuildKit's) default set. Without
/// CAP_SYS_ADMIN among them, root in the container cannot unmount or remount what masks
/// /proc and /sys, nor mount anything of its own.
pub const KEPT_CAPS: [u32; 14] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Drops every capability outside [`KEPT_CAPS`], and those of `also`, from the bounding set
/// and the ambient and inheritable sets, so that no exec (setuid root included) can regain
/// them.
pub fn drop_capabilities(also: &[u32]) -> Result<(), HelperError> {
    use rustix::thread::CapabilitySet;
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    // A set of one bit names a capability by number, so one the kernel knows and rustix
    // does not yet is dropped too.
    for cap in (0..=last.min(63)).filter(|c| !KEPT_CAPS.contains(c) || also.contains(c)) {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << cap,
        )) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(HelperError::call(format!("drop capability {cap}"))(e)),
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let mut caps = rustix::thread::capabilities(None).map_err(HelperError::call("capget"))?;
    caps.inheritable = CapabilitySet::empty();
    rustix::thread::set_capabilities(None, caps).map_err(HelperError::call("capset"))
}

pub fn umount_detach(target: &Path) -> Result<(), HelperError> {
    rustix::mount::unmount(target, UnmountFlags::DETACH)
        .map_err(HelperError::call(format!("unmount {}", target.display())))
}

pub fn pivot_root_here() -> Result<(), HelperError> {
    // pivot_root(".", ".") stacks the old root on the new one, and the detach below drops it.
    rustix::process::pivot_root(".", ".").map_err(HelperError::call("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(HelperError::call("detach the old root"))
}

pub fn chdir(p: &Path) -> Result<(), HelperError> {
    rustix::process::chdir(p).map_err(HelperError::call(format!("chdir {}", p.display())))
}

pub fn sethostname(name: &str) -> Result<(), HelperError> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(HelperError::call(format!("sethostname {name}")))
}

/// Sets supplementary groups, gid and uid (in that order, while still privileged). The
/// calls are the thread's, which here is the process's: pid 1 is single-threaded until exec.
pub fn set_credentials(uid: u32, gid: u32, groups: &[u32]) -> Result<(), HelperError> {
    use rustix::process::{Gid, Uid};
    let list: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // With a single-id mapping setgroups is denied; when the only group is the primary one
    // (all that mapping can offer) there is nothing to lose.
    if let Err(e) = rustix::thread::set_thread_groups(&list)
        && groups.iter().any(|g| *g != gid)
    {
        return Err(HelperError::call(format!("setgroups {groups:?}"))(e));
    }
    let g = Gid::from_raw(gid);
    rustix::thread::set_thread_res_gid(g, g, g)
        .map_err(HelperError::call(format!("setgid {gid}")))?;
    let u = Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u).map_err(HelperError::call(format!("setuid {uid}")))
}

/// Brings up `lo` in a fresh network namespace.
pub fn loopback_up() -> Result<(), HelperError> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(HelperError::call("socket"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: an interface request zeroed, then named; both ioctls read or write only that
    // struct, on a socket that stays open across them. rustix has no SIOC*IFFLAGS.
    let rc = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        rc
    };
    if rc != 0 {
        return Err(HelperError::call("bring up lo")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Dies with `sig` when the parent exits.
pub fn die_with_parent(sig: rustix::process::Signal) {
    let _ = rustix::process::set_parent_process_death_signal(Some(sig));
}
