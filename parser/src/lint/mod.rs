//! BuildKit's Dockerfile lint rules (`docker build --check`): the rule table, `# check=`
//! options, and the checks themselves over the untyped AST.
//!
//! The checks run where BuildKit runs them, so they warn about the same lines: `syntax`
//! while each node is typed (casing, MAINTAINER, descriptions), then over the whole file
//! (stage names, instruction casing, FROM's ARGs and platform), then `dispatch` stage by
//! stage with each stage's variables (UndefinedVar, WORKDIR, ENV/LABEL form, CMD forms,
//! secrets, EXPOSE, ignored COPY sources). What needs the build context or a base image is
//! asked of a [`Resolver`] the caller gives: the parser does no I/O.

mod config;
mod dispatch;
mod reference;
pub mod rules;
mod syntax;

use std::collections::BTreeSet;

use serde::Serialize;

pub use config::{CheckConfig, CheckOptionError};
pub use rules::Rule;

use crate::raw::Ast;
use crate::span::Span;

/// One warning: the rule, BuildKit's message for this case, and the lines it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub rule: &'static Rule,
    pub message: String,
    pub span: Span,
}

impl Serialize for Lint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Lint", 5)?;
        st.serialize_field("rule", self.rule.name)?;
        st.serialize_field("description", self.rule.description)?;
        st.serialize_field("url", &self.rule.url)?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("span", &self.span)?;
        st.end()
    }
}

/// What the linter cannot know from the text: asked by [`lint`] while it walks the stages.
pub trait Resolver {
    /// The environment (`KEY`, `VALUE`) of the image a stage starts from, `image` with its
    /// ARGs expanded; `None` when it is not known, and UndefinedVar then stays quiet in that
    /// stage and the stages built on it rather than guess.
    fn image_env(&self, image: &str) -> Option<Vec<(String, String)>>;
    /// Whether a COPY or ADD source read from the build context (ARGs expanded, cleaned,
    /// slash-separated) is excluded by `.dockerignore`, as BuildKit's check asks it: false
    /// when there is no ignore file or it has `!` exceptions.
    fn ignored_source(&self, src: &str) -> bool;
}

/// A [`Resolver`] that knows nothing: no image environments, no ignore file.
#[derive(Debug)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn image_env(&self, _: &str) -> Option<Vec<(String, String)>> {
        None
    }
    fn ignored_source(&self, _: &str) -> bool {
        false
    }
}

/// What a lint run is for.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// BuildKit's predefined ARGs for the build's platform (`TARGETPLATFORM`, `BUILDOS`, …).
    pub platform_args: Vec<(String, String)>,
    /// `--build-arg` values.
    pub build_args: Vec<(String, String)>,
    /// The stages walked by the stage-by-stage checks: the ones a build of the target runs;
    /// `None` walks them all (`cairn check` without `--target`, as BuildKit's check does).
    pub stages: Option<BTreeSet<usize>>,
    /// `BUILDKIT_DOCKERFILE_CHECK`: replaces the `# check=` directive when given.
    pub config: Option<CheckConfig>,
}

/// The warnings of one run and the options they were found under.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In line order.
    pub lints: Vec<Lint>,
    /// The file's options (`error=true` makes the warnings fail a build).
    pub config: CheckConfig,
}

impl Report {
    /// BuildKit's error when `error=true` and some rule warned: each rule once, by first use.
    pub fn violation(&self) -> Option<String> {
        if !self.config.error || self.lints.is_empty() {
            return None;
        }
        let mut names: Vec<&str> = Vec::new();
        for l in &self.lints {
            if !names.contains(&l.rule.name) {
                names.push(l.rule.name);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            names.join(", ")
        ))
    }
}

/// Collects warnings under the file's options and each instruction's own `# check=` comment.
pub(crate) struct Sink {
    lints: Vec<Lint>,
}

impl Sink {
    pub(crate) fn warn(
        &mut self,
        config: &CheckConfig,
        rule: &'static Rule,
        message: String,
        span: Span,
    ) {
        if config.enabled(rule) {
            self.lints.push(Lint {
                rule,
                message,
                span,
            });
        }
    }
}

/// Runs every check over `ast`. An option string that does not parse is an error, as it is
/// for BuildKit; an instruction that does not parse ends the checks there (the warnings before
/// it are kept), and the caller reports the parse error itself.
pub fn lint(
    ast: &Ast,
    opts: &LintOptions,
    resolver: &dyn Resolver,
) -> Result<Report, CheckOptionError> {
    let config = match &opts.config {
        Some(c) => c.clone(),
        None => match &ast.directives.check {
            Some(d) => CheckConfig::parse(&d.value)?,
            None => CheckConfig::default(),
        },
    };
    let mut sink = Sink { lints: Vec::new() };
    for w in &ast.warnings {
        // BuildKit points at the instruction's last line, where the continuation ends.
        let line = ast
            .nodes
            .iter()
            .find(|n| {
                n.span.start.line <= w.span.start.line && w.span.start.line <= n.args_span.end.line
            })
            .map_or(w.span.start.line, |n| n.args_span.end.line);
        let at = Span::point(crate::span::Pos::new(line, 1));
        sink.warn(
            &config,
            &rules::NO_EMPTY_CONTINUATION,
            "Empty continuation line".to_owned(),
            at,
        );
    }
    if let Some(file) = syntax::check(ast, &config, &mut sink) {
        syntax::check_file(&file, &config, &mut sink);
        dispatch::check(ast, &file, opts, &config, resolver, &mut sink);
    }
    let mut lints = sink.lints;
    // Stable: warnings about one line stay in the order they were found.
    lints.sort_by_key(|l| l.span.start.line);
    Ok(Report { lints, config })
}
