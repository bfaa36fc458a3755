//! Pushing: an image's blobs (skipped when the registry has them, mounted from another
//! repository when the store knows one that has them, else uploaded whole or in chunks
//! streamed from the blob file), then its manifest, byte for byte as stored.

use ureq::http::{Method, StatusCode};

use super::transport::{Payload, Req, header, read_body, status_error};
use super::{Client, Event, Pushed, RegistryOptions, is_index, is_manifest, origins};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Descriptor, Index, Manifest, OCI_MANIFEST};
use crate::reference::Reference;
use crate::store::Store;

/// Pushes the image whose manifest `manifest` names to `dest` (a tag, or the manifest's own
/// digest); returns the manifest digest, which is the stored one.
///
/// `manifest` may name an image index: each of its images goes first, by digest (blobs, then
/// manifest), then the index itself, byte for byte, under the tag. Every image the index names
/// must be in the store (an index pulled for one platform is not: pull the others first).
pub fn push(
    store: &Store,
    manifest: &Descriptor,
    dest: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Digest> {
    if is_index(&manifest.media_type) {
        return push_index(store, manifest, dest, opts, events, 0);
    }
    // Reading verifies the manifest and config against their digests. The config need not be
    // an image's: a build cache's manifest names its records the same way.
    let bytes = store.read_blob(&manifest.digest)?;
    let parsed = Manifest::from_slice(&bytes, &format!("manifest {}", manifest.digest))?;
    if parsed.annotations.contains_key(crate::deferred::ANNOTATION) {
        // A registry gets the image as an export would write it: its layers compressed.
        let exported = crate::deferred::for_export(store, manifest)?;
        return push(store, &exported, dest, opts, events);
    }
    store.read_blob(&parsed.config.digest)?;
    let media_type = if is_manifest(&manifest.media_type) {
        manifest.media_type.clone()
    } else {
        Manifest::from_slice(&bytes, "manifest")?
            .media_type
            .filter(|m| is_manifest(m))
            .unwrap_or_else(|| OCI_MANIFEST.to_owned())
    };
    let target = target(dest, &manifest.digest, "the image's manifest")?;
    let mut blobs = vec![parsed.config.clone()];
    for l in &parsed.layers {
        if !blobs.iter().any(|b| b.digest == l.digest) {
            blobs.push(l.clone());
        }
    }
    for b in &blobs {
        if !store.has_blob(&b.digest) {
            return Err(Error::BlobNotFound(b.digest.clone()));
        }
    }
    let (ep, client) = push_client(dest, opts)?;

    // Largest first, so the long uploads start early.
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    super::in_parallel(blobs, |b| {
        let from = origins::mount_sources(store, &b.digest, &ep.domain, client.repository());
        let outcome = push_blob(&client, store, &b.digest, b.size, &from, opts, events)?;
        let _ = origins::record(store, &b.digest, &client.name());
        events(match outcome {
            Pushed::Exists => Event::BlobSkipped {
                digest: b.digest.clone(),
                size: b.size,
            },
            Pushed::Mounted | Pushed::Uploaded => Event::BlobDone {
                digest: b.digest.clone(),
                size: b.size,
                mounted: outcome == Pushed::Mounted,
            },
        });
        Ok(())
    })?;
    // Last, so the registry never holds a manifest whose blobs are missing.
    let digest = client.put_manifest(&target, &bytes, &media_type, events)?;
    let _ = origins::record(store, &digest, &client.name());
    events(Event::ManifestPushed {
        reference: format!("{}:{target}", client.name()),
        digest: digest.clone(),
    });
    Ok(digest)
}

/// See [`push`]: an index, its images first. `depth` counts the indexes above this one.
fn push_index(
    store: &Store,
    index: &Descriptor,
    dest: &Reference,
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
    depth: usize,
) -> Result<Digest> {
    if depth >= crate::image::MAX_INDEX_DEPTH {
        return Err(Error::invalid(
            format!("image index {}", index.digest),
            "indexes nested too deep",
        ));
    }
    // An index of images built with deferred compression names them compressed.
    let index = &crate::deferred::for_export(store, index)?;
    let bytes = store.read_blob(&index.digest)?;
    let what = format!("image index {}", index.digest);
    let parsed = Index::from_slice(&bytes, &what)?;
    // Every entry is checked before anything is sent: a half-pushed list helps no one.
    for child in &parsed.manifests {
        if !store.has_blob(&child.digest) {
            let platform = child
                .platform
                .as_ref()
                .map_or_else(|| "no platform".to_owned(), ToString::to_string);
            return Err(Error::invalid(
                what,
                format!(
                    "its image for {platform} ({}) is not in the store: pull it first \
                     (cairn pull --platform {platform}, or --all-platforms)",
                    child.digest
                ),
            ));
        }
    }
    let by_digest = |d: &Digest| Reference::parse(&format!("{}@{d}", dest.repository()));
    for child in &parsed.manifests {
        let to = by_digest(&child.digest)?;
        let pushed = if is_index(&child.media_type) {
            push_index(store, child, &to, opts, events, depth + 1)?
        } else {
            push(store, child, &to, opts, events)?
        };
        if pushed != child.digest {
            return Err(Error::invalid(
                what,
                format!("its entry {} was pushed as {pushed}", child.digest),
            ));
        }
    }
    let target = target(dest, &index.digest, "the image index")?;
    let media_type = parsed
        .media_type
        .clone()
        .filter(|m| is_index(m))
        .unwrap_or_else(|| index.media_type.clone());
    let (_, client) = push_client(dest, opts)?;
    let digest = client.put_manifest(&target, &bytes, &media_type, events)?;
    events(Event::ManifestPushed {
        reference: format!("{}:{target}", client.name()),
        digest: digest.clone(),
    });
    Ok(digest)
}

/// `url` with one more query parameter.
fn with_query(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// See [`Client::push_blob`]. Every attempt starts a new upload session; one a failure
/// abandons is left for the registry to expire.
pub(super) fn push_blob(
    client: &Client,
    store: &Store,
    digest: &Digest,
    size: u64,
    mount_from: &[String],
    opts: &RegistryOptions,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Pushed> {
    let file = store.blob_path(digest);
    let actual = std::fs::metadata(&file)
        .map_err(|_| Error::BlobNotFound(digest.clone()))?
        .len();
    if actual != size {
        return Err(Error::SizeMismatch {
            what: "blob in the store".into(),
            digest: digest.clone(),
            expected: size,
            actual,
        });
    }
    let what = format!("push blob {digest} to {}", client.name());
    let registry = client.registry();
    let uploads = format!("/v2/{}/blobs/uploads/", client.repo);
    let blob_path = format!("/v2/{}/blobs/{digest}", client.repo);
    registry.retry.run(&what, events, || {
        let head = client.send(&Req::new(Method::HEAD, &blob_path), events)?;
        match head.status() {
            StatusCode::OK => return Ok(Pushed::Exists),
            StatusCode::NOT_FOUND => {}
            _ => {
                return Err(status_error(
                    &what,
                    &registry.url(&blob_path, events)?,
                    head,
                ));
            }
        }
        let mut location = None;
        if let Some(from) = mount_from.first() {
            let mut scopes = client.scopes.clone();
            scopes.push(format!("repository:{from}:pull"));
            let url = format!(
                "{uploads}?mount={}&from={}",
                digest,
                super::transport::query_escape(from)
            );
            let resp = registry.send(&Req::new(Method::POST, &url), &scopes, events)?;
            match resp.status() {
                StatusCode::CREATED => return Ok(Pushed::Mounted),
                StatusCode::ACCEPTED => location = header(&resp, "location").map(str::to_owned),
                // Not allowed or not there after all: a plain upload will do.
                _ => {}
            }
            let _ = read_body(resp, 64 << 10, &url);
        }
        let location = match location {
            Some(l) => l,
            None => {
                let resp = client.send(&Req::new(Method::POST, &uploads), events)?;
                let url = registry.url(&uploads, events)?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&what, &url, resp));
                }
                let l = header(&resp, "location").map(str::to_owned);
                let _ = read_body(resp, 64 << 10, &url);
                l.ok_or_else(|| Error::Http {
                    what: what.clone(),
                    url,
                    message: "the upload session has no Location".into(),
                })?
            }
        };
        let mut location = registry.url(&location, events)?;
        if size > opts.chunk_threshold {
            let chunk = opts.chunk_size.max(1);
            let mut offset = 0;
            while offset < size {
                let len = chunk.min(size - offset);
                let req = Req::new(Method::PATCH, &location)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                    .body(Payload::File {
                        path: &file,
                        offset,
                        len,
                    });
                let resp = client.send(&req, events)?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&what, &location, resp));
                }
                let next = header(&resp, "location").map(str::to_owned);
                let _ = read_body(resp, 64 << 10, &location);
                if let Some(n) = next {
                    location = registry.url(&n, events)?;
                }
                offset += len;
            }
            let url = with_query(&location, &format!("digest={digest}"));
            let resp = client.send(&Req::new(Method::PUT, &url), events)?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&what, &url, resp));
            }
            let _ = read_body(resp, 64 << 10, &url);
        } else {
            let url = with_query(&location, &format!("digest={digest}"));
            let req = Req::new(Method::PUT, &url)
                .header("Content-Type", "application/octet-stream")
                .body(Payload::File {
                    path: &file,
                    offset: 0,
                    len: size,
                });
            let resp = client.send(&req, events)?;
            if resp.status() != StatusCode::CREATED {
                return Err(status_error(&what, &url, resp));
            }
            let _ = read_body(resp, 64 << 10, &url);
        }
        Ok(Pushed::Uploaded)
    })
}

/// The tag or digest `dest` puts a document of `digest` under: its tag, its digest when that
/// is the document's (`what` names the document when it is not), else `latest`.
fn target(dest: &Reference, digest: &Digest, what: &str) -> Result<String> {
    Ok(match (dest.tag(), dest.digest()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(d)) if d == digest => d.to_string(),
        (None, Some(d)) => {
            return Err(Error::InvalidReference {
                value: dest.to_string(),
                reason: format!("{what} is {digest}, not {d}"),
            });
        }
        (None, None) => crate::reference::DEFAULT_TAG.to_owned(),
    })
}

/// Where a push of `dest` goes: the config's first endpoint for it (pushes take no mirror),
/// and a client for it.
fn push_client(
    dest: &Reference,
    opts: &RegistryOptions,
) -> Result<(super::config::Endpoint, Client)> {
    let ep = opts
        .config
        .endpoints(dest, false)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidReference {
            value: dest.to_string(),
            reason: "no registry to push to".into(),
        })?;
    let client = Client::for_endpoint(&ep, opts, true)?;
    Ok((ep, client))
}
