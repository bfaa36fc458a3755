//! An image's package-database files, read from its layer tars in one pass each: only the paths
//! the readers want are kept, a later layer's file or whiteout replacing an earlier one.
//!
//! The image is never unpacked. Its symlinks are tracked (as `cairn_layers::listing` tracks them
//! for the build) so that a kept file a later symlink hides is dropped, and a database path
//! reached through a symlink is looked up where it leads, inside the image.

use std::collections::BTreeMap;
use std::io::Read;

use cairn_layers::listing::{DirMeta, Kind, Listing, TreeView, clean, join};
use cairn_layers::whiteout::{self, Name};

/// How much of an untrusted image's files is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes kept of one file; a larger one is reported as not covered.
    pub file: u64,
    /// The most bytes kept of all files together.
    pub total: u64,
}

/// What the image holds at a path the readers want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A regular file, with its bytes.
    Bytes(Vec<u8>),
    /// Something there whose bytes were not kept, and why.
    Skipped(String),
}

/// What [`ImageFiles::lookup`] finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a str, &'a Held),
    /// Nothing there.
    Missing,
    /// The path leads through symlinks to one no reader keeps, or loops.
    Elsewhere(Option<String>),
}

/// Which paths a reader wants, and whether it wants their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Bytes,
    /// Only that it is there (a database cairn does not read).
    Presence,
}

/// The paths of package databases and metadata, relative to the root.
pub fn wanted(path: &str) -> Option<Want> {
    const EXACT: [&str; 5] = [
        "etc/os-release",
        "usr/lib/os-release",
        "var/lib/dpkg/status",
        "lib/apk/db/installed",
        "usr/lib/apk/db/installed",
    ];
    if EXACT.contains(&path) {
        return Some(Want::Bytes);
    }
    let parts: Vec<&str> = path.split('/').collect();
    let (&last, dirs) = parts.split_last()?;
    if let Some(rest) = path.strip_prefix("var/lib/dpkg/status.d/")
        && !rest.contains('/')
        && !rest.starts_with('.')
        && !rest.ends_with(".md5sums")
    {
        return Some(Want::Bytes);
    }
    for db in crate::sbom::rpm::DATABASES {
        if path == db {
            return Some(match crate::sbom::rpm::Format::of(db) {
                crate::sbom::rpm::Format::Sqlite => Want::Bytes,
                _ => Want::Presence,
            });
        }
        if path.strip_suffix(crate::sbom::rpm::WAL_SUFFIX) == Some(db)
            && crate::sbom::rpm::Format::of(db) == crate::sbom::rpm::Format::Sqlite
        {
            return Some(Want::Bytes);
        }
    }
    // Python: site-packages/NAME.dist-info/METADATA, NAME.egg-info/PKG-INFO or NAME.egg-info.
    if let [.., lib, info] = dirs
        && (*lib == "site-packages" || *lib == "dist-packages")
        && (info.ends_with(".dist-info") && last == "METADATA"
            || info.ends_with(".egg-info") && last == "PKG-INFO")
    {
        return Some(Want::Bytes);
    }
    if let [.., lib] = dirs
        && (*lib == "site-packages" || *lib == "dist-packages")
        && last.ends_with(".egg-info")
    {
        return Some(Want::Bytes);
    }
    // npm: a node_modules' hidden lockfile, its packages' package.json, an app's lockfile.
    match (last, dirs) {
        (".package-lock.json", [.., "node_modules"]) => Some(Want::Bytes),
        ("package.json", [.., "node_modules", name]) if !name.starts_with('.') => Some(Want::Bytes),
        ("package.json", [.., "node_modules", scope, _]) if scope.starts_with('@') => {
            Some(Want::Bytes)
        }
        ("package-lock.json", _) if !dirs.contains(&"node_modules") => Some(Want::Bytes),
        _ => None,
    }
}

/// The wanted files of an image, its layers applied in order.
#[derive(Debug, Default)]
pub struct ImageFiles {
    files: BTreeMap<String, Held>,
    links: TreeView,
    total: u64,
}

/// A deletion a layer makes in the layers below it.
enum Removal {
    /// The path only (a directory replacing a file).
    Exact(String),
    /// The path and all below it.
    Tree(String),
    /// What lies below the path (an opaque directory).
    Below(String),
}

impl ImageFiles {
    /// Applies one layer's plain tar on top of what is held.
    pub fn add_layer<R: Read>(&mut self, tar: R, limits: Limits) -> std::io::Result<()> {
        let mut archive = tar::Archive::new(tar);
        let mut removals = Vec::new();
        let mut ours: BTreeMap<String, Held> = BTreeMap::new();
        let mut ours_total = 0u64;
        let mut listing = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let Some(path) = clean(&entry.path_bytes()) else {
                continue;
            };
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            match whiteout::classify(name) {
                Ok(Name::Opaque) => {
                    listing.push((parent.to_owned(), Kind::Opaque));
                    removals.push(Removal::Below(parent.to_owned()));
                    continue;
                }
                Ok(Name::Whiteout(hidden)) => {
                    let hidden = join(parent, hidden);
                    listing.push((hidden.clone(), Kind::Whiteout));
                    removals.push(Removal::Tree(hidden));
                    continue;
                }
                // A name the spec reserves: applying the layer refuses it; nothing is kept.
                Err(_) => continue,
                Ok(Name::Plain(_)) => {}
            }
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Directory {
                if self.files.contains_key(&path) {
                    removals.push(Removal::Exact(path.clone()));
                }
                listing.push((path, Kind::Dir(DIR)));
                continue;
            }
            if self.has_at_or_below(&path) {
                removals.push(Removal::Tree(path.clone()));
            }
            let link_target = entry.link_name_bytes().map(|t| t.into_owned());
            if kind == tar::EntryType::Symlink {
                match link_target.as_deref().map(std::str::from_utf8) {
                    Some(Ok(t)) => listing.push((path.clone(), Kind::Symlink(t.to_owned()))),
                    _ => listing.push((path.clone(), Kind::Other)),
                }
            } else {
                listing.push((path.clone(), Kind::Other));
            }
            let Some(want) = wanted(&path) else {
                if let Some(h) = ours.remove(&path) {
                    ours_total -= held_size(&h);
                }
                continue;
            };
            let held = match (want, kind) {
                (_, tar::EntryType::Symlink) => {
                    if let Some(h) = ours.remove(&path) {
                        ours_total -= held_size(&h);
                    }
                    continue;
                }
                (Want::Presence, _) => Held::Skipped("present".into()),
                (_, tar::EntryType::Regular | tar::EntryType::Continuous) => {
                    let size = entry.size();
                    match self.room(size, ours_total, limits) {
                        Err(why) => Held::Skipped(why),
                        Ok(()) => {
                            let mut bytes = Vec::with_capacity(size as usize);
                            (&mut entry).take(size).read_to_end(&mut bytes)?;
                            Held::Bytes(bytes)
                        }
                    }
                }
                (_, tar::EntryType::Link) => {
                    let target = link_target.as_deref().and_then(clean);
                    let found = target
                        .as_ref()
                        .and_then(|t| ours.get(t).or_else(|| self.files.get(t)));
                    match found {
                        Some(Held::Bytes(b)) => match self.room(b.len() as u64, ours_total, limits)
                        {
                            Ok(()) => Held::Bytes(b.clone()),
                            Err(why) => Held::Skipped(why),
                        },
                        _ => Held::Skipped(format!(
                            "a hard link to {}, whose bytes were not kept",
                            target.as_deref().unwrap_or("?")
                        )),
                    }
                }
                (_, other) => Held::Skipped(format!("not a regular file ({other:?})")),
            };
            ours_total += held_size(&held);
            if let Some(old) = ours.insert(path, held) {
                ours_total -= held_size(&old);
            }
        }
        // A layer's whiteouts hide what the layers below hold, never its own entries
        // (image-spec, "Whiteouts"): they go first.
        for removal in removals {
            match removal {
                Removal::Exact(p) => self.remove_range(&p, true, false),
                Removal::Tree(p) => self.remove_range(&p, true, true),
                Removal::Below(p) => self.remove_range(&p, false, true),
            }
        }
        for (path, held) in ours {
            self.total += held_size(&held);
            if let Some(old) = self.files.insert(path, held) {
                self.total -= held_size(&old);
            }
        }
        self.links.apply_links(&Listing(listing));
        Ok(())
    }

    /// Whether `size` more bytes may be kept.
    fn room(&self, size: u64, pending: u64, limits: Limits) -> Result<(), String> {
        if size > limits.file {
            return Err(format!(
                "{size} bytes, over the limit of {} bytes per file",
                limits.file
            ));
        }
        if self.total + pending + size > limits.total {
            return Err(format!(
                "{size} bytes, over the limit of {} bytes for all package metadata",
                limits.total
            ));
        }
        Ok(())
    }

    fn has_at_or_below(&self, path: &str) -> bool {
        self.files
            .range::<str, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k == path || k.starts_with(path))
    }

    fn remove_range(&mut self, path: &str, and_self: bool, below: bool) {
        if and_self && let Some(h) = self.files.remove(path) {
            self.total -= held_size(&h);
        }
        if !below {
            return;
        }
        let gone: Vec<String> = if path.is_empty() {
            self.files.keys().cloned().collect()
        } else {
            // Every key from "path/" up to "path0": '0' follows '/' in ASCII.
            self.files
                .range(format!("{path}/")..format!("{path}0"))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in gone {
            if let Some(h) = self.files.remove(&k) {
                self.total -= held_size(&h);
            }
        }
    }

    /// Drops the files a later layer's symlink hides: one whose directories lead elsewhere in
    /// the finished image is not at the path its tar entry named.
    pub fn finish(mut self) -> ImageFiles {
        let links = &self.links;
        self.files
            .retain(|path, _| links.resolve(path).as_deref() == Some(path));
        self
    }

    /// What the image holds at `path`, followed through its symlinks inside the root.
    pub fn lookup(&self, path: &str) -> Lookup<'_> {
        let Some(real) = self.links.resolve(path) else {
            return Lookup::Elsewhere(None);
        };
        match self.files.get_key_value(&real) {
            Some((k, held)) => Lookup::Found(k, held),
            None if real == path || wanted(&real).is_some() => Lookup::Missing,
            None => Lookup::Elsewhere(Some(real)),
        }
    }

    /// The held files, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Held)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v))
    }
}

const DIR: DirMeta = DirMeta {
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtime: 0,
};

fn held_size(h: &Held) -> u64 {
    match h {
        Held::Bytes(b) => b.len() as u64,
        Held::Skipped(_) => 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One tar entry of a test layer.
    pub(crate) enum E<'a> {
        F(&'a str, &'a str),
        D(&'a str),
        L(&'a str, &'a str),
        H(&'a str, &'a str),
    }

    pub(crate) fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match e {
                E::F(p, body) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(body.len() as u64);
                    // Written raw: the tar crate refuses to write a name that climbs.
                    h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    b.append(&h, body.as_bytes()).unwrap();
                }
                E::D(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::L(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::H(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    const BIG: Limits = Limits {
        file: 1 << 20,
        total: 1 << 20,
    };

    fn files(layers: &[Vec<u8>], limits: Limits) -> ImageFiles {
        let mut f = ImageFiles::default();
        for l in layers {
            f.add_layer(&l[..], limits).unwrap();
        }
        f.finish()
    }

    fn found(f: &ImageFiles, path: &str) -> Option<String> {
        match f.lookup(path) {
            Lookup::Found(_, Held::Bytes(b)) => Some(String::from_utf8(b.clone()).unwrap()),
            Lookup::Found(_, Held::Skipped(why)) => Some(format!("skipped: {why}")),
            Lookup::Missing => None,
            Lookup::Elsewhere(p) => Some(format!("elsewhere: {p:?}")),
        }
    }

    const STATUS: &str = "var/lib/dpkg/status";

    #[test]
    fn layers_replace_and_whiteout() {
        use E::*;
        type Layers = Vec<Vec<u8>>;
        let cases: Vec<(&str, Layers, Option<&str>)> = vec![
            ("one layer", vec![layer(&[F(STATUS, "a")])], Some("a")),
            (
                "a later layer replaces",
                vec![layer(&[F(STATUS, "a")]), layer(&[F(STATUS, "b")])],
                Some("b"),
            ),
            (
                "a whiteout deletes",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[F("var/lib/dpkg/.wh.status", "")]),
                ],
                None,
            ),
            (
                "a whiteout of a parent deletes",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[F("var/lib/.wh.dpkg", "")]),
                ],
                None,
            ),
            (
                "an opaque parent hides lower files",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[D("var/lib/dpkg"), F("var/lib/dpkg/.wh..wh..opq", "")]),
                ],
                None,
            ),
            (
                "an opaque marker after the layer's own file keeps it",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[F(STATUS, "b"), F("var/lib/dpkg/.wh..wh..opq", "")]),
                ],
                Some("b"),
            ),
            (
                "a whiteout and a new file in one layer",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[F(STATUS, "b"), F("var/lib/dpkg/.wh.status", "")]),
                ],
                Some("b"),
            ),
            (
                "a file replacing the directory",
                vec![layer(&[F(STATUS, "a")]), layer(&[F("var/lib/dpkg", "x")])],
                None,
            ),
            (
                "a symlink replacing the directory hides the file",
                vec![
                    layer(&[F(STATUS, "a")]),
                    layer(&[L("var/lib/dpkg", "/tmp")]),
                ],
                Some("elsewhere: Some(\"tmp/status\")"),
            ),
            (
                "os-release: a symlink to a kept path is followed",
                vec![layer(&[
                    F("usr/lib/os-release", "ID=debian"),
                    L("etc/os-release", "../usr/lib/os-release"),
                ])],
                Some("ID=debian"),
            ),
            (
                "os-release: a hard link to a kept file",
                vec![layer(&[
                    F("usr/lib/os-release", "ID=x"),
                    H("etc/os-release", "usr/lib/os-release"),
                ])],
                Some("ID=x"),
            ),
            (
                "a hard link to a file not kept",
                vec![layer(&[F("etc/other", "x"), H(STATUS, "etc/other")])],
                Some("skipped: a hard link to etc/other, whose bytes were not kept"),
            ),
            (
                "a name climbing out stays inside",
                vec![layer(&[F("../../var/lib/dpkg/status", "a")])],
                Some("a"),
            ),
        ];
        for (name, layers, want) in cases {
            let f = files(&layers, BIG);
            let path = if name.starts_with("os-release") {
                "etc/os-release"
            } else {
                STATUS
            };
            assert_eq!(found(&f, path).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn a_database_behind_a_symlink_out_of_the_kept_paths_is_reported() {
        use E::*;
        let f = files(
            &[layer(&[
                L("var/lib/dpkg", "/srv/dpkg"),
                F("srv/dpkg/status", "a"),
            ])],
            BIG,
        );
        assert_eq!(
            f.lookup(STATUS),
            Lookup::Elsewhere(Some("srv/dpkg/status".into()))
        );
        let f = files(&[layer(&[L("var/lib/dpkg/status", "status")])], BIG);
        assert_eq!(f.lookup(STATUS), Lookup::Elsewhere(None));
    }

    #[test]
    fn limits_skip_what_is_too_large() {
        use E::*;
        let limits = Limits { file: 4, total: 6 };
        let f = files(
            &[layer(&[
                F(STATUS, "12345"),
                F("lib/apk/db/installed", "1234"),
                F("etc/os-release", "123"),
            ])],
            limits,
        );
        assert_eq!(
            found(&f, STATUS).unwrap(),
            "skipped: 5 bytes, over the limit of 4 bytes per file"
        );
        assert_eq!(found(&f, "lib/apk/db/installed").unwrap(), "1234");
        assert_eq!(
            found(&f, "etc/os-release").unwrap(),
            "skipped: 3 bytes, over the limit of 6 bytes for all package metadata"
        );
        // What a later layer deletes no longer counts.
        let f = files(
            &[
                layer(&[F("lib/apk/db/installed", "1234")]),
                layer(&[F("lib/apk/db/.wh.installed", "")]),
                layer(&[F(STATUS, "1234")]),
            ],
            limits,
        );
        assert_eq!(found(&f, STATUS).unwrap(), "1234");
    }

    #[test]
    fn wanted_paths() {
        let cases: &[(&str, Option<Want>)] = &[
            ("var/lib/dpkg/status", Some(Want::Bytes)),
            ("var/lib/dpkg/status-old", None),
            ("var/lib/dpkg/status.d/base-files", Some(Want::Bytes)),
            ("var/lib/dpkg/status.d/base-files.md5sums", None),
            ("var/lib/rpm/rpmdb.sqlite", Some(Want::Bytes)),
            ("var/lib/rpm/rpmdb.sqlite-wal", Some(Want::Bytes)),
            ("var/lib/rpm/rpmdb.sqlite-shm", None),
            ("var/lib/rpm/Packages", Some(Want::Presence)),
            ("var/lib/rpm/Packages-wal", None),
            ("usr/lib/sysimage/rpm/Packages.db", Some(Want::Presence)),
            (
                "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
                Some(Want::Bytes),
            ),
            (
                "usr/lib/python3/dist-packages/six-1.16.0.dist-info/RECORD",
                None,
            ),
            (
                "usr/lib/python3/dist-packages/x.egg-info",
                Some(Want::Bytes),
            ),
            (
                "usr/lib/python3/dist-packages/x.egg-info/PKG-INFO",
                Some(Want::Bytes),
            ),
            ("app/node_modules/.package-lock.json", Some(Want::Bytes)),
            ("app/node_modules/left-pad/package.json", Some(Want::Bytes)),
            (
                "app/node_modules/@babel/core/package.json",
                Some(Want::Bytes),
            ),
            ("app/node_modules/left-pad/lib/package.json", None),
            ("app/package-lock.json", Some(Want::Bytes)),
            ("app/node_modules/x/package-lock.json", None),
            ("app/package.json", None),
        ];
        for (path, want) in cases {
            assert_eq!(wanted(path), *want, "{path}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = ImageFiles::default();
        let mut junk = vec![0x41u8; 1024];
        junk[156] = b'0';
        assert!(f.add_layer(&junk[..], BIG).is_err());
        assert!(f.add_layer(&b"short"[..], BIG).is_ok() || f.iter().next().is_none());
    }
}
