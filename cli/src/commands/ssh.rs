//! `cairn build --ssh`: each id's ssh agent socket, as buildx reads the flag. An id given key
//! files gets an `ssh-agent` of its own holding them, started here and stopped when the build
//! is done: the keys stay on the host and only the agent's socket is ever forwarded.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The build's agents: id → socket, and the agents cairn runs (killed and removed on drop).
#[derive(Debug, Default)]
pub struct Agents {
    sockets: BTreeMap<String, PathBuf>,
    started: Vec<Started>,
}

#[derive(Debug)]
struct Started {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agents {
    /// Reads each `--ssh` spec: `default` or `ID` alone is $SSH_AUTH_SOCK, `ID=SOCKET` that
    /// socket, `ID=KEY[,KEY]` an agent holding those keys.
    pub fn start(specs: &[String]) -> anyhow::Result<Agents> {
        let mut out = Agents::default();
        for spec in specs {
            let (id, paths) = match spec.split_once('=') {
                Some((id, p)) => (id, p.split(',').map(PathBuf::from).collect::<Vec<_>>()),
                None => (spec.as_str(), Vec::new()),
            };
            if id.is_empty() {
                bail!("--ssh {spec:?}: the id is empty");
            }
            if out.sockets.contains_key(id) {
                bail!("--ssh {spec:?}: id {id} is given twice");
            }
            let socket = match paths.as_slice() {
                [] => {
                    let sock = std::env::var_os("SSH_AUTH_SOCK").with_context(|| {
                        format!("--ssh {spec}: SSH_AUTH_SOCK is not set (is an ssh-agent running?)")
                    })?;
                    PathBuf::from(sock)
                }
                [one] if is_socket(one) => one.clone(),
                keys => out.agent_with(spec, keys)?,
            };
            out.sockets.insert(id.to_owned(), socket);
        }
        Ok(out)
    }

    pub fn sockets(&self) -> BTreeMap<String, PathBuf> {
        self.sockets.clone()
    }

    /// An `ssh-agent` of cairn's, in a private directory, holding `keys`.
    fn agent_with(&mut self, spec: &str, keys: &[PathBuf]) -> anyhow::Result<PathBuf> {
        for k in keys {
            if !k.is_file() {
                bail!(
                    "--ssh {spec}: {} is neither a socket nor a key file",
                    k.display()
                );
            }
        }
        let dir = tempfile::Builder::new().prefix("cairn-ssh").tempdir()?;
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("--ssh {spec}: cannot start ssh-agent (is it installed?)"))?;
        let mut started = Started { child, _dir: dir };
        let begun = Instant::now();
        // Bound is not yet listening: ready when a connection is taken.
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if started.child.try_wait()?.is_some() || begun.elapsed() > Duration::from_secs(10) {
                bail!("--ssh {spec}: ssh-agent did not start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Never a prompt: a key with a passphrase fails here, as in BuildKit.
        let out = Command::new("ssh-add")
            .arg("-q")
            .arg("--")
            .args(keys)
            .env("SSH_AUTH_SOCK", &socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("--ssh {spec}: cannot run ssh-add"))?;
        if !out.status.success() {
            bail!(
                "--ssh {spec}: the key could not be loaded (keys with a passphrase are not \
                 supported): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.started.push(started);
        Ok(socket)
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}
