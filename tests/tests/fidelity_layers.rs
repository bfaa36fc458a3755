//! Layers and history as BuildKit writes them: one layer per RUN and WORKDIR even when empty,
//! COPY/ADD history lines, file capabilities naming the container's root, and `--chown`
//! names resolved as BuildKit's file operations resolve them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use cairn_e2e::{Store, loaded_busybox, ok, texts, tool};

/// Per layer, its entries' xattrs by entry name.
type Layers = Vec<BTreeMap<String, BTreeMap<String, Vec<u8>>>>;

/// Builds `ctx` into an OCI layout with uncompressed layers: the image config, and per layer
/// its entries' xattrs by name (the base's compressed layers read as empty).
fn build(s: &Store, ctx: &Path) -> (serde_json::Value, Layers) {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let mut c = s.cmd(&["build", "-q", "--compression-format", "uncompressed"]);
    c.arg("-o")
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(ctx);
    ok(c);
    let image = cairn_e2e::layout::read(&layout);
    let layers = image
        .layers
        .into_iter()
        .map(|l| l.into_iter().map(|(k, e)| (k, e.xattrs)).collect())
        .collect();
    (image.config, layers)
}

fn history(config: &serde_json::Value) -> Vec<(String, bool)> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_owned(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn a_run_that_changes_nothing_and_workdir_still_add_layers() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context(
        "FROM busybox\nRUN true\nWORKDIR /\nWORKDIR /tmp\nWORKDIR /new\nENV A=1\n",
    );
    let (config, layers) = build(&s, ctx.path());
    let h = history(&config);
    let built: Vec<(String, bool)> = h[h.len() - 5..].to_vec();
    assert_eq!(
        built,
        vec![
            ("RUN /bin/sh -c true # buildkit".to_owned(), false),
            ("WORKDIR /".to_owned(), true),
            ("WORKDIR /tmp".to_owned(), false),
            ("WORKDIR /new".to_owned(), false),
            ("ENV A=1".to_owned(), true),
        ],
        "{h:?}"
    );
    let with_layer = h.iter().filter(|(_, empty)| !empty).count();
    assert_eq!(
        layers.len(),
        with_layer,
        "one layer per history entry with one"
    );
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        with_layer
    );
    // RUN true and WORKDIR /tmp changed nothing: their layers are the empty tar.
    let n = layers.len();
    assert!(
        layers[n - 3].is_empty() && layers[n - 2].is_empty(),
        "{layers:?}"
    );
    assert!(layers[n - 1].contains_key("new"), "{:?}", layers[n - 1]);
}

#[test]
fn copy_and_add_history_lines_are_buildkits() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context_with(
        "FROM busybox AS a\nRUN echo a > /a\n\
         FROM busybox\nARG D=/dest/\n\
         COPY --from=a --chown=1:2 --chmod=644   /a    ${D}\n\
         ADD --chown=3 f   g  /e/\n\
         COPY --link f /h\n",
        &[("f", "f"), ("g", "g")],
    );
    let (config, _) = build(&s, ctx.path());
    let h = history(&config);
    let lines: Vec<&str> = h[h.len() - 3..].iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines,
        vec![
            "COPY --chown=1:2 --chmod=644 /a /dest/ # buildkit",
            "ADD --chown=3 f g /e/ # buildkit",
            "COPY f /h # buildkit",
        ]
    );
}

/// Sets a revision-2 `security.capability` (cap_net_bind_service permitted) on its argument,
/// as `setcap` does; in a user namespace the kernel stores it as revision 3 with the host uid
/// of the namespace's root.
const SETCAP_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <sys/xattr.h>
int main(int argc, char **argv) {
    uint32_t v[5] = {0x02000001u, 1u << 10, 0, 0, 0};
    if (argc != 2 || setxattr(argv[1], "security.capability", v, sizeof v, 0) != 0) {
        perror("setxattr");
        return 1;
    }
    return 0;
}
"#;

#[test]
fn a_capability_set_in_a_step_names_the_containers_root_in_the_layer() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context(
        "FROM busybox\nCOPY setcap /setcap\nRUN cp /bin/busybox /capped && /setcap /capped\n\
         RUN chmod 0750 /capped\n",
    );
    fs::write(ctx.path().join("setcap.c"), SETCAP_C).unwrap();
    let mut cc = tool("gcc");
    cc.args(["-static", "-O", "-o"])
        .arg(ctx.path().join("setcap"))
        .arg(ctx.path().join("setcap.c"));
    ok(cc);
    let (_, layers) = build(&s, ctx.path());
    let n = layers.len();
    let mut want = Vec::new();
    for w in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        want.extend_from_slice(&w.to_le_bytes());
    }
    // The step that set it, and the next, whose copy-up carries what unpacking wrote.
    for layer in [&layers[n - 2], &layers[n - 1]] {
        let caps = layer
            .get("capped")
            .and_then(|x| x.get("security.capability"));
        assert_eq!(caps, Some(&want), "{layer:?}");
    }
}

#[test]
fn chown_names_resolve_as_buildkits_file_operations_do() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context_with(
        "FROM busybox\nRUN echo app:x:1000:1001::/:/bin/sh >> /etc/passwd\n\
         COPY --chown=app f /f\nCOPY --chown=nosuch:nosuchgroup f /g\nCOPY --chown=app:nosuchgroup f /h\n\
         RUN [ \"$(stat -c %u:%g /f /g /h | tr '\\n' ' ')\" = '1000:1001 0:0 1000:1001 ' ]\n\
         FROM scratch\nUSER root\nWORKDIR /w\nCOPY --from=0 /f /w/f\n",
        &[("f", "f")],
    );
    let mut c = s.cmd(&["build", "--progress", "plain", "-t", "chown-names"]);
    c.arg(ctx.path());
    let (_, err) = texts(&ok(c));
    for w in [
        "no user nosuch",
        "no group nosuchgroup",
        "USER root: the image has no user root",
    ] {
        assert!(err.contains(w), "no warning {w:?} in:\n{err}");
    }
}

/// A tar with a pax global header (as `git archive` writes first) and the files `f`, `sub/g`.
fn archive_with_global_header() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let comment = b"52 comment=90545012b8e958182def816788248cf32c4e2e93\n";
    let mut g = tar::Header::new_ustar();
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    g.set_path("tmp/GlobalHead.1.1").unwrap();
    g.set_size(comment.len() as u64);
    g.set_mode(0o644);
    g.set_cksum();
    b.append(&g, &comment[..]).unwrap();
    for (name, data) in [("f", "hi\n"), ("sub/g", "x\n")] {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn add_of_an_archive_writes_its_existing_destination_and_no_global_header() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context(
        "FROM busybox\nRUN mkdir -m 0700 /target\nADD a.tar /target/\nFROM scratch\nADD a.tar /\n",
    );
    fs::write(ctx.path().join("a.tar"), archive_with_global_header()).unwrap();
    let (_, layers) = build(&s, ctx.path());
    // The scratch stage: the files only, no directory named by the global header.
    let names: Vec<&String> = layers[0].keys().collect();
    assert_eq!(names, ["f", "sub", "sub/g"], "{layers:?}");
    let mut c = s.cmd(&[
        "build",
        "-q",
        "--target",
        "0",
        "--compression-format",
        "uncompressed",
    ]);
    let out = tempfile::tempdir().unwrap();
    c.arg("-o")
        .arg(format!(
            "type=oci,dest={}",
            out.path().join("oci").display()
        ))
        .arg(ctx.path());
    ok(c);
    // The first stage: /target (0700) is in the layer, as BuildKit writes a written-into
    // directory, so that stacking the layers keeps its mode.
    let image = cairn_e2e::layout::read(&out.path().join("oci"));
    let target_mode = image.layers.last().unwrap().get("target").map(|e| e.mode);
    assert_eq!(target_mode, Some(0o700));
}
