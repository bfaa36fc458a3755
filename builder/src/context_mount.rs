//! The build context as a RUN bind mount without `from=` shows it: filtered by `.dockerignore`.
//!
//! BuildKit mounts the context it was sent, so ignored files are absent from the mount as from
//! a COPY. When nothing below the mount's source is left out (no patterns, or none that match
//! there) the context itself is mounted, which costs a walk; otherwise the entries the walk
//! keeps are put together in a directory of the step's own (a file whose content BuildKit
//! withholds made empty, see [`BuildContext::withholds`]): files hard-linked where the
//! filesystem allows it (else copied), directories and symlinks made anew with the owners,
//! modes and times of the originals. Symlinks are entries like any other, never followed, so
//! nothing outside the context gets into the copy; the mount is read-only (a `rw` mount writes
//! to a scratch layer over it), so the linked files are never written through.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};

use crate::context::{BuildContext, ContextEntry};
use crate::error::{Error, Result, io_err};

/// What a bind mount of the context reads, below the source it names.
pub(crate) struct ContextMount {
    /// The source resolved inside the context (`""` for the root).
    start: String,
    /// `lstat` of the source.
    metadata: Metadata,
    /// What the walk keeps below the source (the source itself when it is not a directory).
    entries: Vec<ContextEntry>,
    /// Nothing below the source is left out: the context can be mounted as it is.
    complete: bool,
}

impl ContextMount {
    /// Plans the mount of `source` (context-relative, as written); `Ok(Err(message))` when the
    /// source is missing or left out by `.dockerignore`.
    pub(crate) fn plan(
        context: &BuildContext,
        source: &str,
    ) -> Result<std::result::Result<ContextMount, String>> {
        let start = context.resolve_rel(source)?;
        let path = context.resolve(&start)?;
        let metadata = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(format!("source {source:?} does not exist")));
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "stat",
                    path,
                    source,
                });
            }
        };
        if !context.is_sent(source)? || !context.is_sent(&start)? {
            return Ok(Err(format!(
                "source {source:?} is excluded by .dockerignore"
            )));
        }
        if context.matcher().is_empty() {
            return Ok(Ok(ContextMount {
                start,
                metadata,
                entries: Vec::new(),
                complete: true,
            }));
        }
        let entries = context.walk(&start)?;
        let complete = if metadata.is_dir() {
            // The walk never follows symlinks and neither does this count.
            let all = walkdir::WalkDir::new(&path)
                .min_depth(1)
                .into_iter()
                .filter(Result::is_ok)
                .count();
            all == entries.len() && !entries.iter().any(|e| e.withheld)
        } else {
            !entries.iter().any(|e| e.withheld)
        };
        Ok(Ok(ContextMount {
            start,
            metadata,
            entries,
            complete,
        }))
    }

    /// Whether the cache key must be taken from what the walk keeps
    /// ([`ContextMount::keyed_entries`]) rather than from the whole source: patterns are in
    /// force and the walk kept or left out something.
    pub(crate) fn filtered(&self) -> bool {
        !self.entries.is_empty() || !self.complete
    }

    /// The source and what is kept below it, in walk order, each with its path relative to
    /// the source (`""` for the source) and whether its content is withheld
    /// ([`BuildContext::withholds`]): what the step's cache key hashes.
    pub(crate) fn keyed_entries(
        &self,
        context: &BuildContext,
    ) -> Vec<(String, PathBuf, Metadata, bool)> {
        let withheld = |e: Option<&ContextEntry>| e.is_some_and(|e| e.withheld);
        let mut out = vec![(
            String::new(),
            context.root().join(&self.start),
            self.metadata.clone(),
            !self.metadata.is_dir() && withheld(self.entries.first()),
        )];
        if self.metadata.is_dir() {
            for e in &self.entries {
                out.push((
                    self.below(&e.rel).to_owned(),
                    e.path.clone(),
                    e.metadata.clone(),
                    e.withheld,
                ));
            }
        }
        out
    }

    /// The directory to mount and the path inside it that the mount shows: the context and
    /// the source when nothing is left out, else a filtered copy made at `copy` (which must
    /// not exist) and its root.
    pub(crate) fn mount_source(
        &self,
        context: &BuildContext,
        copy: &Path,
    ) -> Result<(PathBuf, String)> {
        if self.complete {
            return Ok((
                context.root().to_path_buf(),
                crate::meta::clean_abs(&format!("/{}", self.start)),
            ));
        }
        fs::create_dir(copy).map_err(io_err("create", copy))?;
        if !self.metadata.is_dir() {
            // A single file whose content is withheld: an empty one in a directory of its own.
            let name = self.start.rsplit('/').next().unwrap_or(&self.start);
            let dest = copy.join(name);
            fs::File::create_new(&dest).map_err(io_err("create", &dest))?;
            set_meta(&dest, &self.metadata)?;
            return Ok((copy.to_path_buf(), format!("/{name}")));
        }
        let mut dirs = vec![(copy.to_path_buf(), self.metadata.clone())];
        let mut try_link = true;
        for e in &self.entries {
            let dest = copy.join(self.below(&e.rel));
            let kind = e.metadata.file_type();
            if kind.is_dir() {
                fs::create_dir(&dest).map_err(io_err("create", &dest))?;
                dirs.push((dest, e.metadata.clone()));
            } else if kind.is_file() && e.withheld {
                fs::File::create_new(&dest).map_err(io_err("create", &dest))?;
                set_meta(&dest, &e.metadata)?;
            } else if kind.is_file() {
                if try_link {
                    match fs::hard_link(&e.path, &dest) {
                        Ok(()) => continue,
                        // Another filesystem, or a file the kernel will not let this user link
                        // (protected_hardlinks): copied, as is everything after a cross-device
                        // failure.
                        Err(err) => try_link = err.raw_os_error() != Some(libc::EXDEV),
                    }
                }
                copy_file(&e.path, &dest)?;
                set_meta(&dest, &e.metadata)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&e.path).map_err(io_err("read link", &e.path))?;
                std::os::unix::fs::symlink(&target, &dest).map_err(io_err("symlink", &dest))?;
                set_meta(&dest, &e.metadata)?;
            }
            // Sockets, fifos and devices in a context are left out: none is a file a step
            // could read from a directory the user sent.
        }
        // Last, deepest first: a directory's time changes as entries are made in it, and a
        // read-only one could not have been filled.
        for (dir, metadata) in dirs.iter().rev() {
            set_meta(dir, metadata)?;
        }
        Ok((copy.to_path_buf(), "/".to_owned()))
    }

    /// A walked path relative to the source.
    fn below<'a>(&self, rel: &'a str) -> &'a str {
        rel.strip_prefix(self.start.as_str())
            .unwrap_or(rel)
            .trim_start_matches('/')
    }
}

/// Copies a regular file's bytes without following a symlink that replaced it since the walk.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(io_err("open", from))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(io_err("create", to))?;
    io::copy(&mut src, &mut dst).map_err(io_err("copy", from))?;
    Ok(())
}

/// Gives a made entry the owner (when this process may), mode and times of the original.
fn set_meta(path: &Path, m: &Metadata) -> Result<()> {
    // Only root can give a file away; an unprivileged build's context is its user's anyway.
    let _ = std::os::unix::fs::lchown(path, Some(m.uid()), Some(m.gid()));
    if !m.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(io_err("chmod", path))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Error::Io {
        action: "set times of",
        path: path.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn context(ignore: Option<&str>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (path, content) in [("a/keep", "k"), ("a/b.log", "l"), ("a/deep/x", "x")] {
            fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            fs::write(root.join(path), content).unwrap();
        }
        if let Some(ignore) = ignore {
            fs::write(root.join(".dockerignore"), ignore).unwrap();
        }
        symlink("/etc", root.join("a/abs")).unwrap();
        fs::set_permissions(root.join("a/deep"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        tmp
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path().strip_prefix(dir).unwrap().display().to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_context_itself_when_nothing_is_left_out() {
        // (patterns, source, mounted as is)
        let cases = [
            (None, "a", true),
            (Some("*.log\n"), "a", true),
            (Some("a/*.log\n"), "a", false),
            (Some("a/*.log\n"), "a/deep", true),
            (Some("a/*.log\n"), "a/keep", true),
            (Some("a/deep\n"), ".", false),
        ];
        for (ignore, source, whole) in cases {
            let tmp = context(ignore);
            let ctx = BuildContext::open(tmp.path(), None).unwrap();
            let plan = ContextMount::plan(&ctx, source).unwrap().unwrap();
            let out = tempfile::tempdir().unwrap();
            let copy = out.path().join("c");
            let (mounted, inside) = plan.mount_source(&ctx, &copy).unwrap();
            assert_eq!(mounted == ctx.root(), whole, "{ignore:?} {source}");
            assert_eq!(!copy.exists(), whole, "{ignore:?} {source}");
            if whole {
                assert_eq!(inside, crate::meta::clean_abs(&format!("/{source}")));
            } else {
                assert_eq!(inside, "/");
                fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
            }
            fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn a_filtered_copy_keeps_modes_times_and_symlinks() {
        let tmp = context(Some("a/*.log\n"));
        let ctx = BuildContext::open(tmp.path(), None).unwrap();
        let plan = ContextMount::plan(&ctx, "a").unwrap().unwrap();
        let out = tempfile::tempdir().unwrap();
        let copy = out.path().join("c");
        plan.mount_source(&ctx, &copy).unwrap();
        assert_eq!(listing(&copy), ["abs", "deep", "deep/x", "keep"]);
        let (a, c) = (
            fs::metadata(tmp.path().join("a")).unwrap(),
            fs::metadata(&copy).unwrap(),
        );
        assert_eq!(c.mode() & 0o7777, 0o555);
        assert_eq!(c.mtime(), a.mtime());
        let deep = fs::metadata(copy.join("deep")).unwrap();
        assert_eq!(deep.mode() & 0o7777, 0o750);
        // Never followed: the link is copied as a link.
        assert_eq!(fs::read_link(copy.join("abs")).unwrap(), Path::new("/etc"));
        assert_eq!(fs::read_to_string(copy.join("keep")).unwrap(), "k");
        // The byte copy used when linking fails refuses a symlink put in a file's place.
        symlink("/etc/hostname", out.path().join("swapped")).unwrap();
        assert!(copy_file(&out.path().join("swapped"), &out.path().join("x")).is_err());
        copy_file(&tmp.path().join("a/keep"), &out.path().join("y")).unwrap();
        assert_eq!(fs::read_to_string(out.path().join("y")).unwrap(), "k");
        for d in [&copy, &tmp.path().join("a")] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn withheld_files_are_mounted_empty() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("docs")).unwrap();
        fs::write(tmp.path().join("docs/r.md"), "content").unwrap();
        fs::write(tmp.path().join(".dockerignore"), "*\n!**/*.md\ndocs\n").unwrap();
        let ctx = BuildContext::open(tmp.path(), None).unwrap();
        // (source, path of the file in the copy, what the mount shows)
        for (source, file, inside) in [("docs", "r.md", "/"), ("docs/r.md", "r.md", "/r.md")] {
            let plan = ContextMount::plan(&ctx, source).unwrap().unwrap();
            let out = tempfile::tempdir().unwrap();
            let copy = out.path().join("c");
            assert_eq!(
                plan.mount_source(&ctx, &copy).unwrap(),
                (copy.clone(), inside.to_owned())
            );
            assert_eq!(fs::read(copy.join(file)).unwrap(), b"", "{source}");
            assert!(plan.keyed_entries(&ctx).iter().any(|e| e.3), "{source}");
        }
    }

    #[test]
    fn missing_and_ignored_sources() {
        let tmp = context(Some("a/*.log\n"));
        let ctx = BuildContext::open(tmp.path(), None).unwrap();
        let missing = ContextMount::plan(&ctx, "nope").unwrap().err().unwrap();
        assert!(missing.contains("does not exist"), "{missing}");
        let ignored = ContextMount::plan(&ctx, "a/b.log").unwrap().err().unwrap();
        assert!(ignored.contains("excluded by .dockerignore"), "{ignored}");
        fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
