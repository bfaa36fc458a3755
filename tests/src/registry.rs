//! Registries for the end-to-end tests: docker-registry, a token server, a fault proxy, images.

// Everything runs unprivileged on ephemeral 127.0.0.1 ports in temp dirs, so tests run in
// parallel and as any user. Peers are real: the distribution registry, openssl-made
// certificates, RS256 tokens that the registry itself verifies, and skopeo as the other client.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::{Store, ok, texts};

/// The `service` the registry names in its Bearer challenge and expects as a token's audience.
pub const TOKEN_SERVICE: &str = "cairn-test-registry";
/// The issuer the registry trusts tokens from.
pub const TOKEN_ISSUER: &str = "cairn-test-issuer";

/// How long a helper waits for a server to come up or a fault to trigger before giving up:
/// protection against a hung test, never an assertion about speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// How clients authenticate to a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// An htpasswd (bcrypt) user file; the registry answers 401 with a Basic challenge.
    Basic {
        user: String,
        pass: String,
    },
    /// A Bearer challenge naming the harness's [`TokenServer`], which takes these credentials.
    Token {
        user: String,
        pass: String,
    },
}

impl Auth {
    pub fn basic(user: &str, pass: &str) -> Auth {
        Auth::Basic {
            user: user.to_owned(),
            pass: pass.to_owned(),
        }
    }

    pub fn token(user: &str, pass: &str) -> Auth {
        Auth::Token {
            user: user.to_owned(),
            pass: pass.to_owned(),
        }
    }

    /// `user:pass`, for `--creds`, when there are credentials.
    pub fn creds(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::Basic { user, pass } | Auth::Token { user, pass } => {
                Some(format!("{user}:{pass}"))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub auth: Auth,
    /// Serve HTTPS with a certificate from the registry's own CA ([`Registry::ca_dir`]).
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            auth: Auth::None,
            tls: false,
        }
    }
}

/// A free port on 127.0.0.1. Releasing it before the server binds leaves a small race with
/// other processes, which a test on loopback can afford (build.rs's HTTP server does the same).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry serve` process with filesystem storage in a temp dir, killed on drop.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    opts: Options,
    child: Option<Child>,
    token: Option<TokenServer>,
}

impl Registry {
    pub fn start(opts: Options) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let storage = d.join("storage");
        fs::create_dir_all(&storage).unwrap();

        let mut extra = String::new();
        if opts.tls {
            let tls = d.join("tls");
            make_server_cert(&tls, &d.join("ca"));
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_path(&tls.join("server.crt")),
                yaml_path(&tls.join("server.key"))
            ));
        }
        let mut token = None;
        match &opts.auth {
            Auth::None => {}
            Auth::Basic { user, pass } => {
                // distribution 2.8 accepts htpasswd over plain HTTP too, so Basic does not
                // force TLS; it reads only bcrypt entries (-B).
                let mut h = Command::new("htpasswd");
                h.args(["-Bbn", user, pass]);
                let line = ok_tool(h, "apache2-utils").stdout;
                let file = d.join("htpasswd");
                fs::write(&file, line).unwrap();
                extra.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: cairn-test\n    path: {}\n",
                    yaml_path(&file)
                ));
            }
            Auth::Token { user, pass } => {
                let server = TokenServer::start(&d.join("token"), user, pass);
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    yaml_path(&server.cert)
                ));
                token = Some(server);
            }
        }
        // A fixed http.secret: upload URLs carry state signed with it, so an upload started
        // before a restart is still recognised after it (the default secret is random).
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: cairn-test-secret\n{extra}",
            yaml_path(&storage)
        );
        fs::write(d.join("config.yml"), config).unwrap();
        let mut r = Registry {
            dir,
            port,
            opts,
            child: None,
            token,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("registry.log"))
            .unwrap();
        let mut c = Command::new("docker-registry");
        c.arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // distribution overrides its config from REGISTRY_* variables (REGISTRY_AUTH_FILE, which
        // the tests set for cairn, would become an unknown auth method): keep them all away.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                c.env_remove(k);
            }
        }
        let child = c.spawn().unwrap_or_else(|e| {
            panic!("docker-registry could not start ({e}): install it with scripts/install-deps.sh")
        });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the registry answers HTTP on its port (any status: a TLS registry answers a
    /// plain request with 400, which is enough to know it is serving).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("docker-registry exited ({status}) at start\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let req = format!(
                    "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut answer = Vec::new();
                if s.write_all(req.as_bytes()).is_ok()
                    && s.read_to_end(&mut answer).is_ok()
                    && answer.starts_with(b"HTTP/")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}\n{}",
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// `127.0.0.1:PORT/repo`.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr())
    }

    /// The registry's output so far (its access log shows every request), for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A directory holding just `ca.crt`, the CA that signed a TLS registry's certificate:
    /// usable as `--cert-dir` for cairn and skopeo.
    pub fn ca_dir(&self) -> PathBuf {
        assert!(self.opts.tls, "only a TLS registry has a CA");
        self.dir.path().join("ca")
    }

    /// Where blobs and repositories are stored.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Kills the registry (SIGKILL, like a crash); storage and port stay for [`Registry::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// skopeo's flags for this registry: TLS (none, or the CA) and credentials. `prefix` is ""
    /// for `inspect`, "src-" or "dest-" for `copy`.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut f = Vec::new();
        if self.opts.tls {
            f.push(format!("--{prefix}cert-dir={}", self.ca_dir().display()));
        } else {
            f.push(format!("--{prefix}tls-verify=false"));
        }
        if let Some(c) = self.opts.auth.creds() {
            f.push(format!("--{prefix}creds={c}"));
        }
        f
    }

    /// Copies `source` (any skopeo reference) to `repo:tag` here; returns the manifest digest.
    pub fn skopeo_push(&self, source: &str, repo_tag: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let digest_file = dir.path().join("digest");
        let mut args = vec![
            "copy".to_owned(),
            "--preserve-digests".to_owned(),
            format!("--digestfile={}", digest_file.display()),
        ];
        args.extend(self.skopeo_flags("dest-"));
        args.push(source.to_owned());
        args.push(format!("docker://{}", self.image(repo_tag)));
        self.skopeo_ok(&args);
        fs::read_to_string(digest_file).unwrap().trim().to_owned()
    }

    /// The digest of `repo:tag` (or `repo@digest`) as skopeo sees it here.
    pub fn skopeo_digest(&self, reference: &str) -> String {
        let mut args = vec!["inspect".to_owned(), "--format={{.Digest}}".to_owned()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}", self.image(reference)));
        texts(&self.skopeo_ok(&args)).0.trim().to_owned()
    }

    /// The raw manifest of `reference` here, parsed.
    pub fn skopeo_manifest(&self, reference: &str) -> serde_json::Value {
        let mut args = vec!["inspect".to_owned(), "--raw".to_owned()];
        args.extend(self.skopeo_flags(""));
        args.push(format!("docker://{}", self.image(reference)));
        serde_json::from_slice(&self.skopeo_ok(&args).stdout).unwrap()
    }

    /// `podman manifest inspect REF` of this plain-HTTP registry (podman 4.3 has no
    /// --tls-verify there: a registries.conf marks it insecure), with storage of its own.
    pub fn podman_manifest_inspect(&self, reference: &str) -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("registries.conf");
        fs::write(
            &conf,
            format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                self.addr()
            ),
        )
        .unwrap();
        let out = Command::new("podman")
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["manifest", "inspect", reference])
            .output()
            .unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "podman manifest inspect {reference}: {stderr}"
        );
        serde_json::from_str(&stdout).unwrap()
    }

    /// Runs skopeo and insists it succeeds, showing its output and the registry's log if not.
    pub fn skopeo_ok(&self, args: &[String]) -> Output {
        let out = skopeo(args).output().unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "skopeo {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- registry log\n{}",
            self.log()
        );
        out
    }

    /// PUTs a manifest (or an index) as is, over plain HTTP: for what no tool here builds, like a
    /// multi-platform index. Only for registries without TLS or auth.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        assert!(
            !self.opts.tls && self.opts.auth == Auth::None,
            "put_manifest speaks plain HTTP without credentials"
        );
        let r = http(
            &self.addr(),
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        );
        assert_eq!(
            r.status,
            201,
            "PUT manifest {repo}:{reference}: {}\n{}",
            String::from_utf8_lossy(&r.body),
            self.log()
        );
    }

    /// The token server of a [`Auth::Token`] registry.
    pub fn token_server(&self) -> &TokenServer {
        self.token.as_ref().expect("a token-auth registry")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `skopeo` with no ambient credentials: an empty auth file instead of whatever the machine has.
pub fn skopeo(args: &[String]) -> Command {
    static AUTH: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, auth) = AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        fs::write(&file, "{\"auths\":{}}").unwrap();
        (dir, file)
    });
    let mut c = Command::new("skopeo");
    c.env("REGISTRY_AUTH_FILE", auth).args(args);
    c
}

/// A YAML scalar for a path (JSON strings are YAML).
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap()
}

/// Runs a tool that must succeed; names the package to install when it is missing.
fn ok_tool(mut cmd: Command, package: &str) -> Output {
    match cmd.output() {
        Ok(out) => {
            let (stdout, stderr) = texts(&out);
            assert!(
                out.status.success(),
                "{cmd:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
            out
        }
        Err(e) => {
            panic!("{cmd:?} could not start ({e}): install {package} with scripts/install-deps.sh")
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    ok_tool(c, "openssl");
}

/// A CA (in `ca_dir/ca.crt`) and a server certificate it signed for 127.0.0.1 and localhost (in
/// `dir/server.{crt,key}`). P-256 keys: quick to make, and every TLS stack takes them.
fn make_server_cert(dir: &Path, ca_dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::create_dir_all(ca_dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "3"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=cairn test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    fs::copy(dir.join("ca.crt"), ca_dir.join("ca.crt")).unwrap();
}

// ---- the token server

/// A Docker token server (the protocol distribution's `auth: token` speaks): `GET /token?
/// service=&scope=` with Basic credentials (and a refresh token too with `offline_token=true`,
/// as `docker login` asks), or `POST /token` with an OAuth2 password or refresh-token grant
/// (each refresh answered with a new refresh token; the old ones stay good);
/// answers a JWT signed RS256 by a self-signed certificate the registry trusts
/// (`rootcertbundle`), carried in the header's `x5c`. Every request needs the right credentials
/// (no anonymous pulls, so a client that forgets them on pull fails); a valid user gets every
/// action its scopes ask for.
#[derive(Debug)]
pub struct TokenServer {
    port: u16,
    signer: Arc<Signer>,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Signer {
    key: PathBuf,
    x5c: String,
    user: String,
    pass: String,
    /// The refresh tokens issued so far, all for `user`.
    refresh: Mutex<Vec<String>>,
}

impl Signer {
    fn issue_refresh(&self) -> String {
        let mut r = self.refresh.lock().unwrap();
        let token = format!("cairn-test-refresh-{}", r.len() + 1);
        r.push(token.clone());
        token
    }
}

impl TokenServer {
    fn start(dir: &Path, user: &str, pass: &str) -> TokenServer {
        fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "3",
                "-newkey",
                "rsa:2048",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
                "-subj",
                "/CN=cairn test token signer",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-in",
                "token.crt",
                "-outform",
                "DER",
                "-out",
                "token.der",
            ],
        );
        let signer = Arc::new(Signer {
            key: dir.join("token.key"),
            x5c: base64(&fs::read(dir.join("token.der")).unwrap(), false),
            user: user.to_owned(),
            pass: pass.to_owned(),
            refresh: Mutex::new(Vec::new()),
        });
        let signer_kept = signer.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (signer, requests) = (signer.clone(), requests.clone());
                    std::thread::spawn(move || serve_token(conn, &signer, &requests));
                }
            })
        };
        TokenServer {
            port,
            signer: signer_kept,
            cert: dir.join("token.crt"),
            stop,
            thread: Some(thread),
            requests,
        }
    }

    /// The realm the registry's challenges name.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// A refresh token for the server's user, as a login would have stored it (docker's
    /// `identitytoken`).
    pub fn issue_refresh_token(&self) -> String {
        self.signer.issue_refresh()
    }

    /// What was asked: `METHOD [grant=… refresh=… client_id=…] user=… scope=… -> STATUS` per
    /// request (the grant for a POST, the refresh token when one was presented).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(mut conn: TcpStream, signer: &Signer, log: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Some((head, mut rest)) = read_head(&mut conn) else {
        return;
    };
    let req = Head::parse(&head);
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while rest.len() < len {
        let mut buf = [0u8; 8192];
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
    let (path, query) = req.target().split_once('?').unwrap_or((req.target(), ""));
    let mut params = parse_form(query);
    // Credentials: Basic on GET (the Docker token protocol); the password grant on POST (OAuth2).
    let mut extra = String::new();
    let creds = if req.method() == "POST" {
        params.extend(parse_form(&String::from_utf8_lossy(&rest)));
        let grant = first(&params, "grant_type").unwrap_or("");
        extra = format!(" grant={grant}");
        match (
            grant,
            first(&params, "username"),
            first(&params, "password"),
        ) {
            ("password", Some(u), Some(p)) => Some((u.to_owned(), p.to_owned())),
            ("refresh_token", _, _) => {
                let presented = first(&params, "refresh_token").unwrap_or("");
                extra.push_str(&format!(
                    " refresh={presented} client_id={}",
                    first(&params, "client_id").unwrap_or("")
                ));
                let known = signer
                    .refresh
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|t| t == presented);
                known.then(|| (signer.user.clone(), signer.pass.clone()))
            }
            _ => None,
        }
    } else {
        req.header("authorization")
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b| base64_decode(b.trim()))
            .and_then(|raw| {
                let s = String::from_utf8(raw).ok()?;
                let (u, p) = s.split_once(':')?;
                Some((u.to_owned(), p.to_owned()))
            })
    };
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter(|s| !s.is_empty())
        .collect();
    let user = creds.as_ref().map(|(u, _)| u.as_str()).unwrap_or("");
    let (status, body) = if path != "/token" {
        (
            404,
            r#"{"errors":[{"code":"NOT_FOUND","message":"no such endpoint"}]}"#.to_owned(),
        )
    } else if first(&params, "service").is_some_and(|s| s != TOKEN_SERVICE) {
        (
            400,
            r#"{"errors":[{"code":"DENIED","message":"unknown service"}]}"#.to_owned(),
        )
    } else if creds.as_ref() != Some(&(signer.user.clone(), signer.pass.clone())) {
        (
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                .to_owned(),
        )
    } else {
        let token = sign_token(signer, user, &scopes);
        let mut doc = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
            "issued_at": rfc3339_now(),
        });
        let refreshing = first(&params, "grant_type") == Some("refresh_token");
        if refreshing || first(&params, "offline_token") == Some("true") {
            doc["refresh_token"] = signer.issue_refresh().into();
        }
        (200, doc.to_string())
    };
    log.lock().unwrap().push(format!(
        "{}{extra} user={user} scope={} -> {status}",
        req.method(),
        scopes.join(" ")
    ));
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        resp.push_str("WWW-Authenticate: Basic realm=\"cairn-test-token\"\r\n");
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    let _ = conn.write_all(resp.as_bytes());
    let _ = conn.shutdown(Shutdown::Both);
}

fn first<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A JWT for `user` granting every action each `type:name:actions` scope asks for.
fn sign_token(signer: &Signer, user: &str, scopes: &[&str]) -> String {
    static JTI: AtomicU64 = AtomicU64::new(0);
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // The name may hold a port (`127.0.0.1:5000/x` is not a repository name, but a
            // registry:catalog:* scope has three parts): the actions are after the last colon.
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": user,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("cairn-test-{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    // RS256 is RSASSA-PKCS1-v1_5 over SHA-256: exactly `openssl dgst -sha256 -sign`.
    let mut c = Command::new("openssl");
    c.args(["dgst", "-sha256", "-sign"])
        .arg(&signer.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst: {}", texts(&out).1);
    format!("{signing_input}.{}", base64(&out.stdout, true))
}

fn rfc3339_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    texts(&out).0.trim().to_owned()
}

/// Base64, standard (with padding) or URL-safe without padding (JWT).
pub fn base64(data: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded.
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- HTTP/1.1 pieces shared by the token server, the proxy and the client

/// Reads up to the end of an HTTP head; returns it and whatever came after it.
fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    read_head_after(s, Vec::new())
}

/// [`read_head`] when `buf` already holds bytes read from `s`.
fn read_head_after(s: &mut TcpStream, mut buf: Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An HTTP head: the start line and the header lines.
#[derive(Debug)]
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(text: &str) -> Head {
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let start = lines.next().unwrap_or("").to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Head { start, headers }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// A response's status code.
    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The head again, with `Connection: close` instead of any connection-management headers.
    fn render_closing(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (k, v) in &self.headers {
            let lower = k.to_ascii_lowercase();
            if ["connection", "keep-alive", "proxy-connection"].contains(&lower.as_str()) {
                continue;
            }
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// A response read by [`http`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One plain-HTTP/1.1 request with `Connection: close`, for what skopeo cannot do.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let (head, mut rest) = read_head(&mut s).expect("an HTTP response");
    s.read_to_end(&mut rest).unwrap();
    let head = Head::parse(&head);
    let body = if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(&rest)
    } else {
        rest
    };
    HttpResponse {
        status: head.status(),
        headers: head.headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

// ---- the fault-injecting proxy

/// What a [`FaultProxy`] does to the traffic it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully (and record the requests).
    None,
    /// Flip one byte in the middle of every successful blob download, keeping its length.
    CorruptBlobs,
    /// Close the first blob download that is longer than this after this many body bytes.
    CutBlobsAfter(u64),
    /// Forward this many bytes of blob upload bodies (counted over all uploads, however a
    /// client chunks them), then hold the upload in flight until [`FaultProxy::release`]: the
    /// moment to kill the registry in the middle of a push. Once.
    HoldUploadsAfter(u64),
}

/// One request the proxy forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The upstream's status; 502 when the upstream could not be reached, 0 when it closed
    /// without answering.
    pub status: u16,
}

impl Seen {
    pub fn is_blob_download(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/sha256:")
    }

    /// Anything that starts, continues or finishes a blob upload (or mounts one).
    pub fn is_blob_upload(&self) -> bool {
        ["POST", "PATCH", "PUT"].contains(&self.method.as_str())
            && self.path.contains("/blobs/uploads")
    }

    pub fn is_manifest_put(&self) -> bool {
        self.method == "PUT" && self.path.contains("/manifests/")
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.path, self.status)
    }
}

#[derive(Debug)]
struct ProxyShared {
    upstream: String,
    fault: Fault,
    seen: Mutex<Vec<Seen>>,
    /// The one-shot faults have fired.
    spent: AtomicBool,
    /// Blob upload body bytes forwarded so far, over all connections.
    uploaded: AtomicU64,
    /// HoldUploadsAfter: (held, released).
    hold: Mutex<(bool, bool)>,
    hold_cv: Condvar,
}

/// A plain-HTTP/1.1 forwarder to a registry on its own port, one request per connection, that
/// records what it forwards and injects a [`Fault`]. The `Host` header is passed on unchanged, so
/// the registry's upload `Location`s point back at the proxy.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_owned(),
            fault,
            seen: Mutex::new(Vec::new()),
            spent: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
            hold: Mutex::new((false, false)),
            hold_cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || proxy_one(conn, &shared));
                }
            })
        };
        FaultProxy {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/repo:tag` through the proxy.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr())
    }

    /// The requests forwarded so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The request log as text, for failure messages.
    pub fn requests_text(&self) -> String {
        self.requests().iter().map(|s| format!("{s}\n")).collect()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.shared.seen.lock().unwrap().clear();
    }

    /// Whether a one-shot fault (cut, hold) has fired.
    pub fn fault_fired(&self) -> bool {
        self.shared.spent.load(Ordering::SeqCst)
    }

    /// Blocks until a [`Fault::HoldUploadsAfter`] upload is being held (true), or until `alive`
    /// says the client gave up first (false), say because it failed before uploading anything.
    pub fn wait_held(&self, mut alive: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let g = self.hold();
                let (g, _) = self
                    .shared
                    .hold_cv
                    .wait_timeout_while(g, Duration::from_millis(100), |h| !h.0)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if g.0 {
                    return true;
                }
            }
            if !alive() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "no upload reached the hold point; requests:\n{}",
                self.requests_text()
            );
        }
    }

    /// Lets a held upload go on (to wherever its upstream connection is now).
    pub fn release(&self) {
        self.hold().1 = true;
        self.shared.hold_cv.notify_all();
    }

    fn hold(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.shared
            .hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(mut client: TcpStream, shared: &Arc<ProxyShared>) {
    let Some((head_text, early_body)) = read_head(&mut client) else {
        return;
    };
    let head = Head::parse(&head_text);
    let index = {
        let mut seen = shared.seen.lock().unwrap();
        seen.push(Seen {
            method: head.method().to_owned(),
            path: head.target().to_owned(),
            status: 0,
        });
        seen.len() - 1
    };
    let set_status = |status: u16| {
        if let Some(s) = shared.seen.lock().unwrap().get_mut(index) {
            s.status = status;
        }
    };
    let Ok(mut upstream) = TcpStream::connect(&shared.upstream) else {
        set_status(502);
        let body = format!(
            "cairn test proxy: upstream {} unreachable\n",
            shared.upstream
        );
        let _ = client.write_all(
            format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let is_upload = ["POST", "PATCH", "PUT"].contains(&head.method())
        && head.target().contains("/blobs/uploads");
    let hold_at = match shared.fault {
        Fault::HoldUploadsAfter(n) if is_upload => Some(n),
        _ => None,
    };
    if upstream.write_all(&head.render_closing()).is_err() {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }

    // Request body: whatever follows the head, copied as it comes (framing, Content-Length or
    // chunked, is the two ends' business) until the client stops or the exchange ends.
    let pump = {
        let (mut from, mut to) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let shared = shared.clone();
        std::thread::spawn(move || {
            let mut pending = early_body;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if pending.is_empty() {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
                let mut now = pending.len();
                let mut hold = false;
                if let Some(limit) = hold_at
                    && !shared.spent.load(Ordering::SeqCst)
                {
                    let sent = shared.uploaded.load(Ordering::SeqCst);
                    if sent + now as u64 >= limit {
                        // Forward exactly up to the limit, then hold the rest.
                        now = usize::try_from(limit.saturating_sub(sent)).unwrap();
                        hold = !shared.spent.swap(true, Ordering::SeqCst);
                    }
                }
                if to.write_all(&pending[..now]).is_err() {
                    break;
                }
                pending.drain(..now);
                if hold_at.is_some() {
                    shared.uploaded.fetch_add(now as u64, Ordering::SeqCst);
                }
                if hold {
                    let mut g = shared.hold.lock().unwrap();
                    g.0 = true;
                    shared.hold_cv.notify_all();
                    while !g.1 {
                        g = shared.hold_cv.wait(g).unwrap();
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
    };

    // Response: interim 1xx heads pass through; the final head goes with `Connection: close`.
    let mut read = Vec::new();
    let (resp, mut body_start) = loop {
        let Some((text, rest)) = read_head_after(&mut upstream, std::mem::take(&mut read)) else {
            // The registry went away without answering: so does the "registry" the client sees.
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            let _ = pump.join();
            return;
        };
        let resp = Head::parse(&text);
        if (100..200).contains(&resp.status()) {
            if client.write_all(text.as_bytes()).is_err() {
                return;
            }
            read = rest;
            continue;
        }
        break (resp, rest);
    };
    set_status(resp.status());
    let blob_ok =
        head.method() == "GET" && head.target().contains("/blobs/sha256:") && resp.status() == 200;
    let length: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    // Where to flip a byte, or after how many bytes to cut.
    let corrupt_at = match shared.fault {
        Fault::CorruptBlobs if blob_ok => Some(length.unwrap_or(1) / 2),
        _ => None,
    };
    let cut_at = match shared.fault {
        Fault::CutBlobsAfter(n)
            if blob_ok
                && length.is_none_or(|l| l > n)
                && !shared.spent.swap(true, Ordering::SeqCst) =>
        {
            Some(n)
        }
        _ => None,
    };
    let _ = client.write_all(&resp.render_closing());
    let mut offset: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut data = if body_start.is_empty() {
            match upstream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf[..n].to_vec(),
            }
        } else {
            std::mem::take(&mut body_start)
        };
        if let Some(at) = corrupt_at
            && at >= offset
            && at < offset + data.len() as u64
        {
            data[usize::try_from(at - offset).unwrap()] ^= 0xff;
        }
        if let Some(at) = cut_at
            && offset + data.len() as u64 >= at
        {
            let keep = usize::try_from(at - offset).unwrap();
            let _ = client.write_all(&data[..keep]);
            break;
        }
        if client.write_all(&data).is_err() {
            break;
        }
        offset += data.len() as u64;
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = pump.join();
}

// ---- images

/// The client side of a test: its own DOCKER_CONFIG, XDG_CONFIG_HOME and a bin dir in front of
/// PATH, so credentials, certificates and mirror configs come from nowhere else.
#[derive(Debug)]
pub struct ClientEnv {
    dir: tempfile::TempDir,
}

impl Default for ClientEnv {
    fn default() -> ClientEnv {
        ClientEnv::new()
    }
}

impl ClientEnv {
    pub fn new() -> ClientEnv {
        let dir = tempfile::tempdir().unwrap();
        for d in ["docker", "xdg", "bin"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        ClientEnv { dir }
    }

    /// `$DOCKER_CONFIG` (its `config.json` holds `auths`, `credHelpers`, `credsStore`).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker")
    }

    /// `$XDG_CONFIG_HOME` (cairn reads `cairn/config.toml` and `cairn/certs.d/` there).
    pub fn xdg_config_home(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// A directory first on PATH, for `docker-credential-*` helpers.
    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// A scratch path inside this environment's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `cairn --root STORE ARGS` in this environment.
    pub fn cairn(&self, store: &Store, args: &[&str]) -> Command {
        let mut c = store.cmd(args);
        self.apply(&mut c);
        c
    }

    /// `cairn ARGS` (no store) in this environment.
    pub fn cairn_bare(&self, args: &[&str]) -> Command {
        let mut c = crate::cairn();
        c.args(args);
        self.apply(&mut c);
        c
    }

    pub fn apply(&self, c: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin()];
        paths.extend(std::env::split_paths(&path));
        c.env("DOCKER_CONFIG", self.docker_config())
            .env("XDG_CONFIG_HOME", self.xdg_config_home())
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("CAIRN_CONFIG");
    }
}

/// Runs `c`, which must succeed (else the test fails showing its output and `reg`'s log);
/// returns its stdout and stderr.
/// The digest a push reported on its `pushed NAME DIGEST` line of `stderr`.
pub fn pushed_digest(stderr: &str) -> String {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("pushed "))
        .find_map(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no pushed digest in\n{stderr}"))
        .to_owned()
}

pub fn must_run(mut c: Command, reg: &Registry) -> (String, String) {
    let out = c.output().unwrap();
    let (stdout, stderr) = crate::texts(&out);
    assert!(
        out.status.success(),
        "{c:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- registry log\n{}",
        reg.log()
    );
    (stdout, stderr)
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `len` bytes of fast, seeded, incompressible noise (xorshift), so layers are as large
/// compressed as raw and chunked upload paths are hit.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// A one-layer image written by hand (not by cairn) into an OCI layout.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub layout: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
    /// The image ID.
    pub config_digest: String,
    pub layer_digest: String,
    /// The layer's uncompressed digest, as `RootFS.Layers` lists it.
    pub diff_id: String,
}

impl LayoutImage {
    /// This image's entry in an image index, for `linux/<arch>`.
    pub fn index_entry(&self, arch: &str) -> serde_json::Value {
        let size = fs::metadata(
            self.layout
                .join("blobs/sha256")
                .join(&self.manifest_digest[7..]),
        )
        .unwrap()
        .len();
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.manifest_digest,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        })
    }

    /// `oci:LAYOUT:TAG`, for skopeo.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
}

/// Writes an OCI layout at `layout` holding one image, `tag`, for linux/`arch`, whose one gzip
/// layer holds `files` (path, content). Deterministic: the same input gives the same digests.
pub fn make_layout(layout: &Path, tag: &str, arch: &str, files: &[(&str, &[u8])]) -> LayoutImage {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    fs::create_dir_all(&root).unwrap();
    for (path, content) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }
    let tar_path = work.path().join("layer.tar");
    let mut t = Command::new("tar");
    t.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
        "--format=gnu",
        "--mode=u+rw,go+r",
        "-C",
    ])
    .arg(&root)
    .arg("-cf")
    .arg(&tar_path)
    .arg(".");
    ok(t);
    let diff_id = sha256(&fs::read(&tar_path).unwrap());
    let mut gz = Command::new("gzip");
    gz.args(["-n", "-c"]).arg(&tar_path);
    let layer = ok(gz).stdout;

    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha256(data);
        fs::write(blobs.join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cairn-e2e make_layout"}],
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    // Several images may share one layout: add to its index.
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    fs::write(&index_path, index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    LayoutImage {
        layout: layout.to_path_buf(),
        tag: tag.to_owned(),
        manifest_digest,
        config_digest,
        layer_digest,
        diff_id,
    }
}

/// The host's platform architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => panic!("no OCI name known for {other}"),
    }
}

/// A build context: a `FROM scratch` Dockerfile copying `files` (path, content), one COPY each.
pub fn scratch_context(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut dockerfile = String::from("FROM scratch\n");
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        dockerfile.push_str(&format!("COPY {path} /{path}\n"));
    }
    fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// Builds a small image with cairn (a few small files, two layers) into `store` as `name`;
/// returns its image ID.
pub fn build_small(store: &Store, name: &str) -> String {
    let ctx = scratch_context(&[
        ("hello.txt", b"hello from a registry test\n"),
        ("etc/app/config.toml", b"answer = 42\n"),
    ]);
    build(store, name, ctx.path())
}

/// Builds an image with a 40 MiB incompressible file (plus a small one) into `store` as `name`;
/// returns its image ID. `seed` varies the content.
pub fn build_big(store: &Store, name: &str, seed: u64) -> String {
    let big = noise(40 << 20, seed);
    let ctx = scratch_context(&[("small.txt", b"small\n"), ("data/big.bin", &big)]);
    build(store, name, ctx.path())
}

fn build(store: &Store, name: &str, ctx: &Path) -> String {
    let mut c = store.cmd(&["build", "-q", "-t", name]);
    c.arg(ctx).stdin(Stdio::null());
    let out = ok(c);
    let id = texts(&out).0.trim().to_owned();
    assert!(id.starts_with("sha256:"), "build -q printed {id:?}");
    id
}

/// A map of a JSON object's keys, for comparing `auths` sections and the like.
pub fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Parses `[0]` of `cairn inspect NAME` run in `env`.
pub fn inspect(env: &ClientEnv, store: &Store, name: &str) -> serde_json::Value {
    let out = ok(env.cairn(store, &["inspect", name]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// The entries of a store's `index.json`, by reference name.
pub fn store_names(store: &Store) -> BTreeMap<String, String> {
    let Ok(bytes) = fs::read(store.root.join("index.json")) else {
        return BTreeMap::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()?
                    .to_owned(),
                m["digest"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
