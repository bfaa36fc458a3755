//! The typed messages between cairn and its sandbox helper (JSON lines over a socket pair).
//!
//! The helper is cairn's own binary re-executed (`cairn __sandbox`), so it starts
//! single-threaded: it may unshare a user namespace, which a threaded process cannot.
//! The exchange: cairn sends a [`Request`]; the helper unshares its user namespace and answers
//! [`Reply::Ready`]; cairn writes the id maps (and adds the helper to a cgroup) and sends
//! [`Go`]; the helper does the work and answers with the rest of the replies.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::isolation::Mode;
use cairn_layers::IdMap;
use serde::{Deserialize, Serialize};

/// What the helper is asked to do, inside the build's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Check that overlayfs mounts here (the `auto` snapshotter's choice): lower, upper and
    /// work directories are made under `dir`.
    Probe { dir: PathBuf },
    /// Unpack layer blobs onto `target`, in order, with owners as in the tars.
    Unpack {
        layers: Vec<LayerBlob>,
        target: PathBuf,
        /// Keep whiteouts as overlay whiteouts (a lowerdir) or apply them (a flat tree).
        overlay: bool,
        /// The ids that exist inside the namespace (an owner outside them is an error that
        /// names the id, not a bare EINVAL from chown).
        ids: IdMap,
    },
    /// Delete trees that the user cannot delete from outside (files owned by mapped ids).
    Remove { paths: Vec<PathBuf> },
    /// Run a process in a container.
    Run(Box<RunSpec>),
    /// Write the changes of a kept container's root (`cairn commit`) as a layer tar on fd 4,
    /// owners through `id_map`.
    Diff { root: RootSpec, id_map: IdMap },
}

/// A compressed layer in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerBlob {
    pub path: PathBuf,
    pub media_type: String,
}

/// The container's root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RootSpec {
    /// overlayfs: `lowers` top first; the upper directory becomes the layer.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        merged: PathBuf,
    },
    /// A full copy (`root`) of the parent tree (`lower`); the layer is their difference.
    Copy { lower: PathBuf, root: PathBuf },
    /// Isolation chroot's one copy of the parent tree: the helper records its metadata before
    /// the step, and the layer is what changed since (`cairn_layers::diff::TreeRecord`).
    Recorded { root: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// A network namespace of the step's own, reaching the outside through user-mode
    /// networking (pasta or slirp4netns, see `sandbox::net`) but never the host's loopback or
    /// its abstract unix sockets (`default`).
    Private,
    /// The host's network (`host`, only when asked for).
    Host,
    /// A network namespace with only loopback.
    None,
}

/// One `--ulimit NAME=SOFT[:HARD]`: a setrlimit(2) resource and its limits (`u64::MAX` is
/// unlimited, Docker's -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// `RLIMIT_*`, by Docker's name ([`Ulimit::NAMES`]).
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// Docker's names and the resources they stand for.
    // The casts are glibc's no-ops but not musl's (the static build's), whose are c_int.
    #[allow(clippy::unnecessary_cast)]
    pub const NAMES: [(&'static str, u32); 16] = [
        ("as", libc::RLIMIT_AS as u32),
        ("core", libc::RLIMIT_CORE as u32),
        ("cpu", libc::RLIMIT_CPU as u32),
        ("data", libc::RLIMIT_DATA as u32),
        ("fsize", libc::RLIMIT_FSIZE as u32),
        ("locks", libc::RLIMIT_LOCKS as u32),
        ("memlock", libc::RLIMIT_MEMLOCK as u32),
        ("msgqueue", libc::RLIMIT_MSGQUEUE as u32),
        ("nice", libc::RLIMIT_NICE as u32),
        ("nofile", libc::RLIMIT_NOFILE as u32),
        ("nproc", libc::RLIMIT_NPROC as u32),
        ("rss", libc::RLIMIT_RSS as u32),
        ("rtprio", libc::RLIMIT_RTPRIO as u32),
        ("rttime", libc::RLIMIT_RTTIME as u32),
        ("sigpending", libc::RLIMIT_SIGPENDING as u32),
        ("stack", libc::RLIMIT_STACK as u32),
    ];

    /// `NAME=SOFT[:HARD]` (a lone value is both; -1 is unlimited), as docker reads it.
    pub fn parse(spec: &str) -> Result<Ulimit, String> {
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?} must be NAME=SOFT[:HARD]"))?;
        let resource = Ulimit::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                let names: Vec<&str> = Ulimit::NAMES.iter().map(|(n, _)| *n).collect();
                format!("{name:?} is not a limit ({})", names.join(", "))
            })?;
        let value = |v: &str| match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            v => v
                .parse::<u64>()
                .map_err(|_| format!("{spec:?}: {v:?} is not a number")),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(format!("{spec:?}: the soft limit is above the hard one"));
        }
        Ok(Ulimit {
            resource,
            soft,
            hard,
        })
    }

    /// Docker's name of the resource, for messages.
    pub fn name(&self) -> &'static str {
        Ulimit::NAMES
            .iter()
            .find(|(_, r)| *r == self.resource)
            .map_or("?", |(n, _)| n)
    }
}

/// One extra mount in the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSpec {
    Bind {
        /// The file or directory to bind, or with `inside` the root it is found in.
        source: PathBuf,
        /// The source as a path below `source`, resolved by the helper as if `source` were `/`
        /// (symlinks and `..` never leave it) on the descriptor it then mounts: the build
        /// context and `from=` trees can change between cairn's checks and the mount.
        #[serde(default)]
        inside: Option<String>,
        /// An absolute path in the container.
        target: String,
        readonly: bool,
        /// Writes go to a throwaway overlay upper directory under this path, never to the
        /// source (`type=bind,rw`).
        scratch: Option<PathBuf>,
        /// Create `source` as a directory with this (uid, gid, mode) if it is missing (cache
        /// mounts).
        create: Option<(u32, u32, u32)>,
        /// Give `source` this (uid, gid) of the container before it is bound (the ssh agent
        /// socket of a `type=ssh` mount).
        #[serde(default)]
        owner: Option<(u32, u32)>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// The process to run and its surroundings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub root: RootSpec,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    /// Files bind-mounted over `/etc/...` paths (hosts, resolv.conf): (container path, file).
    pub etc_files: Vec<(String, PathBuf)>,
    pub mounts: Vec<MountSpec>,
    /// `--ulimit`: resource limits pid 1 sets before it execs the step (while it may still
    /// lower a hard limit, or raise one it is allowed to).
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`: the size of the /dev/shm tmpfs in bytes [default: 64 MiB, Docker's].
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Write the step's changes as a tar to fd 4, with mtimes clamped to `clamp_mtime`
    /// (nothing at all when an overlay upper directory is empty).
    pub diff: bool,
    pub clamp_mtime: Option<i64>,
    /// Stdin is a terminal: make it the process's controlling terminal.
    pub tty: bool,
    /// Give the process a terminal of the container's own devpts and send its master to cairn
    /// over the console socket (SCM_RIGHTS on the helper's `CONSOLE_FD`), as runc does.
    #[serde(default)]
    pub console: bool,
    /// Overlay with `diff`: after a successful diff the upper directory is moved here (on the
    /// same filesystem) instead of being deleted, so cairn can keep it as the new layer's
    /// unpacked lowerdir: it already is that layer, in overlay form.
    #[serde(default)]
    pub keep_upper: Option<PathBuf>,
    /// The limits' cgroup: pid 1 joins it (writing 0 to each file) before it sets up the
    /// container, so the limits bind the step's processes and never the helper, which the
    /// OOM killer could otherwise pick (it is the largest process early in a step). The
    /// helper opens the files before it enters its user namespace and pid 1 writes to those
    /// descriptors: the kernel judges a migration by the opener's credentials.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// Removed (from inside the namespace) when the helper ends.
    pub cleanup: Vec<PathBuf>,
    /// Only when the step failed or was stopped (cairn may be gone): otherwise cairn removes
    /// them itself, without waiting (root's builds, which may).
    #[serde(default)]
    pub cleanup_on_failure_only: bool,
    /// Root's builds: the helper works as root in the host's user namespace (it mounts, and
    /// reads and writes the store, which the mapped ids cannot reach), and pid 1 enters a user
    /// namespace with these maps just before it becomes the step's user, so the step never
    /// holds host root's ids. `None` for a user's builds, where the helper is already inside.
    #[serde(default)]
    pub userns: Option<IdMap>,
    /// A build step's: sync calls succeed without flushing (see `seccomp.rs`), and an overlay
    /// root is mounted volatile (see `snapshot/overlay.rs`). Not for `cairn run`, whose
    /// volumes and kept roots are the user's own data.
    #[serde(default)]
    pub suppress_sync: bool,
    /// The rung of the isolation ladder the step gets (see `isolation.rs`); cairn sets it
    /// from its sandbox in `Sandbox::run`.
    #[serde(default = "userns")]
    pub isolation: Mode,
}

fn userns() -> Mode {
    Mode::Userns
}

/// The helper's answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The user namespace exists: write the maps.
    Ready,
    /// Probe result: overlayfs works (or why not).
    Probed { overlay: Result<(), String> },
    /// Unpacked: the digest of each layer's uncompressed tar.
    Unpacked { diff_ids: Vec<String> },
    /// The process started (its pid inside is 1; `pid` is the host's, for signals).
    Started { pid: u32 },
    /// The process ended: an exit code, or the signal that killed it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Everything asked is done (for Run with `diff`, the tar on fd 4 is complete).
    Done,
    /// The request failed; nothing more follows. The helper's typed error travels as its
    /// report (`what: cause: cause`): an `io::Error` or `Errno` does not serialize, and cairn
    /// only shows it (adding the id mapping's hint where it applies).
    Failed { message: String },
}

/// cairn's go-ahead after writing the maps.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Go;

/// Writes one message as a JSON line.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one message; `Ok(None)` at end of stream.
pub fn recv<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_read_as_docker_writes_them() {
        let u = Ulimit::parse("nofile=512:1024").unwrap();
        assert_eq!((u.name(), u.soft, u.hard), ("nofile", 512, 1024));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.name(), u.soft, u.hard), ("core", u64::MAX, u64::MAX));
        for (bad, says) in [
            ("nofile", "NAME=SOFT[:HARD]"),
            ("files=1", "not a limit"),
            ("nproc=x", "not a number"),
            ("nproc=2:1", "above the hard"),
        ] {
            let e = Ulimit::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
