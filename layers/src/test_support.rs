//! Test helpers shared by the crate's unit tests: small images made straight in a store.

use std::collections::BTreeMap;

use crate::image::{Descriptor, ImageConfig};
use crate::platform::Platform;
use crate::store::Store;

/// A store in a fresh temp dir (kept alive by the dir).
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store")).unwrap();
    (dir, s)
}

/// An image of one uncompressed layer holding `layer`'s bytes; with `arch`, its config and
/// its descriptor name `linux/<arch>`.
pub(crate) fn one_layer_image(s: &Store, arch: Option<&str>, layer: &[u8]) -> Descriptor {
    let d = s.put_blob(layer).unwrap();
    let mut config = ImageConfig::scratch();
    if let Some(a) = arch {
        config.architecture = a.into();
    }
    config.rootfs.diff_ids.push(d.clone());
    let mut m = s
        .put_image(
            &config,
            vec![Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: d,
                size: layer.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            }],
        )
        .unwrap();
    m.platform = arch.map(|a| Platform::parse(&format!("linux/{a}")).unwrap());
    m
}
