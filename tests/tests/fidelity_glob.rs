//! COPY and ADD sources against what BuildKit gives: wildcards (one match, no match, `**`,
//! files between directories), several sources to one destination, symbolic `--chmod` and
//! `--parents` with its `/./` pivot and `**` patterns.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_e2e::{Store, loaded_busybox, texts};

/// A context holding `dockerfile` and `files` (path, content); a path ending in `/` is an
/// empty directory.
fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
            continue;
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

/// Builds `ctx` to a local output; returns it (kept alive by the temp dir).
fn build(s: &Store, ctx: &Path) -> (tempfile::TempDir, PathBuf) {
    let (dir, out, _) = s.build_local(&[], ctx);
    (dir, out)
}

/// Every path below `dir`, relative, sorted, directories with a trailing `/`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &e.path(), out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A build that must fail; returns its standard error.
fn build_fails(s: &Store, ctx: &Path) -> String {
    let out = s.cmd(&["build", "-q"]).arg(ctx).output().unwrap();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn wildcard_with_one_match_copies_to_a_file_destination() {
    let s = Store::new();
    // BuildKit's testCopyWildcards: a wildcard is not "several sources"; its one match is
    // copied as the destination file.
    let ctx = context(
        "FROM scratch\nCOPY *.jar /app.jar\nCOPY f*.go foo2.go\n",
        &[("one.jar", "jar"), ("foo.go", "foo")],
    );
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(fs::read_to_string(out.join("app.jar")).unwrap(), "jar");
    assert_eq!(fs::read_to_string(out.join("foo2.go")).unwrap(), "foo");
}

#[test]
fn wildcard_skips_what_is_not_a_directory_on_the_way() {
    let s = Store::new();
    // `x/*/a.txt` with a plain file under x/: the file simply does not match, as in
    // BuildKit's walk; neither does a directory without a.txt, nor an ignored match.
    let ctx = context(
        "FROM scratch\nCOPY x/*/a.txt /d/\nCOPY */a.txt /e/\n",
        &[
            ("x/plain", "p"),
            ("x/sub/a.txt", "a"),
            ("x/empty/", ""),
            ("x/gone/a.txt", "ignored"),
            ("y/a.txt", "y"),
            (".dockerignore", "x/gone\n"),
        ],
    );
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(tree(&out), ["d/", "d/a.txt", "e/", "e/a.txt"]);
    assert_eq!(fs::read_to_string(out.join("d/a.txt")).unwrap(), "a");
    assert_eq!(fs::read_to_string(out.join("e/a.txt")).unwrap(), "y");
}

#[test]
fn wildcard_matching_nothing_is_not_an_error() {
    let s = Store::new();
    // BuildKit copies each source on its own with AllowEmptyWildcard: one matching nothing
    // copies nothing (not even the destination directory is made), beside others or alone.
    // A missing literal source still fails, and so does a missing directory before the
    // first wildcard (BuildKit's walk of it fails).
    let ctx = context(
        "FROM scratch\nCOPY foo nomatch* /\nCOPY nomatch* /none/\nCOPY foo d*/no* /d/\n",
        &[("foo", "contents0")],
    );
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(tree(&out), ["d/", "d/foo", "foo"]);
    assert_eq!(fs::read_to_string(out.join("foo")).unwrap(), "contents0");
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY nomatch* missing /d/\n",
    )
    .unwrap();
    let err = build_fails(&s, ctx.path());
    assert!(
        err.contains("missing: not found in the build context"),
        "{err}"
    );
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY no/*/match /d/\n",
    )
    .unwrap();
    let err = build_fails(&s, ctx.path());
    assert!(err.contains("no: not found in the build context"), "{err}");
}

#[test]
fn double_star_is_a_single_level_without_parents_and_any_depth_with() {
    let s = Store::new();
    // Without --parents BuildKit resolves a wildcard with filepath.Match on each path of a
    // walk, where `**` is `*` twice: one level, never a slash. With --parents the source is
    // an include pattern, where `**` is any number of directories (none too).
    let ctx = context(
        "FROM scratch\nCOPY src/**/*.go /g/\nCOPY **/a.txt /h/\n\
         COPY --parents src/**/*.go /p/\nCOPY --parents **/a.txt /q/\n",
        &[
            ("src/top.go", "t"),
            ("src/a/one.go", "1"),
            ("src/a/b/deep.go", "d"),
            ("src/a/b/not.txt", "n"),
            ("a.txt", "root"),
            ("x/sub/a.txt", "deep"),
            ("y/a.txt", "y"),
        ],
    );
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(
        tree(&out),
        [
            "g/",
            "g/one.go",
            "h/",
            "h/a.txt",
            "p/",
            "p/src/",
            "p/src/a/",
            "p/src/a/b/",
            "p/src/a/b/deep.go",
            "p/src/a/one.go",
            "p/src/top.go",
            "q/",
            "q/a.txt",
            "q/x/",
            "q/x/sub/",
            "q/x/sub/a.txt",
            "q/y/",
            "q/y/a.txt",
        ]
    );
    assert_eq!(fs::read_to_string(out.join("h/a.txt")).unwrap(), "y");
}

#[test]
fn several_sources_are_copied_one_after_the_other() {
    let s = Store::new();
    // BuildKit refuses nothing here: each source is copied on its own to the destination as
    // written. Without a trailing slash a file source becomes (or replaces) the destination
    // file, a directory source makes it a directory and later files go into it; a directory
    // onto a file the copy made fails as fsutil does.
    let ctx = context(
        "FROM scratch\nCOPY a.txt b.txt /f\nCOPY d1 d2 /m\nCOPY d1 a.txt /n\n\
         COPY *.txt /w\n",
        &[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("d1/one", "1"),
            ("d2/two", "2"),
        ],
    );
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(
        tree(&out),
        ["f", "m/", "m/one", "m/two", "n/", "n/a.txt", "n/one", "w"]
    );
    assert_eq!(fs::read_to_string(out.join("f")).unwrap(), "b");
    assert_eq!(fs::read_to_string(out.join("w")).unwrap(), "b");
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.txt d1 /q\n",
    )
    .unwrap();
    let err = build_fails(&s, ctx.path());
    assert!(err.contains("cannot copy to non-directory: /q"), "{err}");
}

#[test]
fn symbolic_chmod_is_read_as_buildkit_reads_it() {
    let s = loaded_busybox();
    // BuildKit applies a symbolic --chmod with tonistiigi/dchapes-mode (BSD setmode): `go=u`
    // copies the owner's bits, `X` is x for directories and already executable files.
    let ctx = context(
        "FROM busybox\n\
         COPY --chmod=go=u f /go-u\n\
         COPY --chmod=u+x f /u-x\n\
         COPY --chmod=a=rX f /a-rx\n\
         COPY --chmod=a=rX x /a-rx-exec\n\
         COPY --chmod=a=rX d /a-rx-dir/\n\
         COPY --chmod=u=rwx,g=rx,o= f /list\n\
         COPY --chmod=o+w-r,g-r f /chain\n\
         COPY --chmod=g=o,u-w f /g-o\n\
         RUN stat -c '%n %a' /go-u /u-x /a-rx /a-rx-exec /a-rx-dir/sub /list /chain /g-o \
         > /stat.txt\n",
        &[("f", "f"), ("x", "x"), ("d/sub/", "")],
    );
    fs::set_permissions(ctx.path().join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(ctx.path().join("x"), fs::Permissions::from_mode(0o744)).unwrap();
    fs::set_permissions(ctx.path().join("d/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    let (_d, out) = build(&s, ctx.path());
    assert_eq!(
        fs::read_to_string(out.join("stat.txt")).unwrap(),
        "/go-u 666\n/u-x 740\n/a-rx 444\n/a-rx-exec 555\n/a-rx-dir/sub 555\n/list 750\n\
         /chain 602\n/g-o 400\n"
    );
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --chmod=u+q f /\n",
    )
    .unwrap();
    let err = build_fails(&s, ctx.path());
    assert!(err.contains("--chmod"), "{err}");
}

#[test]
fn copy_parents_keeps_what_is_below_the_pivot() {
    let s = loaded_busybox();
    // BuildKit's testCopyRelativeParents and testCopyParentsMissingDirectory: `/./` is the
    // pivot (only what is below it is kept), `**` is any number of directories, a wildcard
    // matching nothing copies nothing, and a wildcard that meets a file on its way skips it.
    let ctx = context(
        "FROM busybox AS base\n\
         WORKDIR /test\n\
         RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 && touch a/b/c/d/foo \
         a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz a/plain\n\
         FROM scratch\n\
         COPY --from=base --parents /test/a/b/./c/d /middle/\n\
         COPY --from=base --parents /test/a/b/c/d/. /end/\n\
         COPY --from=base --parents ./test/a/b/c/d /start/\n\
         COPY --from=base --parents /test/a/./b/./c /double/\n\
         COPY --from=base --parents /test/a/./*/c /wildcard/\n\
         COPY --from=base --parents /test/a/b*/./c/**/e /doublewildcard/\n\
         COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /inputs/\n\
         COPY --from=base --parents /test/a/b3*/c /none/\n\
         COPY --from=base --parents /test/a/b/./c3* /afterpivot/\n\
         COPY --from=base --parents /test/a/*/c/d/foo /nested/\n\
         COPY --from=base --parents /test/x*/./c /nopivot/\n",
        &[],
    );
    let (_d, out) = build(&s, ctx.path());
    let got = tree(&out);
    let under = |top: &str| -> Vec<String> {
        got.iter()
            .filter_map(|p| p.strip_prefix(&format!("{top}/")))
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        under("middle"),
        ["c/", "c/d/", "c/d/e/", "c/d/e/bay", "c/d/foo"]
    );
    assert_eq!(
        under("end"),
        [
            "test/",
            "test/a/",
            "test/a/b/",
            "test/a/b/c/",
            "test/a/b/c/d/",
            "test/a/b/c/d/e/",
            "test/a/b/c/d/e/bay",
            "test/a/b/c/d/foo"
        ]
    );
    assert_eq!(under("start"), under("end"));
    assert_eq!(
        under("double"),
        [
            "b/",
            "b/c/",
            "b/c/d/",
            "b/c/d/e/",
            "b/c/d/e/bay",
            "b/c/d/foo"
        ]
    );
    assert_eq!(
        under("wildcard"),
        [
            "b/",
            "b/c/",
            "b/c/d/",
            "b/c/d/e/",
            "b/c/d/e/bay",
            "b/c/d/foo",
            "b2/",
            "b2/c/",
            "b2/c/d/",
            "b2/c/d/e/",
            "b2/c/d/e/bar"
        ]
    );
    assert_eq!(
        under("doublewildcard"),
        ["c/", "c/d/", "c/d/e/", "c/d/e/bar", "c/d/e/bay"]
    );
    assert_eq!(
        under("inputs"),
        [
            "c/",
            "c/d/",
            "c/d/e/",
            "c/d/e/bar",
            "d/",
            "d/e/",
            "d/e/baz",
            "d/e2/",
            "d/e2/baz"
        ]
    );
    // The pivot exists, so the destination is made even though nothing matched.
    assert!(under("none").is_empty(), "{got:?}");
    assert!(under("afterpivot").is_empty(), "{got:?}");
    assert!(got.iter().any(|p| p == "none/"), "{got:?}");
    assert!(got.iter().any(|p| p == "afterpivot/"), "{got:?}");
    // No pivot matched: BuildKit's empty wildcard copies nothing, makes nothing.
    assert!(!got.iter().any(|p| p.starts_with("nopivot")), "{got:?}");
    assert_eq!(
        under("nested"),
        [
            "test/",
            "test/a/",
            "test/a/b/",
            "test/a/b/c/",
            "test/a/b/c/d/",
            "test/a/b/c/d/foo"
        ]
    );
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS base\nFROM scratch\nCOPY --from=base --parents /test/nonexistent /out/\n",
    )
    .unwrap();
    let err = build_fails(&s, ctx.path());
    assert!(err.contains("test/nonexistent: not found"), "{err}");
}

#[test]
fn names_that_are_not_utf8_are_copied_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Store::new();
    // Docker sends such names in the context and BuildKit writes their bytes to the layer;
    // a directory with one is walked too, and a stage's are copied the same way.
    let ctx = context(
        "FROM scratch AS s\nCOPY . /in/\nFROM scratch\nCOPY d /d/\nCOPY --from=s /in/ /x/\n",
        &[("d/plain", "p")],
    );
    let odd = OsStr::from_bytes(b"caf\xe9");
    fs::write(ctx.path().join("d").join(odd), "latin1").unwrap();
    fs::create_dir(ctx.path().join("d").join(OsStr::from_bytes(b"dir\xff"))).unwrap();
    fs::write(
        ctx.path()
            .join("d")
            .join(OsStr::from_bytes(b"dir\xff"))
            .join("inner"),
        "inner",
    )
    .unwrap();
    let (_d, out) = build(&s, ctx.path());
    for top in ["d", "x/d"] {
        let d = out.join(top);
        assert_eq!(fs::read_to_string(d.join(odd)).unwrap(), "latin1", "{top}");
        assert_eq!(
            fs::read_to_string(d.join(OsStr::from_bytes(b"dir\xff")).join("inner")).unwrap(),
            "inner",
            "{top}"
        );
    }
}
