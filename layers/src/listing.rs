//! What layers hold, by path and kind, read from tar headers alone: a view of an image's
//! directories (with their modes, owners and times) and symlinks that answers "is this a
//! directory, and whose?" without unpacking a byte.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::whiteout::{self, Name};

/// A directory's metadata as its tar header gives it: a COPY writes the directories above
/// its destination into its layer with these, as BuildKit does, so that whoever stacks the
/// layers keeps them (a 1777 /tmp, a 0700 home).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirMeta {
    /// Permission bits with setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

/// One entry of a layer, by its cleaned path (relative, slash-separated, no `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir(DirMeta),
    Symlink(String),
    /// A regular file, hard link, device or fifo.
    Other,
    /// A regular file cairn reads itself (one of [`KEPT_FILES`], at most [`KEPT_LIMIT`]
    /// bytes), with its bytes: USER and `--chown` names are looked up in the listings instead
    /// of an unpacked base.
    Kept(Vec<u8>),
    /// `.wh.name`: the path and everything below it are gone.
    Whiteout,
    /// `.wh..wh..opq`: what lower layers had below the directory is gone.
    Opaque,
    /// An entry whose name a listing cannot hold (not UTF-8), under the path `""`: whoever
    /// asks what this layer holds somewhere reads the layer itself.
    Unlisted,
}

/// A layer's entries, in tar order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing(pub Vec<(String, Kind)>);

// 3: directories carry their mode, owner and time. 4: kept files carry their bytes.
// 5: entries it cannot name are marked.
const MAGIC: &[u8] = b"cairn-listing 5\n";

/// The files a listing keeps the bytes of: the ones user and group names come from.
pub const KEPT_FILES: [&str; 2] = ["etc/passwd", "etc/group"];

/// The most of a kept file a listing holds; a larger one is listed as [`Kind::Other`] and read
/// from the unpacked image instead.
pub const KEPT_LIMIT: u64 = 1 << 20;

impl Listing {
    /// Reads a layer's uncompressed tar, keeping only its headers' paths and kinds. A name
    /// that climbs is clamped at the root, as applying the layer places it; one that is not
    /// UTF-8 is marked [`Kind::Unlisted`], so that nothing is decided on this listing there.
    pub fn read<R: Read>(tar: R) -> Result<Listing> {
        let mut archive = tar::Archive::new(tar);
        let bad = |e: std::io::Error| Error::stream("read layer tar headers", e);
        let mut out = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes();
            let Some(path) = clean(&raw) else {
                // The root's own entry says nothing of what lies below it; a name that is not
                // UTF-8 is marked, once.
                let text = std::str::from_utf8(&raw).is_ok();
                if !text && !matches!(out.last(), Some((_, Kind::Unlisted))) {
                    out.push((String::new(), Kind::Unlisted));
                }
                continue;
            };
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p, n),
                None => ("", path.as_str()),
            };
            let kind = match whiteout::classify(name) {
                Ok(Name::Opaque) => {
                    out.push((parent.to_owned(), Kind::Opaque));
                    continue;
                }
                Ok(Name::Whiteout(hidden)) => {
                    out.push((join(parent, hidden), Kind::Whiteout));
                    continue;
                }
                Ok(Name::Plain(_)) => match entry.header().entry_type() {
                    tar::EntryType::Directory => {
                        let h = entry.header();
                        // A field that does not parse is what a tar reader would make of it.
                        Kind::Dir(DirMeta {
                            mode: h.mode().unwrap_or(0o755) & 0o7777,
                            uid: h.uid().unwrap_or(0),
                            gid: h.gid().unwrap_or(0),
                            mtime: h.mtime().unwrap_or(0),
                        })
                    }
                    tar::EntryType::Symlink => {
                        let target = entry.link_name_bytes().unwrap_or_default();
                        match std::str::from_utf8(&target) {
                            Ok(t) => Kind::Symlink(t.to_owned()),
                            Err(_) => Kind::Other,
                        }
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous
                        if KEPT_FILES.contains(&path.as_str()) && entry.size() <= KEPT_LIMIT =>
                    {
                        let mut bytes = Vec::new();
                        let size = entry.size();
                        (&mut entry)
                            .take(size)
                            .read_to_end(&mut bytes)
                            .map_err(bad)?;
                        Kind::Kept(bytes)
                    }
                    _ => Kind::Other,
                },
                Err(_) => continue,
            };
            out.push((path, kind));
        }
        Ok(Listing(out))
    }

    /// Whether applying this layer under `prefixes` (see `apply::apply_layer_under`) could
    /// write anything: an entry at, below or above one of them, or one it cannot name. A layer
    /// that does not is skipped without being read.
    pub fn touches(&self, prefixes: &[String]) -> bool {
        let related = |p: &str, prefix: &str| {
            let (short, long) = if p.len() <= prefix.len() {
                (p, prefix)
            } else {
                (prefix, p)
            };
            short.is_empty()
                || long == short
                || long.starts_with(short) && long[short.len()..].starts_with('/')
        };
        self.0.iter().any(|(p, kind)| match kind {
            Kind::Unlisted => true,
            // The root's own entry: its metadata is no part of what lies under a prefix.
            Kind::Dir(_) if p.is_empty() => false,
            _ => prefixes.iter().any(|prefix| related(p, prefix)),
        })
    }

    /// The listing as bytes for a file: NUL-separated, as paths may hold newlines, and
    /// [sealed](crate::digest::seal).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (path, kind) in &self.0 {
            let dir;
            let (tag, target) = match kind {
                Kind::Dir(m) => {
                    dir = format!("{:o} {} {} {}", m.mode, m.uid, m.gid, m.mtime);
                    (b'd', dir.as_str())
                }
                Kind::Symlink(t) => (b'l', t.as_str()),
                Kind::Other => (b'f', ""),
                Kind::Kept(bytes) => {
                    dir = hex::encode(bytes);
                    (b'k', dir.as_str())
                }
                Kind::Whiteout => (b'w', ""),
                Kind::Opaque => (b'o', ""),
                Kind::Unlisted => (b'u', ""),
            };
            out.push(tag);
            out.extend_from_slice(path.as_bytes());
            out.push(0);
            out.extend_from_slice(target.as_bytes());
            out.push(0);
        }
        crate::digest::seal(out)
    }

    /// Parses [`Listing::to_bytes`]; None for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Listing> {
        let mut rest = crate::digest::unseal(bytes)?.strip_prefix(MAGIC)?;
        let mut out = Vec::new();
        while let Some((&tag, after)) = rest.split_first() {
            let mut fields = after.splitn(3, |b| *b == 0);
            let path = std::str::from_utf8(fields.next()?).ok()?.to_owned();
            let target = std::str::from_utf8(fields.next()?).ok()?.to_owned();
            rest = fields.next()?;
            let kind = match tag {
                b'd' => {
                    let mut f = target.split(' ');
                    let meta = DirMeta {
                        mode: u32::from_str_radix(f.next()?, 8).ok()?,
                        uid: f.next()?.parse().ok()?,
                        gid: f.next()?.parse().ok()?,
                        mtime: f.next()?.parse().ok()?,
                    };
                    if f.next().is_some() {
                        return None;
                    }
                    Kind::Dir(meta)
                }
                b'l' => Kind::Symlink(target),
                b'f' => Kind::Other,
                b'k' => Kind::Kept(hex::decode(&target).ok()?),
                b'w' => Kind::Whiteout,
                b'o' => Kind::Opaque,
                b'u' => Kind::Unlisted,
                _ => return None,
            };
            out.push((path, kind));
        }
        Some(Listing(out))
    }
}

/// The directories and symlinks of layers applied in order, with whiteouts honoured.
#[derive(Debug, Clone, Default)]
pub struct TreeView {
    /// Ordered, so that what lies below a path is one range: a layer of many files replacing
    /// or whiting out paths costs a lookup per entry, not a pass over the view.
    dirs: BTreeMap<String, DirMeta>,
    links: BTreeMap<String, String>,
}

impl TreeView {
    /// Applies one layer's entries on top of what the view holds.
    pub fn apply(&mut self, listing: &Listing) {
        self.apply_keeping(listing, true);
    }

    /// [`TreeView::apply`] keeping the symlinks only: all [`TreeView::resolve`] needs, made
    /// without the directories that are most of a layer's entries ([`TreeView::is_dir`] and
    /// [`TreeView::dir`] then know none).
    pub fn apply_links(&mut self, listing: &Listing) {
        self.apply_keeping(listing, false);
    }

    fn apply_keeping(&mut self, listing: &Listing, dirs: bool) {
        for (path, kind) in &listing.0 {
            match kind {
                Kind::Dir(meta) => {
                    self.links.remove(path);
                    if dirs {
                        self.dirs.insert(path.clone(), *meta);
                    }
                }
                Kind::Symlink(target) => {
                    self.remove_below(path, true);
                    self.links.insert(path.clone(), target.clone());
                }
                Kind::Other | Kind::Kept(_) | Kind::Whiteout => self.remove_below(path, true),
                Kind::Opaque => self.remove_below(path, false),
                Kind::Unlisted => {}
            }
        }
    }

    /// Adds a directory (a COPY layer's, known without reading its tar).
    pub fn add_dir(&mut self, path: &str, meta: DirMeta) {
        self.links.remove(path);
        self.dirs.insert(path.to_owned(), meta);
    }

    /// What lies below the directory `rel` (already resolved), named relative to it: the
    /// view a process chrooted there would have (ADD extracts an archive that way).
    pub fn below(&self, rel: &str) -> TreeView {
        if rel.is_empty() {
            return self.clone();
        }
        let (from, to) = (format!("{rel}/"), format!("{rel}0"));
        let strip = |k: &String| k[from.len()..].to_owned();
        TreeView {
            dirs: self
                .dirs
                .range(from.clone()..to.clone())
                .map(|(k, v)| (strip(k), *v))
                .collect(),
            links: self
                .links
                .range(from.clone()..to)
                .map(|(k, v)| (strip(k), v.clone()))
                .collect(),
        }
    }

    /// Drops what lies below `path` (and `path` itself when `and_self`).
    fn remove_below(&mut self, path: &str, and_self: bool) {
        if path.is_empty() {
            self.dirs.clear();
            self.links.clear();
            return;
        }
        if and_self {
            self.dirs.remove(path);
            self.links.remove(path);
        }
        // Most calls are for a file with nothing below it: every key with the prefix `path`
        // directly follows `path` in order, so one lookup each tells, with no range to build.
        let has_below = |keys: Option<&String>| keys.is_some_and(|k| k.starts_with(path));
        let after = (Bound::Excluded(path), Bound::Unbounded);
        if !has_below(self.dirs.range::<str, _>(after).next().map(|(k, _)| k))
            && !has_below(self.links.range::<str, _>(after).next().map(|(k, _)| k))
        {
            return;
        }
        // Everything from "path/" up to (not including) "path0": '0' follows '/' in ASCII.
        // Removed key by key: splitting and re-joining the maps would cost a pass over them.
        let range = format!("{path}/")..format!("{path}0");
        let dirs: Vec<String> = self
            .dirs
            .range(range.clone())
            .map(|(k, _)| k.clone())
            .collect();
        for k in dirs {
            self.dirs.remove(&k);
        }
        let links: Vec<String> = self.links.range(range).map(|(k, _)| k.clone()).collect();
        for k in links {
            self.links.remove(&k);
        }
    }

    /// Follows `rel` through the view's symlinks as a chroot would (absolute targets from
    /// the root, `..` stopping there); None after too many links. `rel` itself is cleaned
    /// lexically first, as Docker cleans a destination.
    pub fn resolve(&self, rel: &str) -> Option<String> {
        self.resolve_links(rel).map(|(path, _)| path)
    }

    /// [`TreeView::resolve`], with the symlinks it followed on the way: each one's path (its
    /// parents resolved) and target, in the order followed.
    pub fn resolve_links(&self, rel: &str) -> Option<(String, Vec<(String, String)>)> {
        let mut pending: Vec<String> = crate::rootfs::clean_names(rel).into_iter().rev().collect();
        let mut done: Vec<String> = Vec::new();
        let mut followed = Vec::new();
        while let Some(part) = pending.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            done.push(part);
            let at = done.join("/");
            if let Some(target) = self.links.get(&at) {
                if followed.len() >= crate::rootfs::MAX_SYMLINKS as usize {
                    return None;
                }
                followed.push((at, target.clone()));
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty() && *c != ".")
                        .rev()
                        .map(str::to_owned),
                );
            }
        }
        Some((done.join("/"), followed))
    }

    /// Whether `rel` (already resolved) is a directory in the view.
    pub fn is_dir(&self, rel: &str) -> bool {
        rel.is_empty() || self.dirs.contains_key(rel)
    }

    /// The metadata of the directory `rel` (already resolved; not the root, which no layer
    /// entry names).
    pub fn dir(&self, rel: &str) -> Option<&DirMeta> {
        self.dirs.get(rel)
    }
}

/// What a stack of layers holds at a path, for a file cairn reads itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A kept file, with its bytes.
    Kept(Vec<u8>),
    /// Gone: whited out, or below something a layer put in a directory's place.
    Missing,
    /// A directory.
    Dir,
    /// Something whose bytes no listing keeps (a large file, a hard link, a device): read it
    /// from the unpacked layers.
    Unknown,
    /// No layer given names it: what lies under them decides.
    NotListed,
}

/// What `layers`, topmost first, hold at `path` (already resolved through the whole image's
/// symlinks, see [`TreeView::resolve`]): the topmost layer naming it decides, unless a layer
/// above whites out, makes opaque or replaces one of its directories.
pub fn held<'a>(layers: impl IntoIterator<Item = &'a Listing>, path: &str) -> Held {
    let under =
        |dir: &str| dir.is_empty() || path.starts_with(dir) && path[dir.len()..].starts_with('/');
    for listing in layers {
        let mut hidden_below = false;
        let mut found = None;
        for (p, kind) in &listing.0 {
            if *kind == Kind::Unlisted {
                return Held::Unknown;
            }
            if p == path {
                found = Some(match kind {
                    Kind::Kept(bytes) => Held::Kept(bytes.clone()),
                    // An opaque marker names a directory.
                    Kind::Dir(_) | Kind::Opaque => Held::Dir,
                    Kind::Whiteout => Held::Missing,
                    Kind::Other | Kind::Symlink(_) | Kind::Unlisted => Held::Unknown,
                });
            } else if under(p) {
                // A directory above it hides what lower layers have there when it is whited
                // out, made opaque or replaced by a file or link.
                hidden_below |= !matches!(kind, Kind::Dir(_));
            }
        }
        if let Some(found) = found {
            return found;
        }
        if hidden_below {
            return Held::Missing;
        }
    }
    Held::NotListed
}

/// `name` in the directory `parent` of a clean relative path (`""` is the root).
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A tar name as a clean relative path, `..` stopping at the root as it does when the layer is
/// applied (see `apply`); None when it is the root or is not UTF-8.
pub fn clean(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod held_tests {
    use super::*;

    fn layer(entries: &[(&str, Kind)]) -> Listing {
        Listing(
            entries
                .iter()
                .map(|(p, k)| (p.to_string(), k.clone()))
                .collect(),
        )
    }

    #[test]
    fn the_topmost_layer_naming_a_file_decides() {
        let dir = Kind::Dir(DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        });
        let kept = |s: &str| Kind::Kept(s.as_bytes().to_vec());
        let base = layer(&[("etc", dir.clone()), ("etc/passwd", kept("base"))]);
        let cases: [(&str, Vec<Listing>, Held); 9] = [
            ("only the base", vec![], Held::Kept(b"base".to_vec())),
            (
                "a later layer's file",
                vec![layer(&[("etc", dir.clone()), ("etc/passwd", kept("top"))])],
                Held::Kept(b"top".to_vec()),
            ),
            (
                "a layer that does not name it",
                vec![layer(&[("etc", dir.clone()), ("etc/hosts", Kind::Other)])],
                Held::Kept(b"base".to_vec()),
            ),
            (
                "whited out",
                vec![layer(&[("etc/passwd", Kind::Whiteout)])],
                Held::Missing,
            ),
            (
                "its directory whited out",
                vec![layer(&[("etc", Kind::Whiteout)])],
                Held::Missing,
            ),
            (
                "its directory made opaque",
                vec![layer(&[("etc", Kind::Opaque)])],
                Held::Missing,
            ),
            (
                "opaque, then written again",
                vec![layer(&[("etc", Kind::Opaque), ("etc/passwd", kept("new"))])],
                Held::Kept(b"new".to_vec()),
            ),
            (
                "not kept",
                vec![layer(&[("etc/passwd", Kind::Other)])],
                Held::Unknown,
            ),
            (
                "a directory now",
                vec![layer(&[("etc/passwd", dir.clone())])],
                Held::Dir,
            ),
        ];
        for (what, upper, want) in cases {
            let stack: Vec<&Listing> = upper.iter().rev().chain([&base]).collect();
            assert_eq!(held(stack, "etc/passwd"), want, "{what}");
        }
        assert_eq!(held([&base], "etc/group"), Held::NotListed);
        assert_eq!(held([&base], "etcx/passwd"), Held::NotListed);
        // A file in a directory's place hides what lower layers had below it.
        assert_eq!(
            held([&layer(&[("etc", Kind::Other)])], "etc/passwd"),
            Held::Missing
        );
    }

    #[test]
    fn kept_files_keep_their_bytes_within_the_limit() {
        let mut tar = tar::Builder::new(Vec::new());
        let big = vec![b'x'; KEPT_LIMIT as usize + 1];
        let files: [(&str, &[u8]); 4] = [
            ("etc/passwd", b"root:x:0:0\n\0binary"),
            ("./etc/group", &big),
            ("etc/shadow", b"secret"),
            ("home/etc/passwd", b"no"),
        ];
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, name, data).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        let listing = Listing::read(&bytes[..]).unwrap();
        let kinds: Vec<&Kind> = listing.0.iter().map(|(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                &Kind::Kept(b"root:x:0:0\n\0binary".to_vec()),
                &Kind::Other,
                &Kind::Other,
                &Kind::Other
            ]
        );
        assert_eq!(Listing::from_bytes(&listing.to_bytes()), Some(listing));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            // `tmp` and `home/dev` as a base has them, so their metadata shows in the view.
            match *path {
                "tmp/" => h.set_mode(0o41777),
                "home/dev/" => {
                    h.set_mode(0o700);
                    h.set_uid(1000);
                    h.set_gid(1001);
                    h.set_mtime(1_700_000_000);
                }
                _ => {}
            }
            h.set_size(0);
            match kind {
                'd' => h.set_entry_type(tar::EntryType::Directory),
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name(target).unwrap();
                }
                _ => h.set_entry_type(tar::EntryType::Regular),
            }
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn view(layers: &[Vec<u8>]) -> TreeView {
        let mut v = TreeView::default();
        for l in layers {
            let listing = Listing::read(&l[..]).unwrap();
            assert_eq!(
                Listing::from_bytes(&listing.to_bytes()),
                Some(listing.clone())
            );
            v.apply(&listing);
        }
        v
    }

    #[test]
    fn directories_through_symlinks_and_whiteouts() {
        let base = tar(&[
            ("usr/", 'd', ""),
            ("usr/bin/", 'd', ""),
            ("bin", 'l', "usr/bin"),
            ("etc/", 'd', ""),
            ("etc/app/", 'd', ""),
            ("etc/passwd", 'f', ""),
            ("abs", 'l', "/etc"),
            ("up", 'l', "../../../usr"),
            ("loop", 'l', "loop"),
            ("opt/", 'd', ""),
            ("opt/a/", 'd', ""),
            ("var/", 'd', ""),
            ("var/x/", 'd', ""),
            // Names that sort next to the ones removed below, and must stay.
            ("opt.d/", 'd', ""),
            ("var0/", 'd', ""),
            ("etc/app2/", 'd', ""),
            ("var/x/in", 'l', "/usr"),
            ("var-l", 'l', "/usr"),
        ]);
        let top = tar(&[
            ("etc/.wh.app", 'f', ""),
            ("opt/.wh..wh..opq", 'f', ""),
            ("opt/b/", 'd', ""),
            ("var", 'f', ""),
        ]);
        let v = view(&[base.clone(), top.clone()]);
        // The symlinks alone resolve every path as the whole view does.
        let mut links = TreeView::default();
        for l in [&base, &top] {
            links.apply_links(&Listing::read(&l[..]).unwrap());
        }
        for p in [
            "var/x/in",
            "var-l/bin",
            "bin/x",
            "up/bin",
            "abs/app2",
            "loop",
            "opt/a",
        ] {
            assert_eq!(links.resolve(p), v.resolve(p), "{p}");
        }
        assert_eq!(links.resolve("var-l/bin"), Some("usr/bin".into()));
        assert_eq!(links.resolve("var/x/in"), Some("var/x/in".into()));
        assert!(!links.is_dir("usr"));
        let is_dir = |p: &str| v.resolve(p).is_some_and(|r| v.is_dir(&r));
        let cases = [
            ("", true),
            ("usr/bin", true),
            ("bin", true),
            ("/bin/", true),
            ("abs", true),
            ("up/bin", true),
            ("etc", true),
            ("etc/app", false),
            ("etc/passwd", false),
            ("opt", true),
            ("opt/a", false),
            ("opt/b", true),
            ("var", false),
            ("var/x", false),
            ("opt.d", true),
            ("var0", true),
            ("etc/app2", true),
            ("missing", false),
            ("bin/../etc", true),
        ];
        for (path, want) in cases {
            assert_eq!(is_dir(path), want, "{path}");
        }
        assert_eq!(v.resolve("loop"), None);
    }

    #[test]
    fn directories_keep_their_mode_owner_and_time() {
        let base = tar(&[
            ("tmp/", 'd', ""),
            ("home/", 'd', ""),
            ("home/dev/", 'd', ""),
            ("gone/", 'd', ""),
        ]);
        // A later layer's header for a directory is the one that counts.
        let top = tar(&[("home/", 'd', ""), ("gone", 'f', ""), ("gone/", 'd', "")]);
        let mut v = view(&[base]);
        let meta = |mode, uid, gid, mtime| DirMeta {
            mode,
            uid,
            gid,
            mtime,
        };
        let cases = [
            ("tmp", Some(meta(0o1777, 0, 0, 0))),
            ("home/dev", Some(meta(0o700, 1000, 1001, 1_700_000_000))),
            ("home", Some(meta(0o755, 0, 0, 0))),
            ("", None),
            ("missing", None),
        ];
        for (path, want) in cases {
            assert_eq!(v.dir(path).copied(), want, "{path}");
        }
        v.apply(&Listing::read(&top[..]).unwrap());
        assert_eq!(v.dir("gone").copied(), Some(meta(0o755, 0, 0, 0)));
        v.add_dir("home", meta(0o750, 5, 6, 7));
        assert_eq!(v.dir("home").copied(), Some(meta(0o750, 5, 6, 7)));
        assert_eq!(v.dir("home/dev").map(|m| m.uid), Some(1000));
    }

    #[test]
    fn damaged_listings_are_refused() {
        let l = Listing::read(&tar(&[("a/", 'd', ""), ("a/l", 'l', "b")])[..]).unwrap();
        // A directory whose metadata field is cut short.
        let short = crate::digest::seal([MAGIC, b"da\x00755 0 0\x00"].concat());
        assert!(Listing::from_bytes(&short).is_none());
        let bytes = l.to_bytes();
        assert!(Listing::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 1] ^= 1;
        assert!(Listing::from_bytes(&flipped).is_none());
        assert!(Listing::from_bytes(b"something else").is_none());
        // Whole, but not a listing.
        let mut wrong_tag = crate::digest::unseal(&bytes).unwrap().to_vec();
        wrong_tag[MAGIC.len()] = b'?';
        assert!(Listing::from_bytes(&crate::digest::seal(wrong_tag)).is_none());
    }

    #[test]
    fn below_is_the_view_from_a_directory() {
        let meta = DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut v = TreeView::default();
        for d in ["opt", "opt/x", "opt/x/etc", "opt/xy", "usr"] {
            v.add_dir(d, meta);
        }
        v.apply(&Listing(vec![(
            "opt/x/up".into(),
            Kind::Symlink("/".into()),
        )]));
        let b = v.below("opt/x");
        // Named from opt/x, nothing beside it (opt/xy) or above it.
        assert!(b.is_dir("etc") && !b.is_dir("opt") && !b.is_dir("usr"));
        assert!(!b.is_dir("y"));
        // Its links resolve with opt/x as the root.
        assert_eq!(b.resolve("up/etc").as_deref(), Some("etc"));
        assert_eq!(v.below("").resolve("opt/x/up/usr").as_deref(), Some("usr"));
    }

    #[test]
    fn resolving_names_the_links_it_followed() {
        let mut v = TreeView::default();
        v.apply(&Listing(vec![
            (
                "etc/os-release".into(),
                Kind::Symlink("../usr/lib/os-release".into()),
            ),
            ("ulib".into(), Kind::Symlink("/usr/lib".into())),
            ("usr/lib/cur".into(), Kind::Symlink("v2".into())),
            ("loop".into(), Kind::Symlink("loop".into())),
        ]));
        let link = |p: &str, t: &str| (p.to_owned(), t.to_owned());
        type Resolved = Option<(&'static str, Vec<(String, String)>)>;
        let cases: [(&str, Resolved); 5] = [
            ("usr/bin", Some(("usr/bin", vec![]))),
            (
                "etc/os-release",
                Some((
                    "usr/lib/os-release",
                    vec![link("etc/os-release", "../usr/lib/os-release")],
                )),
            ),
            (
                "ulib/cur/x",
                Some((
                    "usr/lib/v2/x",
                    vec![link("ulib", "/usr/lib"), link("usr/lib/cur", "v2")],
                )),
            ),
            (
                "./ulib/../ulib",
                Some(("usr/lib", vec![link("ulib", "/usr/lib")])),
            ),
            ("loop/x", None),
        ];
        for (rel, want) in cases {
            let want = want.map(|(p, l)| (p.to_owned(), l));
            assert_eq!(v.resolve_links(rel), want, "{rel}");
            assert_eq!(v.resolve(rel), want.map(|(p, _)| p), "{rel}");
        }
    }

    #[test]
    fn a_layer_touches_the_paths_it_has_entries_at_below_or_above() {
        let meta = DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let one = |p: &str, k: Kind| Listing(vec![("".into(), Kind::Dir(meta)), (p.into(), k)]);
        let prefixes = ["src/app".to_owned(), "etc/x".to_owned()];
        for (listing, touches) in [
            (one("usr/lib/libc.so", Kind::Other), false),
            (one("src/application", Kind::Other), false),
            (one("srcx", Kind::Dir(meta)), false),
            (one("src/app", Kind::Other), true),
            (one("src/app/main.o", Kind::Other), true),
            (one("src", Kind::Dir(meta)), true),
            (one("src", Kind::Symlink("/opt".into())), true),
            (one("src/app", Kind::Whiteout), true),
            (one("etc", Kind::Opaque), true),
            (one("", Kind::Opaque), true),
            (one("", Kind::Unlisted), true),
            (Listing(vec![("".into(), Kind::Dir(meta))]), false),
        ] {
            assert_eq!(listing.touches(&prefixes), touches, "{listing:?}");
        }
    }

    #[test]
    fn names_a_listing_cannot_hold_are_marked_and_kept() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"a\xff/b\0");
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let listing = Listing::read(&tar[..]).unwrap();
        assert_eq!(listing.0, vec![(String::new(), Kind::Unlisted)]);
        assert_eq!(
            Listing::from_bytes(&listing.to_bytes()),
            Some(listing.clone())
        );
        assert!(listing.touches(&["anything".into()]));
        assert_eq!(held([&listing], "etc/passwd"), Held::Unknown);
    }
}
