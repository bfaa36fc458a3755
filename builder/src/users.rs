//! User and group names to ids, from an image's /etc/passwd and /etc/group (`--chown`, `USER`).

use std::path::Path;

/// A resolved `user[:group]`: container uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Why a `user[:group]` could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(pub String);

/// `name:x:id:...` lines: the id of `name` in field 3 (passwd) or 3 (group), and for passwd the
/// primary gid in field 4.
fn find(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
}

fn read(rootfs: &Path, file: &str) -> String {
    // A missing file means no names resolve; numbers still work, as in Docker.
    std::fs::read_to_string(rootfs.join(file)).unwrap_or_default()
}

/// Resolves `user[:group]` as Docker's COPY --chown does: numbers as they are, names through
/// the image's files; "a username without groupname or a UID without GID will use the same
/// numeric UID as the GID" (Dockerfile reference, COPY --chown).
pub fn resolve(spec: &str, rootfs: &Path) -> Result<Owner, LookupError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(LookupError(format!("{spec:?} names no user")));
    }
    let passwd = read(rootfs, "etc/passwd");
    let uid: u32 = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let f = find(&passwd, user).ok_or_else(|| {
                LookupError(format!(
                    "unable to find user {user}: no matching entries in /etc/passwd"
                ))
            })?;
            f[2].parse()
                .map_err(|_| LookupError(format!("/etc/passwd has a bad uid for {user}")))?
        }
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read(rootfs, "etc/group");
                let f = find(&groups, g).ok_or_else(|| {
                    LookupError(format!(
                        "unable to find group {g}: no matching entries in /etc/group"
                    ))
                })?;
                f[2].parse()
                    .map_err(|_| LookupError(format!("/etc/group has a bad gid for {g}")))?
            }
        },
    };
    Ok(Owner { uid, gid })
}

/// Resolves `USER` for the directories BuildKit makes as that user (WORKDIR's mkdir, its
/// `llb.WithUser`): a name takes its uid and primary gid from /etc/passwd, a number stands for
/// itself and, without a group, for the gid too; a group is looked up as for `resolve`.
pub fn resolve_file_owner(spec: &str, rootfs: &Path) -> Result<Owner, LookupError> {
    let owner = resolve(spec, rootfs)?;
    let user = spec.split_once(':').map_or(spec, |(u, _)| u);
    if spec.contains(':') || user.parse::<u32>().is_ok() {
        return Ok(owner);
    }
    let passwd = read(rootfs, "etc/passwd");
    let gid = find(&passwd, user)
        .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
        .ok_or_else(|| LookupError(format!("/etc/passwd has a bad gid for {user}")))?;
    Ok(Owner { gid, ..owner })
}

/// The credentials a process runs with (`USER` for RUN and `cairn run -u`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group in /etc/group that lists the user by name.
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

/// Resolves `USER` as runc does for a container: a name or uid from /etc/passwd (whose entry
/// gives the primary gid and home; a uid without an entry gets gid 0), an optional group by
/// name or number, and, without one, the supplementary groups of the user's name. `read` returns a file of
/// the image (`etc/passwd`, `etc/group`), or "" when it is missing.
pub fn resolve_exec(spec: &str, read: &dyn Fn(&str) -> String) -> Result<ExecUser, LookupError> {
    let spec = if spec.is_empty() { "0" } else { spec };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read("etc/passwd");
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, mut gid, name, home) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| LookupError(format!("/etc/passwd has a bad uid for {user}")))?,
            f[3].parse::<u32>()
                .map_err(|_| LookupError(format!("/etc/passwd has a bad gid for {user}")))?,
            Some(f[0].to_owned()),
            f.get(5).map(|h| (*h).to_owned()),
        ),
        (None, Ok(n)) => (n, 0, None, None),
        (None, Err(_)) => {
            return Err(LookupError(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )));
        }
    };
    let group_file = read("etc/group");
    let groups_of = |pred: &dyn Fn(&[&str]) -> bool| -> Vec<Vec<String>> {
        group_file
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 3 && pred(f))
            .map(|f| f.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let found = groups_of(&|f| f[0] == g);
                let f = found.first().ok_or_else(|| {
                    LookupError(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?;
                f[2].parse()
                    .map_err(|_| LookupError(format!("/etc/group has a bad gid for {g}")))?
            }
        };
    }
    let mut groups = vec![gid];
    // As runc's GetExecUser: a group named in USER replaces the supplementary groups.
    if let (Some(name), None) = (&name, group) {
        for f in groups_of(&|f| f.len() >= 4 && f[3].split(',').any(|m| m == name)) {
            if let Ok(n) = f[2].parse::<u32>()
                && !groups.contains(&n)
            {
                groups.push(n);
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        type Want = Result<(u32, u32), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("0", Ok((0, 0))),
            ("1000", Ok((1000, 1000))),
            ("4242", Ok((4242, 4242))),
            ("app", Ok((1000, 1000))),
            ("app:staff", Ok((1000, 50))),
            ("app:7", Ok((1000, 7))),
            ("5:staff", Ok((5, 50))),
            ("nobody", Err("unable to find user nobody")),
            ("app:nogroup", Err("unable to find group nogroup")),
            ("", Err("names no user")),
        ];
        for (spec, want) in cases {
            let got = resolve(spec, dir.path());
            match want {
                Ok((u, g)) => assert_eq!(got, Ok(Owner { uid: *u, gid: *g }), "{spec}"),
                Err(msg) => assert!(got.unwrap_err().0.contains(msg), "{spec}"),
            }
        }
    }

    #[test]
    fn file_owners_take_the_primary_group_of_a_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "app:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let cases: &[(&str, Option<(u32, u32)>)] = &[
            ("app", Some((1000, 1001))),
            ("app:staff", Some((1000, 50))),
            ("4242", Some((4242, 4242))),
            ("4242:7", Some((4242, 7))),
            ("nobody", None),
        ];
        for (spec, want) in cases {
            let got = resolve_file_owner(spec, dir.path()).ok();
            assert_eq!(got, want.map(|(uid, gid)| Owner { uid, gid }), "{spec}");
        }
    }

    #[test]
    fn exec_users() {
        let files = |f: &str| match f {
            "etc/passwd" => {
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n".to_owned()
            }
            "etc/group" => {
                "root:x:0:root\nwheel:x:10:root,app\nstaff:x:50:\napp:x:1001:\n".to_owned()
            }
            _ => String::new(),
        };
        type Want = Result<(u32, u32, &'static [u32]), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((0, 0, &[0, 10]))),
            ("root", Ok((0, 0, &[0, 10]))),
            ("app", Ok((1000, 1001, &[1001, 10]))),
            ("1000", Ok((1000, 1001, &[1001, 10]))),
            ("4242", Ok((4242, 0, &[0]))),
            ("app:staff", Ok((1000, 50, &[50]))),
            ("1000:1001", Ok((1000, 1001, &[1001]))),
            ("4242:7", Ok((4242, 7, &[7]))),
            ("nobody", Err("unable to find user nobody")),
            ("app:nogroup", Err("unable to find group nogroup")),
        ];
        for (spec, want) in cases {
            let got = resolve_exec(spec, &files);
            match want {
                Ok((u, g, groups)) => {
                    let got = got.unwrap();
                    assert_eq!(
                        (got.uid, got.gid, got.groups.as_slice()),
                        (*u, *g, *groups),
                        "{spec}"
                    );
                }
                Err(msg) => assert!(got.unwrap_err().0.contains(msg), "{spec}"),
            }
        }
    }
}
