//! Build outputs that are not images: the root filesystem as a directory or as a tar.

use std::path::Path;

use cairn_layers::Store;
use cairn_layers::diff::{TarOptions, write_dir};
use cairn_layers::idmap::{IdMap, IdRange};

use crate::error::{Error, Result};
use crate::stage::Built;

/// `--output type=local,dest=DIR`: the image's filesystem, its layers applied in order into a
/// fresh (or empty) directory.
pub fn local(store: &Store, built: &Built, dest: &Path) -> Result<()> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::Context {
            path: dest.to_path_buf(),
            reason: "the local output directory must not exist or must be empty".into(),
        });
    }
    let img = store.image(&built.manifest)?;
    crate::stage::unpack_layers(store, &img.manifest.layers, dest)
}

/// `--output type=tar,dest=FILE`: the filesystem as one tar, owners as the image has them.
pub fn tar(store: &Store, built: &Built, dest: &Path, clamp_mtime: Option<i64>) -> Result<()> {
    let file = std::fs::File::create(dest).map_err(|source| Error::Io {
        action: "create",
        path: dest.to_path_buf(),
        source,
    })?;
    tar_to_writer(store, built, file, dest, clamp_mtime)
}

/// [`tar()`] written to `w` (standard output, for `-o -`); `what` names it in errors.
pub fn tar_to_writer(
    store: &Store,
    built: &Built,
    w: impl std::io::Write,
    what: &Path,
    clamp_mtime: Option<i64>,
) -> Result<()> {
    let rootfs = built.rootfs(store)?;
    // As root the build's view has the image's owners; a rootless build's view is owned by the
    // user, who stands for root in the image.
    let id_map = if rustix::process::geteuid().is_root() {
        IdMap::identity()
    } else {
        let one = |host: u32| {
            vec![IdRange {
                container: 0,
                host,
                size: 1,
            }]
        };
        IdMap {
            uids: one(rustix::process::geteuid().as_raw()),
            gids: one(rustix::process::getegid().as_raw()),
        }
    };
    let opts = TarOptions {
        id_map,
        clamp_mtime,
    };
    let mut w = write_dir(rootfs, std::io::BufWriter::new(w), &opts)?;
    std::io::Write::flush(&mut w).map_err(|source| Error::Io {
        action: "write",
        path: what.to_path_buf(),
        source,
    })
}
