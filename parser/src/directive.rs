//! Parser directives (`# syntax=`, `# escape=`, `# check=`), honoured only at the top of a file.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{satisfy, space0};
use nom::combinator::{recognize, rest};
use nom::sequence::preceded;
use serde::Serialize;

use crate::error::{ErrorKind, ParseError};
use crate::span::{Pos, Span};

/// A directive as written: its lowercased name, its value, and where it stood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub span: Span,
}

/// The directives of a Dockerfile, and the escape token they select.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// The escape token: `\` unless `# escape=` chose a backtick.
    pub escape: char,
    pub syntax: Option<Directive>,
    pub escape_directive: Option<Directive>,
    pub check: Option<Directive>,
    /// Set once the first line that is not a directive has been seen.
    #[serde(skip)]
    done: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            escape_directive: None,
            check: None,
            done: false,
        }
    }
}

/// `#` blanks name blanks `=` blanks value; the value keeps inner blanks, loses trailing ones.
fn directive_line(input: &str) -> IResult<&str, (&str, &str)> {
    let blanks = || take_while(|c| c == ' ' || c == '\t');
    let name = recognize((
        satisfy(|c| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
    ));
    let (input, (_, _, name, _, _, _)) =
        (tag("#"), blanks(), name, blanks(), tag("="), blanks()).parse(input)?;
    let (input, value) = preceded(space0, rest).parse(input)?;
    let value = value.trim_end_matches([' ', '\t']);
    // `.+?` in BuildKit's pattern: the value must not be empty.
    let (_, value) = take_while1(|_| true).parse(value)?;
    Ok((input, (name, value)))
}

impl Directives {
    /// Looks at a physical line (already left-trimmed) while the directive block is open;
    /// true when the line was taken as a directive (so it is no comment for what follows).
    pub(crate) fn observe(&mut self, line: &str, number: u32) -> Result<bool, ParseError> {
        if self.done {
            return Ok(false);
        }
        let Ok((_, (name, value))) = directive_line(line) else {
            self.done = true;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        let span = Span::new(
            Pos::new(number, 1),
            Pos::new(number, line.chars().count() as u32),
        );
        let directive = Directive {
            name: name.clone(),
            value: value.to_owned(),
            span,
        };
        let slot = match name.as_str() {
            "syntax" => &mut self.syntax,
            "escape" => &mut self.escape_directive,
            "check" => &mut self.check,
            _ => {
                self.done = true;
                return Ok(false);
            }
        };
        if slot.is_some() {
            return Err(ParseError::new(ErrorKind::DuplicateDirective(name), span));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError::new(
                        ErrorKind::InvalidEscapeToken(other.to_owned()),
                        span,
                    ));
                }
            };
        }
        *slot = Some(directive);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_lines() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("# escape=`", Some(("escape", "`"))),
            ("#escape = `  ", Some(("escape", "`"))),
            (
                "# syntax = docker/dockerfile:1",
                Some(("syntax", "docker/dockerfile:1")),
            ),
            ("# check=skip=all", Some(("check", "skip=all"))),
            ("# ESCAPE=\\", Some(("ESCAPE", "\\"))),
            ("# escape=", None),
            ("# just a comment", None),
            ("#1x=y", None),
            ("FROM x", None),
        ];
        for &(line, want) in cases {
            assert_eq!(directive_line(line).ok().map(|(_, v)| v), want, "{line:?}");
        }
    }

    #[test]
    fn block_rules() {
        let mut d = Directives::default();
        d.observe("# escape=`", 1).unwrap();
        assert_eq!(d.escape, '`');
        d.observe("# syntax=x", 2).unwrap();
        d.observe("# unknown=1", 3).unwrap();
        d.observe("# check=late", 4).unwrap();
        assert!(d.check.is_none(), "directives end at the first unknown one");

        let mut d = Directives::default();
        d.observe("# escape=`", 1).unwrap();
        let err = d.observe("# Escape=\\", 2).unwrap_err();
        assert_eq!(*err.kind, ErrorKind::DuplicateDirective("escape".into()));

        let mut d = Directives::default();
        let err = d.observe("# escape=x", 1).unwrap_err();
        assert_eq!(*err.kind, ErrorKind::InvalidEscapeToken("x".into()));
    }
}
