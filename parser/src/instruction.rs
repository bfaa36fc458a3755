//! Typed instructions: each raw node checked (flags, argument counts, forms) and given its shape.
//!
//! Values stay as written: variables are expanded by the builder with each stage's environment
//! (see [`crate::expand`]), so `COPY $SRC /dst` keeps `$SRC` here.

use serde::Serialize;

use crate::error::{ErrorKind, ParseError};
use crate::flags::{self, FlagSpec, Flags};
use crate::mount::Mount;
use crate::raw::{Heredoc, Node, parse_heredoc_word};
use crate::span::Span;

/// Every instruction keyword, as the typed layer knows them.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One instruction: what it is, where it is and how it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    pub span: Span,
    /// The logical line as written, continuations joined.
    pub original: String,
    #[serde(flatten)]
    pub kind: InstructionKind,
}

/// The instruction and its checked arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum InstructionKind {
    From(From),
    Run(Run),
    Cmd {
        command: Command,
    },
    Entrypoint {
        command: Command,
    },
    Shell {
        shell: Vec<String>,
    },
    Copy(Copy),
    Add(Add),
    Env {
        vars: Vec<KeyValue>,
    },
    Arg {
        args: Vec<ArgDef>,
    },
    Label {
        labels: Vec<KeyValue>,
    },
    Workdir {
        path: String,
    },
    User {
        user: String,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    #[serde(rename = "STOPSIGNAL")]
    StopSignal {
        signal: String,
    },
    Healthcheck(Healthcheck),
    Maintainer {
        name: String,
    },
    Onbuild {
        trigger: Box<Instruction>,
    },
}

/// `FROM [--platform=P] IMAGE [AS NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The base as written: an image reference, a stage name, `scratch`, or text with ARGs.
    pub base: String,
    /// The stage name, lowercased (stage names are case-insensitive).
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// How a command is given: a shell string (`RUN make`) or an exec array (`RUN ["make"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

impl Command {
    fn from_node(node: &Node) -> Command {
        if node.json {
            Command::Exec(node.args.clone())
        } else {
            Command::Shell(node.args.first().cloned().unwrap_or_default())
        }
    }
}

/// `RUN [--mount=...] [--network=...] [--security=...] COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: Command,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
    /// Heredocs opened on the RUN line; a lone `RUN <<EOF` runs its body as the script.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

/// A COPY or ADD source: a path (or URL, or pattern) or a heredoc's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Path(String),
    Heredoc(Heredoc),
}

/// `COPY [flags] SRC... DEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sources: Vec<Source>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// `ADD [flags] SRC... DEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    pub sources: Vec<Source>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// `--unpack`: `None` means ADD's default (unpack local archives, not remote ones).
    pub unpack: Option<bool>,
}

/// `KEY=VALUE` for ENV and LABEL; the value is still quoted and unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ARG NAME[=DEFAULT]`; the default is still quoted and unexpanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDef {
    pub name: String,
    pub default: Option<String>,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`. Durations are in nanoseconds,
/// as the image config stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "test", rename_all = "UPPERCASE")]
pub enum Healthcheck {
    None,
    Cmd {
        command: Command,
        interval: Option<u64>,
        timeout: Option<u64>,
        start_period: Option<u64>,
        start_interval: Option<u64>,
        retries: Option<u32>,
    },
}

fn instruction_error(node: &Node, message: impl Into<String>) -> ParseError {
    ParseError::new(
        ErrorKind::Instruction {
            instruction: node.keyword.to_ascii_uppercase(),
            message: message.into(),
        },
        node.span,
    )
}

impl Instruction {
    /// Types and checks one raw node.
    pub fn from_node(node: &Node) -> Result<Instruction, ParseError> {
        let upper = node.keyword.to_ascii_uppercase();
        let flags = |spec: FlagSpec| Flags::parse(&upper, &node.flags, spec);
        let no_flags = || flags(flags::NONE);
        let at_least_one = || {
            if node.args.is_empty() {
                Err(instruction_error(node, "requires at least one argument"))
            } else {
                Ok(())
            }
        };
        let exactly_one = || match node.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(instruction_error(node, "requires exactly one argument")),
        };
        let kind = match upper.as_str() {
            "FROM" => {
                let f = flags(flags::FROM)?;
                let (base, name) = match node.args.as_slice() {
                    [base] => (base.clone(), None),
                    [base, kw, name] if kw.eq_ignore_ascii_case("as") => {
                        (base.clone(), Some(checked_stage_name(node, name)?))
                    }
                    _ => {
                        return Err(instruction_error(
                            node,
                            "requires either one or three arguments: FROM IMAGE [AS NAME]",
                        ));
                    }
                };
                InstructionKind::From(From {
                    base,
                    name,
                    platform: f.string("platform"),
                })
            }
            "RUN" => {
                let f = flags(flags::RUN)?;
                if node.args.is_empty() {
                    return Err(instruction_error(node, "requires at least one argument"));
                }
                let mounts = f
                    .all("mount")
                    .enumerate()
                    .map(|(i, v)| {
                        Mount::parse(&v.value, i)
                            .map_err(|e| ParseError::new(ErrorKind::Mount(e), v.span))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let network = match f.get("network") {
                    None => None,
                    Some(v) => Some(match v.value.as_str() {
                        "default" => NetworkMode::Default,
                        "none" => NetworkMode::None,
                        "host" => NetworkMode::Host,
                        other => {
                            return Err(bad_value(
                                "network",
                                other,
                                "default, none or host",
                                v.span,
                            ));
                        }
                    }),
                };
                let security = match f.get("security") {
                    None => None,
                    Some(v) => Some(match v.value.as_str() {
                        "sandbox" => SecurityMode::Sandbox,
                        "insecure" => SecurityMode::Insecure,
                        other => {
                            return Err(bad_value(
                                "security",
                                other,
                                "sandbox or insecure",
                                v.span,
                            ));
                        }
                    }),
                };
                InstructionKind::Run(Run {
                    command: Command::from_node(node),
                    mounts,
                    network,
                    security,
                    heredocs: node.heredocs.clone(),
                })
            }
            "CMD" => {
                no_flags()?;
                InstructionKind::Cmd {
                    command: Command::from_node(node),
                }
            }
            "ENTRYPOINT" => {
                no_flags()?;
                InstructionKind::Entrypoint {
                    command: Command::from_node(node),
                }
            }
            "SHELL" => {
                no_flags()?;
                if !node.json {
                    return Err(instruction_error(
                        node,
                        "requires the arguments to be in JSON form, as in SHELL [\"/bin/sh\", \"-c\"]",
                    ));
                }
                at_least_one()?;
                InstructionKind::Shell {
                    shell: node.args.clone(),
                }
            }
            "COPY" => {
                let f = flags(flags::COPY)?;
                let (sources, dest) = sources_and_dest(node)?;
                check_chmod(&f)?;
                InstructionKind::Copy(Copy {
                    sources,
                    dest,
                    from: f.string("from"),
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link"),
                    parents: f.bool("parents"),
                    excludes: f.all("exclude").map(|v| v.value.clone()).collect(),
                })
            }
            "ADD" => {
                let f = flags(flags::ADD)?;
                let (sources, dest) = sources_and_dest(node)?;
                check_chmod(&f)?;
                if let Some(v) = f.get("checksum") {
                    check_checksum(&v.value).map_err(|m| {
                        ParseError::new(
                            ErrorKind::FlagValue {
                                flag: "checksum".into(),
                                message: m,
                            },
                            v.span,
                        )
                    })?;
                }
                InstructionKind::Add(Add {
                    sources,
                    dest,
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.bool("link"),
                    excludes: f.all("exclude").map(|v| v.value.clone()).collect(),
                    checksum: f.string("checksum"),
                    keep_git_dir: f.bool("keep-git-dir"),
                    unpack: f.opt_bool("unpack"),
                })
            }
            "ENV" | "LABEL" => {
                no_flags()?;
                at_least_one()?;
                let mut pairs = Vec::new();
                for triple in node.args.chunks(3) {
                    let [key, value, _sep] = triple else {
                        return Err(instruction_error(node, "has a malformed KEY=VALUE list"));
                    };
                    if key.is_empty() {
                        return Err(instruction_error(node, "names can not be blank"));
                    }
                    pairs.push(KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
                if upper == "ENV" {
                    InstructionKind::Env { vars: pairs }
                } else {
                    InstructionKind::Label { labels: pairs }
                }
            }
            "ARG" => {
                no_flags()?;
                at_least_one()?;
                let mut args = Vec::new();
                for word in &node.args {
                    let (name, default) = match word.split_once('=') {
                        Some((n, d)) => (n, Some(d.to_owned())),
                        None => (word.as_str(), None),
                    };
                    if name.is_empty() {
                        return Err(instruction_error(node, "names can not be blank"));
                    }
                    args.push(ArgDef {
                        name: name.to_owned(),
                        default,
                    });
                }
                InstructionKind::Arg { args }
            }
            "WORKDIR" => {
                no_flags()?;
                InstructionKind::Workdir {
                    path: exactly_one()?,
                }
            }
            "USER" => {
                no_flags()?;
                InstructionKind::User {
                    user: exactly_one()?,
                }
            }
            "STOPSIGNAL" => {
                no_flags()?;
                InstructionKind::StopSignal {
                    signal: exactly_one()?,
                }
            }
            "MAINTAINER" => {
                no_flags()?;
                InstructionKind::Maintainer {
                    name: exactly_one()?,
                }
            }
            "EXPOSE" => {
                no_flags()?;
                at_least_one()?;
                InstructionKind::Expose {
                    ports: node.args.clone(),
                }
            }
            "VOLUME" => {
                no_flags()?;
                at_least_one()?;
                let mut paths = Vec::new();
                for p in &node.args {
                    let p = p.trim();
                    if p.is_empty() {
                        return Err(instruction_error(
                            node,
                            "specified can not be an empty string",
                        ));
                    }
                    paths.push(p.to_owned());
                }
                InstructionKind::Volume { paths }
            }
            "HEALTHCHECK" => healthcheck(node, &flags(flags::HEALTHCHECK)?)?,
            "ONBUILD" => {
                no_flags()?;
                let Some(sub) = &node.sub else {
                    return Err(instruction_error(node, "requires at least one argument"));
                };
                let inner = sub.keyword.to_ascii_uppercase();
                if matches!(inner.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(ParseError::new(
                        ErrorKind::OnbuildNotAllowed(inner),
                        sub.span,
                    ));
                }
                InstructionKind::Onbuild {
                    trigger: Box::new(Instruction::from_node(sub)?),
                }
            }
            _ => {
                let span = Span::new(
                    node.span.start,
                    crate::span::Pos::new(
                        node.span.start.line,
                        node.span.start.col + node.keyword.chars().count() as u32 - 1,
                    ),
                );
                return Err(ParseError::new(
                    ErrorKind::UnknownInstruction {
                        name: node.keyword.clone(),
                        suggestion: crate::suggest::nearest(
                            &node.keyword,
                            KEYWORDS.iter().copied(),
                        ),
                    },
                    span,
                ));
            }
        };
        Ok(Instruction {
            span: node.span,
            original: node.original.clone(),
            kind,
        })
    }

    /// The instruction keyword, uppercase.
    pub fn keyword(&self) -> &'static str {
        match &self.kind {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd { .. } => "CMD",
            InstructionKind::Entrypoint { .. } => "ENTRYPOINT",
            InstructionKind::Shell { .. } => "SHELL",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Env { .. } => "ENV",
            InstructionKind::Arg { .. } => "ARG",
            InstructionKind::Label { .. } => "LABEL",
            InstructionKind::Workdir { .. } => "WORKDIR",
            InstructionKind::User { .. } => "USER",
            InstructionKind::Expose { .. } => "EXPOSE",
            InstructionKind::Volume { .. } => "VOLUME",
            InstructionKind::StopSignal { .. } => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Maintainer { .. } => "MAINTAINER",
            InstructionKind::Onbuild { .. } => "ONBUILD",
        }
    }
}

fn bad_value(flag: &str, value: &str, allowed: &str, span: Span) -> ParseError {
    ParseError::new(
        ErrorKind::FlagValue {
            flag: flag.to_owned(),
            message: format!("{value:?} is not one of {allowed}"),
        },
        span,
    )
}

/// Stage names: a letter, then letters, digits, `-`, `_` and `.`; compared case-insensitively.
fn checked_stage_name(node: &Node, name: &str) -> Result<String, ParseError> {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(lower)
    } else {
        Err(ParseError::new(
            ErrorKind::InvalidStageName(name.to_owned()),
            node.args_span,
        ))
    }
}

/// COPY and ADD: the last argument is the destination; heredoc words among the sources take
/// the heredoc bodies in order.
fn sources_and_dest(node: &Node) -> Result<(Vec<Source>, String), ParseError> {
    let Some((dest, srcs)) = node.args.split_last() else {
        return Err(instruction_error(
            node,
            "requires at least two arguments: SRC... DEST",
        ));
    };
    if srcs.is_empty() {
        return Err(instruction_error(
            node,
            "requires at least two arguments, but only one was provided: the destination could not be determined",
        ));
    }
    let mut heredocs = node.heredocs.iter();
    let mut sources = Vec::with_capacity(srcs.len());
    for src in srcs {
        let doc = if node.json {
            None
        } else {
            parse_heredoc_word(src).and_then(|_| heredocs.next())
        };
        sources.push(match doc {
            Some(doc) => Source::Heredoc(doc.clone()),
            None => Source::Path(src.clone()),
        });
    }
    Ok((sources, dest.clone()))
}

/// `--chmod`: octal (`755`, `0644`) or symbolic (`u+x,go-w`, `go=u`, `a=rX`), read as
/// BuildKit reads it ([`crate::chmod::Mode`]); values with variables are left to the builder.
fn check_chmod(f: &Flags) -> Result<(), ParseError> {
    let Some(v) = f.get("chmod") else {
        return Ok(());
    };
    let s = v.value.as_str();
    if s.contains('$') {
        return Ok(());
    }
    crate::chmod::Mode::parse(s).map(|_| ()).map_err(|e| {
        ParseError::new(
            ErrorKind::FlagValue {
                flag: "chmod".into(),
                message: e.to_string(),
            },
            v.span,
        )
    })
}

/// `--checksum=ALGO:HEX` for ADD (sha256, sha384 or sha512), unless it holds variables; or
/// hex digits alone, a git source's commit (or a prefix of it), which the builder checks.
fn check_checksum(s: &str) -> Result<(), String> {
    if s.contains('$')
        || (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Ok(());
    }
    let (algo, hex) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not of the form sha256:HEX (or a git commit)"))?;
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported digest algorithm {algo:?} (use sha256, sha384 or sha512)"
            ));
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} does not have {len} hex digits after {algo}:"
        ));
    }
    Ok(())
}

fn healthcheck(node: &Node, f: &Flags) -> Result<InstructionKind, ParseError> {
    let Some(typ) = node.args.first() else {
        return Err(instruction_error(node, "requires at least one argument"));
    };
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if node.args.len() > 1 {
                return Err(instruction_error(node, "NONE takes no arguments"));
            }
            Ok(InstructionKind::Healthcheck(Healthcheck::None))
        }
        "CMD" => {
            if node.args.len() < 2 {
                return Err(instruction_error(node, "CMD needs a command after it"));
            }
            let command = if node.json {
                Command::Exec(node.args[1..].to_vec())
            } else {
                Command::Shell(node.args[1].clone())
            };
            let duration = |name: &str| -> Result<Option<u64>, ParseError> {
                let Some(v) = f.get(name) else {
                    return Ok(None);
                };
                let err = |message: String| {
                    ParseError::new(
                        ErrorKind::FlagValue {
                            flag: name.to_owned(),
                            message,
                        },
                        v.span,
                    )
                };
                let ns = crate::duration::parse_go_duration(&v.value).map_err(err)?;
                // Zero means "use the default"; anything else below 1ms is refused, as Docker does.
                if ns != 0 && ns < 1_000_000 {
                    return Err(err(format!("{:?} cannot be less than 1ms", v.value)));
                }
                Ok(Some(ns))
            };
            let retries = match f.get("retries") {
                None => None,
                Some(v) => Some(v.value.parse::<u32>().map_err(|_| {
                    ParseError::new(
                        ErrorKind::FlagValue {
                            flag: "retries".into(),
                            message: format!("{:?} is not a whole number of zero or more", v.value),
                        },
                        v.span,
                    )
                })?),
            };
            Ok(InstructionKind::Healthcheck(Healthcheck::Cmd {
                command,
                interval: duration("interval")?,
                timeout: duration("timeout")?,
                start_period: duration("start-period")?,
                start_interval: duration("start-interval")?,
                retries,
            }))
        }
        other => Err(instruction_error(
            node,
            format!("has an unknown type {other:?} (use CMD or NONE)"),
        )),
    }
}
