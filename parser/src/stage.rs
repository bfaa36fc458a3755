//! Typed instructions grouped into build stages, with the ARGs declared before the first FROM.

use serde::Serialize;

use crate::directive::Directives;
use crate::error::{ErrorKind, ParseError, Warning};
use crate::instruction::{Instruction, InstructionKind};
use crate::raw::Ast;
use crate::span::Span;

/// A parsed Dockerfile: directives, global ARGs, stages, and the warnings met on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// ARG instructions before the first FROM: usable in FROM lines, and in stages that
    /// declare them again.
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
    pub warnings: Vec<Warning>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// The base as written (image reference, stage name or `scratch`; ARGs unexpanded).
    pub base: String,
    pub platform: Option<String>,
    /// The FROM line.
    pub span: Span,
    pub original: String,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The name to show for this stage: its `AS` name, or its index.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

impl Dockerfile {
    /// The index of the stage with this `AS` name (any case, as BuildKit matches names):
    /// the one stage-by-name lookup, for FROM, `--from`, `--target` and the builder.
    pub fn stage_named(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }

    /// The stage `name` means where a stage may be named or numbered (`--from`, `--target`):
    /// its name, else its index (digits only, as the stage graph reads it). Names cannot be
    /// all digits, so the two never clash.
    pub fn stage_ref(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.stage_named(name) {
            return Some(i);
        }
        if !is_index(name) {
            return None;
        }
        name.parse::<usize>()
            .ok()
            .filter(|&i| i < self.stages.len())
    }
}

/// Whether a `--from` or `--target` value numbers a stage rather than naming one: all digits.
pub(crate) fn is_index(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn build(ast: &Ast) -> Result<Dockerfile, ParseError> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        let instruction = Instruction::from_node(node)?;
        match &instruction.kind {
            InstructionKind::From(from) => {
                if let Some(name) = &from.name
                    && let Some(first) = stages.iter().find(|s| s.name.as_ref() == Some(name))
                {
                    return Err(ParseError::new(
                        ErrorKind::DuplicateStageName {
                            name: name.clone(),
                            first_line: first.span.start.line,
                        },
                        node.args_span,
                    ));
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: from.name.clone(),
                    base: from.base.clone(),
                    platform: from.platform.clone(),
                    span: instruction.span,
                    original: instruction.original.clone(),
                    instructions: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None if matches!(instruction.kind, InstructionKind::Arg { .. }) => {
                    global_args.push(instruction)
                }
                None => {
                    let kw_end = node.keyword.chars().count() as u32;
                    let mut span = Span::point(node.span.start);
                    span.end.col += kw_end.saturating_sub(1);
                    return Err(ParseError::new(
                        ErrorKind::BeforeFrom(instruction.keyword().to_owned()),
                        span,
                    ));
                }
            },
        }
    }
    if stages.is_empty() {
        let at = ast.nodes.last().map(|n| n.span).unwrap_or_default();
        return Err(ParseError::new(
            ErrorKind::Instruction {
                instruction: "FROM".into(),
                message: "is missing: a Dockerfile needs at least one stage".into(),
            },
            at,
        ));
    }
    Ok(Dockerfile {
        directives: ast.directives.clone(),
        global_args,
        stages,
        warnings: ast.warnings.clone(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn stages_by_name_or_index() {
        let df = crate::parse(
            "Dockerfile",
            "FROM busybox AS Build\nFROM busybox AS test\nFROM busybox\n",
        )
        .unwrap();
        // (name, stage_named, stage_ref)
        let cases = [
            ("build", Some(0), Some(0)),
            ("BUILD", Some(0), Some(0)),
            ("test", Some(1), Some(1)),
            ("2", None, Some(2)),
            ("+1", None, None),
            ("3", None, None),
            ("busybox", None, None),
            ("", None, None),
        ];
        for (name, named, any) in cases {
            assert_eq!(df.stage_named(name), named, "{name:?}");
            assert_eq!(df.stage_ref(name), any, "{name:?}");
        }
    }
}
