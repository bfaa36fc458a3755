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

/// Pulls `reference` into the store, trying the config's mirrors then its location, and
/// names it by its tag (or, for a digest reference, by the reference itself, so it stays
/// resolvable and kept). Returns the image manifest's descriptor.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Descriptor> {
    let endpoints = opts.config.endpoints(reference, true)?;
    let mut errors = Vec::new();
    for ep in &endpoints {
        let pulled = Client::for_endpoint(ep, opts, false)
            .and_then(|client| pull_from(store, &client, reference, opts, events));
        match pulled {
            Ok(desc) => {
                let name = match reference.tag() {
                    Some(t) if reference.digest().is_some() => reference.with_tag(t)?,
                    _ => reference.clone(),
                };
                store.tag(&name, &desc)?;
                return Ok(desc);
            }
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

/// Pulls from one endpoint.
fn pull_from(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Descriptor> {
    let wanted = match reference.digest() {
        Some(d) => d.to_string(),
        None => reference
            .tag()
            .unwrap_or(crate::reference::DEFAULT_TAG)
            .to_owned(),
    };
    let (mut bytes, mut media_type, mut digest) = client.get_manifest(&wanted, events)?;
    events(Event::Resolved {
        reference: reference.to_string(),
        digest: digest.clone(),
    });
    if is_index(&media_type) {
        let what = format!("image index {}@{digest}", client.name());
        let index = Index::from_slice(&bytes, &what)?;
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let chosen = crate::platform::select(&index, &want, &what)?.clone();
        (bytes, media_type, digest) = client.get_manifest(chosen.digest.as_str(), events)?;
        if bytes.len() as u64 != chosen.size {
            return Err(Error::SizeMismatch {
                what: format!("manifest from {}", client.name()),
                digest: chosen.digest.clone(),
                expected: chosen.size,
                actual: bytes.len() as u64,
            });
        }
        events(Event::PlatformSelected {
            platform: chosen
                .platform
                .as_ref()
                .map(Platform::to_string)
                .unwrap_or_default(),
            digest: digest.clone(),
        });
    }
    if !is_manifest(&media_type) {
        return Err(Error::MediaType(media_type));
    }
    let what = format!("manifest {}@{digest}", client.name());
    let manifest = Manifest::from_slice(&bytes, &what)?;

    let _writing = store.writing()?;
    let mut blobs = vec![manifest.config.clone()];
    blobs.extend(manifest.layers.iter().cloned());
    fetch_all(store, client, &blobs, events)?;
    // A config that does not parse is no image, however well its digest matches.
    ImageConfig::from_slice(
        &store.read_blob(&manifest.config.digest)?,
        &format!("config {} from {}", manifest.config.digest, client.name()),
    )?;
    // Kept verbatim, so its digest stays the registry's.
    store.put_blob(&bytes)?;
    let name = client.name();
    for b in &blobs {
        // Only an optimisation for later pushes: a failure to note it is no failed pull.
        let _ = origins::record(store, &b.digest, &name);
    }
    events(Event::ManifestStored {
        digest: digest.clone(),
    });
    Ok(Descriptor {
        media_type,
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
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
