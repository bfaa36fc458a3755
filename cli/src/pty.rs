//! The terminal side of `cairn run -it`: the pseudo-terminal pair, raw mode on the user's terminal, and the byte relay between them.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::io::Errno;
#[cfg(test)]
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios, Winsize};

/// How often the relay wakes up with nothing to do, to notice a resized terminal or that
/// the caller is done.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The size of each direction's copy buffer.
const BUF_SIZE: usize = 16 * 1024;

/// The most the final drain copies once the caller is done: a background process that keeps
/// the slave open and keeps printing must not keep the relay alive for ever.
const DRAIN_LIMIT: usize = 1 << 20;

/// A pseudo-terminal pair; the slave is opened `O_NOCTTY|O_CLOEXEC` (the child dup2s it onto
/// 0, 1 and 2 and makes it its controlling terminal itself, see [`attach_child`]).
/// (The container's terminal is made inside it; this pair serves the relay's tests.)
#[cfg(test)]
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pseudo-terminal pair, both ends close-on-exec and neither one the caller's
/// controlling terminal.
#[cfg(test)]
pub fn open() -> io::Result<Pty> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // TIOCGPTPEER opens the slave through the master's own devpts instance instead of looking
    // up ptsname's path, which may name another instance in another mount namespace
    // (ioctl_tty(2)). Kernels before 4.13 lack it; fall back to the path there.
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(slave) => slave,
        Err(Errno::INVAL | Errno::NOTTY) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?
        }
        Err(err) => return Err(err.into()),
    };
    Ok(Pty { master, slave })
}

/// The window size of terminal `fd` as `(rows, cols)`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(fd).ok()?;
    Some((size.ws_row, size.ws_col))
}

/// Sets the window size of terminal `fd`; on a pty master this sends `SIGWINCH` to the
/// slave's foreground process group when the size changes.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, size)?)
}

/// Keeps a terminal in raw mode (`cfmakeraw` semantics) until dropped, which restores the
/// settings it had before.
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal's descriptor, so the guard does not borrow the caller's.
    fd: OwnedFd,
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing useful to do if this fails: the terminal is gone or was never ours.
        let _ = rustix::termios::tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}

/// Puts terminal `fd` in raw mode until the returned guard drops.
pub fn raw_mode(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
    let saved = rustix::termios::tcgetattr(fd)?;
    let mut raw = saved.clone();
    raw.make_raw();
    // Duplicate before changing anything, so a failure leaves the terminal as it was.
    let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    rustix::termios::tcsetattr(&fd, OptionalActions::Now, &raw)?;
    Ok(RawMode { fd, saved })
}

/// Makes terminal `fd` the calling process's controlling terminal and its standard input,
/// output and error: `setsid()`, `ioctl(TIOCSCTTY)`, then `dup2` onto 0, 1 and 2.
///
/// Meant for the child between `fork` and `exec`: it only makes system calls, allocates
/// nothing and is async-signal-safe. `setsid` fails with `EPERM` if the caller already leads
/// a process group (for example after `CommandExt::process_group(0)`).
#[cfg(test)]
pub fn attach_child(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::process::setsid()?;
    rustix::process::ioctl_tiocsctty(fd)?;
    rustix::stdio::dup2_stdin(fd)?;
    rustix::stdio::dup2_stdout(fd)?;
    rustix::stdio::dup2_stderr(fd)?;
    // dup2 onto itself is skipped and would not clear close-on-exec anyway: if the slave
    // already sits on 0, 1 or 2 it must stay open across exec.
    if std::os::fd::AsRawFd::as_raw_fd(&fd) <= 2 {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    Ok(())
}

/// Copies `input` to `master` and `master` to `output` until the master reads EOF or `EIO`
/// (every slave descriptor closed). See [`relay_until`].
#[cfg(test)]
pub fn relay(
    master: BorrowedFd<'_>,
    input: Option<BorrowedFd<'_>>,
    output: BorrowedFd<'_>,
) -> io::Result<()> {
    relay_until(master, input, output, &|| false)
}

/// Copies `input` to `master` and `master` to `output` until the master reads EOF or `EIO`
/// (every slave descriptor closed), or until `done()` says so.
///
/// `done` is asked whenever `poll` times out and at least every 200 ms; once it returns true
/// the relay copies what the master still has readable and returns. This covers a container
/// whose main process exited while a background process still holds the slave open.
///
/// When `input` reaches EOF the relay stops reading it but keeps the master open, since the
/// container may still print. If `input` is a terminal, its window size is copied to the
/// master at the start and whenever it changes (checked each time `poll` returns, so no
/// `SIGWINCH` handler is needed).
///
/// The master is made non-blocking for the duration (and restored after), so that input
/// waiting for a full pty never stops the relay from draining the container's output: a
/// blocking write there could deadlock against a container blocked writing to us.
pub fn relay_until(
    master: BorrowedFd<'_>,
    input: Option<BorrowedFd<'_>>,
    output: BorrowedFd<'_>,
    done: &dyn Fn() -> bool,
) -> io::Result<()> {
    let _nonblocking = NonBlocking::set(master)?;
    let size_source = input;
    let mut input = input;
    let mut last_size = None;
    let mut from_master = vec![0u8; BUF_SIZE];
    let mut from_input = vec![0u8; BUF_SIZE];
    // Bytes read from `input` but not yet written to the master: `from_input[start..end]`.
    let (mut start, mut end) = (0, 0);
    let timeout = Timespec::try_from(POLL_INTERVAL).map_err(io::Error::other)?;
    let mut last_done_check = Instant::now();

    loop {
        if let Some(source) = size_source
            && let Some(size) = window_size(source)
            && last_size != Some(size)
        {
            set_window_size(master, size.0, size.1)?;
            last_size = Some(size);
        }

        let pending = start < end;
        let mut master_events = PollFlags::IN;
        if pending {
            master_events |= PollFlags::OUT;
        }
        // Read no more input until the last read is in the pty: that is the back-pressure.
        let read_input = input.filter(|_| !pending);
        let mut fds = [
            PollFd::from_borrowed_fd(master, master_events),
            PollFd::from_borrowed_fd(read_input.unwrap_or(master), PollFlags::IN),
        ];
        let count = if read_input.is_some() { 2 } else { 1 };
        let ready = match rustix::event::poll(&mut fds[..count], Some(&timeout)) {
            Ok(ready) => ready,
            // A signal (SIGCHLD, SIGWINCH) is as good a moment as any to look at `done`.
            Err(Errno::INTR) => 0,
            Err(err) => return Err(err.into()),
        };
        if ready == 0 || last_done_check.elapsed() >= POLL_INTERVAL {
            last_done_check = Instant::now();
            if done() {
                return drain(master, output, &mut from_master);
            }
        }
        if ready == 0 {
            continue;
        }

        let master_ready = fds[0].revents();
        if master_ready.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            match rustix::io::read(master, &mut from_master[..]) {
                Ok(0) | Err(Errno::IO) => return Ok(()),
                Ok(n) => write_all(output, &from_master[..n])?,
                Err(Errno::INTR | Errno::AGAIN) => {}
                Err(err) => return Err(err.into()),
            }
        }
        if pending && master_ready.contains(PollFlags::OUT) {
            match rustix::io::write(master, &from_input[start..end]) {
                Ok(n) => start += n,
                // Every slave closed under us: the container is gone.
                Err(Errno::IO) => return Ok(()),
                Err(Errno::INTR | Errno::AGAIN) => {}
                Err(err) => return Err(err.into()),
            }
        }

        if let Some(fd) = read_input
            && !fds[1].revents().is_empty()
        {
            match rustix::io::read(fd, &mut from_input[..]) {
                Ok(0) => input = None,
                Ok(n) => (start, end) = (0, n),
                Err(Errno::INTR | Errno::AGAIN) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Copies what the (non-blocking) master has readable right now to `output`, up to
/// [`DRAIN_LIMIT`] bytes.
fn drain(master: BorrowedFd<'_>, output: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    let mut copied = 0;
    while copied < DRAIN_LIMIT {
        // n_tty_read flushes the pty's pending buffer work before answering EAGAIN, so what
        // the child wrote before exiting is readable here.
        match rustix::io::read(master, &mut *buf) {
            Ok(0) | Err(Errno::IO | Errno::AGAIN) => break,
            Ok(n) => {
                write_all(output, &buf[..n])?;
                copied += n;
            }
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Writes all of `buf` to `fd`, waiting for it to become writable if it is non-blocking.
fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Sets `O_NONBLOCK` on a descriptor until dropped, which puts its flags back.
struct NonBlocking<'fd> {
    fd: BorrowedFd<'fd>,
    saved: OFlags,
}

impl<'fd> NonBlocking<'fd> {
    fn set(fd: BorrowedFd<'fd>) -> io::Result<Self> {
        let saved = rustix::fs::fcntl_getfl(fd)?;
        rustix::fs::fcntl_setfl(fd, saved | OFlags::NONBLOCK)?;
        Ok(NonBlocking { fd, saved })
    }
}

impl Drop for NonBlocking<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::fcntl_setfl(self.fd, self.saved);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustix::termios::LocalModes;
    use std::cell::RefCell;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::fd::RawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::thread::JoinHandle;

    /// Starts `sh` with `args` on the pty's slave as its controlling terminal.
    fn spawn_on(pty: &Pty, args: &[&str]) -> Child {
        let slave: RawFd = std::os::fd::AsRawFd::as_raw_fd(&pty.slave);
        let mut command = Command::new("sh");
        command
            .args(args)
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        // SAFETY: attach_child only makes system calls, so it is safe between fork and exec;
        // `slave` is still open in the child then (it is only closed on exec).
        unsafe {
            command.pre_exec(move || attach_child(BorrowedFd::borrow_raw(slave)));
        }
        command.spawn().unwrap()
    }

    /// A pipe whose read end a thread collects until EOF.
    fn collector() -> (OwnedFd, JoinHandle<String>) {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            std::fs::File::from(read).read_to_string(&mut out).unwrap();
            out
        });
        (write, reader)
    }

    fn has_line(out: &str, want: &str) -> bool {
        out.lines().any(|line| line.trim_end_matches('\r') == want)
    }

    #[test]
    fn window_size_round_trips() {
        let pty = open().unwrap();
        set_window_size(pty.master.as_fd(), 33, 101).unwrap();
        assert_eq!(window_size(pty.slave.as_fd()), Some((33, 101)));
        assert_eq!(window_size(pty.master.as_fd()), Some((33, 101)));
        let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        assert_eq!(window_size(read.as_fd()), None);
    }

    #[test]
    fn raw_mode_is_undone_on_drop() {
        let pty = open().unwrap();
        let cooked = LocalModes::ICANON | LocalModes::ECHO;
        let modes = || rustix::termios::tcgetattr(&pty.slave).unwrap().local_modes;
        assert!(modes().contains(cooked));
        let guard = raw_mode(pty.slave.as_fd()).unwrap();
        assert!(!modes().intersects(cooked));
        drop(guard);
        assert!(modes().contains(cooked));
    }

    #[test]
    fn raw_mode_refuses_a_pipe() {
        let (read, _write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        assert!(raw_mode(read.as_fd()).is_err());
    }

    #[test]
    fn relays_a_shell_session_until_the_slave_closes() {
        let pty = open().unwrap();
        let mut child = spawn_on(&pty, &[]);
        let Pty { master, slave } = pty;
        drop(slave);

        let (input, feed) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let script = b"echo hi-$((40+2)); tty -s && echo is-a-tty; exit 7\n";
        write_all(feed.as_fd(), script).unwrap();
        drop(feed);
        let (output, reader) = collector();

        let relayed = relay(master.as_fd(), Some(input.as_fd()), output.as_fd());
        drop(output);
        let out = reader.join().unwrap();
        let status = child.wait().unwrap();

        assert!(relayed.is_ok(), "{relayed:?}");
        // The echoed command line holds `$((40+2))`, so only the shell can have printed this.
        assert!(out.contains("hi-42"), "{out:?}");
        assert!(has_line(&out, "is-a-tty"), "{out:?}");
        assert_eq!(status.code(), Some(7), "{out:?}");
    }

    #[test]
    fn relay_moves_more_than_the_pty_buffers_hold_both_ways() {
        // 200 KiB of lines through `cat`: both directions overflow the pty's 4 KiB buffers, so
        // a relay that blocked writing input while the child blocked writing output would hang
        // here. Echo is off (before anything arrives) because the line discipline may drop
        // echoes when its output is full; ^D at the start of a line is EOF for `cat`.
        let line = format!("{}\n", "x".repeat(99));
        let lines = 2048;
        let pty = open().unwrap();
        let mut termios = rustix::termios::tcgetattr(&pty.slave).unwrap();
        termios.local_modes -= LocalModes::ECHO;
        rustix::termios::tcsetattr(&pty.slave, OptionalActions::Now, &termios).unwrap();
        let mut child = spawn_on(&pty, &["-c", "exec cat"]);
        let Pty { master, slave } = pty;
        drop(slave);
        let (input, feed) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let script = format!("{}\u{4}", line.repeat(lines));
        let feeder = std::thread::spawn(move || write_all(feed.as_fd(), script.as_bytes()));
        let (output, reader) = collector();
        relay(master.as_fd(), Some(input.as_fd()), output.as_fd()).unwrap();
        drop(output);
        let out = reader.join().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(child.wait().unwrap().success());
        let want = line.trim_end();
        assert_eq!(out.lines().filter(|l| l.trim_end() == want).count(), lines);
    }

    #[test]
    fn child_gets_a_controlling_terminal() {
        let pty = open().unwrap();
        // Opening /dev/tty fails with ENXIO without a controlling terminal.
        let mut child = spawn_on(&pty, &["-c", ": </dev/tty && echo has-ctty"]);
        let Pty { master, slave } = pty;
        drop(slave);
        let (output, reader) = collector();
        relay(master.as_fd(), None, output.as_fd()).unwrap();
        drop(output);
        let out = reader.join().unwrap();
        assert!(child.wait().unwrap().success(), "{out:?}");
        assert!(has_line(&out, "has-ctty"), "{out:?}");
    }

    #[test]
    fn relay_until_stops_when_done_though_the_slave_stays_open() {
        let pty = open().unwrap();
        let child = RefCell::new(spawn_on(&pty, &["-c", "echo bye-$((1+1))"]));
        // The parent keeps its slave open: the master never reads EIO.
        let (output, reader) = collector();
        let started = Instant::now();
        let exited = || child.borrow_mut().try_wait().unwrap().is_some();
        relay_until(pty.master.as_fd(), None, output.as_fd(), &exited).unwrap();
        drop(output);
        let out = reader.join().unwrap();
        assert!(out.contains("bye-2"), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(window_size(pty.slave.as_fd()).is_some());
    }

    #[test]
    fn relay_copies_the_input_window_size() {
        let pty = open().unwrap();
        let user = open().unwrap();
        set_window_size(user.master.as_fd(), 24, 132).unwrap();
        let (output, reader) = collector();
        let calls = std::cell::Cell::new(0);
        // Done at the first chance: the window size is copied before the first poll.
        let done = || {
            calls.set(calls.get() + 1);
            true
        };
        relay_until(
            pty.master.as_fd(),
            Some(user.slave.as_fd()),
            output.as_fd(),
            &done,
        )
        .unwrap();
        drop(output);
        reader.join().unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(window_size(pty.slave.as_fd()), Some((24, 132)));
    }
}
