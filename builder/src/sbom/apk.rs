//! Alpine packages from apk's database, `lib/apk/db/installed`.

use super::{Ecosystem, Package};

/// Parses apk's installed database (apk-tools' "Package metadata" format): one stanza per
/// package, separated by blank lines, each line a one-letter field, a colon and its value
/// (`P:` name, `V:` version, `A:` arch, `L:` license, `m:` maintainer). Returns the packages
/// and how many stanzas lacked a name or version.
pub fn parse(text: &str, source: &str) -> (Vec<Package>, usize) {
    let mut packages = Vec::new();
    let mut malformed = 0;
    for stanza in text.split("\n\n") {
        let field = |letter: char| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(letter)?.strip_prefix(':'))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        if stanza.trim().is_empty() {
            continue;
        }
        let (Some(name), Some(version)) = (field('P'), field('V')) else {
            malformed += 1;
            continue;
        };
        packages.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.to_owned(),
            version: version.to_owned(),
            arch: field('A').map(str::to_owned),
            license: field('L').map(str::to_owned),
            supplier: field('m').map(str::to_owned),
            originator: None,
            source_package: None,
            source: source.to_owned(),
        });
    }
    (packages, malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stanzas of an alpine:3.19 image's database.
    const INSTALLED: &str = "\
C:Q1Ih0Oo4Tv0yGXyqOgSZxxF4WTXBE=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
I:663552
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705920424
c:4a8d2bd4a0a2fa2ac4ee2b6e6d8b2ff37d6d4a5d
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1lXUNW5dNhx0Z1hpa+lEHqzU0tFs=
R:libc.musl-x86_64.so.1

C:Q1DZQpAj9K0tT0CnHuRJ2Uaqf5J3I=
P:busybox
V:1.36.1-r15
A:x86_64
S:509715
I:922106
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1705929447
D:so:libc.musl-x86_64.so.1
F:bin
R:busybox
";

    #[test]
    fn installed_databases() {
        type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[(&str, &str, Vec<Row<'_>>, usize)] = &[
            (
                "alpine excerpt",
                INSTALLED,
                vec![
                    ("musl", "1.2.4_git20230717-r4", Some("x86_64"), Some("MIT")),
                    (
                        "busybox",
                        "1.36.1-r15",
                        Some("x86_64"),
                        Some("GPL-2.0-only"),
                    ),
                ],
                0,
            ),
            ("empty", "", vec![], 0),
            (
                "no version",
                "P:a\nA:x86_64\n\nP:b\nV:2\n",
                vec![("b", "2", None, None)],
                1,
            ),
            ("a value that is not the field", "PX:a\nV:1\n", vec![], 1),
            ("blank stanzas", "\n\n\n\n", vec![], 0),
            ("junk", "\u{0}\u{ff}\n:::\n\nP:\nV:\n", vec![], 2),
        ];
        for (name, text, want, malformed) in cases {
            let (p, m) = parse(text, "lib/apk/db/installed");
            let got: Vec<_> = p
                .iter()
                .map(|p| {
                    (
                        p.name.as_str(),
                        p.version.as_str(),
                        p.arch.as_deref(),
                        p.license.as_deref(),
                    )
                })
                .collect();
            assert_eq!(got, *want, "{name}");
            assert_eq!(m, *malformed, "{name}");
        }
    }
}
