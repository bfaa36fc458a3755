//! The checks BuildKit makes while it types each node and then over the whole file: keyword
//! and stage-name casing, MAINTAINER, definition descriptions, stage names.

use super::config::CheckConfig;
use super::{Sink, rules};
use crate::instruction::{Instruction, InstructionKind};
use crate::raw::{Ast, Node};

/// One stage as the linter walks it: its FROM and its instructions, each with its node.
pub(crate) struct LintStage<'a> {
    pub from: &'a Node,
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub instructions: Vec<(&'a Node, Instruction)>,
}

/// The file typed for the later checks: global ARGs and stages.
pub(crate) struct File<'a> {
    pub global_args: Vec<(&'a Node, Instruction)>,
    pub stages: Vec<LintStage<'a>>,
}

/// The per-node checks, node by node with each node's own `# check=` comment; `None` at the
/// first node that does not type-check (BuildKit stops there too) or when there is no stage.
pub(crate) fn check<'a>(ast: &'a Ast, config: &CheckConfig, sink: &mut Sink) -> Option<File<'a>> {
    let mut file = File {
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for node in &ast.nodes {
        let config = config.for_comments(&node.comments);
        let command = node.command();
        if command == "maintainer" {
            sink.warn(
                &config,
                &rules::MAINTAINER_DEPRECATED,
                "Maintainer instruction is deprecated in favor of using label".to_owned(),
                node.span,
            );
        }
        if command == "from" {
            from_casing(node, &config, sink);
        }
        let instruction = Instruction::from_node(node).ok()?;
        match &instruction.kind {
            InstructionKind::From(from) => {
                if let Some(name) = &from.name {
                    description(node, "FROM", std::slice::from_ref(name), &config, sink);
                }
                file.stages.push(LintStage {
                    from: node,
                    base: from.base.clone(),
                    name: from.name.clone(),
                    platform: from.platform.clone(),
                    instructions: Vec::new(),
                });
            }
            kind => {
                if let InstructionKind::Arg { args } = kind {
                    let keys: Vec<String> = args.iter().map(|a| a.name.clone()).collect();
                    description(node, "ARG", &keys, &config, sink);
                }
                match file.stages.last_mut() {
                    Some(stage) => stage.instructions.push((node, instruction)),
                    None => file.global_args.push((node, instruction)),
                }
            }
        }
    }
    (!file.stages.is_empty()).then_some(file)
}

fn is_one_case(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// StageNameCasing and FromAsCasing: `FROM base AS Name`, `FROM base as name`.
fn from_casing(node: &Node, config: &CheckConfig, sink: &mut Sink) {
    let [_, as_word, name] = node.args.as_slice() else {
        return;
    };
    if *name != name.to_lowercase() {
        sink.warn(
            config,
            &rules::STAGE_NAME_CASING,
            format!("Stage name '{name}' should be lowercase"),
            node.span,
        );
    }
    // A FROM of mixed case is ConsistentInstructionCasing's business, not this rule's.
    let from = &node.keyword;
    let mismatch = if *from == from.to_lowercase() {
        *as_word != as_word.to_lowercase()
    } else if *from == from.to_uppercase() {
        *as_word != as_word.to_uppercase()
    } else {
        false
    };
    if mismatch {
        sink.warn(
            config,
            &rules::FROM_AS_CASING,
            format!("'{as_word}' and '{from}' keywords' casing do not match"),
            node.span,
        );
    }
}

/// InvalidDefinitionDescription: the comment right above a named stage or an ARG should
/// start with the name it describes.
fn description(
    node: &Node,
    instruction: &str,
    keys: &[String],
    config: &CheckConfig,
    sink: &mut Sink,
) {
    let (Some(last), Some(first_key)) = (node.comments.last(), keys.first()) else {
        return;
    };
    let word = last.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        first_key
    };
    sink.warn(
        config,
        &rules::INVALID_DEFINITION_DESCRIPTION,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
        node.span,
    );
}

/// The whole-file checks: stage names (reserved, repeated) and keyword casing against the
/// file's majority, under the file's options only.
pub(crate) fn check_file(file: &File<'_>, config: &CheckConfig, sink: &mut Sink) {
    let mut seen: Vec<&str> = Vec::new();
    for stage in &file.stages {
        let Some(name) = stage.name.as_deref() else {
            continue;
        };
        if name == "context" || name == "scratch" {
            sink.warn(
                config,
                &rules::RESERVED_STAGE_NAME,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
                stage.from.span,
            );
        }
        if seen.contains(&name) {
            sink.warn(
                config,
                &rules::DUPLICATE_STAGE_NAME,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
                stage.from.span,
            );
        }
        seen.push(name);
    }
    let keywords = file
        .stages
        .iter()
        .flat_map(|s| std::iter::once(s.from).chain(s.instructions.iter().map(|(n, _)| *n)));
    let (mut lower, mut upper) = (0usize, 0usize);
    for node in keywords.clone() {
        let k = &node.keyword;
        if is_one_case(k) {
            if *k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for node in keywords {
        let k = &node.keyword;
        let want = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        sink.warn(
            config,
            &rules::CONSISTENT_INSTRUCTION_CASING,
            format!("Command '{k}' should match the case of the command majority ({want})"),
            node.span,
        );
    }
}
