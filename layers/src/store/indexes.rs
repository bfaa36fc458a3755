//! Image indexes in the store: one name for an image per platform, and the image a platform
//! gets from a name that may be either.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::image::is_index;
use crate::image::{Descriptor, Index, OCI_INDEX};
use crate::platform::Platform;
use crate::reference::Reference;

use super::Store;

impl Store {
    /// Stores an image index (its manifests already in the store) and returns its descriptor.
    pub fn put_index(&self, index: &Index) -> Result<Descriptor> {
        let bytes = index.to_bytes();
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor {
            media_type: index
                .media_type
                .clone()
                .unwrap_or_else(|| OCI_INDEX.to_owned()),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        })
    }

    /// Reads the index `d` names, verified against its digest.
    pub fn index(&self, d: &Descriptor) -> Result<Index> {
        Index::from_slice(
            &self.read_blob(&d.digest)?,
            &format!("image index {}", d.digest),
        )
    }

    /// The image `platform` gets from `d`: `d` itself when it is an image manifest (its
    /// platform is the caller's to check), else the index entry for the platform, which the
    /// store must hold (a pulled index holds only the platforms pulled). Nested indexes are
    /// followed a few levels down.
    pub fn image_for(&self, d: &Descriptor, platform: &Platform) -> Result<Descriptor> {
        let mut d = d.clone();
        for _ in 0..crate::image::MAX_INDEX_DEPTH {
            if !is_index(&d.media_type) {
                return Ok(d);
            }
            let what = format!("image index {}", d.digest);
            let index = self.index(&d)?;
            let chosen = crate::platform::select(&index, platform, &what)?.clone();
            if !self.has_blob(&chosen.digest) {
                return Err(Error::invalid(
                    what,
                    format!(
                        "its image for {platform} ({}) is not in the store: pull it with \
                         --platform {platform}",
                        chosen.digest
                    ),
                ));
            }
            d = chosen;
        }
        Err(Error::invalid(
            format!("image index {}", d.digest),
            "indexes nested too deep",
        ))
    }
}

/// One image an index names, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The index entry (its platform, when the index gives one).
    pub descriptor: Descriptor,
    /// Whether the store holds its manifest: a pulled index holds only the platforms pulled.
    pub present: bool,
}

impl Store {
    /// The image of `d` for `platform` ([`Store::image_for`]); with none asked for, the
    /// host's, else (an index pulled only for another platform) the first the store holds,
    /// as docker shows and runs what it has.
    pub fn pick_image(&self, d: &Descriptor, platform: Option<&Platform>) -> Result<Descriptor> {
        if let Some(p) = platform {
            return self.image_for(d, p);
        }
        match self.image_for(d, &Platform::host()) {
            Ok(found) => Ok(found),
            Err(e) => match self.images_in(d) {
                Ok(held) if !held.is_empty() => Ok(held[0].clone()),
                _ => Err(e),
            },
        }
    }

    /// Finds `name` as [`Store::resolve`] does, then the image it names for `platform`
    /// ([`Store::pick_image`]): the manifest of an image, whatever a tag names.
    pub fn resolve_image(
        &self,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<(Option<Reference>, Descriptor)> {
        let (reference, d) = self.resolve(name)?;
        let image = self.pick_image(&d, platform).map_err(|e| match e {
            Error::Invalid { what: _, reason } => Error::invalid(name, reason),
            e => e,
        })?;
        Ok((reference, image))
    }

    /// The entries of the index `d`, each with whether the store holds it.
    pub fn children(&self, d: &Descriptor) -> Result<Vec<Child>> {
        Ok(self
            .index(d)?
            .manifests
            .into_iter()
            .map(|m| Child {
                present: self.has_blob(&m.digest),
                descriptor: m,
            })
            .collect())
    }

    /// The image manifests `d` reaches that the store holds: `d` itself for an image, else
    /// the present entries of the index, nested indexes followed. Absent entries are skipped:
    /// a sparse index is complete for the platforms it was pulled for.
    pub fn images_in(&self, d: &Descriptor) -> Result<Vec<Descriptor>> {
        let mut out = Vec::new();
        self.walk(d, &mut |d, is_index| {
            if !is_index {
                out.push(d.clone());
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Visits `d` and, when it is an index, every entry the store holds, depth first; each
    /// with whether it is an index. `d` itself must be present when it is an index (it is
    /// read); the caller checks an image's own blobs.
    pub(crate) fn walk(
        &self,
        d: &Descriptor,
        visit: &mut dyn FnMut(&Descriptor, bool) -> Result<()>,
    ) -> Result<()> {
        self.walk_at(d, 0, visit)
    }

    fn walk_at(
        &self,
        d: &Descriptor,
        depth: usize,
        visit: &mut dyn FnMut(&Descriptor, bool) -> Result<()>,
    ) -> Result<()> {
        if !is_index(&d.media_type) {
            return visit(d, false);
        }
        if depth >= crate::image::MAX_INDEX_DEPTH {
            return Err(Error::invalid(
                format!("image index {}", d.digest),
                "indexes nested too deep",
            ));
        }
        visit(d, true)?;
        for child in self.index(d)?.manifests {
            if self.has_blob(&child.digest) {
                self.walk_at(&child, depth + 1, visit)?;
            }
        }
        Ok(())
    }

    /// Stores `index` and names it `reference`, forgetting the index the name had before
    /// (an edited manifest list is not a dangling image). Returns the new index's descriptor.
    pub fn put_index_tagged(&self, index: &Index, reference: &Reference) -> Result<Descriptor> {
        let _writing = self.writing()?;
        let before = self
            .tags()?
            .into_iter()
            .find(|t| &t.reference == reference)
            .map(|t| t.manifest);
        let d = self.put_index(index)?;
        self.tag(reference, &d)?;
        if let Some(old) = before.filter(|o| o.digest != d.digest && is_index(&o.media_type)) {
            self.remove_untagged(|m| m.digest == old.digest)?;
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::REF_NAME;
    use crate::test_support::one_layer_image;
    use crate::test_support::temp_store as store;

    /// Removes an image's blobs, as a single-platform pull never fetched them.
    fn forget(s: &Store, m: &Descriptor) {
        let img = s.image(m).unwrap();
        for d in [&m.digest, &img.manifest.config.digest]
            .into_iter()
            .chain(img.manifest.layers.iter().map(|l| &l.digest))
        {
            fs_err::remove_file(s.blob_path(d)).unwrap();
        }
    }

    /// A tag naming a sparse index: prune keeps the present child and the index, fsck finds
    /// nothing wrong, resolve finds it by name, digest prefix and the child's ID, and
    /// image_for picks the child or says to pull the absent one.
    #[test]
    fn sparse_index_tags() {
        let (_d, s) = store();
        let amd = one_layer_image(&s, Some("amd64"), b"amd layer");
        let arm = one_layer_image(&s, Some("arm64"), b"arm layer");
        let index = s
            .put_index(&Index::new(vec![amd.clone(), arm.clone()]))
            .unwrap();
        forget(&s, &arm);
        let name = Reference::parse("multi:1").unwrap();
        s.tag(&name, &index).unwrap();
        // An unreferenced blob, to see prune collect something.
        let junk = s.put_blob(b"junk").unwrap();
        let r = s.prune().unwrap();
        assert_eq!(r.blobs, 1);
        assert!(!s.has_blob(&junk));
        assert_eq!(s.images_in(&index).unwrap(), vec![amd.clone()]);
        for d in [&index.digest, &amd.digest] {
            assert!(s.has_blob(d), "{d}");
        }
        let f = s.fsck().unwrap();
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(s.resolve("multi:1").unwrap().1, {
            let mut i = index.clone();
            i.annotations.insert(REF_NAME.into(), name.to_string());
            i
        });
        assert_eq!(
            s.resolve(&index.digest.hex()[..10]).unwrap().1.digest,
            index.digest
        );
        let id = s.image(&amd).unwrap().id().clone();
        assert_eq!(s.resolve(&id.hex()[..12]).unwrap().1.digest, amd.digest);
        assert_eq!(s.resolve(amd.digest.as_str()).unwrap().1.digest, amd.digest);
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert_eq!(
            s.resolve_image("multi:1", Some(&amd64)).unwrap().1.digest,
            amd.digest
        );
        // Without a platform asked for, what the store holds (the host's when it can).
        assert_eq!(
            s.resolve_image("multi:1", None).unwrap().1.digest,
            amd.digest
        );
        let e = s
            .resolve_image("multi:1", Some(&arm64))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("multi:1") && e.contains("--platform linux/arm64"),
            "{e}"
        );
        let children = s.children(&index).unwrap();
        assert_eq!(
            children.iter().map(|c| c.present).collect::<Vec<_>>(),
            [true, false]
        );

        // A child present but broken is a problem fsck names.
        let img = s.image(&amd).unwrap();
        fs_err::remove_file(s.blob_path(&img.manifest.layers[0].digest)).unwrap();
        let f = s.fsck().unwrap();
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert!(f.problems[0].contains("multi:1"), "{:?}", f.problems);

        // Untagged, the whole index goes with the next prune.
        s.untag(&name).unwrap();
        s.prune().unwrap();
        assert!(!s.has_blob(&index.digest) && !s.has_blob(&amd.digest));
    }

    /// Editing a list under its name leaves no dangling old list behind.
    #[test]
    fn retagged_lists_leave_nothing_dangling() {
        let (_d, s) = store();
        let amd = one_layer_image(&s, Some("amd64"), b"a");
        let arm = one_layer_image(&s, Some("arm64"), b"b");
        let name = Reference::parse("list").unwrap();
        s.put_index_tagged(&Index::new(vec![amd.clone()]), &name)
            .unwrap();
        let two = s
            .put_index_tagged(&Index::new(vec![amd, arm]), &name)
            .unwrap();
        assert!(s.untagged().unwrap().is_empty());
        assert_eq!(s.resolve("list").unwrap().1.digest, two.digest);
    }
}
