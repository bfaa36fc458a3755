//! Bounds on what a load reads from a layout directory or an archive: regular files only, no
//! symlink followed inside a layout, JSON documents no larger than a registry's manifests,
//! indexes nested no deeper than real images nest them, and no blob bigger than the store's
//! free space.
//!
//! A layout or an archive to load is hostile: an `index.json` that is a symlink to
//! `/dev/zero`, a blob that is a FIFO, a manifest of gigabytes or a layer that declares a
//! terabyte must each be refused, naming the file and the limit, before they are read.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Descriptor;
use crate::store::Store;

/// The largest index, manifest or config read from a layout or an archive: the registry
/// client's limit on manifests.
pub const DOCUMENT_LIMIT: u64 = crate::registry::transport::MANIFEST_LIMIT;

pub use crate::image::MAX_INDEX_DEPTH;

/// An OCI layout directory opened for reading: each file is reached from the directory's fd
/// one component at a time without following symlinks, so nothing outside the layout is read.
pub(crate) struct LayoutDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// A file type, as said in refusals (of layout files here, of secret sources in the CLI).
pub fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

impl LayoutDir {
    /// Opens the layout directory `path` (itself may be reached through a symlink: it is what
    /// the user named).
    pub(crate) fn open(path: &Path) -> Result<LayoutDir> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .at("open", path)?;
        Ok(LayoutDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The path of `rel` under the layout, for messages.
    pub(crate) fn path_of(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The regular file `rel` (slash-separated) and its size. A symlink anywhere on the way,
    /// or a final component that is not a regular file, is refused without being opened for
    /// reading (opening a FIFO would block until a writer came; a device may act on open).
    pub(crate) fn open_regular(&self, rel: &str) -> Result<(File, u64)> {
        let path = self.path_of(rel);
        let refuse = |reason: String| Error::invalid(path.display().to_string(), reason);
        let errno = |action: &'static str, e: Errno| Error::Io {
            action,
            path: path.clone(),
            source: e.into(),
        };
        let parts: Vec<&str> = rel.split('/').collect();
        let (name, dirs) = parts.split_last().unwrap_or((&"", &[]));
        let mut walked: Option<OwnedFd> = None;
        for d in dirs {
            let at = walked.as_ref().unwrap_or(&self.fd);
            let next = rfs::openat(
                at,
                *d,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => refuse(format!(
                    "{d} is not a directory (a layout's directories must not be symbolic links)"
                )),
                e => errno("open", e),
            })?;
            walked = Some(next);
        }
        let at = walked.as_ref().unwrap_or(&self.fd);
        let st = rfs::statat(at, *name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| errno("stat", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(refuse(format!(
                "it is {}; a layout's files must be regular files",
                kind_name(kind)
            )));
        }
        let fd = rfs::openat(
            at,
            *name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno("open", e))?;
        // The name may have been replaced between the stat and the open.
        let st = rfs::fstat(&fd).map_err(|e| errno("stat", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(refuse(format!(
                "it is {}; a layout's files must be regular files",
                kind_name(kind)
            )));
        }
        Ok((File::from(fd), st.st_size as u64))
    }

    /// Reads the JSON document `rel` (at most [`DOCUMENT_LIMIT`] bytes).
    pub(crate) fn read_document(&self, rel: &str) -> Result<Vec<u8>> {
        let (f, size) = self.open_regular(rel)?;
        let path = self.path_of(rel);
        read_bounded(f, size, &path.display().to_string(), &path)
    }
}

/// The refusal of a document larger than [`DOCUMENT_LIMIT`].
pub(crate) fn too_large(what: &str, size: u64) -> Error {
    Error::invalid(
        what,
        format!(
            "it is {size} bytes, more than the {DOCUMENT_LIMIT} bytes an index, manifest or config may have"
        ),
    )
}

/// Reads at most [`DOCUMENT_LIMIT`] bytes from `r` whose size is said to be `size`: a file
/// that grows while it is read is cut off all the same.
fn read_bounded(r: impl Read, size: u64, what: &str, path: &Path) -> Result<Vec<u8>> {
    if size > DOCUMENT_LIMIT {
        return Err(too_large(what, size));
    }
    let mut bytes = Vec::new();
    r.take(DOCUMENT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .at("read", path)?;
    if bytes.len() as u64 > DOCUMENT_LIMIT {
        return Err(too_large(what, bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads the JSON document `d` from the store, bounded by [`DOCUMENT_LIMIT`] whatever its
/// descriptor or the blob on disk say, and checked against its digest.
pub(crate) fn read_document(store: &Store, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let shown = format!("{d} in {what}", d = d.digest);
    if d.size > DOCUMENT_LIMIT {
        return Err(too_large(&shown, d.size));
    }
    let path = store.blob_path(&d.digest);
    let f = store.open_blob(&d.digest)?;
    let size = f.metadata().at("stat", &path)?.len();
    let bytes = read_bounded(f, size, &shown, &path)?;
    let actual = Digest::of(&bytes);
    if actual != d.digest {
        return Err(Error::DigestMismatch {
            what: format!("blob {}", path.display()),
            expected: d.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Refuses a blob of `size` bytes when the store's filesystem has less room than that, before
/// a byte is written: a source that declares a terabyte must not fill the disk to find out.
pub(crate) fn ensure_room(store: &Store, size: u64, what: &str) -> Result<()> {
    let tmp = store.tmp_dir();
    let st = rfs::statvfs(&tmp)
        .map_err(std::io::Error::from)
        .at("measure the free space of", &tmp)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if size > free {
        return Err(Error::invalid(
            what,
            format!(
                "it declares {size} bytes, more than the {free} bytes free in the store ({})",
                tmp.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layout() -> (tempfile::TempDir, LayoutDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("blobs/sha256")).unwrap();
        fs_err::create_dir_all(root.join("elsewhere")).unwrap();
        fs_err::write(root.join("elsewhere/secret"), b"{}").unwrap();
        fs_err::write(root.join("index.json"), b"{}").unwrap();
        fs_err::write(root.join("blobs/sha256/plain"), b"{}").unwrap();
        symlink("/dev/zero", root.join("zero")).unwrap();
        symlink("index.json", root.join("inner-link")).unwrap();
        symlink(root.join("elsewhere"), root.join("blobs/linked")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        fs_err::create_dir(root.join("dir")).unwrap();
        File::create(root.join("huge"))
            .unwrap()
            .set_len(DOCUMENT_LIMIT + 1)
            .unwrap();
        let l = LayoutDir::open(root).unwrap();
        (dir, l)
    }

    #[test]
    fn only_regular_files_inside_the_layout_are_read() {
        let (_d, l) = layout();
        let cases: [(&str, Option<&str>); 9] = [
            ("index.json", None),
            ("blobs/sha256/plain", None),
            ("zero", Some("a symbolic link")),
            ("inner-link", Some("a symbolic link")),
            ("blobs/linked/secret", Some("linked is not a directory")),
            ("fifo", Some("a FIFO")),
            ("dir", Some("a directory")),
            ("huge", Some("more than the 8388608 bytes")),
            ("missing", Some("failed to stat")),
        ];
        for (rel, refusal) in cases {
            let got = l.read_document(rel);
            match (refusal, got) {
                (None, Ok(bytes)) => assert_eq!(bytes, b"{}", "{rel}"),
                (Some(want), Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(want), "{rel}: {msg}");
                    assert!(
                        msg.contains(rel.rsplit('/').next().unwrap()),
                        "{rel}: {msg}"
                    );
                }
                (want, got) => panic!("{rel}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn documents_and_room_are_bounded() {
        let (_dir, s) = crate::test_support::temp_store();
        let small = s.put_blob(b"{}").unwrap();
        let big = vec![b' '; DOCUMENT_LIMIT as usize + 1];
        let big_digest = s.put_blob(&big).unwrap();
        let desc = |digest: &Digest, size: u64| Descriptor {
            media_type: crate::image::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: Default::default(),
        };
        assert_eq!(read_document(&s, &desc(&small, 2), "t").unwrap(), b"{}");
        let cases = [
            desc(&small, DOCUMENT_LIMIT + 1),
            desc(&big_digest, 2),
            desc(&big_digest, big.len() as u64),
        ];
        for d in cases {
            let e = read_document(&s, &d, "t").unwrap_err().to_string();
            assert!(e.contains("more than the 8388608 bytes"), "{e}");
        }
        ensure_room(&s, 1, "a blob").unwrap();
        let e = ensure_room(&s, 1 << 60, "a blob").unwrap_err().to_string();
        assert!(e.contains("declares 1152921504606846976 bytes"), "{e}");
    }
}
