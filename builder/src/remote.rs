//! ADD of an http(s) URL: the file downloaded to the build's work directory, its digest checked
//! against `--checksum` while it streams in.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

/// The file name a URL gives: its path's last segment, as Docker names an ADD download.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let last = path.rsplit('/').next().unwrap_or("");
    let name = percent_decode(last);
    // A segment that decodes to a path of its own is no file name.
    if name == "." || name == ".." || name.contains('/') {
        String::new()
    } else {
        name
    }
}

fn percent_decode(s: &str) -> String {
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
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads `url` (following redirects) to `to` and checks it against `checksum`
/// (`ALGO:HEX`). The file is removed again on any failure.
pub fn download(url: &str, to: &Path, checksum: Option<&str>) -> Result<Download, String> {
    let mut expected = None;
    if let Some(c) = checksum {
        let (algo, hex) = c
            .split_once(':')
            .ok_or_else(|| format!("--checksum={c:?} is not of the form sha256:HEX"))?;
        let hasher = Hasher::new(algo).ok_or_else(|| {
            format!(
                "--checksum: unsupported digest algorithm {algo:?} (use sha256, sha384 or sha512)"
            )
        })?;
        expected = Some((algo, hex.to_ascii_lowercase(), hasher));
    }
    let mut resp = ureq::get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("failed to download {url}: HTTP status {code}"),
        other => format!("failed to download {url}: {other}"),
    })?;
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
    let mut file = std::fs::File::create(to)
        .map_err(|e| format!("failed to create {} for {url}: {e}", to.display()))?;
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("failed to download {url}: {e}")),
        };
        if let Some((_, _, h)) = &mut expected {
            h.update(&buf[..n]);
        }
        file.write_all(&buf[..n])
            .map_err(|e| format!("failed to write {}: {e}", to.display()))?;
    }
    if let Some((algo, want, h)) = expected {
        let got = h.hex();
        if got != want {
            return Err(format!(
                "checksum mismatch for {url}: expected {algo}:{want}, got {algo}:{got}"
            ));
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
        assert_eq!(file_name("https://h/dir/"), "");
        assert_eq!(file_name("https://h"), "");
        assert_eq!(file_name("https://h/%2E%2E"), "");
    }
}
