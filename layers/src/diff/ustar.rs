//! The tar stream: entries in order, ustar headers, PAX records only where ustar falls short.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

use super::compare::{changed, open_file, read_full, read_link};
use super::xattrs::XattrList;
use super::{Kind, Stat, TarOptions};

pub(super) const BLOCK: usize = 512;

/// Writes entries; remembers inodes for hardlinks.
pub(super) struct TarWriter<'o, W: Write> {
    // Headers are 512-byte writes; buffer them whatever `W` is (large content writes bypass
    // the buffer).
    out: BufWriter<W>,
    opts: &'o TarOptions,
    /// (dev, ino) of each multiply-linked non-directory emitted → its path in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

impl<'o, W: Write> TarWriter<'o, W> {
    pub(super) fn new(out: W, opts: &'o TarOptions) -> Self {
        TarWriter {
            out: BufWriter::with_capacity(128 * 1024, out),
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
        let h = Header {
            path: rel,
            link: &[],
            flag: b'0',
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: self.mtime(0),
            dev: (0, 0),
            xattrs: &[],
        };
        self.header(&h, Path::new(OsStr::from_bytes(rel)))
    }

    fn header(&mut self, h: &Header<'_>, path: &Path) -> Result<()> {
        let bytes = encode(h).map_err(|reason| {
            Error::invalid(format!("layer entry for {}", path.display()), reason)
        })?;
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::stream("write the layer tar", e))
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
            self.out
                .write_all(&self.buf[..n])
                .map_err(|e| Error::stream("write the layer tar", e))?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        if read_full(&mut f, &mut probe).at("read", path)? != 0 {
            return Err(changed(path));
        }
        let pad = padding(size);
        self.write(&[0; BLOCK][..pad])
    }

    pub(super) fn finish(mut self) -> Result<W> {
        self.write(&[0; 2 * BLOCK])?;
        self.out
            .into_inner()
            .map_err(|e| Error::stream("write the layer tar", e.into_error()))
    }
}

fn unmapped(path: &Path, what: &str, id: u32) -> Error {
    Error::invalid(
        format!("owner of {}", path.display()),
        format!("host {what} {id} is not mapped into the build's user namespace"),
    )
}

fn padding(size: u64) -> usize {
    // The remainder is below 512, so the cast cannot truncate.
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// The header fields of one entry, already in container terms.
#[derive(Debug)]
pub(super) struct Header<'a> {
    /// The tar path (`dir/` for a directory).
    pub(super) path: &'a [u8],
    pub(super) link: &'a [u8],
    pub(super) flag: u8,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) size: u64,
    pub(super) mtime: i64,
    pub(super) dev: (u32, u32),
    pub(super) xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

// ustar field offsets and lengths.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 8);
const DEVMAJOR: (usize, usize) = (329, 8);
const DEVMINOR: (usize, usize) = (337, 8);
const PREFIX_FIELD: (usize, usize) = (345, 155);

fn field(block: &mut [u8; BLOCK], (at, len): (usize, usize)) -> &mut [u8] {
    &mut block[at..at + len]
}

/// Zero-padded octal with a NUL terminator; false (and zero) when `v` does not fit.
fn octal(dst: &mut [u8], v: u64) -> bool {
    let digits = dst.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        octal(dst, 0);
        return false;
    }
    dst[..digits].copy_from_slice(s.as_bytes());
    dst[digits] = 0;
    true
}

/// Copies as much of `src` as fits (the rest is in a PAX record or the field is exact).
fn bytes_into(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// Splits a path longer than 100 bytes into ustar's prefix (≤ 155) and name (≤ 100) at a
/// `/`, as Go's archive/tar does; `None` if it cannot be split.
fn split_ustar(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= NAME.1 {
        return Some((&[], p));
    }
    let mut end = p.len();
    if end > PREFIX_FIELD.1 + 1 {
        end = PREFIX_FIELD.1 + 1;
    } else if p[end - 1] == b'/' {
        end -= 1;
    }
    let i = p[..end].iter().rposition(|&b| b == b'/')?;
    let name_len = p.len() - i - 1;
    if i == 0 || name_len > NAME.1 || name_len == 0 || i > PREFIX_FIELD.1 {
        return None;
    }
    Some((&p[..i], &p[i + 1..]))
}

/// A PAX record: `<len> <key>=<value>\n`, where `<len>` counts the whole record.
pub(super) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn checksum(block: &mut [u8; BLOCK]) {
    field(block, CHKSUM).fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    // At most 512 * 255, six octal digits.
    let s = format!("{sum:06o}\0 ");
    field(block, CHKSUM).copy_from_slice(s.as_bytes());
}

fn ustar_block(flag: u8) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[TYPEFLAG] = flag;
    field(&mut block, MAGIC).copy_from_slice(b"ustar\x0000");
    block
}

/// The bytes of one entry's headers: a PAX header and its records when needed, then the ustar
/// header. `Err` names what cannot be encoded.
pub(super) fn encode(h: &Header<'_>) -> std::result::Result<Vec<u8>, String> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut block = ustar_block(h.flag);
    match split_ustar(h.path) {
        Some((prefix, name)) => {
            field(&mut block, NAME)[..name.len()].copy_from_slice(name);
            field(&mut block, PREFIX_FIELD)[..prefix.len()].copy_from_slice(prefix);
        }
        None => {
            pax.push((b"path".to_vec(), h.path.to_vec()));
            bytes_into(field(&mut block, NAME), h.path);
        }
    }
    if h.link.len() > LINKNAME.1 {
        pax.push((b"linkpath".to_vec(), h.link.to_vec()));
    }
    bytes_into(field(&mut block, LINKNAME), h.link);
    octal(field(&mut block, MODE), u64::from(h.mode));
    if !octal(field(&mut block, UID), u64::from(h.uid)) {
        pax.push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
    }
    if !octal(field(&mut block, GID), u64::from(h.gid)) {
        pax.push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
    }
    if !octal(field(&mut block, SIZE), h.size) {
        pax.push((b"size".to_vec(), h.size.to_string().into_bytes()));
    }
    let mtime_fits = u64::try_from(h.mtime).is_ok_and(|t| octal(field(&mut block, MTIME), t));
    if !mtime_fits {
        octal(field(&mut block, MTIME), 0);
        pax.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes()));
    }
    if !octal(field(&mut block, DEVMAJOR), u64::from(h.dev.0))
        || !octal(field(&mut block, DEVMINOR), u64::from(h.dev.1))
    {
        return Err(format!(
            "device number {}:{} does not fit a tar header",
            h.dev.0, h.dev.1
        ));
    }
    for (name, value) in h.xattrs {
        // A PAX key ends at the first '='; such a name cannot be stored (Go refuses it too).
        if name.contains(&b'=') || name.contains(&0) {
            return Err(format!(
                "xattr name {:?} cannot be stored in a tar",
                String::from_utf8_lossy(name)
            ));
        }
        pax.push(([b"SCHILY.xattr.".as_slice(), name].concat(), value.clone()));
    }
    checksum(&mut block);
    if pax.is_empty() {
        return Ok(block.to_vec());
    }
    pax.sort();
    let mut data = Vec::new();
    for (k, v) in &pax {
        pax_record(&mut data, k, v);
    }
    let mut xblock = ustar_block(b'x');
    bytes_into(field(&mut xblock, NAME), &pax_header_name(h.path));
    octal(field(&mut xblock, MODE), 0);
    octal(field(&mut xblock, UID), 0);
    octal(field(&mut xblock, GID), 0);
    octal(field(&mut xblock, SIZE), data.len() as u64);
    octal(field(&mut xblock, MTIME), 0);
    octal(field(&mut xblock, DEVMAJOR), 0);
    octal(field(&mut xblock, DEVMINOR), 0);
    checksum(&mut xblock);
    let pad = padding(data.len() as u64);
    let mut out = Vec::with_capacity(3 * BLOCK + data.len());
    out.extend_from_slice(&xblock);
    out.extend_from_slice(&data);
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(&block);
    Ok(out)
}

/// `dir/PaxHeaders.0/name` for the entry at `dir/name`, ASCII only, at most 100 bytes.
fn pax_header_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, file) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&[][..], trimmed),
    };
    let mut name: Vec<u8> = [dir, b"PaxHeaders.0/", file]
        .concat()
        .into_iter()
        .filter(|b| b.is_ascii() && *b != 0)
        .collect();
    name.truncate(NAME.1);
    while name.last() == Some(&b'/') {
        name.pop();
    }
    name
}
