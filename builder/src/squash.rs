//! `--squash` and `--squash-all`: the final image's layers folded into one, its history kept
//! with the folded steps marked as making no layer.

use cairn_layers::Store;
use cairn_layers::image::{Descriptor, ImageConfig};

use crate::error::Result;
use crate::options::Squash;
use crate::stage::StageResult;

/// The layers of the image `result` makes, squashed as `how` says, and `config` made to match
/// them: its diff IDs, and its history's `empty_layer` marks (OCI image-spec config.md: the
/// history entries that are not empty name the layers, in order).
pub(crate) fn squash(
    store: &Store,
    opts: &crate::options::BuildOptions,
    cache: &crate::cache::Cache,
    result: &StageResult,
    config: &mut ImageConfig,
) -> Result<Vec<Descriptor>> {
    let layers = &result.layers;
    let (keep, history_from) = match opts.squash {
        Squash::No => return Ok(layers.clone()),
        Squash::New => result.base,
        Squash::All => (0, 0),
    };
    let folded = &layers[keep.min(layers.len())..];
    if folded.len() < 2 {
        return Ok(layers.clone());
    }
    let listings = layers[..keep]
        .iter()
        .map(|l| cache.layer_listing(store, l))
        .collect::<Result<Vec<_>>>()?;
    let lower = cairn_layers::squash::LowerPaths::new(listings.iter().map(|l| &**l));
    let stored = cairn_layers::layer::write_layer(store, opts.layer_compression(), |w| {
        cairn_layers::squash::squash(
            folded.len(),
            |i| store.open_layer(&folded[i]),
            &lower,
            opts.source_date_epoch,
            w,
        )?;
        Ok(())
    })?;
    config.rootfs.diff_ids.truncate(keep);
    config.rootfs.diff_ids.push(stored.diff_id);
    // The last step that made a layer stands for the squashed one; the others made none now.
    let history = &mut config.history;
    if let Some(last) = history.iter().rposition(|h| !h.empty_layer)
        && last >= history_from
    {
        for h in &mut history[history_from..last] {
            h.empty_layer = true;
        }
    }
    let mut out = layers[..keep].to_vec();
    out.push(stored.descriptor);
    Ok(out)
}
