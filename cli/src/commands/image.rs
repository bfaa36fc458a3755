//! The image commands: load, import, save, inspect, tag, rmi, prune, fsck.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use cairn_builder::meta;
use cairn_layers::Digest;
use cairn_layers::archive::{self, ToSave};
use cairn_layers::compress::Compression;
use cairn_layers::image::{Descriptor, History, ImageConfig, timestamp};
use cairn_layers::platform::Platform;
use cairn_layers::registry::is_index;
use cairn_layers::store::{Image, Store};
use cairn_layers::{Reference, layer};
use serde_json::json;

use crate::args::{ImportArgs, InspectArgs, LoadArgs, RmiArgs, SaveArgs, SaveFormat, TagArgs};

/// `SOURCE_DATE_EPOCH`, when set: the creation time of what cairn writes.
pub fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

pub fn load(store: &Store, args: &LoadArgs) -> anyhow::Result<()> {
    let name = args.tag.as_deref().map(Reference::parse).transpose()?;
    let loaded = match args.input.as_deref() {
        Some(p) if p != Path::new("-") => archive::load(store, p, name.as_ref())
            .with_context(|| format!("failed to load {}", p.display()))?,
        // docker's `load` reads standard input when given no file; a terminal there means the
        // user forgot the file, not that they mean to type an archive.
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!(
                    "cairn load: standard input is a terminal; give -i FILE or pipe an archive in"
                );
            }
            archive::load_from_reader(store, stdin.lock(), "standard input", name.as_ref())
                .context("failed to load an archive from standard input")?
        }
    };
    let mut out = std::io::stdout().lock();
    for l in loaded {
        if l.names.is_empty() {
            // Kept as docker keeps it: a dangling image, reachable by its ID.
            store.keep_untagged(&l.manifest)?;
            writeln!(out, "Loaded image ID: {}", image_id(store, &l.manifest)?)?;
        }
        for n in l.names {
            writeln!(out, "Loaded image: {}", n.familiar())?;
        }
    }
    Ok(())
}

pub fn import(store: &Store, args: &ImportArgs) -> anyhow::Result<()> {
    let name = Reference::parse(&args.name)?;
    // The config, --change included, is made before the tarball is read: a bad change fails
    // without storing anything.
    let changes = args.changes.join("\n");
    let df = cairn_parser::parse("--change", &format!("FROM scratch\n{changes}\n"))?;
    let mut config = ImageConfig::scratch();
    // A tarball of another machine's binaries (an arm64 rootfs made on amd64) says so here,
    // as `docker import --platform` does; the tarball itself is not looked at.
    if let Some(p) = &args.platform {
        let p = super::registry::parse_platform(p)?;
        config.os = p.os;
        config.architecture = p.architecture;
        config.variant = p.variant;
    }
    let created = timestamp(source_date_epoch()?);
    config.created = Some(created.clone());
    meta::apply_all(
        &mut config,
        &df.stages[0].instructions,
        &BTreeMap::new(),
        df.directives.escape,
    )?;

    let _writing = store.writing()?;
    let what = args.rootfs.display().to_string();
    let layer = if args.rootfs.as_os_str() == "-" {
        layer::import_tarball(
            store,
            std::io::stdin().lock(),
            "standard input",
            Compression::Gzip,
        )
        .context("failed to import standard input")?
    } else {
        let f =
            std::fs::File::open(&args.rootfs).with_context(|| format!("failed to open {what}"))?;
        layer::import_tarball(store, f, &what, Compression::Gzip)
            .with_context(|| format!("failed to import {what}"))?
    };
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created),
        // The file name only: a temp directory in the path would change the image ID.
        created_by: Some(format!(
            "cairn import {}",
            args.rootfs
                .file_name()
                .map_or_else(|| what.clone(), |n| n.to_string_lossy().into_owned())
        )),
        comment: Some(
            args.message
                .clone()
                .unwrap_or_else(|| "imported from a root filesystem tarball".into()),
        ),
        ..History::default()
    });
    let manifest = store.put_image(&config, vec![layer.descriptor])?;
    store.tag(&name, &manifest)?;
    writeln!(std::io::stdout().lock(), "{}", store.image(&manifest)?.id())?;
    Ok(())
}

fn to_save(store: &Store, names: &[String]) -> anyhow::Result<Vec<ToSave>> {
    names
        .iter()
        .map(|n| {
            let (reference, manifest) = store.resolve(n)?;
            // A name given as a reference keeps its tag in the output even if resolved by ID.
            let reference =
                reference.or_else(|| Reference::parse(n).ok().filter(|r| r.digest().is_none()));
            Ok(ToSave {
                reference,
                manifest,
            })
        })
        .collect()
}

pub fn save(store: &Store, args: &SaveArgs) -> anyhow::Result<()> {
    let images = to_save(store, &args.names)?;
    let format = match args.format {
        SaveFormat::OciArchive => archive::SaveFormat::OciArchive,
        SaveFormat::DockerArchive => archive::SaveFormat::DockerArchive,
        SaveFormat::OciDir => archive::SaveFormat::OciDir,
    };
    let platform = platform_arg(args.platform.as_deref())?;
    let platform = platform.unwrap_or_else(Platform::host);
    match args.output.as_deref() {
        Some(p) if p != Path::new("-") => {
            archive::save_for(store, &images, format, &platform, p)
                .with_context(|| format!("failed to save to {}", p.display()))?
        }
        // docker's `save` writes standard output when given no file, and refuses a terminal.
        _ if format == archive::SaveFormat::OciDir => {
            bail!("cairn save --format oci-dir writes a directory: give it with -o DIR")
        }
        _ => {
            super::output::refuse_terminal("cairn save")?;
            let mut out = std::io::stdout().lock();
            archive::save_to_writer(store, &images, format, &platform, &mut out)
                .context("failed to save to standard output")?;
        }
    }
    Ok(())
}

/// The ID docker shows for what a name names: an image's config digest; an index's own
/// digest (as docker's containerd store shows a multi-platform image).
fn image_id(store: &Store, d: &Descriptor) -> anyhow::Result<Digest> {
    if is_index(&d.media_type) {
        return Ok(d.digest.clone());
    }
    Ok(store.image(d)?.id().clone())
}

/// The platform a `--platform` flag names.
fn platform_arg(flag: Option<&str>) -> anyhow::Result<Option<Platform>> {
    flag.map(super::registry::parse_platform).transpose()
}

/// An image's details; of an index, those of the platform's image (by default the host's,
/// else the one the store holds, as docker shows), with the index's digest and platforms.
fn inspect_one(
    store: &Store,
    name: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<serde_json::Value> {
    let (_, named) = store.resolve(name)?;
    let (_, manifest) = store.resolve_image(name, platform)?;
    let img: Image = store.image(&manifest)?;
    let tags: Vec<String> = store
        .tags()?
        .into_iter()
        .filter(|t| t.manifest.digest == named.digest)
        .map(|t| t.reference.familiar())
        .collect();
    let c = &img.config;
    let mut v = json!({
        "Id": img.id(),
        "RepoTags": tags,
        "ManifestDigest": manifest.digest,
        "Created": c.created,
        "Author": c.author.clone().unwrap_or_default(),
        "Architecture": c.architecture,
        "Os": c.os,
        "Variant": c.variant,
        "Config": c.config,
        "RootFS": { "Type": c.rootfs.kind, "Layers": c.rootfs.diff_ids },
        "History": c.history,
        "Size": img.size(),
        "Layers": img.manifest.layers,
    });
    if is_index(&named.media_type) {
        v["IndexDigest"] = json!(named.digest);
        let platforms: Vec<serde_json::Value> = store
            .children(&named)?
            .into_iter()
            .map(|c| {
                json!({
                    "Platform": c.descriptor.platform.as_ref().map(Platform::to_string),
                    "Digest": c.descriptor.digest,
                    "Present": c.present,
                })
            })
            .collect();
        v["Platforms"] = json!(platforms);
    }
    Ok(v)
}

/// The in-toto statements stored with `name`: those about the platform's image when one is
/// asked for, else all.
fn attestations_of(
    store: &Store,
    name: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let (_, named) = store.resolve(name)?;
    let image = match platform {
        Some(p) => Some(store.resolve_image(name, Some(p))?.1.digest),
        None => None,
    };
    Ok(store
        .attestations(&named)?
        .into_iter()
        .filter(|a| image.as_ref().is_none_or(|d| *d == a.subject))
        .map(|a| a.statement)
        .collect())
}

pub fn inspect(store: &Store, args: &InspectArgs) -> anyhow::Result<()> {
    let platform = platform_arg(args.platform.as_deref())?;
    let all = if args.attestations {
        let mut all = Vec::new();
        for n in &args.names {
            all.extend(attestations_of(store, n, platform.as_ref())?);
        }
        all
    } else {
        args.names
            .iter()
            .map(|n| inspect_one(store, n, platform.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &all)?;
    writeln!(out)?;
    Ok(())
}

pub fn tag(store: &Store, args: &TagArgs) -> anyhow::Result<()> {
    let (_, manifest) = store.resolve(&args.source)?;
    let target = Reference::parse(&args.target)?;
    if target.digest().is_some() {
        bail!("cannot tag with a digest reference: {}", args.target);
    }
    store.tag(&target, &manifest)?;
    Ok(())
}

pub fn rmi(store: &Store, args: &RmiArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for name in &args.names {
        let (reference, manifest) = store.resolve(name)?;
        let refs: Vec<Reference> = match reference {
            Some(r) => vec![r],
            None => {
                let all: Vec<Reference> = store
                    .tags()?
                    .into_iter()
                    .filter(|t| t.manifest.digest == manifest.digest)
                    .map(|t| t.reference)
                    .collect();
                if all.is_empty() {
                    // A dangling image: removing it is deleting it, as docker says.
                    let id = image_id(store, &manifest)?;
                    store.remove_untagged(|m| m.digest == manifest.digest)?;
                    writeln!(out, "Deleted: {id}")?;
                    continue;
                }
                if all.len() > 1 && !args.force {
                    let names: Vec<String> = all.iter().map(Reference::familiar).collect();
                    bail!(
                        "image {name} has several names ({}); remove them by name, or use -f",
                        names.join(", ")
                    );
                }
                all
            }
        };
        for r in refs {
            store.untag(&r)?;
            writeln!(out, "Untagged: {}", r.familiar())?;
        }
    }
    Ok(())
}

pub fn prune(store: &Store, args: &crate::args::PruneArgs) -> anyhow::Result<()> {
    let mut policy = cairn_builder::cache::PrunePolicy {
        all: args.all,
        ..Default::default()
    };
    if let Some(size) = &args.keep_storage {
        policy.keep_storage = Some(
            cairn_builder::sandbox::cgroup::parse_size(size)
                .map_err(|e| anyhow::anyhow!("--keep-storage {size:?}: {e}"))?,
        );
    }
    for f in &args.filter {
        let Some(d) = f.strip_prefix("until=") else {
            bail!("--filter {f:?}: only until=DURATION is supported");
        };
        let ns = cairn_parser::parse_go_duration(d)
            .map_err(|e| anyhow::anyhow!("--filter {f:?}: {e}"))?;
        policy.unused_for = Some(std::time::Duration::from_nanos(ns));
    }
    // Dangling images go first, as docker's system prune removes them: what they alone
    // reach is then reclaimed with the rest.
    let mut out = std::io::stdout().lock();
    for m in store.remove_untagged(|_| true)? {
        match image_id(store, &m) {
            Ok(id) => writeln!(out, "Deleted: {id}")?,
            Err(_) => writeln!(out, "Deleted: manifest {}", m.digest)?,
        }
    }
    let cache = cairn_builder::cache::Cache::open(store);
    let r = cache.prune(store, &policy)?;
    writeln!(
        out,
        "Deleted {} blobs, {} unpacked layers and {} cache records; reclaimed {}",
        r.store.blobs,
        r.store.layers,
        r.records,
        super::images::human_size(r.store.bytes)
    )?;
    Ok(())
}

pub fn fsck(store: &Store) -> anyhow::Result<()> {
    let r = store.fsck()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "checked {} blobs and {} images", r.blobs, r.images)?;
    if r.temp_files > 0 {
        writeln!(
            out,
            "{} unfinished writes in tmp/ (prune removes them)",
            r.temp_files
        )?;
    }
    for p in &r.problems {
        writeln!(out, "problem: {p}")?;
    }
    if !r.problems.is_empty() {
        bail!(
            "the store at {} has {} problems",
            store.root().display(),
            r.problems.len()
        );
    }
    Ok(())
}
