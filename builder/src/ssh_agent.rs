//! RUN `--mount=type=ssh`: a socket of cairn's, in the step's run directory, that relays the
//! step's requests to the build's ssh agent. Only listing keys and signing pass, as BuildKit's
//! read-only agent lets them: a step can use the keys, never add, remove or lock them, nor
//! reach the agent's extensions.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// SSH_AGENTC_REQUEST_IDENTITIES and SSH_AGENTC_SIGN_REQUEST (draft-miller-ssh-agent).
const ALLOWED: [u8; 2] = [11, 13];
/// SSH_AGENT_FAILURE, the answer to any other request.
const FAILURE: u8 = 5;
/// The largest message relayed either way; keys and signatures are a few KiB.
const MAX_MESSAGE: usize = 256 * 1024;

/// A relay listening at its socket until dropped.
#[derive(Debug)]
pub(crate) struct AgentProxy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentProxy {
    /// Listens at `at` (made with `mode`) and relays each connection to `upstream`.
    pub(crate) fn start(upstream: PathBuf, at: &Path, mode: u32) -> std::io::Result<AgentProxy> {
        use std::os::unix::fs::PermissionsExt;
        let listener = UnixListener::bind(at)?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let upstream = upstream.clone();
                        std::thread::spawn(move || {
                            let _ = relay(client, &upstream);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(AgentProxy {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message: its 4-byte length and body, or None at the end of the stream.
fn read_message(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an agent message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(body)
}

/// The step's requests, one at a time (the protocol is request then answer): allowed ones
/// to the agent and its answer back, any other answered with a failure here.
fn relay(mut client: UnixStream, upstream: &Path) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let mut agent: Option<UnixStream> = None;
    while let Some(request) = read_message(&mut client)? {
        if !ALLOWED.contains(&request[0]) {
            write_message(&mut client, &[FAILURE])?;
            continue;
        }
        let a = match &mut agent {
            Some(a) => a,
            None => {
                let a = UnixStream::connect(upstream)?;
                a.set_read_timeout(Some(Duration::from_secs(120)))?;
                agent.insert(a)
            }
        };
        write_message(a, &request)?;
        match read_message(a)? {
            Some(answer) => write_message(&mut client, &answer)?,
            None => return Ok(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent that answers every request with its type plus 100, and counts them.
    fn agent(at: &Path) -> std::thread::JoinHandle<Vec<u8>> {
        let l = UnixListener::bind(at).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(m)) = read_message(&mut c) {
                seen.push(m[0]);
                write_message(&mut c, &[m[0] + 100]).unwrap();
            }
            seen
        })
    }

    #[test]
    fn only_listing_and_signing_reach_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("agent");
        let seen = agent(&up);
        let at = dir.path().join("proxy");
        let proxy = AgentProxy::start(up, &at, 0o600).unwrap();
        let mut c = UnixStream::connect(&at).unwrap();
        // request → answer: add identity (17), remove all (19), lock (22), extension (27)
        // are refused here; list (11) and sign (13) are the agent's.
        for (request, answer) in [(11, 111), (17, 5), (19, 5), (22, 5), (27, 5), (13, 113)] {
            write_message(&mut c, &[request, 0, 0]).unwrap();
            assert_eq!(
                read_message(&mut c).unwrap().unwrap(),
                vec![answer],
                "{request}"
            );
        }
        drop(c);
        assert_eq!(seen.join().unwrap(), vec![11, 13]);
        drop(proxy);
    }
}
