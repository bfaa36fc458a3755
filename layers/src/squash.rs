//! Layers squashed into one (buildah's `--squash`, podman's `--squash-all`): what a stack of
//! layer tars leaves, written as a single layer tar, read from the tars alone (no unpacking,
//! so owners survive a rootless build).
//!
//! Two passes over the layers: the first finds which entry of which layer wins each path
//! (OCI image-spec, layer.md: a whiteout and an opaque marker hide only what lower layers
//! hold, a non-directory replaces a directory and all below it); the second writes the
//! winners. The output holds the kept whiteouts first, then every directory in tree order
//! (each followed by its opaque marker), then the other entries in layer order: a parent
//! always comes before its children, and a deletion before what replaces it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

use tar::EntryType;

use crate::apply::meta::Meta as EntryMeta;
use crate::error::{Error, Result};
use crate::layer_tar::{Header, Meta, Writer};
use crate::whiteout;

/// Which of the deletions the squashed layers make still matter: those of paths the layers
/// below the squashed one hold (none when the whole image is squashed).
pub trait Lower {
    /// Whether the layers below hold `path` (relative, no trailing `/`) or anything under it.
    fn holds(&self, path: &[u8]) -> bool;
}

/// No layers below: every deletion is dropped.
#[derive(Debug)]
pub struct Nothing;

impl Lower for Nothing {
    fn holds(&self, _: &[u8]) -> bool {
        false
    }
}

/// The paths of the layers below (from their listings), each with its parents.
#[derive(Debug, Default)]
pub struct LowerPaths {
    paths: BTreeSet<Vec<u8>>,
    /// A name no listing could hold: every deletion is kept, to be safe.
    all: bool,
}

impl LowerPaths {
    /// The paths of `listings`, base first.
    pub fn new<'a>(listings: impl IntoIterator<Item = &'a crate::listing::Listing>) -> LowerPaths {
        let mut out = LowerPaths::default();
        for l in listings {
            for (path, kind) in &l.0 {
                if matches!(kind, crate::listing::Kind::Unlisted) {
                    out.all = true;
                }
                let mut p = path.as_bytes();
                loop {
                    out.paths.insert(p.to_vec());
                    match p.iter().rposition(|&b| b == b'/') {
                        Some(i) => p = &p[..i],
                        None => break,
                    }
                }
            }
        }
        out
    }
}

impl Lower for LowerPaths {
    fn holds(&self, path: &[u8]) -> bool {
        self.all || self.paths.contains(path)
    }
}

/// An entry's extended attributes, names without `SCHILY.xattr.`.
type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

/// The entry that wins a path.
#[derive(Debug, Clone)]
struct Win {
    layer: usize,
    index: usize,
    /// A directory's metadata: directories are written from the first pass.
    dir: Option<(Meta, XattrList)>,
    /// A hard link's target.
    link: Option<Vec<u8>>,
}

/// What the second pass does with an entry of a layer.
#[derive(Debug, Clone)]
enum Action {
    /// Written at its own path, a hard link's target possibly replaced.
    Write { link: Option<Vec<u8>> },
    /// Written at another path: a file whose name a later layer replaced, kept under the
    /// name of a hard link to it that survives.
    WriteAs(Vec<u8>),
}

/// A layer's entry name: relative, without `.`, empty components or a trailing `/`. A name
/// that climbs is refused, as applying it would be.
fn clean(raw: &[u8], layer: usize) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::invalid(
                    format!(
                        "layer {} entry {:?}",
                        layer + 1,
                        String::from_utf8_lossy(raw)
                    ),
                    "the name climbs with `..`",
                ));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join(&b'/'))
}

fn under(path: &[u8]) -> Vec<u8> {
    [path, b"/"].concat()
}

/// Removes the keys at and below `path` (or only below, with `self_too` false) for which
/// `lower` holds.
fn remove_below<V>(
    map: &mut BTreeMap<Vec<u8>, V>,
    path: &[u8],
    self_too: bool,
    lower: impl Fn(&V) -> bool,
) {
    let prefix = under(path);
    let mut gone: Vec<Vec<u8>> = map
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, v)| lower(v))
        .map(|(k, _)| k.clone())
        .collect();
    if self_too && map.get(path).is_some_and(&lower) {
        gone.push(path.to_vec());
    }
    for k in gone {
        map.remove(&k);
    }
}

/// The first pass's result.
#[derive(Default)]
struct Plan {
    wins: BTreeMap<Vec<u8>, Win>,
    /// Deleted paths, with the deleting entry's time.
    whiteouts: BTreeMap<Vec<u8>, i64>,
    opaques: BTreeMap<Vec<u8>, i64>,
    /// Each layer's regular files by path: a hard link's target.
    files: Vec<HashMap<Vec<u8>, usize>>,
}

fn bad(layer: usize, what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::stream(format!("read layer {} to squash: {what}", layer + 1), e)
}

impl Plan {
    fn layer<R: Read>(&mut self, layer: usize, tar: R) -> Result<()> {
        let mut archive = tar::Archive::new(tar);
        let mut files = HashMap::new();
        for (index, entry) in archive
            .entries()
            .map_err(bad(layer, "entries"))?
            .enumerate()
        {
            let mut entry = entry.map_err(bad(layer, "entry"))?;
            let path = clean(&entry.path_bytes(), layer)?;
            if path.is_empty() {
                continue;
            }
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            let shown = String::from_utf8_lossy(&path).into_owned();
            let meta = EntryMeta::read(&mut entry, &shown)?;
            let mtime = meta.mtime.map_or(0, |t| t.tv_sec);
            if name == whiteout::OPAQUE.as_bytes() {
                // What lower layers had below the directory is gone; this layer's own stays.
                remove_below(&mut self.wins, parent, false, |w| w.layer < layer);
                remove_below(&mut self.whiteouts, parent, false, |_| true);
                remove_below(&mut self.opaques, parent, false, |_| true);
                self.opaques.insert(parent.to_vec(), mtime);
                continue;
            }
            if let Some(gone) = name.strip_prefix(whiteout::PREFIX.as_bytes()) {
                let target = if parent.is_empty() {
                    gone.to_vec()
                } else {
                    [parent, b"/", gone].concat()
                };
                remove_below(&mut self.wins, &target, true, |w| w.layer < layer);
                remove_below(&mut self.whiteouts, &target, false, |_| true);
                remove_below(&mut self.opaques, &target, true, |_| true);
                self.whiteouts.insert(target, mtime);
                continue;
            }
            let kind = entry.header().entry_type();
            let dir = kind == EntryType::Directory;
            if !dir {
                // A non-directory replaces a directory and everything lower layers had in it.
                remove_below(&mut self.wins, &path, false, |w| w.layer < layer);
            }
            let link = match kind {
                EntryType::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default();
                    Some(clean(&target, layer)?)
                }
                EntryType::Regular | EntryType::Continuous => {
                    files.insert(path.clone(), index);
                    None
                }
                _ => None,
            };
            let dir = dir.then(|| {
                let m = Meta {
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    mtime,
                };
                (m, meta.xattrs)
            });
            self.wins.insert(
                path,
                Win {
                    layer,
                    index,
                    dir,
                    link,
                },
            );
        }
        self.files.push(files);
        Ok(())
    }

    /// Each layer's actions, by entry index, for the entries that are not directories.
    fn actions(&self, layers: usize) -> Vec<HashMap<usize, Action>> {
        let mut out: Vec<HashMap<usize, Action>> = vec![HashMap::new(); layers];
        // A hard link whose target a later layer replaced or deleted keeps the target's old
        // content: the first such link takes the target's entry, the others link to it.
        let mut moved: HashMap<(usize, Vec<u8>), Vec<u8>> = HashMap::new();
        for (path, w) in &self.wins {
            if w.dir.is_some() {
                continue;
            }
            let Some(target) = &w.link else {
                out[w.layer].insert(w.index, Action::Write { link: None });
                continue;
            };
            let own = self.files[w.layer].get(target);
            let intact = self
                .wins
                .get(target)
                .is_some_and(|t| t.layer == w.layer && Some(&t.index) == own);
            match own {
                Some(&at) if !intact => match moved.get(&(w.layer, target.clone())) {
                    Some(first) => {
                        let link = Some(first.clone());
                        out[w.layer].insert(w.index, Action::Write { link });
                    }
                    None => {
                        moved.insert((w.layer, target.clone()), path.clone());
                        out[w.layer].insert(at, Action::WriteAs(path.clone()));
                    }
                },
                _ => {
                    out[w.layer].insert(w.index, Action::Write { link: None });
                }
            }
        }
        out
    }
}

/// Squashes the `count` layers `open` gives (plain tars, base first) into one layer tar on
/// `out`, keeping the deletions of what `lower` holds. With `clamp`, no time is later than it.
pub fn squash<R: Read, W: Write>(
    count: usize,
    mut open: impl FnMut(usize) -> Result<R>,
    lower: &dyn Lower,
    clamp: Option<i64>,
    out: W,
) -> Result<W> {
    let mut plan = Plan::default();
    for i in 0..count {
        plan.layer(i, open(i)?)?;
    }
    let time = |t: i64| clamp.map_or(t, |c| t.min(c));
    let mut w = Writer::new(out);
    // A deleted path that a directory takes again hides the lower directory's contents: an
    // opaque directory, not a deletion followed by the same name.
    let mut opaques: BTreeMap<Vec<u8>, i64> = plan
        .opaques
        .iter()
        .filter(|(p, _)| lower.holds(p))
        .map(|(p, t)| (p.clone(), *t))
        .collect();
    for (path, &t) in &plan.whiteouts {
        if !lower.holds(path) {
            continue;
        }
        match plan.wins.get(path) {
            Some(win) if win.dir.is_some() => {
                opaques.insert(path.clone(), t);
            }
            // A non-directory replaces whatever was there.
            Some(_) => {}
            None => {
                let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                    Some(i) => (&path[..=i], &path[i + 1..]),
                    None => (&b""[..], &path[..]),
                };
                let marker = [parent, whiteout::PREFIX.as_bytes(), name].concat();
                w.whiteout(&marker, time(t))?;
            }
        }
    }
    let opaque_marker = |dir: &[u8]| [dir, b"/", whiteout::OPAQUE.as_bytes()].concat();
    for (dir, &t) in &opaques {
        if plan.wins.get(dir).is_none_or(|w| w.dir.is_none()) {
            w.whiteout(&opaque_marker(dir), time(t))?;
        }
    }
    let mut dirs: Vec<(&Vec<u8>, &Win)> =
        plan.wins.iter().filter(|(_, w)| w.dir.is_some()).collect();
    // Tree order: a directory, then what is below it.
    dirs.sort_by(|a, b| a.0.split(|&c| c == b'/').cmp(b.0.split(|&c| c == b'/')));
    for (path, win) in dirs {
        let Some((meta, xattrs)) = &win.dir else {
            continue;
        };
        let meta = Meta {
            mtime: time(meta.mtime),
            ..*meta
        };
        w.dir(path, meta, xattrs)?;
        if let Some(&t) = opaques.get(path) {
            w.whiteout(&opaque_marker(path), time(t))?;
        }
    }
    let actions = plan.actions(count);
    for (i, actions) in actions.iter().enumerate() {
        if actions.is_empty() {
            continue;
        }
        let mut archive = tar::Archive::new(open(i)?);
        for (index, entry) in archive.entries().map_err(bad(i, "entries"))?.enumerate() {
            let mut entry = entry.map_err(bad(i, "entry"))?;
            let Some(action) = actions.get(&index) else {
                continue;
            };
            let own = clean(&entry.path_bytes(), i)?;
            let (path, link) = match action {
                Action::Write { link } => (own, link.clone()),
                Action::WriteAs(p) => (p.clone(), None),
            };
            write_entry(&mut w, &mut entry, &path, link, &time)?;
        }
    }
    w.finish()
}

/// One entry that is not a directory, as its layer has it (at `path`, linking to `link`).
fn write_entry<R: Read, W: Write>(
    w: &mut Writer<W>,
    entry: &mut tar::Entry<'_, R>,
    path: &[u8],
    link: Option<Vec<u8>>,
    time: &dyn Fn(i64) -> i64,
) -> Result<()> {
    let shown = String::from_utf8_lossy(path).into_owned();
    let m = EntryMeta::read(entry, &shown)?;
    let meta = Meta {
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        mtime: time(m.mtime.map_or(0, |t| t.tv_sec)),
    };
    let kind = entry.header().entry_type();
    let unsupported = || {
        Error::invalid(
            format!("layer entry {shown:?}"),
            format!("entry type {kind:?} cannot be squashed"),
        )
    };
    match kind {
        EntryType::Regular | EntryType::Continuous => {
            let size = entry.size();
            w.file(path, meta, &m.xattrs, size, entry)
        }
        EntryType::Symlink => {
            let target = entry.link_name_bytes().ok_or_else(unsupported)?;
            w.symlink(path, meta, &m.xattrs, &target)
        }
        EntryType::Link => {
            let target = match link {
                Some(t) => t,
                None => clean(&entry.link_name_bytes().ok_or_else(unsupported)?, 0)?,
            };
            w.hardlink(path, meta, &target)
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let flag = match kind {
                EntryType::Char => b'3',
                EntryType::Block => b'4',
                _ => b'6',
            };
            let h = entry.header();
            let dev = (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            );
            w.header(
                &Header {
                    path,
                    link: &[],
                    flag,
                    mode: meta.mode & 0o7777,
                    uid: meta.uid,
                    gid: meta.gid,
                    size: 0,
                    mtime: meta.mtime,
                    dev,
                    xattrs: &m.xattrs,
                },
                &shown,
            )
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer from (path, kind) pairs: `d` a directory, `f:TEXT` a file, `l:TARGET` a hard
    /// link, `s:TARGET` a symlink, `w` an empty file (whiteouts are spelt by their names).
    fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        let meta = Meta {
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime: 2_000_000_000,
        };
        for (p, k) in entries {
            let p = p.as_bytes();
            match k.split_once(':') {
                None if *k == "d" => w.dir(p, meta, &[]).unwrap(),
                None => w.whiteout(p, 5).unwrap(),
                Some(("f", text)) => w
                    .file(p, meta, &[], text.len() as u64, text.as_bytes())
                    .unwrap(),
                Some(("l", t)) => w.hardlink(p, meta, t.as_bytes()).unwrap(),
                Some(("s", t)) => w.symlink(p, meta, &[], t.as_bytes()).unwrap(),
                _ => panic!("{k}"),
            }
        }
        w.finish().unwrap()
    }

    /// The squashed tar's entries as `path kind [content|target] mtime uid`.
    fn squashed(layers: &[Vec<u8>], lower: &dyn Lower, clamp: Option<i64>) -> Vec<String> {
        let out = squash(
            layers.len(),
            |i| Ok(&layers[i][..]),
            lower,
            clamp,
            Vec::new(),
        )
        .unwrap();
        let mut a = tar::Archive::new(&out[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().to_vec()).unwrap();
                let h = e.header().clone();
                let mut body = String::new();
                e.read_to_string(&mut body).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .unwrap_or_default();
                format!(
                    "{path} {:?} {body}{link} {} {}",
                    h.entry_type(),
                    h.mtime().unwrap(),
                    h.uid().unwrap()
                )
            })
            .collect()
    }

    fn lower(paths: &[&str]) -> LowerPaths {
        let listing = crate::listing::Listing(
            paths
                .iter()
                .map(|p| ((*p).to_owned(), crate::listing::Kind::Other))
                .collect(),
        );
        LowerPaths::new([&listing])
    }

    #[test]
    fn a_file_added_then_deleted_leaves_nothing() {
        let layers = [
            layer(&[("app", "d"), ("app/tmp", "f:x"), ("app/keep", "f:k")]),
            layer(&[("app", "d"), ("app/.wh.tmp", "w")]),
        ];
        assert_eq!(
            squashed(&layers, &Nothing, None),
            [
                "app/ Directory  2000000000 1000",
                "app/keep Regular k 2000000000 1000"
            ]
        );
    }

    #[test]
    fn deletions_of_lower_paths_stay_and_come_first() {
        let layers = [
            layer(&[("etc", "d"), ("etc/.wh.motd", "w"), ("etc/new", "f:n")]),
            layer(&[("etc", "d"), ("etc/new", "f:newer")]),
        ];
        let out = squashed(&layers, &lower(&["etc/motd"]), None);
        assert_eq!(
            out,
            [
                "etc/.wh.motd Regular  5 0",
                "etc/ Directory  2000000000 1000",
                "etc/new Regular newer 2000000000 1000"
            ]
        );
    }

    #[test]
    fn a_directory_deleted_and_made_again_is_opaque() {
        let layers = [
            layer(&[(".wh.var", "w")]),
            layer(&[("var", "d"), ("var/a", "f:a")]),
        ];
        let out = squashed(&layers, &lower(&["var/old"]), None);
        assert_eq!(
            out,
            [
                "var/ Directory  2000000000 1000",
                "var/.wh..wh..opq Regular  5 0",
                "var/a Regular a 2000000000 1000"
            ]
        );
    }

    #[test]
    fn a_file_replacing_a_directory_drops_what_was_below() {
        let layers = [
            layer(&[("x", "d"), ("x/in", "f:i")]),
            layer(&[(".wh.x", "w"), ("x", "s:elsewhere")]),
        ];
        assert_eq!(
            squashed(&layers, &Nothing, Some(1_000)),
            ["x Symlink elsewhere 1000 1000"]
        );
    }

    #[test]
    fn a_hard_link_keeps_the_content_its_target_had() {
        let layers = [
            layer(&[("a", "f:old"), ("b", "l:a"), ("c", "l:a")]),
            layer(&[("a", "f:new")]),
        ];
        assert_eq!(
            squashed(&layers, &Nothing, None),
            [
                "b Regular old 2000000000 1000",
                "c Link b 2000000000 1000",
                "a Regular new 2000000000 1000"
            ]
        );
    }

    #[test]
    fn opaque_directories_hide_only_lower_layers() {
        let layers = [
            layer(&[("d", "d"), ("d/gone", "f:g")]),
            layer(&[("d", "d"), ("d/kept", "f:k"), ("d/.wh..wh..opq", "w")]),
        ];
        assert_eq!(
            squashed(&layers, &lower(&["d/base"]), None),
            [
                "d/ Directory  2000000000 1000",
                "d/.wh..wh..opq Regular  5 0",
                "d/kept Regular k 2000000000 1000"
            ]
        );
        // Nothing below: the marker has nothing to hide.
        assert_eq!(
            squashed(&layers, &Nothing, None),
            [
                "d/ Directory  2000000000 1000",
                "d/kept Regular k 2000000000 1000"
            ]
        );
    }
}
