//! ADD of a git repository: the ref resolved on the remote first and the commit keyed, so an
//! unchanged ref is a cache hit without a clone; on a miss the commit is checked out and its
//! tree copied as COPY copies a directory.

use cairn_parser::instruction::{Add, Instruction, Source};

use super::copy_layer::write_copy_layer;
use super::ctx::{Ctx, Outcome, at, at_with, file_owner, timed};
use crate::copy::{CopyRequest, CopySource, SourceRoot, plan_copy};
use crate::error::{Error, GitError, Result};
use crate::git::{self, redact};
use crate::meta;
use crate::progress::{Event, Phase};
use crate::stage::StageState;
use crate::users;

/// The ADD as a git ADD, when its source names a repository; None for any other ADD.
pub(crate) fn add_git(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    args: &Add,
    step_id: usize,
) -> Result<Option<Outcome>> {
    let (opts, kw) = (cx.opts, ins.keyword());
    let fail = |m: String| at(opts, ins.span, kw, m);
    let failed = |e: Error| at_with(opts, ins.span, kw, e);
    let env = meta::words_env(&st.config, &st.args, &st.meta);
    let word = |w: &str| cx.lexer.process_word(w, &env).map_err(|e| failed(e.into()));
    let mut found = None;
    for s in &args.sources {
        if let Source::Path(p) = s {
            let p = word(p)?;
            if let Some(parsed) = git::url::parse(&p) {
                found = Some((p, parsed));
            }
        }
    }
    let Some((src, parsed)) = found else {
        return Ok(None);
    };
    if args.sources.len() != 1 {
        return Err(fail(format!(
            "a git repository ({}) must be the only source of its ADD",
            redact(&src)
        )));
    }
    let url_err = |reason: String| {
        failed(Error::from(GitError::Url {
            url: redact(&src),
            reason,
        }))
    };
    let r = parsed.map_err(url_err)?;
    if args.keep_git_dir && r.keep_git_dir == Some(false) {
        return Err(url_err("inconsistent keep-git-dir configuration".into()));
    }
    let keep_git_dir = args.keep_git_dir || r.keep_git_dir == Some(true);
    let checksum = args.checksum.as_deref().map(word).transpose()?;
    if let (Some(flag), Some(query)) = (&checksum, &r.checksum)
        && flag != query
    {
        return Err(url_err(format!("checksum mismatch {flag:?} != {query:?}")));
    }
    let checksum = checksum.or_else(|| r.checksum.clone());
    let access = git::Access {
        ssh_agent: opts.ssh.get("default").cloned(),
    };
    let resolved = git::resolve(&r, &access, &opts.git).map_err(|e| failed(e.into()))?;
    if let Some(want) = &checksum {
        git::check_checksum(&r, &resolved, want).map_err(|e| failed(e.into()))?;
    }
    (cx.progress)(Event::Log {
        id: step_id,
        line: format!(
            "{} {} is commit {}",
            redact(&r.remote),
            if r.reference.is_empty() {
                "HEAD"
            } else {
                &r.reference
            },
            resolved.commit
        ),
    });

    cx.trail.git_source(
        format!(
            "{}#{}",
            redact(&r.remote),
            if r.reference.is_empty() {
                "HEAD"
            } else {
                &r.reference
            }
        ),
        resolved.commit.clone(),
    );

    let dest = word(&args.dest)?;
    let chown = args.chown.as_deref().map(word).transpose()?;
    let owner = match &chown {
        Some(spec) => timed(cx, step_id, Phase::Names, || {
            file_owner(cx, st, ins, spec, &format!("--chown={spec}"))
        })?,
        None => users::Owner { uid: 0, gid: 0 },
    };
    let chmod = args.chmod.as_deref().map(word).transpose()?;
    let excludes = args
        .excludes
        .iter()
        .map(|e| word(e))
        .collect::<Result<Vec<_>>>()?;
    let workdir = if st.config.config.working_dir.is_empty() {
        "/".to_owned()
    } else {
        st.config.config.working_dir.clone()
    };
    // The commit fixes the files: the key names it, never the ref, so a moved branch is a
    // miss and an unchanged one a hit with nothing fetched.
    let mut key = crate::cache::KeyHasher::new("ADD", st.key());
    key.field("git-remote", redact(&r.remote))
        .field("git-commit", &resolved.commit)
        .field("git-subdir", &r.subdir)
        .field("keep-git-dir", keep_git_dir.to_string())
        .field("dest", &dest)
        .field("workdir", &workdir)
        .field("owner", format!("{}:{}", owner.uid, owner.gid))
        .field("chmod", chmod.as_deref().unwrap_or(""));
    for e in &excludes {
        key.field("exclude", e);
    }
    let (key, summary) = key.finish_with_summary();
    if st.use_cached(cx.cache, cx.store, cx.progress, &key, summary, step_id)? {
        return Ok(Some(Outcome::Cached));
    }

    let checkout = git::checkout(
        &r,
        &resolved,
        keep_git_dir,
        cx.store.temp_path("git"),
        &access,
        &opts.git,
    )
    .map_err(|e| failed(e.into()))?;
    let req = CopyRequest {
        sources: vec![CopySource::Path("/".into())],
        dest,
        workdir,
        owner,
        chmod,
        clamp_mtime: cx.epoch,
        unpack_archives: false,
        parents: false,
        excludes,
    };
    let view = crate::copy::ImageView {
        tree: st.tree(cx.cache, cx.store)?,
    };
    let plan = plan_copy(SourceRoot::Dir(&checkout.tree), &req, &view).map_err(failed)?;
    let history_line = crate::history::copy_line(&crate::history::CopyLine {
        is_add: true,
        parents: false,
        chown: chown.as_deref(),
        chmod: req.chmod.as_deref(),
        // The image's history is public: a token in the URL stays out of it.
        paths: &[redact(&src)],
        docs: &[],
        dest: &req.dest,
    });
    let written = write_copy_layer(cx, st, ins, (plan, &req), step_id, (history_line, key));
    drop(checkout);
    written.map(Some)
}
