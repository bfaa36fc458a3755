//! One instruction applied to its stage: [`step`] hands each kind to the module that owns it.

pub(crate) mod args;
pub(crate) mod copy;
pub(crate) mod ctx;
pub(crate) mod from;
pub(crate) mod mount;
pub(crate) mod run;
pub(crate) mod source;
pub(crate) mod workdir;

use std::collections::BTreeMap;

use cairn_layers::image::{History, timestamp};
use cairn_layers::layer::write_layer;
use cairn_layers::listing::DirMeta;
use cairn_parser::instruction::{Instruction, InstructionKind};

use self::args::arg_value;
use self::copy::{CopyArgs, copy_step};
use self::ctx::{
    Ctx, Outcome, add_layer, at, file_owner, inner, layer_record, push_empty, record, use_cached,
};
use self::workdir::{dirs_tar, missing_dirs};
use crate::error::Result;
use crate::history::MetaLine;
use crate::stage::StageState;
use crate::users;

pub(crate) fn step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    step_id: usize,
) -> Result<Outcome> {
    let Ctx {
        store,
        opts,
        globals,
        lexer,
        epoch,
        ..
    } = *cx;
    let kw = ins.keyword();
    let fail = |m: String| at(opts, ins.span, kw, m);
    let created = timestamp(epoch);
    match &ins.kind {
        InstructionKind::Arg { args } => {
            // One at a time: a default expands with the ENV and the ARGs before it, and an
            // ARG with a value then wins over an inherited ENV of its name (BuildKit's
            // dispatchArg adds it to the state's environment).
            let mut decls = Vec::new();
            for def in args {
                st.meta.env_index.sync(&st.config.config.env);
                let words = crate::envindex::Words {
                    env: &st.config.config.env,
                    index: &st.meta.env_index,
                    args: &st.args,
                    over: &st.meta.args_over_env,
                };
                let value =
                    arg_value(def, globals, &opts.build_args, lexer, &words).map_err(fail)?;
                if let Some(v) = &value {
                    st.args.insert(def.name.clone(), v.clone());
                    st.meta.args_over_env.insert(def.name.clone());
                    st.meta.env_seq.push(def.name.clone());
                }
                decls.push((def.name.clone(), value));
            }
            // BuildKit's dispatchArg commits "ARG k=v ..." as an empty layer, without the
            // "# buildkit" of steps with a state.
            st.config.history.push(History {
                created: Some(created),
                created_by: Some(crate::history::arg_line(&decls)),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
                ..History::default()
            });
            st.meta.arg_decls.extend(decls);
        }
        InstructionKind::Run(run) => return run::run_step(cx, st, ins, run, step_id),
        InstructionKind::Copy(c) => {
            return copy_step(
                cx,
                st,
                ins,
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
                },
                step_id,
            );
        }
        InstructionKind::Add(a) => {
            return copy_step(
                cx,
                st,
                ins,
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
                },
                step_id,
            );
        }
        InstructionKind::From(_) => return Err(fail("FROM inside a stage".into())),
        _ => {
            let line = crate::meta::apply(
                &mut st.config,
                &ins.kind,
                &ins.original,
                &st.args,
                lexer,
                &mut st.meta,
            )
            .map_err(|e| fail(inner(e)))?;
            if matches!(ins.kind, InstructionKind::Cmd { .. }) {
                // BuildKit's dispatchCmd marks the config ArgsEscaped for either form and on
                // every platform (docker's import --change, meta::apply_all's user, does not).
                st.config.config.args_escaped = Some(true);
            }
            if matches!(ins.kind, InstructionKind::Workdir { .. }) {
                // BuildKit's WORKDIR other than / is a mkdir -p as a layer of its own, empty
                // when the directory exists (its history test: `RUN ls` and such are layers).
                let view = crate::copy::ImageView {
                    tree: st.view.tree(cx.cache, store)?,
                };
                let missing = missing_dirs(&view, &st.config.config.working_dir);
                if !missing.is_empty() || !st.config.config.working_dir.trim_matches('/').is_empty()
                {
                    let mtime = epoch.unwrap_or_else(|| jiff::Timestamp::now().as_second());
                    let mtime = mtime.max(0) as u64;
                    // The existing parents go in the layer as the image has them, as a COPY's
                    // do (see copy.rs): the one the first made directory is added to is
                    // dated now.
                    let mut dirs: Vec<(String, DirMeta)> = Vec::new();
                    let first = missing.first().map_or("", String::as_str);
                    let mut at = String::new();
                    for part in first.split('/').take(first.split('/').count() - 1) {
                        at = if at.is_empty() {
                            part.to_owned()
                        } else {
                            format!("{at}/{part}")
                        };
                        if let Some(meta) = view.dir(&at) {
                            dirs.push((at.clone(), meta));
                        }
                    }
                    if let Some((_, last)) = dirs.last_mut() {
                        last.mtime = mtime;
                    }
                    for (_, m) in &mut dirs {
                        m.mtime = m.mtime.min(epoch.map_or(u64::MAX, |e| e.max(0) as u64));
                    }
                    // (The view is not used past here: the owner may need the stage's files.)
                    // BuildKit makes them as the USER (its mkdir's `WithUser`), names looked
                    // up in the image's own files.
                    let user = st.config.config.user.clone();
                    let owner = if user.is_empty() || missing.is_empty() {
                        users::Owner { uid: 0, gid: 0 }
                    } else {
                        let what = format!("WORKDIR made as USER {user}");
                        file_owner(cx, st, ins, &user, &what)?
                    };
                    let made = DirMeta {
                        mode: 0o755,
                        uid: u64::from(owner.uid),
                        gid: u64::from(owner.gid),
                        mtime,
                    };
                    dirs.extend(missing.iter().map(|d| (d.clone(), made)));
                    let mut key = crate::cache::KeyHasher::new("WORKDIR", &st.key);
                    key.field("instruction", &ins.original);
                    for (d, m) in &dirs {
                        // A kept parent's time is not keyed: the chain fixes it, or it is now.
                        key.field("dir", format!("{d}\0{:o} {}:{}", m.mode, m.uid, m.gid));
                    }
                    let (key, summary) = key.finish_with_summary();
                    if use_cached(cx, st, &key, summary, step_id)? {
                        return Ok(Outcome::Cached);
                    }
                    let layer = write_layer(store, opts.compression, |w| dirs_tar(w, &dirs))?;
                    let rec = layer_record(&layer);
                    let dirs: BTreeMap<String, DirMeta> = dirs.into_iter().collect();
                    let dir_list = dirs.clone().into_iter().collect();
                    add_layer(st, layer, Some(dirs), ins, created)?;
                    if let (MetaLine::Line(l), Some(h)) = (&line, st.config.history.last_mut()) {
                        h.created_by = Some(l.clone());
                    }
                    record(cx, st, key, Some(rec), Some(dir_list))?;
                    return Ok(Outcome::Ran);
                }
            }
            match line {
                MetaLine::AsWritten => push_empty(&mut st.config, ins, created),
                MetaLine::Line(l) => st.config.history.push(History {
                    created: Some(created),
                    created_by: Some(l),
                    comment: Some("buildkit.dockerfile.v0".into()),
                    empty_layer: true,
                    ..History::default()
                }),
                // BuildKit's dispatchOnbuild commits no history.
                MetaLine::Nothing => {}
            }
        }
    }
    // A metadata step leaves the chain as it is, as BuildKit does: the steps after it key
    // what they use of the config themselves (RUN its environment, user, working directory
    // and shell; COPY its expanded paths and owner), so a new LABEL or CMD reruns nothing. The
    // image's own key covers the config it ends with.
    Ok(Outcome::Meta)
}
