//! The checks BuildKit makes as it lays out each stage: FROM's ARGs and platform for every
//! stage, then, for the stages walked, each instruction with the variables set at that point.

use std::collections::BTreeSet;

use super::config::CheckConfig;
use super::reference::{is_valid, platform_parts};
use super::syntax::{File, LintStage};
use super::{LintOptions, Resolver, Sink, rules};
use crate::expand::Lexer;
use crate::instruction::{Command, InstructionKind, Source};
use crate::raw::{Ast, Node};
use crate::span::Span;

/// BuildKit's default PATH, which a `scratch` stage starts with.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args BuildKit reads itself and never puts in a stage's environment.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// What a stage hands to the stages built on it.
#[derive(Clone, Default)]
struct State {
    env: Vec<(String, String)>,
    /// False when the base image's environment is unknown: no UndefinedVar then.
    known: bool,
    /// ARGs declared along the way (set or not): never "undefined".
    declared: BTreeSet<String>,
    /// A SHELL was set: CMD and ENTRYPOINT's shell form is then the user's choice.
    shell: bool,
    /// An absolute WORKDIR was already chosen here: later relative ones are fine.
    workdir: bool,
}

pub(crate) fn check(
    ast: &Ast,
    file: &File<'_>,
    opts: &LintOptions,
    config: &CheckConfig,
    resolver: &dyn Resolver,
    sink: &mut Sink,
) {
    let lexer = Lexer::new(ast.directives.escape);
    let (globals, declared) = meta_args(file, &lexer, &opts.platform_args, &opts.build_args);
    default_base_names(file, &lexer, &opts.platform_args, config, sink);
    let mut arg_keys: Vec<String> = declared.iter().cloned().collect();
    arg_keys.extend(globals.iter().map(|(k, _)| k.clone()));
    let mut finals: Vec<Option<State>> = Vec::new();
    for (index, stage) in file.stages.iter().enumerate() {
        let config = config.for_comments(&stage.from.comments);
        let base = from_checks(stage, &lexer, &globals, &arg_keys, &config, sink);
        let walk = opts.stages.as_ref().is_none_or(|s| s.contains(&index));
        if !walk {
            finals.push(None);
            continue;
        }
        let parent = file.stages[..index].iter().rposition(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&base))
        });
        let state = match parent {
            Some(p) => finals[p].clone().unwrap_or_default(),
            None if base.eq_ignore_ascii_case("scratch") => State {
                env: vec![("PATH".into(), DEFAULT_PATH.into())],
                known: true,
                ..State::default()
            },
            None => match resolver.image_env(&base) {
                Some(env) => State {
                    env,
                    known: true,
                    ..State::default()
                },
                None => State::default(),
            },
        };
        let mut walker = Walker {
            lexer: &lexer,
            state,
            globals: &globals,
            build_args: &opts.build_args,
            resolver,
            sink: &mut *sink,
            cmd: None,
            entrypoint: None,
            healthcheck: None,
        };
        for (node, instruction) in &stage.instructions {
            let config = config.for_comments(&node.comments);
            walker.instruction(node, &instruction.kind, &config);
        }
        finals.push(Some(walker.state));
    }
}

/// The ARGs before the first FROM as the FROM lines see them: BuildKit's predefined ARGs,
/// then each global ARG's build-arg value or default. Also every global ARG's name.
fn meta_args(
    file: &File<'_>,
    lexer: &Lexer,
    platform_args: &[(String, String)],
    build_args: &[(String, String)],
) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut env: Vec<(String, String)> = platform_args.to_vec();
    let mut declared = BTreeSet::new();
    for (_, instruction) in &file.global_args {
        let InstructionKind::Arg { args } = &instruction.kind else {
            continue;
        };
        for arg in args {
            declared.insert(arg.name.clone());
            let given = build_args.iter().rev().find(|(k, _)| *k == arg.name);
            let value = match (given, &arg.default) {
                (Some((_, v)), _) => Some(v.clone()),
                (None, Some(d)) => lexer.process_word(d, &env).ok(),
                (None, None) => None,
            };
            if let Some(v) = value {
                env.push((arg.name.clone(), v));
            }
        }
    }
    (env, declared)
}

/// InvalidDefaultArgInFrom: each FROM with the global ARGs' defaults alone, as a build with
/// no `--build-arg` would see it, must still name an image.
fn default_base_names(
    file: &File<'_>,
    lexer: &Lexer,
    platform_args: &[(String, String)],
    config: &CheckConfig,
    sink: &mut Sink,
) {
    let (defaults, _) = meta_args(file, lexer, platform_args, &[]);
    for stage in &file.stages {
        let Ok(name) = lexer.process_word(&stage.base, &defaults) else {
            return;
        };
        if !is_valid(&name) {
            sink.warn(
                config,
                &rules::INVALID_DEFAULT_ARG_IN_FROM,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    stage.base
                ),
                stage.from.span,
            );
        }
    }
}

/// UndefinedArgInFrom, RedundantTargetPlatform and FromPlatformFlagConstDisallowed; returns
/// the base name with the ARGs expanded.
fn from_checks(
    stage: &LintStage<'_>,
    lexer: &Lexer,
    globals: &[(String, String)],
    arg_keys: &[String],
    config: &CheckConfig,
    sink: &mut Sink,
) -> String {
    let span = stage.from.span;
    let undeclared = |unmatched: &BTreeSet<String>, sink: &mut Sink| {
        for arg in unmatched.iter().filter(|a| !arg_keys.contains(a)) {
            let mut message = format!("FROM argument '{arg}' is not declared");
            if let Some(s) = search(arg, arg_keys.iter().map(String::as_str)) {
                message.push_str(&format!(" (did you mean {s}?)"));
            }
            sink.warn(config, &rules::UNDEFINED_ARG_IN_FROM, message, span);
        }
    };
    let base = match lexer.process_word_with_matches(&stage.base, globals) {
        Ok(e) => {
            undeclared(&e.unmatched, sink);
            e.value
        }
        Err(_) => stage.base.clone(),
    };
    let Some(platform) = &stage.platform else {
        return base;
    };
    let Ok(m) = lexer.process_word_with_matches(platform, globals) else {
        return base;
    };
    undeclared(&m.unmatched, sink);
    let target = globals.iter().rev().find(|(k, _)| k == "TARGETPLATFORM");
    if m.unmatched.is_empty()
        && m.matched.len() == 1
        && m.matched.contains("TARGETPLATFORM")
        && target.is_some_and(|(_, v)| *v == m.value)
    {
        sink.warn(
            config,
            &rules::REDUNDANT_TARGET_PLATFORM,
            format!(
                "Setting platform to predefined {platform} in FROM is redundant as this is the default behavior"
            ),
            span,
        );
    }
    if m.matched.is_empty()
        && m.unmatched.is_empty()
        && let Some((os, arch)) = platform_parts(&m.value)
    {
        // A stage named for its platform (`AS build-arm64`) pins it on purpose.
        let name = stage.name.as_deref().unwrap_or_default();
        if !name.contains(&os) && !name.contains(&arch) {
            sink.warn(
                config,
                &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                format!(
                    "FROM --platform flag should not use constant value {:?}",
                    m.value
                ),
                span,
            );
        }
    }
    base
}

/// BuildKit's `suggest.Search`, case-sensitive: the option nearest to `word` by Levenshtein
/// distance, closer than 3; none when `word` is itself an option.
fn search<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for option in options {
        if option == word {
            return None;
        }
        let d = levenshtein(word, option);
        if d < min {
            min = d;
            best = Some(option);
        }
    }
    best.map(str::to_owned)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Whether a key names a secret: one of BuildKit's words as the whole key or its first or
/// last `_` part, unless `public`, `file` or `version` is one too.
fn is_secret_key(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    // `(?i)(?:_|^)word(?:_|$)`: the word is one of the key's `_`-separated parts.
    let lower = key.to_lowercase();
    let parts: Vec<&str> = lower.split('_').collect();
    let hit = |words: &[&str]| parts.iter().any(|p| words.contains(p));
    hit(DENY) && !hit(ALLOW)
}

/// Go's `filepath.Clean` for a slash path.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// One stage's walk: its variables as each instruction sees them.
struct Walker<'a, 's> {
    lexer: &'a Lexer,
    state: State,
    globals: &'a [(String, String)],
    build_args: &'a [(String, String)],
    resolver: &'a dyn Resolver,
    sink: &'s mut Sink,
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
}

impl Walker<'_, '_> {
    /// A word expanded as BuildKit expands it at dispatch, each unset variable reported.
    fn expand(&mut self, word: &str, span: Span, config: &CheckConfig) -> String {
        let Ok(e) = self.lexer.process_word_with_matches(word, &self.state.env) else {
            return word.to_owned();
        };
        if self.state.known {
            for name in &e.unmatched {
                if self.state.declared.contains(name) || NON_ENV_ARGS.contains(&name.as_str()) {
                    continue;
                }
                let mut message = format!("Usage of undefined variable '${name}'");
                if let Some(s) = search(name, self.state.env.iter().map(|(k, _)| k.as_str())) {
                    message.push_str(&format!(" (did you mean ${s}?)"));
                }
                self.sink.warn(config, &rules::UNDEFINED_VAR, message, span);
            }
        }
        e.value
    }

    fn set(&mut self, key: String, value: String) {
        self.state.env.retain(|(k, _)| *k != key);
        self.state.env.push((key, value));
    }

    fn used_once(
        &mut self,
        node: &Node,
        which: fn(&mut Self) -> &mut Option<Span>,
        config: &CheckConfig,
    ) {
        if let Some(previous) = which(self).replace(node.span) {
            self.sink.warn(
                config,
                &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                format!(
                    "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                    node.keyword
                ),
                previous,
            );
        }
    }

    fn legacy_form(&mut self, node: &Node, config: &CheckConfig) {
        // Key/value/separator triples: an empty separator is `KEY VALUE`.
        if node
            .args
            .chunks(3)
            .any(|t| t.get(2).is_some_and(String::is_empty))
        {
            let k = &node.keyword;
            self.sink.warn(
                config,
                &rules::LEGACY_KEY_VALUE_FORMAT,
                format!(
                    "\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"
                ),
                node.span,
            );
        }
    }

    fn secret(&mut self, instruction: &str, key: &str, span: Span, config: &CheckConfig) {
        if is_secret_key(key) {
            self.sink.warn(
                config,
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
                span,
            );
        }
    }

    fn json_args(&mut self, node: &Node, command: &Command, config: &CheckConfig) {
        if matches!(command, Command::Shell(_)) && !self.state.shell {
            self.sink.warn(
                config,
                &rules::JSON_ARGS_RECOMMENDED,
                format!(
                    "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                    node.keyword
                ),
                node.span,
            );
        }
    }

    /// COPY and ADD: the words expanded, and CopyIgnoredFile for sources from the context.
    fn copy(&mut self, node: &Node, c: CopyLike<'_>, config: &CheckConfig) {
        let span = node.span;
        for flag in [c.chown, c.chmod].into_iter().flatten() {
            self.expand(flag, span, config);
        }
        let verb = if c.add { "Add" } else { "Copy" };
        for source in c.sources {
            let Source::Path(raw) = source else { continue };
            let src = self.expand(raw, span, config);
            let remote = src.contains("://") || src.starts_with("git@");
            if c.from_context && !(c.add && remote) {
                let src = clean(&src);
                if self.resolver.ignored_source(&src) {
                    self.sink.warn(
                        config,
                        &rules::COPY_IGNORED_FILE,
                        format!(
                            "Attempting to {verb} file {src:?} that is excluded by .dockerignore"
                        ),
                        span,
                    );
                }
            }
        }
        self.expand(c.dest, span, config);
    }

    fn expose(&mut self, node: &Node, ports: &[String], config: &CheckConfig) {
        for word in ports {
            let Ok(split) = self.lexer.process_words(word, &self.state.env) else {
                continue;
            };
            for raw in split {
                // `[ip:]host:container[/proto]`, split as BuildKit splits it.
                let parts: Vec<&str> = raw.split(':').collect();
                let n = parts.len();
                let (ip, host, container) = match n {
                    1 => (String::new(), "", parts[0]),
                    2 => (String::new(), parts[0], parts[1]),
                    _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
                };
                let (port, proto) = container.split_once('/').unwrap_or((container, ""));
                let known = ["", "tcp", "udp", "sctp"].contains(&proto.to_lowercase().as_str());
                if port.is_empty() || !known {
                    // A bad port is the build's error, not a warning.
                    continue;
                }
                if proto != proto.to_lowercase() {
                    self.sink.warn(
                        config,
                        &rules::EXPOSE_PROTO_CASING,
                        format!(
                            "Defined protocol '{raw}' in EXPOSE instruction should be lowercase"
                        ),
                        node.span,
                    );
                }
                if !ip.is_empty() || !host.is_empty() {
                    self.sink.warn(
                        config,
                        &rules::EXPOSE_INVALID_FORMAT,
                        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
                        node.span,
                    );
                }
            }
        }
    }

    fn instruction(&mut self, node: &Node, kind: &InstructionKind, config: &CheckConfig) {
        let span = node.span;
        match kind {
            InstructionKind::Env { vars } => {
                let expanded: Vec<(String, String)> = vars
                    .iter()
                    .map(|kv| {
                        let k = self.expand(&kv.key, span, config);
                        (k, self.expand(&kv.value, span, config))
                    })
                    .collect();
                self.legacy_form(node, config);
                for (k, v) in expanded {
                    self.secret("ENV", &k, span, config);
                    self.set(k, v);
                }
            }
            InstructionKind::Label { labels } => {
                for kv in labels {
                    self.expand(&kv.key, span, config);
                    self.expand(&kv.value, span, config);
                }
                self.legacy_form(node, config);
            }
            InstructionKind::Arg { args } => {
                for arg in args {
                    self.secret("ARG", &arg.name, span, config);
                    let given = self.build_args.iter().rev().find(|(k, _)| *k == arg.name);
                    let value = match (given, &arg.default) {
                        (Some((_, v)), _) => Some(v.clone()),
                        (None, Some(d)) => Some(self.expand(d, span, config)),
                        (None, None) => self
                            .globals
                            .iter()
                            .rev()
                            .find(|(k, _)| *k == arg.name)
                            .map(|(_, v)| v.clone()),
                    };
                    if let Some(v) = value
                        && !NON_ENV_ARGS.contains(&arg.name.as_str())
                    {
                        self.set(arg.name.clone(), v);
                    }
                    self.state.declared.insert(arg.name.clone());
                }
            }
            InstructionKind::Workdir { path } => {
                let path = self.expand(path, span, config);
                if !self.state.workdir && !path.starts_with('/') {
                    self.sink.warn(
                        config,
                        &rules::WORKDIR_RELATIVE_PATH,
                        format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                        span,
                    );
                }
                self.state.workdir = true;
            }
            InstructionKind::User { user } => {
                self.expand(user, span, config);
            }
            InstructionKind::Volume { paths } => {
                for p in paths {
                    self.expand(p, span, config);
                }
            }
            InstructionKind::StopSignal { signal } => {
                self.expand(signal, span, config);
            }
            InstructionKind::Expose { ports } => self.expose(node, ports, config),
            InstructionKind::Cmd { command } => {
                self.used_once(node, |w| &mut w.cmd, config);
                self.json_args(node, command, config);
            }
            InstructionKind::Entrypoint { command } => {
                self.used_once(node, |w| &mut w.entrypoint, config);
                self.json_args(node, command, config);
            }
            InstructionKind::Healthcheck(_) => self.used_once(node, |w| &mut w.healthcheck, config),
            InstructionKind::Shell { .. } => self.state.shell = true,
            InstructionKind::Copy(c) => self.copy(
                node,
                CopyLike {
                    sources: &c.sources,
                    dest: &c.dest,
                    chown: c.chown.as_deref(),
                    chmod: c.chmod.as_deref(),
                    add: false,
                    from_context: c.from.is_none(),
                },
                config,
            ),
            InstructionKind::Add(a) => self.copy(
                node,
                CopyLike {
                    sources: &a.sources,
                    dest: &a.dest,
                    chown: a.chown.as_deref(),
                    chmod: a.chmod.as_deref(),
                    add: true,
                    from_context: true,
                },
                config,
            ),
            InstructionKind::From(_)
            | InstructionKind::Run(_)
            | InstructionKind::Maintainer { .. }
            | InstructionKind::Onbuild { .. } => {}
        }
    }
}

/// What COPY and ADD share for the checks.
struct CopyLike<'a> {
    sources: &'a [Source],
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    add: bool,
    from_context: bool,
}
