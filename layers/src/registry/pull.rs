//! Pulling: resolving a reference through mirrors to one platform's manifest, and fetching
//! its blobs concurrently into the store, verified and resumable.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use ureq::http::{Method, StatusCode};

use super::transport::{NetTimeouts, Req, header, status_error, transient};
use super::{Client, Event, RegistryOptions, is_index, is_manifest, origins};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::reference::Reference;
use crate::store::Store;

/// What a pull brought into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// What the reference names on the registry, stored verbatim: the image manifest, or
    /// the index (manifest list) it is one platform of.
    pub top: Descriptor,
    /// The image manifests fetched whole: the platform's one, or every one of the index.
    pub images: Vec<Descriptor>,
}

/// Which images of an index a pull fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platforms {
    /// The one for [`RegistryOptions::platform`] (default: the host's).
    One,
    /// Every one the index names.
    All,
}

/// Pulls `reference` into the store, trying the config's mirrors then its location, and
/// names it by its tag (or, for a digest reference, by the reference itself, so it stays
/// resolvable and kept). The name goes to what the reference names: for a multi-platform
/// image, its index, which keeps the registry's digest and holds the platforms pulled so far.
/// Returns the image manifest for [`RegistryOptions::platform`] (default: the host's).
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Descriptor> {
    let pulled = pull_platforms(store, reference, opts, Platforms::One, events)?;
    pulled
        .images
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid(reference.to_string(), "the pull fetched no image"))
}

/// Like [`pull`], fetching the images `which` picks; returns all that was fetched.
pub fn pull_platforms(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    which: Platforms,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Pulled> {
    let pulled = fetch(store, reference, opts, which, events)?;
    let name = match reference.tag() {
        Some(t) if reference.digest().is_some() => reference.with_tag(t)?,
        _ => reference.clone(),
    };
    store.tag(&name, &pulled.top)?;
    Ok(pulled)
}

/// Like [`pull_platforms`] without naming anything: the content is in the store for the
/// caller to name or reference (a manifest list that adds a registry's image).
pub fn fetch(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    which: Platforms,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Pulled> {
    let endpoints = opts.config.endpoints(reference, true)?;
    let mut errors = Vec::new();
    for ep in &endpoints {
        let pulled = Client::for_endpoint(ep, opts, false)
            .and_then(|client| pull_from(store, &client, reference, opts, which, events));
        match pulled {
            Ok(p) => return Ok(p),
            Err(e) => {
                if ep.mirror {
                    events(Event::MirrorFailed {
                        endpoint: ep.name(),
                        error: e.to_string(),
                    });
                }
                errors.push((ep.name(), e));
            }
        }
    }
    if errors.len() == 1
        && let Some((_, e)) = errors.pop()
    {
        return Err(e);
    }
    Err(Error::PullFailed {
        reference: reference.to_string(),
        errors: errors
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// A manifest or index by tag or digest, through the config's mirrors then its location:
/// its bytes, media type and digest (`cairn manifest inspect` of a registry's image).
pub fn get_manifest(
    reference: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<(Vec<u8>, String, Digest)> {
    let mut last = None;
    for ep in opts.config.endpoints(reference, true)? {
        let got = Client::for_endpoint(&ep, opts, false)
            .and_then(|client| client.get_manifest(&wanted(reference), events));
        match got {
            Ok(found) => return Ok(found),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid(reference.to_string(), "no registry to ask")))
}

/// What to ask a registry for: the reference's digest, else its tag.
fn wanted(reference: &Reference) -> String {
    match reference.digest() {
        Some(d) => d.to_string(),
        None => reference
            .tag()
            .unwrap_or(crate::reference::DEFAULT_TAG)
            .to_owned(),
    }
}

/// One image manifest to fetch: its descriptor and bytes.
struct Fetched {
    descriptor: Descriptor,
    bytes: Vec<u8>,
    manifest: Manifest,
}

/// Pulls from one endpoint.
fn pull_from(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &RegistryOptions,
    which: Platforms,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Pulled> {
    let (bytes, media_type, digest) = client.get_manifest(&wanted(reference), events)?;
    events(Event::Resolved {
        reference: reference.to_string(),
        digest: digest.clone(),
    });
    let top = Descriptor {
        media_type: media_type.clone(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    let mut images = Vec::new();
    if is_index(&media_type) {
        let what = format!("image index {}@{digest}", client.name());
        let index = Index::from_slice(&bytes, &what)?;
        let chosen: Vec<Descriptor> = match which {
            Platforms::One => {
                let want = opts.platform.clone().unwrap_or_else(Platform::host);
                vec![crate::platform::select(&index, &want, &what)?.clone()]
            }
            Platforms::All => index.manifests.clone(),
        };
        for c in chosen {
            let (bytes, media_type, digest) = client.get_manifest(c.digest.as_str(), events)?;
            if bytes.len() as u64 != c.size {
                return Err(Error::SizeMismatch {
                    what: format!("manifest from {}", client.name()),
                    digest: c.digest.clone(),
                    expected: c.size,
                    actual: bytes.len() as u64,
                });
            }
            if !is_manifest(&media_type) {
                return Err(Error::invalid(
                    &what,
                    format!("its entry {digest} is a {media_type}, not an image manifest"),
                ));
            }
            events(Event::PlatformSelected {
                platform: c
                    .platform
                    .as_ref()
                    .map(Platform::to_string)
                    .unwrap_or_default(),
                digest: digest.clone(),
            });
            let manifest =
                Manifest::from_slice(&bytes, &format!("manifest {}@{digest}", client.name()))?;
            images.push(Fetched {
                descriptor: Descriptor {
                    media_type,
                    digest,
                    size: bytes.len() as u64,
                    platform: c.platform.clone(),
                    annotations: BTreeMap::new(),
                },
                bytes,
                manifest,
            });
        }
    } else if is_manifest(&media_type) {
        let manifest =
            Manifest::from_slice(&bytes, &format!("manifest {}@{digest}", client.name()))?;
        images.push(Fetched {
            descriptor: top.clone(),
            bytes: bytes.clone(),
            manifest,
        });
    } else {
        return Err(Error::MediaType(media_type));
    }

    let _writing = store.writing()?;
    let mut blobs = Vec::new();
    for f in &images {
        blobs.push(f.manifest.config.clone());
        blobs.extend(f.manifest.layers.iter().cloned());
    }
    fetch_all(store, client, &blobs, events)?;
    let name = client.name();
    for f in &images {
        // A config that does not parse is no image, however well its digest matches.
        ImageConfig::from_slice(
            &store.read_blob(&f.manifest.config.digest)?,
            &format!("config {} from {name}", f.manifest.config.digest),
        )?;
        // Kept verbatim, so its digest stays the registry's.
        store.put_blob(&f.bytes)?;
        events(Event::ManifestStored {
            digest: f.descriptor.digest.clone(),
        });
    }
    if is_index(&media_type) {
        // After its images, so the store never has an index entry it was meant to hold
        // missing; verbatim, so a push of it keeps the registry's digest.
        store.put_blob(&bytes)?;
    }
    for b in &blobs {
        // Only an optimisation for later pushes: a failure to note it is no failed pull.
        let _ = origins::record(store, &b.digest, &name);
    }
    Ok(Pulled {
        top,
        images: images.into_iter().map(|f| f.descriptor).collect(),
    })
}

/// Fetches the blobs the store lacks, a few at a time; the first error stops the rest.
fn fetch_all(
    store: &Store,
    client: &Client,
    blobs: &[Descriptor],
    events: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    let mut todo: Vec<&Descriptor> = Vec::new();
    for b in blobs {
        if store.has_blob(&b.digest) {
            events(Event::BlobSkipped {
                digest: b.digest.clone(),
                size: b.size,
            });
        } else if !todo.iter().any(|t| t.digest == b.digest) {
            todo.push(b);
        }
    }
    // Largest first, so the long transfers start early.
    todo.sort_by_key(|b| std::cmp::Reverse(b.size));
    super::in_parallel(todo, |b| {
        events(Event::BlobStarted {
            digest: b.digest.clone(),
            size: b.size,
        });
        fetch_blob(client, store, &b.digest, Some(b.size), events)?;
        events(Event::BlobDone {
            digest: b.digest.clone(),
            size: b.size,
            mounted: false,
        });
        Ok(())
    })
}

/// See [`Client::fetch_blob`].
pub(super) fn fetch_blob(
    client: &Client,
    store: &Store,
    digest: &Digest,
    size: Option<u64>,
    events: &(dyn Fn(Event) + Sync),
) -> Result<bool> {
    if store.has_blob(digest) {
        return Ok(false);
    }
    let path = format!("/v2/{}/blobs/{digest}", client.repo);
    let what = format!("fetch blob {digest} from {}", client.name());
    let mut writer = Some(store.blob_writer()?);
    // Bytes written so far: a retry asks for the rest.
    let mut got: u64 = 0;
    // One byte more than declared is enough to know a source is lying, and no more is read.
    let limit = size.map_or(u64::MAX, |n| n.saturating_add(1));
    let mut attempt = 1;
    let retry = client.registry.retry;
    loop {
        let result = (|| -> Result<()> {
            let mut req = Req::new(Method::GET, &path);
            if got > 0 {
                req = req.header("Range", format!("bytes={got}-"));
            }
            let resp = client.send(&req, events)?;
            let url = client.registry.url(&path, events)?;
            let resumed = match resp.status() {
                StatusCode::OK => false,
                StatusCode::PARTIAL_CONTENT if got > 0 => {
                    let start = header(&resp, "content-range")
                        .and_then(|r| r.trim().strip_prefix("bytes "))
                        .and_then(|r| r.split('-').next())
                        .and_then(|s| s.trim().parse::<u64>().ok());
                    if start != Some(got) {
                        return Err(Error::Http {
                            what: what.clone(),
                            url,
                            message: format!(
                                "asked for bytes from {got}, got Content-Range {:?}",
                                header(&resp, "content-range")
                            ),
                        });
                    }
                    true
                }
                _ => return Err(status_error(&what, &url, resp)),
            };
            if got > 0 && !resumed {
                // The server ignored the Range: start over with the whole blob.
                got = 0;
                if let Some(old) = writer.take() {
                    old.abort();
                }
                writer = Some(store.blob_writer()?);
            }
            let Some(w) = writer.as_mut() else {
                return Ok(());
            };
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let room = limit.saturating_sub(got).min(buf.len() as u64) as usize;
                if room == 0 {
                    return Ok(());
                }
                let n = match body.read(&mut buf[..room]) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let why = match NetTimeouts::timeout_in(&e) {
                            Some(t) => client.registry.timeouts.describe(t),
                            None => e.to_string(),
                        };
                        return Err(Error::Http {
                            what: what.clone(),
                            url: url.clone(),
                            message: format!("transfer broke off after {got} bytes: {why}"),
                        });
                    }
                };
                w.write_all(&buf[..n]).map_err(|source| Error::Io {
                    action: "write",
                    path: store.tmp_dir(),
                    source,
                })?;
                got += n as u64;
            }
        })();
        match result {
            Ok(()) => break,
            Err(e) if transient(&e) && attempt < retry.attempts.max(1) => {
                events(Event::Retrying {
                    what: format!("{what} (from byte {got})"),
                    attempt,
                    error: e.to_string(),
                });
                std::thread::sleep(retry.backoff * 2u32.saturating_pow(attempt - 1));
                attempt += 1;
            }
            Err(e) => {
                if let Some(w) = writer.take() {
                    w.abort();
                }
                return Err(e);
            }
        }
    }
    let Some(w) = writer else {
        return Err(Error::invalid(format!("blob {digest}"), "no writer"));
    };
    let mismatch = |actual: Digest, detail: String| Error::RemoteMismatch {
        what: "blob".into(),
        digest: digest.clone(),
        source_name: client.name(),
        actual,
        detail,
    };
    match w.commit(Some((digest, None))) {
        Ok((_, n)) => match size {
            Some(want) if want != n => Err(Error::SizeMismatch {
                what: format!("blob from {}", client.name()),
                digest: digest.clone(),
                expected: want,
                actual: n,
            }),
            _ => Ok(true),
        },
        Err(Error::DigestMismatch { actual, .. }) => {
            let detail = match size {
                Some(want) if want != got => {
                    let more = if got > want { " or more" } else { "" };
                    format!(" ({got}{more} bytes where the manifest says {want})")
                }
                _ => String::new(),
            };
            Err(mismatch(actual, detail))
        }
        Err(e) => Err(e),
    }
}
