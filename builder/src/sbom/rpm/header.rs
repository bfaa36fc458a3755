//! rpm header blobs, one per installed package in rpm's database, parsed with every offset and
//! count checked against the blob: the image, and so the blob, is untrusted.
//!
//! The format (rpm's docs/manual/format.md, "The Header Structure"; lib/header.c, headerImport):
//! a big-endian intro of the index entry count and the data length, then that many 16-byte index
//! entries `{tag, type, offset, count}`, then the data store the offsets point into. The database
//! keeps the header without its 8-byte magic. Its first entry is usually the immutable region
//! (tag 63), whose trailer lives in the data store; the tags read here are plain entries either
//! way, so the region needs no special case.

use thiserror::Error;

/// The tags the SBOM reads (rpm's include/rpm/rpmtag.h).
pub const NAME: u32 = 1000;
pub const VERSION: u32 = 1001;
pub const RELEASE: u32 = 1002;
pub const EPOCH: u32 = 1003;
pub const VENDOR: u32 = 1011;
pub const LICENSE: u32 = 1014;
pub const ARCH: u32 = 1022;
pub const SOURCERPM: u32 = 1044;

/// Entry types (rpmTagType) whose data is NUL-terminated strings.
const STRING: u32 = 6;
const STRING_ARRAY: u32 = 8;
const I18NSTRING: u32 = 9;
const INT32: u32 = 4;

/// rpm's own sanity limits (lib/header_internal.h, hdrchkTags and hdrchkData): at most 65535
/// index entries and 256 MiB of data.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;
const ENTRY: usize = 16;
/// The longest string taken from a header: a licence or vendor is never near it, and a blob that
/// claims one larger is not trusted to name a package.
const MAX_STRING: usize = 64 << 10;

/// Why a header blob cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("header of {0} bytes is shorter than its 8-byte intro")]
    Short(usize),
    #[error("header claims {0} index entries, more than rpm allows")]
    TooManyEntries(u32),
    #[error("header claims {0} data bytes, more than rpm allows")]
    TooMuchData(u32),
    #[error("header claims {want} bytes but the blob has {have}")]
    Truncated { want: usize, have: usize },
    #[error("tag {tag}: {what}")]
    Entry { tag: u32, what: &'static str },
}

/// One index entry, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: u32,
    count: u32,
}

/// A header blob whose intro has been checked: the index and the data store are both inside it.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks the intro of `blob` against its length and rpm's limits. Bytes after the data
    /// store are ignored, as rpm ignores them.
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
            return Err(HeaderError::Short(blob.len()));
        };
        if il > MAX_ENTRIES {
            return Err(HeaderError::TooManyEntries(il));
        }
        if dl > MAX_DATA {
            return Err(HeaderError::TooMuchData(dl));
        }
        // Both are bounded above, so this cannot overflow even on 32-bit targets.
        let index_end = 8 + il as usize * ENTRY;
        let want = index_end + dl as usize;
        if want > blob.len() {
            return Err(HeaderError::Truncated {
                want,
                have: blob.len(),
            });
        }
        Ok(Header {
            index: &blob[8..index_end],
            data: &blob[index_end..want],
        })
    }

    /// The first entry for `tag`; a later duplicate is ignored, as rpm finds the first.
    fn entry(&self, tag: u32) -> Option<Entry> {
        self.index.chunks_exact(ENTRY).find_map(|e| {
            let entry = Entry {
                tag: be32(e, 0)?,
                kind: be32(e, 4)?,
                offset: be32(e, 8)?,
                count: be32(e, 12)?,
            };
            (entry.tag == tag).then_some(entry)
        })
    }

    /// The string of `tag` (the first of an array or of a translated string), lossily decoded;
    /// None when the header has no such tag.
    pub fn string(&self, tag: u32) -> Result<Option<String>, HeaderError> {
        let Some(e) = self.entry(tag) else {
            return Ok(None);
        };
        let bad = |what| HeaderError::Entry { tag, what };
        if !matches!(e.kind, STRING | STRING_ARRAY | I18NSTRING) {
            return Err(bad("not a string"));
        }
        if e.count == 0 {
            return Err(bad("an empty string array"));
        }
        let start = e.offset as usize;
        let rest = self
            .data
            .get(start..)
            .filter(|r| !r.is_empty())
            .ok_or(bad("offset past the data"))?;
        let rest = &rest[..rest.len().min(MAX_STRING + 1)];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(bad("string not terminated within the data, or too long"))?;
        Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()))
    }

    /// The first number of an INT32 `tag`; None when the header has no such tag.
    pub fn int32(&self, tag: u32) -> Result<Option<u32>, HeaderError> {
        let Some(e) = self.entry(tag) else {
            return Ok(None);
        };
        let bad = |what| HeaderError::Entry { tag, what };
        if e.kind != INT32 {
            return Err(bad("not a 32-bit integer"));
        }
        if e.count == 0 {
            return Err(bad("an empty integer array"));
        }
        be32(self.data, e.offset as usize)
            .map(Some)
            .ok_or(bad("offset past the data"))
    }
}

/// The big-endian u32 at `at`, if all four bytes are there.
fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header rpm 4.18 stored for `testdata/rpm-header.spec`, built with rpmbuild and
    /// installed with `rpm --root`: the Packages row of its rpmdb.sqlite.
    const REAL: &[u8] = include_bytes!("../testdata/rpm-header.bin");

    /// A header of `entries` over `data`.
    fn header(entries: &[(u32, u32, u32, u32)], data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as u32).to_be_bytes());
        b.extend((data.len() as u32).to_be_bytes());
        for (tag, kind, offset, count) in entries {
            for v in [tag, kind, offset, count] {
                b.extend(v.to_be_bytes());
            }
        }
        b.extend(data);
        b
    }

    #[test]
    fn a_real_header() {
        let h = Header::parse(REAL).unwrap();
        let s = |tag| h.string(tag).unwrap();
        assert_eq!(s(NAME).as_deref(), Some("cairn-hello"));
        assert_eq!(s(VERSION).as_deref(), Some("1.2.3"));
        assert_eq!(s(RELEASE).as_deref(), Some("4.fc39"));
        assert_eq!(h.int32(EPOCH).unwrap(), Some(2));
        assert_eq!(s(ARCH).as_deref(), Some("noarch"));
        assert_eq!(
            s(LICENSE).as_deref(),
            Some("MIT AND (Apache-2.0 OR BSD-3-Clause)")
        );
        assert_eq!(s(VENDOR).as_deref(), Some("Fedora Project"));
        assert_eq!(
            s(SOURCERPM).as_deref(),
            Some("cairn-hello-1.2.3-4.fc39.src.rpm")
        );
        // The summary is a translated string: its first is the default locale's.
        assert_eq!(s(1004).as_deref(), Some("A test package"));
        assert_eq!(h.string(9999).unwrap(), None);
    }

    #[test]
    fn malformed_headers() {
        let e = |what| HeaderError::Entry { tag: NAME, what };
        type Case = (&'static str, Vec<u8>, Result<Option<String>, HeaderError>);
        let cases: Vec<Case> = vec![
            ("empty", vec![], Err(HeaderError::Short(0))),
            (
                "half an intro",
                vec![0, 0, 0, 1, 0],
                Err(HeaderError::Short(5)),
            ),
            (
                "too many entries",
                [0x00, 0x01, 0x00, 0x00, 0, 0, 0, 0].to_vec(),
                Err(HeaderError::TooManyEntries(0x10000)),
            ),
            (
                "too much data",
                [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff].to_vec(),
                Err(HeaderError::TooMuchData(0xffff_ffff)),
            ),
            (
                "index past the blob",
                [0, 0, 0, 2, 0, 0, 0, 0, 1, 2, 3].to_vec(),
                Err(HeaderError::Truncated { want: 40, have: 11 }),
            ),
            (
                "data past the blob",
                header(&[(NAME, STRING, 0, 1)], b"ab\0")[..26].to_vec(),
                Err(HeaderError::Truncated { want: 27, have: 26 }),
            ),
            ("no entries", header(&[], b""), Ok(None)),
            (
                "a plain string",
                header(&[(NAME, STRING, 3, 1)], b"xy\0abc\0"),
                Ok(Some("abc".into())),
            ),
            (
                "invalid UTF-8 is replaced",
                header(&[(NAME, STRING, 0, 1)], b"a\xffb\0"),
                Ok(Some("a\u{fffd}b".into())),
            ),
            (
                "the first duplicate wins",
                header(&[(NAME, STRING, 0, 1), (NAME, STRING, 2, 1)], b"a\0b\0"),
                Ok(Some("a".into())),
            ),
            (
                "offset past the data",
                header(&[(NAME, STRING, 4, 1)], b"abc\0"),
                Err(e("offset past the data")),
            ),
            (
                "negative offset",
                header(&[(NAME, STRING, 0xffff_fff0, 1)], b"abc\0"),
                Err(e("offset past the data")),
            ),
            (
                "unterminated",
                header(&[(NAME, STRING, 0, 1)], b"abc"),
                Err(e("string not terminated within the data, or too long")),
            ),
            (
                "too long",
                header(
                    &[(NAME, STRING, 0, 1)],
                    &[&[b'a'; MAX_STRING + 1][..], b"\0"].concat(),
                ),
                Err(e("string not terminated within the data, or too long")),
            ),
            (
                "not a string",
                header(&[(NAME, INT32, 0, 1)], b"abc\0"),
                Err(e("not a string")),
            ),
            (
                "zero count",
                header(&[(NAME, STRING_ARRAY, 0, 0)], b"abc\0"),
                Err(e("an empty string array")),
            ),
            (
                "a string the data ends on",
                header(&[(NAME, STRING, 0, 1)], b"\0"),
                Ok(Some(String::new())),
            ),
        ];
        for (name, blob, want) in cases {
            let got = Header::parse(&blob).and_then(|h| h.string(NAME));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn integers() {
        let e = |what| HeaderError::Entry { tag: EPOCH, what };
        type Case = (&'static str, Vec<u8>, Result<Option<u32>, HeaderError>);
        let cases: Vec<Case> = vec![
            ("absent", header(&[], b""), Ok(None)),
            (
                "one",
                header(&[(EPOCH, INT32, 4, 1)], &[0, 0, 0, 0, 0, 0, 1, 2]),
                Ok(Some(258)),
            ),
            (
                "straddles the end",
                header(&[(EPOCH, INT32, 2, 1)], &[0, 0, 0, 7]),
                Err(e("offset past the data")),
            ),
            (
                "offset overflows",
                header(&[(EPOCH, INT32, u32::MAX, 1)], &[0, 0, 0, 7]),
                Err(e("offset past the data")),
            ),
            (
                "a string",
                header(&[(EPOCH, STRING, 0, 1)], b"1\0"),
                Err(e("not a 32-bit integer")),
            ),
            (
                "zero count",
                header(&[(EPOCH, INT32, 0, 0)], &[0, 0, 0, 7]),
                Err(e("an empty integer array")),
            ),
        ];
        for (name, blob, want) in cases {
            let got = Header::parse(&blob).and_then(|h| h.int32(EPOCH));
            assert_eq!(got, want, "{name}");
        }
    }

    /// Random byte flips, truncations and extensions of a real header never panic, and never
    /// read a string from outside the blob.
    #[test]
    fn mutations_never_panic() {
        // xorshift64*: deterministic, so a failure is reproducible from its round.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for round in 0..20_000 {
            let mut blob = REAL.to_vec();
            let flips = 1 + next() % 8;
            for _ in 0..flips {
                let at = (next() % blob.len() as u64) as usize;
                // Bias the flips towards the intro and index, where the offsets live.
                let at = if next() % 2 == 0 {
                    at % (8 + 62 * 16)
                } else {
                    at
                };
                blob[at] = next() as u8;
            }
            match next() % 4 {
                0 => blob.truncate((next() % blob.len() as u64) as usize),
                1 => blob.extend((0..next() % 64).map(|_| next() as u8)),
                _ => {}
            }
            let Ok(h) = Header::parse(&blob) else {
                continue;
            };
            for tag in [NAME, VERSION, RELEASE, VENDOR, LICENSE, ARCH, SOURCERPM] {
                if let Ok(Some(s)) = h.string(tag) {
                    assert!(s.len() <= 3 * blob.len(), "round {round}");
                }
            }
            let _ = h.int32(EPOCH);
        }
    }
}
