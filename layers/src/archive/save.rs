//! Saving images as an OCI layout directory, an OCI archive or a docker-archive, deterministically.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::compress::{self, Compression};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{Descriptor, Index, REF_NAME};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::Store;

use super::{CONTAINERD_NAME, DockerEntry, SaveFormat};

/// An image to save, with the name to give it in the output.
#[derive(Debug, Clone)]
pub struct ToSave {
    pub reference: Option<Reference>,
    pub manifest: Descriptor,
}

/// Deterministic tar headers: owned by root, dated the epoch.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The index.json of a saved layout: each image named by its tag (`ref.name`, as skopeo's
/// `oci:DIR:TAG` looks it up) and by its full name (containerd's annotation, as docker writes).
fn saved_index(images: &[ToSave]) -> Index {
    Index::new(
        images
            .iter()
            .map(|i| {
                let mut d = i.manifest.clone();
                // A descriptor's own annotations stay (a build's `manifest-descriptor:`); the
                // names are the layout's.
                d.annotations.remove(REF_NAME);
                d.annotations.remove(CONTAINERD_NAME);
                match &i.reference {
                    Some(r) => {
                        d.annotations
                            .insert(CONTAINERD_NAME.to_owned(), r.to_string());
                        if let Some(t) = r.tag() {
                            d.annotations.insert(REF_NAME.to_owned(), t.to_owned());
                        }
                    }
                    // An unnamed image is still found by `oci:DIR:latest`.
                    None => {
                        d.annotations
                            .insert(REF_NAME.to_owned(), "latest".to_owned());
                    }
                }
                d
            })
            .collect(),
    )
}

/// Every blob the images reach, without repeats, in a stable order. An index brings itself
/// and the images of it the store holds: the layout is as sparse as the store's index.
fn blobs_of(store: &Store, images: &[ToSave]) -> Result<Vec<(Digest, u64)>> {
    let mut seen = BTreeMap::new();
    for i in images {
        let mut add = |d: &Descriptor, is_index: bool| -> Result<()> {
            seen.insert(d.digest.clone(), d.size);
            if !is_index {
                let img = store.image(d)?;
                seen.insert(img.manifest.config.digest.clone(), img.manifest.config.size);
                for l in &img.manifest.layers {
                    seen.insert(l.digest.clone(), l.size);
                }
            }
            Ok(())
        };
        store.walk(&i.manifest, &mut add)?;
    }
    Ok(seen.into_iter().collect())
}

/// The images as `format` holds them: an OCI export names compressed layers; a docker archive
/// holds plain tars whatever the store has, of one platform.
fn prepare(
    store: &Store,
    images: &[ToSave],
    format: SaveFormat,
    platform: &Platform,
) -> Result<Vec<ToSave>> {
    if format == SaveFormat::DockerArchive {
        images
            .iter()
            .map(|i| {
                let what = i
                    .reference
                    .as_ref()
                    .map_or_else(|| i.manifest.digest.to_string(), Reference::familiar);
                Ok(ToSave {
                    reference: i.reference.clone(),
                    manifest: store
                        .image_for(&i.manifest, platform)
                        .map_err(|e| match e {
                            Error::Invalid { reason, .. } => Error::invalid(what, reason),
                            e => e,
                        })?,
                })
            })
            .collect()
    } else {
        images
            .iter()
            .map(|i| {
                Ok(ToSave {
                    reference: i.reference.clone(),
                    manifest: crate::deferred::for_export(store, &i.manifest)?,
                })
            })
            .collect()
    }
}

/// [`save_for`] as a stream: an archive format written to `w` (standard output, for `cairn
/// save` without `-o`); a layout directory cannot be a stream, so `SaveFormat::OciDir` is
/// refused.
pub fn save_to_writer(
    store: &Store,
    images: &[ToSave],
    format: SaveFormat,
    platform: &Platform,
    w: &mut dyn Write,
) -> Result<()> {
    let images = &prepare(store, images, format, platform)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, w);
    match format {
        SaveFormat::OciDir => {
            return Err(Error::invalid(
                "the output",
                "an OCI layout is a directory, which cannot be written to a stream",
            ));
        }
        SaveFormat::OciArchive => write_oci_archive(store, images, &mut w)?,
        SaveFormat::DockerArchive => write_docker_archive(store, images, &mut w)?,
    }
    w.flush()
        .map_err(|e| Error::stream("finish the archive", e))
}

/// Writes the images to `out` in `format`. Archives are written to a temp file next to `out`
/// and renamed into place, so a failed save leaves no half-written archive.
///
/// An image index is saved as one in the OCI formats (its bytes, so its digest, kept; with
/// the images of it the store holds); a docker-archive, which has no indexes, gets the host's
/// image of it.
pub fn save(store: &Store, images: &[ToSave], format: SaveFormat, out: &Path) -> Result<()> {
    save_for(store, images, format, &Platform::host(), out)
}

/// [`save`], a docker-archive getting `platform`'s image of an index (an error naming the
/// platform when the store lacks it).
pub fn save_for(
    store: &Store,
    images: &[ToSave],
    format: SaveFormat,
    platform: &Platform,
    out: &Path,
) -> Result<()> {
    let images = &prepare(store, images, format, platform)?;
    match format {
        SaveFormat::OciDir => save_dir(store, images, out),
        SaveFormat::OciArchive | SaveFormat::DockerArchive => {
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let file_name = out
                .file_name()
                .map_or_else(|| "archive".into(), |n| n.to_string_lossy().into_owned());
            let temp = parent.join(format!(".{file_name}.cairn-tmp-{}", std::process::id()));
            let result = (|| {
                let f = File::create(&temp).at("create", &temp)?;
                let mut w = io::BufWriter::with_capacity(1 << 20, f);
                if format == SaveFormat::OciArchive {
                    write_oci_archive(store, images, &mut w)?;
                } else {
                    write_docker_archive(store, images, &mut w)?;
                }
                let f = w.into_inner().map_err(|e| Error::Io {
                    action: "write",
                    path: temp.clone(),
                    source: e.into_error(),
                })?;
                f.sync_all().at("sync", &temp)?;
                fs_err::rename(&temp, out).map_err(|source| Error::Io {
                    action: "rename into place",
                    path: out.to_path_buf(),
                    source,
                })
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        }
    }
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
        .map_err(|e| Error::stream(format!("write {path} to the archive"), e))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, path, io::empty())
        .map_err(|e| Error::stream(format!("write {path} to the archive"), e))
}

fn append_blob<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    path: &str,
    d: &Digest,
    size: u64,
) -> Result<()> {
    let f = store.open_blob(d)?;
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    tar.append_data(&mut h, path, f.take(size))
        .map_err(|e| Error::stream(format!("write blob {d} to the archive"), e))
}

fn write_oci_archive<W: Write>(store: &Store, images: &[ToSave], w: W) -> Result<()> {
    let mut tar = tar::Builder::new(w);
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(&mut tar, "index.json", &saved_index(images).to_bytes())?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    for (d, size) in blobs_of(store, images)? {
        append_blob(
            store,
            &mut tar,
            &format!("blobs/sha256/{}", d.hex()),
            &d,
            size,
        )?;
    }
    tar.into_inner()
        .map_err(|e| Error::stream("finish the archive", e))?
        .flush()
        .map_err(|e| Error::stream("finish the archive", e))
}

fn write_docker_archive<W: Write>(store: &Store, images: &[ToSave], w: W) -> Result<()> {
    let mut tar = tar::Builder::new(w);
    let mut entries = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for i in images {
        let img = store.image(&i.manifest)?;
        let config_path = format!("{}.json", img.manifest.config.digest.hex());
        if written.insert(config_path.clone()) {
            append_bytes(&mut tar, &config_path, &img.config_bytes)?;
        }
        let mut layer_paths = Vec::new();
        for (l, diff_id) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids) {
            // docker load and podman load both read uncompressed layer tars named by diff_id.
            let path = format!("{}/layer.tar", diff_id.hex());
            if written.insert(path.clone()) {
                append_dir(&mut tar, &format!("{}/", diff_id.hex()))?;
                let compression = Compression::from_media_type(&l.media_type)
                    .ok_or_else(|| Error::MediaType(l.media_type.clone()))?;
                if compression == Compression::None {
                    append_blob(store, &mut tar, &path, &l.digest, l.size)?;
                } else {
                    append_decompressed(store, &mut tar, &path, &l.digest, compression, diff_id)?;
                }
            }
            layer_paths.push(path);
        }
        entries.push(DockerEntry {
            config: config_path,
            repo_tags: i.reference.as_ref().map(|r| vec![r.familiar()]),
            layers: layer_paths,
        });
    }
    let manifest = serde_json::to_vec(&entries).map_err(|source| Error::Json {
        what: "manifest.json".into(),
        source,
    })?;
    append_bytes(&mut tar, "manifest.json", &manifest)?;
    tar.into_inner()
        .map_err(|e| Error::stream("finish the archive", e))?
        .flush()
        .map_err(|e| Error::stream("finish the archive", e))
}

/// A tar entry's size must be known up front, so the layer is decompressed to a temp file in
/// the store first (and checked against its diff_id on the way).
fn append_decompressed<W: Write>(
    store: &Store,
    tar: &mut tar::Builder<W>,
    path: &str,
    digest: &Digest,
    compression: Compression,
    diff_id: &Digest,
) -> Result<()> {
    let temp: PathBuf =
        store
            .root()
            .join("tmp")
            .join(format!("save-{}-{}", std::process::id(), diff_id.hex()));
    let result = (|| {
        let mut r = compress::decompress(store.open_blob(digest)?, compression)?;
        let f = File::create(&temp).at("create", &temp)?;
        let mut w = HashingWriter::new(io::BufWriter::new(f));
        io::copy(&mut r, &mut w)
            .map_err(|e| Error::stream(format!("decompress layer {digest}"), e))?;
        let (actual, size, buf) = w.finish();
        drop(buf);
        if actual != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("layer {digest} (diff_id)"),
                expected: diff_id.clone(),
                actual,
            });
        }
        let f = File::open(&temp).at("open", &temp)?;
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        tar.append_data(&mut h, path, f)
            .map_err(|e| Error::stream(format!("write {path} to the archive"), e))
    })();
    let _ = std::fs::remove_file(&temp);
    result
}

fn save_dir(store: &Store, images: &[ToSave], dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).map_err(|source| Error::Io {
        action: "create",
        path: blobs.clone(),
        source,
    })?;
    for (d, size) in blobs_of(store, images)? {
        let target = blobs.join(d.hex());
        if target.is_file() && fs_err::metadata(&target).map(|m| m.len()).ok() == Some(size) {
            continue;
        }
        let temp = blobs.join(format!(".{}.tmp", d.hex()));
        let mut from = store.open_blob(&d)?;
        let mut to = File::create(&temp).at("create", &temp)?;
        io::copy(&mut from, &mut to).at("write", &temp)?;
        to.sync_all().at("sync", &temp)?;
        fs_err::rename(&temp, &target).map_err(|source| Error::Io {
            action: "rename into place",
            path: target.clone(),
            source,
        })?;
    }
    let layout = dir.join("oci-layout");
    fs_err::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|source| Error::Io {
        action: "write",
        path: layout.clone(),
        source,
    })?;
    let index = dir.join("index.json");
    let temp = dir.join(".index.json.tmp");
    fs_err::write(&temp, saved_index(images).to_bytes()).map_err(|source| Error::Io {
        action: "write",
        path: temp.clone(),
        source,
    })?;
    fs_err::rename(&temp, &index).map_err(|source| Error::Io {
        action: "rename into place",
        path: index.clone(),
        source,
    })
}
