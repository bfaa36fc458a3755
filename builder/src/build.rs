//! The build: stages in dependency order, waves of independent stages in parallel, each
//! instruction applied to its stage, the target stage's image stored and its cache exported.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_layers::Store;
use cairn_layers::image::{ImageConfig, timestamp};
use cairn_layers::platform::Platform;
use cairn_parser::expand::Lexer;
use cairn_parser::instruction::InstructionKind;
use cairn_parser::{Dockerfile, StageGraph};

use crate::context::BuildContext;
use crate::error::{CacheError, Error, Result};
use crate::plan::{Plan, Settle};
use crate::stage::{StageResult, WorkDir};
use crate::step::args::{declare, platform_args};
use crate::step::ctx::{Ctx, Outcome, at_with};
use crate::step::from;
use crate::step::step;

pub use crate::options::{BuildOptions, ImageEdits, NamedContext, Pull, Squash};
pub use crate::progress::{Event, Phase};
pub use crate::stage::Built;

/// What the builds of every platform share: the Dockerfile, the context, the cache, the
/// sandbox and the work directory.
struct Shared<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    df: &'a Dockerfile,
    context: &'a BuildContext,
    lexer: &'a Lexer,
    cache: &'a crate::cache::Cache,
    sandbox: &'a SandboxCell,
    pulled: &'a std::sync::Mutex<BTreeMap<String, cairn_layers::image::Descriptor>>,
    next_id: &'a AtomicUsize,
    work: &'a std::sync::Arc<WorkDir>,
    progress: &'a (dyn Fn(Event) + Sync),
    /// More than one platform: step lines name theirs.
    multi: bool,
}

/// Runs a build and returns the target stage's image for each platform asked for (this
/// machine's when none is), stored (not tagged), in the order the platforms were given.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<Vec<Built>> {
    /// However the build ends, the layer blobs it wrote are committed (or removed) before it
    /// returns: none is left half-done in the store's scratch space.
    struct Commits<'a>(&'a Store);
    impl Drop for Commits<'_> {
        fn drop(&mut self) {
            let _ = self.0.wait_blobs();
            crate::sandbox::wait_removals();
        }
    }
    let _commits = Commits(store);
    let df: Dockerfile = cairn_parser::parse(&opts.dockerfile_name, &opts.dockerfile)?;
    let mut platforms: Vec<Platform> = Vec::new();
    for p in &opts.platforms {
        if !platforms.iter().any(|q| q.matches(p)) {
            platforms.push(p.clone());
        }
    }
    if platforms.is_empty() {
        platforms.push(Platform::host());
    }
    // Each platform's graph and target, made before anything is opened: a bad Dockerfile
    // fails fast, whatever the platform.
    let mut graphs = Vec::new();
    for p in &platforms {
        let mut args = platform_args(p);
        args.extend(opts.build_args.clone());
        let graph = StageGraph::new(&df, &args)
            .map_err(|e| e.with_source(&opts.dockerfile_name, &opts.dockerfile))?;
        let target = graph
            .target(&df, opts.target.as_deref())
            .map_err(|e| Error::Target(*e.kind))?;
        graphs.push((p, graph, target));
    }
    let context = match &opts.ignorefile {
        Some(file) => BuildContext::open_with_ignore(&opts.context, file)?,
        None => BuildContext::open(&opts.context, opts.dockerfile_path.as_deref())?,
    };
    // BuildKit's lint pass, before anything runs: `error=true` stops the build here.
    let checked = crate::lint::check(
        Some(store),
        crate::lint::LintInput::of_build(opts, graphs[0].0),
        &context,
    )?;
    for lint in &checked.report.lints {
        progress(Event::Lint(lint.clone()));
    }
    if let Some(violation) = checked.report.violation() {
        return Err(Error::Lint(violation));
    }
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
    let lexer = Lexer::new(df.directives.escape);
    let next_id = AtomicUsize::new(0);
    let sandbox = std::sync::OnceLock::new();
    let cache = crate::cache::Cache::open(store);
    cache.watch(context.root());
    let pulled = std::sync::Mutex::new(BTreeMap::new());
    import_caches(store, opts, &cache, progress)?;
    let shared = Shared {
        store,
        opts,
        df: &df,
        context: &context,
        lexer: &lexer,
        cache: &cache,
        sandbox: &sandbox,
        pulled: &pulled,
        next_id: &next_id,
        work: &work,
        progress,
        multi: platforms.len() > 1,
    };
    // Each platform's graph runs on its own; stages they share (a builder stage pinned to
    // $BUILDPLATFORM) have the same cache keys, and the cache runs each key once.
    let finished: Vec<Result<(Built, usize)>> = if let [(p, graph, target)] = graphs.as_slice() {
        vec![build_platform(&shared, p, graph, *target)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = graphs
                .iter()
                .map(|(p, graph, target)| {
                    let shared = &shared;
                    scope.spawn(move || build_platform(shared, p, graph, *target))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Instruction {
                            instruction: "build".into(),
                            message: "a platform's thread panicked".into(),
                        })
                    })
                })
                .collect()
        })
    };
    let mut built = Vec::new();
    let mut target = 0;
    for f in finished {
        let (b, t) = f?;
        target = t;
        built.push(b);
    }
    cache.save()?;
    export_caches(store, opts, &cache, target, &sandbox, progress)?;
    Ok(built)
}

/// `--cache-from`: every source's records, before the first step looks.
fn import_caches(
    store: &Store,
    opts: &BuildOptions,
    cache: &crate::cache::Cache,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    for src in &opts.cache_from {
        use crate::cache::CacheImport;
        match src {
            CacheImport::Local(dir) => cache.import(store, dir)?,
            CacheImport::Registry(reference) => {
                let Some(registry) = &opts.registry else {
                    return Err(CacheError::NoRegistry {
                        flag: "--cache-from",
                        reference: reference.to_string(),
                    }
                    .into());
                };
                if !crate::cache::import_registry(store, cache, reference, registry, progress)? {
                    progress(Event::Warning(format!(
                        "--cache-from {}: no cache there yet",
                        reference.familiar()
                    )));
                }
            }
            CacheImport::Image(name) => {
                if !import_image_cache(store, cache, name)? {
                    // A CI run's first build has no cache yet: that is no reason to fail.
                    progress(Event::Warning(format!(
                        "--cache-from {name}: no such image, or it has no inline cache"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `--cache-to`: this build's records, to each destination, with its cache mounts when asked.
fn export_caches(
    store: &Store,
    opts: &BuildOptions,
    cache: &crate::cache::Cache,
    target: usize,
    sandbox: &SandboxCell,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<()> {
    for dest in &opts.cache_to {
        match dest {
            crate::cache::CacheExport::Local { dir, max, mounts } => {
                let mounts = export_mounts(store, opts, cache, *mounts, sandbox, progress)?;
                cache.export(store, dir, *max, target, mounts)?;
            }
            crate::cache::CacheExport::Registry {
                reference,
                max,
                mounts,
            } => {
                let registry = opts
                    .registry
                    .as_ref()
                    .ok_or_else(|| CacheError::NoRegistry {
                        flag: "--cache-to",
                        reference: reference.to_string(),
                    })?;
                let mounts = export_mounts(store, opts, cache, *mounts, sandbox, progress)?;
                let manifest = cache.export_to_store(store, *max, target, mounts)?;
                cairn_layers::registry::push(store, &manifest, reference, registry, &|_| {})
                    .map_err(|source| CacheError::Push {
                        image: reference.familiar(),
                        source,
                    })?;
            }
            crate::cache::CacheExport::Inline => {}
        }
    }
    Ok(())
}

/// The build's sandbox, made at its first RUN (or for its cache mounts' export).
type SandboxCell = std::sync::OnceLock<Result<crate::sandbox::Sandbox, std::sync::Arc<Error>>>;

/// The cache mounts to export (`mounts=true`): read by the build's sandbox, made now when
/// every step was a hit, since a user's caches hold mapped owners only it can read.
fn export_mounts(
    store: &Store,
    opts: &BuildOptions,
    cache: &crate::cache::Cache,
    mounts: Option<crate::cache::MountExport>,
    sandbox: &SandboxCell,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<Vec<crate::cache::ExportedMount>> {
    let Some(mounts) = mounts else {
        return Ok(Vec::new());
    };
    let made = sandbox.get_or_init(|| {
        let helper = opts.helper.clone().ok_or_else(|| {
            Error::Sandbox("this build has no sandbox helper to read its cache mounts".into())
        })?;
        Ok(crate::sandbox::Sandbox::new(
            helper,
            store,
            opts.snapshotter,
            opts.limits.clone(),
            opts.isolation,
        )?)
    });
    let sb = made.as_ref().map_err(|e| match &**e {
        Error::Sandbox(m) => Error::Sandbox(m.clone()),
        _ => Error::Shared(e.clone()),
    })?;
    cache.export_mounts(store, sb, mounts, opts.compression, &|m| {
        progress(Event::Warning(format!(
            "--cache-to: cache mount {} ({} bytes) is left out: the mounts used more recently \
             fill mounts-max-size={}",
            m.id, m.layer.size, mounts.max_size
        )))
    })
}

/// Builds the target stage for one platform; returns its image and the target's index.
fn build_platform(
    shared: &Shared<'_>,
    platform: &Platform,
    graph: &StageGraph,
    target: usize,
) -> Result<(Built, usize)> {
    let Shared {
        store,
        opts,
        df,
        lexer,
        cache,
        progress,
        ..
    } = *shared;
    let work = if shared.multi {
        shared.work.0.join(platform.to_string().replace('/', "-"))
    } else {
        shared.work.0.clone()
    };
    std::fs::create_dir_all(&work).map_err(|source| Error::Io {
        action: "create",
        path: work.clone(),
        source,
    })?;

    // The global ARGs, for FROM lines and for stages that declare them again.
    let mut globals = platform_args(platform);
    for arg in &df.global_args {
        if let InstructionKind::Arg { args: defs } = &arg.kind {
            declare(
                &mut globals,
                defs,
                &BTreeMap::new(),
                &opts.build_args,
                lexer,
            )
            .map_err(|e| at_with(opts, arg.span, "ARG", e))?;
        }
    }

    let epoch = opts.source_date_epoch;
    let trail = crate::trail::Trail::default();
    let mut results: BTreeMap<usize, StageResult> = BTreeMap::new();
    let plan = Plan::new(df, graph, target);
    let label = shared.multi.then(|| platform.to_string());
    // Stages of one wave need nothing from each other: they run in parallel.
    for wave in &plan.waves {
        let finished: Vec<(usize, Result<StageResult>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&index| {
                    let cx = Ctx {
                        store,
                        opts,
                        context: shared.context,
                        df,
                        globals: &globals,
                        results: &results,
                        lexer,
                        epoch,
                        sandbox: shared.sandbox,
                        progress,
                        cache,
                        pulled: shared.pulled,
                        platform,
                        trail: &trail,
                    };
                    let (plan, work, label) = (&plan, &work, &label);
                    let next_id = shared.next_id;
                    scope.spawn(move || {
                        let stage = StageRun {
                            graph,
                            plan,
                            work,
                            index,
                            next_id,
                            label: label.as_deref(),
                        };
                        (index, build_stage(&cx, &stage))
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
    let all_hits = results.values().all(|r| r.all_hits) && result.all_hits;
    let (manifest, config) = image(store, opts, cache, target, &result, all_hits)?;
    let built = Built {
        manifest,
        config,
        platform: result.platform,
        rootfs: result.rootfs,
        pending: std::sync::Mutex::new(result.pending),
        _work: shared.work.clone(),
        trail: trail.take(),
    };
    Ok((built, target))
}

/// The target stage's image, stored: the one the same steps made before when every step was
/// a hit, else a new config and manifest.
fn image(
    store: &Store,
    opts: &BuildOptions,
    cache: &crate::cache::Cache,
    target: usize,
    result: &StageResult,
    all_hits: bool,
) -> Result<(cairn_layers::image::Descriptor, ImageConfig)> {
    let epoch = opts.source_date_epoch;
    let mut config = result.config.clone();
    opts.edits.apply(&mut config);
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
    // A deferred image's manifest carries its mark; an eager one's layers are compressed.
    let deferred = opts
        .deferring()
        .then(|| cairn_layers::deferred::mark(opts.compression));
    image_key.field("deferred", deferred.as_deref().unwrap_or(""));
    let mut annotations = opts.edits.annotations_for(&result.platform);
    for (k, v) in &annotations {
        image_key.field("annotation", format!("{k}={v}"));
    }
    // Only when asked: the images of builds without it keep their keys.
    if opts.squash != crate::options::Squash::No {
        image_key.field("squash", format!("{:?}", opts.squash));
    }
    let image_key = image_key.finish();
    if let Some(found) = all_hits
        .then(|| cache.get_image(store, &image_key))
        .flatten()
    {
        return Ok(found);
    }
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
    if let Some(m) = deferred {
        annotations.insert(cairn_layers::deferred::ANNOTATION.to_owned(), m);
    }
    let layers = crate::squash::squash(store, opts, cache, result, &mut config)?;
    let mut manifest = store.put_image_with(&config, layers, annotations)?;
    if !opts.deferring() {
        manifest = cairn_layers::deferred::compress_plain(store, &manifest, opts.compression)?;
    }
    cache.put_image(&image_key, &manifest)?;
    Ok((manifest, config))
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

/// One stage to build, and where it stands in its platform's build.
struct StageRun<'a> {
    graph: &'a StageGraph,
    plan: &'a Plan,
    work: &'a Path,
    index: usize,
    next_id: &'a AtomicUsize,
    /// The platform, when the build has more than one: step lines name it.
    label: Option<&'a str>,
}

/// Builds one stage, whose needs are all in `cx.results`.
fn build_stage(cx: &Ctx<'_>, run: &StageRun<'_>) -> Result<StageResult> {
    let Ctx {
        store,
        opts,
        df,
        progress,
        ..
    } = *cx;
    let StageRun {
        graph,
        plan,
        work,
        index,
        next_id,
        label,
    } = *run;
    let stage = &df.stages[index];
    // BuildKit's step names: `[platform stage N/M]`, an unnamed stage of several called
    // `stage-N`, the one stage of a Dockerfile unnamed.
    let name = match (&stage.name, df.stages.len()) {
        (Some(n), _) => n.clone(),
        (None, 1) => String::new(),
        (None, _) => format!("stage-{index}"),
    };
    let stage_name = match label {
        Some(p) if name.is_empty() => p.to_owned(),
        Some(p) => format!("{p} {name}"),
        None => name,
    };
    let rootfs = work.join(format!("stage-{index}"));
    // FROM scratch is no step in BuildKit's count: there is nothing to fetch.
    let scratch = graph.bases[index].eq_ignore_ascii_case("scratch")
        && !graph
            .edges
            .iter()
            .any(|e| e.stage == index && e.kind == cairn_parser::EdgeKind::From);
    let from_steps = usize::from(!scratch);
    let total = stage.instructions.len() + from_steps;
    let step_id = if scratch {
        0
    } else {
        next_id.fetch_add(1, Ordering::Relaxed) + 1
    };
    let started = Instant::now();
    if !scratch {
        progress(Event::Step {
            id: step_id,
            stage: stage_name.clone(),
            index: 1,
            total,
            // `FROM ${BASE}` shows the image the variables named, as BuildKit shows it.
            text: if stage.base.contains('$') {
                stage.original.replacen(&stage.base, &graph.bases[index], 1)
            } else {
                stage.original.clone()
            },
        });
    }
    let (mut st, onbuild) = from::start(cx, graph, index, rootfs, step_id)?;
    if !scratch {
        progress(Event::Done {
            id: step_id,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // ONBUILD triggers of the base image run first, as Docker runs them.
    let mut triggers = Vec::new();
    for t in onbuild.unwrap_or_default() {
        let parsed = cairn_parser::parse("ONBUILD", &format!("FROM scratch\n{t}\n"))?;
        triggers.extend(parsed.stages[0].instructions.clone());
    }
    // Where each step is, for explaining misses: the context (canonical since it was opened)
    // and the Dockerfile, then the stage and step numbers.
    let place = format!("{}\0{}", cx.context.root().display(), opts.dockerfile_name);
    for (i, ins) in triggers.iter().chain(&stage.instructions).enumerate() {
        let step_id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        progress(Event::Step {
            id: step_id,
            stage: stage_name.clone(),
            index: i + 1 + from_steps,
            total,
            text: ins.original.clone(),
        });
        if crate::sandbox::cancelled() {
            return Err(Error::Cancelled);
        }
        st.start_step(format!("{place}\0{index}\0{i}"));
        let outcome = step(cx, &mut st, ins, step_id)?;
        cx.trail.step(crate::trail::StepTrace {
            stage: stage_name.clone(),
            instruction: ins.original.clone(),
            key: st.key().hex(),
            cached: outcome == Outcome::Cached,
        });
        match outcome {
            Outcome::Cached => progress(Event::Cached { id: step_id }),
            outcome => {
                if outcome == Outcome::Ran {
                    st.ran();
                }
                progress(Event::Done {
                    id: step_id,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
        }
    }
    // Settled now as far as the stages that read its files need (see `Settle`).
    let partial = match plan.settle(index) {
        Settle::Nothing => None,
        Settle::All => {
            st.settle(store)?;
            None
        }
        Settle::Under(prefixes) => st
            .settle_under(cx.cache, store, prefixes)?
            .then(|| prefixes.clone()),
    };
    Ok(st.finish(partial))
}
