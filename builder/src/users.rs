//! User and group names to ids, from an image's /etc/passwd and /etc/group (`--chown`, `USER`).

use std::path::Path;

use cairn_layers::rootfs::{Found, read_in_root};

pub use crate::error::LookupError;
use crate::sandbox::IMAGE_FILE_LIMIT;

/// A resolved `user[:group]`: container uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// `name:x:id:...` lines: the id of `name` in field 3 (passwd) or 3 (group), and for passwd the
/// primary gid in field 4.
fn find(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
}

/// Reads one of the image's files for a name lookup (`etc/passwd`): from the stage's layer
/// listings or its unpacked files, as the stage has it (see `StageState::image_file`).
pub type ReadImageFile<'a> = dyn FnMut(&str) -> Result<Found, LookupError> + 'a;

/// An image file as the step would see it: through [`read_in_root`], so a symlink to a host
/// file resolves inside `rootfs` and a FIFO is not waited on.
pub(crate) fn read_from_root(rootfs: &Path, file: &str) -> Result<Found, LookupError> {
    read_in_root(rootfs, file, IMAGE_FILE_LIMIT).map_err(|source| LookupError::Read {
        file: file.to_owned(),
        source,
    })
}

/// A file's text; a missing file, or anything but a regular file, means no names resolve
/// (numbers still work, as in Docker).
fn read(files: &mut ReadImageFile<'_>, file: &str) -> Result<String, LookupError> {
    Ok(match files(file)? {
        Found::File(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Found::Missing | Found::NotAFile(_) => String::new(),
    })
}

/// Resolves `user[:group]` for the files BuildKit's file operations own (COPY/ADD `--chown`,
/// WORKDIR's mkdir as the USER), as its `readUser` does: a number stands for the uid and,
/// without a group, the gid too; a name takes its uid and primary gid from the image's
/// /etc/passwd; a group replaces the gid, by number or through /etc/group. A name the files
/// lack (or a missing file) leaves the ids as they were, 0 for a user: BuildKit does not fail
/// there, so the names not found are returned for a warning.
pub fn resolve_file_owner(
    spec: &str,
    files: &mut ReadImageFile<'_>,
) -> Result<(Owner, Vec<String>), LookupError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(LookupError::Unresolved(format!("{spec:?} names no user")));
    }
    let mut owner = Owner { uid: 0, gid: 0 };
    let mut missing = Vec::new();
    match user.parse::<u32>() {
        Ok(n) => owner = Owner { uid: n, gid: n },
        Err(_) => match find(&read(files, "etc/passwd")?, user) {
            Some(f) => {
                let id = |i: usize| {
                    f.get(i).and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| {
                        LookupError::Unresolved(format!("/etc/passwd has a bad entry for {user}"))
                    })
                };
                owner = Owner {
                    uid: id(2)?,
                    gid: id(3)?,
                };
            }
            None => missing.push(format!("user {user}")),
        },
    }
    match group {
        None => {}
        Some(g) => match g.parse::<u32>() {
            Ok(n) => owner.gid = n,
            Err(_) => match find(&read(files, "etc/group")?, g) {
                Some(f) => {
                    owner.gid = f[2].parse().map_err(|_| {
                        LookupError::Unresolved(format!("/etc/group has a bad gid for {g}"))
                    })?
                }
                None => missing.push(format!("group {g}")),
            },
        },
    }
    Ok((owner, missing))
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

/// HOME as runc sets it for a container (BuildKit's steps, `cairn run`): the user's passwd
/// entry (`home`), else `/`, unless the environment has one. A step's key needs no field for
/// it: it follows from the user (keyed) and the image's files (the chain).
pub(crate) fn home_for(env: &[String], home: Option<&str>) -> Option<String> {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return None;
    }
    let home = home.filter(|h| !h.is_empty());
    Some(format!("HOME={}", home.unwrap_or("/")))
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
            f[2].parse::<u32>().map_err(|_| {
                LookupError::Unresolved(format!("/etc/passwd has a bad uid for {user}"))
            })?,
            f[3].parse::<u32>().map_err(|_| {
                LookupError::Unresolved(format!("/etc/passwd has a bad gid for {user}"))
            })?,
            Some(f[0].to_owned()),
            f.get(5).map(|h| (*h).to_owned()),
        ),
        (None, Ok(n)) => (n, 0, None, None),
        (None, Err(_)) => {
            return Err(LookupError::Unresolved(format!(
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
                    LookupError::Unresolved(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?;
                f[2].parse().map_err(|_| {
                    LookupError::Unresolved(format!("/etc/group has a bad gid for {g}"))
                })?
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
    fn home() {
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (&[], Some("/home/app"), Some("HOME=/home/app")),
            (&[], None, Some("HOME=/")),
            (&[], Some(""), Some("HOME=/")),
            (&["A=1", "HOMEDIR=/x"], Some("/root"), Some("HOME=/root")),
            (&["HOME=/env"], Some("/home/app"), None),
            (&["HOME="], None, None),
        ];
        for (env, home, want) in cases {
            assert_eq!(
                home_for(
                    &env.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    *home
                )
                .as_deref(),
                *want,
                "{env:?} {home:?}"
            );
        }
    }

    #[test]
    fn file_owners_are_resolved_as_buildkits_read_user() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        type Want = Result<(u32, u32, &'static [&'static str]), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("0", Ok((0, 0, &[]))),
            ("4242", Ok((4242, 4242, &[]))),
            ("app", Ok((1000, 1001, &[]))),
            ("app:staff", Ok((1000, 50, &[]))),
            ("app:7", Ok((1000, 7, &[]))),
            ("5:staff", Ok((5, 50, &[]))),
            ("4242:7", Ok((4242, 7, &[]))),
            ("nobody", Ok((0, 0, &["user nobody"]))),
            ("app:nogroup", Ok((1000, 1001, &["group nogroup"]))),
            ("7:nogroup", Ok((7, 7, &["group nogroup"]))),
            ("", Err("names no user")),
        ];
        for (spec, want) in cases {
            let got = resolve_file_owner(spec, &mut |f| read_from_root(dir.path(), f));
            match want {
                Ok((u, g, missing)) => {
                    let (owner, m) = got.unwrap();
                    let m: Vec<&str> = m.iter().map(String::as_str).collect();
                    assert_eq!(
                        (owner.uid, owner.gid, m.as_slice()),
                        (*u, *g, *missing),
                        "{spec}"
                    );
                }
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{spec}"),
            }
        }
    }

    #[test]
    fn without_files_names_are_root() {
        let dir = tempfile::tempdir().unwrap();
        let (owner, missing) =
            resolve_file_owner("root", &mut |f| read_from_root(dir.path(), f)).unwrap();
        assert_eq!((owner, missing.len()), (Owner { uid: 0, gid: 0 }, 1));
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
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{spec}"),
            }
        }
    }

    #[test]
    fn exec_user_edges() {
        let files = |f: &str| match f {
            "etc/passwd" => concat!(
                "root:x:0:0:root:/root:/bin/sh\n",
                "short:x:7\n",
                "app:x:1000:1001::/home/app:/bin/sh\n",
                "nohome:x:1002:1002\n",
                "badgid:x:1003:oops::/:/bin/sh\n",
            )
            .to_owned(),
            "etc/group" => concat!(
                "app:x:1001:app\n",
                "wheel:x:10:root,app\n",
                "docker:x:20:other,app\n",
                "short:x\n",
                "badgrp:x:nan:\n",
                "staff:x:50:\n",
            )
            .to_owned(),
            _ => String::new(),
        };
        type Want = Result<(u32, u32, &'static [u32], Option<&'static str>), &'static str>;
        let cases: &[(&str, Want)] = &[
            // Supplementary groups in /etc/group order, the primary one not twice.
            ("app", Ok((1000, 1001, &[1001, 10, 20], Some("/home/app")))),
            // A numeric group: no lookup, and no supplementary groups.
            ("app:7", Ok((1000, 7, &[7], Some("/home/app")))),
            ("0:staff", Ok((0, 50, &[50], Some("/root")))),
            // A uid without an entry: gid 0, no home; a named group still resolves.
            ("4242", Ok((4242, 0, &[0], None))),
            ("4242:staff", Ok((4242, 50, &[50], None))),
            // An entry without a home field.
            ("nohome", Ok((1002, 1002, &[1002], None))),
            // A line with too few fields is no entry.
            ("short", Err("unable to find user short")),
            ("7", Ok((7, 0, &[0], None))),
            ("app:short", Err("unable to find group short")),
            ("badgid", Err("/etc/passwd has a bad gid for badgid")),
            ("app:badgrp", Err("/etc/group has a bad gid for badgrp")),
        ];
        for (spec, want) in cases {
            let got = resolve_exec(spec, &files);
            match want {
                Ok((u, g, groups, home)) => {
                    let got = got.unwrap();
                    assert_eq!(
                        (got.uid, got.gid, got.groups.as_slice(), got.home.as_deref()),
                        (*u, *g, *groups, *home),
                        "{spec}"
                    );
                }
                Err(msg) => assert!(got.unwrap_err().to_string().contains(msg), "{spec}"),
            }
        }
    }

    #[test]
    fn an_image_without_user_files_runs_only_numeric_users() {
        let none = |_: &str| String::new();
        let root = resolve_exec("", &none).unwrap();
        assert_eq!(
            (root.uid, root.gid, root.groups, root.home),
            (0, 0, vec![0], None)
        );
        let n = resolve_exec("1000:1000", &none).unwrap();
        assert_eq!((n.uid, n.gid, n.groups), (1000, 1000, vec![1000]));
        let err = resolve_exec("root", &none).unwrap_err().to_string();
        assert!(err.contains("unable to find user root"), "{err}");
    }
}
