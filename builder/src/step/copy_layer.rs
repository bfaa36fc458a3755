//! A planned COPY or ADD written as the stage's new layer: streamed, counted for progress,
//! compressed against the step's last layer, added to the stage and recorded in the cache.

use cairn_layers::image::timestamp;
use cairn_layers::layer::write_layer_reusing;
use cairn_layers::listing::DirMeta;
use cairn_parser::instruction::Instruction;

use super::ctx::{Ctx, Outcome, add_layer, at_with, layer_record, timing};
use crate::copy::{CopyPlan, CopyRequest};
use crate::error::{Error, Result};
use crate::progress::{Event, Phase};
use crate::stage::StageState;

/// A planned COPY or ADD written as its layer, added to the stage and recorded under `key`.
pub(super) fn write_copy_layer(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    (plan, req): (CopyPlan<'_>, &CopyRequest),
    step_id: usize,
    (history_line, key): (String, crate::cache::Key),
) -> Result<Outcome> {
    let (store, opts) = (cx.store, cx.opts);
    let fail = |e: Error| at_with(opts, ins.span, ins.keyword(), e);
    let created = timestamp(cx.epoch);
    let mut dirs = Default::default();
    let mut failed = None;
    let total = plan.source_bytes();
    let listed = plan.may_write_symlinks();
    // Unchanged stretches of the layer this step made last time are copied, not deflated
    // again (a large file that grew at its end costs its last chunks).
    let previous = cx.cache.last_layer(st.position());
    let started = std::time::Instant::now();
    let layer = write_layer_reusing(store, opts.layer_compression(), previous.as_ref(), |w| {
        let mut w = crate::progress::Counting::new(w, total, |done| {
            (cx.progress)(Event::Bytes {
                id: step_id,
                done,
                total,
            })
        });
        dirs = plan.write(req, &mut w).map_err(|e| match e {
            Error::Layers(l) => l,
            // The layer writer takes only its own errors: this one waits in `failed`.
            other => {
                let reason = other.to_string();
                failed = Some(other);
                cairn_layers::Error::Invalid {
                    what: ins.original.clone(),
                    reason,
                }
            }
        })?;
        Ok(())
    })
    .map_err(|e| fail(failed.take().unwrap_or_else(|| e.into())))?;
    timing(cx, step_id, Phase::Layer, started.elapsed().as_secs_f64());
    cx.cache
        .put_last_layer(st.position(), &layer.descriptor.digest)?;
    let rec = layer_record(&layer);
    // The view takes the directories written, unless it reads the layer for its symlinks.
    let dirs: Option<Vec<(String, DirMeta)>> = (!listed).then(|| dirs.into_iter().collect());
    add_layer(cx, step_id, st, layer, dirs.clone(), created, history_line);
    st.record(cx.cache, key, Some(rec), dirs)?;
    Ok(Outcome::Ran)
}
