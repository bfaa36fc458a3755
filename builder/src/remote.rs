//! ADD of an http(s) URL: the file downloaded to the build's work directory, its digest checked
//! against `--checksum` while it streams in.

use std::io::{Read, Write};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use cairn_layers::registry::NetTimeouts;

pub use crate::error::DownloadError;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// Whether an ADD source names a URL to download.
pub fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// A downloaded file, removed when dropped, so no download outlives its step, whatever way
/// the step ends.
#[derive(Debug)]
pub struct Download {
    pub path: PathBuf,
    /// The file name the URL gives (its path's last segment, percent-decoded); empty when the
    /// URL's path ends with `/`.
    pub name: String,
    /// The `Last-Modified` header, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

impl Drop for Download {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `--checksum`'s digest, computed as the body streams to disk.
enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Option<Hasher> {
        match algo {
            "sha256" => Some(Hasher::Sha256(Sha256::new())),
            "sha384" => Some(Hasher::Sha384(Sha384::new())),
            "sha512" => Some(Hasher::Sha512(Sha512::new())),
            _ => None,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The file name a URL gives, as BuildKit names an ADD download: its path's last segment
/// (trailing slashes aside), else `__unnamed__`.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name = percent_decode(last, false);
    // A segment that decodes to a path of its own is no file name.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        "__unnamed__".to_owned()
    } else {
        name
    }
}

/// `%XX` escapes decoded (a bad one kept as it is), and with `plus_is_space` a `+` as a space
/// (a query string's form encoding); invalid UTF-8 made lossy.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The most redirects one download follows.
const MAX_REDIRECTS: usize = 10;

/// The host and port of an http(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_owned(), port.unwrap_or(default)));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default)),
    }
}

/// Addresses a build's host-side fetch must not be sent to by someone else's redirect: the
/// host's own (loopback, unspecified) and its link's (link-local, where cloud metadata lives).
fn is_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `url`'s host is, or resolves to, a local address (see [`is_local`]).
fn points_local(url: &str) -> bool {
    let Some((host, port)) = host_port(url) else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_local(ip);
    }
    (host.as_str(), port)
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.any(|a| is_local(a.ip())))
}

/// A redirect's `Location` made absolute against the URL that answered with it.
fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(net) = location.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..authority_end]);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = rest[authority_end..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{origin}{dir}/{location}")
}

fn http_error(url: &str, e: ureq::Error, t: &NetTimeouts) -> DownloadError {
    let url = url.to_owned();
    match e {
        ureq::Error::StatusCode(code) => {
            DownloadError::Refused(format!("failed to download {url}: HTTP status {code}"))
        }
        ureq::Error::Timeout(kind) => DownloadError::Timeout {
            url,
            what: t.describe(kind),
        },
        source => DownloadError::Http { url, source },
    }
}

/// Downloads `url` (following redirects, but never from elsewhere to this host's or its
/// link's addresses) to `to` and checks it against `checksum` (`ALGO:HEX`). Every read times
/// out (see [`NetTimeouts`]) and a cancelled build stops the transfer. The file is removed
/// again on any failure.
pub fn download(url: &str, to: &Path, checksum: Option<&str>) -> Result<Download, DownloadError> {
    let refused = DownloadError::Refused;
    let mut expected = None;
    if let Some(c) = checksum {
        let (algo, hex) = c
            .split_once(':')
            .ok_or_else(|| refused(format!("--checksum={c:?} is not of the form sha256:HEX")))?;
        let hasher = Hasher::new(algo).ok_or_else(|| {
            refused(format!(
                "--checksum: unsupported digest algorithm {algo:?} (use sha256, sha384 or sha512)"
            ))
        })?;
        expected = Some((algo, hex.to_ascii_lowercase(), hasher));
    }
    let cancelled = || refused(format!("download of {url} cancelled"));
    let timeouts = NetTimeouts::from_env();
    // Redirects are followed here, one at a time, so each target is checked before it is
    // asked for.
    let agent = timeouts
        .apply(ureq::Agent::config_builder())
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let local_origin = points_local(url);
    let mut current = url.to_owned();
    let mut hops = 0;
    let mut resp = loop {
        if crate::sandbox::cancelled() {
            return Err(cancelled());
        }
        let resp = agent
            .get(&current)
            .call()
            .map_err(|e| http_error(&current, e, &timeouts))?;
        let status = resp.status();
        if !status.is_redirection() || status.as_u16() == 304 {
            if !status.is_success() {
                return Err(refused(format!(
                    "failed to download {current}: HTTP status {}",
                    status.as_u16()
                )));
            }
            break resp;
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                refused(format!(
                    "{current} redirects (HTTP {status}) without a Location"
                ))
            })?;
        let next = resolve_location(&current, location);
        if !is_url(&next) {
            return Err(refused(format!(
                "{current} redirects to {next}, which is not http(s)"
            )));
        }
        if !local_origin && points_local(&next) {
            return Err(refused(format!(
                "refusing the redirect of {current} to {next}: it points at a loopback, \
                 link-local or unspecified address (ADD of {url})"
            )));
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(refused(format!(
                "failed to download {url}: more than {MAX_REDIRECTS} redirects"
            )));
        }
        current = next;
    };
    let last_modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| jiff::fmt::rfc2822::parse(v.trim()).ok())
        .map(|z| z.timestamp().as_second());
    // The guard exists before the file does, so a failed write leaves nothing behind.
    let dl = Download {
        path: to.to_path_buf(),
        name: file_name(url),
        last_modified,
    };
    let mut file = std::fs::File::create(to).map_err(|source| DownloadError::File {
        action: "create",
        path: to.to_path_buf(),
        url: Some(url.to_owned()),
        source,
    })?;
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // An endless body must not outlive a SIGINT/SIGTERM to cairn.
        if crate::sandbox::cancelled() {
            return Err(cancelled());
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let url = current.clone();
                return Err(match NetTimeouts::timeout_in(&source) {
                    Some(t) => DownloadError::Timeout {
                        url,
                        what: timeouts.describe(t),
                    },
                    None => DownloadError::Read { url, source },
                });
            }
        };
        if let Some((_, _, h)) = &mut expected {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n])
            .map_err(|source| DownloadError::File {
                action: "write",
                path: to.to_path_buf(),
                url: None,
                source,
            })?;
    }
    if let Some((algo, want, h)) = expected {
        let got = h.hex();
        if got != want {
            return Err(refused(format!(
                "checksum mismatch for {url}: expected {algo}:{want}, got {algo}:{got}"
            )));
        }
    }
    Ok(dl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(file_name("http://h:8/a/b/file.txt?x=1#y"), "file.txt");
        assert_eq!(file_name("https://h/a%20b.tar.gz"), "a b.tar.gz");
        assert_eq!(file_name("https://h/dir/"), "dir");
        assert_eq!(file_name("https://h/"), "__unnamed__");
        assert_eq!(file_name("https://h"), "__unnamed__");
        assert_eq!(file_name("https://h/%2E%2E"), "__unnamed__");
    }

    #[test]
    fn local_addresses() {
        let cases = [
            ("http://127.0.0.1:8080/x", true),
            ("http://127.8.9.10/", true),
            ("http://[::1]:80/", true),
            ("http://0.0.0.0:9/", true),
            ("http://[::]/", true),
            ("http://169.254.169.254/latest/meta-data", true),
            ("http://[fe80::1]/", true),
            ("http://[::ffff:127.0.0.1]/", true),
            ("http://localhost:5000/a", true),
            ("http://a.localhost/", true),
            ("http://user:pw@127.0.0.1/", true),
            ("http://192.0.2.7/", false),
            ("https://[2001:db8::1]:8443/", false),
            ("http://10.1.2.3/", false),
        ];
        for (url, local) in cases {
            assert_eq!(points_local(url), local, "{url}");
        }
    }

    #[test]
    fn locations_resolve_against_the_url() {
        let cases = [
            ("http://h:1/a/b?q", "http://x/y", "http://x/y"),
            ("https://h/a/b", "//x:2/y", "https://x:2/y"),
            ("http://h:1/a/b?q", "/c", "http://h:1/c"),
            ("http://h:1/a/b?q", "c/d", "http://h:1/a/c/d"),
            ("http://h", "c", "http://h/c"),
        ];
        for (base, loc, want) in cases {
            assert_eq!(resolve_location(base, loc), want, "{base} + {loc}");
        }
    }
}
