//! The OCI distribution client: pull images into the store, push them from it, log in and out.
//!
//! Blocking HTTP (ureq) on a few threads rather than an async client: blobs stream from the
//! socket straight into the store's blob writer (verified as they arrive, resumed with a
//! `Range` request after a broken connection) and from the blob file to the socket (chunked
//! uploads of large layers), and nothing in cairn runs an async runtime.

pub mod auth;
pub mod config;
mod pull;
mod push;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;

use ureq::http::{Method, StatusCode};

pub use auth::Credentials;
pub use config::{Endpoint, RegistryConfig};
pub use pull::{Platforms, Pulled, fetch, get_manifest, pull, pull_platforms};
pub use push::push;
pub use transport::{NetTimeouts, Registry, Retry};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Platform};
use crate::store::Store;
use transport::{MANIFEST_LIMIT, Payload, Req, header, read_body, status_error};

/// Blobs above this size are uploaded in chunks.
pub const CHUNK_THRESHOLD: u64 = 32 << 20;
/// The size of one uploaded chunk. Chunks stream from the blob file, so their size costs no
/// memory; each is a request the registry answers after storing it and its hash state, and
/// 16 MiB chunks made a 1.25 GiB push a fifth slower than skopeo's single PATCH.
pub const CHUNK_SIZE: u64 = 256 << 20;
/// Blobs transferred at once.
pub const PARALLEL_BLOBS: usize = 3;

/// How to talk to registries, from the command line and the config file.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `Some(false)`: HTTPS with any certificate, or plain HTTP. `None`: verify, except for
    /// registries the config marks insecure; loopback registries may fall back to plain HTTP.
    pub tls_verify: Option<bool>,
    /// Trust the CAs (`*.crt`) and use the client certificate (`*.cert`, `*.key`) in this
    /// directory instead of certs.d's.
    pub cert_dir: Option<PathBuf>,
    /// Credentials to use instead of the auth files'.
    pub creds: Option<(String, String)>,
    /// An auth file to look in first (and for login and logout, the one written).
    pub authfile: Option<PathBuf>,
    /// The platform to pick from an index [default: linux and the host's architecture].
    pub platform: Option<Platform>,
    pub config: Arc<RegistryConfig>,
    pub retry: Retry,
    /// Blobs above this size are pushed in chunks of `chunk_size`.
    pub chunk_threshold: u64,
    pub chunk_size: u64,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            tls_verify: None,
            cert_dir: None,
            creds: None,
            authfile: None,
            platform: None,
            config: Arc::new(RegistryConfig::default()),
            retry: Retry::default(),
            chunk_threshold: CHUNK_THRESHOLD,
            chunk_size: CHUNK_SIZE,
        }
    }
}

/// What a pull or push reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tag (or index) resolved to this manifest digest.
    Resolved {
        reference: String,
        digest: Digest,
    },
    /// A pull picked this image manifest from an index.
    PlatformSelected {
        platform: String,
        digest: Digest,
    },
    /// A blob needs no transfer: already in the store (pull) or the registry (push).
    BlobSkipped {
        digest: Digest,
        size: u64,
    },
    BlobStarted {
        digest: Digest,
        size: u64,
    },
    /// A blob transferred; `mounted`: pushed by a cross-repository mount, no bytes sent.
    BlobDone {
        digest: Digest,
        size: u64,
        mounted: bool,
    },
    /// Something failed in a way that may pass and is tried again.
    Retrying {
        what: String,
        attempt: u32,
        error: String,
    },
    /// A mirror failed; the next one or the location is tried.
    MirrorFailed {
        endpoint: String,
        error: String,
    },
    /// A pulled manifest is in the store.
    ManifestStored {
        digest: Digest,
    },
    ManifestPushed {
        reference: String,
        digest: Digest,
    },
}

/// Runs `work` on each item, [`PARALLEL_BLOBS`] at a time, in the order given; after the first
/// failure no new item starts, and that failure is returned.
pub(crate) fn in_parallel<T: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let queue = std::sync::Mutex::new(items.into_iter());
    let failed: std::sync::Mutex<Option<crate::error::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_BLOBS {
            s.spawn(|| {
                loop {
                    if failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        return;
                    }
                    let Some(item) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                        return;
                    };
                    if let Err(e) = work(item) {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The media types a manifest request accepts.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

pub use crate::image::{is_index, is_manifest};

/// The media type of a manifest document: the response's `Content-Type` when it is one cairn
/// knows, else the document's `mediaType`, else its shape.
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or_default().trim())
        .filter(|c| MANIFEST_TYPES.contains(c));
    if let Some(c) = ct {
        return c.to_owned();
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

/// A repository on a registry: what pull, push and the registry cache talk to.
#[derive(Debug, Clone)]
pub struct Client {
    registry: Arc<Registry>,
    repo: String,
    scopes: Vec<String>,
}

/// What pushing one blob did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The registry had it.
    Exists,
    /// Mounted from another repository.
    Mounted,
    Uploaded,
}

impl Client {
    /// A client for `repo` on `registry`; `push` asks for push access too.
    pub fn new(registry: Arc<Registry>, repo: &str, push: bool) -> Client {
        let access = if push { "pull,push" } else { "pull" };
        Client {
            scopes: vec![format!("repository:{repo}:{access}")],
            registry,
            repo: repo.to_owned(),
        }
    }

    /// A client for an endpoint, with credentials from `opts` or the auth files.
    pub fn for_endpoint(ep: &Endpoint, opts: &RegistryOptions, push: bool) -> Result<Client> {
        let registry = Arc::new(Registry::new(&ep.domain, ep.insecure, opts)?);
        Ok(Client::new(registry, &ep.path, push))
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repo
    }

    /// `domain/repository`, as messages and origin records name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry.domain(), self.repo)
    }

    fn send(
        &self,
        req: &Req<'_>,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<ureq::http::Response<ureq::Body>> {
        self.registry.send(req, &self.scopes, events)
    }

    /// Fetches a manifest or index by tag or digest: its bytes, media type and digest. By
    /// digest, bytes that do not hash to it are refused.
    pub fn get_manifest(
        &self,
        reference: &str,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<(Vec<u8>, String, Digest)> {
        let path = format!("/v2/{}/manifests/{reference}", self.repo);
        let what = format!("get manifest {}:{reference}", self.name());
        self.registry.retry.run(&what, events, || {
            let req = Req::new(Method::GET, &path).header("Accept", MANIFEST_TYPES.join(", "));
            let resp = self.send(&req, events)?;
            let url = self.registry.url(&path, events)?;
            if resp.status() != StatusCode::OK {
                return Err(status_error(&what, &url, resp));
            }
            let content_type = header(&resp, "content-type").map(str::to_owned);
            let bytes = read_body(resp, MANIFEST_LIMIT + 1, &url)?;
            if bytes.len() as u64 > MANIFEST_LIMIT {
                return Err(Error::invalid(
                    format!("manifest {}:{reference}", self.name()),
                    format!("larger than {MANIFEST_LIMIT} bytes"),
                ));
            }
            let digest = Digest::of(&bytes);
            if let Ok(want) = reference.parse::<Digest>()
                && want != digest
            {
                return Err(Error::RemoteMismatch {
                    what: "manifest".into(),
                    digest: want,
                    source_name: self.name(),
                    actual: digest,
                    detail: String::new(),
                });
            }
            let media_type = manifest_media_type(content_type.as_deref(), &bytes);
            Ok((bytes, media_type, digest))
        })
    }

    /// Uploads a manifest under a tag or its digest; returns its digest.
    pub fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Digest> {
        let path = format!("/v2/{}/manifests/{reference}", self.repo);
        let what = format!("push manifest {}:{reference}", self.name());
        let digest = Digest::of(bytes);
        self.registry.retry.run(&what, events, || {
            let req = Req::new(Method::PUT, &path)
                .header("Content-Type", media_type)
                .body(Payload::Bytes(bytes));
            let resp = self.send(&req, events)?;
            let url = self.registry.url(&path, events)?;
            if !resp.status().is_success() {
                return Err(status_error(&what, &url, resp));
            }
            if let Some(d) = header(&resp, "docker-content-digest")
                && let Ok(d) = d.trim().parse::<Digest>()
                && d != digest
            {
                return Err(Error::RemoteMismatch {
                    what: "pushed manifest".into(),
                    digest: digest.clone(),
                    source_name: self.name(),
                    actual: d,
                    detail: " (the registry's digest)".into(),
                });
            }
            let _ = read_body(resp, 64 << 10, &url);
            Ok(digest.clone())
        })
    }

    /// Whether the repository has a blob.
    pub fn has_blob(&self, digest: &Digest, events: &(dyn Fn(Event) + Sync)) -> Result<bool> {
        let path = format!("/v2/{}/blobs/{digest}", self.repo);
        let what = format!("check blob {digest} in {}", self.name());
        self.registry.retry.run(&what, events, || {
            let resp = self.send(&Req::new(Method::HEAD, &path), events)?;
            match resp.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(status_error(
                    &what,
                    &self.registry.url(&path, events)?,
                    resp,
                )),
            }
        })
    }

    /// Fetches a blob into the store, verified against its digest (and `size`, when known)
    /// as it streams in; a broken transfer is resumed where it stopped. Returns false when
    /// the store had it already. Nothing is stored under the digest unless it matches.
    pub fn fetch_blob(
        &self,
        store: &Store,
        digest: &Digest,
        size: Option<u64>,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<bool> {
        pull::fetch_blob(self, store, digest, size, events)
    }

    /// Pushes a store blob unless the repository has it: mounted from one of `mount_from`
    /// (other repositories on this registry) when the registry agrees, else uploaded whole
    /// or in chunks.
    pub fn push_blob(
        &self,
        store: &Store,
        digest: &Digest,
        size: u64,
        mount_from: &[String],
        opts: &RegistryOptions,
        events: &(dyn Fn(Event) + Sync),
    ) -> Result<Pushed> {
        push::push_blob(self, store, digest, size, mount_from, opts, events)
    }
}

/// Where blobs came from or went to: `<store>/registry/origins/<hex>` lists `domain/repo`
/// lines, so a push to another repository of the same registry can mount instead of upload.
pub(crate) mod origins {
    use super::*;

    fn path(store: &Store, digest: &Digest) -> PathBuf {
        store.root().join("registry/origins").join(digest.hex())
    }

    /// The repositories (`domain/repo`) a blob is known in, most recent last.
    pub fn get(store: &Store, digest: &Digest) -> Vec<String> {
        std::fs::read_to_string(path(store, digest))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Notes that `name` (`domain/repo`) has the blob. Best effort: it only saves uploads.
    pub fn record(store: &Store, digest: &Digest, name: &str) -> Result<()> {
        use std::io::Write;
        let p = path(store, digest);
        let mut known = get(store, digest);
        if known.last().is_some_and(|l| l == name) {
            return Ok(());
        }
        known.retain(|k| k != name);
        known.push(name.to_owned());
        // A handful of repositories is plenty to mount from.
        let keep = &known[known.len().saturating_sub(8)..];
        let dir = store.root().join("registry/origins");
        fs_err::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let temp =
            store
                .tmp_dir()
                .join(format!("origin-{}-{}", std::process::id(), digest.short()));
        let mut f = std::fs::File::create(&temp).at("create", &temp)?;
        f.write_all(format!("{}\n", keep.join("\n")).as_bytes())
            .at("write", &temp)?;
        drop(f);
        std::fs::rename(&temp, &p).at("rename into place", &p)
    }

    /// The other repositories on `domain` a blob can be mounted from into `repo`.
    pub fn mount_sources(store: &Store, digest: &Digest, domain: &str, repo: &str) -> Vec<String> {
        let prefix = format!("{domain}/");
        get(store, digest)
            .iter()
            .rev()
            .filter_map(|n| n.strip_prefix(&prefix))
            .filter(|r| *r != repo)
            .map(str::to_owned)
            .collect()
    }
}

/// Checks credentials against a registry (`GET /v2/` through its auth flow, asking the token
/// server for a refresh token too) and stores them where `opts.authfile` (else
/// `REGISTRY_AUTH_FILE`, else docker's config.json) says, or in the credential helper that file
/// names; a refresh token, when one came, is stored as docker's identity token in place of the
/// password. Returns where they went.
pub fn login(
    registry: &str,
    creds: &Credentials,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<String> {
    let domain = auth::normalize_registry(registry);
    let reg = Registry::with_credentials(&domain, false, opts, Some(creds.clone()))?.offline();
    reg.verify_login(events)?;
    let path = auth::target_file(opts.authfile.as_deref())?;
    // A token server that gave a refresh token gets it instead of the password from now on,
    // as `docker login` stores it.
    match reg.refresh_token() {
        Some(token) => auth::store(
            &path,
            &domain,
            &Credentials::identity(&creds.username, token),
        ),
        None => auth::store(&path, &domain, creds),
    }
}

/// Removes a registry's stored credentials; an error when there were none.
pub fn logout(registry: &str, authfile: Option<&std::path::Path>) -> Result<()> {
    let domain = auth::normalize_registry(registry);
    let path = auth::target_file(authfile)?;
    auth::remove(&path, &domain)
}
