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

use cairn_e2e::{Store, is_root, loaded_busybox, ok, texts, tool};

/// Both user-mode networking tools; every reachability test runs under each.
const TOOLS: [&str; 2] = ["pasta", "slirp4netns"];

/// What a host-side server answers, so a step's output shows whether it got through.
const SECRET: &str = "host-secret-7f3a";

/// A build context holding `dockerfile`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

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
    for usernet in TOOLS {
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
    for usernet in TOOLS {
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
    for usernet in TOOLS {
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
    let out = build_cmd(&s, "pasta", ctx.path(), &[]).output().unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow network.host"), "{stderr}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // The build-wide flag needs it too.
    let plain = context(&format!("FROM busybox\nRUN {}\n", server.nc()));
    let out = build_cmd(&s, "pasta", plain.path(), &["--network", "host"])
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
        let out = build_cmd(&s, "pasta", c.path(), &args).output().unwrap();
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
    for usernet in TOOLS {
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
    let mut c = build_cmd(&s, "pasta", ctx.path(), &[]);
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
    let mut c = build_cmd(&s, "pasta", none.path(), &[]);
    c.env("CAIRN_USERNET", "no-such-tool");
    ok(c);
}
