//! `cairn manifest`: manifest lists (OCI image indexes) made, edited, shown and pushed from the
//! store, with podman's spellings.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use cairn_layers::attest::{REFERENCE_DIGEST, is_attestation};
use cairn_layers::image::{Descriptor, Index};
use cairn_layers::platform::Platform;
use cairn_layers::registry::{self, Platforms, RegistryOptions, is_index};
use cairn_layers::store::Store;
use cairn_layers::{Reference, deferred};

use super::registry::{options, render_pull, render_push};
use crate::args::{
    EntryArgs, ManifestAddArgs, ManifestAnnotateArgs, ManifestCommand, ManifestCreateArgs,
    ManifestInspectArgs, ManifestPushArgs, ManifestRemoveArgs, ManifestRmArgs,
};

pub fn run(store: &Store, cmd: &ManifestCommand) -> anyhow::Result<()> {
    match cmd {
        ManifestCommand::Create(a) => create(store, a),
        ManifestCommand::Add(a) => add(store, a),
        ManifestCommand::Annotate(a) => annotate(store, a),
        ManifestCommand::Inspect(a) => inspect(store, a),
        ManifestCommand::Push(a) => push(store, a),
        ManifestCommand::Remove(a) => remove(store, a),
        ManifestCommand::Rm(a) => rm(store, a),
        ManifestCommand::Exists(a) => exists(store, a),
    }
}

/// `docker://REF` or a plain reference; other transports are podman's, not cairn's.
fn registry_ref(name: &str) -> anyhow::Result<Reference> {
    let plain = name.strip_prefix("docker://").unwrap_or(name);
    if let Some((transport, _)) = plain.split_once(':')
        && matches!(
            transport,
            "oci"
                | "oci-archive"
                | "docker-archive"
                | "containers-storage"
                | "dir"
                | "docker-daemon"
        )
    {
        bail!("{name}: cairn adds images of its store or of a registry (docker://REF) only");
    }
    Ok(Reference::parse(plain)?)
}

/// The list `name` names in the store: its name and index.
fn list(store: &Store, name: &str) -> anyhow::Result<(Reference, Descriptor, Index)> {
    let (reference, d) = store.resolve(name)?;
    if !is_index(&d.media_type) {
        bail!("{name} is an image, not a manifest list");
    }
    let reference = match reference.or_else(|| Reference::parse(name).ok()) {
        Some(r) if r.digest().is_none() => r,
        _ => bail!("{name}: name the manifest list by its name, not its digest"),
    };
    let index = store.index(&d)?;
    Ok((reference, d, index))
}

/// The platform `entry` asks for, over `base` (the image's own).
fn platform_of(entry: &EntryArgs, base: Option<Platform>) -> anyhow::Result<Option<Platform>> {
    if entry.os.is_none() && entry.arch.is_none() && entry.variant.is_none() {
        return Ok(base);
    }
    let host = Platform::host();
    let base = base.unwrap_or(host);
    let os = entry.os.clone().unwrap_or(base.os);
    let arch = entry.arch.clone().unwrap_or(base.architecture);
    // A new architecture does not keep the old one's variant.
    let variant = entry.variant.clone().or(if entry.arch.is_some() {
        None
    } else {
        base.variant
    });
    let spec = match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    Ok(Some(Platform::parse(&spec).with_context(|| {
        format!("--os/--arch/--variant give {spec:?}")
    })?))
}

fn annotations(entry: &EntryArgs) -> anyhow::Result<BTreeMap<String, String>> {
    entry
        .annotations
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--annotation {a:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// The entries `image` gives a list: one image (the platform asked for, of a list), or with
/// `all` every image of a list. Each carries its platform (from the list, else the config).
fn entries_of(
    store: &Store,
    image: &str,
    all: bool,
    entry: &EntryArgs,
    opts: &RegistryOptions,
    quiet: bool,
) -> anyhow::Result<Vec<Descriptor>> {
    let want = platform_of(entry, None)?.unwrap_or_else(Platform::host);
    let explicit = entry.os.is_some() || entry.arch.is_some() || entry.variant.is_some();
    // One build's index — an image and its attestations, as a push with provenance makes it —
    // stands for that image whatever the platform asked: all of it joins the list, as
    // `buildx imagetools create` takes it.
    let whole = |index: &Index| {
        all || (!explicit
            && index
                .manifests
                .iter()
                .filter(|m| !is_attestation(m))
                .count()
                == 1)
    };
    let from_store = if image.starts_with("docker://") {
        None
    } else {
        match store.resolve(image) {
            Ok((_, d)) => Some(d),
            Err(cairn_layers::Error::ImageNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let found = match from_store {
        Some(d) if is_index(&d.media_type) && whole(&store.index(&d)?) => {
            present_children(store, &d)?
        }
        Some(d) if is_index(&d.media_type) => {
            let mut m = store.image_for(&d, &want)?;
            m.platform = store
                .index(&d)?
                .manifests
                .into_iter()
                .find(|e| e.digest == m.digest)
                .and_then(|e| e.platform);
            vec![m]
        }
        Some(d) => vec![d],
        None => {
            let reference = registry_ref(image)?;
            let mut opts = opts.clone();
            opts.platform = Some(want);
            let one_build = !all
                && !explicit
                && registry::get_manifest(&reference, &opts, &|_| {}).is_ok_and(
                    |(bytes, media_type, _)| {
                        is_index(&media_type)
                            && Index::from_slice(&bytes, "manifest list").is_ok_and(|i| whole(&i))
                    },
                );
            let which = if all || one_build {
                Platforms::All
            } else {
                Platforms::One
            };
            let pulled = registry::fetch(store, &reference, &opts, which, &render_pull(quiet))
                .with_context(|| format!("failed to fetch {}", reference.familiar()))?;
            if which == Platforms::All && is_index(&pulled.top.media_type) {
                // The index's own entries: their platforms and annotations (an
                // attestation's names its image).
                present_children(store, &pulled.top)?
            } else {
                pulled.images
            }
        }
    };
    let mut out = Vec::new();
    for mut d in found {
        // An attestation names its image by digest and has no platform: it joins as it is.
        if is_attestation(&d) {
            out.push(d);
            continue;
        }
        // An image built with deferred compression enters a list as it will be pushed.
        let platform = d.platform.take();
        let mut d = deferred::for_export(store, &d)?;
        let config_platform = Platform::of_config(&store.image(&d)?.config);
        let base = platform.or(Some(config_platform));
        d.platform = platform_of(entry, base)?;
        d.annotations = annotations(entry)?;
        out.push(d);
    }
    Ok(out)
}

/// The entries of the index `d` that the store holds.
fn present_children(store: &Store, d: &Descriptor) -> anyhow::Result<Vec<Descriptor>> {
    Ok(store
        .children(d)?
        .into_iter()
        .filter(|c| c.present)
        .map(|c| c.descriptor)
        .collect())
}

/// `index` with `entries` added, each image replacing an entry of the same platform or digest
/// (and the attestations of the image it replaces); attestations after the images, as
/// BuildKit orders them.
fn with_entries(mut index: Index, entries: Vec<Descriptor>) -> Index {
    for e in entries {
        let replaced: Vec<String> = if is_attestation(&e) {
            Vec::new()
        } else {
            index
                .manifests
                .iter()
                .filter(|m| {
                    !is_attestation(m)
                        && (m.digest == e.digest
                            || matches!((&m.platform, &e.platform), (Some(a), Some(b)) if a.matches(b)))
                })
                .map(|m| m.digest.to_string())
                .collect()
        };
        index.manifests.retain(|m| {
            let about = m.annotations.get(REFERENCE_DIGEST);
            m.digest != e.digest
                && !replaced.contains(&m.digest.to_string())
                && !(is_attestation(m) && about.is_some_and(|d| replaced.contains(d)))
        });
        index.manifests.push(e);
    }
    index.manifests.sort_by_key(is_attestation);
    index
}

fn print_digest(d: &Descriptor) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{}", d.digest)?;
    Ok(())
}

fn create(store: &Store, args: &ManifestCreateArgs) -> anyhow::Result<()> {
    let name = Reference::parse(&args.list)?;
    if name.digest().is_some() {
        bail!("{}: a list is named by a tag, not a digest", args.list);
    }
    let existing = store.tags()?.into_iter().find(|t| t.reference == name);
    let index = match existing {
        Some(_) if !args.amend => bail!(
            "{} exists already: use --amend to add to it, or cairn manifest rm it first",
            name.familiar()
        ),
        Some(t) if !is_index(&t.manifest.media_type) => {
            bail!("{} is an image, not a manifest list", name.familiar())
        }
        Some(t) => store.index(&t.manifest)?,
        None => Index::new(Vec::new()),
    };
    add_images(
        store,
        index,
        &name,
        &args.images,
        args.all,
        &EntryArgs::default(),
        &args.access,
    )
}

fn add(store: &Store, args: &ManifestAddArgs) -> anyhow::Result<()> {
    let (name, _, index) = list(store, &args.list)?;
    add_images(
        store,
        index,
        &name,
        &args.images,
        args.all,
        &args.entry,
        &args.access,
    )
}

/// Adds the entries `images` give (see [`entries_of`]) to `index`, stored under `name`.
fn add_images(
    store: &Store,
    index: Index,
    name: &Reference,
    images: &[String],
    all: bool,
    entry: &EntryArgs,
    access: &crate::args::RegistryAccess,
) -> anyhow::Result<()> {
    let opts = options(&access.registry, access.creds.as_deref(), None)?;
    let mut entries = Vec::new();
    for image in images {
        entries.extend(entries_of(store, image, all, entry, &opts, false)?);
    }
    let d = store.put_index_tagged(&with_entries(index, entries), name)?;
    print_digest(&d)
}

/// The entry of `index` that `image` names: a manifest digest (or unique prefix), or an
/// image of the store.
fn entry_index(store: &Store, index: &Index, image: &str) -> anyhow::Result<usize> {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    let by_digest: Vec<usize> = (0..index.manifests.len())
        .filter(|&i| hex.len() >= 4 && index.manifests[i].digest.hex().starts_with(hex))
        .collect();
    if let [one] = by_digest[..] {
        return Ok(one);
    }
    if let Ok((_, d)) = store.resolve(image)
        && let Some(i) = index.manifests.iter().position(|m| m.digest == d.digest)
    {
        return Ok(i);
    }
    bail!("the list has no entry {image}")
}

fn annotate(store: &Store, args: &ManifestAnnotateArgs) -> anyhow::Result<()> {
    let (name, _, mut index) = list(store, &args.list)?;
    let i = entry_index(store, &index, &args.image)?;
    let e = &mut index.manifests[i];
    e.platform = platform_of(&args.entry, e.platform.clone())?;
    e.annotations.extend(annotations(&args.entry)?);
    let d = store.put_index_tagged(&index, &name)?;
    print_digest(&d)
}

fn remove(store: &Store, args: &ManifestRemoveArgs) -> anyhow::Result<()> {
    let (name, _, mut index) = list(store, &args.list)?;
    let i = entry_index(store, &index, &args.digest)?;
    index.manifests.remove(i);
    let d = store.put_index_tagged(&index, &name)?;
    print_digest(&d)
}

fn inspect(store: &Store, args: &ManifestInspectArgs) -> anyhow::Result<()> {
    let stored = if args.name.starts_with("docker://") {
        None
    } else {
        match store.resolve(&args.name) {
            Ok((_, d)) => Some(store.read_blob(&d.digest)?),
            Err(cairn_layers::Error::ImageNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    let bytes = match stored {
        Some(b) => b,
        None => {
            let reference = registry_ref(&args.name)?;
            let opts = options(&args.access.registry, args.access.creds.as_deref(), None)?;
            registry::get_manifest(&reference, &opts, &|_| {})
                .with_context(|| format!("failed to inspect {}", reference.familiar()))?
                .0
        }
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).context("the manifest is not JSON")?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v)?;
    writeln!(out)?;
    Ok(())
}

fn push(store: &Store, args: &ManifestPushArgs) -> anyhow::Result<()> {
    if !args.all {
        bail!("--all=false: cairn pushes a list with its images");
    }
    let (name, d, _) = list(store, &args.list)?;
    let dest = match &args.dest {
        Some(dest) => registry_ref(dest)?,
        None => name.clone(),
    };
    let opts = options(&args.access.registry, args.access.creds.as_deref(), None)?;
    let digest = registry::push(store, &d, &dest, &opts, &render_push(args.quiet))
        .with_context(|| format!("failed to push {}", dest.familiar()))?;
    if let Some(f) = &args.digestfile {
        std::fs::write(f, digest.as_str())
            .with_context(|| format!("failed to write {}", f.display()))?;
    }
    if args.rm {
        store.untag(&name)?;
    }
    writeln!(std::io::stdout().lock(), "{digest}")?;
    Ok(())
}

fn rm(store: &Store, args: &ManifestRmArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in &args.lists {
        let (name, _, _) = list(store, l)?;
        store.untag(&name)?;
        writeln!(out, "Untagged: {}", name.familiar())?;
    }
    Ok(())
}

fn exists(store: &Store, args: &ManifestRmArgs) -> anyhow::Result<()> {
    for l in &args.lists {
        list(store, l).with_context(|| format!("{l} is no manifest list"))?;
    }
    Ok(())
}
