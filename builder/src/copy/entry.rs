//! The layer a COPY or ADD writes: the one layer tar encoder, and the directories it holds.

use std::collections::BTreeMap;
use std::io::Write;

use cairn_layers::layer_tar::{self, Xattrs};
use cairn_layers::listing::DirMeta;

use crate::error::Result;
use crate::users::Owner;

/// A COPY or ADD layer being written: the entries go to the layers crate's encoder (the same
/// as RUN's and WORKDIR's layers), and the directories written are remembered for the
/// stage's view.
pub(crate) struct LayerOut<W: Write> {
    pub(crate) tar: layer_tar::Writer<W>,
    pub(crate) written: BTreeMap<String, DirMeta>,
}

impl<W: Write> LayerOut<W> {
    pub(crate) fn new(out: W) -> Self {
        LayerOut {
            tar: layer_tar::Writer::new(out),
            written: BTreeMap::new(),
        }
    }

    /// A directory entry, remembered for the stage's view under `path` (lossy UTF-8); `name`
    /// is what the layer names it, the same bytes or the non-UTF-8 original.
    pub(crate) fn dir(
        &mut self,
        path: &str,
        name: &[u8],
        meta: DirMeta,
        xattrs: &Xattrs,
    ) -> Result<()> {
        self.tar
            .dir(name, layer_tar::Meta::of_dir(path, &meta)?, xattrs)?;
        self.written.insert(path.to_owned(), meta);
        Ok(())
    }

    /// Ends the layer; the directories it holds.
    pub(crate) fn finish(self) -> Result<BTreeMap<String, DirMeta>> {
        self.tar.finish()?;
        Ok(self.written)
    }
}

/// An entry's metadata from an owner, mode and time.
pub(crate) fn meta(mode: u32, owner: Owner, mtime: i64) -> layer_tar::Meta {
    layer_tar::Meta {
        mode,
        uid: owner.uid,
        gid: owner.gid,
        mtime,
    }
}
