//! `.dockerignore` against what BuildKit sends: directories kept as the parents of
//! re-included paths, exceptions with wildcards, and the context a RUN bind mount shows.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use cairn_e2e::{Store, loaded_busybox, texts};

/// Writes `files` (path, content; a path ending in `/` is a directory) under `root`.
fn tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path.trim_end_matches('/'));
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
    }
}

/// Builds `ctx` to a local output; returns the output (in its temp dir) or the error text.
fn build(s: &Store, ctx: &Path) -> Result<(tempfile::TempDir, std::path::PathBuf), String> {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("out");
    let mut c = s.cmd(&["build", "-q", "-o"]);
    c.arg(format!("type=local,dest={}", local.display()))
        .arg(ctx);
    let out = c.output().unwrap();
    let (_, stderr) = texts(&out);
    if out.status.success() {
        Ok((dir, local))
    } else {
        Err(stderr)
    }
}

/// Every path below `root`, relative, sorted, directories ending in `/`.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                todo.push(e.path());
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn copy_of_a_directory_kept_for_an_exception_below_it() {
    // BuildKit's context transfer walks into `dir` (excluded by `*`) because `!dir/**` may
    // match below it, and sends `dir` as the parent of what it keeps: the COPY finds it.
    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY dir /dir\nCOPY */b.txt /wild/\n",
            ),
            (".dockerignore", "*\n!dir/**\n"),
            ("dir/a.txt", "a"),
            ("dir/sub/b.txt", "b"),
            ("dir/b.txt", "b"),
            ("other/o.txt", "o"),
        ],
    );
    let (_tmp, out) = build(&s, ctx.path()).unwrap();
    assert_eq!(
        listing(&out),
        [
            "dir/",
            "dir/a.txt",
            "dir/b.txt",
            "dir/sub/",
            "dir/sub/b.txt",
            "wild/",
            "wild/b.txt"
        ]
    );

    // A directory excluded with nothing re-included below it is not sent at all.
    fs::write(
        ctx.path().join(".dockerignore"),
        "*\n!dir/**\n!other/none\n",
    )
    .unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY other /o\n",
    )
    .unwrap();
    let err = build(&s, ctx.path()).unwrap_err();
    assert!(err.contains("other: excluded by .dockerignore"), "{err}");
}

#[test]
fn exceptions_with_wildcards_keep_what_buildkit_keeps() {
    // Traced through fsutil's filtered walk (MatchesUsingParentResults from the top, every
    // excluded directory entered since an exception has a wildcard): `!*/keep.txt` is
    // anchored one level down; `!**/*.md` matches at any depth and keeps a directory named
    // `x.md` whole, since a pattern that matched a parent counts for its children.
    let s = Store::new();
    let cases: [(&str, &[&str]); 3] = [
        ("*\n!*/keep.txt\n", &["a/", "a/keep.txt"]),
        (
            "*\n!**/*.md\n",
            &[
                "a/", "a/b/", "a/b/r.md", "a/r.md", "r.md", "x.md/", "x.md/in",
            ],
        ),
        (
            "a\n!*/b\n",
            &[
                ".dockerignore",
                "Dockerfile",
                "a/",
                "a/b/",
                "a/b/keep.txt",
                "a/b/r.md",
                "keep.txt",
                "r.md",
                "x.md/",
                "x.md/in",
            ],
        ),
    ];
    for (ignore, want) in cases {
        let ctx = tempfile::tempdir().unwrap();
        tree(
            ctx.path(),
            &[
                ("Dockerfile", "FROM scratch\nCOPY . /\n"),
                (".dockerignore", ignore),
                ("keep.txt", ""),
                ("r.md", ""),
                ("a/keep.txt", ""),
                ("a/o", ""),
                ("a/r.md", ""),
                ("a/b/keep.txt", ""),
                ("a/b/r.md", ""),
                ("x.md/in", ""),
            ],
        );
        let (_tmp, out) = build(&s, ctx.path()).unwrap();
        assert_eq!(listing(&out), want, "{ignore:?}");
    }
}

#[test]
fn files_the_whole_path_check_excludes_arrive_empty() {
    // fsutil's walk sends docs/r.md (`docs` is skipped at `docs`, already excluded by `*`,
    // so only the file itself is tried against it), but its data is read through
    // filterFS.Open, whose whole-path check matches `docs` as an ancestor and refuses: the
    // file arrives with its mode and no content. In a COPY and in a bind mount alike.
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox
COPY . /ctx
COPY docs/r.md /one.md
\
                 RUN --mount=type=bind,target=/m stat -c '%s %n' /m/r.md /m/docs/r.md > /mount.txt
",
            ),
            (".dockerignore", "*\n!**/*.md\ndocs\n"),
            ("r.md", "root"),
            ("docs/r.md", "docs"),
            ("docs/o.txt", "o"),
        ],
    );
    let (_tmp, out) = build(&s, ctx.path()).unwrap();
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(listing(&out.join("ctx")), ["docs/", "docs/r.md", "r.md"]);
    assert_eq!(read("ctx/r.md"), "root");
    assert_eq!(read("ctx/docs/r.md"), "");
    assert_eq!(read("one.md"), "");
    assert_eq!(read("mount.txt"), "4 /m/r.md\n0 /m/docs/r.md\n");
}

#[test]
fn a_bind_mount_of_the_context_leaves_out_ignored_files() {
    let s = loaded_busybox();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("host-secret"), "host").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --mount=type=bind,target=/ctx cd /ctx && find . | sort > /whole.txt \
                 && cat sub/kept.txt > /kept.txt && readlink esc > /link.txt \
                 && { test -e esc/host-secret && echo leaked || echo confined; } > /esc.txt\n\
                 RUN --mount=type=bind,source=sub,target=/s,rw cd /s && echo new > made \
                 && echo changed > kept.txt && find . | sort > /sub.txt\n\
                 RUN --mount=type=bind,source=sub/deep,target=/d stat -c %i /d > /inode.txt\n\
                 RUN --mount=type=bind,target=/c2,source=. test ! -e /c2/secret.key\n",
            ),
            (".dockerignore", "*.key\nsub/*.log\nnode_modules\n"),
            ("secret.key", "k"),
            ("sub/kept.txt", "kept"),
            ("sub/debug.log", "log"),
            (
                "sub/deep/x.key",
                "not ignored: *.key is anchored at the root",
            ),
            ("node_modules/m/index.js", ""),
        ],
    );
    // A symlink in the context stays a symlink: it resolves inside the container, never on
    // the host.
    symlink(outside.path(), ctx.path().join("esc")).unwrap();
    let (_tmp, out) = build(&s, ctx.path()).unwrap();
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(
        read("whole.txt"),
        ".\n./.dockerignore\n./Dockerfile\n./esc\n./sub\n./sub/deep\n./sub/deep/x.key\n\
         ./sub/kept.txt\n"
    );
    assert_eq!(read("kept.txt"), "kept");
    assert_eq!(read("link.txt"), format!("{}\n", outside.path().display()));
    assert_eq!(read("esc.txt"), "confined\n");
    assert_eq!(
        read("sub.txt"),
        ".\n./deep\n./deep/x.key\n./kept.txt\n./made\n"
    );
    // A writable mount writes to a scratch layer, never to the context.
    assert!(!ctx.path().join("sub/made").exists());
    assert_eq!(
        fs::read_to_string(ctx.path().join("sub/kept.txt")).unwrap(),
        "kept"
    );
    // Nothing is left out below sub/deep: the context itself is mounted, not a copy.
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(ctx.path().join("sub/deep")).unwrap().ino();
    assert_eq!(read("inode.txt"), format!("{inode}\n"));

    // An ignored source is not in the context.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,source=secret.key,target=/k cat /k\n",
    )
    .unwrap();
    let err = build(&s, ctx.path()).unwrap_err();
    assert!(err.contains("secret.key"), "{err}");
    assert!(err.contains(".dockerignore"), "{err}");
}

#[test]
fn a_bind_mount_is_keyed_by_the_filtered_context() {
    // Changing an ignored file does not change what the step sees, so it stays cached.
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN --mount=type=bind,target=/ctx ls /ctx > /ls.txt\n",
            ),
            (".dockerignore", "*.log\n"),
            ("a.txt", "a"),
            ("b.log", "1"),
        ],
    );
    let (_t1, out) = build(&s, ctx.path()).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("ls.txt")).unwrap(),
        "Dockerfile\na.txt\n"
    );
    fs::write(ctx.path().join("b.log"), "2").unwrap();
    let mut c = s.cmd(&["build", "--progress", "plain", "-o"]);
    let dir = tempfile::tempdir().unwrap();
    c.arg(format!(
        "type=local,dest={}",
        dir.path().join("o").display()
    ))
    .arg(ctx.path());
    let o = c.output().unwrap();
    let (_, stderr) = texts(&o);
    assert!(o.status.success(), "{stderr}");
    // Plain progress: `#N [stage i/n] RUN ...`, then `#N CACHED`.
    let id = stderr
        .lines()
        .find(|l| l.contains("] RUN --mount=type=bind"))
        .and_then(|l| l.split_once(' '))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no RUN step in\n{stderr}"));
    assert!(
        stderr.lines().any(|l| l == format!("{id} CACHED")),
        "{stderr}"
    );
}

#[test]
fn buildah_conformance_cases_give_what_todays_buildkit_sends() {
    // The .dockerignore cases of buildah's conformance suite where docker 20.10 (BuildKit 0.8)
    // gives another image. Its fsutil walker sent an excluded directory itself when a literal
    // exception lay below it (`folder/`), and skipped any excluded directory when an exception
    // had a wildcard. Today's filterFS enters those directories without sending them, and sends
    // them only as the parents of a path an exception keeps; the results below are its.
    let s = Store::new();
    let deep = [
        ("subdir-e/file-a.txt", ""),
        ("subdir-e/subdir-f/file-a.txt", ""),
        ("subdir-e/subdir-f/subdir-g/subdir-b", ""),
    ];
    let both = "FROM scratch\nCOPY . dot/\nCOPY * star/\n";
    // (Dockerfile, .dockerignore, files, wanted listing)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        // allowlist-subsubdir-nofile/-nosubdir: `folder` is walked, nothing kept, not sent.
        (
            "FROM scratch\nADD . .\n",
            "**\n!folder/subfolder/file\n!keep\n",
            &[("folder/file", ""), ("keep", "")],
            &["keep"],
        ),
        // exceptions-skip
        (
            "FROM scratch\nCOPY ./ ./\n",
            "volume/\n!**/oneline.txt\n",
            &[("volume/data/oneline.txt", "")],
            &[
                ".dockerignore",
                "Dockerfile",
                "volume/",
                "volume/data/",
                "volume/data/oneline.txt",
            ],
        ),
        // exceptions-weirdness-1
        (
            "FROM scratch\nCOPY ./ /newdir\n",
            "subdir\n!*/sub1*\n",
            &[("subdir/sub1.txt", ""), ("subdir/sub2.txt", "")],
            &[
                "newdir/",
                "newdir/.dockerignore",
                "newdir/Dockerfile",
                "newdir/subdir/",
                "newdir/subdir/sub1.txt",
            ],
        ),
        // exclude-deep-subdir-dot-2 and -star-2
        (
            both,
            "**/subdir-f\n!**/subdir-g",
            &deep,
            &[
                "dot/",
                "dot/.dockerignore",
                "dot/Dockerfile",
                "dot/subdir-e/",
                "dot/subdir-e/file-a.txt",
                "dot/subdir-e/subdir-f/",
                "dot/subdir-e/subdir-f/subdir-g/",
                "dot/subdir-e/subdir-f/subdir-g/subdir-b",
                "star/",
                "star/.dockerignore",
                "star/Dockerfile",
                "star/file-a.txt",
                "star/subdir-f/",
                "star/subdir-f/subdir-g/",
                "star/subdir-f/subdir-g/subdir-b",
            ],
        ),
        // exclude-kind-of-deep-subdir-dot and -star
        (
            both,
            "**/subdir-e\n!**/subdir-f",
            &deep,
            &[
                "dot/",
                "dot/.dockerignore",
                "dot/Dockerfile",
                "dot/subdir-e/",
                "dot/subdir-e/subdir-f/",
                "dot/subdir-e/subdir-f/file-a.txt",
                "dot/subdir-e/subdir-f/subdir-g/",
                "dot/subdir-e/subdir-f/subdir-g/subdir-b",
                "star/",
                "star/.dockerignore",
                "star/Dockerfile",
                "star/subdir-f/",
                "star/subdir-f/file-a.txt",
                "star/subdir-f/subdir-g/",
                "star/subdir-f/subdir-g/subdir-b",
            ],
        ),
    ];
    for (dockerfile, ignore, files, want) in cases {
        let ctx = tempfile::tempdir().unwrap();
        tree(
            ctx.path(),
            &[("Dockerfile", dockerfile), (".dockerignore", ignore)],
        );
        tree(ctx.path(), files);
        let (_tmp, out) = build(&s, ctx.path()).unwrap();
        let mut want = want.to_vec();
        want.sort_unstable();
        assert_eq!(listing(&out), want, "{ignore:?}");
    }
}
