//! The metadata instructions (ENV, LABEL, CMD, USER, WORKDIR and the rest): the stage's config
//! changes and gets a history entry; only WORKDIR may add a layer (see [`super::workdir`]).

use cairn_layers::image::{History, ImageConfig, timestamp};
use cairn_parser::instruction::{Instruction, InstructionKind};

use super::ctx::{Ctx, Outcome, at, at_with};
use crate::error::{Error, Result};
use crate::history::MetaLine;
use crate::stage::StageState;

/// Applies a metadata instruction to the stage's config.
pub(crate) fn step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    step_id: usize,
) -> Result<Outcome> {
    let Ctx {
        opts, lexer, epoch, ..
    } = *cx;
    let fail = |m: String| at(opts, ins.span, ins.keyword(), m);
    let created = timestamp(epoch);
    let line = crate::meta::apply(
        &mut st.config,
        &ins.kind,
        &ins.original,
        &st.args,
        lexer,
        &mut st.meta,
    )
    .map_err(|e| match e {
        // A rule of the instruction: its message, the keyword shown by the location.
        Error::Instruction { message, .. } => fail(message),
        other => at_with(opts, ins.span, ins.keyword(), other),
    })?;
    if matches!(ins.kind, InstructionKind::Cmd { .. }) {
        // BuildKit's dispatchCmd marks the config ArgsEscaped for either form and on
        // every platform (docker's import --change, meta::apply_all's user, does not).
        st.config.config.args_escaped = Some(true);
    }
    if matches!(ins.kind, InstructionKind::Workdir { .. })
        && let Some(outcome) = super::workdir::layer(cx, st, ins, &line, step_id)?
    {
        return Ok(outcome);
    }
    match line {
        MetaLine::AsWritten => push_empty(&mut st.config, ins, created),
        MetaLine::Line(l) => st.config.history.push(History {
            created: Some(created),
            created_by: Some(l),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: true,
            ..History::default()
        }),
        // BuildKit's dispatchOnbuild commits no history.
        MetaLine::Nothing => {}
    }
    // A metadata step leaves the chain as it is, as BuildKit does: the steps after it key
    // what they use of the config themselves (RUN its environment, user, working directory
    // and shell; COPY its expanded paths and owner), so a new LABEL or CMD reruns nothing. The
    // image's own key covers the config it ends with.
    Ok(Outcome::Meta)
}

/// The empty-layer history entry of an instruction as written.
fn push_empty(config: &mut ImageConfig, ins: &Instruction, created: String) {
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("{} # buildkit", ins.original)),
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer: true,
        ..History::default()
    });
}
