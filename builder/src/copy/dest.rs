//! Where a COPY lands: the stage's filesystem as COPY's destination rules see it, and the
//! destination decided source by source (BuildKit copies each source on its own to the
//! destination as written).

use cairn_layers::listing::DirMeta;

use super::error::err;
use super::path::{clean, join};
use crate::error::Result;

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

/// The destination as written, made absolute (below `workdir` unless it starts with `/`) and
/// cleaned lexically (`..` stops at the root), not yet through the image's symlinks; and
/// whether its form names a directory: a trailing `/` or `/.`, `.`, or the root.
pub(super) fn written_dest(dest: &str, workdir: &str) -> (String, bool) {
    let dest_abs = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    let cleaned = clean(&dest_abs);
    let trailing = dest.ends_with('/') || dest.ends_with("/.") || dest == "." || cleaned.is_empty();
    (cleaned.join("/"), trailing)
}

/// The destination as the sources of one COPY leave it, one after the other: a directory
/// (written with a trailing slash, one in the image, or made by a directory source) takes
/// each file by its name; otherwise a file source becomes the destination itself, and a
/// later one replaces it.
#[derive(Debug)]
pub(super) struct Dest {
    /// Its place in the image (symlinks resolved), and as written, for errors.
    rel: String,
    shown: String,
    is_dir: bool,
    /// A file source was copied as the destination itself.
    is_file: bool,
}

impl Dest {
    pub fn new(rel: String, shown: String, is_dir: bool) -> Dest {
        Dest {
            rel,
            shown,
            is_dir,
            is_file: false,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Where a file source named `name` lands, and whether it replaces the destination file
    /// an earlier source wrote.
    pub fn file(&mut self, name: &str) -> Result<(String, bool)> {
        if self.is_dir {
            if name.is_empty() {
                return Err(err(format!(
                    "the source gives no file name: name the file in the destination, not {}",
                    self.shown
                )));
            }
            return Ok((join(&self.rel, name), false));
        }
        let replaces = self.is_file;
        self.is_file = true;
        Ok((self.rel.clone(), replaces))
    }

    /// A directory source (or an archive ADD unpacks) fills the destination as a directory:
    /// onto a file an earlier source wrote it fails, as fsutil's copy does.
    pub fn dir(&mut self) -> Result<()> {
        if self.is_file {
            return Err(err(format!("cannot copy to non-directory: {}", self.shown)));
        }
        self.is_dir = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_layers::listing::{Kind, Listing, TreeView};

    use super::*;

    #[test]
    fn the_destination_as_written_is_made_absolute() {
        // (dest, workdir) -> (path below the root, names a directory by its form)
        let cases = [
            ("/app/", "/", ("app", true)),
            ("/app", "/", ("app", false)),
            ("app", "/src", ("src/app", false)),
            ("app/", "/src/", ("src/app", true)),
            ("a/b", "/w", ("w/a/b", false)),
            (".", "/src", ("src", true)),
            ("./", "/src", ("src", true)),
            ("x/.", "/", ("x", true)),
            ("/", "/w", ("", true)),
            ("/..", "/w", ("", true)),
            ("../../etc/f", "/w", ("etc/f", false)),
            ("f", "", ("f", false)),
            ("/abs/f", "/ignored", ("abs/f", false)),
        ];
        for (dest, workdir, (rel, dir)) in cases {
            assert_eq!(
                written_dest(dest, workdir),
                (rel.to_owned(), dir),
                "{dest} in {workdir}"
            );
        }
    }

    fn view() -> TreeView {
        let meta = DirMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut tree = TreeView::default();
        for d in ["app", "data", "data/sub"] {
            tree.add_dir(d, meta);
        }
        let links = [
            ("link", "app"),
            ("abs", "/data"),
            ("up", "../../data/sub"),
            ("file-link", "app/f"),
            ("loop", "loop"),
        ];
        for (path, target) in links {
            tree.apply(&Listing(vec![(path.into(), Kind::Symlink(target.into()))]));
        }
        tree
    }

    #[test]
    fn destinations_land_through_the_image_symlinks() {
        let tree = view();
        let image = ImageView { tree: &tree };
        // (destination, where it lands, a directory there)
        let cases = [
            ("app", "app", true),
            ("app/f", "app/f", false),
            ("new/f", "new/f", false),
            ("", "", true),
            // A link to a directory is followed, as a parent or as the destination itself.
            ("link", "app", true),
            ("link/f", "app/f", false),
            ("abs/x", "data/x", false),
            ("abs/sub", "data/sub", true),
            ("up/f", "data/sub/f", false),
            // A link to a file, or a loop, stays as named: the copy replaces it.
            ("file-link", "file-link", false),
            ("loop", "loop", false),
            ("link/../data", "data", true),
        ];
        for (dest, lands, is_dir) in cases {
            assert_eq!(image.resolve_dest(dest), lands, "{dest}");
            assert_eq!(image.is_dir(dest), is_dir, "{dest}");
        }
        assert_eq!(image.dir("app").map(|m| m.mode), Some(0o755));
        assert_eq!(image.dir("link"), None);
    }

    #[test]
    fn file_sources_land_by_the_destination_form() {
        // (destination is a directory, file names in order) -> where each lands
        type Case<'a> = (bool, &'a [&'a str], &'a [(&'a str, bool)]);
        let cases: &[Case<'_>] = &[
            // A directory (trailing slash, or one the image has) takes each by its name.
            (true, &["a", "b"], &[("d/a", false), ("d/b", false)]),
            // A file destination is the first source, then each later one replaces it.
            (false, &["a"], &[("d", false)]),
            (false, &["a", "b"], &[("d", false), ("d", true)]),
        ];
        for (is_dir, names, want) in cases {
            let mut d = Dest::new("d".into(), "/d".into(), *is_dir);
            let got: Vec<(String, bool)> = names.iter().map(|n| d.file(n).unwrap()).collect();
            let want: Vec<(String, bool)> = want.iter().map(|(p, r)| (p.to_string(), *r)).collect();
            assert_eq!(got, want, "{is_dir} {names:?}");
            assert_eq!(d.is_dir(), *is_dir);
        }
        let err = |d: &mut Dest, name: &str| d.file(name).unwrap_err().to_string();
        let mut d = Dest::new("d".into(), "/d/".into(), true);
        assert!(err(&mut d, "").contains("name the file in the destination, not /d/"));
    }

    #[test]
    fn the_destination_follows_the_sources_in_order() {
        let mut d = Dest::new("f".into(), "/f".into(), false);
        assert_eq!(d.file("a").unwrap(), ("f".to_owned(), false));
        assert_eq!(d.file("b").unwrap(), ("f".to_owned(), true));
        assert!(
            d.dir()
                .unwrap_err()
                .to_string()
                .contains("non-directory: /f")
        );
        let mut d = Dest::new("m".into(), "/m".into(), false);
        d.dir().unwrap();
        assert_eq!(d.file("a").unwrap(), ("m/a".to_owned(), false));
        assert!(d.file("").is_err());
    }
}
