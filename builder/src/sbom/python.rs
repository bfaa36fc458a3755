//! Python distributions from their installed metadata: `*.dist-info/METADATA` and
//! `*.egg-info` (a `PKG-INFO` file, or the file itself) in `site-packages`/`dist-packages`.

use super::{Ecosystem, Package};

/// Parses core metadata (packaging.python.org, "Core metadata specifications"): RFC 822
/// headers up to the first blank line, continuation lines indented. None when it names no
/// distribution or version.
pub fn parse(text: &str, source: &str) -> Option<Package> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim(), v.trim().to_owned()));
        }
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("UNKNOWN"))
    };
    let name = field("Name")?;
    let version = field("Version")?;
    // Metadata 2.4's License-Expression is SPDX; the older License is free text, which the
    // document keeps only when it is an SPDX expression too.
    let license = field("License-Expression").or_else(|| field("License"));
    let author = match (field("Author"), field("Author-email")) {
        (Some(a), Some(e)) if !e.contains('<') => Some(format!("{a} <{e}>")),
        (_, Some(e)) => Some(e.to_owned()),
        (Some(a), None) => Some(a.to_owned()),
        (None, None) => None,
    };
    Some(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_owned(),
        version: version.to_owned(),
        arch: None,
        license: license.map(str::to_owned),
        supplier: None,
        originator: author,
        source_package: None,
        source: source.to_owned(),
    })
}

/// The name purls use (purl-spec, "pypi"): lowercased, `_` as `-`.
pub fn purl_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The METADATA of requests 2.31.0's wheel, to its first blank line and a little beyond.
    const REQUESTS: &str = "\
Metadata-Version: 2.1
Name: requests
Version: 2.31.0
Summary: Python HTTP for Humans.
Home-page: https://requests.readthedocs.io
Author: Kenneth Reitz
Author-email: me@kennethreitz.org
License: Apache 2.0
Project-URL: Documentation, https://requests.readthedocs.io
Classifier: License :: OSI Approved :: Apache Software License
Requires-Python: >=3.7
Description-Content-Type: text/markdown
License-File: LICENSE
Requires-Dist: charset-normalizer (<4,>=2)

# Requests
Name: not-this
";

    /// Metadata 2.4 with an SPDX expression and an email-only author, as hatchling writes it.
    const MODERN: &str = "\
Metadata-Version: 2.4
Name: Typing_Extensions
Version: 4.12.2
Author-email: \"Guido van Rossum, Jukka Lehtosalo\" <levkivskyi@gmail.com>
License-Expression: PSF-2.0
License-File: LICENSE
";

    #[test]
    fn metadata_files() {
        type Want<'a> = Option<(&'a str, &'a str, Option<&'a str>, Option<&'a str>)>;
        let cases: &[(&str, &str, Want<'_>)] = &[
            (
                "requests wheel",
                REQUESTS,
                Some((
                    "requests",
                    "2.31.0",
                    Some("Apache 2.0"),
                    Some("Kenneth Reitz <me@kennethreitz.org>"),
                )),
            ),
            (
                "metadata 2.4",
                MODERN,
                Some((
                    "Typing_Extensions",
                    "4.12.2",
                    Some("PSF-2.0"),
                    Some("\"Guido van Rossum, Jukka Lehtosalo\" <levkivskyi@gmail.com>"),
                )),
            ),
            (
                "setuptools' UNKNOWN",
                "Name: x\nVersion: 1\nLicense: UNKNOWN\nAuthor: UNKNOWN\n",
                Some(("x", "1", None, None)),
            ),
            (
                "multi-line license",
                "Name: x\nVersion: 1\nLicense: MIT\n        with more text\n",
                Some(("x", "1", Some("MIT\nwith more text"), None)),
            ),
            ("no version", "Name: x\n", None),
            ("version after the body", "Name: x\n\nVersion: 1\n", None),
            ("empty", "", None),
            ("junk", "\u{0}\u{1}\u{2}:\n\t\u{ff}", None),
        ];
        for (name, text, want) in cases {
            let got = parse(text, "METADATA");
            let got = got.as_ref().map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.license.as_deref(),
                    p.originator.as_deref(),
                )
            });
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn purl_names() {
        for (name, want) in [
            ("requests", "requests"),
            ("Typing_Extensions", "typing-extensions"),
            ("zope.interface", "zope.interface"),
        ] {
            assert_eq!(purl_name(name), want);
        }
    }
}
