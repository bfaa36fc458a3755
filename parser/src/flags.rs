//! Instruction flags (`--name=value`): which each instruction takes, and their validation.

use crate::error::{ErrorKind, ParseError};
use crate::raw::RawFlag;
use crate::span::Span;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link` or `--link=true|false`.
    Bool,
    /// `--from=x`, once.
    String,
    /// `--mount=...`, any number of times.
    Repeated,
}

/// The flags one instruction accepts.
pub(crate) type FlagSpec = &'static [(&'static str, FlagKind)];

pub(crate) const FROM: FlagSpec = &[("platform", FlagKind::String)];
pub(crate) const RUN: FlagSpec = &[
    ("mount", FlagKind::Repeated),
    ("network", FlagKind::String),
    ("security", FlagKind::String),
];
pub(crate) const COPY: FlagSpec = &[
    ("from", FlagKind::String),
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::Repeated),
];
pub(crate) const ADD: FlagSpec = &[
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("exclude", FlagKind::Repeated),
    ("checksum", FlagKind::String),
    ("keep-git-dir", FlagKind::Bool),
    ("unpack", FlagKind::Bool),
];
pub(crate) const HEALTHCHECK: FlagSpec = &[
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];
pub(crate) const NONE: FlagSpec = &[];

/// A flag's value with the span of the flag that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlagValue {
    pub value: String,
    pub span: Span,
}

/// The flags given to one instruction, checked against its spec.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(&'static str, FlagValue)>,
}

impl Flags {
    /// Checks `raw` against `spec`: unknown, duplicate and malformed flags are errors that name
    /// the flag and list the allowed ones.
    pub fn parse(instruction: &str, raw: &[RawFlag], spec: FlagSpec) -> Result<Flags, ParseError> {
        let mut flags = Flags::default();
        for flag in raw {
            let err = |kind| ParseError::new(kind, flag.span);
            let body = flag.text.strip_prefix("--").ok_or_else(|| {
                err(ErrorKind::FlagValue {
                    flag: flag.text.clone(),
                    message: "flags must start with --".to_owned(),
                })
            })?;
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let lower = name.to_ascii_lowercase();
            let Some(&(spec_name, kind)) = spec.iter().find(|(n, _)| *n == lower) else {
                return Err(err(ErrorKind::UnknownFlag {
                    instruction: instruction.to_owned(),
                    flag: name.to_owned(),
                    suggestion: crate::suggest::nearest(&lower, spec.iter().map(|(n, _)| *n)),
                    allowed: spec.iter().map(|(n, _)| *n).collect(),
                }));
            };
            if kind != FlagKind::Repeated && flags.get(spec_name).is_some() {
                return Err(err(ErrorKind::DuplicateFlag(spec_name.to_owned())));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_owned(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "false" => v.to_ascii_lowercase(),
                    _ => {
                        return Err(err(ErrorKind::FlagValue {
                            flag: spec_name.to_owned(),
                            message: format!("expecting true or false, not {v:?}"),
                        }));
                    }
                },
                (_, None) => {
                    return Err(err(ErrorKind::FlagValue {
                        flag: spec_name.to_owned(),
                        message: "missing a value (write --{name}=VALUE)"
                            .replace("{name}", spec_name),
                    }));
                }
                (_, Some(v)) => v.to_owned(),
            };
            flags.values.push((
                spec_name,
                FlagValue {
                    value,
                    span: flag.span,
                },
            ));
        }
        Ok(flags)
    }

    /// The value of a single-valued flag.
    pub fn get(&self, name: &str) -> Option<&FlagValue> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.value.clone())
    }

    pub fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.value == "true")
    }

    pub fn opt_bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v.value == "true")
    }

    /// Every value of a repeatable flag, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &FlagValue> {
        self.values
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(texts: &[&str]) -> Vec<RawFlag> {
        texts
            .iter()
            .map(|t| RawFlag {
                text: (*t).to_owned(),
                span: Span::default(),
            })
            .collect()
    }

    #[test]
    fn accepted() {
        let f = Flags::parse(
            "COPY",
            &raw(&[
                "--from=build",
                "--link",
                "--exclude=a",
                "--exclude=b",
                "--parents=false",
            ]),
            COPY,
        )
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("build"));
        assert!(f.bool("link"));
        assert!(!f.bool("parents"));
        assert_eq!(
            f.all("exclude")
                .map(|v| v.value.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn rejected() {
        let cases: &[(&[&str], FlagSpec, &str)] = &[
            (
                &["--chwon=1"],
                COPY,
                "unknown flag: --chwon for COPY (did you mean --chown?)",
            ),
            (
                &["--from=a", "--from=b"],
                COPY,
                "duplicate flag specified: --from",
            ),
            (
                &["--link=maybe"],
                COPY,
                "invalid value for --link: expecting true or false",
            ),
            (
                &["--from"],
                COPY,
                "invalid value for --from: missing a value",
            ),
            (&["--platform=x"], NONE, "(allowed: none)"),
        ];
        for &(flags, spec, want) in cases {
            let err = Flags::parse("COPY", &raw(flags), spec).unwrap_err();
            assert!(
                err.kind.to_string().contains(want),
                "{flags:?}: {}",
                err.kind
            );
        }
    }
}
