//! HTTP to one registry: TLS settings (system and certs.d roots, client certificates), the
//! HTTPS-then-HTTP choice, the Basic and Bearer-token auth flows, retries, and the registry's
//! error documents turned into errors.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::http::{self, Method, Response, StatusCode};
use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

use super::auth::{Credentials, parse_challenges};
use super::{Event, RegistryOptions};
use crate::error::{Error, Result};

mod challenge;
mod responses;
mod retry;
mod tls;

use tls::{certs_d_dirs, load_cert_dir, system_roots};

pub(crate) use responses::{header, read_body, status_error};
pub(crate) use retry::transient;
pub use retry::{NetTimeouts, Retry};

/// Manifests may be at most this big (the distribution spec's limit is 4 MiB).
pub(crate) const MANIFEST_LIMIT: u64 = 8 << 20;

/// The registry Docker Hub's API lives on.
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A request body, re-creatable for a retry after a 401.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, streamed rather than loaded.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
    },
}

/// One request; `url` is a path on the registry (`/v2/...`) or an absolute URL (an upload
/// session's `Location`).
#[derive(Debug)]
pub(crate) struct Req<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Payload<'a>,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, url: impl Into<String>) -> Req<'a> {
        Req {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Payload::Empty,
        }
    }

    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Req<'a> {
        self.headers.push((k, v.into()));
        self
    }

    pub fn body(mut self, body: Payload<'a>) -> Req<'a> {
        self.body = body;
        self
    }
}

/// Percent-encodes a query component.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a registry asked to be authenticated with.
#[derive(Debug, Clone)]
enum Auth {
    /// Not asked (yet).
    None,
    Basic,
    Bearer {
        realm: String,
        service: String,
    },
}

/// One registry host: its connection settings, credentials and tokens; shared by every
/// repository client on it.
#[derive(Debug)]
pub struct Registry {
    /// The host as references spell it (`docker.io`, `127.0.0.1:5000`).
    domain: String,
    /// Where to connect.
    host: String,
    agent: Agent,
    /// Accepts any certificate; used for HTTPS when verification is off.
    insecure_agent: Agent,
    verify: bool,
    /// Plain HTTP may be tried when HTTPS fails.
    http_fallback: bool,
    /// For a loopback registry that may be plain HTTP: the first HTTPS attempt, given a second
    /// at most. A plain-HTTP server (or a proxy in front of one) may read a TLS hello and never
    /// answer it, and the ordinary timeouts would hold every command half a minute.
    probe_agent: Option<Agent>,
    creds: Option<Credentials>,
    /// `https://host` or `http://host`, once a ping found which answers.
    base: Mutex<Option<String>>,
    auth: Mutex<Auth>,
    /// Bearer tokens by scope set.
    tokens: Mutex<HashMap<String, String>>,
    fetching: Mutex<()>,
    /// Ask the token server for a refresh token too (`cairn login`, as `docker login` does).
    offline: bool,
    /// The refresh token the token server gave last, if it gave one.
    refreshed: Mutex<Option<String>>,
    pub(crate) retry: Retry,
    pub(crate) timeouts: NetTimeouts,
}

/// How long the first HTTPS attempt at a loopback registry may take before plain HTTP is
/// tried: a TLS handshake and `GET /v2/` on this machine take milliseconds.
const LOOPBACK_PROBE: Duration = Duration::from_secs(1);

fn is_loopback(domain: &str) -> bool {
    let host = match domain.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => domain,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// Settings for `domain`; `insecure` is what the config file says about it. Credentials
    /// are `opts.creds`, else whatever the auth files hold for the domain.
    pub fn new(domain: &str, insecure: bool, opts: &RegistryOptions) -> Result<Registry> {
        let creds = match &opts.creds {
            Some((u, p)) => Some(Credentials::new(u, p)),
            None => super::auth::lookup(domain, opts.authfile.as_deref())?,
        };
        Self::with_credentials(domain, insecure, opts, creds)
    }

    /// Like [`Registry::new`] with the credentials given.
    pub fn with_credentials(
        domain: &str,
        insecure: bool,
        opts: &RegistryOptions,
        creds: Option<Credentials>,
    ) -> Result<Registry> {
        let insecure = insecure || opts.config.host_insecure(domain);
        let verify = match opts.tls_verify {
            Some(v) => v,
            None => !insecure,
        };
        let http_fallback = match opts.tls_verify {
            Some(true) => false,
            Some(false) => true,
            None => insecure || is_loopback(domain),
        };
        let cert_dir = match &opts.cert_dir {
            Some(d) => Some(d.clone()),
            None => certs_d_dirs(domain).into_iter().find(|d| d.is_dir()),
        };
        let (mut roots, client) = match &cert_dir {
            Some(d) => load_cert_dir(d)?,
            None => (Vec::new(), None),
        };
        let root_certs = if roots.is_empty() && system_roots().is_empty() {
            RootCerts::WebPki
        } else {
            roots.extend(system_roots().iter().cloned());
            RootCerts::new_with_certs(&roots)
        };
        let tls = |disable: bool| {
            TlsConfig::builder()
                .root_certs(root_certs.clone())
                .client_cert(client.clone())
                .disable_verification(disable)
                .build()
        };
        let timeouts = NetTimeouts::from_env();
        let agent = |tls: TlsConfig| -> Agent {
            timeouts
                .apply(Agent::config_builder())
                .http_status_as_error(false)
                .tls_config(tls)
                .timeout_recv_response(Some(Duration::from_secs(120)))
                .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        };
        let host = if domain == crate::reference::DEFAULT_DOMAIN {
            DOCKER_HUB_HOST.to_owned()
        } else {
            domain.to_owned()
        };
        let probe_agent = (http_fallback && is_loopback(domain)).then(|| {
            Agent::config_builder()
                .http_status_as_error(false)
                .tls_config(tls(!verify))
                .timeout_global(Some(LOOPBACK_PROBE))
                .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        });
        Ok(Registry {
            domain: domain.to_owned(),
            host,
            probe_agent,
            agent: agent(tls(false)),
            insecure_agent: agent(tls(true)),
            verify,
            http_fallback,
            creds,
            base: Mutex::new(None),
            auth: Mutex::new(Auth::None),
            tokens: Mutex::new(HashMap::new()),
            fetching: Mutex::new(()),
            offline: false,
            refreshed: Mutex::new(None),
            retry: opts.retry,
            timeouts,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn agent_for(&self, url: &str) -> &Agent {
        if !self.verify && url.starts_with("https://") {
            &self.insecure_agent
        } else {
            &self.agent
        }
    }

    /// Sends one request as it is, with no auth handling.
    fn raw(
        &self,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Payload<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>> {
        self.raw_with(
            self.agent_for(url),
            method,
            url,
            headers,
            body,
            authorization,
        )
    }

    /// [`Registry::raw`] through `agent`.
    fn raw_with(
        &self,
        agent: &Agent,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        body: Payload<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>> {
        let http_err = |message: String| Error::Http {
            what: format!("{method} request"),
            url: url.to_owned(),
            message,
        };
        let mut b = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        if let Some(a) = authorization {
            b = b.header("Authorization", a);
        }
        let sent = match body {
            Payload::Empty if matches!(method, Method::GET | Method::HEAD | Method::DELETE) => {
                let req = b
                    .body(SendBody::none())
                    .map_err(|e| http_err(e.to_string()))?;
                agent.run(req)
            }
            Payload::Empty => {
                let req = b
                    .header("Content-Length", "0")
                    .body(SendBody::from_owned_reader(std::io::empty()))
                    .map_err(|e| http_err(e.to_string()))?;
                agent.run(req)
            }
            Payload::Bytes(bytes) => {
                let req = b.body(bytes).map_err(|e| http_err(e.to_string()))?;
                agent.run(req)
            }
            Payload::File { path, offset, len } => {
                let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                })?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|source| Error::Io {
                        action: "seek in",
                        path: path.to_path_buf(),
                        source,
                    })?;
                let req = b
                    .header("Content-Length", len.to_string())
                    .body(SendBody::from_owned_reader(f.take(len)))
                    .map_err(|e| http_err(e.to_string()))?;
                agent.run(req)
            }
        };
        sent.map_err(|e| match e {
            // A server that accepts and then says nothing would say nothing to a retry either;
            // the error names the URL and the timeout.
            ureq::Error::Timeout(kind) => Error::Unreachable {
                registry: url.to_owned(),
                message: format!("{method} request {}", self.timeouts.describe(kind)),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Error::Unreachable {
                    registry: url.to_owned(),
                    message: format!(
                        "{method} request {}",
                        self.timeouts.describe(ureq::Timeout::PerRead)
                    ),
                }
            }
            // rustls reports handshake and certificate failures as invalid data.
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Error::Tls {
                what: format!("{method} request"),
                url: url.to_owned(),
                message: io.to_string(),
            },
            ureq::Error::Tls(m) => Error::Tls {
                what: format!("{method} request"),
                url: url.to_owned(),
                message: m.to_owned(),
            },
            // A name that does not resolve will not a second later: no retries.
            ureq::Error::HostNotFound => Error::Unreachable {
                registry: url.to_owned(),
                message: "no such host".into(),
            },
            e => http_err(e.to_string()),
        })
    }

    /// `https://host` or `http://host`: the first that answers `GET /v2/` at all (plain HTTP
    /// only when allowed). The answer's challenge says how to authenticate.
    pub(crate) fn base(&self, events: &(dyn Fn(Event) + Sync)) -> Result<String> {
        let mut base = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = &*base {
            return Ok(b.clone());
        }
        let schemes: &[&str] = if self.http_fallback {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut failures: Vec<String> = Vec::new();
        let found = self
            .retry
            .run(&format!("connect to {}", self.domain), events, || {
                failures.clear();
                let mut all_transient = true;
                for scheme in schemes {
                    let b = format!("{scheme}://{}", self.host);
                    let url = format!("{b}/v2/");
                    let agent = match (&self.probe_agent, *scheme) {
                        (Some(probe), "https") => probe,
                        _ => self.agent_for(&url),
                    };
                    match self.raw_with(agent, Method::GET, &url, &[], Payload::Empty, None) {
                        // A registry, or something in front of it that speaks its API (a TLS server's
                        // "plain HTTP to an HTTPS port" 400 is not).
                        Ok(resp)
                            if resp.status().is_success()
                                || resp.status() == StatusCode::UNAUTHORIZED
                                || header(&resp, "docker-distribution-api-version").is_some() =>
                        {
                            if resp.status() == StatusCode::UNAUTHORIZED {
                                self.learn_challenge(&resp);
                            }
                            // Drain the small body so the connection can be reused.
                            let _ = read_body(resp, 64 << 10, &url);
                            return Ok(b);
                        }
                        Ok(resp) => {
                            let e = status_error("connect", &url, resp);
                            all_transient &= transient(&e);
                            failures.push(e.to_string());
                        }
                        Err(e) => {
                            all_transient &= transient(&e);
                            failures.push(match e {
                                Error::Http { message, .. }
                                | Error::Tls { message, .. }
                                | Error::Unreachable { message, .. } => {
                                    format!("{url}: {message}")
                                }
                                other => other.to_string(),
                            });
                        }
                    }
                }
                let message = failures.join("; ");
                Err(if all_transient {
                    Error::Http {
                        what: "connect".into(),
                        url: self.domain.clone(),
                        message,
                    }
                } else {
                    Error::Unreachable {
                        registry: self.domain.clone(),
                        message,
                    }
                })
            });
        // Tried enough: callers retrying their own requests should not try again.
        let found = found.map_err(|e| match e {
            Error::Http { message, .. } => Error::Unreachable {
                registry: self.domain.clone(),
                message,
            },
            other => other,
        })?;
        *base = Some(found.clone());
        Ok(found)
    }

    /// Sends a request with the auth the registry asks for; on a 401 learns the challenge,
    /// gets a fresh token (with the scope the challenge names too) and tries once more.
    pub(crate) fn send(
        &self,
        req: &Req<'_>,
        scopes: &[String],
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Response<Body>> {
        let base = self.base(events)?;
        let url = if req.url.starts_with('/') {
            format!("{base}{}", req.url)
        } else {
            req.url.clone()
        };
        let authorization = self.authorization(scopes, false)?;
        let resp = self.raw(
            req.method.clone(),
            &url,
            &req.headers,
            req.body,
            authorization.as_deref(),
        )?;
        if resp.status() != StatusCode::UNAUTHORIZED || !self.learn_challenge(&resp) {
            return Ok(resp);
        }
        let req_scopes = scopes;
        let mut scopes = scopes.to_vec();
        if let Some(s) = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .find_map(|c| c.param("scope").map(str::to_owned))
        {
            scopes.extend(s.split(' ').map(str::to_owned));
        }
        let retried = self.authorization(&scopes, true)?;
        if retried.is_none() || retried == authorization {
            return Ok(resp);
        }
        drop(resp);
        // The token with the challenge's scope serves later requests for these scopes too,
        // without a 401 first each time.
        if let Some(token) = retried.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
            let mut key = req_scopes.to_vec();
            key.sort();
            key.dedup();
            self.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.join(" "), token.to_owned());
        }
        self.raw(
            req.method.clone(),
            &url,
            &req.headers,
            req.body,
            retried.as_deref(),
        )
    }

    /// The absolute URL for a path or `Location` value.
    pub(crate) fn url(&self, path: &str, events: &(dyn Fn(Event) + Sync)) -> Result<String> {
        if path.starts_with("http://") || path.starts_with("https://") {
            Ok(path.to_owned())
        } else {
            Ok(format!("{}{path}", self.base(events)?))
        }
    }

    /// Checks that the credentials are accepted: `GET /v2/` through the auth flow.
    /// Asks the token server for a refresh token along with each token (`offline_token=true`),
    /// which [`Registry::refresh_token`] then gives: `docker login` stores it as the identity
    /// token instead of the password.
    pub fn offline(mut self) -> Registry {
        self.offline = true;
        self
    }

    /// The refresh token the token server gave last, if it gave one.
    pub fn refresh_token(&self) -> Option<String> {
        self.refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn verify_login(&self, events: &(dyn Fn(Event) + Sync)) -> Result<()> {
        let req = Req::new(Method::GET, "/v2/");
        let resp = self.send(&req, &[], events)?;
        if resp.status().is_success() {
            return Ok(());
        }
        let url = self.url("/v2/", events)?;
        Err(match status_error("log in", &url, resp) {
            Error::Registry {
                status, message, ..
            } => Error::Auth {
                registry: self.domain.clone(),
                message: format!("{url} answered HTTP {status}: {message}"),
            },
            other => other,
        })
    }
}

/// A shared registry handle.
pub type SharedRegistry = Arc<Registry>;

#[cfg(test)]
mod tests {
    use super::*;
    use responses::error_message;

    #[test]
    fn net_timeouts_from_the_environment() {
        let secs = |n: f64| Duration::from_secs_f64(n);
        let cases = [
            (None, 30.0),
            (Some("2"), 2.0),
            (Some(" 0.5 "), 0.5),
            (Some("0"), 30.0),
            (Some("-3"), 30.0),
            (Some("soon"), 30.0),
            (Some("inf"), 30.0),
            (Some("NaN"), 30.0),
        ];
        for (v, want) in cases {
            let t = NetTimeouts::parse(v);
            assert_eq!((t.connect, t.read), (secs(want), secs(want)), "{v:?}");
        }
        let t = NetTimeouts::parse(Some("2"));
        assert!(t.describe(ureq::Timeout::PerRead).contains("2 s"));
        assert!(t.describe(ureq::Timeout::Connect).contains("2 s"));
        assert!(
            NetTimeouts::parse(Some("1.5"))
                .describe(ureq::Timeout::PerRead)
                .contains("1.5 s")
        );
    }

    /// A plain-HTTP registry on loopback behind something that reads a TLS hello and never
    /// answers it (a proxy, a stuck server): HTTPS is given up within the probe's second and
    /// plain HTTP found, not after the half-minute read timeout.
    #[test]
    fn an_unanswered_https_attempt_on_loopback_falls_back_at_once() {
        use std::io::{Read, Write};
        use std::net::TcpListener;
        use std::time::Instant;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (gave_up, waited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(2) {
                let mut conn = conn.unwrap();
                let mut first = [0u8; 4];
                conn.read_exact(&mut first).unwrap();
                if &first == b"GET " {
                    let mut rest = [0u8; 512];
                    let _ = conn.read(&mut rest);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                } else {
                    // A TLS hello: say nothing, and time how long the client waits.
                    let start = Instant::now();
                    let mut sink = [0u8; 4096];
                    while conn.read(&mut sink).is_ok_and(|n| n > 0) {}
                    let _ = gave_up.send(start.elapsed());
                }
            }
        });
        let reg = Registry::with_credentials(
            &format!("127.0.0.1:{port}"),
            false,
            &crate::registry::RegistryOptions::default(),
            None,
        )
        .unwrap();
        let base = reg.base(&|_| {}).unwrap();
        assert_eq!(base, format!("http://127.0.0.1:{port}"));
        let waited = waited.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(
            waited < Duration::from_secs(10),
            "waited {waited:?} on HTTPS"
        );
    }

    #[test]
    fn loopback_hosts() {
        let cases: &[(&str, bool)] = &[
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("registry.example:5000", false),
            ("10.0.0.1:5000", false),
        ];
        for (d, want) in cases {
            assert_eq!(is_loopback(d), *want, "{d}");
        }
    }

    #[test]
    fn registry_error_documents() {
        let cases: &[(&[u8], StatusCode, &str)] = &[
            (
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
                StatusCode::NOT_FOUND,
                r#"MANIFEST_UNKNOWN: manifest unknown ({"Tag":"x"})"#,
            ),
            (
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED: authentication required",
            ),
            (b"", StatusCode::NOT_FOUND, "Not Found"),
            (
                b"",
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED: authentication required",
            ),
            (b"oops\n", StatusCode::BAD_GATEWAY, "Bad Gateway: oops"),
        ];
        for (body, status, want) in cases {
            assert_eq!(error_message(*status, body), *want);
        }
    }
}
