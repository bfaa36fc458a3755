//! What a name in FROM, COPY --from or RUN --mount from= stands for (a stage of this build, a
//! named context, an image from the store or its registry) and its files as a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_layers::Store;
use cairn_layers::apply::{apply_layer, apply_layer_under};
use cairn_layers::image::Descriptor;
use cairn_layers::layer_tar::{Meta, Writer};
use cairn_layers::store::Image;
use sha2::{Digest as _, Sha256};

use super::ctx::Ctx;
use crate::cache::Cache;
pub use crate::error::ImageError;
use crate::error::{Error, Result};
use crate::options::{NamedContext, Pull};
use crate::plan::source_prefix;
use crate::progress::Event;
use crate::stage::{StageResult, unpack_layers, view_apply_options};

impl Ctx<'_> {
    /// An image by name for FROM, COPY --from or RUN --mount from=, for `platform`: the
    /// store's (a stored index's image for the platform); else, or with `--pull` when named
    /// by tag, its registry's. `missing` words the error when there is no registry to ask; a
    /// failed pull says what the registry said. The image joins the build's trail.
    pub(crate) fn image(
        &self,
        name: &str,
        step_id: usize,
        platform: &cairn_layers::platform::Platform,
        missing: impl FnOnce() -> String,
    ) -> std::result::Result<Descriptor, ImageError> {
        let d = self.find_image(name, step_id, platform, missing)?;
        self.trail.material(name, &d, platform);
        Ok(d)
    }

    fn find_image(
        &self,
        name: &str,
        step_id: usize,
        platform: &cairn_layers::platform::Platform,
        missing: impl FnOnce() -> String,
    ) -> std::result::Result<Descriptor, ImageError> {
        let pulled_key = format!("{name}\0{platform}");
        if let Some(d) = self
            .pulled
            .lock()
            .ok()
            .and_then(|p| p.get(&pulled_key).cloned())
        {
            return Ok(d);
        }
        let stored = match self.store.resolve(name) {
            // An index without this platform's image is as good as missing: the registry may
            // have it.
            Ok((by_tag, d)) => match self.store.image_for(&d, platform) {
                Ok(d) => Some((by_tag, d)),
                Err(e) if self.opts.registry.is_none() => {
                    return Err(ImageError::Missing(e.to_string()));
                }
                Err(_) => None,
            },
            // An ID prefix of several images: saying "not in the store" would mislead.
            Err(e @ cairn_layers::Error::Invalid { .. }) => {
                return Err(ImageError::Ambiguous(Box::new(e)));
            }
            Err(_) => None,
        };
        let reference = cairn_layers::Reference::parse(name).ok();
        // `--pull=never`: the store is all there is.
        let registry = self
            .opts
            .registry
            .as_ref()
            .filter(|_| self.opts.pull != Pull::Never);
        let (Some(registry), Some(reference)) = (registry, reference) else {
            return stored
                .map(|(_, d)| d)
                .ok_or_else(|| ImageError::Missing(missing()));
        };
        // A tag whose stored image is another platform's: the registry may have this one's
        // (what docker does with an image pulled for one platform and a build for another).
        let other_platform = stored.as_ref().is_some_and(|(by_tag, d)| {
            by_tag.is_some()
                && reference.digest().is_none()
                && self.store.image(d).is_ok_and(|img| {
                    !cairn_layers::platform::Platform::of_config(&img.config).matches(platform)
                })
        });
        match &stored {
            // By ID or digest, or by tag without --pull: what the store has is the image.
            Some((by_tag, d))
                if !other_platform
                    && (self.opts.pull == Pull::Missing
                        || by_tag.is_none()
                        || reference.digest().is_some()) =>
            {
                return Ok(d.clone());
            }
            _ => {}
        }
        let progress = self.progress;
        progress(Event::Log {
            id: step_id,
            line: format!("pulling {}", reference.familiar()),
        });
        let events = |e: cairn_layers::registry::Event| {
            if let Some(line) = pull_line(&e) {
                progress(Event::Log { id: step_id, line });
            }
        };
        let registry = &cairn_layers::registry::RegistryOptions {
            platform: Some(platform.clone()),
            ..registry.clone()
        };
        let pulled = cairn_layers::registry::pull(self.store, &reference, registry, &events);
        if let (Err(e), true, Some((_, d))) = (
            &pulled,
            other_platform || self.opts.pull == Pull::Newer,
            &stored,
        ) {
            // The stored image it is, then: FROM says whose platform it is and what was asked.
            let line = if other_platform {
                format!("no image for {platform} from the registry: {e}")
            } else {
                format!("using the stored image: the registry did not answer: {e}")
            };
            progress(Event::Log { id: step_id, line });
            return Ok(d.clone());
        }
        let d = pulled.map_err(|e| match &stored {
            Some(_) => ImageError::Pull {
                image: reference.familiar(),
                source: Box::new(e),
            },
            // Say what the store lacked too, and the way round a registry out of reach.
            None => ImageError::Unreachable {
                missing: missing(),
                source: Box::new(e),
            },
        })?;
        if let Ok(mut p) = self.pulled.lock() {
            p.insert(pulled_key, d.clone());
        }
        Ok(d)
    }

    /// What `name` (a COPY --from or RUN --mount from=, expanded) stands for, in the order
    /// BuildKit looks: a stage of this Dockerfile, a named context, else an image.
    pub(crate) fn source(&self, name: &str) -> Named<'_> {
        if let Some(i) = self.df.stage_ref(name) {
            return Named::Stage(i, self.results.get(&i));
        }
        match named_context(&self.opts.contexts, name) {
            Some(c) => Named::Context(c),
            None => Named::Image,
        }
    }
}

/// What a name in COPY --from or RUN --mount from= stands for (see [`Ctx::source`]).
pub(crate) enum Named<'a> {
    /// A stage, by index, with its result once it is built.
    Stage(usize, Option<&'a StageResult>),
    /// A `--build-context`, or an `oci-layout://` name given in place.
    Context(NamedContext),
    /// Any other name: an image, by reference or ID (see [`Ctx::image`]).
    Image,
}

/// The named context `name` means: a `--build-context` of that name, or an `oci-layout://`
/// name given in place of one.
pub(crate) fn named_context(
    contexts: &BTreeMap<String, NamedContext>,
    name: &str,
) -> Option<NamedContext> {
    contexts.get(name).cloned().or_else(|| {
        name.starts_with("oci-layout://")
            .then(|| NamedContext::parse(name))
    })
}

/// A finished stage's files as a directory: its own when `complete` (settled, at least where
/// the reader looks), else a complete copy of its own at `copy`, made once.
pub(crate) fn stage_root(
    store: &Store,
    r: &StageResult,
    complete: bool,
    copy: PathBuf,
) -> Result<PathBuf> {
    if complete {
        return Ok(r.rootfs.clone());
    }
    if !copy.exists() {
        unpack_layers(store, &r.layers, &copy)?;
    }
    Ok(copy)
}

/// An image's files, unpacked once into the directory `dir` names after the image's ID: the
/// image and that directory.
pub(crate) fn image_root(
    store: &Store,
    manifest: &Descriptor,
    dir: impl FnOnce(&str) -> PathBuf,
) -> Result<(Image, PathBuf)> {
    let img = store.image(manifest)?;
    let dir = dir(img.id().hex());
    if !dir.exists() {
        unpack_layers(store, &img.manifest.layers, &dir)?;
    }
    Ok((img, dir))
}

/// An image's files where a COPY of `sources` reads them: only those paths (and the symlinks
/// that lead there) when the layers' listings show how, in a directory of their own, else the
/// whole image as [`image_root`] gives it. `COPY --from=debian /etc/os-release /x` writes one
/// file and a symlink instead of unpacking Debian.
pub(crate) fn image_root_for(
    cache: &Cache,
    store: &Store,
    manifest: &Descriptor,
    sources: &[String],
    dir: impl Fn(&str) -> PathBuf,
) -> Result<(Image, PathBuf)> {
    let img = store.image(manifest)?;
    let full = dir(img.id().hex());
    let prefixes: Option<Vec<String>> = sources.iter().map(|s| source_prefix(s)).collect();
    if let (false, Some(prefixes)) = (full.exists(), prefixes) {
        let mut key = Sha256::new();
        for p in &prefixes {
            key.update(p.as_bytes());
            key.update([0]);
        }
        let key = hex::encode(&key.finalize()[..8]);
        let part = dir(&format!("{}-{key}", img.id().hex()));
        if part.exists() {
            return Ok((img, part));
        }
        if partial_image(cache, store, &img.manifest.layers, &prefixes, &part)? {
            return Ok((img, part));
        }
        store.remove_tree(&part)?;
    }
    image_root(store, manifest, |_| full)
}

/// Applies what `layers` hold at `prefixes`, resolved through their listings, onto `dir`,
/// then the symlinks followed to get there; false when that cannot be had (a symlink on the
/// way in some layer, a hard link from outside), `dir` then holding part of it.
fn partial_image(
    cache: &Cache,
    store: &Store,
    layers: &[Descriptor],
    prefixes: &[String],
    dir: &Path,
) -> Result<bool> {
    let (tree, listings) = cache.layers_links(store, layers)?;
    let mut resolved = Vec::new();
    let mut links = Vec::new();
    for p in prefixes {
        match tree.resolve_links(p) {
            Some((path, followed)) if !path.is_empty() => {
                resolved.push(path);
                links.extend(followed);
            }
            // The root, or a loop of links: the whole image.
            _ => return Ok(false),
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let opts = view_apply_options();
    for (l, listing) in layers.iter().zip(&listings) {
        if !listing.touches(&resolved) {
            continue;
        }
        let plain = store.open_layer(l)?;
        if apply_layer_under(plain, dir, &opts, &resolved)?.is_none() {
            return Ok(false);
        }
    }
    if !links.is_empty() {
        // As a layer of their own, applied as any layer is: never through a link.
        let mut tar = Vec::new();
        let mut w = Writer::new(&mut tar);
        for (path, target) in &links {
            w.symlink(path.as_bytes(), Meta::default(), &[], target.as_bytes())?;
        }
        w.finish()?;
        apply_layer(&tar[..], dir, &opts)?;
    }
    Ok(true)
}

/// A pull's progress as a step's log line: the blobs it copied and the digest it settled on.
pub(crate) fn pull_line(e: &cairn_layers::registry::Event) -> Option<String> {
    use cairn_layers::registry::Event as R;
    Some(match e {
        R::Resolved { reference, digest } => format!("resolved {reference} to {digest}"),
        R::PlatformSelected { platform, digest } => format!("selected {platform}: {digest}"),
        R::BlobDone { digest, size, .. } => format!("copied blob {digest} ({size} bytes)"),
        R::Retrying {
            what,
            attempt,
            error,
        } => format!("retrying {what} (attempt {attempt} failed: {error})"),
        R::MirrorFailed { endpoint, error } => format!("mirror {endpoint} failed: {error}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn named_contexts_and_layouts() {
        let mut contexts = BTreeMap::new();
        contexts.insert("src".into(), NamedContext::Dir(PathBuf::from("/ctx/src")));
        let layout = |dir: &str, tag: Option<&str>| NamedContext::OciLayout {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
        };
        let cases = [
            ("src", Some(NamedContext::Dir(PathBuf::from("/ctx/src")))),
            ("SRC", None),
            ("alpine", None),
            ("oci-layout:///img", Some(layout("/img", None))),
            ("oci-layout:///img:v1", Some(layout("/img", Some("v1")))),
            ("oci-layout://a:b/img", Some(layout("a:b/img", None))),
        ];
        for (name, want) in cases {
            assert_eq!(named_context(&contexts, name), want, "{name:?}");
        }
    }
}
