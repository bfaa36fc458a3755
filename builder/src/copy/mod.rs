//! COPY and ADD: Docker's source and destination rules, streamed from the sources straight
//! into a layer tar (owners, modes and times set in the headers, so no chown is ever needed).

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_layers::listing::DirMeta;

use crate::context::BuildContext;
use crate::error::{Error, Result};
use crate::users::Owner;

pub(crate) mod entry;
mod error;
pub(crate) mod path;
mod sources;

pub(crate) use entry::dir_header;
use entry::{append, append_dir, append_symlink, header};
use error::{err, io_err};
pub use path::resolve_in_root;
use path::{clean, glob_component, has_wildcard, join};

/// Where COPY reads from: the build context (with .dockerignore) or another stage's rootfs.
#[derive(Debug, Clone, Copy)]
pub enum SourceRoot<'a> {
    Context(&'a BuildContext),
    Dir(&'a Path),
}

/// One thing to copy: a path in the source root, literal content (a heredoc), or a file from
/// outside the source root (ADD's download), written as a regular file named `name`.
#[derive(Debug, Clone)]
pub enum CopySource {
    Path(String),
    Content {
        name: String,
        data: Vec<u8>,
    },
    /// Mode 0600 before `--chmod`, as Docker gives an ADD from a URL; `mtime` in seconds.
    File {
        name: String,
        path: PathBuf,
        mtime: i64,
    },
}

/// A COPY or ADD, its words already expanded.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub sources: Vec<CopySource>,
    /// As written (relative to `workdir` unless absolute); a trailing `/` means a directory.
    pub dest: String,
    pub workdir: String,
    pub owner: Owner,
    /// `--chmod`, octal or symbolic.
    pub chmod: Option<String>,
    /// SOURCE_DATE_EPOCH: no mtime later than this.
    pub clamp_mtime: Option<i64>,
    /// ADD: unpack local tar archives into the destination.
    pub unpack_archives: bool,
    /// `--parents`: keep each source's directories (`a/b/f` lands at `DEST/a/b/f`).
    pub parents: bool,
    /// `--exclude`: .dockerignore-style patterns, matched against paths below each source and
    /// against each source itself.
    pub excludes: Vec<String>,
}

/// An entry to write: where it goes in the image and where its bytes come from; or a local
/// archive that ADD unpacks under `dest`.
#[derive(Debug)]
struct Planned {
    dest: String,
    src: PathBuf,
    meta: Metadata,
    archive: bool,
    /// `dest` as bytes when a name in it is not UTF-8 (`dest` has U+FFFD there): what the
    /// layer holds, as Docker copies such names.
    raw: Option<PathBuf>,
    /// A context file BuildKit sends without its content: written empty.
    empty: bool,
}

impl Planned {
    /// The path the layer entry gets.
    fn name(&self) -> &Path {
        self.raw.as_deref().unwrap_or(Path::new(&self.dest))
    }
}

/// An entry below a directory source: its path below it (with U+FFFD for bytes that are not
/// UTF-8, and then `raw` with the bytes), where it is, and its lstat.
struct Below {
    sub: String,
    raw: Option<PathBuf>,
    path: PathBuf,
    meta: Metadata,
    /// Its content is withheld ([`BuildContext::withholds`]): written empty.
    withheld: bool,
}

impl Below {
    fn new(sub: &Path, path: PathBuf, meta: Metadata, withheld: bool) -> Below {
        let (sub, raw) = match sub.to_str() {
            Some(s) => (s.to_owned(), None),
            None => (sub.to_string_lossy().into_owned(), Some(sub.to_path_buf())),
        };
        Below {
            sub,
            raw,
            path,
            meta,
            withheld,
        }
    }
}

impl SourceRoot<'_> {
    fn root(&self) -> &Path {
        match self {
            SourceRoot::Context(c) => c.root(),
            SourceRoot::Dir(d) => d,
        }
    }

    fn ignored(&self, rel: &str) -> Result<bool> {
        match self {
            SourceRoot::Context(c) => Ok(!c.is_sent(rel)?),
            SourceRoot::Dir(_) => Ok(false),
        }
    }

    /// The context-relative paths matching a (possibly wildcard) source, in order.
    ///
    /// As BuildKit's ResolveWildcards: the directories before the first wildcard must exist
    /// (its walk of them fails otherwise); below them only what exists and is not ignored
    /// matches, so a plain file where a directory is wanted simply does not, and a wildcard
    /// may match nothing.
    fn expand(&self, src: &str) -> Result<Vec<String>> {
        let parts = clean(src);
        if !has_wildcard(src) {
            return Ok(vec![parts.join("/")]);
        }
        let literal = parts.iter().take_while(|p| !has_wildcard(p)).count();
        let prefix = parts[..literal].join("/");
        if !prefix.is_empty() && !self.exists(&prefix)? {
            return Err(self.not_found(&prefix));
        }
        let mut found = vec![prefix];
        for part in &parts[literal..] {
            let pat: Vec<char> = part.chars().collect();
            let mut next = Vec::new();
            for base in &found {
                if !has_wildcard(part) {
                    next.push(join(base, part));
                    continue;
                }
                let dir = resolve_in_root(self.root(), base, true)?;
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob_component(&pat, &n.chars().collect::<Vec<_>>()))
                    .collect();
                names.sort();
                for n in names {
                    let rel = join(base, &n);
                    if !self.ignored(&rel)? {
                        next.push(rel);
                    }
                }
            }
            found = next;
        }
        let mut out = Vec::with_capacity(found.len());
        for rel in found {
            if self.exists(&rel)? && !self.ignored(&rel)? {
                out.push(rel);
            }
        }
        Ok(out)
    }

    /// Whether `rel` names something (a dangling symlink too), its parents' symlinks followed.
    fn exists(&self, rel: &str) -> Result<bool> {
        let real = resolve_in_root(self.root(), rel, false)?;
        Ok(real.symlink_metadata().is_ok())
    }

    fn not_found(&self, rel: &str) -> Error {
        err(format!(
            "{}: not found{}",
            if rel.is_empty() { "." } else { rel },
            match self {
                SourceRoot::Context(_) => " in the build context",
                SourceRoot::Dir(_) => " in the stage",
            }
        ))
    }

    /// Everything below the directory `rel`, sorted, ignored entries left out.
    fn below(&self, rel: &str, real: &Path) -> Result<Vec<Below>> {
        match self {
            SourceRoot::Context(c) => {
                // Entries are named by the real path, which differs when `rel` is a symlink.
                let base = c.resolve(rel)?;
                Ok(c.walk(rel)?
                    .into_iter()
                    .filter_map(|e| {
                        let sub = e.path.strip_prefix(&base).ok()?.to_path_buf();
                        (!sub.as_os_str().is_empty())
                            .then(|| Below::new(&sub, e.path, e.metadata, e.withheld))
                    })
                    .collect())
            }
            SourceRoot::Dir(_) => {
                let mut out = Vec::new();
                for e in walkdir::WalkDir::new(real).min_depth(1).sort_by_file_name() {
                    let e =
                        e.map_err(|e| err(format!("failed to read {}: {e}", real.display())))?;
                    let meta = e
                        .path()
                        .symlink_metadata()
                        .map_err(io_err("stat", e.path()))?;
                    let sub = e.path().strip_prefix(real).unwrap_or(e.path());
                    out.push(Below::new(sub, e.path().to_path_buf(), meta, false));
                }
                Ok(out)
            }
        }
    }
}

/// Applies `--chmod` (octal, or symbolic as BuildKit reads it) to a mode.
pub fn apply_chmod(spec: &str, mode: u32, is_dir: bool) -> Result<u32> {
    let m = cairn_parser::chmod::Mode::parse(spec).map_err(|e| err(e.to_string()))?;
    Ok(m.apply(mode, is_dir))
}

/// The stage's filesystem as COPY's destination rules see it: its directories and symlinks.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub tree: &'a cairn_layers::listing::TreeView,
}

impl ImageView<'_> {
    /// Whether `rel` is a directory in the image (symlinks followed).
    pub fn is_dir(&self, rel: &str) -> bool {
        self.tree.resolve(rel).is_some_and(|r| self.tree.is_dir(&r))
    }

    /// Where a destination lands: its parent directories' symlinks followed, and its own
    /// when it names a directory through one (a link to a file, or a loop, stays as named).
    pub fn resolve_dest(&self, rel: &str) -> String {
        if let Some(r) = self.tree.resolve(rel).filter(|r| self.tree.is_dir(r)) {
            return r;
        }
        match rel.rsplit_once('/') {
            Some((parent, name)) => match self.tree.resolve(parent) {
                Some(p) if p.is_empty() => name.to_owned(),
                Some(p) => format!("{p}/{name}"),
                None => rel.to_owned(),
            },
            None => rel.to_owned(),
        }
    }

    /// The metadata of the directory `rel` (resolved, as [`ImageView::resolve_dest`] gives).
    pub fn dir(&self, rel: &str) -> Option<DirMeta> {
        self.tree.dir(rel).copied()
    }
}

/// Writes one COPY or ADD as a layer tar to `out`, and returns the directories it holds.
/// `image` is the stage's filesystem before the step, for deciding whether the destination is
/// an existing directory.
pub fn copy_to_tar(
    from: SourceRoot<'_>,
    req: &CopyRequest,
    image: &ImageView<'_>,
    out: &mut dyn Write,
) -> Result<BTreeMap<String, DirMeta>> {
    plan_copy(from, req, image)?.write(req, out)
}

/// What a COPY or ADD will write, worked out from the sources' metadata alone (nothing is
/// read): the cache key comes from it before any byte is copied.
#[derive(Debug)]
pub struct CopyPlan<'r> {
    /// The directories above the destination (and the destination itself when it is one),
    /// from the root down.
    parents: Vec<Parent>,
    contents: Vec<(String, &'r [u8])>,
    files: Vec<(String, &'r Path, i64)>,
    planned: Vec<Planned>,
    /// What the step writes besides the plan's own entries.
    extra: Extra,
}

/// What a plan carries for its archives and its stage sources.
#[derive(Debug, Default)]
struct Extra {
    /// ADD: where archives are extracted, as the image has it.
    archive_root: Option<crate::add_archive::ArchiveRoot>,
    /// COPY --from without --chown: the sources' owners and xattrs, kept as BuildKit's copy
    /// keeps them.
    kept: Option<crate::from_meta::SourceMeta>,
    /// COPY --from: the names of one source inode within the copied set stay hard links.
    link_inodes: bool,
}

/// A directory above what a COPY writes, which its layer holds as BuildKit's does: its
/// differ writes every parent of a changed path, so that whoever stacks the layers (the next
/// RUN's overlay, a runtime's) keeps their metadata instead of making them 0755 root.
#[derive(Debug)]
enum Parent {
    /// Missing: made 0755, owned by the --chown user, as BuildKit's `MkdirAll` makes it.
    /// `chmod` for a directory source's destination, which takes an octal --chmod's mode
    /// as BuildKit gives it (moby/buildkit#4945). BuildKit now gives that mode to every
    /// parent it makes, leaving `COPY --chmod=640 f /new/` a directory no one can enter
    /// (moby/buildkit#5943, open): the other parents stay 0755, as Docker gave them
    /// before.
    Made { path: String, chmod: bool },
    /// In the image: written with its mode and owner. `touched` for the deepest one, which the
    /// copy adds entries to and so dates now; the ones above keep their time.
    Kept {
        path: String,
        meta: DirMeta,
        touched: bool,
    },
}

impl Parent {
    fn path(&self) -> &str {
        match self {
            Parent::Made { path: p, .. } | Parent::Kept { path: p, .. } => p,
        }
    }
}

/// Plans a COPY or ADD: every source expanded and checked, every entry's place decided.
pub fn plan_copy<'r>(
    from: SourceRoot<'_>,
    req: &'r CopyRequest,
    image: &ImageView<'_>,
) -> Result<CopyPlan<'r>> {
    let dest_abs = if req.dest.starts_with('/') {
        req.dest.clone()
    } else {
        format!("{}/{}", req.workdir.trim_end_matches('/'), req.dest)
    };
    let trailing = req.dest.ends_with('/')
        || req.dest.ends_with("/.")
        || req.dest == "."
        || clean(&dest_abs).is_empty();
    // Symlinks in the image are followed to where the files land, as Docker copies through
    // them: a layer entry under a symlink's name would replace the link with a directory.
    let dest_rel = image.resolve_dest(&clean(&dest_abs).join("/"));
    let dest_parts: Vec<String> = dest_rel
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let dest_exists_dir = image.is_dir(&dest_rel);
    let dest_top = dest_rel.clone();
    let mut top_is_parent = false;

    // BuildKit copies each source on its own, in order (heredocs after the paths), to the
    // destination as written: where each lands depends on what the ones before it made.
    let mut dest = sources::Dest::new(
        dest_rel.clone(),
        format!("/{}", clean(&dest_abs).join("/")),
        trailing || dest_exists_dir || req.parents,
    );
    let mut planned: Vec<Planned> = Vec::new();
    let mut contents: Vec<(String, &[u8])> = Vec::new();
    let mut files: Vec<(String, &Path, i64)> = Vec::new();
    // Whether any source named something: with none (wildcards that matched nothing) the
    // step changes nothing, not even the destination's directories.
    let mut any = false;
    // The directories --parents has planned above its matches.
    let mut parent_dirs = std::collections::HashSet::new();
    let exclude =
        crate::ignore::Matcher::new(&req.excludes).map_err(|e| err(format!("--exclude: {e}")))?;
    let excluded = |path: &str| -> Result<bool> {
        if exclude.is_empty() || path.is_empty() {
            return Ok(false);
        }
        exclude
            .excluded(path)
            .map_err(|e| err(format!("--exclude: {e}")))
    };
    for src in &req.sources {
        let p = match src {
            CopySource::Content { .. } => continue,
            CopySource::File { name, path, mtime } => {
                any = true;
                let (target, replaces) = dest.file(name)?;
                if replaces {
                    drop_target(&target, &mut planned, &mut contents, &mut files);
                }
                files.push((target, path, *mtime));
                continue;
            }
            CopySource::Path(p) => p,
        };
        let matches = if req.parents {
            let (matches, pivot_found) = sources::expand_parents(&from, p)?;
            any |= pivot_found;
            matches
        } else {
            from.expand(p)?
                .into_iter()
                .map(|rel| sources::Kept {
                    rel,
                    pivot: String::new(),
                })
                .collect()
        };
        for m in &matches {
            any = true;
            let rel = m.rel.as_str();
            // Both the name given and the path it resolves to must be kept by .dockerignore.
            let resolved_ignored = match from {
                SourceRoot::Context(c) if !rel.is_empty() => !c.is_sent(&c.resolve_rel(rel)?)?,
                _ => false,
            };
            if !rel.is_empty() && (from.ignored(rel)? || resolved_ignored) {
                return Err(err(format!("{rel}: excluded by .dockerignore")));
            }
            let real = resolve_in_root(from.root(), rel, true)?;
            let meta = real.metadata().map_err(|_| from.not_found(rel))?;
            if excluded(rel)? {
                continue;
            }
            // With --parents a source keeps its directories below the pivot.
            let base = if req.parents {
                let kept = m.kept();
                let mut at = String::new();
                let dirs: Vec<&str> = kept.split('/').filter(|d| !d.is_empty()).collect();
                for d in &dirs[..dirs.len().saturating_sub(1)] {
                    at = join(&at, d);
                    let dest_at = join(&dest_rel, &at);
                    if !parent_dirs.insert(dest_at.clone()) {
                        continue;
                    }
                    let real_dir = resolve_in_root(from.root(), &join(&m.pivot, &at), true)?;
                    let md = real_dir.metadata().map_err(io_err("stat", &real_dir))?;
                    planned.push(Planned {
                        dest: dest_at,
                        src: real_dir,
                        meta: md,
                        archive: false,
                        raw: None,
                        empty: false,
                    });
                }
                if meta.is_dir() {
                    join(&dest_rel, kept)
                } else {
                    join(&dest_rel, &at)
                }
            } else {
                dest_rel.clone()
            };
            if meta.is_dir() {
                dest.dir()?;
                // A directory source copies its contents. BuildKit makes a missing
                // destination with the parents (MkdirAll) before copying, and copies the
                // source's metadata onto a directory only when the copy itself made it: so
                // the destination is made as a parent is, and one the image has keeps its
                // own. Both are written with the parents.
                let dest_rel = base;
                let is_top = dest_rel == dest_top;
                top_is_parent |= is_top;
                if req.parents && !dest_rel.is_empty() && !is_top {
                    planned.push(Planned {
                        dest: dest_rel.clone(),
                        src: real.clone(),
                        meta: meta.clone(),
                        archive: false,
                        raw: None,
                        empty: false,
                    });
                }
                let below = from.below(rel, &real)?;
                planned.reserve(below.len() + 1);
                for b in below {
                    if excluded(&b.sub)? {
                        continue;
                    }
                    planned.push(Planned {
                        dest: join(&dest_rel, &b.sub),
                        src: b.path,
                        meta: b.meta,
                        archive: false,
                        raw: b.raw.map(|r| Path::new(&dest_rel).join(r)),
                        empty: b.withheld,
                    });
                }
                if !dest_rel.is_empty() && !is_top {
                    planned.insert(
                        0,
                        Planned {
                            dest: dest_rel.clone(),
                            src: real.clone(),
                            meta,
                            archive: false,
                            raw: None,
                            empty: false,
                        },
                    );
                }
            } else {
                let empty = match from {
                    SourceRoot::Context(c) => meta.is_file() && c.withholds(&c.resolve_rel(rel)?),
                    SourceRoot::Dir(_) => false,
                };
                if req.unpack_archives && !empty && is_archive(&real)? {
                    dest.dir()?;
                    planned.push(Planned {
                        dest: dest_rel.clone(),
                        src: real,
                        meta,
                        archive: true,
                        raw: None,
                        empty: false,
                    });
                    continue;
                }
                let name = rel.rsplit('/').next().unwrap_or(rel);
                let target = if req.parents {
                    join(&base, name)
                } else {
                    let (target, replaces) = dest.file(name)?;
                    if replaces {
                        drop_target(&target, &mut planned, &mut contents, &mut files);
                    }
                    target
                };
                planned.push(Planned {
                    dest: target,
                    src: real,
                    meta,
                    archive: false,
                    raw: None,
                    empty,
                });
            }
        }
    }
    for src in &req.sources {
        if let CopySource::Content { name, data } = src {
            any = true;
            let (target, replaces) = dest.file(name)?;
            if replaces {
                drop_target(&target, &mut planned, &mut contents, &mut files);
            }
            contents.push((target, data));
        }
    }
    // Several --parents matches share directories: each is written once, first.
    let mut seen_dirs = std::collections::HashSet::new();
    planned.retain(|p| p.archive || !p.meta.is_dir() || seen_dirs.insert(p.dest.clone()));
    if !any {
        return Ok(CopyPlan {
            parents: Vec::new(),
            contents,
            files,
            planned,
            extra: Extra::default(),
        });
    }
    let into_dir = dest.is_dir();

    // The destination's parents: missing ones are made owned by the --chown user;
    // existing ones are written as they are (the root never: no layer names it).
    let mut parents = Vec::new();
    let mut parent = String::new();
    let dest_for_parents: Vec<String> = if into_dir || top_is_parent {
        dest_parts.clone()
    } else {
        dest_parts[..dest_parts.len().saturating_sub(1)].to_vec()
    };
    for part in &dest_for_parents {
        parent = join(&parent, part);
        // An archive's entry names where it is extracted, which it does not write itself.
        if planned.iter().any(|p| p.dest == parent && !p.archive) {
            continue;
        }
        match image.dir(&parent) {
            Some(meta) if image.is_dir(&parent) => parents.push(Parent::Kept {
                path: parent.clone(),
                meta,
                touched: false,
            }),
            _ => parents.push(Parent::Made {
                path: parent.clone(),
                chmod: top_is_parent && *parent == dest_top,
            }),
        }
    }
    // Below the deepest existing one everything is made; that one gets the new entries.
    if let Some(Parent::Kept { touched, .. }) = parents
        .iter_mut()
        .rev()
        .find(|p| matches!(p, Parent::Kept { .. }))
    {
        *touched = true;
    }
    let archive_root = planned
        .iter()
        .any(|p| p.archive)
        .then(|| crate::add_archive::ArchiveRoot {
            view: image.tree.below(&dest_rel),
            exists: image.is_dir(&dest_rel),
            dest: dest_rel.clone(),
        });
    Ok(CopyPlan {
        parents,
        contents,
        files,
        planned,
        extra: Extra {
            archive_root,
            ..Extra::default()
        },
    })
}

impl CopyPlan<'_> {
    /// Writes the planned entries as a layer tar; returns the directories it holds.
    pub fn write(
        self,
        req: &CopyRequest,
        out: &mut dyn Write,
    ) -> Result<BTreeMap<String, DirMeta>> {
        let CopyPlan {
            parents,
            contents,
            files,
            planned,
            extra,
        } = self;
        write_plan(req, parents, contents, files, planned, extra, out)
    }

    /// Gives the entries from a stage or image the owners and xattrs `meta` has for them
    /// (instead of --chown's default, root).
    pub fn keep_source_meta(&mut self, meta: crate::from_meta::SourceMeta) {
        self.extra.kept = Some(meta);
    }

    /// Writes the names of one source inode after the first as hard links to it, as
    /// BuildKit's copy from a stage or image does.
    pub fn keep_hard_links(&mut self) {
        self.extra.link_inodes = true;
    }

    /// The bytes of the regular files, archives and downloads it will read: what a progress
    /// bar counts towards (the layer adds tar headers and padding to it).
    pub fn source_bytes(&self) -> u64 {
        let planned: u64 = self
            .planned
            .iter()
            .filter(|p| p.archive || p.meta.file_type().is_file() && !p.empty)
            .map(|p| p.meta.len())
            .sum();
        let contents: u64 = self.contents.iter().map(|(_, d)| d.len() as u64).sum();
        let files: u64 = self
            .files
            .iter()
            .filter_map(|(_, p, _)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        planned + contents + files
    }

    /// The source files whose content the key takes (regular files and archives), for
    /// hashing them ahead of [`CopyPlan::describe`], in parallel.
    pub fn content_sources(&self) -> Vec<(&Path, &Metadata)> {
        self.planned
            .iter()
            .filter(|p| p.archive || p.meta.file_type().is_file() && !p.empty)
            .map(|p| (p.src.as_path(), &p.meta))
            .collect()
    }

    /// Feeds what the layer will hold to `key`, in order: each entry's place, type, mode
    /// (after --chmod), owner, link target and content digest, never a file time. `content`
    /// holds the digests of [`CopyPlan::content_sources`], in order, where the sources are
    /// known by their content (the context's files); None where they are known otherwise
    /// (a stage's or image's, by its key).
    pub fn describe(
        &self,
        req: &CopyRequest,
        key: &mut crate::cache::KeyHasher,
        content: Option<&[[u8; 32]]>,
    ) -> Result<()> {
        let mut content = content.map(|c| c.iter());
        let mut next_digest = || -> Result<&[u8]> {
            match &mut content {
                Some(c) => c
                    .next()
                    .map(|d| &d[..])
                    .ok_or_else(|| err("fewer content digests than sources")),
                None => Ok(&[]),
            }
        };
        for p in &self.parents {
            match p {
                Parent::Made { path, .. } => key.field("parent-dir", path),
                // Its time is not keyed: the base's is fixed by the chain, the new one is now.
                Parent::Kept { path, meta, .. } => key.field(
                    "kept-dir",
                    format!("{path}\0{:o} {}:{}", meta.mode, meta.uid, meta.gid),
                ),
            };
        }
        for (target, data) in &self.contents {
            key.field("content", target);
            key.field("data", data);
        }
        for (target, path, _) in &self.files {
            // A download lives in a temp file: nothing to remember it by.
            let d = crate::cache::memo::sha256_file(path).map_err(io_err("read", path))?;
            key.field("download", target);
            key.field("digest", crate::cache::memo::hex(&d));
        }
        for p in &self.planned {
            let ft = p.meta.file_type();
            let src_mode = p.meta.permissions().mode() & 0o7777;
            let mode = match &req.chmod {
                Some(spec) => apply_chmod(spec, src_mode, ft.is_dir())?,
                None => src_mode,
            };
            key.field("entry", p.name().as_os_str().as_encoded_bytes());
            // Without --chmod, group and other write bits are left out: they are what a
            // checkout's umask decides (022 or 002), and the same checkout should hit.
            let keyed_mode = if req.chmod.is_some() {
                mode
            } else {
                mode & !0o022
            };
            key.field("mode", keyed_mode.to_le_bytes());
            if p.archive {
                key.field("archive", next_digest()?);
            } else if ft.is_dir() {
                key.field("type", "dir");
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&p.src).map_err(io_err("read link", &p.src))?;
                key.field("symlink", target.as_os_str().as_encoded_bytes());
            } else if ft.is_file() && p.empty {
                key.field("type", "withheld");
            } else if ft.is_file() {
                key.field("file", next_digest()?);
            } else {
                key.field("type", "skipped");
            }
        }
        Ok(())
    }
}

/// Forgets what earlier sources planned at `target`, which a later one replaces.
fn drop_target(
    target: &str,
    planned: &mut Vec<Planned>,
    contents: &mut Vec<(String, &[u8])>,
    files: &mut Vec<(String, &Path, i64)>,
) {
    planned.retain(|p| p.dest != target);
    contents.retain(|(t, _)| t != target);
    files.retain(|(t, _, _)| t != target);
}

fn write_plan(
    req: &CopyRequest,
    parents: Vec<Parent>,
    contents: Vec<(String, &[u8])>,
    files: Vec<(String, &Path, i64)>,
    planned: Vec<Planned>,
    extra: Extra,
    out: &mut dyn Write,
) -> Result<BTreeMap<String, DirMeta>> {
    let Extra {
        mut archive_root,
        kept,
        link_inodes,
    } = extra;
    let mut tar = tar::Builder::new(out);
    // The first destination of each multiply linked source inode, for its other names.
    let mut links: std::collections::HashMap<(u64, u64), String> = Default::default();
    let mtime = |t: i64| req.clamp_mtime.map_or(t, |c| t.min(c)).max(0) as u64;
    let now = req
        .clamp_mtime
        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
    let mut written: BTreeMap<String, DirMeta> = BTreeMap::new();
    // BuildKit hands MkdirAll an octal --chmod (not a symbolic one) as the mode.
    let chmod_mode = match req.chmod.as_deref() {
        Some(spec) if !spec.is_empty() && spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
            apply_chmod(spec, 0o755, true)?
        }
        _ => 0o755,
    };
    for parent in &parents {
        let meta = match parent {
            Parent::Made { chmod, .. } => DirMeta {
                mode: if *chmod { chmod_mode } else { 0o755 },
                uid: req.owner.uid.into(),
                gid: req.owner.gid.into(),
                mtime: mtime(now),
            },
            Parent::Kept { meta, touched, .. } => DirMeta {
                mtime: if *touched {
                    mtime(now)
                } else {
                    mtime(meta.mtime.try_into().unwrap_or(i64::MAX))
                },
                ..*meta
            },
        };
        append_dir(&mut tar, &mut written, parent.path(), None, meta)?;
    }
    for (target, data) in contents {
        let mode = match &req.chmod {
            Some(spec) => apply_chmod(spec, 0o644, false)?,
            None => 0o644,
        };
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            req.owner,
            mtime(now),
            data.len() as u64,
        );
        append(&mut tar, &mut h, Path::new(&target), data)?;
    }
    for (target, path, t) in files {
        let mode = match &req.chmod {
            Some(spec) => apply_chmod(spec, 0o600, false)?,
            None => 0o600,
        };
        let f = std::fs::File::open(path).map_err(io_err("open", path))?;
        let size = f.metadata().map_err(io_err("stat", path))?.len();
        let mut h = header(tar::EntryType::Regular, mode, req.owner, mtime(t), size);
        append(&mut tar, &mut h, Path::new(&target), f.take(size))?;
    }
    for p in planned {
        if p.archive {
            let root = archive_root
                .as_mut()
                .ok_or_else(|| err("an archive planned without its destination"))?;
            let reader = open_archive(&p.src)?;
            crate::add_archive::append_archive(
                &mut tar,
                reader,
                &p.src,
                root,
                req.owner,
                req.clamp_mtime,
                mtime(now),
                &mut written,
            )?;
            continue;
        }
        let ft = p.meta.file_type();
        let src_mode = p.meta.permissions().mode() & 0o7777;
        let chmod = |is_dir| match &req.chmod {
            Some(spec) => apply_chmod(spec, src_mode, is_dir),
            None => Ok(src_mode),
        };
        let t = mtime(p.meta.mtime());
        // From a stage or image without --chown: the owner and xattrs its layers give.
        let source = kept.as_ref().and_then(|k| k.get(&p.src));
        let owner = match (&kept, source) {
            (Some(_), Some(e)) => Owner {
                uid: u32::try_from(e.uid)
                    .map_err(|_| err(format!("{}: uid out of range", p.dest)))?,
                gid: u32::try_from(e.gid)
                    .map_err(|_| err(format!("{}: gid out of range", p.dest)))?,
            },
            (Some(_), None) => Owner { uid: 0, gid: 0 },
            (None, _) => req.owner,
        };
        let xattrs = source.map_or(&[][..], |e| &e.xattrs[..]);
        let pax = |tar: &mut tar::Builder<&mut dyn Write>| -> Result<()> {
            if xattrs.is_empty() {
                return Ok(());
            }
            tar.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| err(format!("failed to write {} to the layer: {e}", p.dest)))
        };
        if ft.is_dir() {
            let meta = DirMeta {
                mode: chmod(true)?,
                uid: owner.uid.into(),
                gid: owner.gid.into(),
                mtime: t,
            };
            pax(&mut tar)?;
            append_dir(&mut tar, &mut written, &p.dest, p.raw.as_deref(), meta)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p.src).map_err(io_err("read link", &p.src))?;
            let mut h = header(tar::EntryType::Symlink, 0o777, owner, t, 0);
            pax(&mut tar)?;
            append_symlink(
                &mut tar,
                &mut h,
                p.name(),
                target.as_os_str().as_encoded_bytes(),
            )?;
        } else if ft.is_file() && p.empty {
            let mut h = header(tar::EntryType::Regular, chmod(false)?, owner, t, 0);
            pax(&mut tar)?;
            append(&mut tar, &mut h, p.name(), std::io::empty())?;
        } else if ft.is_file() {
            // Names of one inode within what a stage source copies stay one inode, as in
            // BuildKit's copy: the first name holds the data, the others link to it.
            if link_inodes && p.meta.nlink() > 1 {
                match links.entry((p.meta.dev(), p.meta.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let mut h = header(tar::EntryType::Link, chmod(false)?, owner, t, 0);
                        tar.append_link(&mut h, p.name(), first.get())
                            .map_err(|e| {
                                err(format!("failed to write {} to the layer: {e}", p.dest))
                            })?;
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(p.dest.clone());
                    }
                }
            }
            let f = std::fs::File::open(&p.src).map_err(io_err("open", &p.src))?;
            let size = p.meta.len();
            let mut h = header(tar::EntryType::Regular, chmod(false)?, owner, t, size);
            pax(&mut tar)?;
            append(&mut tar, &mut h, p.name(), f.take(size))?;
        }
        // Sockets, fifos and devices in a context are not copied, as in Docker.
    }
    tar.finish()
        .map_err(|e| err(format!("failed to finish the layer: {e}")))?;
    Ok(written)
}

/// A local file's bytes, decompressed when it is gzip, bzip2, xz or zstd (sniffed from its
/// first bytes, as Docker's ADD does).
fn open_archive(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).map_err(io_err("read", path))?;
    let f = std::fs::File::open(path).map_err(io_err("open", path))?;
    let head = &head[..n];
    Ok(if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(std::io::BufReader::new(f)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        ))
    } else {
        cairn_layers::compress::decompress_detected(f)?.1
    })
}

/// Whether a local file is a tar archive (plain or compressed), which ADD unpacks.
fn is_archive(path: &Path) -> Result<bool> {
    let mut plain = open_archive(path)?;
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match plain.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            // A corrupt compressed stream is not an archive; ADD copies the file as it is.
            Err(_) => return Ok(false),
        }
    }
    Ok(filled == block.len() && &block[257..262] == b"ustar")
}
