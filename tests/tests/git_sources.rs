//! ADD of a git repository through the real binary, against a real `git daemon` on 127.0.0.1:
//! branches, tags, commits and subdirectories, `--keep-git-dir`, `--checksum`, the cache keyed
//! by the resolved commit, and the fences around the host's git (options in URLs, the user's
//! configuration and templates, submodules, symlinked subdirectories, time and size limits).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::{Store, context, ok, texts, tool};

/// A git repository in a temp dir, committed to with fixed dates.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main", "repo"]);
        r
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn git(&self, args: &[&str]) -> String {
        let mut c = tool("git");
        c.current_dir(if self.path().exists() {
            self.path()
        } else {
            self.dir.path().to_path_buf()
        })
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "@1600000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1600000000 +0000")
        .args(args);
        texts(&ok(c)).0.trim().to_owned()
    }

    fn write(&self, path: &str, content: &[u8]) {
        let p = self.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Commits everything at `time` and returns the commit.
    fn commit(&self, time: u64, message: &str) -> String {
        self.git(&["add", "-A"]);
        let date = format!("@{time} +0000");
        let mut c = tool("git");
        c.current_dir(self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(["commit", "-q", "-m", message]);
        ok(c);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// A free port on 127.0.0.1 (the listener is closed for the server to take it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for something to listen on `port`.
fn wait_port(port: u16, child: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no server on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving `base`'s repositories at `git://127.0.0.1:PORT/NAME`; killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn serve(base: &Path) -> Daemon {
        let port = free_port();
        let mut cmd = Command::new("git");
        cmd.args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base);
        // Its own process group: the children serving connections go with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, &mut child);
        Daemon { child, port }
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository with a file, an executable in `sub/`, a symlink to /etc and an annotated tag.
fn sample() -> (Repo, String) {
    let r = Repo::new();
    r.write("a.txt", b"hello\n");
    r.write("sub/run.sh", b"#!/bin/sh\n");
    fs::set_permissions(
        r.path().join("sub/run.sh"),
        fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc", r.path().join("etc-link")).unwrap();
    let commit = r.commit(1_600_000_000, "one");
    r.git(&["tag", "-a", "v1", "-m", "v1"]);
    (r, commit)
}

fn build(
    s: &Store,
    dockerfile: &str,
    env: &[(&str, &str)],
) -> (bool, PathBuf, String, tempfile::TempDir) {
    let ctx = context(dockerfile);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("out");
    let mut c = s.cmd(&["build", "--progress", "plain"]);
    c.arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (_, stderr) = texts(&o);
    (o.status.success(), dest, stderr, out)
}

#[test]
fn add_of_a_branch_tag_commit_and_subdirectory() {
    let (r, commit) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let url = d.url("repo");
    let df = format!(
        "FROM scratch\n\
         ADD {url} /head\n\
         ADD {url}#v1:sub /tag\n\
         ADD {url}#{commit} /commit/\n\
         ADD {url}?branch=main&subdir=sub /query\n"
    );
    let (good, out, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    assert!(stderr.contains(&format!("is commit {commit}")), "{stderr}");
    assert_eq!(
        fs::read_to_string(out.join("head/a.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs::read_link(out.join("head/etc-link")).unwrap(),
        Path::new("/etc")
    );
    assert!(!out.join("head/.git").exists());
    for d in ["tag", "query"] {
        assert!(!out.join(d).join("a.txt").exists(), "{d}");
        let m = fs::metadata(out.join(d).join("run.sh")).unwrap();
        // git's modes, whatever the checkout's umask; the commit's time.
        assert_eq!(m.mode() & 0o777, 0o755, "{d}");
        assert_eq!(m.mtime(), 1_600_000_000, "{d}");
    }
    let m = fs::metadata(out.join("commit/a.txt")).unwrap();
    assert_eq!((m.mode() & 0o777, m.mtime()), (0o644, 1_600_000_000));
}

#[test]
fn keep_git_dir_keeps_the_checkout_at_its_commit() {
    let (r, commit) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let url = d.url("repo");
    let df = format!(
        "FROM scratch\nADD --keep-git-dir=true {url}#main /k\nADD {url}?keep-git-dir=1 /q\n"
    );
    let (good, out, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    for d in ["k", "q"] {
        let head = fs::read_to_string(out.join(d).join(".git/HEAD")).unwrap();
        assert_eq!(head.trim(), commit, "{d}");
    }
    // A flag and a query that disagree are an error.
    let df = format!("FROM scratch\nADD --keep-git-dir {url}?keep-git-dir=false /k\n");
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(!good);
    assert!(stderr.contains("inconsistent keep-git-dir"), "{stderr}");
}

#[test]
fn checksum_pins_the_commit() {
    let (r, commit) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let url = d.url("repo");
    let df = format!(
        "FROM scratch\nADD --checksum={} {url}#v1 /c\n",
        &commit[..10]
    );
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    let df = format!("FROM scratch\nADD --checksum=0000000 {url}#v1 /c\n");
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(!good);
    assert!(
        stderr.contains(&format!(
            "checksum mismatch: v1 is commit {commit}, not 0000000"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    let df = format!("FROM scratch\nADD {url}#nope /c\n");
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(!good);
    assert!(
        stderr.contains("no branch, tag or ref named \"nope\""),
        "{stderr}"
    );
}

#[test]
fn the_cache_follows_the_commit_not_the_ref() {
    let (r, _) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let df = format!("FROM scratch\nADD {}#main /m\n", d.url("repo"));
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    let (good, out, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    assert!(stderr.lines().any(|l| l == "#1 CACHED"), "{stderr}");
    assert!(!out.join("m/b.txt").exists());
    r.write("b.txt", b"new\n");
    let second = r.commit(1_600_000_100, "two");
    let (good, out, stderr, _t) = build(&s, &df, &[]);
    assert!(good, "{stderr}");
    assert!(!stderr.lines().any(|l| l == "#1 CACHED"), "{stderr}");
    assert!(stderr.contains(&second), "{stderr}");
    assert_eq!(fs::read_to_string(out.join("m/b.txt")).unwrap(), "new\n");
    assert_eq!(
        fs::metadata(out.join("m/a.txt")).unwrap().mtime(),
        1_600_000_100
    );
}

#[test]
fn urls_never_become_git_or_ssh_options() {
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("pwned");
    let s = Store::new();
    for src in [
        format!("ssh://-oProxyCommand=touch%20{}/r", m.display()),
        format!("ssh://git@-oProxyCommand=touch%20{}/r", m.display()),
        "https://h/r.git#--upload-pack=touch".to_owned(),
    ] {
        let df = format!("FROM scratch\nADD {src} /x\n");
        let (good, _, stderr, _t) = build(&s, &df, &[]);
        assert!(!good, "{src}");
        assert!(stderr.contains("git source"), "{src}: {stderr}");
    }
    // Not git's to fetch at all: a local path of the context, which does not exist.
    let df = format!(
        "FROM scratch\nADD ext::sh%20-c%20touch%20{} /x\n",
        m.display()
    );
    let (good, _, _, _t) = build(&s, &df, &[]);
    assert!(!good);
    assert!(!m.exists(), "an option or transport in a URL ran a command");
}

#[test]
fn git_reads_no_user_configuration_templates_or_submodules() {
    let (r, commit) = sample();
    // A second repository that a URL rewrite in the user's configuration would swap in.
    let other = Repo::new();
    fs::rename(other.path(), r.dir.path().join("other")).unwrap();
    let d = Daemon::serve(r.dir.path());
    let home = tempfile::tempdir().unwrap();
    let marker = home.path().join("ran");
    fs::write(
        home.path().join(".gitconfig"),
        format!(
            "[url \"{}\"]\n\tinsteadOf = {}\n[core]\n\tfsmonitor = touch {}\n\thooksPath = {}\n",
            d.url("other"),
            d.url("repo"),
            marker.display(),
            home.path().join("hooks").display()
        ),
    )
    .unwrap();
    // A template directory whose post-checkout hook would run in the checkout.
    for dir in ["hooks", "templates/hooks"] {
        let hook = home.path().join(dir).join("post-checkout");
        fs::create_dir_all(hook.parent().unwrap()).unwrap();
        fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A submodule pointing at a repository of the host, by path.
    let secret = Repo::new();
    secret.write("secret.txt", b"host secret\n");
    secret.commit(1_600_000_000, "secret");
    r.git(&[
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        secret.path().to_str().unwrap(),
        "mod",
    ]);
    let with_sub = r.commit(1_600_000_050, "submodule");
    assert_ne!(with_sub, commit);
    let s = Store::new();
    let df = format!("FROM scratch\nADD {}#main /r\n", d.url("repo"));
    let home_s = home.path().to_str().unwrap();
    let templates = home.path().join("templates");
    let (good, out, stderr, _t) = build(
        &s,
        &df,
        &[
            ("HOME", home_s),
            ("XDG_CONFIG_HOME", home_s),
            ("GIT_TEMPLATE_DIR", templates.to_str().unwrap()),
            ("GIT_CONFIG_PARAMETERS", "'protocol.file.allow'='always'"),
        ],
    );
    assert!(good, "{stderr}");
    assert!(
        stderr.contains(&with_sub),
        "the rewrite was applied: {stderr}"
    );
    assert_eq!(fs::read_to_string(out.join("r/a.txt")).unwrap(), "hello\n");
    assert!(!marker.exists(), "a hook or fsmonitor of the user's ran");
    assert!(out.join("r/mod").is_dir());
    assert!(
        !out.join("r/mod/secret.txt").exists(),
        "a host repository was read"
    );
}

#[test]
fn a_subdirectory_through_a_symlink_is_refused() {
    let (r, commit) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let df = format!("FROM scratch\nADD {}#main:etc-link /x\n", d.url("repo"));
    let (good, _, stderr, _t) = build(&s, &df, &[]);
    assert!(!good);
    assert!(
        stderr.contains(&format!(
            "\"etc-link\" is not a directory at commit {commit}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_silent_server_times_out_and_a_large_repository_is_stopped() {
    // Accepts and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = Store::new();
    let df = format!("FROM scratch\nADD git://127.0.0.1:{port}/r /x\n");
    let started = Instant::now();
    let (good, _, stderr, _t) = build(&s, &df, &[("CAIRN_GIT_TIMEOUT", "1")]);
    assert!(!good);
    assert!(stderr.contains("no result within 1s"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(l);

    let r = Repo::new();
    // Incompressible, for the fetch; and a large run of zeros, for the checkout.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    r.write("noise", &noise);
    r.commit(1_600_000_000, "noise");
    let zeros = Repo::new();
    zeros.write("zeros", &vec![0u8; 3_000_000]);
    zeros.commit(1_600_000_000, "zeros");
    fs::rename(zeros.path(), r.dir.path().join("zeros")).unwrap();
    let d = Daemon::serve(r.dir.path());
    for (name, limit, what) in [
        ("repo", "100000", "the fetched repository"),
        ("zeros", "1000000", "the checkout"),
    ] {
        let df = format!("FROM scratch\nADD {} /x\n", d.url(name));
        let (good, _, stderr, _t) = build(&s, &df, &[("CAIRN_GIT_MAX_SIZE", limit)]);
        assert!(!good, "{name}");
        assert!(
            stderr.contains(&format!("{what} is more than {limit} bytes")),
            "{name}: {stderr}"
        );
    }
    // Nothing of the checkouts is left in the store's scratch space.
    let tmp = s.root.join("tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains("git")),
        "{left:?}"
    );
}

#[test]
fn provenance_names_the_commit_a_ref_was() {
    let (r, commit) = sample();
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let url = d.url("repo");
    let ctx = context(&format!("FROM scratch\nADD {url}#v1 /src\n"));
    let mut c = s.cmd(&["build", "-q", "--provenance=mode=max", "-t", "git:1"]);
    c.arg(ctx.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", texts(&o).1);
    let c = s.cmd(&["inspect", "--attestations", "git:1"]);
    let v: serde_json::Value = serde_json::from_str(&texts(&ok(c)).0).unwrap();
    let deps = v[0]["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let git = deps
        .iter()
        .find(|d| d["uri"] == format!("{url}#v1"))
        .unwrap_or_else(|| panic!("no {url}#v1 in {deps:?}"));
    assert_eq!(git["digest"]["sha1"], commit.as_str());
}

#[test]
fn a_git_repository_is_a_build_context() {
    let (r, _) = sample();
    r.write("sub/Dockerfile", b"FROM scratch\nCOPY . /ctx/\n");
    r.write("sub/other.Dockerfile", b"FROM scratch\nCOPY run.sh /only\n");
    std::os::unix::fs::symlink("/etc/hostname", r.path().join("sub/escape.Dockerfile")).unwrap();
    let commit = r.commit(1_600_000_200, "with a Dockerfile");
    let d = Daemon::serve(r.dir.path());
    let s = Store::new();
    let context = format!("{}#main:sub", d.url("repo"));
    let out = tempfile::tempdir().unwrap();
    let build = |extra: &[&str], dest: &str| {
        let mut c = s.cmd(&["build", "-q", "--provenance", "-t", "from-git:1"]);
        c.args(extra)
            .arg("-o")
            .arg(format!(
                "type=local,dest={}",
                out.path().join(dest).display()
            ))
            .arg(&context);
        c.output().unwrap()
    };
    let o = build(&[], "all");
    assert!(o.status.success(), "{}", texts(&o).1);
    let ctx = out.path().join("all/ctx");
    assert_eq!(
        fs::read_to_string(ctx.join("run.sh")).unwrap(),
        "#!/bin/sh\n"
    );
    assert!(
        !ctx.join("a.txt").exists(),
        "the subdirectory is the context"
    );
    // -f is a path in the repository.
    let o = build(&["-f", "other.Dockerfile"], "other");
    assert!(o.status.success(), "{}", texts(&o).1);
    assert!(out.path().join("other/only").is_file());
    // Never a host file: not by `..`, not through a symlink in the repository.
    for f in ["../a.txt", "/etc/hostname", "escape.Dockerfile"] {
        let o = build(&["-f", f], "bad");
        let stderr = texts(&o).1;
        assert!(!o.status.success(), "-f {f}: {stderr}");
        assert!(
            stderr.contains("inside the repository") || stderr.contains("leads out"),
            "-f {f}: {stderr}"
        );
    }
    // The provenance names the repository and commit as the config source.
    let o = build(&[], "again");
    assert!(o.status.success(), "{}", texts(&o).1);
    let c = s.cmd(&["inspect", "--attestations", "from-git:1"]);
    let v: serde_json::Value = serde_json::from_str(&texts(&ok(c)).0).unwrap();
    let source = &v[0]["predicate"]["buildDefinition"]["externalParameters"]["configSource"];
    assert_eq!(source["uri"], context.as_str(), "{source}");
    assert_eq!(source["digest"]["sha1"], commit.as_str());
    assert_eq!(source["path"], "Dockerfile");
}
