//! What a COPY or ADD will write, decided from the sources' metadata alone: every source
//! expanded and checked, every entry's place and the destination's parents; and the cache key
//! that describes it.

use std::fs::Metadata;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_layers::listing::DirMeta;

use super::archive::{ArchiveRoot, is_archive};
use super::dest::{Dest, ImageView, written_dest};
use super::error::{err, io_err, pattern_err};
use super::from_meta::SourceMeta;
use super::path::{join, resolve_in_root};
use super::request::{Chmod, CopyRequest, CopySource};
use super::root::SourceRoot;
use super::sources;
use crate::error::Result;

/// An entry to write: where it goes in the image and where its bytes come from; or a local
/// archive that ADD unpacks under `dest`.
#[derive(Debug)]
pub(super) struct Planned {
    pub(super) dest: String,
    pub(super) src: PathBuf,
    pub(super) meta: Metadata,
    pub(super) archive: bool,
    /// `dest` as bytes when a name in it is not UTF-8 (`dest` has U+FFFD there): what the
    /// layer holds, as Docker copies such names.
    pub(super) raw: Option<PathBuf>,
    /// A context file BuildKit sends without its content: written empty.
    pub(super) empty: bool,
}

impl Planned {
    /// The path the layer entry gets.
    pub(super) fn name(&self) -> &Path {
        self.raw.as_deref().unwrap_or(Path::new(&self.dest))
    }
}

/// What a COPY or ADD will write, worked out from the sources' metadata alone (nothing is
/// read): the cache key comes from it before any byte is copied.
#[derive(Debug)]
pub struct CopyPlan<'r> {
    /// The directories above the destination (and the destination itself when it is one),
    /// from the root down.
    pub(super) parents: Vec<Parent>,
    pub(super) contents: Vec<(String, &'r [u8])>,
    pub(super) files: Vec<(String, &'r Path, i64)>,
    pub(super) planned: Vec<Planned>,
    /// What the step writes besides the plan's own entries.
    pub(super) extra: Extra,
}

/// What a plan carries for its archives and its stage sources.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// ADD: where archives are extracted, as the image has it.
    pub(super) archive_root: Option<ArchiveRoot>,
    /// COPY --from without --chown: the sources' owners and xattrs, kept as BuildKit's copy
    /// keeps them.
    pub(super) kept: Option<SourceMeta>,
    /// COPY --from: the names of one source inode within the copied set stay hard links.
    pub(super) link_inodes: bool,
}

/// A directory above what a COPY writes, which its layer holds as BuildKit's does: its
/// differ writes every parent of a changed path, so that whoever stacks the layers (the next
/// RUN's overlay, a runtime's) keeps their metadata instead of making them 0755 root.
#[derive(Debug)]
pub(super) enum Parent {
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
    pub(super) fn path(&self) -> &str {
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
    let (written, trailing) = written_dest(&req.dest, &req.workdir);
    // Symlinks in the image are followed to where the files land, as Docker copies through
    // them: a layer entry under a symlink's name would replace the link with a directory.
    let dest_rel = image.resolve_dest(&written);
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
    let mut dest = Dest::new(
        dest_rel.clone(),
        format!("/{written}"),
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
    let exclude = crate::ignore::Matcher::new(&req.excludes).map_err(pattern_err("--exclude"))?;
    let excluded = |path: &str| -> Result<bool> {
        if exclude.is_empty() || path.is_empty() {
            return Ok(false);
        }
        exclude.excluded(path).map_err(pattern_err("--exclude"))
    };
    for src in &req.sources {
        let p = match src {
            CopySource::Content { .. } => continue,
            CopySource::File {
                name,
                path,
                mtime,
                unpack,
            } => {
                any = true;
                if *unpack && is_archive(path)? {
                    dest.dir()?;
                    planned.push(Planned {
                        dest: dest_rel.clone(),
                        src: path.clone(),
                        meta: path.metadata().map_err(io_err("stat", path))?,
                        archive: true,
                        raw: None,
                        empty: false,
                    });
                    continue;
                }
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
            // Where the source resolves: for the context also as a context path, which
            // .dockerignore is asked about.
            let (real, in_context) = match from {
                SourceRoot::Context(c) => {
                    let resolved = c.resolve_rel(rel)?;
                    let mut real = c.root().to_path_buf();
                    if !resolved.is_empty() {
                        real.push(&resolved);
                    }
                    (real, Some((c, resolved)))
                }
                SourceRoot::Dir(_) => (resolve_in_root(from.root(), rel, true)?, None),
            };
            // Both the name given and the path it resolves to must be kept by .dockerignore.
            let resolved_ignored = match &in_context {
                Some((c, resolved)) if !rel.is_empty() => !c.is_sent(resolved)?,
                _ => false,
            };
            if !rel.is_empty() && (from.ignored(rel)? || resolved_ignored) {
                return Err(err(format!("{rel}: excluded by .dockerignore")));
            }
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
                let empty = match &in_context {
                    Some((c, resolved)) => meta.is_file() && c.withholds(resolved),
                    None => false,
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
    let archive_root = planned.iter().any(|p| p.archive).then(|| ArchiveRoot {
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
    /// Gives the entries from a stage or image the owners and xattrs `meta` has for them
    /// (instead of --chown's default, root).
    pub fn keep_source_meta(&mut self, meta: SourceMeta) {
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

    /// Whether the layer may hold symlinks (an archive's, or a source's): a later step's paths
    /// must then be resolved through them, which the directories [`CopyPlan::write`] returns
    /// cannot tell; the stage reads the layer's own listing instead.
    pub fn may_write_symlinks(&self) -> bool {
        self.planned
            .iter()
            .any(|p| p.archive || p.meta.file_type().is_symlink())
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
        let chmod = Chmod::new(req.chmod.as_deref());
        for p in &self.planned {
            let ft = p.meta.file_type();
            let src_mode = p.meta.permissions().mode() & 0o7777;
            let mode = chmod.apply(src_mode, ft.is_dir())?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use cairn_layers::listing::{Kind, Listing, TreeView};

    use super::*;
    use crate::cache::{Key, KeyHasher};
    use crate::users::Owner;

    /// A source tree: files `f`, `a.txt`, `b.txt`, `c.md`; a directory `d` holding `x`,
    /// `notes.md`, `sub/y` and `link -> x`; and `p/q/r/f`. Files are 0644.
    fn sources(root: &Path) {
        for d in ["d/sub", "p/q/r"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "f",
            "a.txt",
            "b.txt",
            "c.md",
            "d/x",
            "d/notes.md",
            "d/sub/y",
            "p/q/r/f",
        ] {
            let path = root.join(f);
            std::fs::write(&path, f).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        symlink("x", root.join("d/link")).unwrap();
    }

    /// The image before the step: directories `app` and `existing`, and `to-app -> app`.
    fn image() -> TreeView {
        let meta = DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut tree = TreeView::default();
        tree.add_dir("app", meta);
        tree.add_dir("existing", meta);
        tree.apply(&Listing(vec![(
            "to-app".into(),
            Kind::Symlink("app".into()),
        )]));
        tree
    }

    fn request(sources: &[&str], dest: &str) -> CopyRequest {
        CopyRequest {
            sources: sources
                .iter()
                .map(|s| CopySource::Path(s.to_string()))
                .collect(),
            dest: dest.into(),
            workdir: "/".into(),
            owner: Owner { uid: 0, gid: 0 },
            chmod: None,
            clamp_mtime: None,
            unpack_archives: false,
            parents: false,
            excludes: Vec::new(),
        }
    }

    /// What a plan writes, in order: the destination's parents (`+` made, `=` the image's),
    /// then each entry: `path/` a directory, `path -> target` a symlink, `path` a file.
    fn entries(plan: &CopyPlan<'_>) -> Vec<String> {
        let parents = plan.parents.iter().map(|p| match p {
            Parent::Made { path, .. } => format!("+{path}/"),
            Parent::Kept { path, .. } => format!("={path}/"),
        });
        let planned = plan.planned.iter().map(|p| {
            let ft = p.meta.file_type();
            if ft.is_dir() {
                format!("{}/", p.dest)
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&p.src).unwrap();
                format!("{} -> {}", p.dest, target.display())
            } else {
                p.dest.clone()
            }
        });
        parents.chain(planned).collect()
    }

    /// Plans `req` from the source tree onto the image; the entries, or the error.
    fn plan(req: &CopyRequest) -> std::result::Result<Vec<String>, String> {
        let dir = tempfile::tempdir().unwrap();
        sources(dir.path());
        let tree = image();
        let image = ImageView { tree: &tree };
        plan_copy(SourceRoot::Dir(dir.path()), req, &image)
            .map(|p| entries(&p))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sources_land_by_docker_rules() {
        let with = |f: fn(&mut CopyRequest), mut req: CopyRequest| {
            f(&mut req);
            req
        };
        let cases: Vec<(&str, CopyRequest, &[&str])> = vec![
            (
                "a directory copies its contents, not itself",
                request(&["d"], "/out/"),
                &[
                    "+out/",
                    "out/link -> x",
                    "out/notes.md",
                    "out/sub/",
                    "out/sub/y",
                    "out/x",
                ],
            ),
            (
                "a trailing slash: into the directory",
                request(&["f"], "/out/"),
                &["+out/", "out/f"],
            ),
            (
                "no trailing slash: the file itself",
                request(&["f"], "/out/g"),
                &["+out/", "out/g"],
            ),
            (
                "a directory the image has: into it",
                request(&["f"], "/existing"),
                &["=existing/", "existing/f"],
            ),
            (
                "relative to WORKDIR",
                with(|r| r.workdir = "/app".into(), request(&["f"], "rel/")),
                &["=app/", "+app/rel/", "app/rel/f"],
            ),
            (
                "through a symlink in the image",
                request(&["f"], "/to-app/"),
                &["=app/", "app/f"],
            ),
            (
                "a wildcard",
                request(&["*.txt"], "/out/"),
                &["+out/", "out/a.txt", "out/b.txt"],
            ),
            (
                "a wildcard matching nothing changes nothing",
                request(&["*.none"], "/out/"),
                &[],
            ),
            (
                "a symlink named as the source is followed",
                request(&["d/link"], "/out/"),
                &["+out/", "out/link"],
            ),
            (
                "--parents keeps the source's directories",
                with(|r| r.parents = true, request(&["p/q/r/f"], "/out/")),
                &["+out/", "out/p/", "out/p/q/", "out/p/q/r/", "out/p/q/r/f"],
            ),
            (
                "--parents keeps those below the /./ pivot",
                with(|r| r.parents = true, request(&["p/./q/r/f"], "/out/")),
                &["+out/", "out/q/", "out/q/r/", "out/q/r/f"],
            ),
            (
                "--exclude leaves out what matches below a source",
                with(
                    |r| r.excludes = vec!["*.md".into()],
                    request(&["d"], "/out/"),
                ),
                &["+out/", "out/link -> x", "out/sub/", "out/sub/y", "out/x"],
            ),
            (
                "--exclude leaves out a directory and what is below it",
                with(
                    |r| r.excludes = vec!["sub".into()],
                    request(&["d"], "/out/"),
                ),
                &["+out/", "out/link -> x", "out/notes.md", "out/x"],
            ),
            (
                "--exclude leaves out a matching source",
                with(
                    |r| r.excludes = vec!["*.md".into()],
                    request(&["*.txt", "c.md"], "/out/"),
                ),
                &["+out/", "out/a.txt", "out/b.txt"],
            ),
        ];
        for (what, req, want) in cases {
            assert_eq!(plan(&req).unwrap(), want, "{what}");
        }
    }

    #[test]
    fn sources_that_cannot_land_fail() {
        let cases = [
            (request(&["nope"], "/out/"), "nope: not found in the stage"),
            (
                request(&["f", "d"], "/out"),
                "cannot copy to non-directory: /out",
            ),
        ];
        for (req, want) in cases {
            let e = plan(&req).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    /// The key of copying `d` from `root` to `/out/`, as a context COPY makes it.
    fn copy_key(root: &Path) -> Key {
        let req = request(&["d"], "/out/");
        let tree = TreeView::default();
        let image = ImageView { tree: &tree };
        let plan = plan_copy(SourceRoot::Dir(root), &req, &image).unwrap();
        let digests: Vec<[u8; 32]> = plan
            .content_sources()
            .iter()
            .map(|(p, _)| crate::cache::memo::sha256_file(p).unwrap())
            .collect();
        let mut key = KeyHasher::new("COPY", &Key::root());
        plan.describe(&req, &mut key, Some(&digests)).unwrap();
        key.finish()
    }

    #[test]
    fn the_copy_key_follows_what_the_layer_holds() {
        fn mode(p: &Path, m: u32) {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        }
        type Change = fn(&Path);
        let cases: &[(&str, Change, bool)] = &[
            ("nothing", |_| {}, false),
            (
                "content",
                |d| std::fs::write(d.join("d/x"), "other").unwrap(),
                true,
            ),
            (
                "same content rewritten",
                |d| std::fs::write(d.join("d/x"), "d/x").unwrap(),
                false,
            ),
            (
                "mtime",
                |d| {
                    let f = std::fs::File::options()
                        .write(true)
                        .open(d.join("d/x"))
                        .unwrap();
                    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
                },
                false,
            ),
            ("executable", |d| mode(&d.join("d/x"), 0o755), true),
            // Group and other write bits are the checkout's umask.
            ("group writable", |d| mode(&d.join("d/x"), 0o664), false),
            (
                "symlink target",
                |d| {
                    std::fs::remove_file(d.join("d/link")).unwrap();
                    symlink("sub/y", d.join("d/link")).unwrap();
                },
                true,
            ),
            (
                "a new file",
                |d| std::fs::write(d.join("d/new"), "").unwrap(),
                true,
            ),
            (
                "a new directory",
                |d| std::fs::create_dir(d.join("d/new")).unwrap(),
                true,
            ),
            (
                "a rename",
                |d| std::fs::rename(d.join("d/x"), d.join("d/x2")).unwrap(),
                true,
            ),
            (
                "a removal",
                |d| std::fs::remove_file(d.join("d/notes.md")).unwrap(),
                true,
            ),
        ];
        let base = {
            let dir = tempfile::tempdir().unwrap();
            sources(dir.path());
            copy_key(dir.path())
        };
        for (what, change, moves) in cases {
            let dir = tempfile::tempdir().unwrap();
            sources(dir.path());
            change(dir.path());
            assert_eq!(copy_key(dir.path()) != base, *moves, "{what}");
        }
    }
}
