//! The isolation ladder: which of user namespaces, root's namespaces or a chroot a build's
//! steps get, probed once per build from what this process may do, and the one line that
//! says what was chosen and why the stronger rungs were not.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The `--isolation` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The strongest mode the probe finds.
    #[default]
    Auto,
    Mode(Mode),
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "" => Ok(Isolation::Auto),
            "userns" => Ok(Isolation::Mode(Mode::Userns)),
            "rootful" => Ok(Isolation::Mode(Mode::Rootful)),
            "chroot" => Ok(Isolation::Mode(Mode::Chroot)),
            _ => Err(format!(
                "unknown isolation {s:?} (expected auto, userns, rootful or chroot)"
            )),
        }
    }
}

/// A rung of the ladder, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    /// User, mount, pid, uts, ipc and network namespaces; the step's ids are mapped to an
    /// unprivileged range.
    Userns,
    /// Root with `CAP_SYS_ADMIN` but no user namespaces: the same namespaces but the user
    /// one; the step is root with Docker's default capabilities.
    Rootful,
    /// No namespace at all: a copy of the root filesystem, chrooted into.
    Chroot,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Userns, Mode::Rootful, Mode::Chroot];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Userns => "userns",
            Mode::Rootful => "rootful",
            Mode::Chroot => "chroot",
        }
    }

    /// What a step in this mode does not have that a `userns` step has.
    pub fn lacks(self) -> &'static [&'static str] {
        match self {
            Mode::Userns => &[],
            Mode::Rootful => &[
                "id mapping (root in a step is the root cairn runs as, with Docker's default \
                 capabilities)",
            ],
            Mode::Chroot => &[
                "/proc of its own",
                "pid namespace",
                "network namespace (it shares cairn's network)",
                "id mapping",
            ],
        }
    }
}

/// Why a rung cannot be used here: the call that failed and how, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// What was tried: `unshare(CLONE_NEWUSER) = EPERM`, or a missing capability.
    pub tried: String,
    /// What would allow it.
    pub fix: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.tried, self.fix)
    }
}

/// What the probe found for every rung.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub userns: Result<(), Refusal>,
    pub rootful: Result<(), Refusal>,
    pub chroot: Result<(), Refusal>,
}

/// The mode a build uses, and the line that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub mode: Mode,
    /// For `auto`: why each stronger rung was passed over.
    pub passed_over: Vec<(Mode, Refusal)>,
}

impl Chosen {
    /// `isolation: chroot (userns: unshare(CLONE_NEWUSER) = EPERM; rootful: no
    /// CAP_SYS_ADMIN); a step has no ...`.
    pub fn line(&self) -> String {
        let mut s = format!("isolation: {}", self.mode.name());
        if !self.passed_over.is_empty() {
            let why: Vec<String> = self
                .passed_over
                .iter()
                .map(|(m, r)| format!("{}: {}", m.name(), r.tried))
                .collect();
            s.push_str(&format!(" ({})", why.join("; ")));
        }
        let lacks = self.mode.lacks();
        if !lacks.is_empty() {
            s.push_str(&format!("; a step has no {}", lacks.join(", no ")));
        }
        s
    }
}

impl Probe {
    /// Tries each rung as this process: forked children make the calls a step's set-up
    /// makes (a threaded process may not unshare a user namespace); `node` is a path of
    /// cairn's scratch space where a device node may be tried.
    pub fn run(node: &Path) -> Probe {
        let caps = Caps::read();
        let root = rustix::process::geteuid().is_root();
        Probe {
            userns: probe_userns(root, &caps),
            rootful: probe_rootful(root, &caps),
            chroot: probe_chroot(&caps, node),
        }
    }

    pub fn get(&self, mode: Mode) -> &Result<(), Refusal> {
        match mode {
            Mode::Userns => &self.userns,
            Mode::Rootful => &self.rootful,
            Mode::Chroot => &self.chroot,
        }
    }

    /// The rung for `wanted`: the one asked for, or for `auto` the strongest that works.
    pub fn choose(&self, wanted: Isolation) -> Result<Chosen, String> {
        match wanted {
            Isolation::Mode(mode) => match self.get(mode) {
                Ok(()) => Ok(Chosen {
                    mode,
                    passed_over: Vec::new(),
                }),
                Err(r) => Err(format!(
                    "isolation {} is not available here: {r}",
                    mode.name()
                )),
            },
            Isolation::Auto => {
                let mut passed_over = Vec::new();
                for mode in Mode::ALL {
                    match self.get(mode) {
                        Ok(()) => return Ok(Chosen { mode, passed_over }),
                        Err(r) => passed_over.push((mode, r.clone())),
                    }
                }
                let tried: Vec<String> = passed_over
                    .iter()
                    .map(|(m, r)| format!("{}: {r}", m.name()))
                    .collect();
                Err(format!(
                    "RUN cannot be isolated here, so it cannot run (a build without RUN still \
                     works); tried {}",
                    tried.join("; ")
                ))
            }
        }
    }
}

/// The capabilities this process holds (its effective set).
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps(u64);

/// Capability numbers (linux/capability.h).
pub(super) const CAP_SYS_CHROOT: u32 = 18;
pub(super) const CAP_SYS_ADMIN: u32 = 21;

impl Caps {
    pub(super) fn read() -> Caps {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap_or(0);
        Caps(eff)
    }

    pub(super) fn has(self, cap: u32) -> bool {
        self.0 & (1 << cap) != 0
    }
}

/// Whether root's helper can stay in this user namespace and mount (it holds
/// `CAP_SYS_ADMIN`), or must make a user namespace of its own first (a container's root).
pub(super) fn root_can_mount() -> bool {
    rustix::process::geteuid().is_root() && Caps::read().has(CAP_SYS_ADMIN)
}

const FIX_USERNS: &str = "allow user namespaces (sysctl user.max_user_namespaces > 0, \
    kernel.unprivileged_userns_clone=1, kernel.apparmor_restrict_unprivileged_userns=0), and in a \
    container a seccomp profile that allows unshare, mount and setns (docker run --security-opt \
    seccomp=unconfined; Kubernetes: hostUsers: false, or securityContext.seccompProfile \
    Unconfined)";
const FIX_PROC: &str = "give the container an unmasked /proc (docker run --security-opt \
    systempaths=unconfined; Kubernetes: securityContext.procMount: Unmasked with hostUsers: false)";
const FIX_ROOTFUL: &str = "run cairn as root with CAP_SYS_ADMIN (a privileged container: docker \
    run --privileged, or Kubernetes securityContext.privileged: true)";
const FIX_CHROOT: &str = "run cairn as root with CAP_SYS_CHROOT and CAP_MKNOD (docker run \
    keeps both by default; Kubernetes: securityContext.capabilities.add: [SYS_CHROOT, MKNOD])";

/// The user-namespace rung: root that can mount needs only a user namespace for its steps'
/// pid 1; anyone else must also mount a /proc from inside one.
fn probe_userns(root: bool, caps: &Caps) -> Result<(), Refusal> {
    if root && caps.has(CAP_SYS_ADMIN) {
        return in_child(&[Stage::Unshare(libc::CLONE_NEWUSER)], FIX_USERNS);
    }
    in_child(
        &[
            Stage::Unshare(libc::CLONE_NEWUSER),
            Stage::Unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID),
            Stage::Private,
            Stage::ForkMountProc,
        ],
        FIX_USERNS,
    )
    .map_err(|r| {
        if r.tried.starts_with("mount(proc") {
            Refusal {
                tried: r.tried,
                fix: FIX_PROC,
            }
        } else {
            r
        }
    })
}

fn probe_rootful(root: bool, caps: &Caps) -> Result<(), Refusal> {
    if !root || !caps.has(CAP_SYS_ADMIN) {
        return Err(Refusal {
            tried: if root {
                "no CAP_SYS_ADMIN".into()
            } else {
                "not root".into()
            },
            fix: FIX_ROOTFUL,
        });
    }
    in_child(
        &[
            Stage::Unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID),
            Stage::Private,
            Stage::ForkMountProc,
        ],
        FIX_ROOTFUL,
    )
}

/// The chroot rung: chroot itself, and the device nodes a step's /dev needs (a user
/// namespace's root holds CAP_MKNOD in name only).
fn probe_chroot(caps: &Caps, node: &Path) -> Result<(), Refusal> {
    let refusal = |tried: String| Refusal {
        tried,
        fix: FIX_CHROOT,
    };
    if !caps.has(CAP_SYS_CHROOT) {
        return Err(refusal("no CAP_SYS_CHROOT".into()));
    }
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 3),
    );
    let _ = std::fs::remove_file(node);
    made.map_err(|e| {
        let name = errno_name(e.raw_os_error()).map_or_else(|| e.to_string(), str::to_owned);
        refusal(format!("mknod(/dev/null) = {name}"))
    })
}

/// One call of a probe.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Unshare(libc::c_int),
    /// Mounts made private, as the helper does first in its mount namespace.
    Private,
    /// A child (pid 1 of the new pid namespace) mounts a procfs over /proc.
    ForkMountProc,
}

impl Stage {
    fn describe(self, errno: i32) -> String {
        let e = rustix::io::Errno::from_raw_os_error(errno);
        let name = errno_name(errno).map_or_else(|| e.to_string(), str::to_owned);
        match self {
            Stage::Unshare(f) => format!("unshare({}) = {name}", clone_flags(f)),
            Stage::Private => format!("mount(/, MS_REC|MS_PRIVATE) = {name}"),
            Stage::ForkMountProc => format!("mount(proc) in a new pid namespace = {name}"),
        }
    }
}

fn clone_flags(f: libc::c_int) -> String {
    let names = [
        (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
        (libc::CLONE_NEWNS, "CLONE_NEWNS"),
        (libc::CLONE_NEWPID, "CLONE_NEWPID"),
    ];
    names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// The symbolic name of the errnos these calls fail with.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC (user.max_user_namespaces reached, or 0)",
        libc::ENOMEM => "ENOMEM",
        libc::EUSERS => "EUSERS",
        libc::ENOSYS => "ENOSYS",
        _ => return None,
    })
}

/// Runs `stages` in a forked child; the first failure, as the refusal.
fn in_child(stages: &[Stage], fix: &'static str) -> Result<(), Refusal> {
    let refusal = |tried: String| Refusal { tried, fix };
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| refusal(format!("pipe: {e}")))?;
    // SAFETY: the child makes only system calls (unshare, mount, fork, wait, write) and
    // leaves through _exit, so forking a threaded process is sound; no allocation happens
    // between fork and _exit (the stages are read from memory the parent prepared).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(refusal(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(r);
        let report = |i: usize, errno: i32| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&(i as u32).to_ne_bytes());
            b[4..].copy_from_slice(&errno.to_ne_bytes());
            let _ = rustix::io::write(&w, &b);
        };
        for (i, s) in stages.iter().enumerate() {
            if let Err(errno) = stage(*s) {
                report(i, errno);
                // SAFETY: leaving the forked child without the parent's destructors.
                unsafe { libc::_exit(1) }
            }
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }
    drop(w);
    let mut b = [0u8; 8];
    let n = rustix::io::read(&r, &mut b).unwrap_or(0);
    let mut status = 0;
    // SAFETY: waiting for the child forked above, with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n == 8 {
        let i = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let errno = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        if let Some(s) = stages.get(i) {
            return Err(refusal(s.describe(errno)));
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(refusal(format!("the probe ended with status {status:#x}")))
    }
}

/// One stage in the probing child: raw calls only (it was forked from a threaded process).
fn stage(s: Stage) -> Result<(), i32> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: plain system calls with constant, NUL-terminated arguments.
    unsafe {
        match s {
            Stage::Unshare(flags) => {
                if libc::unshare(flags) != 0 {
                    return Err(errno());
                }
            }
            Stage::Private => {
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(errno());
                }
            }
            Stage::ForkMountProc => {
                let pid = libc::fork();
                if pid < 0 {
                    return Err(errno());
                }
                if pid == 0 {
                    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                    let rc = libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        flags,
                        std::ptr::null(),
                    );
                    libc::_exit(if rc == 0 { 0 } else { errno().clamp(1, 255) });
                }
                let mut status = 0;
                if libc::waitpid(pid, &mut status, 0) < 0 {
                    return Err(errno());
                }
                if !libc::WIFEXITED(status) {
                    return Err(libc::EINTR);
                }
                match libc::WEXITSTATUS(status) {
                    0 => {}
                    e => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(tried: &str) -> Result<(), Refusal> {
        Err(Refusal {
            tried: tried.into(),
            fix: "fix it",
        })
    }

    #[test]
    fn auto_takes_the_strongest_rung_and_says_why_not_the_others() {
        let cases = [
            (Ok(()), Ok(()), Ok(()), Some("isolation: userns")),
            (
                refused("unshare(CLONE_NEWUSER) = EPERM"),
                Ok(()),
                Ok(()),
                Some(
                    "isolation: rootful (userns: unshare(CLONE_NEWUSER) = EPERM); a step has no \
                     id mapping",
                ),
            ),
            (
                refused("unshare(CLONE_NEWUSER) = EPERM"),
                refused("no CAP_SYS_ADMIN"),
                Ok(()),
                Some(
                    "isolation: chroot (userns: unshare(CLONE_NEWUSER) = EPERM; rootful: no \
                     CAP_SYS_ADMIN); a step has no /proc of its own, no pid namespace",
                ),
            ),
            (refused("a"), refused("b"), refused("c"), None),
        ];
        for (userns, rootful, chroot, want) in cases {
            let p = Probe {
                userns,
                rootful,
                chroot,
            };
            match (p.choose(Isolation::Auto), want) {
                (Ok(c), Some(w)) => assert!(c.line().starts_with(w), "{} vs {w}", c.line()),
                (Err(e), None) => {
                    assert!(
                        e.contains("userns: a; fix it") && e.contains("chroot: c"),
                        "{e}"
                    )
                }
                (got, want) => panic!("{got:?} for {want:?}"),
            }
        }
    }

    #[test]
    fn an_asked_for_rung_is_used_or_refused_with_its_reason() {
        let p = Probe {
            userns: refused("unshare(CLONE_NEWUSER) = EPERM"),
            rootful: Ok(()),
            chroot: Ok(()),
        };
        let e = p.choose(Isolation::Mode(Mode::Userns)).unwrap_err();
        assert_eq!(
            e,
            "isolation userns is not available here: unshare(CLONE_NEWUSER) = EPERM; fix it"
        );
        let c = p.choose(Isolation::Mode(Mode::Chroot)).unwrap();
        assert_eq!((c.mode, c.passed_over.len()), (Mode::Chroot, 0));
        for (s, want) in [
            ("auto", Isolation::Auto),
            ("chroot", Isolation::Mode(Mode::Chroot)),
        ] {
            assert_eq!(s.parse::<Isolation>().unwrap(), want);
        }
        assert!("jail".parse::<Isolation>().is_err());
    }

    #[test]
    fn this_machine_offers_every_rung_to_root_and_user_namespaces_to_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let p = Probe::run(&dir.path().join("node"));
        assert_eq!(p.userns, Ok(()), "{p:?}");
        let root = rustix::process::geteuid().is_root();
        assert_eq!(p.rootful.is_ok(), root, "{p:?}");
        assert_eq!(p.chroot.is_ok(), root, "{p:?}");
    }
}
