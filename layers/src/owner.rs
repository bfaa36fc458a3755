//! Which process made a scratch entry (a store temp file, a build directory, a cgroup), and
//! whether that process is gone: names carry `PID-sSTART`, the pid and its start time.
//!
//! A pid alone cannot tell a dead build's leftovers from a live build that got the same pid
//! later; the start time (field 22 of `/proc/PID/stat`, clock ticks since boot) can. A name
//! without the start time (older cairn versions) counts as live while its pid exists.

use std::sync::OnceLock;

/// Who made an entry, as read back from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// `None` for a name without the start time.
    pub start: Option<u64>,
}

/// This process's token, `PID-sSTART` (just `PID` where /proc cannot tell the start time),
/// for the names of what it leaves in shared places.
pub fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let pid = std::process::id();
        match start_time(pid) {
            Some(start) => format!("{pid}-s{start}"),
            None => pid.to_string(),
        }
    })
}

/// The owner of a name `PREFIX-PID[-sSTART][-…]`, or of `PREFIX-PID` with an extension; None
/// for any other name.
pub fn parse(name: &str, prefix: &str) -> Option<Owner> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let mut fields = rest.split(['-', '.']);
    let pid = fields.next()?.parse().ok()?;
    let start = fields
        .next()
        .and_then(|f| f.strip_prefix('s'))
        .and_then(|s| s.parse().ok());
    Some(Owner { pid, start })
}

/// The start time of process `pid` in clock ticks since boot, from `/proc/PID/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
fn stat_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether cleaning up after dead owners can be trusted here: without a readable
/// `/proc/self/stat` every owner would look gone.
pub fn can_tell() -> bool {
    start_time(std::process::id()).is_some()
}

/// Whether the process that made an entry has exited: its pid is gone, or holds another
/// process (a different start time). Never true for this process's own entries.
pub fn is_gone(owner: Owner) -> bool {
    if !can_tell() {
        return false;
    }
    let own = std::process::id();
    match (start_time(owner.pid), owner.start) {
        (None, _) => {
            // The stat file may be unreadable while the process lives on; its directory
            // is the better witness.
            owner.pid != own && !std::path::Path::new(&format!("/proc/{}", owner.pid)).exists()
        }
        (Some(now), Some(then)) => now != then,
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        type Case<'a> = (&'a str, &'a str, Option<(u32, Option<u64>)>);
        let cases: &[Case<'_>] = &[
            ("blob-12-s345-6-789", "blob", Some((12, Some(345)))),
            ("blob-12-6-789", "blob", Some((12, None))),
            ("run-7-s88-1.keep", "run", Some((7, Some(88)))),
            ("run-7.keep", "run", Some((7, None))),
            ("probe-31", "probe", Some((31, None))),
            ("cairn-9-s10-2", "cairn", Some((9, Some(10)))),
            ("cairn-probe-9", "cairn", None),
            ("cairn-test-9-1", "cairn", None),
            ("blob", "blob", None),
            ("blobs-1-s2", "blob", None),
            ("unpack-x-s2", "unpack", None),
            ("unpack-1-sx-3", "unpack", Some((1, None))),
        ];
        for (name, prefix, want) in cases {
            let got = parse(name, prefix).map(|o| (o.pid, o.start));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn stat_lines() {
        let cases: &[(&str, Option<u64>)] = &[
            (
                "1234 (cairn) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1 2",
                Some(98765),
            ),
            (
                "1 (a) b) (c) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0",
                Some(42),
            ),
            ("1 (short) R 1", None),
            ("no parenthesis", None),
        ];
        for (line, want) in cases {
            assert_eq!(stat_start_time(line), *want, "{line}");
        }
    }

    #[test]
    fn liveness() {
        let me = std::process::id();
        let mine = parse(&format!("blob-{}-0", token()), "blob").unwrap();
        assert_eq!(mine.pid, me);
        assert!(mine.start.is_some());
        assert!(!is_gone(mine), "this process is alive");
        assert!(!is_gone(Owner {
            pid: me,
            start: None
        }));
        // The same pid with another start time: a process that had this pid before.
        let earlier = Owner {
            pid: me,
            start: Some(mine.start.unwrap() + 1),
        };
        assert!(is_gone(earlier));
        // A child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(is_gone(Owner { pid, start: None }) || start_time(pid).is_some());
    }
}
