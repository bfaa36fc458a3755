//! One instruction applied to its stage: [`step`] hands each kind to the module that owns it.

pub(crate) mod add_git;
pub(crate) mod args;
pub(crate) mod copy;
mod copy_layer;
pub(crate) mod ctx;
pub(crate) mod from;
pub(crate) mod meta;
pub(crate) mod mount;
pub(crate) mod run;
pub(crate) mod source;
pub(crate) mod workdir;

use cairn_parser::instruction::{Instruction, InstructionKind};

use self::copy::CopyArgs;
use self::ctx::{Ctx, Outcome, at};
use crate::error::Result;
use crate::stage::StageState;

/// Applies one instruction of a stage (FROM, the stage's first, is not one: see [`from`]).
pub(crate) fn step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    step_id: usize,
) -> Result<Outcome> {
    match &ins.kind {
        InstructionKind::Arg { args } => args::step(cx, st, ins, args),
        InstructionKind::Run(run) => run::run_step(cx, st, ins, run, step_id),
        InstructionKind::Copy(c) => copy::copy_step(cx, st, ins, CopyArgs::copy(c), step_id),
        InstructionKind::Add(a) => match add_git::add_git(cx, st, ins, a, step_id)? {
            Some(done) => Ok(done),
            None => copy::copy_step(cx, st, ins, CopyArgs::add(a), step_id),
        },
        InstructionKind::From(_) => Err(at(
            cx.opts,
            ins.span,
            ins.keyword(),
            "FROM inside a stage".to_owned(),
        )),
        _ => meta::step(cx, st, ins, step_id),
    }
}
