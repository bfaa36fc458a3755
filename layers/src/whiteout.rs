//! OCI whiteouts, in one place: the marker names, and how overlayfs spells the same facts.
//!
//! In a layer tar a deleted path `dir/name` is an empty file `dir/.wh.name`, and a directory
//! whose lower contents are hidden carries `dir/.wh..wh..opq` (OCI image-spec, layer.md,
//! "Whiteouts"). overlayfs marks a deleted path with a 0/0 character device and an opaque
//! directory with the `trusted.overlay.opaque` (or, in a user namespace, `user.overlay.opaque`)
//! xattr set to `y`.

/// Prefix of a whiteout entry's file name.
pub const PREFIX: &str = ".wh.";
/// The file name that marks its directory opaque.
pub const OPAQUE: &str = ".wh..wh..opq";
/// Prefix of names reserved by the spec (`.wh..wh.` + anything); only OPAQUE is meaningful.
pub const META_PREFIX: &str = ".wh..wh.";
/// The xattrs overlayfs uses to mark an opaque directory.
pub const OVERLAY_OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// What a file name in a layer tar means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name<'a> {
    /// An ordinary entry.
    Plain(&'a str),
    /// `.wh.<name>`: `<name>` was deleted.
    Whiteout(&'a str),
    /// `.wh..wh..opq`: the directory's lower contents are hidden.
    Opaque,
}

/// Classifies a file name (the last path component). A whiteout of a whiteout, an empty
/// whiteout, and an unknown `.wh..wh.` name are refused.
pub fn classify(name: &str) -> Result<Name<'_>, &'static str> {
    if name == OPAQUE {
        return Ok(Name::Opaque);
    }
    if name.starts_with(META_PREFIX) {
        return Err("unknown .wh..wh. metadata entry");
    }
    match name.strip_prefix(PREFIX) {
        None => Ok(Name::Plain(name)),
        Some("") => Err("whiteout without a name"),
        Some(n) if n.starts_with(PREFIX) => Err("whiteout of a whiteout"),
        Some("." | "..") => Err("whiteout of . or .."),
        Some(n) => Ok(Name::Whiteout(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, Result<Name<'_>, ()>)] = &[
            ("file", Ok(Name::Plain("file"))),
            (".wh.file", Ok(Name::Whiteout("file"))),
            (".wh..wh..opq", Ok(Name::Opaque)),
            (".wh..wh.plnk", Err(())),
            (".wh.", Err(())),
            (".wh..wh.x", Err(())),
            (".wh...", Err(())),
            (".wh..", Err(())),
            (".whfile", Ok(Name::Plain(".whfile"))),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name).map_err(|_| ()), *want, "{name}");
        }
    }
}
