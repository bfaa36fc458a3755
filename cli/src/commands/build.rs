//! `cairn build`: runs the builder, renders its progress, tags the image and writes outputs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_builder::SECRET_LIMIT;
use cairn_builder::build::{BuildOptions, Event, NamedContext, build};
use cairn_builder::cache::{CacheExport, CacheImport};
use cairn_builder::sandbox::cgroup::parse_size;
use cairn_builder::sandbox::{Limits, Network};
use cairn_layers::compress::{Compression, LayerCompression};
use cairn_layers::{Reference, Store};

use crate::args::BuildArgs;
use crate::commands::image::source_date_epoch;
use crate::commands::parse::{build_args, read_dockerfile};
use crate::commands::{metadata, output};
use crate::progress::{self, Mode};

/// `--memory` and friends as the sandbox's limits.
pub(crate) fn limits(a: &crate::args::LimitArgs) -> anyhow::Result<Limits> {
    Ok(Limits {
        memory: a
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
        cpu_shares: a.cpu_shares,
        cpu_quota: a.cpu_quota,
        cpu_period: a.cpu_period,
        pids: a.pids_limit,
    })
}

/// A `--cache-from` or `--cache-to` spec split into its type and its other fields.
fn cache_fields(spec: &str) -> anyhow::Result<(String, BTreeMap<String, String>, Option<String>)> {
    let (mut kind, mut fields, mut bare) = (None, BTreeMap::new(), None);
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_owned()),
            Some((k, v)) => {
                fields.insert(k.to_owned(), v.to_owned());
            }
            None if bare.is_none() => bare = Some(part.to_owned()),
            None => bail!("{spec:?}: unknown cache option {part:?}"),
        }
    }
    Ok((kind.unwrap_or_default(), fields, bare))
}

fn check_fields(
    spec: &str,
    fields: &BTreeMap<String, String>,
    known: &[&str],
) -> anyhow::Result<()> {
    if let Some(k) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        bail!("{spec:?}: unknown cache option {k:?}");
    }
    Ok(())
}

/// `--cache-from`: `type=local,src=DIR`; a bare value is a cache directory that `--cache-to
/// type=local` wrote, else an image (in the store, or an archive or layout to load) whose
/// inline cache to read.
fn cache_import(spec: &str) -> anyhow::Result<CacheImport> {
    let (kind, fields, bare) = cache_fields(spec)?;
    match kind.as_str() {
        "registry" => {
            check_fields(spec, &fields, &["ref"])?;
            let r = fields.get("ref").cloned().or(bare);
            let r = r.ok_or_else(|| anyhow::anyhow!("{spec:?}: give ref=REF"))?;
            Ok(CacheImport::Registry(Reference::parse(&r)?))
        }
        "local" => {
            check_fields(spec, &fields, &["src"])?;
            let dir = fields.get("src").cloned().or(bare);
            let dir = dir.ok_or_else(|| anyhow::anyhow!("{spec:?}: give src=DIR"))?;
            Ok(CacheImport::Local(PathBuf::from(dir)))
        }
        "" => {
            check_fields(spec, &fields, &[])?;
            let v = bare.ok_or_else(|| anyhow::anyhow!("{spec:?}: name a cache or an image"))?;
            if Path::new(&v).join("index.json").is_file() && cache_layout(Path::new(&v)) {
                Ok(CacheImport::Local(PathBuf::from(v)))
            } else {
                Ok(CacheImport::Image(v))
            }
        }
        other => bail!(
            "{spec:?}: cache type {other} is not supported (use type=local, type=registry, or an image name)"
        ),
    }
}

/// Whether an OCI layout holds a cache that `--cache-to type=local` wrote (rather than images).
fn cache_layout(dir: &Path) -> bool {
    let blob =
        |d: &cairn_layers::Digest| std::fs::read(dir.join("blobs/sha256").join(d.hex())).ok();
    std::fs::read(dir.join("index.json"))
        .ok()
        .and_then(|b| cairn_layers::image::Index::from_slice(&b, "index.json").ok())
        .and_then(|index| blob(&index.manifests.first()?.digest))
        .and_then(|b| cairn_layers::image::Manifest::from_slice(&b, "manifest").ok())
        .is_some_and(|m| m.config.media_type == cairn_builder::cache::CACHE_CONFIG)
}

/// `--cache-to`: `type=local,dest=DIR[,mode=min|max]` (a bare DIR too), or `type=inline`.
fn cache_export(spec: &str) -> anyhow::Result<CacheExport> {
    let (kind, fields, bare) = cache_fields(spec)?;
    let max = match fields.get("mode").map(String::as_str) {
        None | Some("min") => false,
        Some("max") => true,
        Some(other) => bail!("{spec:?}: mode is min or max, not {other:?}"),
    };
    match kind.as_str() {
        "local" | "" => {
            check_fields(spec, &fields, &["dest", "mode"])?;
            let dir = fields.get("dest").cloned().or(bare);
            let dir = dir.ok_or_else(|| anyhow::anyhow!("{spec:?}: give dest=DIR"))?;
            Ok(CacheExport::Local {
                dir: PathBuf::from(dir),
                max,
            })
        }
        "registry" => {
            check_fields(spec, &fields, &["ref", "mode"])?;
            let r = fields.get("ref").cloned().or(bare);
            let r = r.ok_or_else(|| anyhow::anyhow!("{spec:?}: give ref=REF"))?;
            Ok(CacheExport::Registry {
                reference: Reference::parse(&r)?,
                max,
            })
        }
        "inline" => {
            check_fields(spec, &fields, &["mode"])?;
            if max {
                bail!("{spec:?}: an inline cache holds the target stage only (mode=min)");
            }
            Ok(CacheExport::Inline)
        }
        other => bail!(
            "{spec:?}: cache type {other} is not supported (use type=local, type=registry or type=inline)"
        ),
    }
}

/// A secret's source file: a regular file (a FIFO would block the build before it starts, a
/// device like `/dev/zero` never ends) of at most [`SECRET_LIMIT`] bytes.
fn read_secret(id: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    use rustix::fs::{FileType, Mode, OFlags};
    let shown = path.display();
    let check = |st: &rustix::fs::Stat| -> anyhow::Result<u64> {
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            bail!(
                "--secret {id}: {shown} is {}; a secret must be a regular file",
                cairn_layers::layout::kind_name(kind)
            );
        }
        let size = st.st_size as u64;
        if size > SECRET_LIMIT {
            bail!(
                "--secret {id}: {shown} is {size} bytes, more than the {SECRET_LIMIT} bytes a secret may have"
            );
        }
        Ok(size)
    };
    // Looked at before it is opened: opening a FIFO blocks, opening a device may act.
    check(&rustix::fs::stat(path).with_context(|| format!("--secret {id}: cannot read {shown}"))?)?;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("--secret {id}: cannot read {shown}"))?;
    // It may have been replaced between the look and the open.
    check(&rustix::fs::fstat(&fd).with_context(|| format!("--secret {id}: cannot read {shown}"))?)?;
    let mut value = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), SECRET_LIMIT + 1),
        &mut value,
    )
    .with_context(|| format!("--secret {id}: cannot read {shown}"))?;
    if value.len() as u64 > SECRET_LIMIT {
        bail!("--secret {id}: {shown} grew past the {SECRET_LIMIT} bytes a secret may have");
    }
    Ok(value)
}

/// `--secret id=X,src=FILE|env=VAR` (docker's `type=file` and `source=` spellings too).
fn secrets(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (mut id, mut src, mut env) = (None, None, None);
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {spec:?}: unknown field {field:?}"),
            }
        }
        let id = id
            .or_else(|| env.clone())
            .with_context(|| format!("--secret {spec:?} needs id=ID"))?;
        let value = match (src, env) {
            (Some(f), _) => read_secret(&id, &f)?,
            (None, Some(var)) => std::env::var(&var)
                .with_context(|| format!("--secret {id}: environment variable {var} is not set"))?
                .into_bytes(),
            (None, None) => match std::env::var(&id) {
                Ok(v) => v.into_bytes(),
                Err(_) => bail!("--secret {spec:?} needs src=FILE or env=VAR"),
            },
        };
        if value.len() as u64 > SECRET_LIMIT {
            bail!(
                "--secret {id}: {} bytes, more than the {SECRET_LIMIT} bytes a secret may have",
                value.len()
            );
        }
        out.insert(id, value);
    }
    Ok(out)
}

pub fn run(store: &Store, args: &BuildArgs) -> anyhow::Result<()> {
    if let Some(spec) = args.ssh.first() {
        bail!("--ssh {spec}: not supported: cairn cannot forward SSH agents or keys to RUN");
    }
    let platforms = args
        .platform
        .iter()
        .map(|p| crate::commands::registry::parse_platform(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = output::parse_outputs(&args.outputs, args.quiet)?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?} must be KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    let mut contexts = BTreeMap::new();
    for c in &args.build_contexts {
        let (name, spec) = c.split_once('=').with_context(|| {
            format!("--build-context {c:?} must be NAME=DIR or NAME=oci-layout://DIR[:TAG]")
        })?;
        contexts.insert(name.to_owned(), NamedContext::parse(spec));
    }
    // A context on standard input is unpacked into a temp dir first.
    let stdin_context;
    let context: &Path = if args.context.as_os_str() == "-" {
        if args.file.as_deref() == Some(Path::new("-")) {
            bail!("the context and the Dockerfile cannot both come from standard input");
        }
        stdin_context = tempfile::tempdir().context("failed to make a temp dir for the context")?;
        cairn_builder::context::context_from_tar(std::io::stdin().lock(), stdin_context.path())?;
        stdin_context.path()
    } else {
        &args.context
    };
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let (name, bytes) = read_dockerfile(args.file.as_deref(), context)?;
    let dockerfile = cairn_parser::decode(&name, &bytes)?;
    let dockerfile_path = match args.file.as_deref() {
        Some(p) if p != Path::new("-") => Some(p.to_path_buf()),
        Some(_) => None,
        None => Some(
            context
                .join(&name)
                .canonicalize()
                .unwrap_or_else(|_| PathBuf::from(&name)),
        ),
    };
    let registry_options = crate::commands::registry::options(&args.registry, None, None)?;
    if args.push && tags.is_empty() {
        bail!("--push needs a name to push: give -t REGISTRY/REPOSITORY[:TAG]");
    }
    let mut allow_network_host = false;
    for a in &args.allow {
        match a.as_str() {
            "network.host" => allow_network_host = true,
            other => bail!("--allow {other:?}: unknown entitlement (cairn knows network.host)"),
        }
    }
    let network = match args.network.as_deref() {
        None | Some("default" | "bridge" | "private") => Network::Private,
        Some("none") => Network::None,
        Some("host") if allow_network_host => Network::Host,
        Some("host") => {
            bail!("--network host needs the network.host entitlement: add --allow network.host")
        }
        Some(other) => bail!("--network {other:?}: expected default, none or host"),
    };
    let opts = BuildOptions {
        context: context.to_path_buf(),
        dockerfile_name: name,
        dockerfile,
        dockerfile_path,
        target: args.target.clone(),
        platforms,
        build_args: build_args(&args.build_args),
        labels,
        source_date_epoch: source_date_epoch()?,
        compression: compression(&args.compression_format, args.compression_level)?,
        // Layers are compressed as they are written only when a compression is asked for.
        defer_compression: args.compression_format.is_none() && args.compression_level.is_none(),
        contexts,
        helper: std::env::current_exe().ok(),
        snapshotter: args
            .snapshotter
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--snapshotter: {e}"))?,
        isolation: args.isolation.parse()?,
        limits: limits(&args.limits)?,
        secrets: secrets(&args.secrets)?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        cache_from: args
            .cache_from
            .iter()
            .map(|s| cache_import(s))
            .collect::<anyhow::Result<_>>()?,
        cache_to: args
            .cache_to
            .iter()
            .map(|s| cache_export(s))
            .collect::<anyhow::Result<_>>()?,
        registry: Some(registry_options.clone()),
        pull: args.pull,
        network,
        allow_network_host,
    };
    let requested = progress::requested(args.progress, |v| std::env::var(v).ok())?;
    let mode = progress::choose(requested, args.quiet, std::io::stderr().is_terminal());
    let rawjson = std::sync::Arc::new(crate::rawjson::RawJson::default());
    let plain = std::sync::Arc::new(progress::Plain::default());
    let render: Box<dyn FnMut(Event) + Send> = match mode {
        Mode::Tty => {
            let tty = progress::Tty::stderr();
            Box::new(move |e| tty.event(e))
        }
        Mode::Plain => {
            let p = plain.clone();
            Box::new(move |e| p.event(e))
        }
        Mode::RawJson => {
            let r = rawjson.clone();
            Box::new(move |e| r.event(e))
        }
        // Quiet still says where the time went when asked: the lines are on stderr.
        Mode::Quiet => Box::new(|e| {
            if let Event::Timing { id, phase, seconds } = e {
                eprintln!("{}", progress::timing_line(id, phase, seconds));
            }
        }),
    };
    // Stages of one wave report from their own threads; events reach the renderer one at a time.
    let render = std::sync::Mutex::new(render);
    let timings = args.debug_timings;
    let tally = metadata::Tally::default();
    let built = build(store, &opts, &|e| {
        tally.see(&e);
        // Timings are shown only when asked for.
        if (timings || !matches!(e, Event::Timing { .. }))
            && let Ok(mut r) = render.lock()
        {
            r(e);
        }
    });
    // Dropping the renderer settles the live bars before the error or the summary is printed.
    drop(render);
    match (mode, &built) {
        (Mode::RawJson, Err(e)) => rawjson.finish(&e.to_string()),
        (Mode::Plain, Err(e)) => plain.fail(&e.to_string()),
        _ => {}
    }
    let built = built?;
    finish(
        store,
        args,
        &opts,
        built,
        &tags,
        &outputs,
        &registry_options,
        mode,
        &tally,
    )
}

/// After the build: names the result, writes the outputs, pushes, and reports the image.
#[allow(clippy::too_many_arguments)]
fn finish(
    store: &Store,
    args: &BuildArgs,
    opts: &BuildOptions,
    built: Vec<cairn_builder::build::Built>,
    tags: &[Reference],
    outputs: &[output::Output],
    registry_options: &cairn_layers::registry::RegistryOptions,
    mode: Mode,
    tally: &metadata::Tally,
) -> anyhow::Result<()> {
    // Push progress is plain text on stderr: kept out of a machine-read rawjson stream.
    let quiet = matches!(mode, Mode::Quiet | Mode::RawJson);
    let (result, id) = match built.as_slice() {
        [one] => (
            one.manifest.clone(),
            store.image(&one.manifest)?.id().clone(),
        ),
        // Several platforms: an image index of their images, whose digest is the ID (as in
        // docker's containerd image store).
        many => {
            let manifests = many
                .iter()
                .map(|b| cairn_layers::image::Descriptor {
                    platform: Some(b.platform.clone()),
                    ..b.manifest.clone()
                })
                .collect();
            let index = store.put_index(&cairn_layers::image::Index::new(manifests))?;
            let id = index.digest.clone();
            (index, id)
        }
    };
    for t in tags {
        store.tag(t, &result)?;
    }
    if tags.is_empty() && outputs.is_empty() {
        // docker's build without -t leaves a dangling image that its ID names: kept so, it
        // is listed, usable by ID (`cairn run $(cairn build -q .)`) and not pruned by a
        // build's housekeeping.
        store.keep_untagged(&result)?;
    }
    let mut pushed = None;
    for o in outputs {
        if let Some(p) = output::write_output(
            store,
            o,
            &built,
            &result,
            tags,
            opts,
            registry_options,
            quiet,
        )? {
            pushed = Some(p);
        }
    }
    if args.push {
        // The image a registry gets, its layers compressed as they leave the store: made once
        // for every name, and what the metadata reports.
        let exported = cairn_layers::deferred::for_export(store, &result)?;
        for t in tags {
            pushed = Some(output::push(store, &exported, t, registry_options, quiet)?);
        }
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, id.as_str())
            .with_context(|| format!("failed to write {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let value = metadata::metadata(
            store,
            &result,
            pushed.as_ref(),
            built.len() == 1,
            tags,
            tally,
        )?;
        metadata::write(f, &value)?;
    }
    match mode {
        // An output on standard output has it: the ID would corrupt the stream.
        Mode::Quiet if !outputs.iter().any(output::Output::to_stdout) => {
            writeln!(std::io::stdout().lock(), "{id}")?;
        }
        // Standard error carries only JSON lines.
        Mode::Quiet | Mode::RawJson => {}
        Mode::Tty | Mode::Plain => {
            let mut err = std::io::stderr().lock();
            writeln!(err, "writing image {id} done")?;
            for t in tags {
                writeln!(err, "naming to {t} done")?;
            }
        }
    }
    Ok(())
}

/// `--compression-format` and `--compression-level`, checked against what the format accepts.
fn compression(format: &Option<String>, level: Option<i32>) -> anyhow::Result<LayerCompression> {
    let format = format.as_deref().unwrap_or("gzip");
    let c = match format {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "uncompressed" | "none" => Compression::None,
        other => bail!("--compression-format {other:?}: use gzip, zstd or uncompressed"),
    };
    if let Some(l) = level {
        let range = LayerCompression::level_range(c);
        if !range.contains(&l) {
            bail!(
                "--compression-level {l}: {format} takes {} to {}",
                range.start(),
                range.end()
            );
        }
    }
    Ok(LayerCompression::new(c, level))
}
