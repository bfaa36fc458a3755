//! Entry names and hardlink targets, cleaned and checked before anything touches the target.

use std::collections::HashSet;
use std::io::Read;

use tar::EntryType;

use crate::error::{Error, Result};
use crate::whiteout::{self, Name, PREFIX};

/// What a `..` above the root means: refused in a rootfs tarball to import, the root itself in
/// a layer to apply (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dots {
    Refuse,
    Clamp,
}

/// Cleans a tar name into components (see the module docs).
pub(super) fn clean(raw: &[u8], dots: Dots) -> Result<Vec<Vec<u8>>, &'static str> {
    if raw.contains(&0) {
        return Err("the name contains a NUL byte");
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && dots == Dots::Refuse {
                    return Err("`..` climbs above the root");
                }
            }
            _ => out.push(part.to_vec()),
        }
    }
    Ok(out)
}

/// Whether an entry makes a directory: old (pre-POSIX) tars mark directories with a trailing
/// slash on a regular entry.
pub(super) fn is_dir_entry(kind: EntryType, raw: &[u8]) -> bool {
    kind.is_dir()
        || (matches!(kind, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/"))
}

/// An entry's name as components, refused when it climbs above the root, names the root
/// without being a directory, or misuses whiteout names.
pub(super) fn checked_name(
    shown: &str,
    raw: &[u8],
    is_dir: bool,
    dots: Dots,
) -> Result<Vec<Vec<u8>>> {
    let comps = clean(raw, dots).map_err(|reason| Error::unsafe_entry(shown, reason))?;
    let Some((name, parents)) = comps.split_last() else {
        if !is_dir {
            return Err(Error::unsafe_entry(
                shown,
                "only a directory entry may name the target directory itself",
            ));
        }
        return Ok(comps);
    };
    for p in parents {
        if !matches!(classify(p), Ok(Marker::Plain)) {
            return Err(Error::unsafe_entry(
                shown,
                "a whiteout name cannot be a directory",
            ));
        }
    }
    classify(name).map_err(|reason| Error::unsafe_entry(shown, reason))?;
    Ok(comps)
}

/// A hardlink's target as components: inside the root, and not the root itself.
pub(super) fn link_target(shown: &str, link: &[u8], dots: Dots) -> Result<Vec<Vec<u8>>> {
    let link_shown = String::from_utf8_lossy(link);
    let src = clean(link, dots).map_err(|reason| {
        Error::unsafe_entry(shown, format!("hardlink target {link_shown:?}: {reason}"))
    })?;
    if src.is_empty() {
        return Err(Error::unsafe_entry(
            shown,
            "a hardlink to the target directory itself",
        ));
    }
    Ok(src)
}

/// Reads a layer tar through its last entry, refusing what [`apply_layer`](super::apply_layer) would refuse by its
/// names alone, and more, as a rootfs tarball to import must be plain: an absolute name or
/// hardlink target, an entry or hardlink target below a symlink the tar itself made (tar
/// writers never write through a symlink; one that does means to escape wherever the layer is
/// extracted less carefully than here), an entry type apply does not know. Returns the reader,
/// just past the end-of-archive marker, for the caller to drain.
pub fn check_layer<R: Read>(tar: R) -> Result<R> {
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| Error::stream("read the layer tar", e))?;
    let mut symlinks: HashSet<Vec<Vec<u8>>> = HashSet::new();
    let mut previous: Option<String> = None;
    for entry in entries {
        let entry = entry.map_err(|e| {
            let action = match &previous {
                Some(name) => format!("read the layer tar after entry {name:?}"),
                None => "read the layer tar".to_string(),
            };
            Error::stream(action, e)
        })?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        if raw.starts_with(b"/") {
            return Err(Error::unsafe_entry(
                &shown,
                "an absolute name (a rootfs tarball names its files relative to its root)",
            ));
        }
        let comps = checked_name(&shown, &raw, is_dir_entry(kind, &raw), Dots::Refuse)?;
        let through =
            |comps: &[Vec<u8>]| (1..comps.len()).find(|n| symlinks.contains(&comps[..*n]));
        if let Some(n) = through(&comps) {
            return Err(Error::unsafe_entry(
                &shown,
                format!(
                    "it lies below {:?}, a symlink the tarball made",
                    String::from_utf8_lossy(&comps[..n].join(&b'/'))
                ),
            ));
        }
        match kind {
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let link_shown = String::from_utf8_lossy(&link);
                if link.starts_with(b"/") {
                    return Err(Error::unsafe_entry(
                        &shown,
                        format!("hardlink target {link_shown:?} is an absolute name"),
                    ));
                }
                let src = link_target(&shown, &link, Dots::Refuse)?;
                if through(&src).is_some() {
                    return Err(Error::unsafe_entry(
                        &shown,
                        format!("hardlink target {link_shown:?} resolves through a symlink"),
                    ));
                }
                // A hard link to a symlink is that symlink under another name.
                if symlinks.contains(&src) {
                    symlinks.insert(comps);
                } else {
                    symlinks.remove(&comps);
                }
            }
            EntryType::Symlink => {
                symlinks.insert(comps);
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {
                symlinks.remove(&comps);
            }
            other => {
                return Err(Error::invalid(
                    format!("layer entry {shown:?}"),
                    format!(
                        "unsupported tar entry type {:?}",
                        char::from(other.as_byte())
                    ),
                ));
            }
        }
        previous = Some(shown);
    }
    Ok(archive.into_inner())
}

/// What a file name means, as [`whiteout::classify`] says, for names that need not be UTF-8.
pub(super) enum Marker<'a> {
    Plain,
    Whiteout(&'a [u8]),
    Opaque,
}

pub(super) fn classify(name: &[u8]) -> Result<Marker<'_>, &'static str> {
    if !name.starts_with(PREFIX.as_bytes()) {
        return Ok(Marker::Plain);
    }
    let name = std::str::from_utf8(name).map_err(|_| "whiteout name is not UTF-8")?;
    Ok(match whiteout::classify(name)? {
        Name::Plain(_) => Marker::Plain,
        Name::Whiteout(n) => Marker::Whiteout(n.as_bytes()),
        Name::Opaque => Marker::Opaque,
    })
}
