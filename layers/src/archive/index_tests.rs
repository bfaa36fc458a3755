//! Image indexes through save and load: kept whole in OCI layouts, one platform in a
//! docker-archive, sparse ones as sparse as the store had them.

use super::*;
use crate::platform::Platform;
use crate::test_support::one_layer_image;

fn store(dir: &Path, name: &str) -> Store {
    Store::open(dir.join(name)).unwrap()
}

/// A two-platform index named `multi:1`; with `sparse`, the non-host image's manifest is gone
/// from the store (as after a pull of one platform).
fn multi(s: &Store, sparse: bool) -> (Descriptor, Descriptor, Descriptor) {
    let host = Platform::host().architecture;
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let native = one_layer_image(s, Some(&host), b"host layer");
    let foreign = one_layer_image(s, Some(other), b"other layer");
    let index = s
        .put_index(&Index::new(vec![native.clone(), foreign.clone()]))
        .unwrap();
    if sparse {
        fs_err::remove_file(s.blob_path(&foreign.digest)).unwrap();
    }
    s.tag(&Reference::parse("multi:1").unwrap(), &index)
        .unwrap();
    (index, native, foreign)
}

fn to_save(index: &Descriptor) -> Vec<ToSave> {
    vec![ToSave {
        reference: Some(Reference::parse("multi:1").unwrap()),
        manifest: index.clone(),
    }]
}

/// Saved as an OCI layout or archive, an index stays one, under its digest and name; loaded
/// back, the name names the index again, with what the layout held of it.
#[test]
fn indexes_round_trip_through_oci_layouts_and_archives() {
    let dir = tempfile::tempdir().unwrap();
    for sparse in [false, true] {
        for format in [SaveFormat::OciDir, SaveFormat::OciArchive] {
            let case = format!("{format:?} sparse={sparse}");
            let from = store(dir.path(), &format!("from-{case}"));
            let (index, native, foreign) = multi(&from, sparse);
            let out = dir.path().join(format!("out-{case}"));
            save(&from, &to_save(&index), format, &out).unwrap();
            if format == SaveFormat::OciDir {
                let saved: Index =
                    serde_json::from_slice(&fs_err::read(out.join("index.json")).unwrap()).unwrap();
                assert_eq!(saved.manifests.len(), 1, "{case}");
                assert_eq!(saved.manifests[0].media_type, OCI_INDEX, "{case}");
                assert_eq!(saved.manifests[0].digest, index.digest, "{case}");
                assert_eq!(
                    saved.manifests[0]
                        .annotations
                        .get(REF_NAME)
                        .map(String::as_str),
                    Some("1")
                );
                let has = |d: &Descriptor| out.join("blobs/sha256").join(d.digest.hex()).is_file();
                assert!(has(&native) && has(&index), "{case}");
                assert_eq!(has(&foreign), !sparse, "{case}");
            }
            let into = store(dir.path(), &format!("into-{case}"));
            let loaded = load(&into, &out, None).unwrap();
            assert_eq!(loaded.len(), 1, "{case}");
            assert_eq!(loaded[0].manifest.digest, index.digest, "{case}");
            let (_, tagged) = into.resolve("multi:1").unwrap();
            assert_eq!(tagged.digest, index.digest, "{case}");
            assert_eq!(
                into.image_for(&tagged, &Platform::host()).unwrap().digest,
                native.digest
            );
            assert_eq!(into.has_blob(&foreign.digest), !sparse, "{case}");
            assert!(into.fsck().unwrap().problems.is_empty(), "{case}");
            // What builds read from a layout is the host's image.
            assert_eq!(
                load_untagged(&into, &out).unwrap(),
                vec![into.image_for(&tagged, &Platform::host()).unwrap()]
            );
        }
    }
}

/// A docker-archive holds one platform's image of an index; one the store lacks is an error
/// naming the platform.
#[test]
fn docker_archives_hold_one_platform_of_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let from = store(dir.path(), "from");
    let (index, native, foreign) = multi(&from, true);
    let out = dir.path().join("docker.tar");
    save(&from, &to_save(&index), SaveFormat::DockerArchive, &out).unwrap();
    let into = store(dir.path(), "into");
    load(&into, &out, None).unwrap();
    let (_, got) = into.resolve("multi:1").unwrap();
    assert_eq!(
        into.image(&got).unwrap().id(),
        from.image(&native).unwrap().id()
    );
    let other = foreign.platform.clone().unwrap();
    let e = save_for(
        &from,
        &to_save(&index),
        SaveFormat::DockerArchive,
        &other,
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("multi:1") && e.contains(&other.to_string()) && e.contains("not in the store"),
        "{e}"
    );
}
