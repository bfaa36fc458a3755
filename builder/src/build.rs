//! The build: stages in dependency order, waves of independent stages in parallel, each
//! instruction applied to its stage, the target stage's image stored and its cache exported.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_layers::Store;
use cairn_layers::image::timestamp;
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

pub use crate::options::{BuildOptions, NamedContext};
pub use crate::progress::{Event, Phase};
pub use crate::stage::Built;

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
            crate::sandbox::wait_removals();
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
        .map_err(|e| Error::Target(*e.kind))?;
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
            .map_err(|e| at_with(opts, arg.span, "ARG", e))?;
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
                    return Err(CacheError::NoRegistry {
                        flag: "--cache-from",
                        reference: reference.to_string(),
                    }
                    .into());
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
    let plan = Plan::new(&df, &graph, target);
    // Stages of one wave need nothing from each other: they run in parallel.
    for wave in &plan.waves {
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
                        cache: &cache,
                        pulled: &pulled,
                    };
                    let (graph, plan, work, next_id) = (&graph, &plan, &work, &next_id);
                    scope.spawn(move || {
                        (
                            index,
                            build_stage(&cx, graph, plan, &work.0, index, next_id, progress),
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
    // A deferred image's manifest carries its mark; an eager one's layers are compressed.
    let deferred = opts
        .deferring()
        .then(|| cairn_layers::deferred::mark(opts.compression));
    image_key.field("deferred", deferred.as_deref().unwrap_or(""));
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
            let annotations = deferred
                .map(|m| [(cairn_layers::deferred::ANNOTATION.to_owned(), m)].into())
                .unwrap_or_default();
            let mut manifest = store.put_image_with(&config, result.layers, annotations)?;
            if !opts.deferring() {
                manifest =
                    cairn_layers::deferred::compress_plain(store, &manifest, opts.compression)?;
            }
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
                let registry = opts
                    .registry
                    .as_ref()
                    .ok_or_else(|| CacheError::NoRegistry {
                        flag: "--cache-to",
                        reference: reference.to_string(),
                    })?;
                let manifest = cache.export_to_store(store, *max, target)?;
                cairn_layers::registry::push(store, &manifest, reference, registry, &|_| {})
                    .map_err(|source| CacheError::Push {
                        image: reference.familiar(),
                        source,
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
    plan: &Plan,
    work: &Path,
    index: usize,
    next_id: &AtomicUsize,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<StageResult> {
    let Ctx {
        store, opts, df, ..
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
    let (mut st, onbuild) = from::start(cx, graph, index, rootfs, step_id)?;
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
    // Where each step is, for explaining misses: the context (canonical since it was opened)
    // and the Dockerfile, then the stage and step numbers.
    let place = format!("{}\0{}", cx.context.root().display(), opts.dockerfile_name);
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
        st.start_step(format!("{place}\0{index}\0{i}"));
        match step(cx, &mut st, ins, step_id)? {
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
