//! `cairn build` through the real binary: the image checked by unpacking it with umoci and
//! reading its config with skopeo; outputs; errors with carets; reproducibility.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_e2e::{Store, is_root, loaded_busybox, ok, repo_root, texts, tool, umoci_unpack};

fn site() -> std::path::PathBuf {
    repo_root().join("fixtures/examples/site")
}

fn validate(layout: &Path, tag: &str) {
    let mut v = tool("oci-image-tool");
    v.args([
        "validate",
        "--type",
        "image",
        "--ref",
        &format!("name={tag}"),
    ])
    .arg(layout);
    ok(v);
}

#[test]
fn site_example_builds_a_correct_image() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let out = s
        .cmd(&[
            "build",
            "-t",
            "site:1",
            "-o",
            &format!("type=oci,dest={}", layout.display()),
        ])
        .arg(site())
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.is_empty(), "progress goes to stderr: {stdout}");
    assert!(stderr.contains("#1 [assets 1/"), "{stderr}");
    assert!(stderr.contains("DONE"), "{stderr}");
    validate(&layout, "1");

    let rootfs = umoci_unpack(&layout, "1", &dir.path().join("bundle"));
    assert_eq!(
        fs::read_to_string(rootfs.join("srv/www/index.html")).unwrap(),
        "<h1>hello from cairn</h1>\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("srv/www/VERSION")).unwrap(),
        "site 1.0\n"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the base image's files are there"
    );
    // .dockerignore kept draft.md out of the context; the wildcard took only *.txt anyway.
    assert!(!rootfs.join("srv/notes/draft.md").exists());
    let note = fs::metadata(rootfs.join("srv/notes/one.txt")).unwrap();
    assert_eq!(note.permissions().mode() & 0o7777, 0o640);
    if is_root() {
        // --chown=nobody:nogroup through the image's /etc/passwd and /etc/group.
        assert_eq!((note.uid(), note.gid()), (65534, 65534));
        let www = fs::metadata(rootfs.join("srv/www/index.html")).unwrap();
        assert_eq!((www.uid(), www.gid()), (0, 0));
    }

    let mut i = tool("skopeo");
    i.args(["inspect", "--config"])
        .arg(format!("oci:{}:1", layout.display()));
    let config: serde_json::Value = serde_json::from_slice(&ok(i).stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "site");
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("PORT=8080"))
    );
    let history = config["history"].as_array().unwrap();
    assert!(history.iter().any(|h| {
        h["created_by"]
            .as_str()
            .unwrap()
            .starts_with("ENV PORT=8080")
            && h["empty_layer"] == true
    }));
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(layers, non_empty, "one history entry per layer");
    // The image is in the store under its tag.
    assert_eq!(s.inspect("site:1")["Config"]["User"], "nobody");
}

#[test]
fn archives_local_and_tar_outputs() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let iid = d("iid");
    let out = s
        .cmd(&["build", "-q", "--iidfile", iid.to_str().unwrap()])
        .args([
            "-o",
            &format!("type=oci-archive,dest={}", d("img.oci.tar").display()),
        ])
        .args([
            "-o",
            &format!("type=docker-archive,dest={}", d("img.docker.tar").display()),
        ])
        .args(["-o", &format!("type=local,dest={}", d("local").display())])
        .args([
            "-o",
            &format!("type=tar,dest={}", d("rootfs.tar").display()),
        ])
        .arg(site())
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "-q prints no progress: {stderr}");
    assert_eq!(stdout.trim(), fs::read_to_string(&iid).unwrap());
    assert!(stdout.starts_with("sha256:"));
    // Without -t the layout still names the image `latest`.
    let mut i = tool("skopeo");
    i.args(["inspect", "--config"])
        .arg(format!("oci-archive:{}:latest", d("img.oci.tar").display()));
    ok(i);
    let mut i = tool("skopeo");
    i.arg("inspect")
        .arg(format!("docker-archive:{}", d("img.docker.tar").display()));
    ok(i);
    // podman loads the docker-archive output.
    let pod = tempfile::tempdir().unwrap();
    let mut p = tool("podman");
    p.arg("--root").arg(pod.path().join("root"));
    p.arg("--runroot").arg(pod.path().join("run"));
    p.args(["--storage-driver", "vfs", "load", "-i"])
        .arg(d("img.docker.tar"));
    ok(p);
    assert_eq!(
        fs::read_to_string(d("local/srv/www/index.html")).unwrap(),
        "<h1>hello from cairn</h1>\n"
    );
    let mut t = tool("tar");
    t.arg("-tvf").arg(d("rootfs.tar"));
    let listing = texts(&ok(t)).0;
    assert!(listing.contains("srv/www/index.html"), "{listing}");
    assert!(listing.contains("bin/busybox"), "{listing}");
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let s = loaded_busybox();
            let mut c = s.cmd(&["build", "-q", "-t", "site:1"]);
            c.arg(site()).env("SOURCE_DATE_EPOCH", "1700000000");
            let out = ok(c);
            let id = texts(&out).0;
            assert_eq!(s.inspect("site:1")["Created"], "2023-11-14T22:13:20Z");
            format!("{id} {}", s.inspect("site:1")["ManifestDigest"])
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn targets_and_unneeded_stages() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("a.txt"), "a\n").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS broken\nRUN exit 1\n\nFROM scratch AS one\nCOPY a.txt /\n\nFROM one AS two\nCOPY --from=one /a.txt /b.txt\nENV X=1\n",
    )
    .unwrap();
    // The broken stage is never needed, so it never runs.
    let out = s
        .cmd(&["build", "-t", "two"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(!texts(&out).1.contains("RUN exit 1"));
    let two = s.inspect("two");
    assert_eq!(two["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    let out = s
        .cmd(&["build", "-t", "one", "--target", "one"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(
        s.inspect("one")["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn errors_point_at_the_dockerfile_line() {
    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "FROM scratch\nCOPY missing.txt /\n",
            "Dockerfile:2:1: COPY missing.txt: not found in the build context",
        ),
        (
            "FROM nosuchimage\n",
            "Dockerfile:1:1: FROM image \"nosuchimage\" is not in the store; load it first with `cairn load",
        ),
        (
            "FROM scratch\nRUN echo hi\n",
            "Dockerfile:2:1: RUN process \"/bin/sh -c echo hi\" could not run: exec /bin/sh: No such file or directory",
        ),
        (
            "FROM scratch\nCOPY a.txt . /dst\n",
            "cannot copy to non-directory: /dst",
        ),
        (
            "FROM scratch\nCOPY ignored.txt /\n",
            "ignored.txt: excluded by .dockerignore",
        ),
    ];
    fs::write(ctx.path().join("a.txt"), "a").unwrap();
    fs::write(ctx.path().join("b.txt"), "b").unwrap();
    fs::write(ctx.path().join("ignored.txt"), "x").unwrap();
    fs::write(ctx.path().join(".dockerignore"), "ignored.txt\n").unwrap();
    for (dockerfile, want) in cases {
        fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = s.cmd(&["build"]).arg(ctx.path()).output().unwrap();
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}");
        let flat = stderr.replace(&format!("{}/", ctx.path().display()), "");
        assert!(
            flat.contains(want),
            "{dockerfile:?}\nwant {want:?}\ngot {stderr}"
        );
        if want.starts_with("Dockerfile:") {
            assert!(stderr.contains(" | ^"), "a caret under the line: {stderr}");
        }
    }
    // Nothing is left behind in the store's temp dir by failed builds.
    assert_eq!(fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn copy_parents_exclude_and_add_archives() {
    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    for f in ["src/a/one.rs", "src/a/one.md", "src/b/two.rs", "docs/x.md"] {
        fs::create_dir_all(c.join(f).parent().unwrap()).unwrap();
        fs::write(c.join(f), f).unwrap();
    }
    // Local archives that ADD unpacks, in every compression Docker reads (COPY copies as is).
    for (flag, name) in [
        ("-z", "docs.tar.gz"),
        ("-j", "docs.tar.bz2"),
        ("-J", "docs.tar.xz"),
        ("--zstd", "docs.tar.zst"),
        ("", "docs.tar"),
    ] {
        let mut t = tool("tar");
        t.arg("-C").arg(c).arg("-cf").arg(c.join(name));
        if !flag.is_empty() {
            t.arg(flag);
        }
        t.arg("docs");
        ok(t);
    }
    fs::write(
        c.join("Dockerfile"),
        "FROM scratch\nCOPY --parents src/*/*.rs /keep/\nCOPY --exclude=**/*.md src /flat/\nADD docs.tar.gz /unpacked/\nADD docs.tar.bz2 /bz2/\nADD docs.tar.xz /xz/\nADD docs.tar.zst /zst/\nADD docs.tar /plain/\nCOPY docs.tar.gz /copied/\n",
    )
    .unwrap();
    let (_dir, local, _) = s.build_local(&["-q"], c);
    let has = |p: &str| local.join(p).exists();
    assert!(
        has("keep/src/a/one.rs") && has("keep/src/b/two.rs"),
        "--parents keeps directories"
    );
    assert!(!has("keep/src/a/one.md") && !has("keep/one.rs"));
    assert!(has("flat/a/one.rs") && has("flat/b/two.rs"));
    assert!(
        !has("flat/a/one.md"),
        "--exclude=**/*.md leaves markdown out at any depth below the source"
    );
    for dir in ["unpacked", "bz2", "xz", "zst", "plain"] {
        let x = fs::read_to_string(local.join(dir).join("docs/x.md")).unwrap();
        assert_eq!(x, "docs/x.md", "ADD unpacks the {dir} archive");
    }
    assert!(
        local.join("copied/docs.tar.gz").is_file(),
        "COPY does not unpack"
    );
}

#[test]
fn named_contexts_and_oci_layout_bases() {
    let s = Store::new();
    let layout = cairn_e2e::busybox_layout();
    let extra = tempfile::tempdir().unwrap();
    fs::write(extra.path().join("tool.txt"), "from a named context\n").unwrap();
    fs::write(extra.path().join("skip.txt"), "ignored there\n").unwrap();
    fs::write(extra.path().join(".dockerignore"), "skip.txt\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM oci-layout://{}:latest AS direct\n\nFROM base\nCOPY --from=extra / /extra/\nCOPY --from=direct /etc/passwd /passwd.copy\n",
            layout.display()
        ),
    )
    .unwrap();
    let base = format!("base=oci-layout://{}:latest", layout.display());
    let extra_ctx = format!("extra={}", extra.path().display());
    let (_dir, local, _) = s.build_local(
        &[
            "-q",
            "--build-context",
            &base,
            "--build-context",
            &extra_ctx,
        ],
        ctx.path(),
    );
    assert!(
        local.join("bin/busybox").is_file(),
        "FROM a named oci-layout context"
    );
    assert_eq!(
        fs::read_to_string(local.join("extra/tool.txt")).unwrap(),
        "from a named context\n"
    );
    assert!(
        !local.join("extra/skip.txt").exists(),
        "a named context reads its own .dockerignore"
    );
    assert!(
        fs::read_to_string(local.join("passwd.copy"))
            .unwrap()
            .starts_with("root:")
    );
    // Nothing was named in the store by using a layout.
    assert_eq!(s.index()["manifests"], serde_json::json!([]));
}

/// A python3 HTTP server on 127.0.0.1 serving `dir`, killed when dropped (also on panic).
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        use std::io::BufRead;
        // Port 0: the server takes a free port itself and says which (a port picked here and
        // released could be taken by another process before the server binds it).
        let mut child = std::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the HTTP server said {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_downloads_urls_and_checks_checksums() {
    let served = tempfile::tempdir().unwrap();
    fs::write(served.path().join("file.txt"), "downloaded\n").unwrap();
    // sha256 of "downloaded\n".
    let mut sum = tool("sha256sum");
    sum.arg(served.path().join("file.txt"));
    let right = texts(&ok(sum)).0.split(' ').next().unwrap().to_owned();
    let server = HttpServer::start(served.path());
    let base = format!("http://127.0.0.1:{}", server.port);

    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let dir = tempfile::tempdir().unwrap();
    let build = |dockerfile: &str, out: &str| {
        fs::write(c.join("Dockerfile"), dockerfile).unwrap();
        s.cmd(&[
            "build",
            "-q",
            "-o",
            &format!("type=local,dest={}", dir.path().join(out).display()),
        ])
        .arg(c)
        .output()
        .unwrap()
    };

    let out = build(
        &format!("FROM scratch\nADD --checksum=sha256:{right} {base}/file.txt /dl/\n"),
        "good",
    );
    assert!(out.status.success(), "{}", texts(&out).1);
    let got = dir.path().join("good/dl/file.txt");
    assert_eq!(fs::read_to_string(&got).unwrap(), "downloaded\n");
    assert_eq!(
        fs::metadata(&got).unwrap().permissions().mode() & 0o7777,
        0o600,
        "Docker's mode for ADD from a URL"
    );

    let wrong = "0".repeat(64);
    let out = build(
        &format!("FROM scratch\nADD --checksum=sha256:{wrong} {base}/file.txt /dl/\n"),
        "bad",
    );
    let stderr = texts(&out).1;
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{base}/file.txt")) && stderr.contains(&right),
        "{stderr}"
    );

    let out = build(
        &format!("FROM scratch\nADD {base}/missing.txt /dl/\n"),
        "missing",
    );
    let stderr = texts(&out).1;
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{base}/missing.txt")) && stderr.contains("404"),
        "{stderr}"
    );

    // No download is left in the store's work area, whichever way the builds ended.
    let leftovers: Vec<_> = walk_names(&s.root.join("tmp"))
        .into_iter()
        .filter(|n| n.contains("download"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

#[test]
fn independent_stages_build_in_one_wave() {
    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    for i in 0..4 {
        fs::write(ctx.path().join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    // Four stages that need nothing from each other, then one that needs them all.
    let mut dockerfile = String::new();
    for i in 0..4 {
        dockerfile.push_str(&format!("FROM scratch AS s{i}\nCOPY f{i}.txt /\n"));
    }
    dockerfile.push_str("FROM scratch\n");
    for i in 0..4 {
        dockerfile.push_str(&format!("COPY --from=s{i} /f{i}.txt /all/\n"));
    }
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let (_dir, local, stderr) = s.build_local(&["--progress", "plain"], ctx.path());
    for i in 0..4 {
        assert_eq!(
            fs::read_to_string(local.join(format!("all/f{i}.txt"))).unwrap(),
            format!("{i}\n")
        );
        assert!(
            stderr.contains(&format!("[s{i} 1/1] COPY f{i}.txt /")),
            "{stderr}"
        );
    }
    // Every step reports exactly once, whatever order the threads ran in (FROM scratch is no
    // step, as in BuildKit: 4 COPY, then 4 COPY --from).
    let starts = stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" ["))
        .count();
    let dones = stderr.lines().filter(|l| l.contains(" DONE ")).count();
    assert_eq!((starts, dones), (8, 8), "{stderr}");
}

#[test]
fn later_copies_see_directories_of_earlier_ones() {
    let s = Store::new();
    let ctx = tempfile::tempdir().unwrap();
    fs::create_dir(ctx.path().join("d")).unwrap();
    fs::write(ctx.path().join("d/a"), "a").unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    // /x exists after the first COPY, so `COPY f /x` (no slash) puts f inside it; /y does not
    // exist, so `COPY f /y` makes a file named y; WORKDIR /x/sub creates only `sub`.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY d /x\nCOPY f /x\nCOPY f /y\nWORKDIR /x/sub\nCOPY f .\n",
    )
    .unwrap();
    let (_dir, local, _) = s.build_local(&["-q"], ctx.path());
    assert_eq!(fs::read_to_string(local.join("x/a")).unwrap(), "a");
    assert_eq!(fs::read_to_string(local.join("x/f")).unwrap(), "f");
    assert_eq!(fs::read_to_string(local.join("y")).unwrap(), "f");
    assert_eq!(fs::read_to_string(local.join("x/sub/f")).unwrap(), "f");
}

#[test]
fn copies_follow_directories_and_symlinks_that_runs_and_the_base_made() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    // A RUN makes /data and a link to it; the COPY and WORKDIR after it must see both
    // without the base or the RUN's layer unpacked: `COPY f /data` puts f inside, a COPY or
    // WORKDIR through /link lands in /data and leaves the link a link. Two COPY steps with
    // the same result (f and ./f below) make one layer twice, which overlayfs must be given
    // once. /bin is the base's own directory.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN mkdir /data && ln -s /data /link\nCOPY f /data\nCOPY f /link/g\n\
         WORKDIR /link/sub\nCOPY f ./\nCOPY f /bin\n\
         RUN test -L /link && test -f /data/f && test -f /data/g && test -f /data/sub/f \\\n\
         && test -f /bin/f && test -x /bin/busybox\n",
    )
    .unwrap();
    for args in [&["--no-cache"][..], &[]] {
        let (_dir, local, stderr) = s.build_local(args, ctx.path());
        assert_eq!(fs::read_to_string(local.join("data/sub/f")).unwrap(), "f");
        assert!(
            fs::symlink_metadata(local.join("link"))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{stderr}"
        );
    }
}

#[test]
fn compression_format_and_level_choose_how_layers_are_written() {
    let s = loaded_busybox();
    let mut sizes = Vec::new();
    for (format, level, media) in [
        ("gzip", "1", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("gzip", "9", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "3", "application/vnd.oci.image.layer.v1.tar+zstd"),
        (
            "uncompressed",
            "0",
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ] {
        let tag = format!("site:{format}-{level}");
        let mut c = s.cmd(&[
            "build",
            "-q",
            "--no-cache",
            "--compression-format",
            format,
            "--compression-level",
            level,
            "-t",
            &tag,
        ]);
        c.arg(site()).env("SOURCE_DATE_EPOCH", "1700000000");
        ok(c);
        let img = s.inspect(&tag);
        let layers = img["Layers"].as_array().unwrap();
        let built = layers.last().unwrap();
        assert_eq!(built["mediaType"], media, "{format}: {img}");
        sizes.push(built["size"].as_u64().unwrap());
        // Whatever the compression, the layer's content is the same.
        let diff_ids = img["RootFS"]["Layers"].as_array().unwrap().clone();
        let first = s.inspect("site:gzip-1");
        assert_eq!(
            diff_ids,
            first["RootFS"]["Layers"].as_array().unwrap().clone()
        );
    }
    assert!(sizes[1] <= sizes[0], "level 9 no larger than 1: {sizes:?}");
    assert!(sizes[3] > sizes[0], "uncompressed larger: {sizes:?}");

    for (args, says) in [
        (
            ["--compression-format", "lz4"],
            "use gzip, zstd or uncompressed",
        ),
        (["--compression-level", "12"], "gzip takes 0 to 9"),
    ] {
        let out = s.cmd(&["build"]).args(args).arg(site()).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(!out.status.success());
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// By default a build leaves its new layers plain tars in the store, as BuildKit's docker image
/// store does, and compresses them when the image leaves it; what leaves is byte for byte what a
/// build that compressed as it went (`--compression-format gzip --compression-level 5`) writes.
#[test]
fn deferred_compression_exports_what_compressing_as_it_goes_writes() {
    let ctx = tempfile::tempdir().unwrap();
    // A RUN layer of a few MiB, so the gzip writer splits it into several chunks.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN seq 1 400000 > /nums && echo hi > /etc/motd\nCOPY f /f\n",
    )
    .unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    let plain = "application/vnd.oci.image.layer.v1.tar";
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let mut exported = Vec::new();
    for (args, stored) in [
        (&[][..], plain),
        (
            &["--compression-format", "gzip", "--compression-level", "5"][..],
            gzip,
        ),
    ] {
        let s = loaded_busybox();
        let mut c = s.cmd(&["build", "-q", "-t", "app"]);
        c.args(args)
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000");
        ok(c);
        let img = s.inspect("app");
        let layers = img["Layers"].as_array().unwrap();
        assert_eq!(
            layers.last().unwrap()["mediaType"],
            stored,
            "{args:?}: {img}"
        );
        let mut digests = Vec::new();
        // Twice: the second export takes the layers the first compressed.
        for n in 0..2 {
            let out = tempfile::tempdir().unwrap();
            let layout = out.path().join(format!("oci{n}"));
            s.run(&[
                "save",
                "--format",
                "oci-dir",
                "-o",
                layout.to_str().unwrap(),
                "app",
            ]);
            let index: serde_json::Value =
                serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
            let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
            let manifest: serde_json::Value = serde_json::from_slice(
                &fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
            )
            .unwrap();
            for l in manifest["layers"].as_array().unwrap() {
                assert_eq!(l["mediaType"], gzip, "{args:?}: {manifest}");
            }
            assert!(manifest.get("annotations").is_none(), "{manifest}");
            validate(&layout, "latest");
            digests.push(digest);
        }
        assert_eq!(digests[0], digests[1], "{args:?}");
        exported.push(digests.remove(0));
    }
    assert_eq!(exported[0], exported[1]);
}

/// `--debug-timings` says where each step's time went, phase by phase; without it, nothing.
#[test]
fn debug_timings_name_each_steps_phases() {
    let s = loaded_busybox();
    let ctx = tempfile::tempdir().unwrap();
    fs::write(ctx.path().join("f"), "f").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo made > /made\nCOPY --chown=nobody f /f\n",
    )
    .unwrap();
    let timings = |extra: &[&str]| -> Vec<String> {
        let mut c = s.cmd(&["build", "--no-cache", "--progress", "plain"]);
        c.args(extra).arg(ctx.path());
        let out = ok(c);
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| {
                let (id, rest) = l.split_once(" timing: ")?;
                let (phase, secs) = rest.split_once(' ')?;
                let secs: f64 = secs.strip_suffix('s')?.parse().ok()?;
                assert!(secs >= 0.0, "{l}");
                Some(format!("{id} {phase}"))
            })
            .collect()
    };
    assert_eq!(timings(&[]), Vec::<String>::new());
    // Steps are #1 FROM, #2 RUN, #3 COPY.
    let got = timings(&["--debug-timings"]);
    for want in [
        "#2 unpack",
        "#2 process",
        "#2 layer",
        "#3 names",
        "#3 layer",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
}
