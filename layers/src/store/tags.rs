//! index.json: tags, untagged manifests kept for the cache, and name resolution.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Descriptor, Index, Manifest, REF_NAME, is_index};
use crate::reference::Reference;

#[cfg(test)]
use super::INDEX_WRITES;
use super::blob::write_atomic;
use super::{Store, Tagged};

impl Store {
    pub(super) fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let bytes = fs_err::read(&path).map_err(|source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        Index::from_slice(&bytes, &path.display().to_string())
    }

    /// Every tag, in the order of index.json.
    pub fn tags(&self) -> Result<Vec<Tagged>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for m in index.manifests {
            if let Some(name) = m.annotations.get(REF_NAME)
                && let Ok(reference) = Reference::parse(name)
            {
                out.push(Tagged {
                    reference,
                    manifest: m,
                });
            }
        }
        Ok(out)
    }

    /// The images no tag names (docker's dangling `<none>:<none>`: a build without `-t`, a
    /// load of an image without a name), in the order of index.json.
    pub fn untagged(&self) -> Result<Vec<Descriptor>> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|m| !m.annotations.contains_key(REF_NAME))
            .collect())
    }

    /// Keeps `manifest` as an image without a name, so lookups by ID, listings and prune know
    /// it, until a tag names it, `rmi` removes it, or a prune of dangling images does. An
    /// image some entry records already is left as it is.
    pub fn keep_untagged(&self, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        if index.manifests.iter().any(|m| m.digest == manifest.digest) {
            return Ok(());
        }
        let mut d = manifest.clone();
        d.annotations.remove(REF_NAME);
        index.manifests.push(d);
        self.write_index(&index)
    }

    /// Forgets the untagged images `which` picks; returns the manifests it removed. Their
    /// blobs go with the next prune.
    pub fn remove_untagged(&self, which: impl Fn(&Descriptor) -> bool) -> Result<Vec<Descriptor>> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests
            .into_iter()
            .partition(|m| !m.annotations.contains_key(REF_NAME) && which(m));
        index.manifests = kept;
        if !gone.is_empty() {
            self.write_index(&index)?;
        }
        Ok(gone)
    }

    /// Points `reference` at `manifest` (replacing what it named before).
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        self.tag_all(&[(reference.clone(), manifest.clone())])
    }

    /// Points each reference at its manifest (a later pair wins over an earlier one of the same
    /// name) with one rewrite of index.json: a load that names thousands of images costs two
    /// fsyncs, not two per name.
    pub fn tag_all(&self, tags: &[(Reference, Descriptor)]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let mut unnamed = Vec::new();
        let mut named: BTreeMap<String, Descriptor> = BTreeMap::new();
        for m in std::mem::take(&mut index.manifests) {
            match m.annotations.get(REF_NAME) {
                Some(name) => {
                    named.insert(name.clone(), m);
                }
                None => unnamed.push(m),
            }
        }
        let before: Vec<Descriptor> = unnamed.iter().chain(named.values()).cloned().collect();
        // A named image is no longer a dangling one.
        unnamed.retain(|u| !tags.iter().any(|(_, m)| m.digest == u.digest));
        let mut moved = Vec::new();
        for (reference, manifest) in tags {
            let name = reference.to_string();
            let mut d = manifest.clone();
            d.annotations.insert(REF_NAME.to_owned(), name.clone());
            if let Some(old) = named.insert(name, d)
                && old.digest != manifest.digest
            {
                moved.push(old);
            }
        }
        // As in docker, an image whose last name moved to another is dangling, not gone: it
        // stays by its ID until a prune of dangling images.
        for mut old in moved {
            let still_named = named.values().any(|m| m.digest == old.digest);
            if !still_named && !unnamed.iter().any(|u| u.digest == old.digest) {
                old.annotations.remove(REF_NAME);
                unnamed.push(old);
            }
        }
        // Unnamed entries first, in their order, then by name: what one tag at a time gave.
        unnamed.extend(named.into_values());
        // Tagging what the tags name already (a rebuild that changed nothing) writes nothing:
        // index.json's rewrite is two fsyncs.
        if unnamed == before {
            return Ok(());
        }
        index.manifests = unnamed;
        self.write_index(&index)
    }

    /// Replaces index.json (the caller holds `index.lock`).
    fn write_index(&self, index: &Index) -> Result<()> {
        #[cfg(test)]
        INDEX_WRITES.with(|n| n.set(n.get() + 1));
        write_atomic(&self.tmp(), &self.index_path(), &index.to_bytes())
    }

    /// Removes a tag; returns the manifest it named, if it existed.
    pub fn untag(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let name = reference.to_string();
        let found = index
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME) == Some(&name))
            .cloned();
        if found.is_some() {
            index
                .manifests
                .retain(|m| m.annotations.get(REF_NAME) != Some(&name));
            self.write_index(&index)?;
        }
        Ok(found)
    }

    /// Finds an image by reference (`busybox`, `docker.io/library/busybox:latest`), by image
    /// ID or manifest digest (`sha256:…`, or a unique hex prefix of at least 4 digits).
    pub fn resolve(&self, name: &str) -> Result<(Option<Reference>, Descriptor)> {
        let tags = self.tags()?;
        if let Ok(reference) = Reference::parse(name) {
            if let Some(t) = tags.iter().find(|t| t.reference == reference) {
                return Ok((Some(t.reference.clone()), t.manifest.clone()));
            }
            if let Some(d) = reference.digest()
                && let Some(t) = tags.iter().find(|t| &t.manifest.digest == d)
            {
                return Ok((None, t.manifest.clone()));
            }
            // One platform's image of a tagged index, by its manifest digest.
            if let Some(d) = reference.digest()
                && let Some(m) = self.child_matching(&tags, |m, _| &m.digest == d)?
            {
                return Ok((None, m));
            }
        }
        // docker's rule: `sha256:` optional, then 4 to 64 lowercase hex digits.
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if (4..=64).contains(&hex.len())
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let untagged = self.untagged()?;
            let mut found: Option<&Descriptor> = None;
            for m in tags.iter().map(|t| &t.manifest).chain(&untagged) {
                let config = self
                    .read_blob(&m.digest)
                    .ok()
                    .and_then(|b| Manifest::from_slice(&b, "manifest").ok())
                    .map(|m| m.config.digest);
                let matches = m.digest.hex().starts_with(hex)
                    || config.is_some_and(|c| c.hex().starts_with(hex));
                if matches {
                    if let Some(f) = found
                        && f.digest != m.digest
                    {
                        return Err(Error::invalid(
                            format!("image ID {name}"),
                            format!(
                                "ambiguous: it matches more than one image ({} and {}); give more digits",
                                f.digest, m.digest
                            ),
                        ));
                    }
                    found = Some(m);
                }
            }
            if let Some(m) = found {
                return Ok((None, m.clone()));
            }
            // An index's ID is its digest; the images in it are found by theirs.
            let prefix = |d: &Digest| d.hex().starts_with(hex);
            if let Some(m) = self.child_matching(&tags, |m, config| {
                prefix(&m.digest) || config.is_some_and(prefix)
            })? {
                return Ok((None, m));
            }
        }
        Err(Error::ImageNotFound(name.to_owned()))
    }

    /// The first image held in a tagged index for which `matches` (given its manifest
    /// descriptor and config digest) is true.
    fn child_matching(
        &self,
        tags: &[Tagged],
        matches: impl Fn(&Descriptor, Option<&Digest>) -> bool,
    ) -> Result<Option<Descriptor>> {
        for t in tags.iter().filter(|t| is_index(&t.manifest.media_type)) {
            // A tag whose index is unreadable is fsck's to report, not a lookup's.
            let Ok(images) = self.images_in(&t.manifest) else {
                continue;
            };
            for m in images {
                let config = self
                    .read_blob(&m.digest)
                    .ok()
                    .and_then(|b| Manifest::from_slice(&b, "manifest").ok())
                    .map(|m| m.config.digest);
                if matches(&m, config.as_ref()) {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }
}
