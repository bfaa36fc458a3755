//! A detached container's monitor: cairn re-executed as `cairn __monitor ID` in a session of
//! its own (as conmon is), outliving the `cairn run -d` that started it, telling it on a pipe
//! when the container runs or why it could not.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sandbox::SandboxError;

/// The hidden command the monitor runs as.
pub const ARG: &str = "__monitor";
/// The descriptor the monitor says "ok" (or why not) on, then closes.
pub const READY_FD: i32 = 3;

/// Starts the monitor of container `id` of the store at `root`; the pipe its answer comes on.
/// The monitor is never waited for: it belongs to no one once cairn exits.
pub fn spawn(exe: &Path, root: &Path, id: &str) -> Result<std::fs::File> {
    let (ready_r, ready_w): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(SandboxError::os("make a pipe"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .arg(ARG)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let w = ready_w.as_raw_fd();
    // SAFETY: between fork and exec only setsid, fcntl and dup2 run, all async-signal-safe,
    // on a descriptor this process keeps open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: the terminal's hangup and ^C never reach it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if w == READY_FD {
                let flags = libc::fcntl(w, libc::F_GETFD);
                if flags < 0 || libc::fcntl(w, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(w, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| Error::Io {
        action: "start the container's monitor",
        path: exe.to_path_buf(),
        source,
    })?;
    drop(cmd);
    drop(ready_w);
    Ok(ready_r.into())
}

/// The monitor's end of the pipe, taken once and kept from the processes it starts.
pub fn ready_pipe() -> Result<std::fs::File> {
    // SAFETY: `spawn` placed the pipe on READY_FD before exec; nothing else claims it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(READY_FD) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(SandboxError::os("set close-on-exec"))?;
    Ok(fd.into())
}
