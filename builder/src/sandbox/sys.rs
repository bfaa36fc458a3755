//! Thin checked wrappers over the Linux calls the sandbox helper makes (mount, unshare,
//! pivot_root, credentials, loopback), each error naming what it was doing.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
};

pub use super::error::HelperError;

pub fn cstr(p: &Path) -> Result<CString, HelperError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| HelperError::Refused(format!("{} has a NUL byte", p.display())))
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<(), HelperError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(HelperError::Call {
            what: what(),
            source: io::Error::last_os_error(),
        })
    }
}

pub fn unshare(flags: libc::c_int) -> Result<(), HelperError> {
    // SAFETY: plain syscall; the helper is single-threaded.
    check(unsafe { libc::unshare(flags) }, || {
        format!("unshare({flags:#x})")
    })
}

pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), HelperError> {
    let to_c = |s: Option<&str>| s.map(|s| CString::new(s).unwrap_or_default());
    let (src, fs, dat) = (to_c(source), to_c(fstype), to_c(data));
    let tgt = cstr(target)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe { libc::mount(ptr(&src), tgt.as_ptr(), ptr(&fs), flags, ptr(&dat).cast()) };
    check(rc, || {
        format!(
            "mount {} on {} ({})",
            source.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("bind")
        )
    })
}

/// Stops mount events crossing into or out of a fresh mount namespace.
pub fn make_mounts_private() -> Result<(), HelperError> {
    mount(None, Path::new("/"), None, MS_REC | MS_PRIVATE, None)
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
    let rc = mount_setattr(fd, recursive, attrs, 0);
    check(rc as libc::c_int, || {
        format!("set mount attributes on {}", what.display())
    })
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
    // kernel's layout and size.
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
    // SAFETY: plain syscall.
    let rc = unsafe { libc::setsid() };
    if rc < 0 {
        return Err(HelperError::call("setsid")(io::Error::last_os_error()));
    }
    Ok(())
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

/// Drops every capability outside [`KEPT_CAPS`] from the bounding set and the ambient and
/// inheritable sets, so that no exec (setuid root included) can regain them.
pub fn drop_capabilities() -> Result<(), HelperError> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if KEPT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: plain prctl calls.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(HelperError::call(format!("drop capability {cap}"))(
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: clears the ambient set; no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut caps = rustix::thread::capabilities(None).map_err(HelperError::call("capget"))?;
    caps.inheritable = rustix::thread::CapabilitySet::empty();
    rustix::thread::set_capabilities(None, caps).map_err(HelperError::call("capset"))
}

pub fn umount_detach(target: &Path) -> Result<(), HelperError> {
    let c = cstr(target)?;
    // SAFETY: valid path.
    check(
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) },
        || format!("unmount {}", target.display()),
    )
}

pub fn pivot_root_here() -> Result<(), HelperError> {
    let dot = c".";
    // SAFETY: raw syscall with valid strings; pivot_root(".", ".") stacks the old root on the
    // new one, and the detach below drops it.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(rc as libc::c_int, || "pivot_root".into())?;
    // SAFETY: valid string.
    check(
        unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) },
        || "detach the old root".into(),
    )
}

pub fn chdir(p: &Path) -> Result<(), HelperError> {
    let c = cstr(p)?;
    // SAFETY: valid path.
    check(unsafe { libc::chdir(c.as_ptr()) }, || {
        format!("chdir {}", p.display())
    })
}

pub fn sethostname(name: &str) -> Result<(), HelperError> {
    // SAFETY: pointer and length of a live string.
    check(
        unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) },
        || format!("sethostname {name}"),
    )
}

/// Sets supplementary groups, gid and uid (in that order, while still privileged).
pub fn set_credentials(uid: u32, gid: u32, groups: &[u32]) -> Result<(), HelperError> {
    // SAFETY: pointer and length of a live slice.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    // With a single-id mapping setgroups is denied; when the only group is the primary one
    // (all that mapping can offer) there is nothing to lose.
    if rc != 0 && groups.iter().any(|g| *g != gid) {
        return Err(HelperError::call(format!("setgroups {groups:?}"))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: plain syscalls.
    check(unsafe { libc::setresgid(gid, gid, gid) }, || {
        format!("setgid {gid}")
    })?;
    check(unsafe { libc::setresuid(uid, uid, uid) }, || {
        format!("setuid {uid}")
    })
}

/// Brings up `lo` in a fresh network namespace.
pub fn loopback_up() -> Result<(), HelperError> {
    // SAFETY: a socket for the ioctl, closed below; ifreq zeroed then named.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(HelperError::call("socket")(io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(HelperError::call("bring up lo")(err));
        }
    }
    Ok(())
}

/// Dies with `sig` when the parent exits.
pub fn die_with_parent(sig: libc::c_int) {
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
    }
}
