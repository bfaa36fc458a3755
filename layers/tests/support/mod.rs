//! Test support for the registry client: a real docker-registry process on a free loopback
//! port, a tiny scripted HTTP server for misbehaving registries, and small test images.
// Test support: panicking on a broken fixture is the point.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_layers::Store;
use cairn_layers::image::{Descriptor, ImageConfig};
use cairn_layers::registry::{Event, RegistryOptions, Retry};

/// A `docker-registry serve` process, killed when dropped.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port")
        .port()
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with_auth(None)
    }

    /// With Basic authentication for one user (an htpasswd file made by `htpasswd -B`).
    pub fn start_with_auth(user: Option<(&str, &str)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth = String::new();
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils, see scripts/install-deps.sh) must be installed");
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: cairn-test\n    path: {}\n",
                file.display()
            );
        }
        // Retried a few times: the port is free when picked, but another process may take it.
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: cairn-test-secret\n{auth}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write config");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("docker-registry (see scripts/install-deps.sh) must be installed");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(&addr).is_ok() {
                    return TestRegistry { child, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            eprintln!("docker-registry on {addr} did not start: {err}");
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options for tests: quick retries, no config file.
pub fn opts() -> RegistryOptions {
    RegistryOptions {
        retry: Retry {
            attempts: 3,
            backoff: Duration::from_millis(10),
        },
        ..RegistryOptions::default()
    }
}

/// Collects events.
#[derive(Default, Clone)]
pub struct Events(pub Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn sink(&self) -> impl Fn(Event) + Sync + '_ {
        move |e| self.0.lock().unwrap().push(e)
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image of pseudo-random layers (not real tars: registries do not look inside).
pub fn image(store: &Store, seed: u64, sizes: &[usize], arch: &str) -> Descriptor {
    let mut layers = Vec::new();
    let mut config = ImageConfig::scratch();
    config.architecture = arch.to_owned();
    for (i, &n) in sizes.iter().enumerate() {
        let bytes = noise(seed * 100 + i as u64, n);
        let digest = store.put_blob(&bytes).unwrap();
        config.rootfs.diff_ids.push(digest.clone());
        layers.push(Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest,
            size: n as u64,
            platform: None,
            annotations: BTreeMap::new(),
        });
    }
    store.put_image(&config, layers).unwrap()
}

pub fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path().join("store")).unwrap();
    (d, s)
}

/// What the scripted server answers: status, headers, body; `cut` stops the body after that
/// many bytes and closes the connection (while the headers promised all of it).
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub cut: Option<usize>,
}

impl Reply {
    pub fn ok(content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            cut: None,
        }
    }

    pub fn not_found() -> Reply {
        Reply {
            status: 404,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#
                .to_vec(),
            cut: None,
        }
    }
}

/// A request as the scripted server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

/// A one-thread HTTP/1.1 server answering each request with `handler` (one request per
/// connection). Stops with the test process.
pub fn scripted_server(
    handler: impl Fn(&Seen, usize) -> Reply + Send + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let req = Seen {
                method,
                path,
                headers,
            };
            log.lock().unwrap().push(req.clone());
            let reply = handler(&req, n);
            let mut out = format!(
                "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                reply.body.len()
            );
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = conn.write_all(out.as_bytes());
            if req.method != "HEAD" {
                let end = reply.cut.unwrap_or(reply.body.len()).min(reply.body.len());
                let _ = conn.write_all(&reply.body[..end]);
            }
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    });
    (addr, seen)
}

/// The files under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
