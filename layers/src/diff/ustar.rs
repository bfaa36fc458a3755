//! The diff's tar stream: entries in order, read from disk, through the layer tar encoder.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

use super::compare::{changed, open_file, read_full, read_link};
use super::xattrs::XattrList;
use super::{Kind, Stat, TarOptions};
use crate::layer_tar::{Header, Writer};

/// Writes entries; remembers inodes for hardlinks.
pub(super) struct TarWriter<'o, W: Write> {
    out: Writer<W>,
    opts: &'o TarOptions,
    /// (dev, ino) of each multiply-linked non-directory emitted → its path in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

impl<'o, W: Write> TarWriter<'o, W> {
    pub(super) fn new(out: W, opts: &'o TarOptions) -> Self {
        TarWriter {
            out: Writer::new(out),
            opts,
            links: HashMap::new(),
            buf: vec![0; 256 * 1024],
        }
    }

    fn mtime(&self, t: i64) -> i64 {
        self.opts.clamp_mtime.map_or(t, |c| t.min(c))
    }

    /// One file, directory, link, device or fifo at `rel` in the tar.
    pub(super) fn node(
        &mut self,
        rel: &[u8],
        path: &Path,
        st: &Stat,
        xattrs: &XattrList,
    ) -> Result<()> {
        let ids = &self.opts.id_map;
        // Capabilities name their root by host uid on disk; the layer names the container's.
        let translated: XattrList;
        let xattrs = if xattrs.iter().any(|(n, _)| n == crate::vfscap::NAME) {
            translated = xattrs
                .iter()
                .map(|(n, v)| match n == crate::vfscap::NAME {
                    true => (n.clone(), crate::vfscap::to_layer(v, ids)),
                    false => (n.clone(), v.clone()),
                })
                .collect();
            &translated
        } else {
            xattrs
        };
        let uid = ids
            .uid_to_container(st.uid)
            .ok_or_else(|| unmapped(path, "uid", st.uid))?;
        let gid = ids
            .gid_to_container(st.gid)
            .ok_or_else(|| unmapped(path, "gid", st.gid))?;
        let mut h = Header {
            path: rel,
            link: &[],
            flag: b'0',
            mode: st.mode & 0o7777,
            uid,
            gid,
            size: 0,
            mtime: self.mtime(st.mtime),
            dev: (0, 0),
            xattrs,
        };
        if st.kind != Kind::Dir && st.nlink > 1 {
            match self.links.entry((st.dev, st.ino)) {
                MapEntry::Occupied(first) => {
                    let first = first.get().clone();
                    h.flag = b'1';
                    h.link = &first;
                    h.xattrs = &[];
                    return self.header(&h, path);
                }
                MapEntry::Vacant(v) => {
                    v.insert(rel.to_vec());
                }
            }
        }
        let dir_path;
        let target;
        let mut file = None;
        match st.kind {
            Kind::Dir => {
                dir_path = [rel, b"/"].concat();
                h.path = &dir_path;
                h.flag = b'5';
            }
            Kind::File => {
                file = Some(open_file(path, st)?);
                h.size = st.size;
            }
            Kind::Symlink => {
                target = read_link(path)?;
                h.link = &target;
                h.flag = b'2';
            }
            Kind::Char | Kind::Block => {
                h.flag = if st.kind == Kind::Char { b'3' } else { b'4' };
                h.dev = (rustix::fs::major(st.rdev), rustix::fs::minor(st.rdev));
            }
            Kind::Fifo => h.flag = b'6',
        }
        self.header(&h, path)?;
        match file {
            Some(f) => self.content(f, path, st.size),
            None => Ok(()),
        }
    }

    /// A whiteout or opaque marker: an empty regular file with fixed metadata.
    pub(super) fn marker(&mut self, rel: &[u8]) -> Result<()> {
        self.out.whiteout(rel, self.mtime(0))
    }

    fn header(&mut self, h: &Header<'_>, path: &Path) -> Result<()> {
        self.out.header(h, path.display())
    }

    /// Streams exactly `size` bytes of `f` and the padding; a file that shrank or grew since
    /// it was listed is an error, as its header already holds the size.
    fn content(&mut self, mut f: File, path: &Path, size: u64) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = loop {
                match f.read(&mut self.buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r.at("read", path)?,
                }
            };
            if n == 0 {
                return Err(changed(path));
            }
            self.out.data(&self.buf[..n])?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if read_full(&mut f, &mut probe).at("read", path)? != 0 {
            return Err(changed(path));
        }
        self.out.pad(size)
    }

    pub(super) fn finish(self) -> Result<W> {
        self.out.finish()
    }
}

fn unmapped(path: &Path, what: &str, id: u32) -> Error {
    Error::invalid(
        format!("owner of {}", path.display()),
        format!("host {what} {id} is not mapped into the build's user namespace"),
    )
}
