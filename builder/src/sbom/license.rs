//! License fields as SPDX license expressions, when they are ones: package metadata often holds
//! free text ("BSD", "Apache 2.0", a whole license), which a document may not put where an
//! expression goes (SPDX 2.3, annex D).

/// The SPDX license list identifiers packages commonly declare (license list 3.x); an id not
/// here makes the field free text, kept as a comment.
const LICENSES: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "BlueOak-1.0.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC-PDDC",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "curl",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.2",
    "FTL",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "MPL-2.0-no-copyleft-exception",
    "MS-PL",
    "NCSA",
    "OFL-1.1",
    "OpenSSL",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Python-2.0.1",
    "Ruby",
    "Sleepycat",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// Exception identifiers that may follow `WITH`.
const EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "Font-exception-2.0",
    "GCC-exception-3.1",
    "LLVM-exception",
    "OpenSSL-exception",
];

/// `text` as an SPDX license expression with the list's spelling of each id (ids match without
/// regard to case, SPDX 2.3 annex D.2), or None when it is not one this module knows.
pub fn expression(text: &str) -> Option<String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0usize;
    // Whether an operand is expected next (at the start, after `(` or an operator).
    let mut operand = true;
    let mut after_with = false;
    for token in spaced.split_whitespace() {
        match token {
            "(" if operand => depth += 1,
            ")" if !operand && depth > 0 => depth -= 1,
            "AND" | "OR" | "WITH" if !operand => {
                after_with = token == "WITH";
                operand = true;
            }
            id if operand => {
                let known = if after_with {
                    find(EXCEPTIONS, id)
                } else {
                    license_id(id)
                };
                out.push(known?);
                operand = false;
                after_with = false;
                continue;
            }
            _ => return None,
        }
        out.push(token.to_owned());
    }
    if operand || depth != 0 {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

fn license_id(id: &str) -> Option<String> {
    if let Some(rest) = id.strip_prefix("LicenseRef-") {
        let ok = !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        return ok.then(|| id.to_owned());
    }
    match id.strip_suffix('+') {
        Some(base) => find(LICENSES, base).map(|b| format!("{b}+")),
        None => find(LICENSES, id),
    }
}

fn find(list: &[&str], id: &str) -> Option<String> {
    list.iter()
        .find(|known| known.eq_ignore_ascii_case(id))
        .map(|k| (*k).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let cases: &[(&str, Option<&str>)] = &[
            ("MIT", Some("MIT")),
            ("mit", Some("MIT")),
            (" Apache-2.0 ", Some("Apache-2.0")),
            ("MIT OR Apache-2.0", Some("MIT OR Apache-2.0")),
            ("(MIT OR Apache-2.0)", Some("(MIT OR Apache-2.0)")),
            (
                "GPL-2.0-or-later WITH Classpath-exception-2.0",
                Some("GPL-2.0-or-later WITH Classpath-exception-2.0"),
            ),
            (
                "(BSD-3-Clause AND (MIT OR ISC))",
                Some("(BSD-3-Clause AND (MIT OR ISC))"),
            ),
            ("LGPL-2.1-only+", Some("LGPL-2.1-only+")),
            ("LicenseRef-custom.1", Some("LicenseRef-custom.1")),
            ("Apache 2.0", None),
            ("BSD", None),
            ("MIT OR", None),
            ("OR MIT", None),
            ("(MIT", None),
            ("MIT)", None),
            ("MIT ISC", None),
            ("MIT WITH Apache-2.0", None),
            ("MIT and ISC", None),
            ("", None),
            ("()", None),
            ("LicenseRef-", None),
            ("LicenseRef-a b", None),
            ("Permission is hereby granted, free of charge", None),
        ];
        for (text, want) in cases {
            assert_eq!(expression(text).as_deref(), *want, "{text:?}");
        }
    }
}
