//! Who a RUN step is on the host: root's builds map the container's ids to an unprivileged
//! range reserved in the store, errors for ids outside the mapping say what to do, and a
//! heredoc's name never names a file on the host.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_e2e::{Store, context, is_root, loaded_busybox, texts};

fn build(s: &Store, ctx: &Path) -> std::process::Output {
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.arg(ctx);
    c.output().unwrap()
}

/// The `container host size` lines a step printed from /proc/self/{uid,gid}_map.
fn maps(stderr: &str) -> Vec<(u64, u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1;
            let mut f = rest.strip_prefix("MAP ")?.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn container_root_is_never_host_root() {
    let s = loaded_busybox();
    let ctx = context(
        "FROM busybox\n\
         RUN sed 's/^ */MAP /' /proc/self/uid_map; sed 's/^ */MAP /' /proc/self/gid_map\n\
         RUN touch /made-here\n",
    );
    let out = build(&s, ctx.path());
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let lines = maps(&stderr);
    assert!(!lines.is_empty(), "no id map printed:\n{stderr}");
    for (container, host, size) in &lines {
        // Container root stands for an unprivileged host id, and no range reaches host root.
        assert!(
            *host > 0 && *size <= 1 << 20,
            "container {container} maps to host {host} (+{size}):\n{stderr}"
        );
    }
    let root_host = lines.iter().find(|l| l.0 == 0).unwrap().1;
    if is_root() {
        // The range root reserved is recorded in the store and used again.
        let text = fs::read_to_string(s.root.join("userns-range")).unwrap();
        let start: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(start, root_host, "{text}");
        let again = build(&s, ctx.path());
        assert_eq!(
            maps(&texts(&again).1),
            lines,
            "the range changed between builds"
        );
    } else {
        assert_eq!(root_host, u64::from(own_uid()), "rootless root is the user");
    }
    // What the store unpacked for overlay belongs to the mapped ids, not to host root.
    let layers = s.root.join("layers/sha256");
    let mut seen = 0;
    for e in fs::read_dir(&layers).unwrap().flatten() {
        let bin = e.path().join("rootfs/bin/busybox");
        if let Ok(m) = fs::symlink_metadata(&bin) {
            seen += 1;
            assert_eq!(u64::from(m.uid()), root_host, "{}", bin.display());
        }
    }
    // The copy snapshotter unpacks nothing into layers/; overlay is what this machine has.
    assert!(
        seen > 0,
        "no unpacked base layer under {}",
        layers.display()
    );
}

fn own_uid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn a_user_outside_the_mapping_is_told_what_to_do() {
    let s = loaded_busybox();
    // 70000 lies past the 65536 ids of root's range and of a typical subordinate range.
    let ctx = context("FROM busybox\nUSER 70000\nRUN id\n");
    let out = build(&s, ctx.path());
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "USER 70000 ran:\n{stderr}");
    assert!(stderr.contains("setuid 70000"), "{stderr}");
    assert!(
        stderr.contains("the build's ids are 0-") && stderr.contains("/etc/subuid"),
        "the error does not say what to do:\n{stderr}"
    );
}

/// The range a warning or error suggested (`--add-subuids START-END`).
fn suggested_range(text: &str) -> (u64, u64) {
    let rest = text
        .split("--add-subuids ")
        .nth(1)
        .unwrap_or_else(|| panic!("no range suggested:\n{text}"));
    let word = rest.split_whitespace().next().unwrap();
    let (a, b) = word.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn the_subuid_hint_names_a_free_range() {
    let stderr = if is_root() {
        hint_for_a_user_without_ranges()
    } else {
        // A user with ranges is given the hint when an id lies past them.
        let s = loaded_busybox();
        let ctx = context("FROM busybox\nUSER 70000\nRUN id\n");
        texts(&build(&s, ctx.path())).1
    };
    let (start, end) = suggested_range(&stderr);
    assert_eq!(end - start + 1, 65536, "{stderr}");
    for f in ["/etc/subuid", "/etc/subgid"] {
        for line in fs::read_to_string(f).unwrap().lines() {
            let v: Vec<&str> = line.split(':').collect();
            let (s0, n): (u64, u64) = (v[1].parse().unwrap(), v[2].parse().unwrap());
            assert!(
                end < s0 || start >= s0 + n,
                "suggested {start}-{end} overlaps {line} in {f}:\n{stderr}"
            );
        }
    }
}

/// The warning a user without ranges gets (made here by root, with the range a typical Debian
/// machine's first user owns, 100000-165535, taken).
fn hint_for_a_user_without_ranges() -> String {
    cairn_e2e::ensure_user("cairn-e2e-owner");
    cairn_e2e::ensure_user("cairn-e2e-noranges");
    for f in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(f).unwrap_or_default();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("cairn-e2e-noranges:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = if text.contains("cairn-e2e-owner:") {
            text
        } else {
            format!("{text}cairn-e2e-owner:100000:65536\n")
        };
        fs::write(f, text).unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("store");
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let ctx = context("FROM scratch\nRUN true\n");
    fs::set_permissions(ctx.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = cairn_e2e::cairn_as("cairn-e2e-noranges", home.path(), &store);
    c.args(["build", "--progress", "plain"]).arg(ctx.path());
    texts(&c.output().unwrap()).1
}

#[test]
fn a_heredoc_name_never_names_a_host_file() {
    let s = loaded_busybox();
    let unique = format!("cairn-heredoc-{}", std::process::id());
    let host_file = std::env::temp_dir().join(&unique);
    let _ = fs::remove_file(&host_file);
    let escaping = [
        format!("{}", host_file.display()),
        format!("../../{unique}"),
        format!("../{unique}"),
    ];
    for name in &escaping {
        let ctx = context(&format!(
            "FROM busybox\nRUN <<{name}\n#!/bin/sh\necho pwned\n{name}\n"
        ));
        let out = build(&s, ctx.path());
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "<<{name} built:\n{stderr}");
        assert!(stderr.contains("heredoc name"), "{stderr}");
        assert!(
            !host_file.exists(),
            "<<{name} wrote {}",
            host_file.display()
        );
        for dir in [
            s.root.join("tmp"),
            s.root.clone(),
            s.root.parent().unwrap().into(),
        ] {
            assert!(
                !dir.join(&unique).exists(),
                "<<{name} wrote {}",
                dir.join(&unique).display()
            );
        }
    }
    // A plain name still runs as a script under /dev/pipes, as BuildKit runs it.
    let ctx = context("FROM busybox\nRUN <<run.sh\n#!/bin/sh\necho \"SCRIPT $0\"\nrun.sh\n");
    let out = build(&s, ctx.path());
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SCRIPT /dev/pipes/run.sh"), "{stderr}");
}
