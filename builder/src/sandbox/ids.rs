//! The build's user-namespace id mapping: chosen once (root's reserved range, subordinate
//! ranges, or a single id) and written into each sandbox's `/proc/PID/{uid,gid}_map`.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use cairn_layers::{IdMap, IdRange};

use super::SandboxError;
use crate::error::{Error, Result};

/// How container ids reach host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// Running as root: container ids map to an unprivileged host range (root's own
    /// /etc/subuid and /etc/subgid ranges, else a range the store reserved), never to host
    /// root, so a step holds no power over the host's files, sysctls or cgroups.
    Root,
    /// A user with /etc/subuid and /etc/subgid ranges: 0 → the user, 1.. → the range, written
    /// by the setuid `newuidmap`/`newgidmap`.
    Subordinate,
    /// A user without ranges: container 0 is the user and no other id exists.
    Single,
    /// Root without `CAP_SYS_ADMIN` (a container's root under Docker's or Kubernetes' default
    /// profile, with user namespaces allowed): as [`MappingKind::Root`], but the helper first
    /// enters a user namespace that maps every id to itself, in which it may mount.
    RootNested,
    /// Isolation `rootful` or `chroot`: no user namespace, container ids are host ids.
    Identity,
}

impl MappingKind {
    /// cairn itself is root (of its user namespace): it unpacks, chowns and removes trees
    /// with mapped owners directly, without a helper.
    pub fn cairn_is_root(self) -> bool {
        matches!(
            self,
            MappingKind::Root | MappingKind::RootNested | MappingKind::Identity
        )
    }

    /// The helper makes a user namespace of its own (whose maps cairn writes).
    pub fn helper_enters_userns(self) -> bool {
        matches!(
            self,
            MappingKind::Subordinate | MappingKind::Single | MappingKind::RootNested
        )
    }
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
    pub fn detect(store_root: &Path) -> Result<(Mapping, Option<String>)> {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        if uid == 0 {
            let mut m = root_mapping(store_root)?;
            if !super::isolation::root_can_mount() {
                m.kind = MappingKind::RootNested;
            }
            return Ok((m, None));
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
            return Ok((m, None));
        }
        let who = name.unwrap_or_else(|| uid.to_string());
        let hint = range_hint(&who, &read("/etc/subuid"), &read("/etc/subgid"));
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
        Ok((m, Some(warning)))
    }

    /// No user namespace (isolation `rootful` or `chroot`): ids are the host's.
    pub fn identity() -> Mapping {
        Mapping {
            kind: MappingKind::Identity,
            ids: IdMap::identity(),
        }
    }

    /// `message` of a failure inside the namespace, with what to do when an id the image or
    /// the step needs lies outside the mapping (an owner in a layer, `USER 1000`).
    pub fn explain(&self, message: String) -> String {
        if !is_unmapped_id_error(&message) {
            return message;
        }
        let (subuid, subgid) = (read_text("/etc/subuid"), read_text("/etc/subgid"));
        match self.kind {
            MappingKind::Single => {
                let who = std::env::var("USER").unwrap_or_else(|_| {
                    let uid = rustix::process::getuid().as_raw();
                    user_name(uid).unwrap_or_else(|| uid.to_string())
                });
                format!(
                    "{message}: this user has a single id (no range in /etc/subuid and \
                     /etc/subgid), and the image needs more; {}",
                    range_hint(&who, &subuid, &subgid)
                )
            }
            MappingKind::Subordinate => {
                let who = std::env::var("USER").unwrap_or_else(|_| "this user".into());
                format!(
                    "{message}: the build's ids are 0-{} (this user's ranges in /etc/subuid and \
                     /etc/subgid); {}",
                    self.ids.uids.iter().map(|r| r.size as u64).sum::<u64>() - 1,
                    range_hint(&who, &subuid, &subgid)
                )
            }
            MappingKind::Identity => message,
            MappingKind::Root | MappingKind::RootNested => format!(
                "{message}: the build's ids are 0-{} (root's range; add a larger `root:START:COUNT` \
                 line to /etc/subuid and /etc/subgid for more)",
                self.ids.uids.iter().map(|r| r.size as u64).sum::<u64>() - 1
            ),
        }
    }

    /// A short key for the store's unpacked layers: files unpacked through this mapping have
    /// its host ids on disk.
    pub fn store_key(&self) -> String {
        use sha2::Digest as _;
        let text = format!(
            "{}|{}",
            IdMap::map_text(&self.ids.uids),
            IdMap::map_text(&self.ids.gids)
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6])
    }

    /// The maps pid 1 enters a user namespace with (root's builds), see `RunSpec::userns`.
    pub fn for_pid1(&self) -> Option<IdMap> {
        matches!(self.kind, MappingKind::Root | MappingKind::RootNested).then(|| self.ids.clone())
    }

    /// Writes the maps of the process `pid`, which has just unshared its user namespace.
    pub fn write(&self, pid: u32) -> Result<()> {
        let proc = format!("/proc/{pid}");
        match self.kind {
            // Root's helper stays in the host's user namespace; its pid 1 gets the maps (see
            // `RunSpec::userns` and `write_maps`).
            MappingKind::Root | MappingKind::Identity => Ok(()),
            // Every id to itself: the helper is root as cairn is, but may mount in its own
            // namespaces; its pid 1 then enters the build's maps as under `Root`.
            MappingKind::RootNested => {
                let all = format!("0 0 {}\n", u32::MAX);
                write_proc(&proc, "uid_map", &all)?;
                write_proc(&proc, "gid_map", &all)
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

/// A failure that means an id is missing from the namespace: an owner in a layer, or the
/// step's user or groups, which the kernel refuses with EINVAL when they are unmapped.
fn is_unmapped_id_error(message: &str) -> bool {
    message.contains(OUTSIDE_MAPPING)
        || (["setuid ", "setgid ", "setgroups "]
            .iter()
            .any(|p| message.starts_with(p))
            && message.contains("Invalid argument"))
}

fn read_text(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How many ids a container needs at the least: 0 to 65535 (`nobody` is 65534).
pub const RANGE_SIZE: u32 = 65536;

/// Where useradd starts handing out subordinate ranges (login.defs' SUB_UID_MIN).
const SUB_ID_MIN: u32 = 100_000;

/// Every `start:count` range of /etc/subuid or /etc/subgid text, whoever owns it.
fn all_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (_, start, count) = (f.next()?, f.next()?, f.next()?);
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// The first `size` ids from `from` on, stepping by `size`, that no taken range overlaps and
/// that end before `to`.
fn free_range(taken: &[(u64, u64)], from: u32, to: u32, size: u32) -> Option<u32> {
    let (size64, mut start) = (u64::from(size), u64::from(from));
    while start + size64 <= u64::from(to) {
        let clash = taken
            .iter()
            .any(|&(s, c)| c > 0 && s < start + size64 && start < s + c);
        if !clash {
            return u32::try_from(start).ok();
        }
        start += size64;
    }
    None
}

/// The command that gives `who` a range nobody in /etc/subuid or /etc/subgid has yet.
fn range_hint(who: &str, subuid: &str, subgid: &str) -> String {
    let mut taken = all_ranges(subuid);
    taken.extend(all_ranges(subgid));
    match free_range(&taken, SUB_ID_MIN, u32::MAX, RANGE_SIZE) {
        Some(start) => {
            let end = start + (RANGE_SIZE - 1);
            format!(
                "to give them more ids, run as root \
                 `usermod --add-subuids {start}-{end} --add-subgids {start}-{end} {who}` (a range \
                 free in /etc/subuid and /etc/subgid) and install uidmap"
            )
        }
        None => "no free range is left in /etc/subuid and /etc/subgid to suggest".into(),
    }
}

/// Root's reserved ranges are looked for above what useradd hands out (SUB_UID_MAX,
/// 600100000 by default) and what systemd-nspawn picks from (up to 0x6FFFFFFF), and below
/// systemd's foreign range (0x7FFE0000): ids no login and no other tool gives out.
const RESERVE_FROM: u32 = 0x7000_0000;
const RESERVE_TO: u32 = 0x7FFE_0000;

/// The file in the store that records root's reserved range, as `START COUNT`.
const RESERVATION: &str = "userns-range";

/// Root's mapping: its own /etc/subuid and /etc/subgid ranges when it has 65536 ids there,
/// else a range reserved in the store (chosen once, free in both files and among the local
/// users and groups, kept while it stays free).
fn root_mapping(store_root: &Path) -> Result<Mapping> {
    let (subuid, subgid) = (read_text("/etc/subuid"), read_text("/etc/subgid"));
    let own_u = subordinate_ranges(&subuid, Some("root"), 0);
    let own_g = subordinate_ranges(&subgid, Some("root"), 0);
    let total = |r: &[(u32, u32)]| r.iter().map(|&(_, c)| u64::from(c)).sum::<u64>();
    if total(&own_u) >= u64::from(RANGE_SIZE) && total(&own_g) >= u64::from(RANGE_SIZE) {
        return Ok(Mapping {
            kind: MappingKind::Root,
            ids: IdMap {
                uids: from_zero(&own_u),
                gids: from_zero(&own_g),
            },
        });
    }
    let mut taken = all_ranges(&subuid);
    taken.extend(all_ranges(&subgid));
    for (file, field) in [("/etc/passwd", 2), ("/etc/group", 2)] {
        for line in read_text(file).lines() {
            if let Some(Ok(id)) = line.split(':').nth(field).map(str::parse::<u64>) {
                taken.push((id, 1));
            }
        }
    }
    let path = store_root.join(RESERVATION);
    let recorded = std::fs::read_to_string(&path).ok().and_then(|t| {
        let mut f = t.split_whitespace();
        let start: u32 = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count == RANGE_SIZE
            && free_range(&taken, start, start.saturating_add(count), count) == Some(start)
            && (RESERVE_FROM..RESERVE_TO).contains(&start))
        .then_some(start)
    });
    let start = match recorded {
        Some(start) => start,
        None => {
            let start =
                free_range(&taken, RESERVE_FROM, RESERVE_TO, RANGE_SIZE).ok_or_else(|| {
                    SandboxError::Host(
                        "no free range of 65536 ids is left for root's builds; add a \
                         `root:START:65536` line to /etc/subuid and /etc/subgid"
                            .into(),
                    )
                })?;
            record_reservation(&path, start)?;
            start
        }
    };
    let range = vec![IdRange {
        container: 0,
        host: start,
        size: RANGE_SIZE,
    }];
    Ok(Mapping {
        kind: MappingKind::Root,
        ids: IdMap {
            uids: range.clone(),
            gids: range,
        },
    })
}

/// Writes the reservation whole (temp file, then rename): two cairns choosing at once choose
/// the same range, so the last rename loses nothing.
fn record_reservation(path: &Path, start: u32) -> Result<()> {
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let io = |source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(&temp).map_err(io)?;
    f.write_all(format!("{start} {RANGE_SIZE}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

/// Container ids 0.. laid over host ranges in order (root's own subordinate ranges).
fn from_zero(subs: &[(u32, u32)]) -> Vec<IdRange> {
    let mut next = 0u32;
    subs.iter()
        .map(|&(host, size)| {
            let r = IdRange {
                container: next,
                host,
                size,
            };
            next = next.saturating_add(size);
            r
        })
        .collect()
}

/// Root writes any maps of a process that has just unshared its user namespace (one write
/// each, as the kernel requires).
pub fn write_maps(pid: u32, ids: &IdMap) -> std::io::Result<()> {
    let proc = Path::new("/proc").join(pid.to_string());
    std::fs::write(proc.join("uid_map"), IdMap::map_text(&ids.uids))?;
    std::fs::write(proc.join("gid_map"), IdMap::map_text(&ids.gids))
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
        return Err(SandboxError::MapTool {
            tool: tool.to_owned(),
            status: out.status,
            said: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }
        .into());
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

    #[test]
    fn free_ranges() {
        // (taken ranges, from, to, want)
        type Case<'a> = (&'a [(u64, u64)], u32, u32, Option<u32>);
        let cases: &[Case<'_>] = &[
            (&[], 100_000, u32::MAX, Some(100_000)),
            (&[(100_000, 65536)], 100_000, u32::MAX, Some(165_536)),
            (
                &[(100_000, 65536), (165_536, 65536)],
                100_000,
                u32::MAX,
                Some(231_072),
            ),
            // An unaligned range overlapping the next candidate pushes past it.
            (
                &[(100_000, 65536), (200_000, 10)],
                100_000,
                u32::MAX,
                Some(231_072),
            ),
            (&[(100_000, 0)], 100_000, u32::MAX, Some(100_000)),
            (
                &[(0x7000_0005, 1)],
                0x7000_0000,
                0x7FFE_0000,
                Some(0x7001_0000),
            ),
            (&[(0, u64::from(u32::MAX))], 100_000, u32::MAX, None),
        ];
        for (taken, from, to, want) in cases {
            assert_eq!(
                free_range(taken, *from, *to, RANGE_SIZE),
                *want,
                "{taken:?}"
            );
        }
        let hint = range_hint("dev", "alice:100000:65536\n", "bob:165536:65536\n");
        assert!(hint.contains("--add-subuids 231072-296607"), "{hint}");
        let lines = "root:100000:65536\nroot:300000:1000\n";
        let r = from_zero(&subordinate_ranges(lines, Some("root"), 0));
        assert_eq!((r[0].container, r[0].host, r[0].size), (0, 100000, 65536));
        assert_eq!((r[1].container, r[1].host), (65536, 300000));
    }

    #[test]
    fn unmapped_id_errors() {
        for (m, want) in [
            ("setuid 1000: Invalid argument (os error 22)", true),
            ("setgroups [5]: Invalid argument (os error 22)", true),
            ("file a owner 70000 is outside the build's id mapping", true),
            ("setuid 1000: Operation not permitted", false),
            ("exec: \"x\": executable file not found in $PATH", false),
        ] {
            assert_eq!(is_unmapped_id_error(m), want, "{m}");
        }
    }
}
