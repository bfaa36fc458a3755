//! COPY and ADD: sources expanded and resolved (context, named context, stage, image, URL,
//! heredoc), planned onto the stage's directories, keyed, and written as one layer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_layers::image::Descriptor;
use cairn_parser::expand::Lexer;
use cairn_parser::instruction::{Add, Copy, Instruction, Source};

use super::ctx::{Ctx, Outcome, at, at_with, at_with_context, file_owner, timed};
use super::source::{Named, image_root_for, stage_root};
use crate::context::BuildContext;
use crate::copy::{CopyRequest, CopySource, SourceRoot, plan_copy};
use crate::error::{Error, Result};
use crate::meta;
use crate::options::NamedContext;
use crate::plan::covered;
use crate::progress::Phase;
use crate::stage::StageState;
use crate::users;

/// COPY's and ADD's arguments, as one shape.
pub(crate) struct CopyArgs<'a> {
    pub(crate) parents: bool,
    pub(crate) excludes: &'a [String],
    pub(crate) sources: &'a [Source],
    pub(crate) dest: &'a str,
    pub(crate) from: Option<&'a str>,
    pub(crate) chown: Option<&'a str>,
    pub(crate) chmod: Option<&'a str>,
    /// ADD `--checksum=ALGO:HEX`, for URL sources.
    pub(crate) checksum: Option<&'a str>,
    pub(crate) is_add: bool,
    /// ADD `--unpack`: None extracts local archives and leaves downloads whole.
    pub(crate) unpack: Option<bool>,
}

impl<'a> CopyArgs<'a> {
    pub(crate) fn copy(c: &'a Copy) -> Self {
        CopyArgs {
            parents: c.parents,
            excludes: &c.excludes,
            sources: &c.sources,
            dest: &c.dest,
            from: c.from.as_deref(),
            chown: c.chown.as_deref(),
            chmod: c.chmod.as_deref(),
            checksum: None,
            is_add: false,
            unpack: None,
        }
    }

    pub(crate) fn add(a: &'a Add) -> Self {
        CopyArgs {
            parents: false,
            excludes: &a.excludes,
            sources: &a.sources,
            dest: &a.dest,
            from: None,
            chown: a.chown.as_deref(),
            chmod: a.chmod.as_deref(),
            checksum: a.checksum.as_deref(),
            is_add: true,
            unpack: a.unpack,
        }
    }
}

pub(crate) fn copy_step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    args: CopyArgs<'_>,
    step_id: usize,
) -> Result<Outcome> {
    let Ctx {
        store,
        opts,
        lexer,
        epoch,
        ..
    } = *cx;

    let kw = ins.keyword();
    let fail = |e: Error| at_with(opts, ins.span, kw, e);
    // Words expand with the stage's ARGs and ENV, as BuildKit's state holds them.
    let env = meta::words_env(&st.config, &st.args, &st.meta);
    let word = |w: &str| lexer.process_word(w, &env).map_err(|e| fail(e.into()));
    let CopyArgs {
        parents,
        excludes,
        sources,
        dest,
        from,
        chown,
        chmod,
        checksum,
        is_add,
        unpack,
    } = args;
    let checksum = checksum.map(word).transpose()?;
    let dest = word(dest)?;
    // Downloads live next to the stage's rootfs in the work directory; each guard removes its
    // file when this step ends, failed or not.
    let Expanded {
        sources: srcs,
        paths: line_paths,
        docs: line_docs,
        downloads,
    } = expand_sources(
        cx,
        st,
        ins,
        sources,
        AddFlags {
            is_add,
            unpack,
            checksum: checksum.as_deref(),
        },
        &env,
    )?;
    let chown_word = chown.map(word).transpose()?;
    let owner = match &chown_word {
        Some(spec) => timed(cx, step_id, Phase::Names, || {
            file_owner(cx, st, ins, spec, &format!("--chown={spec}"))
        })?,
        None => users::Owner { uid: 0, gid: 0 },
    };
    let chmod = chmod.map(word).transpose()?;
    let history_line = crate::history::copy_line(&crate::history::CopyLine {
        is_add,
        parents,
        chown: chown_word.as_deref(),
        chmod: chmod.as_deref(),
        paths: &line_paths,
        docs: &line_docs,
        dest: &dest,
    });
    let req = CopyRequest {
        sources: srcs,
        dest,
        workdir: if st.config.config.working_dir.is_empty() {
            "/".into()
        } else {
            st.config.config.working_dir.clone()
        },
        owner,
        chmod,
        clamp_mtime: epoch,
        unpack_archives: is_add && unpack != Some(false),
        parents,
        excludes: excludes
            .iter()
            .map(|e| word(e))
            .collect::<Result<Vec<_>>>()?,
    };
    // --from: a stage (by name or index), a named context, or an image.
    let from = match from {
        None => CopyFrom::Context,
        Some(f) => {
            let f = word(f)?;
            let sources: Vec<String> = req
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Path(p) => Some(p.clone()),
                    _ => None,
                })
                .collect();
            resolve_from(cx, st, ins, &f, &sources, step_id)?
        }
    };
    let (from_root, from_id, from_layers) = match &from {
        CopyFrom::Context => (SourceRoot::Context(cx.context), None, None),
        CopyFrom::Named(context) => (SourceRoot::Context(context), None, None),
        CopyFrom::Dir { dir, layers, id } => {
            (SourceRoot::Dir(dir), Some(id.as_str()), Some((layers, dir)))
        }
    };
    let view = crate::copy::ImageView {
        tree: st.tree(cx.cache, store)?,
    };
    let mut plan = plan_copy(from_root, &req, &view).map_err(fail)?;
    // A stage's or image's hard links stay hard links; without --chown, its files keep
    // their owners and xattrs too.
    let from_source = from_layers.is_some();
    if from_source {
        plan.keep_hard_links();
    }
    let keep = if chown.is_none() { from_layers } else { None };
    // The key: the options as expanded, and what the plan will write. Files of the context
    // are known by their content (remembered by metadata); a stage's or an image's files by
    // that stage's key or image, which fix their content.
    let mut key = crate::cache::KeyHasher::new(if is_add { "ADD" } else { "COPY" }, st.key());
    key.field("dest", &req.dest)
        .field("workdir", &req.workdir)
        .field("owner", format!("{}:{}", req.owner.uid, req.owner.gid))
        .field("chmod", req.chmod.as_deref().unwrap_or(""))
        .field("parents", req.parents.to_string())
        .field("from", from_id.unwrap_or("context"));
    // Layers written before owners, xattrs and hard links were kept must not be taken
    // for these.
    if keep.is_some() {
        key.field("source-meta", "owners xattrs hardlinks");
    } else if from_source {
        key.field("source-meta", "hardlinks");
    }
    for e in &req.excludes {
        key.field("exclude", e);
    }
    // Reading is most of a cold key's cost: the digests come from the memo, or are read on
    // every core.
    let content = match from_id {
        None => {
            let sources = plan.content_sources();
            let digests = crate::cache::file_digests(cx.cache, &sources).map_err(fail)?;
            // What the provenance's context digest covers: the files this step read.
            if let CopyFrom::Context = from {
                let root = cx.context.root();
                cx.trail.context_files(
                    sources
                        .iter()
                        .zip(&digests)
                        .filter_map(|((path, _), d)| Some((path.strip_prefix(root).ok()?, d))),
                );
            }
            Some(digests)
        }
        Some(_) => None,
    };
    plan.describe(&req, &mut key, content.as_deref())
        .map_err(fail)?;
    let (key, summary) = key.finish_with_summary();
    if st.use_cached(cx.cache, cx.store, cx.progress, &key, summary, step_id)? {
        return Ok(Outcome::Cached);
    }
    if let Some((layers, root)) = keep {
        let wanted = layers_under_sources(cx.cache, store, layers, &req.sources)?;
        let meta = crate::from_meta::SourceMeta::read(store, layers, root, wanted.as_deref())
            .map_err(fail)?;
        plan.keep_source_meta(meta);
    }
    let written = super::copy_layer::write_copy_layer(
        cx,
        st,
        ins,
        (plan, &req),
        step_id,
        (history_line, key),
    );
    // The layer holds the downloads now.
    drop(downloads);
    written
}

/// COPY's or ADD's sources expanded: what the plan copies, and the paths and heredoc names the
/// history line shows. A download stays on disk until its guard is dropped.
struct Expanded {
    sources: Vec<CopySource>,
    paths: Vec<String>,
    docs: Vec<String>,
    downloads: Vec<crate::remote::Download>,
}

/// Expands `sources` with the stage's words (`env`); ADD fetches its URLs (next to the
/// stage's rootfs) and checks them against `checksum`.
/// What ADD adds to COPY's handling of a source: URLs, `--unpack`, `--checksum`.
struct AddFlags<'a> {
    is_add: bool,
    unpack: Option<bool>,
    checksum: Option<&'a str>,
}

fn expand_sources(
    cx: &Ctx<'_>,
    st: &StageState,
    ins: &Instruction,
    sources: &[Source],
    add: AddFlags<'_>,
    env: &BTreeMap<String, String>,
) -> Result<Expanded> {
    let AddFlags {
        is_add,
        unpack,
        checksum,
    } = add;
    let epoch = cx.epoch;
    let fail = |m: String| at(cx.opts, ins.span, ins.keyword(), m);
    let word = |w: &str| {
        cx.lexer
            .process_word(w, env)
            .map_err(|e| at_with(cx.opts, ins.span, ins.keyword(), e))
    };
    let mut downloads: Vec<crate::remote::Download> = Vec::new();
    let mut srcs = Vec::new();
    // BuildKit's history line names the sources as expanded, heredocs after the paths.
    let mut line_paths = Vec::new();
    let mut line_docs = Vec::new();
    for s in sources {
        srcs.push(match s {
            Source::Path(p) => {
                let p = word(p)?;
                line_paths.push(p.clone());
                if is_add && crate::remote::is_url(&p) {
                    let to = st
                        .rootfs()
                        .with_extension(format!("download-{}", downloads.len()));
                    let dl = crate::remote::download(&p, &to, checksum)
                        .map_err(|e| at_with(cx.opts, ins.span, ins.keyword(), e))?;
                    // Docker dates the file by Last-Modified; without it, like new content.
                    let mtime = dl
                        .last_modified
                        .or(epoch)
                        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
                    let src = CopySource::File {
                        name: dl.name.clone(),
                        path: dl.path.clone(),
                        mtime,
                        unpack: unpack == Some(true),
                    };
                    downloads.push(dl);
                    src
                } else if checksum.is_some() {
                    // As in Docker: a local source has no download to verify.
                    return Err(fail(format!(
                        "--checksum can't be specified for non-HTTP(S) sources ({p})"
                    )));
                } else {
                    CopySource::Path(p)
                }
            }
            Source::Heredoc(h) => {
                line_docs.push(format!("<<{}", h.name));
                let data = if h.expand {
                    // As BuildKit: variables expand, quotes stay as written, and the escape
                    // is the backslash whatever the Dockerfile's escape directive says.
                    Lexer::new('\\')
                        .skip_process_quotes(true)
                        .process_word(&h.content, &env)
                        .map_err(|e| at_with(cx.opts, ins.span, ins.keyword(), e))?
                } else {
                    h.content.clone()
                };
                CopySource::Content {
                    name: h.name.clone(),
                    data: data.into_bytes(),
                }
            }
        });
    }
    Ok(Expanded {
        sources: srcs,
        paths: line_paths,
        docs: line_docs,
        downloads,
    })
}

/// What a COPY reads from.
enum CopyFrom {
    /// The build context.
    Context,
    /// A named context that is a directory, with its own .dockerignore.
    Named(BuildContext),
    /// A stage's or an image's files: where they are, its layers (for the owners and xattrs
    /// of what is copied) and what fixes their content, for the key.
    Dir {
        dir: PathBuf,
        layers: Vec<Descriptor>,
        id: String,
    },
}

/// The source `--from=f` names, for a COPY of `sources`.
fn resolve_from(
    cx: &Ctx<'_>,
    st: &StageState,
    ins: &Instruction,
    f: &str,
    sources: &[String],
    step_id: usize,
) -> Result<CopyFrom> {
    let store = cx.store;
    let fail = |m: String| at(cx.opts, ins.span, ins.keyword(), m);
    Ok(match cx.source(f) {
        Named::Stage(i, Some(r)) => {
            // A stage the graph did not see this step read (a --from that only expansion at
            // this point names): its files, complete, in a copy of its own.
            let complete =
                r.pending.is_empty() && r.partial.as_ref().is_none_or(|p| covered(p, sources));
            let copy = st.rootfs().with_extension(format!("from-stage-{i}"));
            CopyFrom::Dir {
                dir: timed(cx, step_id, Phase::Unpack, || {
                    stage_root(store, r, complete, copy)
                })?,
                layers: r.layers.clone(),
                id: format!("stage:{}", r.key.hex()),
            }
        }
        Named::Stage(_, None) => {
            return Err(fail(format!("stage {f} was not built before this step")));
        }
        Named::Context(NamedContext::Dir(dir)) => {
            let context = BuildContext::open(&dir, None)?;
            cx.cache.watch(context.root());
            CopyFrom::Named(context)
        }
        named => {
            // An image: from an OCI layout, or from the store.
            let manifest = match named {
                Named::Context(NamedContext::OciLayout { dir, tag }) => {
                    cairn_layers::archive::layout_image_for(
                        store,
                        &dir,
                        tag.as_deref(),
                        &st.platform,
                    )
                    .map_err(|e| {
                        at_with_context(cx.opts, ins.span, ins.keyword(), format!("--from={f}"), e)
                    })?
                }
                _ => cx
                    .image(f, step_id, &st.platform, || {
                        format!("--from={f}: no such stage, build context or image in the store")
                    })
                    .map_err(|e| at_with(cx.opts, ins.span, ins.keyword(), e))?,
            };
            let (img, dir) = timed(cx, step_id, Phase::Unpack, || {
                image_root_for(cx.cache, store, &manifest, sources, |id| {
                    st.rootfs().with_extension(format!("from-{id}"))
                })
            })?;
            CopyFrom::Dir {
                dir,
                layers: img.manifest.layers,
                id: format!("image:{}", manifest.digest),
            }
        }
    })
}

/// Which of a source's `layers` hold anything where `sources` lead (resolved through the
/// layers' symlinks), for reading owners from those only; None when every layer is wanted (a
/// source naming the root, or one a listing cannot resolve).
fn layers_under_sources(
    cache: &crate::cache::Cache,
    store: &cairn_layers::Store,
    layers: &[Descriptor],
    sources: &[CopySource],
) -> Result<Option<Vec<bool>>> {
    let (tree, listings) = cache.layers_links(store, layers)?;
    let mut paths = Vec::new();
    for s in sources {
        // A wildcard may match through a link anywhere below its prefix: every layer, then.
        let CopySource::Path(p) = s else {
            return Ok(None);
        };
        if p.contains(['*', '?', '[', '\\']) {
            return Ok(None);
        }
        let Some(prefix) = crate::plan::source_prefix(p) else {
            return Ok(None);
        };
        match tree.resolve(&prefix) {
            Some(path) if !path.is_empty() => paths.push(path),
            _ => return Ok(None),
        }
    }
    Ok(Some(listings.iter().map(|l| l.touches(&paths)).collect()))
}
