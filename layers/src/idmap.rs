//! User-namespace id mappings: container uid/gid ranges and the host ids they stand for.
//!
//! One mapping is chosen per build (root: identity; a user with /etc/subuid ranges: 0 → the
//! user, 1.. → the subordinate range) and shared by unpacking, RUN and diffing, so that images
//! always hold container ids.

use serde::{Deserialize, Serialize};

/// `size` ids from `container` inside map to `host` outside (one line of `/proc/PID/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The uid and gid mappings of a user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.size)
        .map(|r| r.host + (id - r.container))
}

fn to_container(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.host && id - r.host < r.size)
        .map(|r| r.container + (id - r.host))
}

impl IdMap {
    /// Every id maps to itself (root building as root).
    pub fn identity() -> IdMap {
        let all = vec![IdRange {
            container: 0,
            host: 0,
            size: u32::MAX,
        }];
        IdMap {
            uids: all.clone(),
            gids: all,
        }
    }

    /// The same ranges seen from inside the namespace: each container id maps to itself, and
    /// an id outside every range stays unmapped.
    pub fn inside(&self) -> IdMap {
        let own = |rs: &[IdRange]| {
            rs.iter()
                .map(|r| IdRange {
                    host: r.container,
                    ..*r
                })
                .collect()
        };
        IdMap {
            uids: own(&self.uids),
            gids: own(&self.gids),
        }
    }

    pub fn is_identity(&self) -> bool {
        *self == IdMap::identity()
    }

    pub fn uid_to_host(&self, uid: u32) -> Option<u32> {
        to_host(&self.uids, uid)
    }

    pub fn gid_to_host(&self, gid: u32) -> Option<u32> {
        to_host(&self.gids, gid)
    }

    pub fn uid_to_container(&self, uid: u32) -> Option<u32> {
        to_container(&self.uids, uid)
    }

    pub fn gid_to_container(&self, gid: u32) -> Option<u32> {
        to_container(&self.gids, gid)
    }

    /// The `uid_map`/`gid_map` text for the kernel (or newuidmap's arguments).
    pub fn map_text(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_mapping() {
        let ranges = vec![
            IdRange {
                container: 0,
                host: 1000,
                size: 1,
            },
            IdRange {
                container: 1,
                host: 200000,
                size: 65536,
            },
        ];
        let m = IdMap {
            uids: ranges.clone(),
            gids: ranges,
        };
        let cases: &[(u32, Option<u32>)] = &[
            (0, Some(1000)),
            (1, Some(200000)),
            (65536, Some(265535)),
            (65537, None),
        ];
        for &(c, h) in cases {
            assert_eq!(m.uid_to_host(c), h, "{c}");
            if let Some(h) = h {
                assert_eq!(m.uid_to_container(h), Some(c));
            }
        }
        assert_eq!(m.uid_to_container(5), None);
        assert!(!m.is_identity());
        assert!(IdMap::identity().is_identity());
        assert_eq!(IdMap::identity().gid_to_host(4242), Some(4242));
    }
}
