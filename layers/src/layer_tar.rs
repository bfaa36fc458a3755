//! The one ustar/PAX encoder every layer tar is written with (RUN diffs, COPY, ADD, WORKDIR).

use std::fmt::Display;
use std::io::{BufWriter, Read, Write};

use crate::error::{Error, Result};

/// A tar block: every header and every content run is padded to it.
pub(crate) const BLOCK: usize = 512;

/// The zero bytes that pad `size` bytes of content to a whole block.
fn padding(size: u64) -> usize {
    // The remainder is below 512, so the cast cannot truncate.
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Extended attributes of one entry: names (without `SCHILY.xattr.`) and values.
pub type Xattrs = [(Vec<u8>, Vec<u8>)];

/// The header fields of one entry, already in container terms.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    /// The tar path (`dir/` for a directory).
    pub path: &'a [u8],
    pub link: &'a [u8],
    pub flag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub dev: (u32, u32),
    pub xattrs: &'a Xattrs,
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
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
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
pub(crate) fn encode(h: &Header<'_>) -> std::result::Result<Vec<u8>, String> {
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

/// Why `path` cannot name a layer entry, if it cannot.
fn bad_name(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        Some("the name is empty")
    } else if path.starts_with(b"/") {
        Some("the name is absolute")
    } else if path.contains(&0) {
        Some("the name holds a NUL byte")
    } else if path.split(|&b| b == b'/').any(|c| c == b"..") {
        Some("the name climbs with `..`")
    } else {
        None
    }
}

/// Owner, mode and time of an entry, already in container terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Meta {
    /// A listed directory's metadata; ids or a time a header cannot hold are an error.
    pub fn of_dir(path: &str, m: &crate::listing::DirMeta) -> Result<Meta> {
        let bad = |reason: String| Error::invalid(format!("layer entry for {path}/"), reason);
        Ok(Meta {
            mode: m.mode,
            uid: u32::try_from(m.uid).map_err(|_| bad(format!("uid {} is too large", m.uid)))?,
            gid: u32::try_from(m.gid).map_err(|_| bad(format!("gid {} is too large", m.gid)))?,
            mtime: i64::try_from(m.mtime)
                .map_err(|_| bad(format!("mtime {} is too large", m.mtime)))?,
        })
    }
}

/// A layer tar being written: entries in the caller's order, then the end-of-archive blocks.
pub struct Writer<W: Write> {
    // Headers are 512-byte writes; buffer them whatever `W` is.
    out: BufWriter<W>,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out: BufWriter::with_capacity(128 * 1024, out),
        }
    }

    /// One entry's headers; an unencodable one is an error naming `what`, and so is a name
    /// that is absolute, empty or climbs with `..`: every layer names its entries below the
    /// root, whatever the caller got wrong.
    pub(crate) fn header(&mut self, h: &Header<'_>, what: impl Display) -> Result<()> {
        let invalid = |reason: String| Error::invalid(format!("layer entry for {what}"), reason);
        if let Some(reason) = bad_name(h.path) {
            return Err(invalid(reason.to_owned()));
        }
        self.data(&encode(h).map_err(invalid)?)
    }

    /// Raw bytes: content after its header (then [`Writer::pad`]).
    pub(crate) fn data(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::stream("write the layer tar", e))
    }

    /// Pads `size` bytes of content to a whole block.
    pub(crate) fn pad(&mut self, size: u64) -> Result<()> {
        self.data(&[0; BLOCK][..padding(size)])
    }

    /// A directory at `path` (without its trailing `/`, which the entry gets).
    pub fn dir(&mut self, path: &[u8], meta: Meta, xattrs: &Xattrs) -> Result<()> {
        let path = [path, b"/"].concat();
        self.plain(&path, b'5', &[], meta, 0, xattrs)
    }

    /// A regular file of exactly `size` bytes read from `content`.
    pub fn file(
        &mut self,
        path: &[u8],
        meta: Meta,
        xattrs: &Xattrs,
        size: u64,
        content: impl Read,
    ) -> Result<()> {
        self.plain(path, b'0', &[], meta, size, xattrs)?;
        let copied = std::io::copy(&mut content.take(size), &mut self.out).map_err(|e| {
            let action = format!("copy {} into the layer tar", String::from_utf8_lossy(path));
            Error::stream(action, e)
        })?;
        if copied != size {
            return Err(Error::invalid(
                format!("layer entry for {}", String::from_utf8_lossy(path)),
                format!("content is {copied} bytes, not the {size} its header says"),
            ));
        }
        self.pad(size)
    }

    /// A symlink to `target`, kept byte for byte.
    pub fn symlink(
        &mut self,
        path: &[u8],
        meta: Meta,
        xattrs: &Xattrs,
        target: &[u8],
    ) -> Result<()> {
        self.plain(path, b'2', target, meta, 0, xattrs)
    }

    /// A hard link to the entry already written at `target` (no xattrs: they belong to the
    /// shared inode, written with the first name).
    pub fn hardlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<()> {
        if let Some(reason) = bad_name(target) {
            let what = format!("layer entry for {}", String::from_utf8_lossy(path));
            return Err(Error::invalid(what, format!("hard link target: {reason}")));
        }
        self.plain(path, b'1', target, meta, 0, &[])
    }

    /// A whiteout or opaque marker: an empty regular file, mode 0, owner 0:0.
    pub fn whiteout(&mut self, path: &[u8], mtime: i64) -> Result<()> {
        let meta = Meta {
            mtime,
            ..Meta::default()
        };
        self.plain(path, b'0', &[], meta, 0, &[])
    }

    fn plain(
        &mut self,
        path: &[u8],
        flag: u8,
        link: &[u8],
        meta: Meta,
        size: u64,
        xattrs: &Xattrs,
    ) -> Result<()> {
        let h = Header {
            path,
            link,
            flag,
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            size,
            mtime: meta.mtime,
            dev: (0, 0),
            xattrs,
        };
        self.header(&h, String::from_utf8_lossy(path))
    }

    /// Ends the archive and hands back the output.
    pub fn finish(mut self) -> Result<W> {
        self.data(&[0; 2 * BLOCK])?;
        self.out
            .into_inner()
            .map_err(|e| Error::stream("write the layer tar", e.into_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_written() {
        let meta = Meta {
            mode: 0o40755,
            uid: 1,
            gid: 2,
            mtime: 1_700_000_000,
        };
        let mut w = Writer::new(Vec::new());
        let xattrs = [(b"user.k".to_vec(), b"v".to_vec())];
        w.dir(b"d", meta, &[]).unwrap();
        w.file(b"d/f", meta, &xattrs, 3, &b"abcdef"[..]).unwrap();
        w.symlink(b"d/l", meta, &[], b"/x//./y").unwrap();
        w.hardlink(b"d/h", meta, b"d/f").unwrap();
        w.whiteout(b"d/.wh.gone", 0).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        let mut paxes = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            let pax: Vec<(String, Vec<u8>)> = match e.pax_extensions().unwrap() {
                Some(records) => records
                    .map(|r| r.unwrap())
                    .map(|r| (r.key().unwrap().to_owned(), r.value_bytes().to_vec()))
                    .collect(),
                None => Vec::new(),
            };
            paxes.push(pax);
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((e.path_bytes().into_owned(), h.mode().unwrap(), link, body));
        }
        let names: Vec<&[u8]> = seen.iter().map(|s| s.0.as_slice()).collect();
        assert_eq!(names, [&b"d/"[..], b"d/f", b"d/l", b"d/h", b"d/.wh.gone"]);
        // The file type bits never reach the mode field.
        assert_eq!(seen[0].1, 0o755);
        assert_eq!(seen[1].3, b"abc");
        assert_eq!(seen[2].2.as_deref(), Some(&b"/x//./y"[..]));
        assert_eq!(seen[4].1, 0);
        let xattr = ("SCHILY.xattr.user.k".to_owned(), b"v".to_vec());
        assert_eq!(paxes[1], [xattr]);
        assert!(
            paxes
                .iter()
                .enumerate()
                .all(|(i, p)| i == 1 || p.is_empty())
        );
    }

    #[test]
    fn names_outside_the_root_are_refused() {
        let cases: [(&[u8], bool); 8] = [
            (b"a\0b", false),
            (b"a/b", true),
            (b"a/..b/c", true),
            (b"...", true),
            (b"", false),
            (b"/etc/passwd", false),
            (b"../x", false),
            (b"a/../../x", false),
        ];
        for (name, ok) in cases {
            let mut w = Writer::new(Vec::new());
            let got = w.file(name, Meta::default(), &[], 0, std::io::empty());
            assert_eq!(got.is_ok(), ok, "{}", String::from_utf8_lossy(name));
        }
        let mut w = Writer::new(Vec::new());
        assert!(w.hardlink(b"h", Meta::default(), b"../f").is_err());
        assert!(w.symlink(b"s", Meta::default(), &[], b"../f").is_ok());
    }

    #[test]
    fn short_content_is_an_error() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file(b"f", Meta::default(), &[], 4, &b"ab"[..]).is_err());
    }
}
