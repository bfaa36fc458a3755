//! FROM: a stage's start from its base (a stage, scratch, a named context or an image), the
//! base's platform checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_layers::IdMap;
use cairn_layers::image::ImageConfig;
use cairn_layers::layer::write_layer;
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
        let named = named_context(&opts.contexts, base);
        match named {
            Some(NamedContext::OciLayout { dir, tag }) => {
                let manifest = cairn_layers::archive::layout_image(store, &dir, tag.as_deref())
                    .map_err(|e| at_with(opts, stage.span, "FROM", e))?;
                base_id = format!("image:{}", manifest.digest);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &img.config)?;
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
                base_id = format!("layer:{}", layer.diff_id);
                config.rootfs.diff_ids.push(layer.diff_id);
                (config, vec![layer.descriptor])
            }
            None => {
                let manifest = cx
                    .image(base, step_id, || {
                        format!("image {base:?} is not in the store; load it first with `cairn load -i PATH -t {base}`")
                    })
                    .map_err(|e| at_with(opts, stage.span, "FROM", e))?;
                base_id = format!("image:{}", manifest.digest);
                let img = store.image(&manifest)?;
                check_platform(cx, stage, base, &img.config)?;
                (img.config, img.manifest.layers)
            }
        }
    };
    // The first COPY wants the base's directories; its first RUN unpacks it meanwhile.
    cx.cache.read_ahead_listings(store, &layers);
    let mut from_key = crate::cache::KeyHasher::new("FROM", &crate::cache::Key::root());
    from_key.field("base", &base_id);
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
    let st = StageState::new(
        config,
        layers,
        rootfs,
        inherited,
        from_key.finish(),
        no_cache,
        index,
    );
    Ok((st, onbuild))
}

/// An `os/arch[/variant]` (or a bare arch, on linux) as containerd normalises it: arch aliases
/// to their Go names, arm64's default variant v8 dropped.
pub(crate) fn normal_platform(spec: &str) -> (String, String, Option<String>) {
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
pub(crate) fn check_platform(
    cx: &Ctx<'_>,
    stage: &cairn_parser::Stage,
    base: &str,
    config: &ImageConfig,
) -> Result<()> {
    let Some(raw) = &stage.platform else {
        return Ok(());
    };
    let wanted = cx.lexer.process_word(raw, cx.globals).map_err(|e| {
        at_with_context(cx.opts, stage.span, "FROM", format!("--platform={raw}"), e)
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
