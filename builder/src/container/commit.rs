//! `cairn commit`: a container's writable layer as a new layer on its image, with a history
//! entry, stored (and tagged when named).

use std::collections::BTreeMap;

use cairn_layers::compress::Compression;
use cairn_layers::image::History;
use cairn_layers::{Digest, Reference, Store};

use super::{Record, image_of};
use crate::error::{Result, RunError};
use crate::sandbox::{RootSpec, Sandbox};

/// What `cairn commit` asks for besides the container.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config (CMD, ENV, LABEL, ...).
    pub changes: Vec<String>,
    pub reference: Option<Reference>,
}

/// Stores the container's changes as an image; its ID.
pub fn commit(
    store: &Store,
    sb: &Sandbox,
    record: &Record,
    opts: &CommitOptions,
) -> Result<Digest> {
    let refuse = |reason: &str| RunError::Commit {
        id: record.short_id().to_owned(),
        reason: reason.to_owned(),
    };
    let root = match &record.root {
        None => return Err(refuse("it has no filesystem yet").into()),
        // The one copy chroot runs on was compared with a record kept only while it ran.
        Some(RootSpec::Recorded { .. }) => {
            return Err(refuse("isolation chroot keeps no copy of the image to compare").into());
        }
        Some(r) => r,
    };
    // The changes are parsed before anything is stored: a bad one stores nothing.
    let changes = opts.changes.join("\n");
    let df = cairn_parser::parse("--change", &format!("FROM scratch\n{changes}\n"))?;
    let img = match store
        .resolve(&record.image_id)
        .and_then(|(_, m)| store.image(&m))
    {
        Ok(img) if img.id().to_string() == record.image_id => img,
        _ => image_of(store, &record.launch.options)?,
    };
    let mut config = img.config.clone();
    // docker's: the container's command is the new image's CMD, unless a change says.
    config.config.cmd = Some(record.cmd.clone());
    crate::meta::apply_all(
        &mut config,
        &df.stages[0].instructions,
        &BTreeMap::new(),
        df.directives.escape,
    )?;
    let _writing = store.writing()?;
    let id_map = record
        .id_map
        .clone()
        .unwrap_or_else(cairn_layers::IdMap::identity);
    let layer = sb.diff_root(root, id_map, &mut |r| {
        Ok(cairn_layers::layer::write_layer(
            store,
            Compression::Gzip,
            |w| {
                std::io::copy(r, w)
                    .map(drop)
                    .map_err(|source| cairn_layers::Error::Stream {
                        action: "read the container's diff".into(),
                        source,
                    })
            },
        )?)
    })?;
    let created = jiff::Timestamp::now().to_string();
    config.created = Some(created.clone());
    if opts.author.is_some() {
        config.author = opts.author.clone();
    }
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created),
        created_by: Some(record.command.join(" ")),
        author: opts.author.clone(),
        comment: opts.message.clone(),
        ..History::default()
    });
    let mut layers = img.manifest.layers.clone();
    layers.push(layer.descriptor);
    let manifest = store.put_image(&config, layers)?;
    if let Some(r) = &opts.reference {
        store.tag(r, &manifest)?;
    }
    Ok(store.image(&manifest)?.id().clone())
}
