//! `cairn build`'s flags read into [`BuildOptions`]: everything checked before the build starts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_builder::SECRET_LIMIT;
use cairn_builder::build::{BuildOptions, ImageEdits, NamedContext, Pull, Squash};
use cairn_builder::cache::{CacheExport, CacheImport};
use cairn_builder::sandbox::cgroup::parse_size;
use cairn_builder::sandbox::{Limits, Network, Ulimit};
use cairn_layers::Reference;
use cairn_layers::compress::{Compression, LayerCompression};
use cairn_layers::registry::RegistryOptions;

use crate::args::{BuildArgs, CompatArgs, PullPolicy};
use crate::commands::annotations::Annotations;
use crate::commands::image::source_date_epoch;
use crate::commands::parse::{build_args, read_dockerfile};

/// A build's options, and what must live as long as the build.
pub(crate) struct Parsed {
    pub opts: BuildOptions,
    /// `--annotation`s of every level (the manifests' are in `opts` too).
    pub annotations: Annotations,
    /// The build's registry options (`--tls-verify`, `--creds`, `--retry`, ...), for pushes.
    pub registry: RegistryOptions,
    /// A context read from standard input, unpacked here: removed when dropped.
    pub _stdin_context: Option<tempfile::TempDir>,
    /// The ssh agents cairn started for `--ssh ID=KEY`: stopped when dropped.
    pub _ssh_agents: crate::commands::ssh::Agents,
    /// A git repository given as the context, checked out: removed when dropped.
    pub _git_context: Option<crate::commands::git_context::GitContext>,
}

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

/// `--cache-to`: `type=local,dest=DIR[,mode=min|max]` (a bare DIR too), or `type=inline`;
/// `type=local` and `type=registry` take `mounts=true[,mounts-max-size=SIZE]` for the cache
/// mounts.
fn cache_export(spec: &str) -> anyhow::Result<CacheExport> {
    let (kind, fields, bare) = cache_fields(spec)?;
    let max = match fields.get("mode").map(String::as_str) {
        None | Some("min") => false,
        Some("max") => true,
        Some(other) => bail!("{spec:?}: mode is min or max, not {other:?}"),
    };
    let mounts = cache_mounts(spec, &fields)?;
    match kind.as_str() {
        "local" | "" => {
            check_fields(spec, &fields, &["dest", "mode", MOUNTS, MOUNTS_MAX])?;
            let dir = fields.get("dest").cloned().or(bare);
            let dir = dir.ok_or_else(|| anyhow::anyhow!("{spec:?}: give dest=DIR"))?;
            Ok(CacheExport::Local {
                dir: PathBuf::from(dir),
                max,
                mounts,
            })
        }
        "registry" => {
            check_fields(spec, &fields, &["ref", "mode", MOUNTS, MOUNTS_MAX])?;
            let r = fields.get("ref").cloned().or(bare);
            let r = r.ok_or_else(|| anyhow::anyhow!("{spec:?}: give ref=REF"))?;
            Ok(CacheExport::Registry {
                reference: Reference::parse(&r)?,
                max,
                mounts,
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

const MOUNTS: &str = "mounts";
const MOUNTS_MAX: &str = "mounts-max-size";

/// `mounts=true|false` and `mounts-max-size=SIZE` (`1GiB`, `512m`; bytes without a unit).
fn cache_mounts(
    spec: &str,
    fields: &BTreeMap<String, String>,
) -> anyhow::Result<Option<cairn_builder::cache::MountExport>> {
    let on = match fields.get(MOUNTS).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => bail!("{spec:?}: mounts is true or false, not {other:?}"),
    };
    let max_size = match fields.get(MOUNTS_MAX) {
        None => cairn_builder::cache::DEFAULT_MAX_SIZE,
        Some(_) if !on => bail!("{spec:?}: mounts-max-size needs mounts=true"),
        Some(v) => cairn_builder::sandbox::cgroup::parse_size(v)
            .map_err(|e| anyhow::anyhow!("{spec:?}: mounts-max-size: {e}"))?,
    };
    Ok(on.then_some(cairn_builder::cache::MountExport { max_size }))
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

/// Git sources' limits: `CAIRN_GIT_TIMEOUT` (seconds per git command) and
/// `CAIRN_GIT_MAX_SIZE` (bytes fetched, and bytes checked out).
fn git_limits() -> anyhow::Result<cairn_builder::git::GitLimits> {
    let mut limits = cairn_builder::git::GitLimits::default();
    let read = |var: &str| -> anyhow::Result<Option<u64>> {
        match std::env::var(var) {
            Ok(v) => v
                .trim()
                .parse()
                .map(Some)
                .with_context(|| format!("{var}={v:?}: expected a whole number")),
            Err(_) => Ok(None),
        }
    };
    if let Some(s) = read("CAIRN_GIT_TIMEOUT")? {
        limits.timeout = std::time::Duration::from_secs(s);
    }
    if let Some(b) = read("CAIRN_GIT_MAX_SIZE")? {
        limits.max_bytes = b;
    }
    Ok(limits)
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

/// Reads the flags: every one checked, and the files they name read, before the build starts.
/// `attesting`: attestations put even one platform's image in an index.
pub(crate) fn parse(args: &BuildArgs, attesting: bool) -> anyhow::Result<Parsed> {
    let c = &args.compat;
    let ssh_agents = crate::commands::ssh::Agents::start(&args.ssh)?;
    let platforms = args
        .platform
        .iter()
        .map(|p| crate::commands::registry::parse_platform(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let mut stdin_context = None;
    let git_context = crate::commands::git_context::open(
        &args.context,
        ssh_agents.sockets().get("default").cloned(),
        &git_limits()?,
    )?;
    let git_dockerfile = match &git_context {
        Some(_) if args.file.as_deref() == Some(Path::new("-")) => None,
        Some(g) => Some(g.dockerfile(args.file.as_deref())?),
        None => None,
    };
    let file = git_dockerfile
        .as_ref()
        .map(|(p, _)| p.as_path())
        .or(args.file.as_deref());
    let context: &Path = if let Some(g) = &git_context {
        g.context_dir()
    } else if args.context.as_os_str() == "-" {
        if args.file.as_deref() == Some(Path::new("-")) {
            bail!("the context and the Dockerfile cannot both come from standard input");
        }
        let dir = stdin_context
            .insert(tempfile::tempdir().context("failed to make a temp dir for the context")?);
        cairn_builder::context::context_from_tar(std::io::stdin().lock(), dir.path())?;
        dir.path()
    } else {
        &args.context
    };
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let (mut name, bytes) = read_dockerfile(file, context)?;
    if let Some((_, shown)) = &git_dockerfile {
        // Named as in the repository, not by the checkout's temp path.
        name = shown.clone();
    }
    let dockerfile = cairn_parser::decode(&name, &bytes)?;
    let dockerfile_path = match file {
        Some(p) if p != Path::new("-") => Some(p.to_path_buf()),
        Some(_) => None,
        None => Some(
            context
                .join(&name)
                .canonicalize()
                .unwrap_or_else(|_| PathBuf::from(&name)),
        ),
    };
    let registry_options = registry(args)?;
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
    let annotations = crate::commands::annotations::parse(&c.annotations, &platforms, attesting)?;
    let opts = BuildOptions {
        context_git: git_context
            .as_ref()
            .map(|g| (g.shown.clone(), g.commit.clone())),
        context: context.to_path_buf(),
        dockerfile_name: name,
        dockerfile,
        dockerfile_path,
        target: args.target.clone(),
        platforms: platforms.clone(),
        build_args: all_build_args(args)?,
        labels,
        source_date_epoch: match c.timestamp.or(c.source_date_epoch) {
            Some(t) => Some(t),
            None => source_date_epoch()?,
        },
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
        ssh: ssh_agents.sockets(),
        git: git_limits()?,
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
        pull: match args.pull {
            None | Some(PullPolicy::Missing) => Pull::Missing,
            Some(PullPolicy::Always) => Pull::Always,
            Some(PullPolicy::Never) => Pull::Never,
            Some(PullPolicy::Newer) => Pull::Newer,
        },
        network,
        allow_network_host,
        ignorefile: ignorefile(c)?,
        add_hosts: c
            .add_hosts
            .iter()
            .map(|h| add_host(h))
            .collect::<anyhow::Result<_>>()?,
        edits: edits(c, &annotations)?,
        ulimits: c
            .ulimit
            .iter()
            .map(|u| Ulimit::parse(u).map_err(|e| anyhow::anyhow!("--ulimit {e}")))
            .collect::<anyhow::Result<_>>()?,
        shm_size: c
            .shm_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--shm-size: {e}"))?,
        squash: match (c.squash, c.squash_all) {
            (_, true) => Squash::All,
            (true, false) => Squash::New,
            (false, false) => Squash::No,
        },
    };
    warn_unused_args(&opts);
    Ok(Parsed {
        opts,
        annotations,
        registry: registry_options,
        _stdin_context: stdin_context,
        _ssh_agents: ssh_agents,
        _git_context: git_context,
    })
}

/// The registry options: `--tls-verify` and friends, `--creds`, `--retry`, `--retry-delay`.
fn registry(args: &BuildArgs) -> anyhow::Result<RegistryOptions> {
    let c = &args.compat;
    let mut options = crate::commands::registry::options(&args.registry, c.creds.as_deref(), None)
        .context("--creds")?;
    if let Some(n) = c.retry {
        // podman counts retries; cairn's `attempts` counts the first try too.
        options.retry.attempts = n.saturating_add(1);
    }
    if let Some(d) = &c.retry_delay {
        let nanos = cairn_parser::parse_go_duration(d)
            .map_err(|e| anyhow::anyhow!("--retry-delay: {e}"))?;
        options.retry.backoff = std::time::Duration::from_nanos(nanos);
    }
    Ok(options)
}

/// `--build-arg-file`s' arguments, then `--build-arg`'s, which win.
fn all_build_args(args: &BuildArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for file in &args.compat.build_arg_files {
        out.extend(read_build_arg_file(file)?);
    }
    out.extend(build_args(&args.build_args));
    Ok(out)
}

/// A `--build-arg-file`: `KEY=VALUE` lines (the value verbatim, to the end of the line),
/// blank lines and `#` comments, as podman reads it.
fn read_build_arg_file(file: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--build-arg-file: cannot read {shown}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').with_context(|| {
            format!(
                "--build-arg-file {shown}:{}: {line:?} is not KEY=VALUE",
                i + 1
            )
        })?;
        let k = k.trim_end();
        if k.is_empty() {
            bail!("--build-arg-file {shown}:{}: {line:?} has no name", i + 1);
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// `--ignorefile`, checked here so that a missing file is reported with the flag's name.
fn ignorefile(c: &CompatArgs) -> anyhow::Result<Option<PathBuf>> {
    let Some(f) = &c.ignorefile else {
        return Ok(None);
    };
    std::fs::metadata(f).with_context(|| format!("--ignorefile: cannot read {}", f.display()))?;
    Ok(Some(f.clone()))
}

/// `--add-host HOST:IP` (or docker's `HOST=IP`; an IPv6 address may be in brackets).
fn add_host(spec: &str) -> anyhow::Result<(String, String)> {
    let (host, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .with_context(|| format!("--add-host {spec:?} must be HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        bail!("--add-host {spec:?}: {host:?} is not a host name");
    }
    if ip.parse::<std::net::IpAddr>().is_err() {
        bail!("--add-host {spec:?}: {ip:?} is not an IP address (cairn has no host-gateway)");
    }
    Ok((host.to_owned(), ip.to_owned()))
}

/// The final image's edits: `--env`, `--unsetenv`, `--unsetlabel`, `--omit-history`, and
/// the manifest level of `annotations`.
fn edits(c: &CompatArgs, annotations: &Annotations) -> anyhow::Result<ImageEdits> {
    let mut env = Vec::new();
    for e in &c.env {
        match e.split_once('=') {
            Some(("", _)) => bail!("--env {e:?} has no name"),
            Some((k, v)) => env.push((k.to_owned(), v.to_owned())),
            // buildah's bare KEY: cairn's own value, and nothing when it has none.
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push((e.clone(), v));
                }
            }
        }
    }
    Ok(ImageEdits {
        env,
        unset_env: c.unset_env.clone(),
        unset_labels: c.unset_labels.clone(),
        omit_history: c.omit_history,
        annotations: annotations.manifest.clone(),
        platform_annotations: annotations.manifest_for.clone(),
    })
}

/// Build args BuildKit never reports unused: the proxies, its own settings and the platform
/// args.
fn builtin_arg(name: &str) -> bool {
    const PROXIES: [&str; 5] = [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "all_proxy",
    ];
    PROXIES.contains(&name.to_ascii_lowercase().as_str())
        || name.starts_with("BUILDKIT_")
        || name == "SOURCE_DATE_EPOCH"
        || ["BUILD", "TARGET"].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| ["PLATFORM", "OS", "ARCH", "VARIANT"].contains(&rest))
        })
}

/// BuildKit's warning for `--build-arg`s that no ARG of the stages built (or before the first
/// FROM) declares: a misspelt name would otherwise pass unnoticed. Nothing when the Dockerfile
/// does not parse: the build says why.
fn warn_unused_args(opts: &BuildOptions) {
    use cairn_parser::InstructionKind;
    if opts.build_args.is_empty() {
        return;
    }
    let Ok(df) = cairn_parser::parse(&opts.dockerfile_name, &opts.dockerfile) else {
        return;
    };
    let Ok(graph) = cairn_parser::StageGraph::new(&df, &opts.build_args) else {
        return;
    };
    let Ok(target) = graph.target(&df, opts.target.as_deref()) else {
        return;
    };
    let stages = graph.reachable(target).into_iter().flatten();
    let instructions = df
        .global_args
        .iter()
        .chain(stages.flat_map(|i| df.stages[i].instructions.iter()));
    let mut declared = std::collections::BTreeSet::new();
    for ins in instructions {
        if let InstructionKind::Arg { args } = &ins.kind {
            declared.extend(args.iter().map(|d| d.name.as_str()));
        }
    }
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(k) && !builtin_arg(k))
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            std::io::stderr().lock(),
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_docker_and_podman_spellings() {
        let pair = |h: &str, ip: &str| (h.to_owned(), ip.to_owned());
        assert_eq!(add_host("db:10.0.0.1").unwrap(), pair("db", "10.0.0.1"));
        assert_eq!(add_host("db=10.0.0.1").unwrap(), pair("db", "10.0.0.1"));
        assert_eq!(add_host("v6:fd00::1").unwrap(), pair("v6", "fd00::1"));
        assert_eq!(add_host("v6=[fd00::1]").unwrap(), pair("v6", "fd00::1"));
        assert!(add_host("db").is_err());
        assert!(add_host("db:host-gateway").is_err());
    }

    #[test]
    fn builtin_args_are_never_reported_unused() {
        for name in [
            "HTTP_PROXY",
            "no_proxy",
            "BUILDKIT_INLINE_CACHE",
            "TARGETARCH",
        ] {
            assert!(builtin_arg(name), "{name}");
        }
        for name in ["VERSION", "TARGET", "BUILDER"] {
            assert!(!builtin_arg(name), "{name}");
        }
    }
}
