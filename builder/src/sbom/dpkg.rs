//! Debian packages from dpkg's database: `var/lib/dpkg/status`, and the one-stanza files of
//! `var/lib/dpkg/status.d/` that distroless images carry instead.

use super::{Ecosystem, Package};

/// The states of `Status:`'s third word whose files are on disk (dpkg(1), "PACKAGE STATES"):
/// not `not-installed` nor `config-files`.
const ON_DISK: [&str; 6] = [
    "installed",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
];

/// What a status file lists: its packages, and how many stanzas it skipped for lacking a name
/// or version.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub packages: Vec<Package>,
    pub malformed: usize,
}

/// Parses a status file in deb822 form (deb-control(5)): stanzas separated by blank lines,
/// `Field: value` lines, continuation lines starting with a space or tab. A stanza without
/// `Status:` (status.d files have none) counts as installed.
pub fn parse(text: &str, source: &str) -> Parsed {
    let mut out = Parsed::default();
    for stanza in stanzas(text) {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        if let Some(status) = field("Status")
            && !status
                .split_whitespace()
                .nth(2)
                .is_some_and(|s| ON_DISK.contains(&s))
        {
            continue;
        }
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            out.malformed += 1;
            continue;
        };
        out.packages.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.to_owned(),
            version: version.to_owned(),
            arch: field("Architecture").map(str::to_owned),
            license: None,
            supplier: field("Maintainer").map(str::to_owned),
            originator: None,
            source_package: None,
            source: source.to_owned(),
        });
    }
    out
}

/// The stanzas of a deb822 text, each as its fields in order; a continuation line without a
/// field before it is dropped.
pub fn stanzas(text: &str) -> Vec<Vec<(&str, String)>> {
    let mut all = Vec::new();
    let mut cur: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim(), v.trim().to_owned()));
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three stanzas as a bookworm status file has them, plus one removed package whose
    /// configuration files remain.
    const STATUS: &str = "\
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 341
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 12.4+deb12u5
Replaces: base, dpkg (<= 1.15.0), miscutils
Provides: base
Conffiles:
 /etc/debian_version 3cec6f1ec0e4d22ee8a7b1bf0ce15e93
 /etc/dpkg/origins/debian c47b6815f67ad1aeccb0d4529bd0b990
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 several important miscellaneous files.
Homepage: https://tracker.debian.org/pkg/base-files

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12986
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u7
Depends: libgcc-s1
Description: GNU C Library: Shared libraries

Package: tzdata
Status: deinstall ok config-files
Priority: required
Architecture: all
Version: 2024a-0+deb12u1

Package: libgcc-s1
Status: install ok half-configured
Architecture: amd64
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
";

    fn names(p: &Parsed) -> Vec<(&str, &str, Option<&str>)> {
        p.packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_deref()))
            .collect()
    }

    #[test]
    fn status_files() {
        type Row<'a> = (&'a str, &'a str, Option<&'a str>);
        let cases: &[(&str, &str, Vec<Row<'_>>, usize)] = &[
            (
                "bookworm excerpt",
                STATUS,
                vec![
                    ("base-files", "12.4+deb12u5", Some("amd64")),
                    ("libc6", "2.36-9+deb12u7", Some("amd64")),
                    ("libgcc-s1", "12.2.0-14", Some("amd64")),
                ],
                0,
            ),
            ("empty", "", vec![], 0),
            ("blank lines only", "\n\n \n\t\n", vec![], 0),
            (
                "status.d stanza without Status",
                "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
                vec![("tzdata", "2024a-0+deb12u1", Some("all"))],
                0,
            ),
            (
                "no version",
                "Package: x\nStatus: install ok installed\n\nPackage: y\nVersion: 1\n",
                vec![("y", "1", None)],
                1,
            ),
            ("no colon", "garbage line\nmore\n", vec![], 0),
            (
                "continuation first",
                " orphan\nPackage: a\nVersion: 1\n",
                vec![("a", "1", None)],
                0,
            ),
            ("empty values", "Package:\nVersion:\n", vec![], 1),
            (
                "status word missing",
                "Package: a\nVersion: 1\nStatus: install\n",
                vec![],
                0,
            ),
            ("binary junk", "\u{0}\u{1}:\u{2}\n\n\u{fffd}:", vec![], 2),
            (
                "CRLF",
                "Package: a\r\nVersion: 1\r\n\r\n",
                vec![("a", "1", None)],
                0,
            ),
        ];
        for (name, text, want, malformed) in cases {
            let p = parse(text, "var/lib/dpkg/status");
            assert_eq!(names(&p), *want, "{name}");
            assert_eq!(p.malformed, *malformed, "{name}");
        }
    }

    #[test]
    fn maintainer_is_the_supplier() {
        let p = parse(STATUS, "var/lib/dpkg/status");
        assert_eq!(
            p.packages[1].supplier.as_deref(),
            Some("GNU Libc Maintainers <debian-glibc@lists.debian.org>")
        );
    }
}
