//! Image indexes in the store: one name for an image per platform, and the image a platform
//! gets from a name that may be either.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::image::{Descriptor, Index, OCI_INDEX};
use crate::platform::Platform;

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
        for _ in 0..crate::layout::MAX_INDEX_DEPTH {
            if !crate::registry::is_index(&d.media_type) {
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
