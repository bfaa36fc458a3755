//! `cairn build --metadata-file`: the build's result as BuildKit's metadata JSON, with the
//! step and byte tallies cairn counts from the builder's progress events.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::Context;
use cairn_builder::build::Event;
use cairn_layers::image::Descriptor;
use cairn_layers::{Reference, Store};
use serde_json::{Map, Value, json};

/// What the build did, counted as its events go by (from several threads, hence atomics).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    cached: AtomicUsize,
    run: AtomicUsize,
    bytes: AtomicU64,
}

impl Tally {
    pub(crate) fn see(&self, e: &Event) {
        match e {
            Event::Cached { .. } => {
                self.cached.fetch_add(1, Ordering::Relaxed);
            }
            // Every step that finished without the cache, FROM and config-only steps included,
            // so that cached + run is every step the build showed.
            Event::Done { .. } => {
                self.run.fetch_add(1, Ordering::Relaxed);
            }
            Event::Layer { size, .. } => {
                self.bytes.fetch_add(*size, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// The metadata of a build whose image (or index) is `result`: `pushed` is what a registry got
/// when the build pushed (its digest is then the one reported, as buildx reports the pushed
/// one), and `single` whether one platform was built (only then is there one config).
pub(crate) fn metadata(
    store: &Store,
    result: &Descriptor,
    pushed: Option<&Descriptor>,
    single: bool,
    tags: &[Reference],
    tally: &Tally,
) -> anyhow::Result<Value> {
    let image = pushed.unwrap_or(result);
    let mut m = Map::new();
    m.insert("containerimage.digest".into(), json!(image.digest.as_str()));
    if single {
        // The stored and the pushed image share their config: compressing layers leaves it be.
        // With attestations the result is an index of the image and its attestations.
        let config = store
            .image(&store.pick_image(result, None)?)?
            .manifest
            .config
            .digest;
        m.insert(
            "containerimage.config.digest".into(),
            json!(config.as_str()),
        );
    }
    m.insert(
        "containerimage.descriptor".into(),
        json!({
            "mediaType": image.media_type,
            "digest": image.digest.as_str(),
            "size": image.size,
        }),
    );
    if !tags.is_empty() {
        let names: Vec<String> = tags.iter().map(Reference::to_string).collect();
        m.insert("image.name".into(), json!(names.join(",")));
    }
    m.insert(
        "cairn.steps.cached".into(),
        json!(tally.cached.load(Ordering::Relaxed)),
    );
    m.insert(
        "cairn.steps.run".into(),
        json!(tally.run.load(Ordering::Relaxed)),
    );
    m.insert(
        "cairn.bytes.written".into(),
        json!(tally.bytes.load(Ordering::Relaxed)),
    );
    Ok(Value::Object(m))
}

/// Writes the metadata to `path` whole: a temp file renamed into place, so a CI step reading
/// it never sees half of it.
pub(crate) fn write(path: &Path, value: &Value) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("failed to write the metadata file {}", path.display()))?;
    std::io::Write::write_all(&mut temp, &bytes)
        .with_context(|| format!("failed to write the metadata file {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("failed to write the metadata file {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_steps_and_layer_bytes() {
        let t = Tally::default();
        for e in [
            Event::Done {
                id: 1,
                seconds: 0.0,
            },
            Event::Cached { id: 2 },
            Event::Layer { id: 3, size: 10 },
            Event::Layer { id: 4, size: 5 },
            Event::Done {
                id: 3,
                seconds: 0.0,
            },
        ] {
            t.see(&e);
        }
        assert_eq!(t.cached.load(Ordering::Relaxed), 1);
        assert_eq!(t.run.load(Ordering::Relaxed), 2);
        assert_eq!(t.bytes.load(Ordering::Relaxed), 15);
    }
}
