//! The network as a security boundary, through the real binary: what a RUN step (and
//! `cairn run`) can reach of the host, the host-network entitlement, ADD's redirects, and
//! timeouts and cancellation of downloads and registry transfers.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_e2e::{Store, context, is_root, loaded_busybox, ok, texts, tool};

/// The user-mode networking tools cairn uses here; every reachability test runs under each.
/// pasta refuses to work as root, so root's builds have slirp4netns alone.
fn tools() -> Vec<&'static str> {
    if is_root() {
        vec!["slirp4netns"]
    } else {
        vec!["slirp4netns", "pasta"]
    }
}

/// What a host-side server answers, so a step's output shows whether it got through.
const SECRET: &str = "host-secret-7f3a";

/// `cairn build --progress plain --no-cache ARGS CONTEXT` with `CAIRN_USERNET=tool`.
fn build_cmd(s: &Store, usernet: &str, ctx: &Path, args: &[&str]) -> Command {
    let mut c = s.cmd(&["build", "--progress", "plain", "--no-cache"]);
    c.env("CAIRN_USERNET", usernet).args(args).arg(ctx);
    c
}

/// A TCP server that answers every connection with [`SECRET`] and counts them; stopped when
/// dropped.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn bind(ip: IpAddr) -> Server {
        let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = c.write_all(format!("{SECRET}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Server { addr, hits, stop }
    }

    /// busybox's `nc` to this server, printing what it says. Its input stays open until the
    /// answer came: the pasta of Debian 12 loses an answer to a connection the step has
    /// half-closed already. (busybox-static's wget crashes.)
    fn nc(&self) -> String {
        format!("sleep 2 | nc -w 5 {} {}", self.addr.ip(), self.addr.port())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_step_cannot_reach_the_hosts_loopback() {
    let s = loaded_busybox();
    let v4 = Server::bind("127.0.0.1".parse().unwrap());
    let v6 = Server::bind("::1".parse().unwrap());
    let ctx = context(&format!(
        "FROM busybox\nRUN {}; {}; echo tried\n",
        v4.nc(),
        v6.nc()
    ));
    for usernet in tools() {
        let out = build_cmd(&s, usernet, ctx.path(), &[]).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{usernet}: {stderr}");
        assert!(stderr.contains("tried"), "{usernet}: {stderr}");
        assert!(
            !stderr.contains(SECRET),
            "{usernet}: a step reached the host's loopback: {stderr}"
        );
    }
    assert_eq!(v4.hits.load(Ordering::SeqCst), 0, "127.0.0.1 was reached");
    assert_eq!(v6.hits.load(Ordering::SeqCst), 0, "::1 was reached");
}

#[test]
fn a_step_cannot_see_the_hosts_abstract_sockets() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("cairn-e2e-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    // The host's own listing shows it, so the step's listing could.
    let host = fs::read_to_string("/proc/net/unix").unwrap();
    assert!(host.contains(&format!("@{name}")), "{host}");
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nRUN cat /proc/net/unix; echo listed\n");
    for usernet in tools() {
        let out = build_cmd(&s, usernet, ctx.path(), &[]).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{usernet}: {stderr}");
        assert!(stderr.contains("listed"), "{usernet}: {stderr}");
        assert!(
            !stderr.contains(&name),
            "{usernet}: a step sees the host's abstract socket: {stderr}"
        );
    }
    // `cairn run` is the same sandbox.
    let out = s
        .cmd(&["run", "--rm", "busybox", "cat", "/proc/net/unix"])
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains(&name), "cairn run sees it: {stdout}");
    // Only when asked for the host's network.
    let out = s
        .cmd(&[
            "run",
            "--rm",
            "--network",
            "host",
            "busybox",
            "cat",
            "/proc/net/unix",
        ])
        .output()
        .unwrap();
    assert!(texts(&out).0.contains(&name), "{}", texts(&out).1);
}

/// An address of this machine that is not loopback, one a step's traffic leaves the host for.
/// When the machine has none (no network at all), root makes one on a dummy interface, which
/// is removed when the guard drops.
fn outside_address() -> (IpAddr, Option<DummyInterface>) {
    let out = ok({
        let mut c = tool("ip");
        c.args(["-o", "-4", "addr", "show", "scope", "global"]);
        c
    });
    let found = texts(&out).0.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        w.position(|x| x == "inet")?;
        w.next()?.split('/').next()?.parse::<IpAddr>().ok()
    });
    if let Some(ip) = found {
        return (ip, None);
    }
    assert!(
        is_root(),
        "this machine has no non-loopback address, and only root can make one; run the suite \
         as root first, or on a machine with a network interface"
    );
    let name = "cairn-e2e0";
    let ip = "198.51.100.77";
    for args in [
        vec!["link", "add", name, "type", "dummy"],
        vec!["addr", "add", &format!("{ip}/24"), "dev", name],
        vec!["link", "set", name, "up"],
    ] {
        let mut c = tool("ip");
        c.args(args);
        ok(c);
    }
    (ip.parse().unwrap(), Some(DummyInterface(name)))
}

struct DummyInterface(&'static str);

impl Drop for DummyInterface {
    fn drop(&mut self) {
        let _ = tool("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn a_step_reaches_the_hosts_outside_address_and_has_dns() {
    let (ip, _dummy) = outside_address();
    let server = Server::bind(ip);
    let s = loaded_busybox();
    let ctx = context(&format!(
        "FROM busybox\nRUN {}\nRUN cat /etc/resolv.conf\n",
        server.nc()
    ));
    for usernet in tools() {
        let out = build_cmd(&s, usernet, ctx.path(), &[]).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{usernet}: {stderr}");
        assert!(
            stderr.contains(SECRET),
            "{usernet}: the step did not reach {}: {stderr}",
            server.addr
        );
        // The nameserver is the user-mode network's forwarder, never a loopback address.
        assert!(
            stderr.contains("nameserver 10.0.2.3") && !stderr.contains("nameserver 127."),
            "{usernet}: {stderr}"
        );
    }
}

#[test]
fn the_host_network_needs_the_entitlement() {
    let s = loaded_busybox();
    let server = Server::bind("127.0.0.1".parse().unwrap());
    let ctx = context(&format!(
        "FROM busybox\nRUN --network=host {}\n",
        server.nc()
    ));
    let out = build_cmd(&s, tools()[0], ctx.path(), &[]).output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow network.host"), "{stderr}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // The build-wide flag needs it too.
    let plain = context(&format!("FROM busybox\nRUN {}\n", server.nc()));
    let out = build_cmd(&s, tools()[0], plain.path(), &["--network", "host"])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow network.host"), "{stderr}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // Granted, the host's loopback is the step's.
    for (c, args) in [
        (&ctx, vec!["--allow", "network.host"]),
        (&plain, vec!["--network", "host", "--allow", "network.host"]),
    ] {
        let out = build_cmd(&s, tools()[0], c.path(), &args).output().unwrap();
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(SECRET), "{stderr}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

/// The pids of processes whose parent is `ppid` and whose name starts with one of `names`
/// (Debian's pasta runs as `passt.avx2` where the CPU has it).
fn children_named(ppid: u32, names: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let parent = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(ppid) && names.iter().any(|n| comm.starts_with(n)) {
            out.push(pid);
        }
    }
    out
}

/// A child process killed and reaped when dropped, so a failed assertion leaves no build
/// running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killing_cairn_leaves_no_networking_process() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nRUN echo step-started; sleep 60\n");
    for usernet in tools() {
        let mut child = Killed(
            build_cmd(&s, usernet, ctx.path(), &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let cairn = child.0.id();
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("step-started") && !line.contains("RUN") {
                break;
            }
        }
        assert!(seen.contains("step-started"), "{usernet}: {seen}");
        let nets = children_named(cairn, &["pasta", "passt", "slirp4netns"]);
        assert_eq!(nets.len(), 1, "{usernet}: one networking process: {nets:?}");
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{}", nets[0])).exists() {
            // A zombie that init has not reaped yet is gone in all but name.
            let state = fs::read_to_string(format!("/proc/{}/stat", nets[0])).unwrap_or_default();
            if state.contains(") Z") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{usernet} {} outlived cairn",
                nets[0]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn no_networking_tool_is_an_error_naming_them() {
    let s = loaded_busybox();
    let ctx = context("FROM busybox\nRUN true\n");
    let mut c = build_cmd(&s, tools()[0], ctx.path(), &[]);
    // A PATH without either tool; the fixed directories cairn also searches hold them, so
    // the selection names a tool that exists nowhere.
    c.env("CAIRN_USERNET", "no-such-tool");
    let out = c.output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("passt") && stderr.contains("slirp4netns"),
        "{stderr}"
    );
    // --network=none needs neither.
    let none = context("FROM busybox\nRUN --network=none true\n");
    let mut c = build_cmd(&s, tools()[0], none.path(), &[]);
    c.env("CAIRN_USERNET", "no-such-tool");
    ok(c);
}

/// An HTTP/1.0 server on `ip` whose `route` answers each request's path with the response's
/// bytes; it records each request's path. It serves until the test process ends.
struct Http {
    addr: SocketAddr,
    hits: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Http {
    fn start(ip: IpAddr, route: impl Fn(&str) -> String + Send + Sync + 'static) -> Http {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = hits.clone();
        let route = Arc::new(route);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                let (h, route) = (h.clone(), route.clone());
                std::thread::spawn(move || {
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut r = BufReader::new(&c);
                    let mut first = String::new();
                    let _ = r.read_line(&mut first);
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                    h.lock().unwrap().push(path.clone());
                    let _ = (&c).write_all(route(&path).as_bytes());
                });
            }
        });
        Http { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        match self.addr {
            SocketAddr::V6(a) => format!("http://[{}]:{}{path}", a.ip(), a.port()),
            SocketAddr::V4(a) => format!("http://{a}{path}"),
        }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn redirect(to: &str) -> String {
    format!("HTTP/1.0 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
}

/// `cairn build -q` of `dockerfile` into a local directory, with `env`.
fn add_build(
    s: &Store,
    dockerfile: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    let ctx = context(dockerfile);
    let out = tempfile::tempdir().unwrap();
    let mut c = s.cmd(&["build", "-q", "-o"]);
    c.arg(format!(
        "type=local,dest={}",
        out.path().join("o").display()
    ))
    .arg(ctx.path());
    for (k, v) in env {
        c.env(k, v);
    }
    (c.output().unwrap(), out)
}

#[test]
fn add_refuses_a_redirect_to_the_hosts_loopback() {
    let local = Http::start("127.0.0.1".parse().unwrap(), |_| ok_response(SECRET));
    let secret_url = local.url("/secret");
    let (ip, _dummy) = outside_address();
    let to = secret_url.clone();
    let outside = Arc::new(std::sync::Mutex::new(String::new()));
    let o = outside.clone();
    let remote = Http::start(ip, move |path| match path {
        "/to-loopback" => redirect(&to),
        "/to-localhost" => redirect(&to.replace("127.0.0.1", "localhost")),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data"),
        "/to-zero" => redirect(&to.replace("127.0.0.1", "0.0.0.0")),
        "/to-here" => redirect(&format!("{}/plain", o.lock().unwrap())),
        "/plain" => ok_response("outside\n"),
        _ => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
    });
    *outside.lock().unwrap() = remote.url("");
    let s = Store::new();
    for path in ["/to-loopback", "/to-localhost", "/to-metadata", "/to-zero"] {
        let from = remote.url(path);
        let (out, _dir) = add_build(&s, &format!("FROM scratch\nADD {from} /got\n"), &[]);
        let (_, stderr) = texts(&out);
        assert!(!out.status.success(), "{path}: {stderr}");
        assert!(
            stderr.contains(&from) && stderr.contains("redirect"),
            "{path}: the error names the redirecting URL: {stderr}"
        );
    }
    let (out, _dir) = add_build(
        &s,
        &format!("FROM scratch\nADD {} /got\n", remote.url("/to-loopback")),
        &[],
    );
    assert!(texts(&out).1.contains(&secret_url), "{}", texts(&out).1);
    assert_eq!(local.hits("/secret"), 0, "the loopback service was fetched");

    // A redirect between outside addresses is followed; so is one from loopback to loopback
    // (the Dockerfile asked for this host itself).
    let (out, dir) = add_build(
        &s,
        &format!("FROM scratch\nADD {} /got\n", remote.url("/to-here")),
        &[],
    );
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(
        fs::read_to_string(dir.path().join("o/got")).unwrap(),
        "outside\n"
    );
    let hop = Http::start("127.0.0.1".parse().unwrap(), {
        let to = secret_url.clone();
        move |_| redirect(&to)
    });
    let (out, dir) = add_build(
        &s,
        &format!("FROM scratch\nADD {} /got\n", hop.url("/x")),
        &[],
    );
    assert!(out.status.success(), "{}", texts(&out).1);
    assert_eq!(
        fs::read_to_string(dir.path().join("o/got")).unwrap(),
        SECRET
    );
}

/// A TCP server that accepts connections and never says a word.
fn silent_server() -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((c, _)) => held.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, stop)
}

/// Runs `cmd` to its end, or kills it after `limit` (a bound against a hang, not a timing):
/// its output, or `None` when it had to be killed.
fn output_within(mut cmd: Command, limit: Duration) -> Option<std::process::Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while !d.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                let _ = tool("kill").args(["-KILL", &pid.to_string()]).status();
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    (!watchdog.join().unwrap()).then_some(out)
}

#[test]
fn a_silent_server_times_out_pull_and_add() {
    let (addr, stop) = silent_server();
    let s = Store::new();
    let mut pull = s.cmd(&["pull", &format!("{addr}/silent/img:1")]);
    pull.env("CAIRN_NET_TIMEOUT", "2");
    let out = output_within(pull, Duration::from_secs(60))
        .expect("cairn pull still waiting on a silent registry after 60 s");
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("2 s"),
        "the error names the registry and the timeout: {stderr}"
    );

    let url = format!("http://{addr}/file");
    let ctx = context(&format!("FROM scratch\nADD {url} /got\n"));
    let mut build = s.cmd(&["build", "-q"]);
    build.env("CAIRN_NET_TIMEOUT", "2").arg(ctx.path());
    let out = output_within(build, Duration::from_secs(60))
        .expect("ADD still waiting on a silent server after 60 s");
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&url) && stderr.contains("2 s"),
        "the error names the URL and the timeout: {stderr}"
    );
    stop.store(true, Ordering::SeqCst);
}

#[test]
fn sigterm_stops_an_endless_add() {
    // A server that streams zeros for as long as anyone reads.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let n = sent.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let n = n.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
                let chunk = vec![0u8; 64 << 10];
                while c.write_all(&chunk).is_ok() {
                    n.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let s = Store::new();
    let ctx = context(&format!("FROM scratch\nADD http://{addr}/endless /got\n"));
    let child = Killed(
        s.cmd(&["build", "-q"])
            .arg(ctx.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Under way: some megabytes have gone out.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(Ordering::SeqCst) < 8 << 20 {
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut term = tool("kill");
    term.args(["-TERM", &child.0.id().to_string()]);
    ok(term);
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "cairn still downloading 20 s after SIGTERM ({} bytes sent)",
            sent.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let tmp = s.root.join("tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}
