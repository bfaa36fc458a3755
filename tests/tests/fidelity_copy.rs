//! COPY and ADD against what BuildKit gives: the parent directories a COPY layer carries and
//! the metadata of a destination directory that already exists.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_e2e::{Store, loaded_busybox, ok};

/// A directory or file entry of a layer: (mode, uid, gid, mtime).
type Meta = (u32, u64, u64, u64);

/// Builds `ctx` into an OCI layout with uncompressed layers and returns, per layer, its
/// entries by name (none for the base's); plus the local output of the same build.
fn build(s: &Store, ctx: &Path) -> (Vec<BTreeMap<String, Meta>>, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let mut c = s.cmd(&[
        "build",
        "-q",
        "--compression-format",
        "uncompressed",
        "-o",
        &format!("type=oci,dest={}", layout.display()),
    ]);
    c.arg(ctx).env("SOURCE_DATE_EPOCH", "1700000000");
    ok(c);
    let layers: Vec<BTreeMap<String, Meta>> = cairn_e2e::layout::read(&layout)
        .layers
        .into_iter()
        .map(|l| {
            l.into_iter()
                .map(|(k, e)| (k, (e.mode, e.uid, e.gid, e.mtime)))
                .collect()
        })
        .collect();
    let local = out.path().join("local");
    let mut c = s.cmd(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", local.display()),
    ]);
    c.arg(ctx).env("SOURCE_DATE_EPOCH", "1700000000");
    ok(c);
    (layers, out)
}

const EPOCH: u64 = 1_700_000_000;

#[test]
fn copy_layers_carry_the_existing_parents() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    // As BuildKit: every parent of what a COPY writes is in its layer with the metadata it
    // has (so whoever stacks the layers keeps /tmp 1777 and a home 0700 owned by its user);
    // the directory an entry is made in is modified now, the ones above keep their time.
    // Missing parents are made 0755, owned by --chown's user.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN mkdir -p /home/dev && chown 1000:1000 /home/dev && chmod 700 /home/dev\n\
         COPY f /tmp/f\n\
         COPY f /home/dev/f\n\
         COPY --chown=1000:1000 f /opt/new/deep/f\n\
         COPY f /usr/bin/\n\
         RUN stat -c '%n %a %u:%g' /tmp /home /home/dev /opt /opt/new /opt/new/deep /usr \
         /usr/bin > /stat.txt\n\
         USER 1000\n\
         RUN mkdir /home/dev/made && touch /opt/new/deep/g /tmp/g\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path());
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    assert_eq!(
        stat,
        "/tmp 1777 0:0\n/home 755 0:0\n/home/dev 700 1000:1000\n/opt 755 1000:1000\n\
         /opt/new 755 1000:1000\n/opt/new/deep 755 1000:1000\n/usr 755 0:0\n/usr/bin 755 0:0\n"
    );
    // Layers: busybox, the RUN, then the four COPY steps.
    let copies = &layers[2..6];
    let want: [&[(&str, Meta)]; 4] = [
        &[("tmp", (0o1777, 0, 0, EPOCH))],
        // /home as the RUN left it, time and all.
        &[
            ("home", layers[1]["home"]),
            ("home/dev", (0o700, 1000, 1000, EPOCH)),
        ],
        &[
            ("opt", (0o755, 1000, 1000, EPOCH)),
            ("opt/new", (0o755, 1000, 1000, EPOCH)),
            ("opt/new/deep", (0o755, 1000, 1000, EPOCH)),
        ],
        // The base's /usr, untouched: its time is the base's.
        &[("usr", (0o755, 0, 0, 0)), ("usr/bin", (0o755, 0, 0, EPOCH))],
    ];
    for (layer, want) in copies.iter().zip(want) {
        for (name, meta) in want {
            assert_eq!(layer.get(*name), Some(meta), "{name} in {layer:?}");
        }
    }
}

#[test]
fn copy_into_an_existing_directory_keeps_its_owner_and_mode() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("d")).unwrap();
    fs::write(ctx.path().join("d/a"), "a").unwrap();
    fs::set_permissions(ctx.path().join("d"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(ctx.path().join("d/a"), fs::Permissions::from_mode(0o644)).unwrap();
    // BuildKit leaves a destination directory that exists as it is, whether named by the
    // working directory, with a trailing slash or without, and with --chown or --chmod. One
    // it makes is made before the copy, as the parents are: 0755 (or an octal --chmod's
    // mode) and owned by --chown's user, never the source directory's mode. (Its parents
    // stay 0755 with --chmod, where BuildKit now gives them the mode: see copy.rs.)
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN mkdir /app /x /y /z && chown 1000:1000 /app /x /y /z && chmod 750 /app /x \
         && chmod 700 /y /z\n\
         WORKDIR /app\n\
         COPY . .\n\
         COPY d/ /x/\n\
         COPY --chown=2000:2000 d /y\n\
         COPY --chmod=777 d /z\n\
         COPY d /new\n\
         COPY --chmod=700 --chown=3000:3000 d /new2/deep/\n\
         RUN stat -c '%n %a %u:%g' /app /x /y /z /new /y/a /new2/deep /new2/deep/a \
         > /stat.txt\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path());
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    assert_eq!(
        stat,
        "/app 750 1000:1000\n/x 750 1000:1000\n/y 700 1000:1000\n/z 700 1000:1000\n\
         /new 755 0:0\n/y/a 644 2000:2000\n/new2/deep 700 3000:3000\n\
         /new2/deep/a 700 3000:3000\n"
    );
    let want: [(&str, Meta); 4] = [
        ("app", (0o750, 1000, 1000, EPOCH)),
        ("x", (0o750, 1000, 1000, EPOCH)),
        ("y", (0o700, 1000, 1000, EPOCH)),
        ("z", (0o700, 1000, 1000, EPOCH)),
    ];
    // Layers: busybox, the RUN, WORKDIR's (empty: /app exists), then COPY . . and the three
    // into /x, /y, /z.
    assert!(layers[2].is_empty(), "{:?}", layers[2]);
    for (layer, (name, meta)) in layers[3..7].iter().zip(want) {
        assert_eq!(layer.get(name), Some(&meta), "{name} in {layer:?}");
    }
}

#[test]
fn workdir_layers_carry_the_existing_parents() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    // WORKDIR makes a missing directory as a layer; like a COPY's, the layer holds the
    // parents as the image has them, so the next step still sees /tmp 1777.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nWORKDIR /tmp/w/x\nRUN stat -c '%n %a %u:%g' /tmp /tmp/w > /stat.txt\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path());
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    assert_eq!(stat, "/tmp 1777 0:0\n/tmp/w 755 0:0\n");
    assert_eq!(layers[1].get("tmp"), Some(&(0o1777, 0, 0, EPOCH)));
}

/// A symlink a COPY wrote is followed by a later COPY's destination, as the step's own
/// filesystem would follow it (BuildKit copies into the snapshot the earlier step left).
#[test]
fn a_later_copy_follows_a_symlink_an_earlier_copy_wrote() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    fs::create_dir(ctx.path().join("d")).unwrap();
    std::os::unix::fs::symlink("/srv", ctx.path().join("d/lnk")).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN mkdir /srv\nCOPY d/ /opt/\nCOPY f /opt/lnk/f\n\
         RUN test -f /srv/f && test -L /opt/lnk\n",
    )
    .unwrap();
    let mut c = s.cmd(&["build", "-q", "--no-cache"]);
    c.arg(ctx.path());
    ok(c);
}

/// A source named through a symlink whose target climbs twice (`../../x`) climbs twice, as
/// BuildKit resolves it (the link's directory joined with its target); the resolver once
/// let the second `..` cancel the first.
#[test]
fn a_source_through_a_link_climbing_twice_climbs_twice() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    for (path, text) in [("x/f", "outer"), ("a/b/x/f", "inner")] {
        let path = ctx.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    std::os::unix::fs::symlink("../../x", ctx.path().join("a/b/up")).unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nCOPY a/b/up/f /got\nRUN test \"$(cat /got)\" = outer\n",
    )
    .unwrap();
    let mut c = s.cmd(&["build", "-q", "--no-cache"]);
    c.arg(ctx.path());
    ok(c);
}

/// `--chown` names come from the stage's /etc/passwd and /etc/group as its layers stack them:
/// the topmost layer that has a file decides, and a later layer's deletion hides it. A stage
/// FROM another reads them from the layers' listings without unpacking, so this checks the
/// listings' answer against what the unpacked files say.
#[test]
fn chown_names_come_from_the_topmost_layer_that_has_them() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS a\n\
         RUN echo 'app:x:1234:4321::/:/bin/sh' >> /etc/passwd && echo 'grp:x:555:' >> /etc/group\n\
         FROM a AS b\n\
         RUN sed -i s/1234:4321/1235:4322/ /etc/passwd && rm /etc/group\n\
         FROM a AS c\n\
         COPY --chown=app:grp f /from-a\n\
         RUN test \"$(stat -c %u:%g /from-a)\" = 1234:555\n\
         FROM b\n\
         COPY --chown=app:grp f /from-b\n\
         RUN test \"$(stat -c %u:%g /from-b)\" = 1235:4322\n\
         COPY --from=c /from-a /from-a\n",
    )
    .unwrap();
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.arg(ctx.path());
    let out = ok(c);
    let shown =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // b deleted /etc/group: its name is unknown there, and said so, not in a.
    assert_eq!(
        shown.matches("the image has no group grp").count(),
        1,
        "{shown}"
    );
}

/// `COPY --from=IMAGE` of a few paths writes only those paths of the image (and the symlinks
/// that lead there), as the layers' listings resolve them, instead of unpacking it whole: what
/// it copies is what the whole image has there, whichever layer wrote it, links followed,
/// deletions and opaque directories honoured.
#[test]
fn copy_from_an_image_reads_its_paths_as_the_whole_image_has_them() {
    let s = loaded_busybox();
    let base = tempfile::tempdir().unwrap();
    fs::write(
        base.path().join("Dockerfile"),
        "FROM busybox\n\
         RUN mkdir -p /usr/lib/app /data/sub /opq && echo v1 > /usr/lib/os-release \
         && ln -s ../usr/lib/os-release /etc/os-release && ln -s /usr/lib /ulib \
         && echo old > /data/gone && echo keep > /data/keep && ln -s keep /data/link \
         && echo o > /opq/old && ln -s /usr/lib/app /applink\n\
         RUN echo v2 > /usr/lib/os-release && rm /data/gone && echo new > /data/keep \
         && rm -r /opq && mkdir /opq && echo n > /opq/new && echo a > /usr/lib/app/a\n",
    )
    .unwrap();
    let mut c = s.cmd(&["build", "-q", "-t", "base:1"]);
    c.arg(base.path());
    ok(c);
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         COPY --from=base:1 /etc/os-release /x\n\
         COPY --from=base:1 /ulib/os-release /ulib/app/ /y/\n\
         COPY --from=base:1 /data/ /d/\n\
         COPY --from=base:1 /opq /o/\n\
         COPY --from=base:1 /applink/* /w/\n\
         COPY --from=base:1 /etc/os-release /data/k* /z/\n\
         RUN test \"$(cat /x)\" = v2 && test ! -L /x \
         && test \"$(cat /y/os-release)\" = v2 && test \"$(cat /y/a)\" = a \
         && test ! -e /d/gone && test \"$(cat /d/keep)\" = new && test -L /d/link \
         && test ! -e /o/old && test \"$(cat /o/new)\" = n && test \"$(cat /w/a)\" = a \
         && test \"$(cat /z/os-release)\" = v2 && test \"$(cat /z/keep)\" = new\n",
    )
    .unwrap();
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.arg(ctx.path());
    ok(c);
}
