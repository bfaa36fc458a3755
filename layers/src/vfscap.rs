//! File capabilities (`security.capability`) between a layer and a namespaced rootfs.
//!
//! A layer holds capabilities as images do: revision 2, meaning "for the container's root"
//! (or revision 3 naming a container uid). On disk under an id-mapped build the kernel wants
//! revision 3 with the *host* uid of the namespace's root: a `setcap` run in the step writes
//! that, and a revision 2 value set by host root would be ignored inside the namespace. So
//! values are translated both ways through the build's id map.

use crate::idmap::IdMap;

/// The xattr's name.
pub const NAME: &[u8] = b"security.capability";

const REVISION_MASK: u32 = 0xFF00_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;
const V2_LEN: usize = 20;
const V3_LEN: usize = 24;

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The value's revision-2 part and its root uid (`None` for revision 2), or `None` when it is
/// neither revision (left as it is).
fn parse(value: &[u8]) -> Option<([u8; V2_LEN], Option<u32>)> {
    let magic = le32(value.get(..4)?);
    let mut v2 = [0u8; V2_LEN];
    match (magic & REVISION_MASK, value.len()) {
        (REVISION_2, V2_LEN) => {
            v2.copy_from_slice(value);
            Some((v2, None))
        }
        (REVISION_3, V3_LEN) => {
            v2.copy_from_slice(&value[..V2_LEN]);
            let flags = magic & !REVISION_MASK;
            v2[..4].copy_from_slice(&(REVISION_2 | flags).to_le_bytes());
            Some((v2, Some(le32(&value[V2_LEN..]))))
        }
        _ => None,
    }
}

fn encode(v2: [u8; V2_LEN], root: Option<u32>) -> Vec<u8> {
    match root {
        None => v2.to_vec(),
        Some(uid) => {
            let flags = le32(&v2) & !REVISION_MASK;
            let mut v = v2.to_vec();
            v[..4].copy_from_slice(&(REVISION_3 | flags).to_le_bytes());
            v.extend_from_slice(&uid.to_le_bytes());
            v
        }
    }
}

/// A value read from disk, as the layer holds it: the host root uid becomes the container's,
/// and the container's root is written as revision 2.
pub fn to_layer(value: &[u8], ids: &IdMap) -> Vec<u8> {
    match parse(value) {
        Some((v2, Some(host))) => match ids.uid_to_container(host) {
            Some(0) => encode(v2, None),
            Some(uid) => encode(v2, Some(uid)),
            None => value.to_vec(),
        },
        _ => value.to_vec(),
    }
}

/// A layer's value as it must be on disk under `ids`: unchanged without a mapping.
pub fn to_disk(value: &[u8], ids: &IdMap) -> Vec<u8> {
    if ids.is_identity() {
        return value.to_vec();
    }
    match parse(value) {
        Some((v2, root)) => match ids.uid_to_host(root.unwrap_or(0)) {
            Some(host) => encode(v2, Some(host)),
            None => value.to_vec(),
        },
        None => value.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdRange;

    fn map() -> IdMap {
        let r = vec![IdRange {
            container: 0,
            host: 0x7000_0000,
            size: 65536,
        }];
        IdMap {
            uids: r.clone(),
            gids: r,
        }
    }

    fn v2(flags: u32) -> Vec<u8> {
        let mut v = (REVISION_2 | flags).to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x04, 0, 0, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn v3(flags: u32, root: u32) -> Vec<u8> {
        let mut v = v2(flags);
        v[..4].copy_from_slice(&(REVISION_3 | flags).to_le_bytes());
        v.extend_from_slice(&root.to_le_bytes());
        v
    }

    #[test]
    fn translations() {
        let m = map();
        let id = IdMap::identity();
        let cases: &[(&str, Vec<u8>, &IdMap, Vec<u8>)] = &[
            // setcap as the mapped root writes v3 with the host uid: the layer gets v2.
            ("ns root", v3(1, 0x7000_0000), &m, v2(1)),
            ("ns uid 1000", v3(0, 0x7000_03e8), &m, v3(0, 1000)),
            ("unmapped root", v3(1, 5), &m, v3(1, 5)),
            ("v2 stays", v2(1), &m, v2(1)),
            ("identity root", v3(1, 0), &id, v2(1)),
            ("short", vec![1, 2, 3], &m, vec![1, 2, 3]),
            (
                "v1",
                vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                &m,
                vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        for (what, disk, ids, layer) in cases {
            assert_eq!(&to_layer(disk, ids), layer, "{what}");
        }
        assert_eq!(to_disk(&v2(1), &m), v3(1, 0x7000_0000));
        assert_eq!(to_disk(&v3(0, 1000), &m), v3(0, 0x7000_03e8));
        assert_eq!(to_disk(&v2(1), &id), v2(1));
        // Round trip through disk and back.
        assert_eq!(to_layer(&to_disk(&v2(1), &m), &m), v2(1));
    }
}
