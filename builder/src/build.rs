//! The build: stages in dependency order, each instruction applied to its stage's config and
//! filesystem, COPY/ADD layers written to the store, the target stage's image stored.
//!
//! Each stage keeps a flattened copy of its filesystem in a private work directory (the copy
//! snapshotter's view), used to decide COPY destinations, to look up `--chown` names and as
//! the source of `COPY --from`. The work directory goes away when the build ends, whatever way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_layers::apply::{ApplyOptions, Whiteouts, apply_layer};
use cairn_layers::compress::{self, Compression, LayerCompression};
use cairn_layers::image::{Descriptor, History, ImageConfig, timestamp};
use cairn_layers::layer::{write_layer, write_layer_reusing};
use cairn_layers::listing::DirMeta;
use cairn_layers::{IdMap, Store};
use cairn_parser::expand::Lexer;
use cairn_parser::instruction::{ArgDef, Instruction, InstructionKind, Source};
use cairn_parser::{Dockerfile, ErrorKind, ParseError, Span, StageGraph};

use crate::context::BuildContext;
use crate::copy::{CopyRequest, CopySource, SourceRoot, plan_copy};
use crate::error::{Error, Result};
use crate::history::MetaLine;
use crate::meta::{self, MetaState};
use crate::sandbox::{Limits, Sandbox, Snapshotter};
use crate::users;

pub use crate::progress::Event;

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile's name for messages, its text, and its path (for `<name>.dockerignore`).
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub dockerfile_path: Option<PathBuf>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// `--label`: added to the final image.
    pub labels: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH: the image's creation time, and a clamp on file times in new layers.
    pub source_date_epoch: Option<i64>,
    /// How new layers are compressed (`--compression-format`, `--compression-level`).
    pub compression: LayerCompression,
    /// `--build-context NAME=...`: named contexts that FROM and COPY --from may use.
    pub contexts: BTreeMap<String, NamedContext>,
    /// The RUN sandbox: the cairn binary to re-execute as its helper (no RUN without one),
    /// the snapshotter and the resource limits.
    pub helper: Option<PathBuf>,
    pub snapshotter: Snapshotter,
    pub limits: Limits,
    /// `--secret id=...`: secret id → its bytes, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--no-cache`: run every step; `--no-cache-filter STAGE`: run every step of these
    /// stages (by name or index). Results are recorded either way.
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    /// `--cache-from`: caches to read records and layers from.
    pub cache_from: Vec<crate::cache::CacheImport>,
    /// `--cache-to`: where to write this build's records.
    pub cache_to: Vec<crate::cache::CacheExport>,
    /// How to reach registries, for images the store lacks (FROM, COPY --from, RUN --mount
    /// from=) and registry caches; `None`: the store only.
    pub registry: Option<cairn_layers::registry::RegistryOptions>,
    /// `--pull`: check a named image's registry even when the store has it.
    pub pull: bool,
    /// `--network`: RUN's network where the Dockerfile leaves it at `default`.
    pub network: crate::sandbox::Network,
    /// `--allow network.host`: RUN may use the host's network.
    pub allow_network_host: bool,
}

/// A named build context: a directory (COPY --from reads it with its own .dockerignore; FROM
/// makes an image of it) or an image in an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Dir(PathBuf),
    OciLayout { dir: PathBuf, tag: Option<String> },
}

impl NamedContext {
    /// `oci-layout://DIR[:TAG]`, or a directory path.
    pub fn parse(spec: &str) -> NamedContext {
        match spec.strip_prefix("oci-layout://") {
            Some(rest) => {
                // A `:TAG` after the last `/`; a colon earlier belongs to the path.
                let (dir, tag) = match rest.rsplit_once(':') {
                    Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_owned())),
                    _ => (rest, None),
                };
                NamedContext::OciLayout {
                    dir: PathBuf::from(dir),
                    tag,
                }
            }
            None => NamedContext::Dir(PathBuf::from(spec)),
        }
    }
}

/// The built image.
#[derive(Debug)]
pub struct Built {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    /// The target stage's filesystem, until the build value is dropped; see [`Built::rootfs`].
    rootfs: PathBuf,
    /// Layers not yet applied to `rootfs`.
    pending: std::sync::Mutex<Vec<Descriptor>>,
    _work: std::sync::Arc<WorkDir>,
}

impl Built {
    /// The target stage's complete filesystem (applying its last layers now if needed).
    pub fn rootfs(&self, store: &Store) -> Result<&Path> {
        let mut pending = self.pending.lock().map_err(|_| Error::Instruction {
            instruction: "build".into(),
            message: "the build's state was poisoned by a panic".into(),
        })?;
        if !pending.is_empty() {
            unpack_layers(store, &pending, &self.rootfs)?;
            pending.clear();
        }
        Ok(&self.rootfs)
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = make_writable_and_remove(&self.0);
    }
}

fn make_writable_and_remove(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(path).into_iter().flatten() {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::remove_dir_all(path)
}

/// One stage's state while it is built.
pub(crate) struct StageState {
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Descriptor>,
    pub(crate) rootfs: PathBuf,
    /// Layers this stage made that are not yet applied to `rootfs`: applying is deferred until
    /// a step reads file contents, so no COPY is written to disk twice for nothing.
    pub(crate) pending: Vec<Descriptor>,
    /// The stage's directories and symlinks, which is all COPY's destination rules need:
    /// nothing is unpacked for them.
    pub(crate) view: StageView,
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) meta: MetaState,
    /// The cache key of the last step, and whether every step so far came from the cache.
    pub(crate) key: crate::cache::Key,
    pub(crate) all_hits: bool,
    /// `--no-cache` or `--no-cache-filter` names this stage.
    pub(crate) no_cache: bool,
    /// Where the current step is (Dockerfile, stage, step), to explain a miss by what changed
    /// since the step last ran.
    pub(crate) position: String,
    /// The stage's index in the Dockerfile.
    pub(crate) index: usize,
}

impl StageState {
    /// Brings `rootfs` up to date with every layer of the stage.
    pub(crate) fn settle(&mut self, store: &Store) -> Result<()> {
        if !self.pending.is_empty() {
            unpack_layers(store, &self.pending, &self.rootfs)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Brings `rootfs` up to date at `prefixes` only (see `apply_layer_under`); true when
    /// that is what happened, false when it had to apply everything after all.
    pub(crate) fn settle_under(&mut self, store: &Store, prefixes: &[String]) -> Result<bool> {
        let opts = view_apply_options();
        let mut partial = true;
        for l in &self.pending {
            let c = Compression::from_media_type(&l.media_type)
                .ok_or_else(|| cairn_layers::Error::MediaType(l.media_type.clone()))?;
            let plain = compress::decompress(store.open_blob(&l.digest)?, c)?;
            if cairn_layers::apply::apply_layer_under(plain, &self.rootfs, &opts, prefixes)?
                .is_none()
            {
                partial = false;
                break;
            }
        }
        if !partial {
            unpack_layers(store, &self.pending, &self.rootfs)?;
        }
        self.pending.clear();
        Ok(partial)
    }
}

/// The paths (relative, cleaned) that the COPY --from instructions behind `readers` name, up
/// to their first wildcard; None when one cannot be known before it runs (a variable, a RUN
/// mount, a wildcard at the top) or names the whole filesystem.
fn copy_prefixes(df: &Dockerfile, readers: &[&cairn_parser::Edge]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for e in readers {
        if e.kind != cairn_parser::EdgeKind::CopyFrom {
            return None;
        }
        let ins = df
            .stages
            .get(e.stage)?
            .instructions
            .iter()
            .find(|i| i.span == e.span)?;
        let InstructionKind::Copy(c) = &ins.kind else {
            return None;
        };
        for src in &c.sources {
            let cairn_parser::instruction::Source::Path(p) = src else {
                return None;
            };
            if p.contains('$') {
                return None;
            }
            let plain: Vec<&str> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .take_while(|c| !c.contains(['*', '?', '[', '\\']))
                .collect();
            if plain.is_empty() || plain.contains(&"..") {
                return None;
            }
            out.push(plain.join("/"));
        }
    }
    Some(out)
}

/// Whether every source of a COPY lies under one of the paths a stage was settled at.
pub(crate) fn covered(partial: &[String], sources: &[String]) -> bool {
    sources.iter().all(|s| {
        let parts: Vec<&str> = s
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        !parts.contains(&"..")
            && partial.iter().any(|p| {
                let p: Vec<&str> = p.split('/').collect();
                parts.len() >= p.len() && parts[..p.len()] == p[..]
            })
    })
}

/// The built form of a finished stage, for FROM and COPY --from.
#[derive(Clone)]
pub(crate) struct StageResult {
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<Descriptor>,
    pub(crate) rootfs: PathBuf,
    pub(crate) pending: Vec<Descriptor>,
    /// `rootfs` is complete only at these paths (the ones the build's COPY --from name).
    pub(crate) partial: Option<Vec<String>>,
    pub(crate) key: crate::cache::Key,
    pub(crate) all_hits: bool,
    /// The stage's build args and their state, which `FROM <stage>` starts from.
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) meta: MetaState,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Where an instruction's error points: its span in the Dockerfile, with the caret.
pub(crate) fn at(
    opts: &BuildOptions,
    span: Span,
    instruction: &str,
    message: impl Into<String>,
) -> Error {
    let e = ParseError {
        kind: Box::new(ErrorKind::Instruction {
            instruction: instruction.to_owned(),
            message: message.into(),
        }),
        file: String::new(),
        span,
        line_text: String::new(),
    };
    Error::Parse(e.with_source(&opts.dockerfile_name, &opts.dockerfile))
}

/// The build args BuildKit defines for every build (TARGETPLATFORM and friends).
fn platform_args() -> BTreeMap<String, String> {
    let arch = cairn_layers::image::host_architecture();
    let platform = format!("linux/{arch}");
    [
        ("BUILDPLATFORM", platform.as_str()),
        ("BUILDOS", "linux"),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", platform.as_str()),
        ("TARGETOS", "linux"),
        ("TARGETARCH", arch),
        ("TARGETVARIANT", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The directories and symlinks of a stage's image, put together from its layers' tar
/// headers and the directories its COPY layers add, when a step first asks.
#[derive(Debug, Default)]
pub(crate) struct StageView {
    tree: cairn_layers::listing::TreeView,
    todo: Vec<ViewPart>,
}

#[derive(Debug)]
enum ViewPart {
    Dirs(Vec<(String, DirMeta)>),
    Layer(Descriptor),
}

impl StageView {
    /// A layer whose entries the view takes from its tar headers.
    pub(crate) fn add_layer(&mut self, layer: &Descriptor) {
        self.todo.push(ViewPart::Layer(layer.clone()));
    }

    /// The directories a layer adds, known without reading it.
    pub(crate) fn add_dirs(&mut self, dirs: impl IntoIterator<Item = (String, DirMeta)>) {
        self.todo.push(ViewPart::Dirs(dirs.into_iter().collect()));
    }

    /// The view with every layer so far in it.
    pub(crate) fn tree(
        &mut self,
        cache: &crate::cache::Cache,
        store: &Store,
    ) -> Result<&cairn_layers::listing::TreeView> {
        for part in std::mem::take(&mut self.todo) {
            match part {
                ViewPart::Dirs(dirs) => dirs.iter().for_each(|(d, m)| self.tree.add_dir(d, *m)),
                ViewPart::Layer(l) => self.tree.apply(&cache.layer_listing(store, &l)?),
            }
        }
        Ok(&self.tree)
    }
}

/// Applies an image's layers, in order, onto `dir`.
pub(crate) fn unpack_layers(store: &Store, layers: &[Descriptor], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let opts = view_apply_options();
    for l in layers {
        let c = Compression::from_media_type(&l.media_type)
            .ok_or_else(|| cairn_layers::Error::MediaType(l.media_type.clone()))?;
        let plain = compress::decompress(store.open_blob(&l.digest)?, c)?;
        apply_layer(plain, dir, &opts)?;
    }
    Ok(())
}

fn view_apply_options() -> ApplyOptions {
    ApplyOptions {
        whiteouts: Whiteouts::Apply,
        id_map: IdMap::identity(),
        // Owners matter in the layers, which carry them in their headers; this view is only
        // read, so a rootless build keeps its own uid here.
        chown: is_root(),
    }
}

/// Runs a build and returns the target stage's image, stored (not tagged).
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<Built> {
    /// However the build ends, the layer blobs it wrote are committed (or removed) before it
    /// returns: none is left half-done in the store's scratch space.
    struct Commits<'a>(&'a Store);
    impl Drop for Commits<'_> {
        fn drop(&mut self) {
            let _ = self.0.wait_blobs();
        }
    }
    let _commits = Commits(store);
    let df: Dockerfile = cairn_parser::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut args = platform_args();
    args.extend(opts.build_args.clone());
    let graph = StageGraph::new(&df, &args)
        .map_err(|e| e.with_source(&opts.dockerfile_name, &opts.dockerfile))?;
    let target = graph
        .target(&df, opts.target.as_deref())
        .map_err(|e| Error::Instruction {
            instruction: "--target".into(),
            message: e.kind.to_string(),
        })?;
    let context = BuildContext::open(&opts.context, opts.dockerfile_path.as_deref())?;
    let _writing = store.writing()?;
    // What builds killed outright (SIGKILL, power loss) left: scratch files and directories
    // (up to a whole layer each) and step cgroups, of processes that are gone. Best effort:
    // what cannot go now is tried again by the next build, and by prune.
    let _ = store.remove_stale();
    crate::sandbox::cgroup::remove_stale();
    let work_path = store.temp_path("build");
    std::fs::create_dir_all(&work_path).map_err(|source| Error::Io {
        action: "create",
        path: work_path.clone(),
        source,
    })?;
    let work = std::sync::Arc::new(WorkDir(work_path));

    // The global ARGs, for FROM lines and for stages that declare them again.
    let lexer = Lexer::new(df.directives.escape);
    let mut globals = platform_args();
    for arg in &df.global_args {
        if let InstructionKind::Arg { args: defs } = &arg.kind {
            declare(
                &mut globals,
                defs,
                &BTreeMap::new(),
                &opts.build_args,
                &lexer,
            )
            .map_err(|m| at(opts, arg.span, "ARG", m))?;
        }
    }

    let epoch = opts.source_date_epoch;
    let next_id = AtomicUsize::new(0);
    let sandbox = std::sync::OnceLock::new();
    let mut results: BTreeMap<usize, StageResult> = BTreeMap::new();
    let cache = crate::cache::Cache::open(store);
    cache.watch(context.root());
    let pulled = std::sync::Mutex::new(BTreeMap::new());
    for src in &opts.cache_from {
        use crate::cache::CacheImport;
        match src {
            CacheImport::Local(dir) => cache.import(store, dir)?,
            CacheImport::Registry(reference) => {
                let Some(registry) = &opts.registry else {
                    return Err(Error::Instruction {
                        instruction: "--cache-from".into(),
                        message: format!("{reference}: no registry access in this build"),
                    });
                };
                if !crate::cache::import_registry(store, &cache, reference, registry, progress)? {
                    progress(Event::Warning(format!(
                        "--cache-from {}: no cache there yet",
                        reference.familiar()
                    )));
                }
            }
            CacheImport::Image(name) => {
                if !import_image_cache(store, &cache, name)? {
                    // A CI run's first build has no cache yet: that is no reason to fail.
                    progress(Event::Warning(format!(
                        "--cache-from {name}: no such image, or it has no inline cache"
                    )));
                }
            }
        }
    }
    let waves = graph.reachable(target);
    let building: std::collections::BTreeSet<usize> = waves.iter().flatten().copied().collect();
    // Stages of one wave need nothing from each other: they run in parallel.
    for wave in waves {
        let finished: Vec<(usize, Result<StageResult>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&index| {
                    let cx = Ctx {
                        store,
                        opts,
                        context: &context,
                        df: &df,
                        globals: &globals,
                        results: &results,
                        lexer: &lexer,
                        epoch,
                        sandbox: &sandbox,
                        progress,
                        building: &building,
                        target,
                        cache: &cache,
                        pulled: &pulled,
                    };
                    let (graph, work, next_id) = (&graph, &work, &next_id);
                    scope.spawn(move || {
                        (
                            index,
                            build_stage(&cx, graph, &work.0, index, next_id, progress),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (
                            usize::MAX,
                            Err(Error::Instruction {
                                instruction: "build".into(),
                                message: "a stage's thread panicked".into(),
                            }),
                        )
                    })
                })
                .collect()
        });
        for (index, result) in finished {
            results.insert(index, result?);
        }
    }

    let result = results.remove(&target).ok_or_else(|| Error::Instruction {
        instruction: "build".into(),
        message: "the target stage was not built".into(),
    })?;
    let mut config = result.config;
    config.config.labels.extend(opts.labels.clone());
    // Every step a hit: the image the same steps made before, so its ID is the same too.
    let mut image_key = crate::cache::KeyHasher::new("IMAGE", &result.key);
    // The steps' keys leave metadata out, so the image's covers the config it ends with: its
    // settings (labels included), author, and what each history entry says.
    image_key.field(
        "config",
        serde_json::to_vec(&config.config).unwrap_or_default(),
    );
    image_key.field("author", config.author.as_deref().unwrap_or(""));
    for h in &config.history {
        image_key.field("history", h.created_by.as_deref().unwrap_or(""));
        image_key.field("empty", h.empty_layer.to_string());
    }
    image_key.field("epoch", format!("{epoch:?}"));
    let inline = opts.cache_to.contains(&crate::cache::CacheExport::Inline);
    image_key.field("inline", inline.to_string());
    let image_key = image_key.finish();
    let all_hits = results.values().all(|r| r.all_hits) && result.all_hits;
    let reused = all_hits
        .then(|| cache.get_image(store, &image_key))
        .flatten();
    let (manifest, config) = match reused {
        Some((manifest, config)) => (manifest, config),
        None => {
            config.created = Some(timestamp(epoch));
            // A base image's cache describes how the base was built, not this image.
            config.extra.remove(crate::cache::INLINE_FIELD);
            config.extra.remove("moby.buildkit.cache.v0");
            if inline {
                config.extra.insert(
                    crate::cache::INLINE_FIELD.into(),
                    cache.inline(target, &image_key),
                );
            }
            let manifest = store.put_image(&config, result.layers)?;
            cache.put_image(&image_key, &manifest)?;
            (manifest, config)
        }
    };
    cache.save()?;
    for dest in &opts.cache_to {
        match dest {
            crate::cache::CacheExport::Local { dir, max } => {
                cache.export(store, dir, *max, target)?;
            }
            crate::cache::CacheExport::Registry { reference, max } => {
                let registry = opts.registry.as_ref().ok_or_else(|| Error::Instruction {
                    instruction: "--cache-to".into(),
                    message: format!("{reference}: no registry access in this build"),
                })?;
                let manifest = cache.export_to_store(store, *max, target)?;
                cairn_layers::registry::push(store, &manifest, reference, registry, &|_| {})
                    .map_err(|e| Error::Instruction {
                        instruction: "--cache-to".into(),
                        message: format!("pushing the cache to {}: {e}", reference.familiar()),
                    })?;
            }
            crate::cache::CacheExport::Inline => {}
        }
    }
    Ok(Built {
        manifest,
        config,
        rootfs: result.rootfs,
        pending: std::sync::Mutex::new(result.pending),
        _work: work,
    })
}

/// Imports the inline cache of `name`: an image in the store, else an archive or layout to
/// load (untagged). Returns whether any image had one.
fn import_image_cache(store: &Store, cache: &crate::cache::Cache, name: &str) -> Result<bool> {
    let path = Path::new(name);
    let manifests = if path.exists() {
        cairn_layers::archive::load_untagged(store, path)?
    } else {
        match store.resolve(name) {
            Ok((_, manifest)) => vec![manifest],
            Err(
                cairn_layers::Error::ImageNotFound(_)
                | cairn_layers::Error::InvalidReference { .. },
            ) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut any = false;
    for m in &manifests {
        any |= cache.import_image(store, m)?;
    }
    Ok(any)
}

/// Builds one stage, whose needs are all in `cx.results`.
fn build_stage(
    cx: &Ctx<'_>,
    graph: &StageGraph,
    work: &Path,
    index: usize,
    next_id: &AtomicUsize,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<StageResult> {
    let Ctx {
        store,
        opts,
        df,
        results,
        epoch,
        ..
    } = *cx;
    let stage = &df.stages[index];
    let stage_name = stage.display_name();
    let rootfs = work.join(format!("stage-{index}"));
    let step_id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let started = Instant::now();
    progress(Event::Step {
        id: step_id,
        stage: stage_name.clone(),
        index: 1,
        total: stage.instructions.len() + 1,
        text: stage.original.clone(),
    });
    let base = &graph.bases[index];
    let from_stage = graph
        .edges
        .iter()
        .find(|e| e.stage == index && e.kind == cairn_parser::EdgeKind::From)
        .map(|e| e.needs);
    let base_id: String;
    // BuildKit's FROM <stage> starts from the stage's state: its environment holds the
    // stage's ARG values, and its list of build args goes on (dispatchState.init).
    let mut inherited = (BTreeMap::new(), MetaState::default());
    let (config, layers) = if let Some(dep) = from_stage {
        let r = &results[&dep];
        base_id = format!("stage:{}", r.key.hex());
        inherited = (
            r.args.clone(),
            MetaState {
                args_over_env: r.meta.args_over_env.clone(),
                arg_decls: r.meta.arg_decls.clone(),
                env_seq: r.meta.env_seq.clone(),
                ..MetaState::default()
            },
        );
        (r.config.clone(), r.layers.clone())
    } else if base.is_empty() {
        // BuildKit: "base name (${UNSET}) should not be blank".
        return Err(at(
            opts,
            stage.span,
            "FROM",
            format!(
                "base name ({}) should not be blank: it expanded to an empty string",
                stage.base
            ),
        ));
    } else if base.eq_ignore_ascii_case("scratch") {
        base_id = "scratch".into();
        // BuildKit's emptyImage: working directory `/` (PATH is added below).
        let mut config = ImageConfig::scratch();
        config.config.working_dir = "/".into();
        (config, Vec::new())
    } else {
        let named = opts.contexts.get(base.as_str()).cloned().or_else(|| {
            base.starts_with("oci-layout://")
                .then(|| NamedContext::parse(base))
        });
        match named {
            Some(NamedContext::OciLayout { dir, tag }) => {
                let manifest = cairn_layers::archive::layout_image(store, &dir, tag.as_deref())
                    .map_err(|e| at(opts, stage.span, "FROM", e.to_string()))?;
                base_id = format!("image:{}", manifest.digest);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &img.config)?;
                (img.config, img.manifest.layers)
            }
            Some(NamedContext::Dir(dir)) => {
                // A directory as a base: an image with one layer holding the directory.
                let layer = write_layer(store, opts.compression, |w| {
                    let tar_opts = cairn_layers::diff::TarOptions {
                        id_map: IdMap::identity(),
                        clamp_mtime: epoch,
                    };
                    cairn_layers::diff::write_dir(&dir, w, &tar_opts).map(|_| ())
                })?;
                let mut config = ImageConfig::scratch();
                base_id = format!("layer:{}", layer.diff_id);
                config.rootfs.diff_ids.push(layer.diff_id);
                (config, vec![layer.descriptor])
            }
            None => {
                let manifest = cx
                    .image(base, step_id, || {
                        format!("image {base:?} is not in the store; load it first with `cairn load -i PATH -t {base}`")
                    })
                    .map_err(|m| at(opts, stage.span, "FROM", m))?;
                base_id = format!("image:{}", manifest.digest);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &img.config)?;
                (img.config, img.manifest.layers)
            }
        }
    };
    // The base stays in the store: COPY's destination rules need only its directories and
    // symlinks, read from its tar headers; files are unpacked when a step reads them.
    let mut view = StageView::default();
    for l in &layers {
        view.add_layer(l);
    }
    let mut from_key = crate::cache::KeyHasher::new("FROM", &crate::cache::Key::root());
    from_key.field("base", &base_id);
    let no_cache = opts.no_cache
        || opts.no_cache_filter.iter().any(|f| {
            stage
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(f))
                || f.parse::<usize>().ok() == Some(index)
        });
    let mut config = config;
    // BuildKit's FROM re-applies a base's working directory as a WORKDIR of itself, so a
    // relative one (a malformed image) is joined to itself from the root: `relwd` becomes
    // `/relwd/relwd` (dispatchWorkdir with NormalizeWorkdir(wd, wd)).
    let wd = &config.config.working_dir;
    if !wd.is_empty() && !wd.starts_with('/') {
        config.config.working_dir = meta::clean_abs(&format!("/{wd}/{wd}"));
    }
    // BuildKit makes sure every non-Windows stage has a PATH: a base without one (scratch, a
    // bare image) gets the default, after its own variables.
    if config.os != "windows" && !meta::env_map(&config).contains_key("PATH") {
        config
            .config
            .env
            .push(format!("PATH={}", crate::sandbox::DEFAULT_PATH));
    }
    // A new image starts a new history only in name: the base's history stays.
    let onbuild = config.config.on_build.take();
    let layers_pending = layers.clone();
    let mut st = StageState {
        config,
        layers,
        rootfs,
        pending: layers_pending,
        view,
        args: inherited.0,
        meta: inherited.1,
        key: from_key.finish(),
        all_hits: true,
        no_cache,
        position: String::new(),
        index,
    };
    progress(Event::Done {
        id: step_id,
        seconds: started.elapsed().as_secs_f64(),
    });

    // ONBUILD triggers of the base image run first, as Docker runs them.
    let mut triggers = Vec::new();
    for t in onbuild.unwrap_or_default() {
        let parsed = cairn_parser::parse("ONBUILD", &format!("FROM scratch\n{t}\n"))?;
        triggers.extend(parsed.stages[0].instructions.clone());
    }
    for (i, ins) in triggers.iter().chain(&stage.instructions).enumerate() {
        let step_id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        progress(Event::Step {
            id: step_id,
            stage: stage_name.clone(),
            index: i + 2,
            total: stage.instructions.len() + 1,
            text: ins.original.clone(),
        });
        if crate::sandbox::cancelled() {
            return Err(Error::Cancelled);
        }
        st.position = format!(
            "{}\0{}\0{index}\0{i}",
            std::fs::canonicalize(&opts.context)
                .unwrap_or_else(|_| opts.context.clone())
                .display(),
            opts.dockerfile_name
        );
        match step(cx, &mut st, ins, step_id)? {
            Outcome::Cached => progress(Event::Cached { id: step_id }),
            outcome => {
                if outcome == Outcome::Ran {
                    st.all_hits = false;
                }
                progress(Event::Done {
                    id: step_id,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
        }
    }
    // Another stage of this build reads this one's files (COPY --from, RUN --mount from=):
    // settle now, only the paths its COPY --from names when they are plain paths. FROM builds
    // its own filesystem from the layers, and the target settles on demand.
    let readers: Vec<&cairn_parser::Edge> = graph
        .edges
        .iter()
        .filter(|e| {
            e.needs == index
                && e.kind != cairn_parser::EdgeKind::From
                && cx.building.contains(&e.stage)
        })
        .collect();
    let mut partial = None;
    if !readers.is_empty() {
        match copy_prefixes(cx.df, &readers).filter(|_| index != cx.target) {
            Some(prefixes) => {
                if st.settle_under(store, &prefixes)? {
                    partial = Some(prefixes);
                }
            }
            None => st.settle(store)?,
        }
    }
    Ok(StageResult {
        config: st.config,
        layers: st.layers,
        rootfs: st.rootfs,
        pending: st.pending,
        partial,
        key: st.key,
        all_hits: st.all_hits,
        args: st.args,
        meta: st.meta,
    })
}

/// A pull's progress as a step's log line: the blobs it copied and the digest it settled on.
fn pull_line(e: &cairn_layers::registry::Event) -> Option<String> {
    use cairn_layers::registry::Event as R;
    Some(match e {
        R::Resolved { reference, digest } => format!("resolved {reference} to {digest}"),
        R::PlatformSelected { platform, digest } => format!("selected {platform}: {digest}"),
        R::BlobDone { digest, size, .. } => format!("copied blob {digest} ({size} bytes)"),
        R::Retrying {
            what,
            attempt,
            error,
        } => format!("retrying {what} (attempt {attempt} failed: {error})"),
        R::MirrorFailed { endpoint, error } => format!("mirror {endpoint} failed: {error}"),
        _ => return None,
    })
}

/// `ARG` in a stage or before the first FROM: a build arg's value wins over the default; a
/// redeclared global ARG without a default takes the global value; a bare name nothing gives
/// a value keeps the value it has (BuildKit adds nothing to the environment for it).
fn declare(
    into: &mut BTreeMap<String, String>,
    defs: &[ArgDef],
    globals: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
    lexer: &Lexer,
) -> std::result::Result<(), String> {
    for def in defs {
        if let Some(v) = arg_value(def, globals, build_args, lexer, &*into)? {
            into.insert(def.name.clone(), v);
        }
    }
    Ok(())
}

/// The value one `ARG` definition gives its name (a default expands with `words`), if any.
fn arg_value(
    def: &ArgDef,
    globals: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
    lexer: &Lexer,
    words: &(impl cairn_parser::expand::Env + ?Sized),
) -> std::result::Result<Option<String>, String> {
    Ok(match (build_args.get(&def.name), &def.default) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(d)) => Some(lexer.process_word(d, words).map_err(|e| e.to_string())?),
        (None, None) => globals.get(&def.name).cloned(),
    })
}

/// An `os/arch[/variant]` (or a bare arch, on linux) as containerd normalises it: arch aliases
/// to their Go names, arm64's default variant v8 dropped.
fn normal_platform(spec: &str) -> (String, String, Option<String>) {
    let parts: Vec<String> = spec.split('/').map(str::to_ascii_lowercase).collect();
    let (os, arch, variant) = match parts.as_slice() {
        [arch] => ("linux".to_owned(), arch.clone(), None),
        [os, arch] => (os.clone(), arch.clone(), None),
        [os, arch, variant, ..] => (os.clone(), arch.clone(), Some(variant.clone())),
        [] => (String::new(), String::new(), None),
    };
    let arch = match arch.as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        "i386" | "i686" => "386".to_owned(),
        "armhf" => return (os, "arm".to_owned(), Some("v7".to_owned())),
        "armel" => return (os, "arm".to_owned(), Some("v6".to_owned())),
        _ => arch,
    };
    let variant = variant.filter(|v| !(v.is_empty() || arch == "arm64" && v == "v8"));
    (os, arch, variant)
}

/// `FROM --platform=P`: until cairn builds for other platforms, a base of another platform is
/// an error naming both, not an image silently built for the base's.
fn check_platform(
    cx: &Ctx<'_>,
    stage: &cairn_parser::Stage,
    base: &str,
    config: &ImageConfig,
) -> Result<()> {
    let Some(raw) = &stage.platform else {
        return Ok(());
    };
    let wanted = cx.lexer.process_word(raw, cx.globals).map_err(|e| {
        at(
            cx.opts,
            stage.span,
            "FROM",
            format!("--platform={raw}: {e}"),
        )
    })?;
    if wanted.is_empty() {
        return Ok(());
    }
    let (os, arch, variant) = normal_platform(&wanted);
    let found = match &config.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", config.os, config.architecture),
        _ => format!("{}/{}", config.os, config.architecture),
    };
    let (f_os, f_arch, f_variant) = normal_platform(&found);
    let variant_differs = matches!((&variant, &f_variant), (Some(a), Some(b)) if a != b);
    if os != f_os || arch != f_arch || variant_differs {
        return Err(at(
            cx.opts,
            stage.span,
            "FROM",
            format!(
                "--platform={wanted}: the base image {base:?} is {found}, not {wanted} \
                 (cairn cannot build for another platform yet)"
            ),
        ));
    }
    Ok(())
}

/// What every step of a build reads.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a Store,
    pub(crate) opts: &'a BuildOptions,
    pub(crate) context: &'a BuildContext,
    pub(crate) df: &'a Dockerfile,
    pub(crate) globals: &'a BTreeMap<String, String>,
    pub(crate) results: &'a BTreeMap<usize, StageResult>,
    pub(crate) lexer: &'a Lexer,
    pub(crate) epoch: Option<i64>,
    /// Made at the first RUN and shared by the rest of the build.
    pub(crate) sandbox: &'a std::sync::OnceLock<std::result::Result<Sandbox, String>>,
    pub(crate) progress: &'a (dyn Fn(Event) + Sync),
    /// The stages this build runs, and the one whose image it makes.
    pub(crate) building: &'a std::collections::BTreeSet<usize>,
    pub(crate) target: usize,
    pub(crate) cache: &'a crate::cache::Cache,
    /// Images this build pulled, by name, so `--pull` asks each registry once.
    pub(crate) pulled: &'a std::sync::Mutex<BTreeMap<String, Descriptor>>,
}

impl Ctx<'_> {
    /// An image by name for FROM, COPY --from or RUN --mount from=: the store's; else, or
    /// with `--pull` when named by tag, its registry's. `missing` words the error when there
    /// is no registry to ask; a failed pull says what the registry said.
    pub(crate) fn image(
        &self,
        name: &str,
        step_id: usize,
        missing: impl FnOnce() -> String,
    ) -> std::result::Result<Descriptor, String> {
        if let Some(d) = self.pulled.lock().ok().and_then(|p| p.get(name).cloned()) {
            return Ok(d);
        }
        let stored = match self.store.resolve(name) {
            Ok(found) => Some(found),
            // An ID prefix of several images: saying "not in the store" would mislead.
            Err(e @ cairn_layers::Error::Invalid { .. }) => return Err(e.to_string()),
            Err(_) => None,
        };
        let reference = cairn_layers::Reference::parse(name).ok();
        let (Some(registry), Some(reference)) = (&self.opts.registry, reference) else {
            return stored.map(|(_, d)| d).ok_or_else(missing);
        };
        match stored {
            // By ID or digest, or by tag without --pull: what the store has is the image.
            Some((by_tag, d))
                if !self.opts.pull || by_tag.is_none() || reference.digest().is_some() =>
            {
                return Ok(d);
            }
            _ => {}
        }
        let progress = self.progress;
        progress(Event::Log {
            id: step_id,
            line: format!("pulling {}", reference.familiar()),
        });
        let events = |e: cairn_layers::registry::Event| {
            if let Some(line) = pull_line(&e) {
                progress(Event::Log { id: step_id, line });
            }
        };
        let d = cairn_layers::registry::pull(self.store, &reference, registry, &events).map_err(
            |e| match &stored {
                Some(_) => format!("pulling {}: {e}", reference.familiar()),
                // Say what the store lacked too, and the way round a registry out of reach.
                None => format!("{} (pulling it failed: {e})", missing()),
            },
        )?;
        if let Ok(mut p) = self.pulled.lock() {
            p.insert(name.to_owned(), d.clone());
        }
        Ok(d)
    }

    /// The stage `name` means: a stage's name (any case) or its index.
    pub(crate) fn stage_named(&self, name: &str) -> Option<usize> {
        self.df
            .stages
            .iter()
            .position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|&i| i < self.df.stages.len())
            })
    }
}

/// COPY's and ADD's arguments, as one shape.
struct CopyArgs<'a> {
    parents: bool,
    excludes: &'a [String],
    sources: &'a [Source],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    /// ADD `--checksum=ALGO:HEX`, for URL sources.
    checksum: Option<&'a str>,
    is_add: bool,
}

/// How a step got its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran (and its result is recorded in the cache).
    Ran,
    /// Its recorded result was used.
    Cached,
    /// A metadata step: worked out again every time, it costs nothing.
    Meta,
}

fn step(cx: &Ctx<'_>, st: &mut StageState, ins: &Instruction, step_id: usize) -> Result<Outcome> {
    let Ctx {
        store,
        opts,
        globals,
        lexer,
        epoch,
        ..
    } = *cx;
    let kw = ins.keyword();
    let fail = |m: String| at(opts, ins.span, kw, m);
    let created = timestamp(epoch);
    match &ins.kind {
        InstructionKind::Arg { args } => {
            // One at a time: a default expands with the ENV and the ARGs before it, and an
            // ARG with a value then wins over an inherited ENV of its name (BuildKit's
            // dispatchArg adds it to the state's environment).
            let mut decls = Vec::new();
            for def in args {
                st.meta.env_index.sync(&st.config.config.env);
                let words = crate::envindex::Words {
                    env: &st.config.config.env,
                    index: &st.meta.env_index,
                    args: &st.args,
                    over: &st.meta.args_over_env,
                };
                let value =
                    arg_value(def, globals, &opts.build_args, lexer, &words).map_err(fail)?;
                if let Some(v) = &value {
                    st.args.insert(def.name.clone(), v.clone());
                    st.meta.args_over_env.insert(def.name.clone());
                    st.meta.env_seq.push(def.name.clone());
                }
                decls.push((def.name.clone(), value));
            }
            // BuildKit's dispatchArg commits "ARG k=v ..." as an empty layer, without the
            // "# buildkit" of steps with a state.
            st.config.history.push(History {
                created: Some(created),
                created_by: Some(crate::history::arg_line(&decls)),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
                ..History::default()
            });
            st.meta.arg_decls.extend(decls);
        }
        InstructionKind::Run(run) => return crate::run::run_step(cx, st, ins, run, step_id),
        InstructionKind::Copy(c) => {
            return copy_step(
                cx,
                st,
                ins,
                CopyArgs {
                    parents: c.parents,
                    excludes: &c.excludes,
                    sources: &c.sources,
                    dest: &c.dest,
                    from: c.from.as_deref(),
                    chown: c.chown.as_deref(),
                    chmod: c.chmod.as_deref(),
                    checksum: None,
                    is_add: false,
                },
                step_id,
            );
        }
        InstructionKind::Add(a) => {
            return copy_step(
                cx,
                st,
                ins,
                CopyArgs {
                    parents: false,
                    excludes: &a.excludes,
                    sources: &a.sources,
                    dest: &a.dest,
                    from: None,
                    chown: a.chown.as_deref(),
                    chmod: a.chmod.as_deref(),
                    checksum: a.checksum.as_deref(),
                    is_add: true,
                },
                step_id,
            );
        }
        InstructionKind::From(_) => return Err(fail("FROM inside a stage".into())),
        _ => {
            let line = meta::apply(
                &mut st.config,
                &ins.kind,
                &ins.original,
                &st.args,
                lexer,
                &mut st.meta,
            )
            .map_err(|e| fail(inner(e)))?;
            if matches!(ins.kind, InstructionKind::Cmd { .. }) {
                // BuildKit's dispatchCmd marks the config ArgsEscaped for either form and on
                // every platform (docker's import --change, meta::apply_all's user, does not).
                st.config.config.args_escaped = Some(true);
            }
            if matches!(ins.kind, InstructionKind::Workdir { .. }) {
                // BuildKit's WORKDIR other than / is a mkdir -p as a layer of its own, empty
                // when the directory exists (its history test: `RUN ls` and such are layers).
                let view = crate::copy::ImageView {
                    tree: st.view.tree(cx.cache, store)?,
                };
                let missing = missing_dirs(&view, &st.config.config.working_dir);
                if !missing.is_empty() || !st.config.config.working_dir.trim_matches('/').is_empty()
                {
                    let mtime = epoch.unwrap_or_else(|| jiff::Timestamp::now().as_second());
                    let mtime = mtime.max(0) as u64;
                    // The existing parents go in the layer as the image has them, as a COPY's
                    // do (see copy.rs): the one the first made directory is added to is
                    // dated now.
                    let mut dirs: Vec<(String, DirMeta)> = Vec::new();
                    let first = missing.first().map_or("", String::as_str);
                    let mut at = String::new();
                    for part in first.split('/').take(first.split('/').count() - 1) {
                        at = if at.is_empty() {
                            part.to_owned()
                        } else {
                            format!("{at}/{part}")
                        };
                        if let Some(meta) = view.dir(&at) {
                            dirs.push((at.clone(), meta));
                        }
                    }
                    if let Some((_, last)) = dirs.last_mut() {
                        last.mtime = mtime;
                    }
                    for (_, m) in &mut dirs {
                        m.mtime = m.mtime.min(epoch.map_or(u64::MAX, |e| e.max(0) as u64));
                    }
                    // (The view is not used past here: the owner may need the stage's files.)
                    // BuildKit makes them as the USER (its mkdir's `WithUser`), names looked
                    // up in the image's own files.
                    let user = st.config.config.user.clone();
                    let owner = if user.is_empty() || missing.is_empty() {
                        users::Owner { uid: 0, gid: 0 }
                    } else {
                        let what = format!("WORKDIR made as USER {user}");
                        file_owner(cx, st, ins, &user, &what)?
                    };
                    let made = DirMeta {
                        mode: 0o755,
                        uid: u64::from(owner.uid),
                        gid: u64::from(owner.gid),
                        mtime,
                    };
                    dirs.extend(missing.iter().map(|d| (d.clone(), made)));
                    let mut key = crate::cache::KeyHasher::new("WORKDIR", &st.key);
                    key.field("instruction", &ins.original);
                    for (d, m) in &dirs {
                        // A kept parent's time is not keyed: the chain fixes it, or it is now.
                        key.field("dir", format!("{d}\0{:o} {}:{}", m.mode, m.uid, m.gid));
                    }
                    let (key, summary) = key.finish_with_summary();
                    if use_cached(cx, st, &key, summary, step_id)? {
                        return Ok(Outcome::Cached);
                    }
                    let layer = write_layer(store, opts.compression, |w| dirs_tar(w, &dirs))?;
                    let rec = layer_record(&layer);
                    let dirs: BTreeMap<String, DirMeta> = dirs.into_iter().collect();
                    let dir_list = dirs.clone().into_iter().collect();
                    add_layer(st, layer, Some(dirs), ins, created)?;
                    if let (MetaLine::Line(l), Some(h)) = (&line, st.config.history.last_mut()) {
                        h.created_by = Some(l.clone());
                    }
                    record(cx, st, key, Some(rec), Some(dir_list))?;
                    return Ok(Outcome::Ran);
                }
            }
            match line {
                MetaLine::AsWritten => push_empty(&mut st.config, ins, created),
                MetaLine::Line(l) => st.config.history.push(History {
                    created: Some(created),
                    created_by: Some(l),
                    comment: Some("buildkit.dockerfile.v0".into()),
                    empty_layer: true,
                    ..History::default()
                }),
                // BuildKit's dispatchOnbuild commits no history.
                MetaLine::Nothing => {}
            }
        }
    }
    // A metadata step leaves the chain as it is, as BuildKit does: the steps after it key
    // what they use of the config themselves (RUN its environment, user, working directory
    // and shell; COPY its expanded paths and owner), so a new LABEL or CMD reruns nothing. The
    // image's own key covers the config it ends with.
    Ok(Outcome::Meta)
}

/// A hit for `key` (unless the stage runs uncached): the recorded layer and history entry
/// join the stage, and the chain moves on to `key`.
pub(crate) fn use_cached(
    cx: &Ctx<'_>,
    st: &mut StageState,
    key: &crate::cache::Key,
    summary: crate::cache::SummaryParts,
    step_id: usize,
) -> Result<bool> {
    let found = if st.no_cache {
        None
    } else {
        cx.cache.get(cx.store, key)
    };
    let Some(rec) = found else {
        let summary = summary.build();
        // Say why, when this step ran before with other inputs.
        if !st.no_cache
            && let Some(before) = cx.cache.last_summary(&st.position)
        {
            (cx.progress)(Event::Miss {
                id: step_id,
                reason: summary.explain(&before, &st.args),
            });
        }
        cx.cache.put_summary(&st.position, &summary)?;
        return Ok(false);
    };
    cx.cache.touch(key, &rec, st.index);
    cx.cache.mark_used(key);
    if let Some(l) = rec.layer {
        st.pending.push(l.descriptor.clone());
        if rec.listed {
            st.view.add_layer(&l.descriptor);
        } else {
            st.view.add_dirs(rec.dirs);
        }
        st.config.rootfs.diff_ids.push(l.diff_id);
        st.layers.push(l.descriptor);
    }
    st.config.history.push(rec.history);
    st.key = *key;
    Ok(true)
}

/// What the step that just ran made, recorded under `key`: its layer (if any) and the last
/// history entry.
pub(crate) fn record(
    cx: &Ctx<'_>,
    st: &mut StageState,
    key: crate::cache::Key,
    layer: Option<crate::cache::LayerRecord>,
    dirs: Option<Vec<(String, DirMeta)>>,
) -> Result<()> {
    let history = st.config.history.last().cloned().unwrap_or_default();
    let rec = crate::cache::Record {
        layer,
        history,
        listed: dirs.is_none(),
        dirs: dirs.unwrap_or_default(),
    };
    cx.cache.put(&key, &rec)?;
    cx.cache.confirm_summary(&st.position)?;
    cx.cache.touch(&key, &rec, st.index);
    st.key = key;
    Ok(())
}

pub(crate) fn layer_record(l: &cairn_layers::layer::StoredLayer) -> crate::cache::LayerRecord {
    crate::cache::LayerRecord {
        descriptor: l.descriptor.clone(),
        diff_id: l.diff_id.clone(),
        uncompressed_size: l.uncompressed_size,
    }
}

/// The directories of `path` (from the root down) that the image does not have.
fn missing_dirs(view: &crate::copy::ImageView<'_>, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = String::new();
    // Made where symlinks lead, as `mkdir -p` would.
    let path = view.resolve_dest(path);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = if at.is_empty() {
            part.to_owned()
        } else {
            format!("{at}/{part}")
        };
        if !view.is_dir(&at) {
            out.push(at.clone());
        }
    }
    out
}

/// A layer tar of directories, in order.
pub(crate) fn dirs_tar(
    w: &mut dyn std::io::Write,
    dirs: &[(String, DirMeta)],
) -> cairn_layers::Result<()> {
    let bad = |what: &str, e: std::io::Error| cairn_layers::Error::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let mut tar = tar::Builder::new(w);
    for (d, m) in dirs {
        let mut h = crate::copy::dir_header(m);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(|e| bad(d, e))?;
    }
    tar.finish().map_err(|e| bad("layer", e))
}

/// The owner a file operation gives as `spec` (`--chown`, WORKDIR's USER), names looked up in
/// the stage's own /etc/passwd and /etc/group (settled first); a name the image lacks is id 0,
/// as in BuildKit, and a warning naming `what` and the Dockerfile line.
fn file_owner(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    spec: &str,
    what: &str,
) -> Result<users::Owner> {
    if spec.bytes().any(|b| !b.is_ascii_digit() && b != b':') {
        st.settle(cx.store)?;
    }
    let (owner, missing) = users::resolve_file_owner(spec, &st.rootfs)
        .map_err(|e| at(cx.opts, ins.span, ins.keyword(), format!("{what}: {}", e.0)))?;
    for m in missing {
        (cx.progress)(Event::Warning(format!(
            "{}:{}: {what}: the image has no {m}, so id 0 is used, as BuildKit does",
            cx.opts.dockerfile_name, ins.span.start
        )));
    }
    Ok(owner)
}

/// Records a new layer in the stage: applied to its filesystem, added to its image.
pub(crate) fn add_layer(
    st: &mut StageState,
    layer: cairn_layers::layer::StoredLayer,
    dirs: Option<BTreeMap<String, DirMeta>>,
    ins: &Instruction,
    created: String,
) -> Result<()> {
    st.pending.push(layer.descriptor.clone());
    // A RUN's directories are known only from its layer's tar headers.
    match dirs {
        Some(dirs) => st.view.add_dirs(dirs),
        None => st.view.add_layer(&layer.descriptor),
    }
    st.config.rootfs.diff_ids.push(layer.diff_id);
    st.layers.push(layer.descriptor);
    st.config.history.push(History {
        created: Some(created),
        created_by: Some(format!("{} # buildkit", ins.original)),
        comment: Some("buildkit.dockerfile.v0".into()),
        ..History::default()
    });
    Ok(())
}

fn copy_step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    args: CopyArgs<'_>,
    step_id: usize,
) -> Result<Outcome> {
    let Ctx {
        store,
        opts,
        lexer,
        epoch,
        ..
    } = *cx;

    let kw = ins.keyword();
    let fail = |m: String| at(opts, ins.span, kw, m);
    // Words expand with the stage's ARGs and ENV, as BuildKit's state holds them.
    let env = meta::words_env(&st.config, &st.args, &st.meta);
    let word = |w: &str| lexer.process_word(w, &env).map_err(|e| fail(e.to_string()));
    let created = timestamp(epoch);
    let CopyArgs {
        parents,
        excludes,
        sources,
        dest,
        from,
        chown,
        chmod,
        checksum,
        is_add,
    } = args;
    let checksum = checksum.map(word).transpose()?;
    let dest = word(dest)?;
    // Downloads live next to the stage's rootfs in the work directory; each guard removes its
    // file when this step ends, failed or not.
    let mut downloads: Vec<crate::remote::Download> = Vec::new();
    let mut srcs = Vec::new();
    // BuildKit's history line names the sources as expanded, heredocs after the paths.
    let mut line_paths = Vec::new();
    let mut line_docs = Vec::new();
    for s in sources {
        srcs.push(match s {
            Source::Path(p) => {
                let p = word(p)?;
                line_paths.push(p.clone());
                if is_add && crate::remote::is_url(&p) {
                    let to = st
                        .rootfs
                        .with_extension(format!("download-{}", downloads.len()));
                    let dl = crate::remote::download(&p, &to, checksum.as_deref()).map_err(fail)?;
                    // Docker dates the file by Last-Modified; without it, like new content.
                    let mtime = dl
                        .last_modified
                        .or(epoch)
                        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
                    let src = CopySource::File {
                        name: dl.name.clone(),
                        path: dl.path.clone(),
                        mtime,
                    };
                    downloads.push(dl);
                    src
                } else if is_add && p.starts_with("git@") {
                    return Err(fail(format!(
                        "git sources ({p}) are not supported by this version of cairn"
                    )));
                } else if checksum.is_some() {
                    // As in Docker: a local source has no download to verify.
                    return Err(fail(format!(
                        "--checksum can't be specified for non-HTTP(S) sources ({p})"
                    )));
                } else {
                    CopySource::Path(p)
                }
            }
            Source::Heredoc(h) => {
                line_docs.push(format!("<<{}", h.name));
                let data = if h.expand {
                    // As BuildKit: variables expand, quotes stay as written, and the escape
                    // is the backslash whatever the Dockerfile's escape directive says.
                    Lexer::new('\\')
                        .skip_process_quotes(true)
                        .process_word(&h.content, &env)
                        .map_err(|e| fail(e.to_string()))?
                } else {
                    h.content.clone()
                };
                CopySource::Content {
                    name: h.name.clone(),
                    data: data.into_bytes(),
                }
            }
        });
    }
    let chown_word = chown.map(word).transpose()?;
    let owner = match &chown_word {
        Some(spec) => file_owner(cx, st, ins, spec, &format!("--chown={spec}"))?,
        None => users::Owner { uid: 0, gid: 0 },
    };
    let chmod = chmod.map(word).transpose()?;
    let history_line = crate::history::copy_line(&crate::history::CopyLine {
        is_add,
        parents,
        chown: chown_word.as_deref(),
        chmod: chmod.as_deref(),
        paths: &line_paths,
        docs: &line_docs,
        dest: &dest,
    });
    let req = CopyRequest {
        sources: srcs,
        dest,
        workdir: if st.config.config.working_dir.is_empty() {
            "/".into()
        } else {
            st.config.config.working_dir.clone()
        },
        owner,
        chmod,
        clamp_mtime: epoch,
        unpack_archives: is_add,
        parents,
        excludes: excludes
            .iter()
            .map(|e| word(e))
            .collect::<Result<Vec<_>>>()?,
    };
    // --from: a stage (by name or index), or an image from the store.
    let image_dir;
    let named_dir;
    let mut from_id: Option<String> = None;
    // A stage's or image's layers, for the owners and xattrs of what is copied from it.
    let mut from_layers: Option<(Vec<Descriptor>, PathBuf)> = None;
    let from_root = match from {
        None => SourceRoot::Context(cx.context),
        Some(f) => {
            let f = word(f)?;
            let stage = cx.stage_named(&f);
            let sources: Vec<String> = req
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Path(p) => Some(p.clone()),
                    _ => None,
                })
                .collect();
            if let Some(r) = stage.and_then(|i| cx.results.get(&i)) {
                from_id = Some(format!("stage:{}", r.key.hex()));
            }
            match stage.and_then(|i| cx.results.get(&i)) {
                Some(r)
                    if r.pending.is_empty()
                        && r.partial.as_ref().is_none_or(|p| covered(p, &sources)) =>
                {
                    from_layers = Some((r.layers.clone(), r.rootfs.clone()));
                    SourceRoot::Dir(&r.rootfs)
                }
                Some(r) => {
                    // A stage the graph did not see this step read (a --from that only
                    // expansion at this point names): its files, complete, in a copy of its own.
                    image_dir = st
                        .rootfs
                        .with_extension(format!("from-stage-{}", stage.unwrap_or(0)));
                    if !image_dir.exists() {
                        unpack_layers(store, &r.layers, &image_dir)?;
                    }
                    from_layers = Some((r.layers.clone(), image_dir.clone()));
                    SourceRoot::Dir(&image_dir)
                }
                None if stage.is_some() => {
                    return Err(fail(format!("stage {f} was not built before this step")));
                }
                None => match opts.contexts.get(f.as_str()).cloned().or_else(|| {
                    f.starts_with("oci-layout://")
                        .then(|| NamedContext::parse(&f))
                }) {
                    Some(NamedContext::Dir(dir)) => {
                        // A named local context reads its own .dockerignore.
                        named_dir = BuildContext::open(&dir, None)?;
                        cx.cache.watch(named_dir.root());
                        SourceRoot::Context(&named_dir)
                    }
                    named => {
                        // An image: from an OCI layout, or from the store.
                        let manifest = match named {
                            Some(NamedContext::OciLayout { dir, tag }) => {
                                cairn_layers::archive::layout_image(store, &dir, tag.as_deref())
                                    .map_err(|e| fail(format!("--from={f}: {e}")))?
                            }
                            _ => cx
                                .image(&f, step_id, || {
                                    format!("--from={f}: no such stage, build context or image in the store")
                                })
                                .map_err(fail)?,
                        };
                        from_id = Some(format!("image:{}", manifest.digest));
                        let img = store.image(&manifest)?;
                        image_dir = st.rootfs.with_extension(format!("from-{}", img.id().hex()));
                        if !image_dir.exists() {
                            unpack_layers(store, &img.manifest.layers, &image_dir)?;
                        }
                        from_layers = Some((img.manifest.layers.clone(), image_dir.clone()));
                        SourceRoot::Dir(&image_dir)
                    }
                },
            }
        }
    };
    let view = crate::copy::ImageView {
        tree: st.view.tree(cx.cache, store)?,
    };
    let mut plan = plan_copy(from_root, &req, &view).map_err(|e| fail(inner(e)))?;
    // A stage's or image's hard links stay hard links; without --chown, its files keep
    // their owners and xattrs too.
    let from_source = from_layers.is_some();
    if from_source {
        plan.keep_hard_links();
    }
    let keep = if chown.is_none() { from_layers } else { None };
    // The key: the options as expanded, and what the plan will write. Files of the context
    // are known by their content (remembered by metadata); a stage's or an image's files by
    // that stage's key or image, which fix their content.
    let mut key = crate::cache::KeyHasher::new(if is_add { "ADD" } else { "COPY" }, &st.key);
    key.field("dest", &req.dest)
        .field("workdir", &req.workdir)
        .field("owner", format!("{}:{}", req.owner.uid, req.owner.gid))
        .field("chmod", req.chmod.as_deref().unwrap_or(""))
        .field("parents", req.parents.to_string())
        .field("from", from_id.as_deref().unwrap_or("context"));
    // Layers written before owners, xattrs and hard links were kept must not be taken
    // for these.
    if keep.is_some() {
        key.field("source-meta", "owners xattrs hardlinks");
    } else if from_source {
        key.field("source-meta", "hardlinks");
    }
    for e in &req.excludes {
        key.field("exclude", e);
    }
    // Reading is most of a cold key's cost: the digests come from the memo, or are read on
    // every core.
    let content = match from_id {
        None => Some(
            crate::cache::file_digests(cx.cache, &plan.content_sources())
                .map_err(|e| fail(inner(e)))?,
        ),
        Some(_) => None,
    };
    plan.describe(&req, &mut key, content.as_deref())
        .map_err(|e| fail(inner(e)))?;
    let (key, summary) = key.finish_with_summary();
    if use_cached(cx, st, &key, summary, step_id)? {
        return Ok(Outcome::Cached);
    }
    if let Some((layers, root)) = keep {
        let meta = crate::from_meta::SourceMeta::read(store, &layers, &root)
            .map_err(|e| fail(inner(e)))?;
        plan.keep_source_meta(meta);
    }
    let mut dirs = Default::default();
    let total = plan.source_bytes();
    // Unchanged stretches of the layer this step made last time are copied, not deflated
    // again (a large file that grew at its end costs its last chunks).
    let previous = cx.cache.last_layer(&st.position);
    let layer = write_layer_reusing(store, opts.compression, previous.as_ref(), |w| {
        let mut w = crate::progress::Counting::new(w, total, |done| {
            (cx.progress)(Event::Bytes {
                id: step_id,
                done,
                total,
            })
        });
        dirs = plan.write(&req, &mut w).map_err(|e| match e {
            Error::Layers(l) => l,
            other => cairn_layers::Error::Invalid {
                what: ins.original.clone(),
                reason: inner(other),
            },
        })?;
        Ok(())
    })
    .map_err(|e| fail(strip_invalid(&e)))?;
    // The layer holds the downloads now.
    drop(downloads);
    cx.cache
        .put_last_layer(&st.position, &layer.descriptor.digest)?;
    let rec = layer_record(&layer);
    let dir_list: Vec<(String, DirMeta)> = dirs.clone().into_iter().collect();
    add_layer(st, layer, Some(dirs), ins, created)?;
    if let Some(h) = st.config.history.last_mut() {
        h.created_by = Some(history_line);
    }
    record(cx, st, key, Some(rec), Some(dir_list))?;
    Ok(Outcome::Ran)
}

fn push_empty(config: &mut ImageConfig, ins: &Instruction, created: String) {
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("{} # buildkit", ins.original)),
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer: true,
        ..History::default()
    });
}

fn inner(e: Error) -> String {
    match e {
        Error::Instruction { message, .. } => message,
        other => other.to_string(),
    }
}

fn strip_invalid(e: &cairn_layers::Error) -> String {
    match e {
        cairn_layers::Error::Invalid { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod partial_tests {
    use super::*;

    #[test]
    fn copy_from_prefixes_and_coverage() {
        let df = cairn_parser::parse(
            "Dockerfile",
            "FROM busybox AS gen\nRUN true\n\
             FROM busybox\nCOPY --from=gen /out/keep/ /data/\n\
             COPY --from=gen out/*.txt ./a/[ab] /x/\n",
        )
        .unwrap();
        let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
        let readers: Vec<&cairn_parser::Edge> =
            graph.edges.iter().filter(|e| e.needs == 0).collect();
        let got = copy_prefixes(&df, &readers).unwrap();
        assert_eq!(got, ["out/keep", "out", "a"]);

        type Case<'a> = (&'a [&'a str], bool);
        let cases: &[Case<'_>] = &[
            (&["out/keep"], true),
            (&["/out/keep/f1.txt", "./out/keep/"], true),
            (&["out/keeper"], false),
            (&["out"], false),
            (&["out/keep/../skip"], false),
            (&["etc/passwd"], false),
        ];
        for (sources, want) in cases {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                covered(&["out/keep".into()], &sources),
                *want,
                "{sources:?}"
            );
        }
        for bad in [
            "COPY --from=gen $X /d/",
            "COPY --from=gen * /d/",
            "COPY --from=gen ../.. /d",
        ] {
            let text = format!("FROM busybox AS gen\nFROM busybox\n{bad}\n");
            let df = cairn_parser::parse("Dockerfile", &text).unwrap();
            let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
            let readers: Vec<&cairn_parser::Edge> =
                graph.edges.iter().filter(|e| e.needs == 0).collect();
            assert_eq!(copy_prefixes(&df, &readers), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normal_platform;

    #[test]
    fn platforms_normalise_as_containerd_does() {
        let p = |os: &str, arch: &str, v: Option<&str>| {
            (os.to_owned(), arch.to_owned(), v.map(str::to_owned))
        };
        let cases = [
            ("linux/amd64", p("linux", "amd64", None)),
            ("amd64", p("linux", "amd64", None)),
            ("linux/x86_64", p("linux", "amd64", None)),
            ("Linux/AMD64", p("linux", "amd64", None)),
            ("linux/aarch64", p("linux", "arm64", None)),
            ("linux/arm64/v8", p("linux", "arm64", None)),
            ("linux/arm/v7", p("linux", "arm", Some("v7"))),
            ("linux/armhf", p("linux", "arm", Some("v7"))),
            ("windows/amd64", p("windows", "amd64", None)),
        ];
        for (spec, want) in cases {
            assert_eq!(normal_platform(spec), want, "{spec}");
        }
    }
}
