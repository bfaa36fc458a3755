//! `cairn check` and a build's lint pass: BuildKit's lint rules with what only the builder
//! knows — the `.dockerignore` of the context and the environment of base images in the
//! store — added to the parser's checks.

use std::collections::BTreeMap;

use cairn_layers::Store;
use cairn_layers::platform::Platform;
use cairn_parser::lint::{CheckConfig, LintOptions, Report, Resolver};
use cairn_parser::{ParseError, StageGraph};

use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::options::BuildOptions;
use crate::step::args::platform_args;

/// The build arg that replaces the Dockerfile's `# check=` options, as BuildKit reads it.
pub const CHECK_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What `cairn check` found: the warnings, and the error a build would stop at, if any.
#[derive(Debug)]
pub struct Checked {
    pub report: Report,
    /// The Dockerfile's own error (parse, stage graph, target), found after the warnings.
    pub error: Option<ParseError>,
}

/// The builder's answers to the linter's questions.
struct Known<'a> {
    store: Option<&'a Store>,
    platform: &'a Platform,
    context: &'a BuildContext,
}

impl Resolver for Known<'_> {
    /// Only the store is asked, never a registry: a check reads, it does not pull. An image
    /// not in the store leaves its stages' variables unknown.
    fn image_env(&self, image: &str) -> Option<Vec<(String, String)>> {
        let store = self.store?;
        let (_, d) = store.resolve(image).ok()?;
        let d = store.image_for(&d, self.platform).ok()?;
        let img = store.image(&d).ok()?;
        Some(
            img.config
                .config
                .env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect(),
        )
    }

    /// BuildKit's check: none with `!` exceptions (a file inside an excluded directory may be
    /// let back in), and the context root only when a pattern excludes everything at the top.
    fn ignored_source(&self, src: &str) -> bool {
        let m = self.context.matcher();
        if m.is_empty() || m.has_exceptions() {
            return false;
        }
        if src == "." || src == "/" {
            return m.excludes_every_root_entry();
        }
        m.excluded(src).unwrap_or(false)
    }
}

/// What a lint pass reads: the Dockerfile and the build's target, platform and build args.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    pub dockerfile_name: &'a str,
    pub dockerfile: &'a str,
    pub target: Option<&'a str>,
    pub platform: &'a Platform,
    pub build_args: &'a BTreeMap<String, String>,
    /// Walk every stage (a check without `--target`), not only those the target needs.
    pub all_stages: bool,
}

impl<'a> LintInput<'a> {
    /// A build's lint pass: the stages its target needs, for its first platform.
    pub fn of_build(opts: &'a BuildOptions, platform: &'a Platform) -> Self {
        LintInput {
            dockerfile_name: &opts.dockerfile_name,
            dockerfile: &opts.dockerfile,
            target: opts.target.as_deref(),
            platform,
            build_args: &opts.build_args,
            all_stages: false,
        }
    }
}

/// Lints a Dockerfile. Base images' variables come from `store` (never a registry); the
/// context is read only for its ignore file.
pub fn check(
    store: Option<&Store>,
    input: LintInput<'_>,
    context: &BuildContext,
) -> Result<Checked> {
    let file = input.dockerfile_name;
    let src = input.dockerfile;
    let ast = match cairn_parser::parse_ast(file, src) {
        Ok(ast) => ast,
        Err(e) => {
            return Ok(Checked {
                report: Report::default(),
                error: Some(e),
            });
        }
    };
    let platform_args = platform_args(input.platform);
    let mut args = platform_args.clone();
    args.extend(input.build_args.clone());
    let mut error = None;
    let mut stages = None;
    match cairn_parser::parse(file, src) {
        Ok(df) => match StageGraph::new(&df, &args) {
            Ok(graph) => match graph.target(&df, input.target) {
                Ok(target) if !(input.all_stages && input.target.is_none()) => {
                    stages = Some(graph.reachable(target).into_iter().flatten().collect());
                }
                Ok(_) => {}
                Err(e) => error = Some(e.with_source(file, src)),
            },
            Err(e) => error = Some(e.with_source(file, src)),
        },
        Err(e) => error = Some(e),
    }
    let config = input
        .build_args
        .get(CHECK_ARG)
        .map(|v| CheckConfig::parse(v))
        .transpose()
        .map_err(|e| Error::Instruction {
            instruction: format!("--build-arg {CHECK_ARG}"),
            message: e.to_string(),
        })?;
    let lint_opts = LintOptions {
        platform_args: platform_args.into_iter().collect(),
        build_args: input
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        stages,
        config,
    };
    let known = Known {
        store,
        platform: input.platform,
        context,
    };
    let report =
        cairn_parser::lint::lint(&ast, &lint_opts, &known).map_err(|e| Error::Instruction {
            instruction: "# check=".into(),
            message: format!("failed to parse check options: {e}"),
        })?;
    Ok(Checked { report, error })
}
