//! The build's user-namespace id mapping: chosen once (root, subordinate ranges, or a single
//! id) and written into each sandbox's `/proc/PID/{uid,gid}_map`.

use std::path::Path;
use std::process::Command;

use cairn_layers::{IdMap, IdRange};

use crate::error::{Error, Result};

/// How container ids reach host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// Running as root: every id maps to itself, inside a user namespace all the same, so a
    /// step never holds host root's capabilities.
    Root,
    /// A user with /etc/subuid and /etc/subgid ranges: 0 → the user, 1.. → the range, written
    /// by the setuid `newuidmap`/`newgidmap`.
    Subordinate,
    /// A user without ranges: container 0 is the user and no other id exists.
    Single,
}

/// The mapping every sandbox of a build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub kind: MappingKind,
    pub ids: IdMap,
}

/// `name:start:count` lines of /etc/subuid or /etc/subgid for the user (by name or number).
pub fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            let ours = Some(who) == name || who == id;
            ours.then(|| Some((start.parse().ok()?, count.parse().ok()?)))
                .flatten()
        })
        .filter(|&(_, count): &(u32, u32)| count > 0)
        .collect()
}

fn ranges(user_id: u32, subs: &[(u32, u32)]) -> Vec<IdRange> {
    let mut out = vec![IdRange {
        container: 0,
        host: user_id,
        size: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in subs {
        out.push(IdRange {
            container: next,
            host: start,
            size: count,
        });
        next = next.saturating_add(count);
    }
    out
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
    })
}

impl Mapping {
    /// The mapping for this process: root's identity, the user's subordinate ranges when both
    /// files have some and `newuidmap`/`newgidmap` exist, else a single id (with a warning).
    pub fn detect() -> (Mapping, Option<String>) {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        if uid == 0 {
            let m = Mapping {
                kind: MappingKind::Root,
                ids: IdMap::identity(),
            };
            return (m, None);
        }
        let name = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| user_name(uid));
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let subuid = subordinate_ranges(&read("/etc/subuid"), name.as_deref(), uid);
        let subgid = subordinate_ranges(&read("/etc/subgid"), name.as_deref(), uid);
        let tools = which("newuidmap") && which("newgidmap");
        if !subuid.is_empty() && !subgid.is_empty() && tools {
            let m = Mapping {
                kind: MappingKind::Subordinate,
                ids: IdMap {
                    uids: ranges(uid, &subuid),
                    gids: ranges(gid, &subgid),
                },
            };
            return (m, None);
        }
        let who = name.unwrap_or_else(|| uid.to_string());
        let hint = range_hint(&who);
        let why = if tools {
            format!("user {who} has no range in /etc/subuid and /etc/subgid")
        } else {
            "newuidmap and newgidmap (package uidmap) are not installed".to_owned()
        };
        let warning = format!(
            "{why}: RUN steps get a single id (root in the container is you), which works for \
             images whose files all belong to root; {hint}"
        );
        let m = Mapping {
            kind: MappingKind::Single,
            ids: IdMap {
                uids: ranges(uid, &[]),
                gids: ranges(gid, &[]),
            },
        };
        (m, Some(warning))
    }

    /// `message` of a failure inside the namespace, with how to get more ids when the single
    /// id was what it lacked.
    pub fn explain(&self, message: String) -> String {
        if self.kind != MappingKind::Single || !message.contains(OUTSIDE_MAPPING) {
            return message;
        }
        let who = std::env::var("USER").unwrap_or_else(|_| {
            let uid = rustix::process::getuid().as_raw();
            user_name(uid).unwrap_or_else(|| uid.to_string())
        });
        format!(
            "{message}: this user has a single id (no range in /etc/subuid and /etc/subgid), \
             and the image needs more; {}",
            range_hint(&who)
        )
    }

    /// A short key for the store's unpacked layers: files unpacked through this mapping have
    /// its host ids on disk. Empty for root's identity.
    pub fn store_key(&self) -> String {
        if self.kind == MappingKind::Root {
            return String::new();
        }
        use sha2::Digest as _;
        let text = format!(
            "{}|{}",
            IdMap::map_text(&self.ids.uids),
            IdMap::map_text(&self.ids.gids)
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6])
    }

    /// Writes the maps of the process `pid`, which has just unshared its user namespace.
    pub fn write(&self, pid: u32) -> Result<()> {
        let proc = format!("/proc/{pid}");
        match self.kind {
            MappingKind::Root => {
                write_proc(&proc, "uid_map", &IdMap::map_text(&self.ids.uids))?;
                write_proc(&proc, "gid_map", &IdMap::map_text(&self.ids.gids))
            }
            MappingKind::Single => {
                // An unprivileged writer must give up setgroups before it may write gid_map.
                write_proc(&proc, "setgroups", "deny")?;
                write_proc(&proc, "uid_map", &IdMap::map_text(&self.ids.uids))?;
                write_proc(&proc, "gid_map", &IdMap::map_text(&self.ids.gids))
            }
            MappingKind::Subordinate => {
                run_map_tool("newuidmap", pid, &self.ids.uids)?;
                run_map_tool("newgidmap", pid, &self.ids.gids)
            }
        }
    }
}

/// What a layer entry owned by an id outside the mapping fails with (cairn-layers' apply).
const OUTSIDE_MAPPING: &str = "is outside the build's id mapping";

fn range_hint(who: &str) -> String {
    format!(
        "to give them more ids, run as root \
         `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}` and install \
         uidmap"
    )
}

fn write_proc(proc: &str, file: &str, text: &str) -> Result<()> {
    let path = Path::new(proc).join(file);
    std::fs::write(&path, text).map_err(|source| Error::Io {
        action: "write the id mapping to",
        path,
        source,
    })
}

fn run_map_tool(tool: &str, pid: u32, ranges: &[IdRange]) -> Result<()> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.container.to_string(),
            r.host.to_string(),
            r.size.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|source| Error::Io {
        action: "run",
        path: tool.into(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Sandbox(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/bin").join(tool).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_lines() {
        let text =
            "alice:100000:65536\nbob:200000:65536\n1005:300000:10\n# junk\nbad\nalice:500000:0\n";
        type Case<'a> = (Option<&'a str>, u32, &'a [(u32, u32)]);
        let cases: &[Case<'_>] = &[
            (Some("alice"), 1000, &[(100000, 65536)]),
            (Some("bob"), 1001, &[(200000, 65536)]),
            (Some("carol"), 1005, &[(300000, 10)]),
            (None, 1005, &[(300000, 10)]),
            (Some("dave"), 7, &[]),
        ];
        for (name, id, want) in cases {
            assert_eq!(subordinate_ranges(text, *name, *id), *want, "{name:?}");
        }
        let r = ranges(1000, &[(100000, 65536), (300000, 10)]);
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].container, r[1].host), (1, 100000));
        assert_eq!((r[2].container, r[2].host, r[2].size), (65537, 300000, 10));
    }
}
