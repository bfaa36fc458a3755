//! The build context: the directory COPY and ADD read from, filtered by `.dockerignore`.
//!
//! # Which ignore file
//!
//! As buildkit's Dockerfile frontend (dockerui): `<Dockerfile>.dockerignore` next to the
//! Dockerfile when it exists and is not empty, else `.dockerignore` at the context root; no file
//! means no patterns. The patterns apply to every path, the Dockerfile and the ignore file
//! included.
//!
//! # Which paths are in the context
//!
//! What buildkit's context transfer (tonistiigi/fsutil) sends: a walk from the root, parents
//! before children, each path matched incrementally against its parent's results
//! ([`Matcher::excluded_with_parent`]). An excluded directory is not entered unless an exception
//! might re-include something below it ([`Matcher::may_include_below`]); a kept path inside an
//! excluded directory is sent with its parent directories. [`BuildContext::is_ignored`] answers
//! the same question for one path, so a walk and a single lookup never disagree;
//! [`BuildContext::is_sent`] also counts an excluded directory sent as such a parent (a COPY
//! source may name it).
//!
//! A sent file can still arrive empty: fsutil reads file data through a whole-path check
//! (`MatchesOrParentMatches`) that can refuse what the incremental walk kept
//! ([`BuildContext::withholds`], [`ContextEntry::withheld`]).
//!
//! # Symlinks
//!
//! The walk never follows symlinks: they are entries like any other. [`BuildContext::resolve`]
//! follows them with chroot semantics (absolute targets start at the context root, `..` stops at
//! it), as containerd's `fs.RootPath` does for COPY sources, so no path it returns is outside the
//! context.

use std::ffi::OsString;
use std::fs::{self, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn_layers::IdMap;
use cairn_layers::apply::{ApplyOptions, Whiteouts, apply_layer};
use cairn_layers::compress::decompress_detected;
use cairn_layers::rootfs;

use crate::error::{Error, Result};
use crate::ignore::{self, IgnoreError, MatchInfo, Matcher};

/// A build context directory and its `.dockerignore` patterns.
#[derive(Debug)]
pub struct BuildContext {
    /// Canonical (absolute, symlink-free) path of the context directory.
    root: PathBuf,
    matcher: Matcher,
    /// The ignore file the patterns came from, for errors.
    ignore_file: Option<PathBuf>,
    /// The line of each pattern given to the matcher, by index, for errors.
    lines: Vec<usize>,
}

/// A path of the context that a walk yields.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    /// Context-relative, slash-separated, without a leading `./`. A name that is not UTF-8
    /// has U+FFFD here, as Go's matching sees it; `path` has its bytes.
    pub rel: String,
    /// The absolute path on disk.
    pub path: PathBuf,
    /// The entry's own type (a symlink is a symlink).
    pub file_type: FileType,
    /// `lstat` of the entry.
    pub metadata: Metadata,
    /// A regular file BuildKit sends without its content ([`BuildContext::withholds`]): it
    /// is in the context, empty.
    pub withheld: bool,
}

impl BuildContext {
    /// Opens a context directory; `dockerfile` is the Dockerfile path (for `<Dockerfile>.dockerignore`
    /// next to it, which wins over CONTEXT/.dockerignore; a missing file means no patterns).
    ///
    /// `dockerfile` is a filesystem path (as given to `-f`), not a context-relative one. An empty
    /// `<Dockerfile>.dockerignore` counts as missing, as in buildkit. The context's own
    /// `.dockerignore` is read through [`BuildContext::resolve`], so a symlink cannot point the
    /// read outside the context.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<BuildContext> {
        let mut context = BuildContext::open_bare(root)?;
        let mut candidates = Vec::new();
        if let Some(dockerfile) = dockerfile {
            let mut name = dockerfile.as_os_str().to_owned();
            name.push(".dockerignore");
            candidates.push(PathBuf::from(name));
        }
        candidates.push(context.resolve(".dockerignore")?);
        for file in candidates {
            let bytes = match fs::read(&file) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        action: "read",
                        path: file,
                        source,
                    });
                }
            };
            if bytes.is_empty() {
                continue;
            }
            context.load_ignore(file, bytes)?;
            break;
        }
        Ok(context)
    }

    /// Opens a context directory with the patterns of `ignorefile` (`--ignorefile`, podman's)
    /// instead of any `.dockerignore`: the file is the user's choice, so it is read wherever it
    /// is, and a missing one is an error rather than no patterns.
    pub fn open_with_ignore(root: &Path, ignorefile: &Path) -> Result<BuildContext> {
        let mut context = BuildContext::open_bare(root)?;
        let bytes = fs::read(ignorefile).map_err(|source| Error::Io {
            action: "read the ignore file",
            path: ignorefile.to_owned(),
            source,
        })?;
        context.load_ignore(ignorefile.to_owned(), bytes)?;
        Ok(context)
    }

    /// The context directory, checked, without patterns.
    fn open_bare(root: &Path) -> Result<BuildContext> {
        let canonical = fs::canonicalize(root).map_err(|source| Error::Io {
            action: "open build context",
            path: root.to_owned(),
            source,
        })?;
        let metadata = fs::metadata(&canonical).map_err(|source| Error::Io {
            action: "stat",
            path: canonical.clone(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(Error::Context {
                path: root.to_owned(),
                reason: "not a directory".to_owned(),
            });
        }
        Ok(BuildContext {
            root: canonical,
            matcher: Matcher::default(),
            ignore_file: None,
            lines: Vec::new(),
        })
    }

    /// Reads and compiles an ignore file's patterns.
    fn load_ignore(&mut self, file: PathBuf, bytes: Vec<u8>) -> Result<()> {
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let bytes = e.as_bytes();
                let bad = e.utf8_error().valid_up_to();
                let start = bytes[..bad]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = bytes[bad..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |i| bad + i);
                return Err(Error::Ignore {
                    file,
                    line: bytes[..bad].iter().filter(|&&b| b == b'\n').count() + 1,
                    pattern: String::from_utf8_lossy(&bytes[start..end]).into_owned(),
                    reason: "not valid UTF-8".to_owned(),
                });
            }
        };
        let read = match ignore::read_lines(&text) {
            Ok(read) => read,
            Err(IgnoreError::LineTooLong { line }) => {
                let content = text.split('\n').nth(line - 1).unwrap_or_default();
                let shown: String = content.chars().take(40).collect();
                return Err(Error::Ignore {
                    file,
                    line,
                    pattern: format!("{shown}..."),
                    reason: "line is longer than 64 KiB".to_owned(),
                });
            }
            Err(e) => {
                return Err(Error::Context {
                    path: file,
                    reason: e.to_string(),
                });
            }
        };
        let (lines, patterns): (Vec<usize>, Vec<String>) = read.into_iter().unzip();
        self.ignore_file = Some(file);
        self.lines = lines;
        self.matcher = Matcher::new(&patterns).map_err(|e| self.ignore_error(e))?;
        Ok(())
    }

    /// An [`IgnoreError`] with the ignore file and the pattern's line.
    fn ignore_error(&self, e: IgnoreError) -> Error {
        let file = self.ignore_file.clone().unwrap_or_default();
        match e {
            IgnoreError::Pattern {
                index,
                pattern,
                reason,
            } => Error::Ignore {
                file,
                line: self.lines.get(index).copied().unwrap_or_default(),
                pattern,
                reason,
            },
            other => Error::Context {
                path: file,
                reason: other.to_string(),
            },
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The ignore file the patterns were read from, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// Whether a context-relative path is excluded by .dockerignore.
    ///
    /// The path is cleaned lexically first (`..` stops at the root; the root is never
    /// excluded). Symlinks are not resolved: ask about [`BuildContext::resolve_rel`]'s answer for
    /// the path a COPY source really reads. The answer is the walk's: matched incrementally from
    /// the top, and excluded when an excluded ancestor directory would not be entered.
    pub fn is_ignored(&self, rel: &str) -> Result<bool> {
        let rel = clean_rel(rel);
        if rel.is_empty() || self.matcher.is_empty() {
            return Ok(false);
        }
        let mut info = MatchInfo::default();
        let mut ignored = false;
        let ancestors = rel.match_indices('/').map(|(i, _)| &rel[..i]);
        for (prefix, last) in ancestors.map(|a| (a, false)).chain([(rel.as_str(), true)]) {
            let (excluded, next) = self
                .matcher
                .excluded_with_parent(prefix, &info)
                .map_err(|e| self.ignore_error(e))?;
            if excluded && !last && !self.matcher.may_include_below(prefix) {
                return Ok(true);
            }
            ignored = excluded;
            info = next;
        }
        Ok(ignored)
    }

    /// Whether BuildKit sends the file `rel` (one the walk keeps) without its content.
    ///
    /// fsutil's sender reads a file's data through `filterFS.Open`, which asks the whole-path
    /// `MatchesOrParentMatches` ([`Matcher::excluded`]) rather than the walk's incremental
    /// match; where they disagree (a pattern after an exception, skipped at the directory
    /// that matches it) Open refuses, the data packet is sent empty and the file arrives with
    /// its stat and no bytes. A pattern failing to match refuses too. They agree whenever
    /// there is no exception.
    pub fn withholds(&self, rel: &str) -> bool {
        if !self.matcher.has_exceptions() {
            return false;
        }
        self.matcher.excluded(&clean_rel(rel)).unwrap_or(true)
    }

    /// Whether a walk from the root sends `rel`: it is not ignored, or it is an excluded
    /// directory that is entered for an exception and keeps something below it (fsutil sends
    /// such a directory as the parent of what it keeps, so `COPY dir` finds it).
    ///
    /// `rel` is cleaned as [`BuildContext::is_ignored`] does. A symlink is an entry of its
    /// own, never entered (its parents are resolved inside the context to look at it).
    pub fn is_sent(&self, rel: &str) -> Result<bool> {
        let rel = clean_rel(rel);
        if !self.is_ignored(&rel)? {
            return Ok(true);
        }
        if !self.matcher.has_exceptions() {
            return Ok(false);
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", &rel));
        let path = self.resolve(parent)?.join(name);
        let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        Ok(is_dir && !self.walk(&rel)?.is_empty())
    }

    /// Walks the context once, in sorted order (a directory before its children, siblings by
    /// name bytes), yielding the entries that are not ignored, never following symlinks, never
    /// reading ignored files, pruning ignored directories unless `may_include_below` says an
    /// exception may re-include something inside (then the directory is walked and only the
    /// re-included entries and their parent directories are yielded, as fsutil does).
    ///
    /// `from` is resolved first ([`BuildContext::resolve_rel`]: a symlink naming the source is
    /// followed), and the entries' `rel` are relative to the context root, below that resolved
    /// path. A directory yields what is below it, not itself; anything else yields itself.
    /// Nothing is yielded when `from` is ignored (unless exceptions re-include something below
    /// it); a missing `from` is an error.
    pub fn walk(&self, from: &str) -> Result<Vec<ContextEntry>> {
        let start = self.resolve_rel(from)?;
        let mut out = Vec::new();
        let mut info = MatchInfo::default();
        let mut excluded = false;
        if !start.is_empty() {
            // Match results down to `start`, pruned where a walk from the root would prune.
            let ancestors: Vec<&str> = start.match_indices('/').map(|(i, _)| &start[..i]).collect();
            for prefix in ancestors.into_iter().chain([start.as_str()]) {
                // `excluded` is the parent's verdict: a walk from the root never gets below an
                // excluded directory that no exception reaches into.
                if excluded && !self.matcher.may_include_below(go_parent(prefix)) {
                    return Ok(out);
                }
                let (prefix_excluded, next) = self
                    .matcher
                    .excluded_with_parent(prefix, &info)
                    .map_err(|e| self.ignore_error(e))?;
                excluded = prefix_excluded;
                info = next;
            }
            let path = self.root.join(&start);
            let metadata = fs::symlink_metadata(&path).map_err(|source| Error::Io {
                action: "stat",
                path: path.clone(),
                source,
            })?;
            if !metadata.is_dir() {
                if !excluded {
                    let withheld = metadata.is_file() && self.withholds(&start);
                    out.push(ContextEntry {
                        rel: start,
                        path,
                        file_type: metadata.file_type(),
                        metadata,
                        withheld,
                    });
                }
                return Ok(out);
            }
            if excluded && !self.matcher.may_include_below(&start) {
                return Ok(out);
            }
        }
        let mut segments = Vec::new();
        let start_path = if start.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&start)
        };
        self.walk_dir(&start, &start_path, &info, excluded, &mut segments)?;
        out.reserve_exact(segments.iter().map(Vec::len).sum());
        for s in segments {
            out.extend(s);
        }
        Ok(out)
    }

    /// Walks one directory, appending what it keeps, in walk order, to `out` as segments
    /// (moved, not copied, from subdirectory to parent). Subdirectories are walked in
    /// parallel: a stat per entry is most of a no-op rebuild, and it scales with cores.
    ///
    /// An excluded directory is walked only when an exception may re-include something
    /// below it, and is then yielded just before the first entry kept below it (nothing
    /// when nothing is kept). `dir_path` is the directory on disk: `dir_rel` names it for
    /// matching, with U+FFFD for bytes that are not UTF-8.
    fn walk_dir(
        &self,
        dir_rel: &str,
        dir_path: &Path,
        info: &MatchInfo,
        dir_excluded: bool,
        out: &mut Vec<Vec<ContextEntry>>,
    ) -> Result<()> {
        use rayon::prelude::*;
        let names = match read_dir_sorted(dir_path) {
            Ok(names) => names,
            // fsutil skips an excluded directory it cannot read: nothing in it could be sent
            // without reading it, and nothing in it was asked for explicitly.
            Err(e) if dir_excluded && e.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(());
            }
            Err(source) => {
                return Err(Error::Io {
                    action: "read directory",
                    path: dir_path.to_owned(),
                    source,
                });
            }
        };
        // This directory's entries, each with what it needs walked below it.
        let mut own: Vec<(ContextEntry, Option<Below>)> = Vec::new();
        for (name, entry) in names {
            let path = dir_path.join(&name);
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                // Removed since the directory was listed: it is not part of the context.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        action: "stat",
                        path,
                        source,
                    });
                }
            };
            // A name that is not UTF-8 is matched as Go sees it (with U+FFFD) and copied
            // with its bytes, from `path`, as Docker sends it.
            let name = name.to_string_lossy().into_owned();
            let rel = if dir_rel.is_empty() {
                name
            } else {
                let mut rel = String::with_capacity(dir_rel.len() + 1 + name.len());
                rel.push_str(dir_rel);
                rel.push('/');
                rel.push_str(&name);
                rel
            };
            let (excluded, child_info) = self
                .matcher
                .excluded_with_parent(&rel, info)
                .map_err(|e| self.ignore_error(e))?;
            let is_dir = metadata.is_dir();
            let below = |excluded| Below {
                rel: rel.clone(),
                path: path.clone(),
                info: child_info,
                excluded,
            };
            if excluded {
                if is_dir && self.matcher.may_include_below(&rel) {
                    let below = below(true);
                    let entry = ContextEntry {
                        rel,
                        path,
                        file_type: metadata.file_type(),
                        metadata,
                        withheld: false,
                    };
                    own.push((entry, Some(below)));
                }
                continue;
            }
            let below = is_dir.then(|| below(false));
            let withheld = metadata.is_file() && self.withholds(&rel);
            let entry = ContextEntry {
                rel,
                path,
                file_type: metadata.file_type(),
                metadata,
                withheld,
            };
            own.push((entry, below));
        }
        let walked: Vec<Result<Vec<Vec<ContextEntry>>>> = own
            .par_iter()
            .map(|(_, below)| {
                let mut segments = Vec::new();
                if let Some(b) = below {
                    self.walk_dir(&b.rel, &b.path, &b.info, b.excluded, &mut segments)?;
                }
                Ok(segments)
            })
            .collect();
        let mut current: Vec<ContextEntry> = Vec::new();
        for ((entry, below), below_entries) in own.into_iter().zip(walked) {
            let below_entries = below_entries?;
            let kept_below = below_entries.iter().any(|s| !s.is_empty());
            // An excluded directory shows only as the parent of something kept below it.
            if kept_below || !below.as_ref().is_some_and(|b| b.excluded) {
                current.push(entry);
            }
            if kept_below {
                out.push(std::mem::take(&mut current));
                out.extend(below_entries);
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        Ok(())
    }

    /// Resolves a context-relative path for reading without leaving the context, with the
    /// one resolver COPY uses too ([`rootfs::resolve_names`]): a symlink in a parent component
    /// or as the final component is resolved within the context (absolute targets relative
    /// to the context root, `..` clamped at the root) — a COPY source symlink is followed
    /// (Docker follows the named source), symlinks inside copied dirs are kept by the caller.
    /// Returns the real path inside the context.
    ///
    /// Missing components, and names below a non-directory, are kept as named (the caller's
    /// open reports them); a symlink loop is an error.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let resolved = self.resolve_rel(rel)?;
        Ok(if resolved.is_empty() {
            self.root.clone()
        } else {
            self.root.join(resolved)
        })
    }

    /// [`BuildContext::resolve`] as a context-relative path (`""` for the root), the form
    /// [`BuildContext::is_ignored`] and [`BuildContext::walk`] take.
    pub fn resolve_rel(&self, rel: &str) -> Result<String> {
        match rootfs::resolve_names(&self.root, rel, true) {
            Ok(names) => Ok(names.join("/")),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                Err(Error::Context {
                    path: PathBuf::from(rel),
                    reason: "too many levels of symbolic links".to_owned(),
                })
            }
            Err(source) => Err(Error::Io {
                action: "resolve",
                path: self.root.join(rel.trim_start_matches('/')),
                source,
            }),
        }
    }
}

/// Extracts a build context sent as a tar (`cairn build -`) into `into`: plain, gzip or zstd,
/// every entry kept inside `into` (see [`cairn_layers::apply`]), ownership not restored.
pub fn context_from_tar<R: Read>(tar: R, into: &Path) -> Result<()> {
    let (_, plain) = decompress_detected(tar)?;
    let options = ApplyOptions {
        whiteouts: Whiteouts::Apply,
        id_map: IdMap::identity(),
        chown: false,
        skip_devices: false,
    };
    apply_layer(plain, into, &options)?;
    Ok(())
}

/// What a walk does below a directory entry.
struct Below {
    rel: String,
    path: PathBuf,
    info: MatchInfo,
    /// The directory itself is excluded; it is walked for re-included entries only.
    excluded: bool,
}

/// A directory's entry names, sorted by bytes (Go's `WalkDir` order).
/// A directory's entries by name. Kept as entries, not names: an entry's metadata is a stat
/// relative to the open directory, where a stat of the joined path walks every component of
/// it again (a tenth of a no-op rebuild of a 20,000-file context).
fn read_dir_sorted(dir: &Path) -> io::Result<Vec<(OsString, fs::DirEntry)>> {
    #[cfg(test)]
    if let Ok(mut listed) = tests::LISTED.lock() {
        listed.push(dir.to_owned());
    }
    let mut entries = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| (e.file_name(), e)))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// A context-relative path cleaned lexically, `..` stopping at the root; `""` is the root.
fn clean_rel(rel: &str) -> String {
    let cleaned = ignore::go_clean(&format!("/{rel}"));
    cleaned.trim_start_matches('/').to_owned()
}

/// The parent of a context-relative path (`""` for a top-level one).
fn go_parent(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// Directories walks listed (on any thread), to prove pruning without relying on
    /// permissions (tests also run as root, who can read anything).
    pub(super) static LISTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

    /// The directories listed under `root` since the last call, sorted; other tests' entries
    /// stay.
    fn listed(root: &Path) -> Vec<PathBuf> {
        let mut all = LISTED.lock().unwrap();
        let (mine, others): (Vec<PathBuf>, Vec<PathBuf>) =
            all.drain(..).partition(|p| p.starts_with(root));
        *all = others;
        let mut mine = mine;
        mine.sort();
        mine
    }

    /// Creates files (ending in `/` for directories) with their parents.
    fn tree(root: &Path, entries: &[(&str, &str)]) {
        for (path, content) in entries {
            let full = root.join(path.trim_end_matches('/'));
            if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, content).unwrap();
            }
        }
    }

    fn rels(entries: &[ContextEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.rel.as_str()).collect()
    }

    /// Whether this process can read a file with mode 000 (root, or CAP_DAC_OVERRIDE).
    fn reads_anything(dir: &Path) -> bool {
        let probe = dir.join("probe");
        fs::write(&probe, "x").unwrap();
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).unwrap();
        let readable = fs::File::open(&probe).is_ok();
        fs::remove_file(&probe).unwrap();
        readable
    }

    const IGNORE: &str = "\
# root-only, any depth, whole directories
*.log
**/*.tmp
dir
!dir/keep
secret/
/build
";

    fn sample() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[
                ("Dockerfile", "FROM scratch\n"),
                (".dockerignore", IGNORE),
                ("a.log", ""),
                ("sub/b.log", ""),
                ("sub/c.tmp", ""),
                ("d.tmp", ""),
                ("dir/x", ""),
                ("dir/keep", ""),
                ("dir/nested/y", ""),
                ("secret/s", ""),
                ("build/out", ""),
                ("src/main.rs", ""),
                ("src/deep/er/f.tmp", ""),
                ("empty/", ""),
            ],
        );
        tmp
    }

    #[test]
    fn walk_applies_dockerignore() {
        let tmp = sample();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        assert_eq!(
            context.ignore_file(),
            Some(context.root().join(".dockerignore").as_path())
        );
        listed(context.root());
        let entries = context.walk("").unwrap();
        assert_eq!(
            rels(&entries),
            [
                ".dockerignore",
                "Dockerfile",
                // Excluded, yielded as the parent of the re-included dir/keep.
                "dir",
                "dir/keep",
                "empty",
                "src",
                "src/deep",
                "src/deep/er",
                "src/main.rs",
                "sub",
                // `*.log` is anchored at the root.
                "sub/b.log",
            ]
        );
        let root = context.root().to_owned();
        let listed: Vec<String> = listed(&root)
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // `dir` is entered for `!dir/keep`; secret, build and dir/nested are never listed.
        assert_eq!(
            listed,
            ["", "dir", "empty", "src", "src/deep", "src/deep/er", "sub"]
        );
        for entry in &entries {
            assert_eq!(entry.path, root.join(&entry.rel));
            assert_eq!(entry.file_type.is_dir(), entry.metadata.is_dir());
        }
    }

    #[test]
    fn is_ignored_agrees_with_the_walk() {
        let tmp = sample();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        let cases = [
            ("", false),
            (".", false),
            ("a.log", true),
            ("./a.log", true),
            ("../../a.log", true),
            ("sub/b.log", false),
            ("sub/c.tmp", true),
            ("d.tmp", true),
            ("src/deep/er/f.tmp", true),
            ("dir", true),
            ("dir/x", true),
            ("dir/keep", false),
            ("dir/nested/y", true),
            ("secret", true),
            ("secret/s", true),
            ("build/out", true),
            ("sub/build", false),
            ("src/main.rs", false),
            ("Dockerfile", false),
            ("missing/file", false),
        ];
        for (rel, want) in cases {
            assert_eq!(context.is_ignored(rel).unwrap(), want, "{rel:?}");
        }
        let walked: Vec<String> = context
            .walk("")
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect();
        for rel in [
            "sub/b.log",
            "dir/keep",
            "src/main.rs",
            "dir/x",
            "secret/s",
            "a.log",
        ] {
            assert_eq!(
                context.is_ignored(rel).unwrap(),
                !walked.iter().any(|w| w == rel),
                "{rel:?}"
            );
        }
    }

    #[test]
    fn walk_from_a_subdirectory_or_file() {
        let tmp = sample();
        symlink("sub", tmp.path().join("to-sub")).unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        let cases: [(&str, &[&str]); 9] = [
            ("sub", &["sub/b.log"]),
            ("./sub/", &["sub/b.log"]),
            // A symlink naming the source is followed; entries are named by the real path.
            ("to-sub", &["sub/b.log"]),
            ("sub/b.log", &["sub/b.log"]),
            ("a.log", &[]),
            ("dir", &["dir/keep"]),
            ("dir/nested", &[]),
            ("secret", &[]),
            ("empty", &[]),
        ];
        for (from, want) in cases {
            assert_eq!(rels(&context.walk(from).unwrap()), want, "{from:?}");
        }
        assert!(matches!(
            context.walk("nope"),
            Err(Error::Io { action: "stat", .. })
        ));
    }

    #[test]
    fn dockerfile_dockerignore_wins() {
        let tmp = sample();
        fs::write(
            tmp.path().join("Dockerfile.dockerignore"),
            "src\n*.dockerignore\n",
        )
        .unwrap();
        let context = BuildContext::open(tmp.path(), Some(&tmp.path().join("Dockerfile"))).unwrap();
        assert!(
            context
                .ignore_file()
                .unwrap()
                .ends_with("Dockerfile.dockerignore")
        );
        let entries = context.walk("").unwrap();
        let rels = rels(&entries);
        assert!(
            rels.contains(&"a.log") && rels.contains(&"secret/s"),
            "{rels:?}"
        );
        assert!(
            !rels
                .iter()
                .any(|r| r.starts_with("src") || r.ends_with(".dockerignore"))
        );

        // Next to a Dockerfile elsewhere, even outside the context.
        let outside = tempfile::tempdir().unwrap();
        fs::write(
            outside.path().join("Dockerfile2.dockerignore"),
            "Dockerfile\n",
        )
        .unwrap();
        let context =
            BuildContext::open(tmp.path(), Some(&outside.path().join("Dockerfile2"))).unwrap();
        assert!(context.is_ignored("Dockerfile").unwrap());
        assert!(!context.is_ignored("a.log").unwrap());

        // An empty one, or none, leaves the context's own file in charge.
        fs::write(tmp.path().join("Dockerfile.dockerignore"), "").unwrap();
        let context = BuildContext::open(tmp.path(), Some(&tmp.path().join("Dockerfile"))).unwrap();
        assert!(context.is_ignored("a.log").unwrap());
        let context = BuildContext::open(tmp.path(), Some(&tmp.path().join("Other"))).unwrap();
        assert!(context.is_ignored("a.log").unwrap());

        // No ignore file at all: nothing is ignored.
        fs::remove_file(tmp.path().join(".dockerignore")).unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        assert!(context.matcher().is_empty() && context.ignore_file().is_none());
        assert!(!context.is_ignored("a.log").unwrap());
    }

    #[test]
    fn ignored_paths_are_never_opened() {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[
                (".dockerignore", "locked\nfifos\nsecret.key\n"),
                ("locked/inner", "x"),
                ("fifos/", ""),
                ("secret.key", "k"),
                ("kept", ""),
            ],
        );
        // FIFOs: opening one would block, so a walk that opened ignored (or any) files would hang.
        let status = std::process::Command::new("mkfifo")
            .arg(tmp.path().join("fifos/pipe"))
            .arg(tmp.path().join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let locked = [tmp.path().join("locked"), tmp.path().join("secret.key")];
        for path in &locked {
            fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
        }
        let context = BuildContext::open(tmp.path(), None).unwrap();
        listed(context.root());
        // Without the privilege to read them, listing `locked` would fail here.
        let entries = context.walk("");
        for path in &locked {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let entries = entries.unwrap();
        assert_eq!(rels(&entries), [".dockerignore", "kept", "pipe"]);
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &entries[2].file_type
        ));
        // The proof that also holds as root: ignored directories are never listed.
        let root = context.root();
        assert_eq!(listed(root), [root.to_owned()]);
    }

    #[test]
    fn unreadable_directories() {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[
                (".dockerignore", "wild\n!wild/*.txt\n"),
                ("wild/a.txt", ""),
                ("wild/b.bin", ""),
                ("wild/locked/inner.txt", ""),
                ("open/locked/f", ""),
            ],
        );
        let privileged = reads_anything(tmp.path());
        let wild = tmp.path().join("wild/locked");
        let open = tmp.path().join("open/locked");
        fs::set_permissions(&wild, fs::Permissions::from_mode(0o000)).unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        // A wildcard exception makes the walk enter every excluded directory; one it cannot
        // read is skipped, as fsutil does (root reads it and finds nothing to keep).
        let entries = context.walk("");
        fs::set_permissions(&wild, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            rels(&entries.unwrap()),
            [
                ".dockerignore",
                "open",
                "open/locked",
                "open/locked/f",
                "wild",
                "wild/a.txt"
            ]
        );
        // A kept directory that cannot be read is an error naming it.
        fs::set_permissions(&open, fs::Permissions::from_mode(0o000)).unwrap();
        let result = context.walk("");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        if !privileged {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::Io { action: "read directory", path, .. } if path.ends_with("open/locked")),
                "{err}"
            );
        }
    }

    #[test]
    fn reincluded_entries_bring_their_parents() {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[
                (".dockerignore", "*\n!a/b/**/*.go\n!z\n"),
                ("a/b/c/main.go", ""),
                ("a/b/c/main.rs", ""),
                ("a/b/d/e.txt", ""),
                ("a/x.go", ""),
                ("z/inside", ""),
                ("y", ""),
            ],
        );
        let context = BuildContext::open(tmp.path(), None).unwrap();
        assert!(context.matcher().may_include_below("y"));
        assert_eq!(
            rels(&context.walk("").unwrap()),
            ["a", "a/b", "a/b/c", "a/b/c/main.go", "z", "z/inside"]
        );
    }

    #[test]
    fn is_sent_is_what_the_walk_yields() {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[
                (".dockerignore", "*\n!dir/**\n!a/b/**/*.go\n!empty/none\n"),
                ("dir/sub/f", ""),
                ("a/b/c/main.go", ""),
                ("a/b/d/e.txt", ""),
                ("empty/other", ""),
                ("file", ""),
            ],
        );
        fs::create_dir(tmp.path().join("bare")).unwrap();
        symlink("dir", tmp.path().join("link")).unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        // (path, sent): an excluded directory is sent when the walk keeps something below
        // it; the walk never follows the symlink, so `link` is not sent though `dir` is.
        let cases = [
            ("", true),
            ("dir", true),
            ("./dir/", true),
            ("dir/sub", true),
            ("dir/sub/f", true),
            ("a", true),
            ("a/b/c", true),
            ("a/b/d", false),
            ("a/b/d/e.txt", false),
            ("empty", false),
            ("bare", false),
            ("file", false),
            ("link", false),
            ("missing", false),
        ];
        let walked = context.walk("").unwrap();
        for (rel, want) in cases {
            assert_eq!(context.is_sent(rel).unwrap(), want, "{rel:?}");
            let clean = clean_rel(rel);
            assert_eq!(
                clean.is_empty() || walked.iter().any(|e| e.rel == clean),
                want,
                "walk: {rel:?}"
            );
        }
    }

    #[test]
    fn wildcard_exceptions_walk_as_fsutil_does() {
        // Traced through fsutil's filterFS.Walk: each path is matched with
        // MatchesUsingParentResults from its parent's results, and every excluded directory is
        // entered once an exception has a wildcard. (ignore file, what the walk sends, and the
        // sent files that MatchesOrParentMatches still excludes: filterFS.Open refuses those,
        // so BuildKit's sender sends their stat with no data, and they arrive empty.)
        let files = [
            "keep.txt",
            "r.md",
            "a/keep.txt",
            "a/o",
            "a/r.md",
            "a/b/keep.txt",
            "a/b/r.md",
            "x.md/in",
            "docs/r.md",
        ];
        let cases: &[(&str, &[&str], &[&str])] = &[
            // `*/keep.txt` is anchored one level down.
            ("*\n!*/keep.txt\n", &["a", "a/keep.txt"], &[]),
            // `**/*.md` at any depth; a pattern that matched `x.md` counts for `x.md/in`.
            (
                "*\n!**/*.md\n",
                &[
                    "a",
                    "a/b",
                    "a/b/r.md",
                    "a/r.md",
                    "docs",
                    "docs/r.md",
                    "r.md",
                    "x.md",
                    "x.md/in",
                ],
                &[],
            ),
            // Only `a` is excluded: `!*/b` keeps `a/b` and all below it.
            (
                "a\n!*/b\n",
                &[
                    ".dockerignore",
                    "a",
                    "a/b",
                    "a/b/keep.txt",
                    "a/b/r.md",
                    "docs",
                    "docs/r.md",
                    "keep.txt",
                    "r.md",
                    "x.md",
                    "x.md/in",
                ],
                &[],
            ),
            // `docs` after the exception is skipped at `docs` (already excluded by `*`), so
            // the walk never records it there and keeps docs/r.md; the whole-path check
            // matches `docs` as an ancestor and excludes it.
            (
                "*\n!**/*.md\ndocs\n",
                &[
                    "a",
                    "a/b",
                    "a/b/r.md",
                    "a/r.md",
                    "docs",
                    "docs/r.md",
                    "r.md",
                    "x.md",
                    "x.md/in",
                ],
                &["docs/r.md"],
            ),
            // Not a wildcard once `/**` is taken off: only `a` is entered.
            (
                "*\n!a/**\n",
                &[
                    "a",
                    "a/b",
                    "a/b/keep.txt",
                    "a/b/r.md",
                    "a/keep.txt",
                    "a/o",
                    "a/r.md",
                ],
                &[],
            ),
        ];
        for (ignore, want, withheld) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let mut entries: Vec<(&str, &str)> = files.iter().map(|f| (*f, "")).collect();
            entries.push((".dockerignore", ignore));
            tree(tmp.path(), &entries);
            let context = BuildContext::open(tmp.path(), None).unwrap();
            let walked = context.walk("").unwrap();
            assert_eq!(rels(&walked), *want, "{ignore:?}");
            let refused: Vec<&str> = walked
                .iter()
                .filter(|e| e.file_type.is_file())
                .filter(|e| context.matcher().excluded(&e.rel).unwrap())
                .map(|e| e.rel.as_str())
                .collect();
            assert_eq!(refused, *withheld, "{ignore:?}");
            let marked: Vec<&str> = walked
                .iter()
                .filter(|e| e.withheld)
                .map(|e| e.rel.as_str())
                .collect();
            assert_eq!(marked, *withheld, "{ignore:?}");
            for rel in *want {
                assert!(context.is_sent(rel).unwrap(), "{ignore:?} {rel}");
            }
        }
    }

    #[test]
    fn walk_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path(), &[("sub/f", ""), ("keep", "")]);
        symlink("/etc", tmp.path().join("etc-link")).unwrap();
        symlink("sub", tmp.path().join("sub-link")).unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        let entries = context.walk("").unwrap();
        // Siblings by name bytes: "sub" < "sub-link", and "sub"'s children come right after it.
        assert_eq!(
            rels(&entries),
            ["etc-link", "keep", "sub", "sub/f", "sub-link"]
        );
        assert!(entries[0].file_type.is_symlink());
        assert!(entries[4].file_type.is_symlink());
    }

    #[test]
    fn resolve_stays_inside_the_context() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path(), &[("sub/f", ""), ("sub/deeper/g", "")]);
        let t = tmp.path();
        symlink("/etc", t.join("etc-link")).unwrap();
        symlink("../../../../..", t.join("up")).unwrap();
        symlink("sub", t.join("rel")).unwrap();
        symlink("/sub/deeper", t.join("abs")).unwrap();
        symlink("../f", t.join("sub/deeper/back")).unwrap();
        symlink("loop2", t.join("loop1")).unwrap();
        symlink("loop1", t.join("loop2")).unwrap();
        // Inside the context `/self` is this very link: a loop, as in a chroot.
        symlink("/self", t.join("self")).unwrap();
        let context = BuildContext::open(t, None).unwrap();
        let cases = [
            ("etc-link", "etc"),
            ("etc-link/passwd", "etc/passwd"),
            ("up", ""),
            ("up/etc/passwd", "etc/passwd"),
            ("../../etc/passwd", "etc/passwd"),
            ("/sub/f", "sub/f"),
            ("sub/../../../sub/f", "sub/f"),
            ("rel/f", "sub/f"),
            ("abs/g", "sub/deeper/g"),
            ("abs/back", "sub/f"),
            ("rel/deeper/back", "sub/f"),
            ("missing/x", "missing/x"),
            // Below a regular file: kept as named, for the open to fail.
            ("sub/f/x", "sub/f/x"),
            ("", ""),
        ];
        for (rel, want) in cases {
            assert_eq!(context.resolve_rel(rel).unwrap(), want, "{rel:?}");
            let path = context.resolve(rel).unwrap();
            assert!(
                path.starts_with(context.root()),
                "{rel:?} -> {}",
                path.display()
            );
        }
        assert_eq!(
            context.resolve("etc-link").unwrap(),
            context.root().join("etc")
        );
        for looping in ["loop1", "self/x"] {
            let err = context.resolve(looping).unwrap_err().to_string();
            assert!(err.contains("too many levels of symbolic links"), "{err}");
        }
    }

    #[test]
    fn bad_ignore_files_name_file_line_and_pattern() {
        let cases = [
            ("ok\n[\n", 2, "[", "syntax error"),
            ("# c\n\n!\n", 3, "!", "illegal exclusion pattern"),
            ("a\\\n", 1, "a\\", "trailing backslash"),
        ];
        for (text, line, pattern, reason) in cases {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(".dockerignore"), text).unwrap();
            match BuildContext::open(tmp.path(), None) {
                Err(Error::Ignore {
                    file,
                    line: l,
                    pattern: p,
                    reason: r,
                }) => {
                    assert!(file.ends_with(".dockerignore"));
                    assert_eq!((l, p.as_str()), (line, pattern), "{text:?}");
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }

        // Compiles, then fails when matched (Go's regexp rejects the range l-O).
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[(".dockerignore", "x\n[Local-Only]/\n"), ("f", "")],
        );
        let context = BuildContext::open(tmp.path(), None).unwrap();
        let err = context.walk("").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Ignore { line: 2, .. }), "{message}");
        // The pattern as the reader produced it (cleaned), on its line.
        assert!(
            message.contains("\"[Local-Only]\"") && message.contains("l-O"),
            "{message}"
        );

        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(".dockerignore"), b"ok\nbad\xff\n").unwrap();
        let err = BuildContext::open(tmp.path(), None).unwrap_err();
        assert!(matches!(err, Error::Ignore { line: 2, .. }), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join(".dockerignore"),
            format!("a\n{}\n", "x".repeat(70_000)),
        )
        .unwrap();
        let err = BuildContext::open(tmp.path(), None).unwrap_err();
        assert!(matches!(err, Error::Ignore { line: 2, .. }), "{err}");

        let file = tmp.path().join(".dockerignore");
        let err = BuildContext::open(&file, None).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn non_utf8_names_are_walked_with_their_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        tree(
            tmp.path(),
            &[(".dockerignore", "junk\n"), ("junk/", ""), ("ok", "")],
        );
        let odd = std::ffi::OsStr::from_bytes(b"bad\xffname");
        fs::write(tmp.path().join("junk").join(odd), "").unwrap();
        let context = BuildContext::open(tmp.path(), None).unwrap();
        assert_eq!(rels(&context.walk("").unwrap()), [".dockerignore", "ok"]);
        fs::write(tmp.path().join(odd), "").unwrap();
        let entries = context.walk("").unwrap();
        let odd_entry = entries.iter().find(|e| e.rel == "bad\u{fffd}name").unwrap();
        assert_eq!(odd_entry.path, tmp.path().canonicalize().unwrap().join(odd));
    }

    #[test]
    fn context_from_a_tar() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(13);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, "Dockerfile", &b"FROM scratch\n"[..])
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(tar::EntryType::Symlink);
        builder
            .append_link(&mut header, "etc-link", "/etc")
            .unwrap();
        let plain = builder.into_inner().unwrap();

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gzipped = gz.finish().unwrap();

        for bytes in [plain, gzipped] {
            let tmp = tempfile::tempdir().unwrap();
            let into = tmp.path().join("ctx");
            context_from_tar(&bytes[..], &into).unwrap();
            let context = BuildContext::open(&into, None).unwrap();
            assert_eq!(rels(&context.walk("").unwrap()), ["Dockerfile", "etc-link"]);
            assert_eq!(
                fs::read(into.join("Dockerfile")).unwrap(),
                b"FROM scratch\n"
            );
            assert_eq!(
                context.resolve("etc-link/passwd").unwrap(),
                context.root().join("etc/passwd")
            );
        }

        // An entry climbing out of the target stays at its top, as BuildKit's chrooted untar
        // of a context tar keeps it.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_mut_bytes()[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let hostile = builder.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let into = tmp.path().join("ctx");
        context_from_tar(&hostile[..], &into).unwrap();
        assert_eq!(fs::read(into.join("escape")).unwrap(), b"x");
        assert!(!tmp.path().join("escape").exists());
    }
}
