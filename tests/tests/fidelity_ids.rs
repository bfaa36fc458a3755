//! Fidelity with docker for images named by ID (untagged builds included), FROM's platform,
//! and small errors: an empty base name, and a miss after a failed step.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use cairn_e2e::{Store, loaded_busybox, texts};

/// A build context holding only `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn build(s: &Store, args: &[&str], ctx: &Path) -> std::process::Output {
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.args(args).arg(ctx);
    c.output().unwrap()
}

/// Builds without a name and returns the image ID `-q` prints.
fn build_untagged(s: &Store, dockerfile: &str) -> String {
    let ctx = context(dockerfile);
    let out = build(s, &["-q"], ctx.path());
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let id = stdout.trim().to_owned();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{stdout:?}");
    id
}

#[test]
fn an_untagged_build_is_an_image_by_its_id() {
    let s = loaded_busybox();
    let id = build_untagged(
        &s,
        "FROM busybox\nLABEL made=untagged\nCMD [\"echo\", \"from-id\"]\n",
    );
    let hex = id.strip_prefix("sha256:").unwrap();

    // Listed as docker lists a dangling image.
    let list = s.run(&["images"]);
    let row = list
        .lines()
        .find(|l| l.contains(&hex[..12]))
        .unwrap_or_else(|| panic!("no row for {id}:\n{list}"));
    assert!(row.starts_with("<none>") && row.contains("<none>"), "{row}");

    // Every spelling of the ID names it: full, bare hex, a prefix.
    for name in [id.as_str(), hex, &hex[..12], &hex[..4]] {
        let v = s.inspect(name);
        assert_eq!(v["Id"], id.as_str(), "{name}");
        assert_eq!(v["Config"]["Labels"]["made"], "untagged", "{name}");
    }

    // cairn run $(cairn build -q .)
    let out = s.cmd(&["run", "--rm", &id]).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "from-id\n");

    // FROM <id>, by a prefix too.
    let child = build_untagged(&s, &format!("FROM {}\nLABEL child=1\n", &hex[..12]));
    let v = s.inspect(&child);
    assert_eq!(v["Config"]["Labels"]["made"], "untagged");

    // save by ID.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("img.tar");
    s.run(&["save", "-o", archive.to_str().unwrap(), &hex[..12]]);
    assert!(fs::metadata(&archive).unwrap().len() > 0);

    // Building the same again names the same image, still there.
    let again = build_untagged(
        &s,
        "FROM busybox\nLABEL made=untagged\nCMD [\"echo\", \"from-id\"]\n",
    );
    assert_eq!(again, id);

    // rmi by ID deletes the untagged image.
    let out = s.run(&["rmi", &hex[..12]]);
    assert!(out.contains(&id), "{out}");
    let gone = s.cmd(&["inspect", &id]).output().unwrap();
    assert!(!gone.status.success());
    assert!(!s.run(&["images"]).contains(&hex[..12]));
}

#[test]
fn tagging_by_id_names_the_dangling_image() {
    let s = loaded_busybox();
    let id = build_untagged(&s, "FROM busybox\nLABEL made=tagged-later\n");
    let hex = id.strip_prefix("sha256:").unwrap();
    s.run(&["tag", &hex[..8], "named:v1"]);
    assert_eq!(s.inspect("named:v1")["Id"], id.as_str());
    let list = s.run(&["images"]);
    let rows: Vec<&str> = list.lines().filter(|l| l.contains(&hex[..12])).collect();
    // Named now: no longer a <none> row besides its name.
    assert_eq!(rows.len(), 1, "{list}");
    assert!(rows[0].starts_with("named"), "{list}");
}

#[test]
fn prune_removes_dangling_images() {
    let s = loaded_busybox();
    let id = build_untagged(&s, "FROM busybox\nLABEL made=to-prune\n");
    assert!(s.cmd(&["inspect", &id]).output().unwrap().status.success());
    s.run(&["prune"]);
    assert!(!s.cmd(&["inspect", &id]).output().unwrap().status.success());
    // Named images stay.
    s.inspect("busybox");
}

#[test]
fn a_platform_the_base_lacks_is_an_error() {
    let s = loaded_busybox();
    let found = s.inspect("busybox")["Architecture"]
        .as_str()
        .unwrap()
        .to_owned();
    let wanted = if found == "arm64" { "amd64" } else { "arm64" };
    let ctx = context(&format!(
        "FROM --platform=linux/{wanted} busybox\nLABEL x=1\n"
    ));
    let out = build(&s, &[], ctx.path());
    let (_, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "built for the wrong platform:\n{stderr}"
    );
    assert!(stderr.contains(&format!("linux/{wanted}")), "{stderr}");
    assert!(stderr.contains(&format!("linux/{found}")), "{stderr}");

    // `cairn build --platform` likewise.
    let ctx = context("FROM busybox\nLABEL x=1\n");
    let other = format!("linux/{wanted}");
    let out = build(&s, &["--platform", &other], ctx.path());
    let (_, stderr) = texts(&out);
    assert!(
        !out.status.success(),
        "built for the wrong platform:\n{stderr}"
    );
    assert!(
        stderr.contains(&other) && stderr.contains(&format!("linux/{found}")),
        "{stderr}"
    );
    let own = format!("linux/{found}");
    let out = build(&s, &["--platform", &own], ctx.path());
    assert!(out.status.success(), "{}", texts(&out).1);

    // The build's own platform is fine, spelled by its build arg too.
    let ctx = context("FROM --platform=$BUILDPLATFORM busybox\nLABEL x=1\n");
    let out = build(&s, &[], ctx.path());
    assert!(out.status.success(), "{}", texts(&out).1);
}

#[test]
fn an_empty_base_name_names_its_variable() {
    let s = loaded_busybox();
    let ctx = context("ARG UNSET\nFROM ${UNSET}\n");
    let out = build(&s, &[], ctx.path());
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(!stderr.contains("image \"\""), "{stderr}");
    assert!(
        stderr.contains("${UNSET}") && stderr.contains("empty"),
        "{stderr}"
    );
}

#[test]
fn a_step_that_never_succeeded_has_no_earlier_result() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nRUN exit 3\n");
    for _ in 0..2 {
        let out = build(&s, &[], ctx.path());
        let (_, stderr) = texts(&out);
        assert!(!out.status.success());
        assert!(!stderr.contains("earlier result"), "{stderr}");
    }
}

#[test]
fn a_dangling_image_whose_blobs_are_gone_does_not_break_images() {
    let s = loaded_busybox();
    let id = build_untagged(&s, "FROM busybox\nLABEL made=half-pruned\n");
    // What an older cairn's prune, which did not know dangling images, leaves: the entry
    // without its manifest.
    let index = s.index();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.get("annotations").is_none())
        .unwrap_or_else(|| panic!("no untagged entry: {index}"));
    let digest = entry["digest"].as_str().unwrap();
    fs::remove_file(
        s.root
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let list = s.run(&["images"]);
    assert!(list.contains("busybox"), "{list}");
    assert!(!list.contains(&id["sha256:".len()..][..12]), "{list}");
}
