//! COPY --from and ADD of local archives against what BuildKit gives: a stage's or image's
//! owners, file capabilities and hard links kept, and an archive extracted as if its
//! destination were the root (symlinks and `..` confined there, implied directories made).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use cairn_e2e::{Store, loaded_busybox, ok, texts};

/// One entry of a built layer, as its tar header (and PAX records) give it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    link: String,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Builds `ctx` (with `args`) into an OCI layout with uncompressed layers and returns, per
/// layer, its entries by name (none for the base's); plus the local output of the same build.
fn build(
    s: &Store,
    ctx: &Path,
    args: &[&str],
) -> (Vec<BTreeMap<String, Entry>>, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let mut c = s.cmd(&["build", "-q", "--compression-format", "uncompressed"]);
    c.args(args)
        .arg("-o")
        .arg(format!("type=oci,dest={}", layout.display()));
    c.arg(ctx);
    ok(c);
    let layers: Vec<BTreeMap<String, Entry>> = cairn_e2e::layout::read(&layout)
        .layers
        .into_iter()
        .map(|l| {
            l.into_iter()
                .map(|(k, e)| {
                    let entry = Entry {
                        kind: e.kind,
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        link: e.link,
                        xattrs: e.xattrs,
                    };
                    (k, entry)
                })
                .collect()
        })
        .collect();
    let local = out.path().join("local");
    let mut c = s.cmd(&["build", "-q"]);
    c.args(args)
        .arg("-o")
        .arg(format!("type=local,dest={}", local.display()));
    c.arg(ctx);
    ok(c);
    (layers, out)
}

/// A tar archive written entry by entry, names taken as given (`..` and all).
struct Archive(tar::Builder<Vec<u8>>);

impl Archive {
    fn new() -> Archive {
        Archive(tar::Builder::new(Vec::new()))
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        mode: u32,
        owner: u64,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Archive {
        if !xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            self.0
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &str) -> Archive {
        self.raw(
            name,
            tar::EntryType::Regular,
            "",
            0o644,
            0,
            data.as_bytes(),
            &[],
        )
    }

    fn symlink(self, name: &str, target: &str) -> Archive {
        self.raw(name, tar::EntryType::Symlink, target, 0o777, 0, b"", &[])
    }

    fn write(self, path: &Path) {
        fs::write(path, self.0.into_inner().unwrap()).unwrap();
    }
}

/// `cap_net_bind_service+ep` as a VFS_CAP_REVISION_2 `security.capability` value.
const CAP: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A context whose `caps.tar` holds a file with a file capability, owned 1000:1000.
fn caps_context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    Archive::new()
        .raw(
            "capped",
            tar::EntryType::Regular,
            "",
            0o755,
            1000,
            b"#!/bin/sh\n",
            &[("security.capability", CAP)],
        )
        .write(&ctx.path().join("caps.tar"));
    ctx
}

/// The stage both COPY --from tests read: a file owned by 1000:1000 with a second hard link
/// to it, and a file with a capability (from an archive: busybox has no setcap).
const SOURCE_STAGE: &str = "RUN mkdir -p /opt/app && echo hi > /opt/app/owned \
     && chown 1000:1000 /opt/app/owned && ln /opt/app/owned /opt/app/linked \
     && ln -s / /opt/app/root && ln -s .//bin/../etc /opt/app/odd\n\
     ADD caps.tar /opt/app/\n";

/// What a COPY --from of that stage's /opt/app to /app must hold, as BuildKit's copy keeps
/// it: owners (no --chown given), the capability and the hard link within the copied set.
fn assert_kept(layer: &BTreeMap<String, Entry>, stat: &str) {
    let capped = &layer["app/capped"];
    assert_eq!((capped.uid, capped.gid, capped.mode), (1000, 1000, 0o755));
    assert_eq!(
        capped.xattrs.get("security.capability").map(Vec::as_slice),
        Some(CAP),
        "{layer:?}"
    );
    let (linked, owned) = (&layer["app/linked"], &layer["app/owned"]);
    assert_eq!((linked.uid, linked.gid), (1000, 1000), "{layer:?}");
    // Written in name order: the first name is the file, the second links to it.
    assert_eq!(linked.kind, b'0', "{layer:?}");
    assert_eq!(
        (owned.kind, owned.link.as_str()),
        (b'1', "app/linked"),
        "{layer:?}"
    );
    // Link targets as written, `/` and odd spellings too.
    assert_eq!(layer["app/root"].link, "/", "{layer:?}");
    assert_eq!(layer["app/odd"].link, ".//bin/../etc", "{layer:?}");
    assert_eq!(
        stat,
        "/app/owned 1000:1000 2\n/app/linked 1000:1000 2\n/app/capped 1000:1000 1\n"
    );
}

#[test]
fn copy_from_a_stage_keeps_owners_capabilities_and_hard_links() {
    let s = loaded_busybox();
    let ctx = caps_context(&format!(
        "FROM busybox AS src\n{SOURCE_STAGE}\
         FROM busybox\n\
         COPY --from=src /opt/app /app\n\
         RUN stat -c '%n %u:%g %h' /app/owned /app/linked /app/capped > /stat.txt\n"
    ));
    let (layers, out) = build(&s, ctx.path(), &[]);
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    // Layers: busybox, the COPY, the RUN.
    assert_kept(&layers[1], &stat);
}

#[test]
fn copy_from_an_image_keeps_owners_capabilities_and_hard_links() {
    let s = loaded_busybox();
    let src = caps_context(&format!("FROM busybox\n{SOURCE_STAGE}"));
    let mut c = s.cmd(&["build", "-q", "-t", "capsrc"]);
    c.arg(src.path());
    ok(c);
    let ctx = caps_context(
        "FROM busybox\n\
         COPY --from=capsrc /opt/app /app\n\
         RUN stat -c '%n %u:%g %h' /app/owned /app/linked /app/capped > /stat.txt\n",
    );
    let (layers, out) = build(&s, ctx.path(), &[]);
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    assert_kept(&layers[1], &stat);
}

#[test]
fn copy_from_with_chown_gives_its_owner_and_keeps_hard_links() {
    let s = loaded_busybox();
    let ctx = caps_context(&format!(
        "FROM busybox AS src\n{SOURCE_STAGE}\
         FROM busybox\n\
         COPY --from=src --chown=2000:2000 /opt/app /app\n"
    ));
    let (layers, _out) = build(&s, ctx.path(), &[]);
    for name in ["app/owned", "app/linked", "app/capped"] {
        let e = &layers[1][name];
        assert_eq!((e.uid, e.gid), (2000, 2000), "{name}: {e:?}");
    }
    // BuildKit's copy links the names of one inode whoever the owner is.
    let owned = &layers[1]["app/owned"];
    assert_eq!((owned.kind, owned.link.as_str()), (b'1', "app/linked"));
}

/// Every entry of `layer` lies at or below `dest` (or is one of its parents).
fn assert_confined(layer: &BTreeMap<String, Entry>, dest: &str) {
    for name in layer.keys() {
        assert!(
            name == dest
                || name.starts_with(&format!("{dest}/"))
                || dest.starts_with(&format!("{name}/")),
            "{name} lies outside {dest}: {layer:?}"
        );
    }
}

#[test]
fn add_confines_an_archives_symlinks_to_the_destination() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    // The attack: a symlink climbing out, then entries through it. BuildKit extracts in a
    // chroot at the destination: the links stay as written, and what goes through them lands
    // inside the destination (`..` stops at it, `/` is it).
    Archive::new()
        .symlink("up", "../..")
        .file("up/etc/planted", "up")
        .symlink("abs", "/")
        .file("abs/etc/planted2", "abs")
        .symlink("deep", "../../../etc")
        .file("deep/planted3", "deep")
        .raw(
            "hl",
            tar::EntryType::Link,
            "up/etc/planted",
            0o644,
            0,
            b"",
            &[],
        )
        .write(&ctx.path().join("evil.tar"));
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         ADD evil.tar /opt/x/\n\
         RUN test ! -e /etc/planted && test ! -e /etc/planted2 && test ! -e /etc/planted3 \
         && cat /opt/x/etc/planted /opt/x/etc/planted2 /opt/x/etc/planted3 > /seen.txt \
         && ls /etc > /etc.txt\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path(), &[]);
    let layer = &layers[1];
    assert_confined(layer, "opt/x");
    for name in [
        "opt/x/etc/planted",
        "opt/x/etc/planted2",
        "opt/x/etc/planted3",
    ] {
        assert_eq!(layer[name].kind, b'0', "{name}: {layer:?}");
    }
    assert_eq!(layer["opt/x/up"].link, "../..");
    assert_eq!(layer["opt/x/abs"].link, "/");
    // A hard link's target is found the same way.
    assert_eq!(layer["opt/x/hl"].link, "opt/x/etc/planted");
    let seen = fs::read_to_string(out.path().join("local/seen.txt")).unwrap();
    assert_eq!(seen, "upabsdeep");
    let etc = fs::read_to_string(out.path().join("local/etc.txt")).unwrap();
    assert!(!etc.contains("planted"), "{etc}");
    assert!(!out.path().join("local/etc/planted").exists());
}

#[test]
fn add_clamps_an_archives_dot_dot_entries_at_the_destination() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    // BuildKit's untar runs chrooted at the destination: `../` cannot climb above it.
    Archive::new()
        .file("../../outside", "o")
        .file("in/../../f", "f")
        .file("/abs", "a")
        .raw(
            "../hl",
            tar::EntryType::Link,
            "../../outside",
            0o644,
            0,
            b"",
            &[],
        )
        .write(&ctx.path().join("dots.tar"));
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nADD dots.tar /opt/x/\n\
         RUN cat /opt/x/outside /opt/x/f /opt/x/abs > /seen.txt && stat -c %h /opt/x/hl >> /seen.txt\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path(), &[]);
    assert_confined(&layers[1], "opt/x");
    let seen = fs::read_to_string(out.path().join("local/seen.txt")).unwrap();
    assert_eq!(seen, "ofa2\n");
    assert_eq!(layers[1]["opt/x/hl"].link, "opt/x/outside");
}

#[test]
fn add_makes_the_directories_an_archive_implies() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    // Only `a/b/c`: BuildKit's untar makes `a` and `a/b` 0755, owned by root even with
    // --chown (which is for the archive's own entries), and the differ puts them in the layer.
    Archive::new()
        .file("a/b/c", "c")
        .write(&ctx.path().join("implied.tar"));
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\n\
         ADD implied.tar /opt/y/\n\
         ADD --chown=1000:1000 implied.tar /opt/z\n\
         RUN stat -c '%n %a %u:%g' /opt/y/a /opt/y/a/b /opt/y/a/b/c /opt/z /opt/z/a /opt/z/a/b \
         /opt/z/a/b/c > /stat.txt\n",
    )
    .unwrap();
    let (layers, out) = build(&s, ctx.path(), &[]);
    let dir = |layer: &BTreeMap<String, Entry>, name: &str| {
        let e = layer
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {layer:?}"));
        (e.kind, e.mode, e.uid, e.gid)
    };
    assert_eq!(dir(&layers[1], "opt/y/a"), (b'5', 0o755, 0, 0));
    assert_eq!(dir(&layers[1], "opt/y/a/b"), (b'5', 0o755, 0, 0));
    assert_eq!(dir(&layers[2], "opt/z"), (b'5', 0o755, 1000, 1000));
    assert_eq!(dir(&layers[2], "opt/z/a"), (b'5', 0o755, 0, 0));
    assert_eq!(dir(&layers[2], "opt/z/a/b"), (b'5', 0o755, 0, 0));
    let stat = fs::read_to_string(out.path().join("local/stat.txt")).unwrap();
    assert_eq!(
        stat,
        "/opt/y/a 755 0:0\n/opt/y/a/b 755 0:0\n/opt/y/a/b/c 644 0:0\n/opt/z 755 1000:1000\n\
         /opt/z/a 755 0:0\n/opt/z/a/b 755 0:0\n/opt/z/a/b/c 644 1000:1000\n"
    );
}

/// The busybox image saved as an OCI layout at `base` in a temp dir.
fn saved_busybox(s: &Store) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("base");
    s.run(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
        "busybox",
    ]);
    (dir, layout)
}

/// Appends the uncompressed layer `tar` to the single image of the OCI layout at `layout`,
/// rewriting its config, manifest and index with their new digests.
fn append_layer(layout: &Path, tar: &[u8]) {
    append_layer_claiming(layout, tar, None);
}

/// [`append_layer`], the config claiming `diff_id` for it when given.
fn append_layer_claiming(layout: &Path, tar: &[u8], diff_id: Option<&str>) {
    use sha2::Digest as _;
    let blob = |bytes: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    let (layer, size) = blob(tar);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(diff_id.unwrap_or(&layer).into());
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"created_by": "crafted"}));
    let (digest, csize) = blob(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = csize.into();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer,
            "size": size,
        }));
    let (digest, msize) = blob(&serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = msize.into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A base image's layer whose names climb above the root (kaniko's path-traversal image writes
/// `../../../tini`) is applied as containerd applies it for BuildKit: `..` stops at the root,
/// so the file lands at `/tini` and nothing is written beside the store. The build succeeds
/// where it used to be refused; `cairn import` still refuses such names, as `docker import` does.
#[test]
fn a_base_layers_dot_dot_names_stop_at_the_root() {
    let s = loaded_busybox();
    let (dir, layout) = saved_busybox(&s);
    let mut layer = Archive::new()
        .file("../../../tini", "tini")
        .file("a/../../x", "x")
        .raw("../h", tar::EntryType::Link, "../../x", 0o644, 0, b"", &[]);
    layer = layer.raw(
        "../../etc/",
        tar::EntryType::Directory,
        "",
        0o755,
        0,
        b"",
        &[],
    );
    let bytes = layer.0.into_inner().unwrap();
    append_layer(&layout, &bytes);
    s.run(&["load", "-i", layout.to_str().unwrap(), "-t", "traversal:1"]);
    let ctx = cairn_e2e::context(
        "FROM traversal:1\nRUN cat /tini /x /h > /seen && stat -c %h /x >> /seen\n",
    );
    let out = tempfile::tempdir().unwrap();
    let mut c = s.cmd(&["build", "-q", "-o"]);
    c.arg(format!("type=local,dest={}", out.path().display()))
        .arg(ctx.path());
    ok(c);
    assert_eq!(
        fs::read_to_string(out.path().join("seen")).unwrap(),
        "tinixx2\n"
    );
    let beside: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["base"], "written beside the layout");
    for name in ["tini", "x", "h"] {
        assert!(
            !s.root.join(name).exists(),
            "{name} beside the store's files"
        );
        assert!(
            !s.root.parent().unwrap().join(name).exists(),
            "{name} beside the store"
        );
    }
}

/// A base layer whose content is not the diff_id its config claims (the blob itself matches
/// its digest) is refused when a step unpacks it, naming the layer, and leaves no unpacked
/// tree behind: the diff_id is hashed as the layer is applied, on a thread of its own.
#[test]
fn a_base_layer_that_is_not_its_diff_id_is_refused_when_unpacked() {
    let s = loaded_busybox();
    let (_dir, layout) = saved_busybox(&s);
    // Big enough to cross many of the pipeline's stretches.
    let mut layer = Archive::new();
    for i in 0..64 {
        layer = layer.file(&format!("data/f{i}"), &"x".repeat(64 * 1024));
    }
    let bytes = layer.0.into_inner().unwrap();
    let claimed = format!("sha256:{}", "ab".repeat(32));
    append_layer_claiming(&layout, &bytes, Some(&claimed));
    s.run(&["load", "-i", layout.to_str().unwrap(), "-t", "liar:1"]);
    let ctx = cairn_e2e::context("FROM liar:1\nRUN cat /data/f1 >/dev/null\n");
    let out = s.cmd(&["build", "-q"]).arg(ctx.path()).output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&claimed) && stderr.contains("diff_id"),
        "{stderr}"
    );
    let unpacked: Vec<String> = fs::read_dir(s.root.join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&"ab".repeat(32)) && !n.ends_with(".lock"))
        .collect();
    assert_eq!(unpacked, Vec::<String>::new());
    s.run(&["fsck"]);
}
