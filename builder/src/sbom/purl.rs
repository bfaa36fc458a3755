//! Package URLs (github.com/package-url/purl-spec): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`.

use super::{Ecosystem, OsRelease, Package};

/// The purl of `p`, with the distribution's qualifier from os-release for OS packages
/// (`distro=debian-12`, as syft and trivy write it).
pub fn of(p: &Package, os: Option<&OsRelease>) -> String {
    let distro_id = |default: &str| {
        os.and_then(|o| o.id.clone())
            .unwrap_or_else(|| default.to_owned())
    };
    let distro = os.and_then(OsRelease::distro);
    let (kind, namespace, name, mut qualifiers) = match p.ecosystem {
        Ecosystem::Deb => ("deb", Some(distro_id("debian")), p.name.clone(), vec![]),
        Ecosystem::Apk => ("apk", Some(distro_id("alpine")), p.name.clone(), vec![]),
        Ecosystem::Rpm => ("rpm", Some(distro_id("redhat")), p.name.clone(), vec![]),
        Ecosystem::Python => ("pypi", None, super::python::purl_name(&p.name), vec![]),
        Ecosystem::Npm => match p.name.split_once('/') {
            Some((scope, name)) if scope.starts_with('@') => {
                ("npm", Some(scope.to_owned()), name.to_owned(), vec![])
            }
            _ => ("npm", None, p.name.clone(), vec![]),
        },
    };
    let mut version = p.version.as_str();
    // The rpm type keeps the epoch out of the version, in its own qualifier (purl-spec,
    // PURL-TYPES.rst, "rpm"); Debian's stays in the version.
    if p.ecosystem == Ecosystem::Rpm
        && let Some((epoch, rest)) = version.split_once(':')
        && !epoch.is_empty()
        && epoch.bytes().all(|b| b.is_ascii_digit())
    {
        qualifiers.push(("epoch", epoch.to_owned()));
        version = rest;
    }
    if matches!(
        p.ecosystem,
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm
    ) {
        if let Some(arch) = &p.arch {
            qualifiers.push(("arch", arch.clone()));
        }
        if let Some(d) = distro {
            qualifiers.push(("distro", d));
        }
    }
    let mut out = format!("pkg:{kind}/");
    if let Some(ns) = namespace {
        // Type namespaces are lowercase for deb, apk and rpm (the spec's per-type rules).
        let ns = if kind == "npm" { ns } else { ns.to_lowercase() };
        out.push_str(&encode(&ns));
        out.push('/');
    }
    out.push_str(&encode(&name));
    out.push('@');
    out.push_str(&encode(version));
    // Qualifier keys sorted, as the spec's canonical form has them.
    qualifiers.sort();
    for (i, (k, v)) in qualifiers.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Percent-encodes all but the characters the spec leaves bare in a component: ASCII letters
/// and digits, `.-_~`, and `:` (which a Debian epoch holds).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(ecosystem: Ecosystem, name: &str, version: &str, arch: Option<&str>) -> Package {
        Package {
            ecosystem,
            name: name.into(),
            version: version.into(),
            arch: arch.map(Into::into),
            license: None,
            supplier: None,
            originator: None,
            source_package: None,
            source: String::new(),
        }
    }

    #[test]
    fn purls() {
        let debian = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\n");
        let alpine = OsRelease::parse("ID=alpine\nVERSION_ID=3.19.1\n");
        let fedora = OsRelease::parse("ID=fedora\nVERSION_ID=40\n");
        let rhel = OsRelease::parse("ID=\"rhel\"\nVERSION_ID=\"9.4\"\n");
        let cases: Vec<(Package, Option<&OsRelease>, &str)> = vec![
            (
                pkg(Ecosystem::Deb, "libc6", "2.36-9+deb12u7", Some("amd64")),
                Some(&debian),
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u7?arch=amd64&distro=debian-12",
            ),
            (
                pkg(Ecosystem::Deb, "libsystemd0", "1:252.22-1~deb12u1", None),
                None,
                "pkg:deb/debian/libsystemd0@1:252.22-1~deb12u1",
            ),
            (
                pkg(
                    Ecosystem::Apk,
                    "musl",
                    "1.2.4_git20230717-r4",
                    Some("x86_64"),
                ),
                Some(&alpine),
                "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
            ),
            (
                pkg(Ecosystem::Rpm, "bash", "5.2.26-3.fc40", Some("x86_64")),
                Some(&fedora),
                "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40",
            ),
            (
                pkg(
                    Ecosystem::Rpm,
                    "perl-Carp",
                    "1:1.54-502.fc40",
                    Some("noarch"),
                ),
                Some(&fedora),
                "pkg:rpm/fedora/perl-Carp@1.54-502.fc40?arch=noarch&distro=fedora-40&epoch=1",
            ),
            (
                pkg(Ecosystem::Rpm, "openssl-libs", "1:3.0.7-27.el9", None),
                Some(&rhel),
                "pkg:rpm/rhel/openssl-libs@3.0.7-27.el9?distro=rhel-9.4&epoch=1",
            ),
            (
                pkg(Ecosystem::Rpm, "gpg-pubkey", "x:1-2", None),
                None,
                "pkg:rpm/redhat/gpg-pubkey@x:1-2",
            ),
            (
                pkg(Ecosystem::Python, "Typing_Extensions", "4.12.2", None),
                Some(&debian),
                "pkg:pypi/typing-extensions@4.12.2",
            ),
            (
                pkg(Ecosystem::Npm, "@babel/code-frame", "7.22.13", None),
                None,
                "pkg:npm/%40babel/code-frame@7.22.13",
            ),
            (
                pkg(Ecosystem::Npm, "a b/c", "1 0", None),
                None,
                "pkg:npm/a%20b%2Fc@1%200",
            ),
        ];
        for (p, os, want) in cases {
            assert_eq!(of(&p, os), want);
        }
    }
}
