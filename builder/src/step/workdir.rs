//! WORKDIR's layer: the directories of the new working directory that the image lacks.

use cairn_layers::listing::DirMeta;

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
    let bad = |what: &str, e: std::io::Error| cairn_layers::Error::Invalid {
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let mut tar = tar::Builder::new(w);
    for (d, m) in dirs {
        let mut h = crate::copy::dir_header(m);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(|e| bad(d, e))?;
    }
    tar.finish().map_err(|e| bad("layer", e))
}
