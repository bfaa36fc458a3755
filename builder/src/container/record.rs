//! A container's record, `containers/<id>/container.json`: what it runs, its state and the
//! process that owns it, written whole; names kept unique under `containers/names.lock`.

use std::path::{Path, PathBuf};

use cairn_layers::{IdMap, Store};
use serde::{Deserialize, Serialize};

use super::Launch;
use crate::error::{Result, RunError, io_err};
use crate::sandbox::RootSpec;

/// The exit code shown for a container whose owner died without recording one (docker shows
/// 255 for a container its daemon lost).
pub const LOST_EXIT: i32 = 255;

/// docker's container states, as far as cairn has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// A process named with its start time, so a pid reused by another process is not taken
/// for it (see `cairn_layers::owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub start: Option<u64>,
}

impl Proc {
    /// This process.
    pub fn own() -> Proc {
        let pid = std::process::id();
        Proc {
            pid,
            start: cairn_layers::owner::start_time(pid),
        }
    }

    pub fn of(pid: u32) -> Proc {
        Proc {
            pid,
            start: cairn_layers::owner::start_time(pid),
        }
    }

    pub fn alive(&self) -> bool {
        !cairn_layers::owner::is_gone(cairn_layers::owner::Owner {
            pid: self.pid,
            start: self.start,
        }) && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// What `container.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// The image as `cairn run` was given it, and its ID.
    pub image: String,
    pub image_id: String,
    /// ENTRYPOINT and CMD as run.
    pub command: Vec<String>,
    /// The CMD part of `command` (what `cairn commit` keeps as the new image's CMD).
    pub cmd: Vec<String>,
    pub created: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// The container's process (pid 1 of its namespace) as the host sees it, while running.
    pub pid: Option<Proc>,
    /// The process that owns the sandbox (`cairn run`, or the monitor of a detached one): when
    /// it is gone the container is too, whatever the record last said.
    pub owner: Option<Proc>,
    pub detached: bool,
    /// `--rm`: the container goes when it ends.
    pub remove: bool,
    pub snapshotter: String,
    /// The root filesystem, once made: what `cairn commit` diffs.
    pub root: Option<RootSpec>,
    /// The ids the container's files carry as the helper sees them (the layer tar's map).
    pub id_map: Option<IdMap>,
    /// What the monitor of a detached container needs to start it.
    pub launch: Launch,
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// The state as it is: a record left running or created by an owner that died shows the
    /// container exited.
    pub fn current(&self) -> (State, Option<i32>) {
        match self.state {
            State::Exited => (State::Exited, self.exit_code),
            s if self.owner.is_some_and(|o| o.alive()) => (s, None),
            _ => (State::Exited, Some(self.exit_code.unwrap_or(LOST_EXIT))),
        }
    }

    pub fn running(&self) -> bool {
        self.current().0 != State::Exited
    }
}

/// The store's `containers/` directory.
#[derive(Debug)]
pub struct Containers {
    dir: PathBuf,
}

/// The lock held while a name is checked and taken, or a record removed.
#[derive(Debug)]
pub struct NamesLock {
    _file: std::fs::File,
}

impl Containers {
    pub fn of(store: &Store) -> Containers {
        Containers {
            dir: store.root().join("containers"),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.log")
    }

    /// Held by whoever checks a name and takes it: two runs asking for one name cannot both
    /// see it free.
    pub fn lock(&self) -> Result<NamesLock> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))?;
        let path = self.dir.join("names.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        file.lock().map_err(io_err("lock", &path))?;
        Ok(NamesLock { _file: file })
    }

    /// Every record, newest first; a directory without a readable record (one being made or
    /// removed) is skipped.
    pub fn list(&self) -> Result<Vec<Record>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut out: Vec<Record> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| self.load(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        let path = self.dir(id).join("container.json");
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RunError::BadRecord {
                path: path.clone(),
                source: e,
            }
            .into()
        })
    }

    /// Writes `r` whole (temp file and rename). A record whose directory is gone (removed
    /// meanwhile) is not made again.
    pub fn save(&self, r: &Record) -> Result<()> {
        let dir = self.dir(&r.id);
        if !dir.is_dir() {
            return Ok(());
        }
        let path = dir.join("container.json");
        let tmp = dir.join(crate::fsutil::temp_name("container.json"));
        let json = serde_json::to_vec_pretty(r).unwrap_or_default();
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .map_err(io_err("write", &path))
    }

    /// Re-reads the record, changes it and writes it back (the owner's updates).
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Record)) -> Result<()> {
        let mut r = self.load(id)?;
        change(&mut r);
        self.save(&r)
    }

    /// The container `given` names: a full id, a name (with or without docker's `/`), or a
    /// prefix of one id, as docker looks them up.
    pub fn find(&self, given: &str) -> Result<Record> {
        let all = self.list()?;
        let name = given.strip_prefix('/').unwrap_or(given);
        if let Some(r) = all.iter().find(|r| r.id == given || r.name == name) {
            return Ok(r.clone());
        }
        let by_prefix: Vec<&Record> = all
            .iter()
            .filter(|r| !given.is_empty() && r.id.starts_with(given))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RunError::NoContainer(given.to_owned()).into()),
            _ => Err(RunError::AmbiguousContainer(given.to_owned()).into()),
        }
    }

    /// Writes a new record, its name checked free (or made up) under the names lock.
    pub fn create(&self, mut r: Record, name: Option<&str>) -> Result<Record> {
        let _lock = self.lock()?;
        let all = self.list()?;
        let taken = |n: &str| all.iter().find(|r| r.name == n);
        r.name = match name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                check_name(n)?;
                if let Some(other) = taken(n) {
                    return Err(RunError::NameInUse {
                        name: n.to_owned(),
                        id: other.id.clone(),
                    }
                    .into());
                }
                n.to_owned()
            }
            None => {
                let mut n = generated_name(&r.id, 0);
                let mut i = 1;
                while taken(&n).is_some() {
                    n = generated_name(&r.id, i);
                    i += 1;
                }
                n
            }
        };
        let dir = self.dir(&r.id);
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        self.save(&r)?;
        Ok(r)
    }
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(n: &str) -> Result<()> {
    let mut chars = n.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RunError::BadName(n.to_owned()).into())
    }
}

const ADJECTIVES: &[&str] = &[
    "admiring",
    "brave",
    "calm",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "modest",
    "nifty",
    "optimistic",
    "pensive",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "vibrant",
    "wizardly",
    "zealous",
];
const NAMES: &[&str] = &[
    "babbage", "curie", "darwin", "euler", "fermi", "galois", "hopper", "hypatia", "kepler",
    "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "tesla", "turing", "wing",
];

/// docker's `adjective_name`, picked by the id (and a number after when the pair is taken).
fn generated_name(id: &str, attempt: usize) -> String {
    let n = usize::from_str_radix(&id[..8.min(id.len())], 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        ADJECTIVES[n % ADJECTIVES.len()],
        NAMES[(n / ADJECTIVES.len()) % NAMES.len()]
    );
    if attempt == 0 {
        base
    } else {
        format!("{base}{attempt}")
    }
}

/// A fresh container id: 32 random bytes in hex.
pub fn new_id() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("read", path))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for (name, ok) in [
            ("web", true),
            ("a1.b_c-d", true),
            ("x", false),
            ("-x", false),
            ("_x", false),
            ("a/b", false),
            ("a b", false),
            ("", false),
        ] {
            assert_eq!(check_name(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn generated_names_are_valid_and_numbered_when_taken() {
        let id = "0123456789abcdef".repeat(4);
        let first = generated_name(&id, 0);
        assert!(check_name(&first).is_ok());
        assert_eq!(generated_name(&id, 2), format!("{first}2"));
    }
}
