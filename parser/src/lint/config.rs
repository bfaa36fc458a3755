//! `# check=skip=…;error=true;experimental=…`: which rules run and whether they fail the build.

use std::collections::BTreeSet;

use serde::Serialize;

use super::rules::Rule;

/// The options of a `# check=` directive, a `# check=` comment before one instruction, or
/// `BUILDKIT_DOCKERFILE_CHECK`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub experimental_all: bool,
    pub experimental: BTreeSet<String>,
    /// `error=true`: a warning fails the build.
    pub error: bool,
}

/// A `check` value that BuildKit refuses, with its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckOptionError {
    #[error("invalid check option {0:?}")]
    Invalid(String),
    #[error("failed to parse check option {0:?}: {1:?} is not a boolean")]
    Bool(String, String),
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn names(v: &str) -> BTreeSet<String> {
    v.split(',').map(|n| n.trim().to_owned()).collect()
}

impl CheckConfig {
    /// Parses `skip=A,B|all;error=BOOL;experimental=C|all` as BuildKit's `ParseLintOptions`
    /// does: at most three `;` parts (a fourth stays inside the third), each `key=value`.
    pub fn parse(text: &str) -> Result<CheckConfig, CheckOptionError> {
        let mut config = CheckConfig::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(CheckOptionError::Invalid(part.to_owned()));
            };
            let value = value.trim();
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config.skip = names(value),
                "experimental" if value == "all" => config.experimental_all = true,
                "experimental" => config.experimental = names(value),
                "error" => {
                    config.error = go_bool(value)
                        .ok_or_else(|| CheckOptionError::Bool(part.to_owned(), value.to_owned()))?;
                }
                other => return Err(CheckOptionError::Invalid(other.to_owned())),
            }
        }
        Ok(config)
    }

    /// Whether `rule` reports under these options: an experimental rule only when asked
    /// for, any other unless skipped.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }

    /// These options with an instruction's own `# check=` comment added: its skips and
    /// experiments join these; `error` stays the file's. Only the first `check=` comment
    /// counts, its value ends at the first blank (so `# check=skip=X // why` works), and one
    /// that does not parse changes nothing.
    pub fn for_comments(&self, comments: &[String]) -> CheckConfig {
        let Some(value) = comments.iter().find_map(|c| check_comment(c)) else {
            return self.clone();
        };
        let value = value.split(' ').next().unwrap_or_default();
        let Ok(other) = CheckConfig::parse(value) else {
            return self.clone();
        };
        let mut merged = self.clone();
        merged.skip_all |= other.skip_all;
        merged.skip.extend(other.skip);
        merged.experimental_all |= other.experimental_all;
        merged.experimental.extend(other.experimental);
        merged
    }
}

/// The value of a comment that reads as a `check` directive (`check = VALUE`).
fn check_comment(comment: &str) -> Option<&str> {
    let (name, value) = comment.split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("check") {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::rules;

    #[test]
    fn parse_options() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let cases: &[(&str, Result<CheckConfig, CheckOptionError>)] = &[
            ("", Ok(CheckConfig::default())),
            (
                "skip=all;error=true",
                Ok(CheckConfig {
                    skip_all: true,
                    error: true,
                    ..Default::default()
                }),
            ),
            (
                " skip = A , B ; experimental=all",
                Ok(CheckConfig {
                    skip: set(&["A", "B"]),
                    experimental_all: true,
                    ..Default::default()
                }),
            ),
            (
                "error=1",
                Ok(CheckConfig {
                    error: true,
                    ..Default::default()
                }),
            ),
            ("skip", Err(CheckOptionError::Invalid("skip".into()))),
            ("nope=1", Err(CheckOptionError::Invalid("nope".into()))),
            (
                "error=yes",
                Err(CheckOptionError::Bool("error=yes".into(), "yes".into())),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&CheckConfig::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn comments_add_to_the_file_options() {
        let file = CheckConfig::parse("skip=StageNameCasing;error=true").unwrap();
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let merged = file.for_comments(&c(&[
            "a comment",
            "check=skip=MaintainerDeprecated // allowed here",
            "check=skip=all",
        ]));
        assert!(merged.error);
        assert!(!merged.enabled(&rules::MAINTAINER_DEPRECATED));
        assert!(!merged.enabled(&rules::STAGE_NAME_CASING));
        assert!(
            merged.enabled(&rules::FROM_AS_CASING),
            "only the first check= counts"
        );
        assert!(!merged.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        let exp = file.for_comments(&c(&["check=experimental=InvalidDefinitionDescription"]));
        assert!(exp.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
        assert_eq!(file.for_comments(&c(&["check=bogus"])), file);
    }
}
