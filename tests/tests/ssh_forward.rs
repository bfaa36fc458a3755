//! `cairn build --ssh` through the real binary, against a real `sshd` on 127.0.0.1 (run as the
//! test's user, with its own host key) and a real `ssh-agent`: RUN --mount=type=ssh reaching
//! sshd with the forwarded agent (the host's ssh client copied into the step's image), the
//! socket's owner, the agent kept read-only, `required`, nothing left in the layer, and ADD
//! of a git repository over ssh with the agent and the user's known hosts.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_e2e::{Store, is_root, loaded_busybox, ok, texts, tool};

/// `c` run to success (a builder chain's command), its output.
fn okc(c: &mut Command) -> std::process::Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}", texts(&o).1);
    o
}

fn user() -> String {
    texts(&okc(tool("id").arg("-un"))).0.trim().to_owned()
}

/// sshd for this user on a free port of 127.0.0.1, trusting `key`; killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for k in ["hostkey", "userkey"] {
            okc(tool("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "cairn-test", "-f"])
                .arg(d.join(k)));
        }
        fs::copy(d.join("userkey.pub"), d.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nAuthorizedKeysFile {a}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n",
                h = d.join("hostkey").display(),
                a = d.join("authorized_keys").display()
            ),
        )
        .unwrap();
        if is_root() {
            // sshd started by root wants its privilege-separation directory, which the
            // package's service makes at boot.
            fs::create_dir_all("/run/sshd").unwrap();
        }
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .args(["-D", "-e"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "sshd exited");
            assert!(start.elapsed() < Duration::from_secs(10), "no sshd");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd { child, port, dir }
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("userkey")
    }

    /// The known_hosts line of this server.
    fn known_host(&self) -> String {
        let pubkey = fs::read_to_string(self.dir.path().join("hostkey.pub")).unwrap();
        let mut f = pubkey.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            f.next().unwrap(),
            f.next().unwrap()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ssh-agent of the test's holding `key`; killed when dropped.
struct Agent {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn with(key: &Path) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // Bound is not yet listening: ready when a connection is taken.
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "no agent");
            std::thread::sleep(Duration::from_millis(10));
        }
        okc(tool("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &sock));
        Agent {
            child,
            sock,
            _dir: dir,
        }
    }

    fn listed(&self) -> String {
        let out = tool("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &self.sock)
            .output()
            .unwrap();
        texts(&out).0
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A context holding the host's ssh and ssh-add with their libraries (the test image has no
/// ssh client), a passwd with root and user 1000, the server's known host, and `dockerfile`.
fn ssh_context(dockerfile: &str, known_host: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path().join("sshroot");
    let mut files = vec![
        PathBuf::from("/usr/bin/ssh"),
        PathBuf::from("/usr/bin/ssh-add"),
    ];
    for bin in ["/usr/bin/ssh", "/usr/bin/ssh-add"] {
        let (ldd, _) = texts(&okc(tool("ldd").arg(bin)));
        for l in ldd.lines() {
            if let Some(p) = l.split_whitespace().find(|w| w.starts_with('/')) {
                files.push(PathBuf::from(p));
            }
        }
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(&f).unwrap(), &to).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nu:x:1000:\n").unwrap();
    fs::write(root.join("known_hosts"), known_host).unwrap();
    fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn ssh_line(sshd: &Sshd, remote: &str) -> String {
    format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile=/known_hosts -p {} {}@127.0.0.1 {remote}",
        sshd.port,
        user()
    )
}

fn build(
    s: &Store,
    ctx: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (bool, PathBuf, String, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("out");
    let mut c = s.cmd(&["build", "--progress", "plain", "--allow", "network.host"]);
    c.args(args)
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx)
        .env_remove("SSH_AUTH_SOCK");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (_, stderr) = texts(&o);
    (o.status.success(), dest, stderr, out)
}

#[test]
fn run_reaches_sshd_with_the_forwarded_agent_and_leaves_no_trace() {
    let sshd = Sshd::start();
    let agent = Agent::with(&sshd.key());
    let s = loaded_busybox();
    let df = format!(
        "FROM busybox\nCOPY sshroot/ /\n\
         RUN --network=host --mount=type=ssh {} > /greeting\n\
         RUN --network=host --mount=type=ssh,id=deploy,target=/tmp/a.sock \
         echo \"$SSH_AUTH_SOCK\" > /sock-var && ssh-add -D; ssh-add -l > /listed\n",
        ssh_line(&sshd, "echo hello-over-ssh")
    );
    let ctx = ssh_context(&df, &sshd.known_host());
    let (good, out, stderr, _t) = build(
        &s,
        ctx.path(),
        &[
            "--ssh",
            "default",
            "--ssh",
            &format!("deploy={}", agent.sock.display()),
        ],
        &[("SSH_AUTH_SOCK", agent.sock.as_os_str())],
    );
    assert!(good, "{stderr}");
    assert_eq!(
        fs::read_to_string(out.join("greeting")).unwrap(),
        "hello-over-ssh\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("sock-var")).unwrap(),
        "/tmp/a.sock\n"
    );
    // The step saw the key, and could not remove it from the user's agent.
    assert!(
        fs::read_to_string(out.join("listed"))
            .unwrap()
            .contains("cairn-test")
    );
    assert!(
        agent.listed().contains("cairn-test"),
        "the agent lost its key"
    );
    // No socket, and no directory made for it, in the layers.
    assert!(!out.join("run/buildkit").exists());
    assert!(!out.join("tmp/a.sock").exists());
    // The socket's path is not in the history or the key: another agent is a cache hit.
    let other = Agent::with(&sshd.key());
    let (good, _, stderr, _t) = build(
        &s,
        ctx.path(),
        &[
            "--ssh",
            "default",
            "--ssh",
            &format!("deploy={}", other.sock.display()),
        ],
        &[("SSH_AUTH_SOCK", other.sock.as_os_str())],
    );
    assert!(good, "{stderr}");
    assert!(stderr.contains("#3 CACHED"), "{stderr}");
}

#[test]
fn a_key_file_gets_an_agent_of_cairns_and_the_socket_its_owner() {
    let sshd = Sshd::start();
    let s = loaded_busybox();
    let df = format!(
        "FROM busybox\nCOPY sshroot/ /\nUSER 1000\n\
         RUN --network=host --mount=type=ssh,uid=1000 {} > /tmp/greeting\n\
         RUN --mount=type=ssh ls -ln /run/buildkit/ssh_agent.0 | cut -c1-10 > /tmp/mode\n\
         RUN --mount=type=ssh,mode=0666 ssh-add -l > /tmp/listed 2>&1 || true\n",
        ssh_line(&sshd, "echo as-user-1000")
    );
    let ctx = ssh_context(&df, &sshd.known_host());
    let key = format!("default={}", sshd.key().display());
    let (good, out, stderr, _t) = build(&s, ctx.path(), &["--ssh", &key], &[]);
    assert!(good, "{stderr}");
    assert_eq!(
        fs::read_to_string(out.join("tmp/greeting")).unwrap(),
        "as-user-1000\n"
    );
    // Root's 0600 socket, which user 1000 could not use; with mode=0666 it can.
    assert_eq!(
        fs::read_to_string(out.join("tmp/mode")).unwrap(),
        "srw-------\n"
    );
    assert!(
        fs::read_to_string(out.join("tmp/listed"))
            .unwrap()
            .contains("cairn-test")
    );
    // The key file never entered the image.
    let key_text = fs::read(sshd.key()).unwrap();
    for e in walkdir(&out) {
        if e.is_file() {
            assert_ne!(fs::read(&e).unwrap(), key_text, "{}", e.display());
        }
    }
    // cairn's agent is gone with the build.
    let (ps, _) = texts(&okc(tool("ps").args(["-eo", "args"])));
    assert!(
        !ps.lines()
            .any(|l| l.starts_with("ssh-agent -D -a") && l.contains("cairn-ssh")),
        "{ps}"
    );
}

fn walkdir(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![d.to_path_buf()];
    while let Some(p) = todo.pop() {
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().unwrap().is_dir() {
                    todo.push(path);
                } else {
                    out.push(path);
                }
            }
        }
    }
    out
}

#[test]
fn required_without_an_agent_fails_and_optional_is_skipped() {
    let s = loaded_busybox();
    let ctx = cairn_e2e::context(
        "FROM busybox\nRUN --mount=type=ssh test -z \"$SSH_AUTH_SOCK\" && ! test -e /run/buildkit/ssh_agent.0\n\
         RUN --mount=type=ssh,id=deploy,required=true true\n",
    );
    let (good, _, stderr, _t) = build(&s, ctx.path(), &[], &[]);
    assert!(!good);
    assert!(
        stderr.contains("#2 DONE") || stderr.contains("#2 "),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("ssh agent deploy is required but was not given (cairn build --ssh deploy)"),
        "{stderr}"
    );
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    let (good, _, stderr, _t) = build(&s, ctx.path(), &["--ssh", "default"], &[]);
    assert!(!good);
    assert!(stderr.contains("SSH_AUTH_SOCK is not set"), "{stderr}");
}

#[test]
fn add_of_a_git_repository_over_ssh_uses_the_agent_and_known_hosts() {
    let sshd = Sshd::start();
    let agent = Agent::with(&sshd.key());
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path().join("r.git");
    let mut g = tool("git");
    g.args(["init", "-q", "-b", "main"]).arg(&r);
    ok(g);
    fs::write(r.join("f.txt"), "over ssh\n").unwrap();
    for args in [vec!["add", "f.txt"], vec!["commit", "-q", "-m", "one"]] {
        let mut g = tool("git");
        g.current_dir(&r)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .args(args);
        ok(g);
    }
    // The test's user must be able to read the repository over ssh.
    let mut chmod = tool("chmod");
    chmod.args(["-R", "a+rX"]).arg(repo.path());
    ok(chmod);
    let s = Store::new();
    let ctx = cairn_e2e::context(&format!(
        "FROM scratch\nADD ssh://{}@127.0.0.1:{}{}#main /r\n",
        user(),
        sshd.port,
        r.display()
    ));
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join(".ssh")).unwrap();
    let sock = agent.sock.as_os_str();
    // An unknown host key is refused, never accepted unseen.
    let (good, _, stderr, _t) = build(
        &s,
        ctx.path(),
        &["--ssh", "default"],
        &[("HOME", home.path().as_os_str()), ("SSH_AUTH_SOCK", sock)],
    );
    assert!(!good);
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    fs::write(home.path().join(".ssh/known_hosts"), sshd.known_host()).unwrap();
    let (good, out, stderr, _t) = build(
        &s,
        ctx.path(),
        &["--ssh", "default"],
        &[("HOME", home.path().as_os_str()), ("SSH_AUTH_SOCK", sock)],
    );
    assert!(good, "{stderr}");
    assert_eq!(
        fs::read_to_string(out.join("r/f.txt")).unwrap(),
        "over ssh\n"
    );
    // Without an agent the URL is refused before git runs.
    let (good, _, stderr, _t) = build(&s, ctx.path(), &[], &[("HOME", home.path().as_os_str())]);
    assert!(!good);
    assert!(
        stderr.contains("an ssh URL needs the ssh agent \"default\""),
        "{stderr}"
    );
}
