//! The store root's privacy: created 0700, refused when another user could change it.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Creates a directory of the store's own (not image content) that only its owner may enter.
pub(super) fn private_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .at("create", path)
}

/// What to do with an existing store root, from its owner and mode and who opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCheck {
    Private,
    /// Ours, but group or others have permissions on it: take them away.
    Tighten,
    /// Not ours: why it is refused.
    Refuse(String),
}

fn check_root(owner: u32, mode: u32, me: u32) -> RootCheck {
    if owner != me {
        let writable = if mode & 0o022 != 0 {
            ", and is writable by others too"
        } else {
            ""
        };
        return RootCheck::Refuse(format!(
            "it belongs to uid {owner}, not to this user (uid {me}){writable}; its owner could \
             change what cairn runs and writes there: use a store of your own (--root, \
             CAIRN_ROOT) or give this one to uid {me}"
        ));
    }
    if mode & 0o077 != 0 {
        RootCheck::Tighten
    } else {
        RootCheck::Private
    }
}

/// Creates the store root 0700 (its parents as usual), or checks an existing one.
pub(super) fn make_private_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent).map_err(|source| Error::Io {
            action: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).at("create", root),
    }
    let meta = std::fs::metadata(root).at("inspect", root)?;
    if !meta.is_dir() {
        return Err(Error::UnsafeStore {
            path: root.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let me = rustix::process::geteuid().as_raw();
    match check_root(meta.uid(), meta.mode() & 0o7777, me) {
        RootCheck::Private => Ok(()),
        RootCheck::Tighten => {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .at("make private (chmod 0700)", root)
        }
        RootCheck::Refuse(reason) => Err(Error::UnsafeStore {
            path: root.to_path_buf(),
            reason,
        }),
    }
}

/// Removes a file or a directory tree, making read-only directories writable on the way (as
/// unpacked layers may have them).
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                action: "inspect",
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).at("remove", path);
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Err(Error::Io {
                action: "remove",
                path: path.to_path_buf(),
                source: e,
            });
        }
        use std::os::unix::fs::PermissionsExt;
        for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
            if entry.file_type().is_dir() {
                let _ =
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
            }
        }
        std::fs::remove_dir_all(path).at("remove", path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_checks() {
        let cases = [
            (1000, 0o700, 1000, RootCheck::Private),
            (1000, 0o755, 1000, RootCheck::Tighten),
            (1000, 0o770, 1000, RootCheck::Tighten),
            (1000, 0o1777, 1000, RootCheck::Tighten),
            (0, 0o700, 0, RootCheck::Private),
        ];
        for (owner, mode, me, want) in cases {
            assert_eq!(check_root(owner, mode, me), want, "{owner} {mode:o} {me}");
        }
        for (owner, mode, me, writable) in [
            (1000, 0o700, 0, false),
            (0, 0o777, 1000, true),
            (1001, 0o755, 1000, false),
            (1001, 0o720, 1000, true),
        ] {
            let RootCheck::Refuse(why) = check_root(owner, mode, me) else {
                panic!("{owner} {mode:o} {me} is not refused");
            };
            assert!(why.contains(&format!("uid {owner}")), "{why}");
            assert_eq!(why.contains("writable by others"), writable, "{why}");
        }
    }
}
