//! `.dockerignore` against what BuildKit sends: directories kept as the parents of
//! re-included paths, exceptions with wildcards, and the context a RUN bind mount shows.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::{Store, texts};

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
