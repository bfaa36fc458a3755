//! FROM: a stage's start from its base (a stage, scratch, a named context or an image), the
//! base's platform checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_layers::IdMap;
use cairn_layers::image::ImageConfig;
use cairn_layers::layer::write_layer;
use cairn_layers::platform::Platform;
use cairn_parser::StageGraph;

use super::ctx::{Ctx, at, at_with, at_with_context};
use super::source::named_context;
use crate::error::Result;
use crate::meta::{self, MetaState};
use crate::options::NamedContext;
use crate::stage::StageState;

/// The stage `index` as its FROM leaves it, to be built in `rootfs`, and the base's ONBUILD
/// triggers (which run first).
pub(crate) fn start(
    cx: &Ctx<'_>,
    graph: &StageGraph,
    index: usize,
    rootfs: PathBuf,
    step_id: usize,
) -> Result<(StageState, Option<Vec<String>>)> {
    let Ctx {
        store,
        opts,
        df,
        results,
        epoch,
        ..
    } = *cx;
    let stage = &df.stages[index];
    let base = &graph.bases[index];
    let from_stage = graph
        .edges
        .iter()
        .find(|e| e.stage == index && e.kind == cairn_parser::EdgeKind::From)
        .map(|e| e.needs);
    let platform = stage_platform(cx, stage, from_stage)?;
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
        // BuildKit's emptyImage: working directory `/` (PATH is added below), and the
        // stage's platform.
        let mut config = ImageConfig::scratch();
        config.config.working_dir = "/".into();
        config.os = platform.os.clone();
        config.architecture = platform.architecture.clone();
        config.variant = platform.variant.clone();
        (config, Vec::new())
    } else {
        let named = named_context(&opts.contexts, base);
        match named {
            Some(NamedContext::OciLayout { dir, tag }) => {
                let manifest =
                    cairn_layers::archive::layout_image_for(store, &dir, tag.as_deref(), &platform)
                        .map_err(|e| at_with(opts, stage.span, "FROM", e))?;
                base_id = format!("image:{}", manifest.digest);
                cx.trail.material(base, &manifest, &platform);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &platform, &img.config)?;
                (img.config, img.manifest.layers)
            }
            Some(NamedContext::Dir(dir)) => {
                // A directory as a base: an image with one layer holding the directory.
                let layer = write_layer(store, opts.layer_compression(), |w| {
                    let tar_opts = cairn_layers::diff::TarOptions {
                        id_map: IdMap::identity(),
                        clamp_mtime: epoch,
                    };
                    cairn_layers::diff::write_dir(&dir, w, &tar_opts).map(|_| ())
                })?;
                let mut config = ImageConfig::scratch();
                config.os = platform.os.clone();
                config.architecture = platform.architecture.clone();
                config.variant = platform.variant.clone();
                base_id = format!("layer:{}", layer.diff_id);
                config.rootfs.diff_ids.push(layer.diff_id);
                (config, vec![layer.descriptor])
            }
            None => {
                let manifest = cx
                    .image(base, step_id, &platform, || {
                        format!("image {base:?} is not in the store; load it first with `cairn load -i PATH -t {base}`")
                    })
                    .map_err(|e| at_with(opts, stage.span, "FROM", e))?;
                base_id = format!("image:{}", manifest.digest);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &platform, &img.config)?;
                (img.config, img.manifest.layers)
            }
        }
    };
    // The first COPY wants the base's directories; its first RUN unpacks it meanwhile.
    cx.cache.read_ahead_listings(store, &layers);
    let mut from_key = crate::cache::KeyHasher::new("FROM", &crate::cache::Key::root());
    from_key.field("base", &base_id);
    from_key.field("platform", platform.to_string());
    let no_cache = opts.no_cache
        || opts
            .no_cache_filter
            .iter()
            .any(|f| df.stage_ref(f) == Some(index));
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
    let mut st = StageState::new(
        config,
        layers,
        rootfs,
        inherited,
        from_key.finish(),
        no_cache,
        index,
    );
    st.platform = platform;
    Ok((st, onbuild))
}

/// The platform a stage builds for: its base stage's, else its FROM's `--platform` (ARGs
/// expanded), else the build's.
fn stage_platform(
    cx: &Ctx<'_>,
    stage: &cairn_parser::Stage,
    from_stage: Option<usize>,
) -> Result<Platform> {
    if let Some(dep) = from_stage
        && let Some(r) = cx.results.get(&dep)
    {
        return Ok(r.platform.clone());
    }
    let Some(raw) = &stage.platform else {
        return Ok(cx.platform.clone());
    };
    let wanted = cx.lexer.process_word(raw, cx.globals).map_err(|e| {
        at_with_context(cx.opts, stage.span, "FROM", format!("--platform={raw}"), e)
    })?;
    if wanted.is_empty() {
        return Ok(cx.platform.clone());
    }
    Platform::parse(&wanted)
        .map_err(|e| at_with_context(cx.opts, stage.span, "FROM", format!("--platform={raw}"), e))
}

/// A base image for another platform than the stage's is an error naming both, not an image
/// silently built for the base's. (BuildKit warns and builds; its RUN steps would then run
/// binaries of the wrong platform.)
pub(crate) fn check_platform(
    cx: &Ctx<'_>,
    stage: &cairn_parser::Stage,
    base: &str,
    wanted: &Platform,
    config: &ImageConfig,
) -> Result<()> {
    let found = Platform::of_config(config);
    if found.os.is_empty() && found.architecture.is_empty() {
        return Ok(());
    }
    if !wanted.matches(&found) {
        return Err(at(
            cx.opts,
            stage.span,
            "FROM",
            format!(
                "the base image {base:?} is {found}, not {wanted}: build for {found} \
                 (--platform {found}), or use a base that has an image for {wanted}"
            ),
        ));
    }
    Ok(())
}
