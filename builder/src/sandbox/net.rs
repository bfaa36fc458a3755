//! A step's own network: user-mode networking (slirp4netns, else pasta) attached from outside
//! to the helper's user and network namespaces, as podman does. The step reaches the outside
//! world through the host's sockets, but never the host's loopback (its local services) or its
//! abstract unix sockets, which belong to the host's network namespace.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::SandboxError;
use crate::error::Result;

/// The step's address, its gateway and its DNS forwarder: slirp4netns's fixed ones, given to
/// pasta too, so that the host's own addresses stay outside addresses for the step (pasta
/// would otherwise copy the host's address into the namespace, and the host's address would
/// then be the step's own).
pub const GUEST: &str = "10.0.2.100";
pub const GATEWAY: &str = "10.0.2.2";
pub const DNS: &str = "10.0.2.3";
const GUEST6: &str = "fd0a:c41e::100";
const GATEWAY6: &str = "fd0a:c41e::2";

/// How long a networking process may take to set the namespace up.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The user-mode networking program found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Pasta(PathBuf),
    Slirp4netns(PathBuf),
}

impl Tool {
    /// The tools installed here, slirp4netns first (pasta for users only);
    /// `CAIRN_USERNET=pasta|slirp4netns` keeps only that one. An error naming both packages when there is none (never a silent fallback to
    /// the host's network).
    pub fn available() -> Result<Vec<Tool>> {
        const TUN: &str = "/dev/net/tun";
        static FOUND: OnceLock<Vec<Tool>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let dirs: Vec<PathBuf> = std::env::split_paths(&path)
                .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
                .collect();
            let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p));
            let only = std::env::var("CAIRN_USERNET").ok();
            let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
            let mut tools = Vec::new();
            // slirp4netns first: a step costs it a few milliseconds, pasta tens (it tears a
            // tap device down when the step ends). pasta also refuses to work as root.
            if wanted("slirp4netns")
                && let Some(p) = find("slirp4netns")
            {
                tools.push(Tool::Slirp4netns(p));
            }
            if wanted("pasta")
                && !rustix::process::geteuid().is_root()
                && let Some(p) = find("pasta")
            {
                tools.push(Tool::Pasta(p));
            }
            tools
        });
        if found.is_empty() {
            return Err(SandboxError::Host(
                "a RUN step's network needs pasta (Debian package passt) or slirp4netns, \
                 and neither is installed; install one, or share cairn's network with \
                 `--network host --allow network.host`, or use RUN --network=none"
                    .into(),
            )
            .into());
        }
        // Both make the step's interface through the tun device; a container without it
        // (Docker's default) would fail inside the tool with a less telling message.
        if std::fs::metadata(TUN).is_err() {
            return Err(SandboxError::Host(format!(
                "a RUN step's network needs {TUN}, which is not here (a container gets it with \
                 `docker run --device {TUN}`); or share cairn's network with \
                 `--network host --allow network.host`, or use RUN --network=none"
            ))
            .into());
        }
        Ok(found.clone())
    }

    fn name(&self) -> &'static str {
        match self {
            Tool::Pasta(_) => "pasta",
            Tool::Slirp4netns(_) => "slirp4netns",
        }
    }
}

/// Starts the first of `tools` that works on the network namespace of `pid`. pasta needs a
/// host interface with a route (it derives its setup from one); slirp4netns does not. A tool that failed once is not tried again.
pub fn attach_any(tools: &[Tool], pid: u32, helper_userns: bool) -> Result<Net> {
    static FAILED: std::sync::Mutex<Vec<Tool>> = std::sync::Mutex::new(Vec::new());
    let mut errors = Vec::new();
    for tool in tools {
        let failed = FAILED.lock().map(|f| f.contains(tool)).unwrap_or(false);
        if failed && tool != tools.last().unwrap_or(tool) {
            continue;
        }
        match attach(tool, pid, helper_userns) {
            Ok(net) => return Ok(net),
            Err(e) => {
                if let Ok(mut f) = FAILED.lock() {
                    f.push(tool.clone());
                }
                errors.push(super::error::report(&e));
            }
        }
    }
    Err(SandboxError::Networks(errors).into())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running networking process, killed when dropped and reaped on a thread of its own (it
/// also dies with cairn: its parent-death signal is SIGKILL).
#[derive(Debug)]
pub struct Net {
    child: Option<Child>,
    /// slirp4netns exits when this closes.
    _exit: Option<OwnedFd>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            // Its tap device goes with it, which takes the kernel tens of milliseconds: the
            // next step need not wait for that.
            // (Without a thread to spare, the zombie is gone when cairn exits.)
            let _ = std::thread::Builder::new()
                .name("cairn-net-reap".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
    }
}

/// Whether the host routes IPv6 anywhere (pasta refuses an IPv6 address without it).
fn host_has_ipv6_route() -> bool {
    std::fs::read_to_string("/proc/net/ipv6_route").is_ok_and(|t| {
        t.lines()
            .any(|l| l.starts_with("00000000000000000000000000000000 00 "))
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::os("make a pipe")(e).into())
}

/// Starts `tool` on the network namespace of `pid` (the helper, inside its user namespace)
/// and waits until the namespace is configured.
fn attach(tool: &Tool, pid: u32, helper_userns: bool) -> Result<Net> {
    let (ready_r, ready_w) = pipe()?;
    let ready_fd = ready_w.as_raw_fd();
    let mut keep = vec![ready_fd];
    let mut exit_ours = None;
    let mut cmd;
    match tool {
        Tool::Pasta(bin) => {
            cmd = Command::new(bin);
            cmd.args(["--config-net", "--foreground", "--quiet"]);
            // No port forwarding either way: -T/-U would bring the host's loopback ports into
            // the namespace's loopback, and --no-map-gw keeps the gateway from being the host.
            cmd.args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
                .arg("--no-map-gw")
                .args(["-a", GUEST, "-n", "24", "-g", GATEWAY]);
            if host_has_ipv6_route() {
                cmd.args(["-a", GUEST6, "-g", GATEWAY6]);
            }
            // pasta writes its pid once initialisation is done: that is the readiness signal.
            cmd.args(["--dns-forward", DNS])
                .arg("--pid")
                .arg(format!("/proc/self/fd/{ready_fd}"))
                .arg(pid.to_string());
        }
        Tool::Slirp4netns(bin) => {
            let (exit_r, exit_w) = pipe()?;
            keep.push(exit_r.as_raw_fd());
            cmd = Command::new(bin);
            cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"]);
            // Root's helper makes no user namespace (see `RunSpec::userns`): its network
            // namespace is joined from the host's, which setns would refuse to join again. A
            // helper with a user namespace of its own (a user's, or a container's root's) is
            // joined through it: setns wants CAP_SYS_ADMIN over the namespace's owner too.
            if helper_userns {
                cmd.arg(format!("--userns-path=/proc/{pid}/ns/user"));
            }
            cmd.arg(format!("--ready-fd={ready_fd}"))
                .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
                .args(["--netns-type=path"])
                .arg(format!("/proc/{pid}/ns/net"))
                .arg("tap0");
            exit_ours = Some((exit_r, exit_w));
        }
    }
    // Its messages go to a memory file, read only when it fails: a pipe nobody reads could
    // fill and stall it mid-build.
    let log = rustix::fs::memfd_create("cairn-net-log", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(SandboxError::os("make the network tool's log file"))?;
    let log = std::fs::File::from(log);
    let log_out = log
        .try_clone()
        .map_err(SandboxError::os("copy a descriptor"))?;
    let log_err = log
        .try_clone()
        .map_err(SandboxError::os("copy a descriptor"))?;
    cmd.stdin(Stdio::null()).stdout(log_out).stderr(log_err);
    // SAFETY: the closure runs between fork and exec: it only calls fcntl on descriptors
    // this function keeps open until after the spawn, and prctl: both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Dies with cairn even when cairn is killed outright.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SandboxError::NetworkStart {
        tool: tool.name(),
        source,
    })?;
    drop(cmd);
    drop(ready_w);
    let (exit_r, exit_w) = match exit_ours {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    drop(exit_r);
    let mut child = child;
    match wait_ready(&ready_r, &mut child) {
        Ok(()) => Ok(Net {
            child: Some(child),
            _exit: exit_w,
        }),
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            let mut buf = vec![0u8; 4096];
            if let Ok(n) = log.read_at(&mut buf, 0) {
                text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            }
            let said = if text.is_empty() {
                String::new()
            } else {
                format!(": {}", text.replace('\n', "; "))
            };
            Err(SandboxError::Network {
                tool: tool.name(),
                why,
                said,
            }
            .into())
        }
    }
}

/// Waits for the first bytes on the readiness pipe; its end without any means the tool failed.
fn wait_ready(ready: &OwnedFd, child: &mut Child) -> std::result::Result<(), String> {
    use rustix::event::{PollFd, PollFlags, poll};
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not ready after {} s", READY_WITHIN.as_secs()));
        }
        let mut fds = [PollFd::new(ready, PollFlags::IN)];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        match poll(&mut fds, Some(&ts)) {
            Err(rustix::io::Errno::INTR) | Ok(0) => continue,
            Err(e) => return Err(format!("poll: {e}")),
            Ok(_) => {}
        }
        let mut byte = [0u8; 64];
        let mut f = std::fs::File::from(
            ready
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e.to_string())?,
        );
        return match f.read(&mut byte) {
            Ok(n) if n > 0 => Ok(()),
            _ => match child.wait() {
                Ok(status) => Err(format!("it exited: {status}")),
                Err(e) => Err(e.to_string()),
            },
        };
    }
}

/// The step's /etc/resolv.conf: the host's search and options, with the DNS forwarder as its
/// only nameserver. The forwarder asks the host's own resolver, whatever that is: a loopback
/// one (a local cache) is unreachable from the step's namespace, and pasta does not relay UDP
/// to every resolver address as it relays to its forwarder.
pub fn resolv_conf(host: &str) -> String {
    let mut out = format!("nameserver {DNS}\n");
    for line in host.lines() {
        if line.split_whitespace().next() != Some("nameserver") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarder_is_the_only_nameserver() {
        let cases = [
            (
                "nameserver 127.0.0.53\noptions edns0\n",
                "nameserver 10.0.2.3\noptions edns0\n",
            ),
            ("nameserver 192.0.2.53\n", "nameserver 10.0.2.3\n"),
            (
                "nameserver ::1\nnameserver 127.0.0.1\nsearch x\n",
                "nameserver 10.0.2.3\nsearch x\n",
            ),
            ("", "nameserver 10.0.2.3\n"),
            ("# none\n", "nameserver 10.0.2.3\n# none\n"),
        ];
        for (host, want) in cases {
            assert_eq!(resolv_conf(host), want, "{host:?}");
        }
    }
}
