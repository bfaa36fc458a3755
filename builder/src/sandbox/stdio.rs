//! A step's standard streams: where they go, the container terminal handed back to cairn,
//! and output cut into bounded lines (with the last few kept for an error message).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// The standard streams of a step's process.
#[derive(Debug)]
pub enum Stdio3 {
    /// stdin from /dev/null; stdout and stderr merged and handed line by line to a callback.
    Capture,
    /// cairn's own streams (`cairn run`).
    Inherit,
    /// Given descriptors.
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal of the container's own (`cairn run -t`): its master arrives on this Unix
    /// socket (SCM_RIGHTS, see [`receive_console`]) once the container has made it.
    Console(OwnedFd),
}

/// Waits on the socket given as [`Stdio3::Console`] for the container terminal's master;
/// `None` when the container ended without making one.
pub fn receive_console(sock: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    loop {
        let r = rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC,
        );
        match r {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => break,
        }
    }
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(Some(fd));
        }
    }
    Ok(None)
}

/// The longest piece of output passed on as one line: a process that prints an endless line
/// must not make cairn hold it whole.
pub const MAX_LINE: usize = 64 << 10;

/// Passes each line of `r` to `on_line` without its line ending; a line longer than
/// `max` bytes is passed on in pieces of at most that many, cut between characters.
pub(super) fn read_lines(r: impl Read, max: usize, on_line: &(dyn Fn(&str) + Sync)) {
    let mut lines = BufReader::new(r);
    let mut buf = Vec::with_capacity(max);
    loop {
        let room = (max - buf.len()) as u64;
        match (&mut lines).take(room).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    on_line(&String::from_utf8_lossy(&buf));
                }
                break;
            }
            Ok(_) if buf.ends_with(b"\n") => {
                let text = String::from_utf8_lossy(&buf);
                on_line(text.trim_end_matches(['\n', '\r']));
                buf.clear();
            }
            Ok(_) if buf.len() < max => {}
            Ok(_) => {
                // Cut before a character split at the bound; its bytes start the next piece.
                let cut = utf8_cut(&buf);
                on_line(&String::from_utf8_lossy(&buf[..cut]));
                buf.drain(..cut);
                // A line of exactly the bound ends here, not in an empty piece after it.
                if buf.is_empty() && lines.fill_buf().is_ok_and(|b| b.first() == Some(&b'\n')) {
                    lines.consume(1);
                }
            }
        }
    }
}

/// Where to cut `buf` so that no UTF-8 character is split: before a sequence that its last
/// bytes start but do not finish, else at its end.
fn utf8_cut(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let b = buf[buf.len() - back];
        if b & 0xC0 != 0x80 {
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            // A piece is never empty, or the reader would make no progress.
            return if need > back && buf.len() > back {
                buf.len() - back
            } else {
                buf.len()
            };
        }
    }
    buf.len()
}

/// The last `n` lines of output, kept for the error message of a failed step.
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
}

impl Tail {
    pub const KEEP: usize = 10;

    pub fn push(&self, line: &str) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == Self::KEEP {
                l.pop_front();
            }
            l.push_back(line.to_owned());
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cuts_between_characters() {
        let cases: [(&[u8], usize); 8] = [
            (b"abc", 3),
            (b"ab\xC3", 2),
            ("aé".as_bytes(), 3),
            (b"a\xE2\x82", 1),
            (b"a\xF0\x9F\x98", 1),
            ("a😀".as_bytes(), 5),
            (b"\xC3", 1),
            (b"\x80\x80\x80\x80", 4),
        ];
        for (buf, want) in cases {
            assert_eq!(utf8_cut(buf), want, "{buf:?}");
        }
    }

    #[test]
    fn long_lines_come_in_bounded_pieces() {
        let cases: [(&[u8], &[&str]); 8] = [
            (b"", &[]),
            (b"one\ntwo\r\n", &["one", "two"]),
            (b"no newline", &["no newl", "ine"]),
            (b"abcdefghijklmnopq\nr", &["abcdefg", "hijklmn", "opq", "r"]),
            (b"1234567\n", &["1234567"]),
            (b"1234567\n\nx", &["1234567", "", "x"]),
            ("abcdeé€x".as_bytes(), &["abcdeé", "€x"]),
            (b"abcdef\xE2\x82\xAC\n", &["abcdef", "€"]),
        ];
        for (input, want) in cases {
            let got = Mutex::new(Vec::new());
            read_lines(input, 7, &|l: &str| got.lock().unwrap().push(l.to_owned()));
            assert_eq!(got.into_inner().unwrap(), want, "{input:?}");
        }
    }
}
