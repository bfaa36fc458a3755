//! TLS trust for a registry: the system's roots, and certs.d's CAs and client certificates.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey};

use crate::error::{Error, Result};

/// The system's CA roots, loaded once per process.
pub(super) fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    })
}

/// The certs.d directories for a registry host, in the order they are looked for.
pub(super) fn certs_d_dirs(domain: &str) -> Vec<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("HOME");
    let mut out = Vec::new();
    if let Some(c) = var("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        out.push(c.join("cairn/certs.d"));
    }
    if let Some(h) = &home {
        out.push(h.join(".config/containers/certs.d"));
    }
    out.push(PathBuf::from("/etc/containers/certs.d"));
    out.push(PathBuf::from("/etc/docker/certs.d"));
    out.into_iter().map(|d| d.join(domain)).collect()
}

/// The CA roots (`*.crt`) and client certificate (`*.cert` with its `*.key`) of a cert
/// directory, as docker's certs.d and skopeo's `--cert-dir` lay them out.
pub(super) fn load_cert_dir(dir: &Path) -> Result<(Vec<Certificate<'static>>, Option<ClientCert>)> {
    let bad = |path: &Path, message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
        .map_err(|source| Error::Io {
            action: "read the cert directory",
            path: dir.to_path_buf(),
            source,
        })?;
    entries.sort();
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| Error::Io {
            action: "read",
            path: p.to_path_buf(),
            source,
        })
    };
    let mut roots = Vec::new();
    let mut client = None;
    for path in &entries {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let pem = read(path)?;
                for item in ureq::tls::parse_pem(&pem) {
                    if let PemItem::Certificate(c) = item.map_err(|e| bad(path, e.to_string()))? {
                        roots.push(c);
                    }
                }
            }
            Some("cert") => {
                let key_path = path.with_extension("key");
                let pem = read(path)?;
                let chain = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(bad(path, e.to_string()))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if !key_path.exists() {
                    return Err(bad(path, format!("no key {} for it", key_path.display())));
                }
                let key = PrivateKey::from_pem(&read(&key_path)?)
                    .map_err(|e| bad(&key_path, e.to_string()))?;
                client = Some(ClientCert::new_with_certs(&chain, key));
            }
            _ => {}
        }
    }
    Ok((roots, client))
}
