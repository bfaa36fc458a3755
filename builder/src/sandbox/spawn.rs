//! Starting a sandbox helper and talking to it: the child process with its descriptors placed,
//! the request and id maps, the answers, and the layer pipe's closing verdict.

use std::io::{BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::proto::{self, Go, Network, Reply, Request};
use super::{HELPERS, Sandbox, SandboxError, Stdio3, cancelled, helper, net};
use crate::error::{Error, Result};

pub(super) struct Helper {
    pub(super) child: Child,
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
    pub(super) fn recv(&mut self) -> Result<Reply> {
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
    pub(super) fn finish(&mut self) -> Result<()> {
        match self.recv()? {
            Reply::Done => Ok(()),
            Reply::Failed { .. } if cancelled() => Err(Error::Cancelled),
            Reply::Failed { message } => Err(Error::Sandbox(message)),
            other => Err(SandboxError::Unexpected(format!("{other:?}")).into()),
        }
    }
}

impl Sandbox {
    /// Starts the helper, sends `req`, writes the id maps and lets it go. (A step's cgroup is
    /// joined by its pid 1, not here: see `RunSpec::cgroup_procs`.)
    pub(super) fn spawn(
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
        if self.mapping.kind.helper_enters_userns() {
            cmd.arg(helper::ENTER_USERNS);
        }
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
            Reply::Failed { message } if self.mapping.kind.helper_enters_userns() => {
                return Err(Error::Sandbox(format!(
                    "cannot create a user namespace: {message}"
                )));
            }
            Reply::Failed { message } => return Err(Error::Sandbox(message)),
            other => return Err(SandboxError::Unexpected(format!("{other:?}")).into()),
        }
        self.mapping.write(h.child.id())?;
        if let Some(tools) = &net_tools {
            // The helper made its network namespace with its user namespace; the step starts
            // (at Go) only once the namespace is configured.
            h._net = Some(net::attach_any(
                tools,
                h.child.id(),
                self.mapping.kind.helper_enters_userns(),
            )?);
        }
        proto::send(&mut h.writer, &Go).map_err(|source| SandboxError::Helper {
            action: "write to",
            source,
        })?;
        Ok(h)
    }
}

/// A reader of the layer pipe that, at its end, collects the helper's verdict.
pub(super) struct Checked<'a> {
    pub(super) inner: &'a mut std::fs::File,
    pub(super) helper: &'a mut Helper,
    pub(super) verdict: Option<Result<()>>,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.verdict.is_none() {
            let v = self.helper.finish();
            if let Err(e) = &v {
                let msg = super::error::report(e);
                self.verdict = Some(v);
                return Err(std::io::Error::other(msg));
            }
            self.verdict = Some(v);
        }
        Ok(n)
    }
}

impl<'a> Checked<'a> {
    /// `sink` reads the helper's layer tar from `file`. The helper's verdict on the tar comes
    /// after its last byte: a failed diff must not store a layer, so it is checked before the
    /// sink's value is returned.
    pub(super) fn sink<T>(
        helper: &'a mut Helper,
        file: &'a mut std::fs::File,
        sink: super::LayerSink<'_, T>,
    ) -> Result<T> {
        let mut checked = Checked {
            inner: file,
            helper,
            verdict: None,
        };
        let v = sink(&mut checked)?;
        match checked.verdict.take() {
            Some(r) => r?,
            None => checked.helper.finish()?,
        }
        Ok(v)
    }
}

/// SIGTERM to a helper cairn spawned and still tracks (not yet waited for, so its pid is
/// still its own).
pub(super) fn terminate(pid: u32) {
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
