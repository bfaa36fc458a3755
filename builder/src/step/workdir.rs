//! WORKDIR's layer: the directories of the new working directory that the image lacks.

use cairn_layers::image::timestamp;
use cairn_layers::layer::write_layer;
use cairn_layers::layer_tar;
use cairn_layers::listing::DirMeta;
use cairn_parser::instruction::Instruction;

use super::ctx::{Ctx, Outcome, add_layer, file_owner, layer_record};
use crate::error::Result;
use crate::history::MetaLine;
use crate::stage::StageState;
use crate::users;

/// WORKDIR's directories as a layer of their own (with `line` as its history), when it
/// needs one; `None` leaves the step a metadata step.
pub(crate) fn layer(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    line: &MetaLine,
    step_id: usize,
) -> Result<Option<Outcome>> {
    let Ctx {
        store, opts, epoch, ..
    } = *cx;
    let created = timestamp(epoch);
    // BuildKit's WORKDIR other than / is a mkdir -p as a layer of its own, empty
    // when the directory exists (its history test: `RUN ls` and such are layers).
    let working_dir = st.config.config.working_dir.clone();
    let view = crate::copy::ImageView {
        tree: st.tree(cx.cache, store)?,
    };
    let missing = missing_dirs(&view, &working_dir);
    if !missing.is_empty() || !working_dir.trim_matches('/').is_empty() {
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
        let mut key = crate::cache::KeyHasher::new("WORKDIR", st.key());
        key.field("instruction", &ins.original);
        for (d, m) in &dirs {
            // A kept parent's time is not keyed: the chain fixes it, or it is now.
            key.field("dir", format!("{d}\0{:o} {}:{}", m.mode, m.uid, m.gid));
        }
        let (key, summary) = key.finish_with_summary();
        if st.use_cached(cx.cache, cx.store, cx.progress, &key, summary, step_id)? {
            return Ok(Some(Outcome::Cached));
        }
        let layer = write_layer(store, opts.layer_compression(), |w| dirs_tar(w, &dirs))?;
        let rec = layer_record(&layer);

        let created_by = match line {
            MetaLine::Line(l) => l.clone(),
            _ => format!("{} # buildkit", ins.original),
        };
        // Root down, one path: already in the order a map would give.
        add_layer(
            cx,
            step_id,
            st,
            layer,
            Some(dirs.clone()),
            created,
            created_by,
        );
        st.record(cx.cache, key, Some(rec), Some(dirs))?;
        return Ok(Some(Outcome::Ran));
    }
    Ok(None)
}

/// The directories of `path` (from the root down) that the image does not have.
pub(crate) fn missing_dirs(view: &crate::copy::ImageView<'_>, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = String::new();
    // Made where symlinks lead, as `mkdir -p` would.
    let path = view.resolve_dest(path);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = if at.is_empty() {
            part.to_owned()
        } else {
            format!("{at}/{part}")
        };
        if !view.is_dir(&at) {
            out.push(at.clone());
        }
    }
    out
}

/// A layer tar of directories, in order.
pub(crate) fn dirs_tar(
    w: &mut dyn std::io::Write,
    dirs: &[(String, DirMeta)],
) -> cairn_layers::Result<()> {
    let mut tar = layer_tar::Writer::new(w);
    for (d, m) in dirs {
        tar.dir(d.as_bytes(), layer_tar::Meta::of_dir(d, m)?, &[])?;
    }
    tar.finish().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_tar_writes_each_directory_with_its_metadata() {
        let meta = |mode, uid, mtime| DirMeta {
            mode,
            uid,
            gid: uid + 1,
            mtime,
        };
        let dirs = vec![
            ("a".to_owned(), meta(0o755, 0, 5)),
            ("a/b".to_owned(), meta(0o2750, 1000, 1_700_000_000)),
        ];
        let mut out = Vec::new();
        dirs_tar(&mut out, &dirs).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let got: Vec<(Vec<u8>, u32, u64, u64, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!(h.entry_type(), tar::EntryType::Directory);
                let fields = (
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                );
                (
                    e.path_bytes().into_owned(),
                    fields.0,
                    fields.1,
                    fields.2,
                    fields.3,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (b"a/".to_vec(), 0o755, 0, 1, 5),
                (b"a/b/".to_vec(), 0o2750, 1000, 1001, 1_700_000_000),
            ]
        );
    }

    #[test]
    fn no_directories_is_the_bare_end_of_archive() {
        let mut out = Vec::new();
        dirs_tar(&mut out, &[]).unwrap();
        assert_eq!(out, vec![0; 1024]);
    }
}
