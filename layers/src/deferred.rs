//! Layers kept uncompressed through a build and compressed when their image leaves the store.
//!
//! BuildKit with the docker image store keeps a build's layers uncompressed until they are
//! pushed or exported; cairn does the same by default. A build writes its new layers as plain
//! tars and marks its manifest with [`ANNOTATION`], naming the compression they are to get;
//! [`for_export`] gives the manifest an export writes instead: each plain layer compressed as
//! a build that compressed while it ran would have written it (the same compressor, so the
//! same bytes and digests), and the mark gone. Compressed layers are remembered by diff_id,
//! so an image leaves the store a second time without compressing again.

use std::io::Write;

use crate::compress::{Compression, LayerCompression};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Descriptor, OCI_MANIFEST};
use crate::layer::write_layer;
use crate::store::Store;

/// The manifest annotation that marks a deferred image: its value is the compression its
/// plain layers get on export, as `gzip:5` or `zstd:3`.
pub const ANNOTATION: &str = "dev.cairn.layers.compress-on-export";

/// The annotation value for `c`.
pub fn mark(c: LayerCompression) -> String {
    format!("{}:{}", name(c.compression), c.level)
}

fn name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

fn parse_mark(value: &str) -> Option<LayerCompression> {
    let (format, level) = value.split_once(':')?;
    let compression = match format {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => return None,
    };
    let level: i32 = level.parse().ok()?;
    LayerCompression::level_range(compression)
        .contains(&level)
        .then_some(LayerCompression { compression, level })
}

/// The manifest to export for `manifest`: itself when it is not deferred, else a manifest (put
/// in the store) whose plain layers are compressed as its mark says, without the mark.
///
/// For an image index: the index whose present entries are exported so (a new index, named as
/// the old one was, when any entry changed; absent entries stay as they are).
pub fn for_export(store: &Store, manifest: &Descriptor) -> Result<Descriptor> {
    if crate::image::is_index(&manifest.media_type) {
        return index_for_export(store, manifest);
    }
    let image = store.image(manifest)?;
    let Some(value) = image.manifest.annotations.get(ANNOTATION) else {
        return Ok(manifest.clone());
    };
    let c = parse_mark(value).ok_or_else(|| {
        Error::invalid(
            format!("manifest {}", manifest.digest),
            format!("annotation {ANNOTATION}={value:?} names no compression"),
        )
    })?;
    let exported = compress_plain_image(store, manifest, &image, c)?;
    retag(store, manifest, &exported)?;
    Ok(exported)
}

/// See [`for_export`]: an index whose entries are exported.
fn index_for_export(store: &Store, index: &Descriptor) -> Result<Descriptor> {
    let mut doc = store.index(index)?;
    let mut changed = false;
    for entry in &mut doc.manifests {
        if !store.has_blob(&entry.digest) {
            continue;
        }
        let exported = for_export(store, entry)?;
        if exported.digest != entry.digest {
            entry.digest = exported.digest;
            entry.size = exported.size;
            entry.media_type = exported.media_type;
            changed = true;
        }
    }
    if !changed {
        return Ok(index.clone());
    }
    let mut exported = store.put_index(&doc)?;
    exported.annotations = index.annotations.clone();
    exported.platform = index.platform.clone();
    retag(store, index, &exported)?;
    Ok(exported)
}

/// Points the store's names for `from` at `to`: the same image (the same config, so the same
/// ID) with its layers compressed, which `cairn inspect` then shows with the digest a registry
/// has, as after a `docker push`. The plain layers stay for builds until a prune.
fn retag(store: &Store, from: &Descriptor, to: &Descriptor) -> Result<()> {
    let names: Vec<_> = store
        .tags()?
        .into_iter()
        .filter(|t| t.manifest.digest == from.digest)
        .map(|t| (t.reference, to.clone()))
        .collect();
    store.tag_all(&names)?;
    if store.untagged()?.iter().any(|m| m.digest == from.digest) {
        store.keep_untagged(to)?;
        store.remove_untagged(|m| m.digest == from.digest)?;
    }
    Ok(())
}

/// `manifest` with its plain layers compressed as `c` and without the deferred mark: itself
/// when there is nothing to change. A build that compresses as it goes ends with this too, as
/// a cache hit may give it a layer a deferred build left plain.
pub fn compress_plain(
    store: &Store,
    manifest: &Descriptor,
    c: LayerCompression,
) -> Result<Descriptor> {
    compress_plain_image(store, manifest, &store.image(manifest)?, c)
}

/// [`compress_plain`] of `image`, already read from `manifest`.
fn compress_plain_image(
    store: &Store,
    manifest: &Descriptor,
    image: &crate::store::Image,
    c: LayerCompression,
) -> Result<Descriptor> {
    let _writing = store.writing()?;
    let mut out = image.manifest.clone();
    let mut changed = out.annotations.remove(ANNOTATION).is_some();
    if c.compression != Compression::None {
        for (layer, diff_id) in out.layers.iter_mut().zip(&image.config.rootfs.diff_ids) {
            if Compression::from_media_type(&layer.media_type) == Some(Compression::None) {
                *layer = compressed(store, layer, diff_id, c)?;
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(manifest.clone());
    }
    let bytes = out.to_bytes();
    let digest = store.put_blob(&bytes)?;
    Ok(Descriptor {
        media_type: OCI_MANIFEST.to_owned(),
        digest,
        size: bytes.len() as u64,
        platform: manifest.platform.clone(),
        annotations: manifest.annotations.clone(),
    })
}

/// The plain layer `layer` compressed as `c`: from an earlier export when its blob is still
/// in the store, else compressed now and remembered.
fn compressed(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    c: LayerCompression,
) -> Result<Descriptor> {
    let memo = store.root().join("compressed").join(format!(
        "{}.{}-{}",
        diff_id.hex(),
        name(c.compression),
        c.level
    ));
    if let Some(known) = std::fs::read(&memo)
        .ok()
        .and_then(|b| serde_json::from_slice::<Descriptor>(&b).ok())
        .filter(|d| store.has_blob(&d.digest))
    {
        return Ok(known);
    }
    let source = store.open_blob(&layer.digest)?;
    let written = write_layer(store, c, |w| {
        std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, source), w)
            .map(drop)
            .map_err(|e| Error::stream(format!("compress layer {}", layer.digest), e))
    })?;
    if written.diff_id != *diff_id {
        return Err(Error::DigestMismatch {
            what: format!("layer {} (diff_id)", layer.digest),
            expected: diff_id.clone(),
            actual: written.diff_id,
        });
    }
    let mut out = written.descriptor;
    out.annotations = layer.annotations.clone();
    out.platform = layer.platform.clone();
    // Without the memo the next export compresses again: slower, never wrong.
    let _ = remember(store, &memo, &out);
    Ok(out)
}

fn remember(store: &Store, memo: &std::path::Path, d: &Descriptor) -> std::io::Result<()> {
    let dir = store.root().join("compressed");
    std::fs::create_dir_all(&dir)?;
    let temp = store.temp_path("compressed");
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(&serde_json::to_vec(d).map_err(std::io::Error::other)?)?;
    drop(f);
    std::fs::rename(&temp, memo).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_as_the_compression_they_name() {
        for (c, text) in [
            (LayerCompression::new(Compression::Gzip, None), "gzip:5"),
            (LayerCompression::new(Compression::Gzip, Some(9)), "gzip:9"),
            (LayerCompression::new(Compression::Zstd, None), "zstd:3"),
            (LayerCompression::new(Compression::None, None), "none:0"),
        ] {
            assert_eq!(mark(c), text);
            assert_eq!(parse_mark(text), Some(c));
        }
        for bad in ["", "gzip", "gzip:", "gzip:10", "lz4:1", "gzip:x", ":5"] {
            assert_eq!(parse_mark(bad), None, "{bad}");
        }
    }
}
