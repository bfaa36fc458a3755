//! Unpacked layers under `layers/sha256/<diff_id>`, shared by every build.

use std::path::{Path, PathBuf};

use crate::apply::ApplyOptions;
use crate::compress::Compression;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::pipeline::apply_blob;

use super::Store;
use super::blob::{sync_dir, temp_name};
use super::root::private_dir;

/// The directory name of a layer's unpacked form under `layers/sha256`.
fn unpacked_name(diff_id: &Digest, key: &str) -> String {
    if key.is_empty() {
        diff_id.hex().to_owned()
    } else {
        format!("{}.{key}", diff_id.hex())
    }
}

impl Store {
    /// The directory holding a layer unpacked as an overlay lowerdir, keyed by its diff_id and
    /// unpacked from its blob the first time it is asked for; every image and build shares it.
    /// The uncompressed stream must hash to `diff_id`, or nothing is kept.
    pub fn unpacked_layer(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        opts: &ApplyOptions,
    ) -> Result<PathBuf> {
        self.unpacked_layer_keyed(layer, diff_id, "", opts)
    }

    /// Like [`Store::unpacked_layer`], kept apart under `key` (see
    /// [`Store::unpacked_layer_with`]): `opts` map the owners to other host ids.
    pub fn unpacked_layer_keyed(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        key: &str,
        opts: &ApplyOptions,
    ) -> Result<PathBuf> {
        self.unpacked_layer_with(diff_id, key, |rootfs| {
            let compression = Compression::from_media_type(&layer.media_type)
                .ok_or_else(|| Error::MediaType(layer.media_type.clone()))?;
            let what = format!("layer {}", layer.digest);
            apply_blob(
                self.open_blob(&layer.digest)?,
                compression,
                rootfs,
                opts,
                &what,
            )
        })
    }

    /// Like [`Store::unpacked_layer`], with the unpacking done by `unpack`, which writes the
    /// layer into the directory it is given and returns the digest of the tar it read. `key`
    /// tells apart unpackings of one layer that differ on disk (the owners a user namespace
    /// mapping gives the files): "" for the plain one.
    pub fn unpacked_layer_with(
        &self,
        diff_id: &Digest,
        key: &str,
        unpack: impl FnOnce(&Path) -> Result<Digest>,
    ) -> Result<PathBuf> {
        let name = unpacked_name(diff_id, key);
        let dir = self.root.join("layers/sha256").join(&name);
        let rootfs = dir.join("rootfs");
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        // One process unpacks; the others wait here and then find it done.
        let _lock = self.lock(&format!("layers/sha256/{name}.lock"), true)?;
        if rootfs.is_dir() {
            return Ok(rootfs);
        }
        let temp = self.tmp().join(temp_name("unpack"));
        let result = (|| {
            private_dir(&temp)?;
            let actual = unpack(&temp.join("rootfs"))?;
            if actual != *diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {diff_id} (diff_id)"),
                    expected: diff_id.clone(),
                    actual,
                });
            }
            fs_err::rename(&temp, &dir).map_err(|source| Error::Io {
                action: "rename into place",
                path: dir.clone(),
                source,
            })?;
            sync_dir(&self.root.join("layers/sha256"))
        })();
        if let Err(e) = result {
            // The unpacking's error says more than a failed cleanup's (a full disk, say).
            let _ = self.remove_tree(&temp);
            return Err(e);
        }
        Ok(rootfs)
    }

    /// Takes `tree` (on the store's filesystem) as the unpacked form of layer `diff_id` under
    /// `key`, as [`Store::unpacked_layer_with`] would have made it: a RUN step's overlay upper
    /// directory is exactly that, so the next step need not unpack the blob it just wrote.
    /// Returns false, leaving `tree` where it is, when the layer is unpacked already.
    pub fn adopt_unpacked(&self, diff_id: &Digest, key: &str, tree: &Path) -> Result<bool> {
        let name = unpacked_name(diff_id, key);
        let dir = self.root.join("layers/sha256").join(&name);
        if dir.join("rootfs").is_dir() {
            return Ok(false);
        }
        let _lock = self.lock(&format!("layers/sha256/{name}.lock"), true)?;
        if dir.join("rootfs").is_dir() {
            return Ok(false);
        }
        let temp = self.tmp().join(temp_name("unpack"));
        private_dir(&temp)?;
        let rootfs = temp.join("rootfs");
        if let Err(source) = std::fs::rename(tree, &rootfs) {
            let _ = std::fs::remove_dir(&temp);
            return Err(Error::Io {
                action: "move into the store",
                path: tree.to_owned(),
                source,
            });
        }
        let placed = fs_err::rename(&temp, &dir).map_err(|source| Error::Io {
            action: "rename into place",
            path: dir.clone(),
            source,
        });
        if let Err(e) = placed {
            // Back where the caller will clean it up.
            let _ = std::fs::rename(&rootfs, tree);
            let _ = std::fs::remove_dir(&temp);
            return Err(e);
        }
        sync_dir(&self.root.join("layers/sha256"))?;
        Ok(true)
    }
}
