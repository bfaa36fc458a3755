//! The report as an SPDX 2.3 JSON document (spdx.github.io/spdx-spec/v2.3): the image as the
//! described package, containing one package per installed package, and what was not covered
//! in the document's comment and annotations.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Ecosystem, Package, SbomReport, license};

/// The `Tool:` creator, and the annotator of the not-covered notes.
const TOOL: &str = concat!("Tool: cairn-", env!("CARGO_PKG_VERSION"));

/// An SPDX timestamp (`YYYY-MM-DDThh:mm:ssZ`) of `epoch` seconds, or of now: pass
/// `SOURCE_DATE_EPOCH` so that a rebuild writes the same document.
pub fn created(epoch: Option<i64>) -> String {
    let ts = epoch
        .and_then(|e| jiff::Timestamp::from_second(e).ok())
        .unwrap_or_else(jiff::Timestamp::now);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A document namespace unique to the image, and the same for the same image: its manifest
/// digest under a fixed prefix (the namespace is an identifier, never fetched).
pub fn document_namespace(image_digest: &str) -> String {
    format!(
        "https://spdx.org/spdxdocs/cairn/{}",
        image_digest.replace(':', "-")
    )
}

impl SbomReport {
    /// The SPDX 2.3 JSON document of this report: `name` for the document and the image
    /// package, `namespace` from [`document_namespace`], `created` from [`created`].
    pub fn to_spdx_json(&self, name: &str, namespace: &str, created: &str) -> Value {
        let os = self.os.as_ref();
        let image_id = "SPDXRef-Image";
        let mut packages = vec![json!({
            "SPDXID": image_id,
            "name": name,
            "versionInfo": self.image,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER",
            "comment": format!("the image {} for {}", self.image, self.platform),
        })];
        let mut relationships = vec![json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        })];
        for p in &self.packages {
            let purl = p.purl(os);
            let id = package_id(p, &purl);
            packages.push(package(p, &id, &purl));
            relationships.push(json!({
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
        let mut doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": name,
            "documentNamespace": namespace,
            "creationInfo": {
                "creators": [TOOL],
                "created": created,
            },
            "packages": packages,
            "relationships": relationships,
        });
        if !self.not_covered.is_empty() {
            let notes: Vec<String> = self
                .not_covered
                .iter()
                .map(|n| match &n.path {
                    Some(p) => format!("/{p}: {}", n.reason),
                    None => n.reason.clone(),
                })
                .collect();
            doc["comment"] = json!(format!("Not covered by this SBOM: {}", notes.join("; ")));
            doc["annotations"] = notes
                .iter()
                .map(|n| {
                    json!({
                        "annotator": TOOL,
                        "annotationDate": created,
                        "annotationType": "OTHER",
                        "comment": format!("not covered: {n}"),
                    })
                })
                .collect();
        }
        doc
    }
}

fn package(p: &Package, id: &str, purl: &str) -> Value {
    let declared = p.license.as_deref().and_then(license::expression);
    let mut v = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": declared.as_deref().unwrap_or("NOASSERTION"),
        "copyrightText": "NOASSERTION",
        "sourceInfo": match &p.source_package {
            Some(from) => format!(
                "{} metadata at /{}, built from {from}",
                kind(p.ecosystem),
                p.source
            ),
            None => format!("{} metadata at /{}", kind(p.ecosystem), p.source),
        },
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl,
        }],
    });
    if declared.is_none()
        && let Some(text) = &p.license
    {
        v["licenseComments"] = json!(format!("license as the metadata gives it: {text}"));
    }
    if let Some(s) = p.supplier.as_deref().and_then(actor) {
        // An rpm's vendor is the distribution or company ("Fedora Project", "Red Hat, Inc."),
        // never a maintainer.
        let s = match p.ecosystem {
            Ecosystem::Rpm => s.replacen("Person: ", "Organization: ", 1),
            _ => s,
        };
        v["supplier"] = json!(s);
    }
    if let Some(o) = p.originator.as_deref().and_then(actor) {
        v["originator"] = json!(o);
    }
    v
}

/// `Name <email>` as an SPDX actor, `Person: Name (email)`; None when there is no name.
fn actor(text: &str) -> Option<String> {
    let (name, email) = match text.split_once('<') {
        Some((n, rest)) => (n, rest.split('>').next().unwrap_or("")),
        None => (text, ""),
    };
    // Parentheses and newlines would break the actor's own syntax.
    let clean = |s: &str| {
        s.replace(['(', ')', '\n', '\r'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (name, email) = (clean(name.trim().trim_matches('"')), clean(email));
    match (name.is_empty(), email.is_empty()) {
        (true, true) => None,
        (true, false) => Some(format!("Person: {email} ({email})")),
        (false, true) => Some(format!("Person: {name}")),
        (false, false) => Some(format!("Person: {name} ({email})")),
    }
}

fn kind(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Deb => "dpkg",
        Ecosystem::Apk => "apk",
        Ecosystem::Rpm => "rpm",
        Ecosystem::Python => "Python",
        Ecosystem::Npm => "npm",
    }
}

/// An SPDX id (letters, digits, `.` and `-`) unique to the purl and the same on every run.
fn package_id(p: &Package, purl: &str) -> String {
    let name: String = p
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let hash = hex::encode(&Sha256::digest(purl.as_bytes())[..8]);
    format!(
        "SPDXRef-Package-{}-{name}-{hash}",
        kind(p.ecosystem).to_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "GNU Libc Maintainers <debian-glibc@lists.debian.org>",
                Some("Person: GNU Libc Maintainers (debian-glibc@lists.debian.org)"),
            ),
            ("Kenneth Reitz", Some("Person: Kenneth Reitz")),
            (
                "<a@example.com>",
                Some("Person: a@example.com (a@example.com)"),
            ),
            (
                "\"Guido (BDFL)\" <g@example.com>",
                Some("Person: Guido BDFL (g@example.com)"),
            ),
            ("  ", None),
        ];
        for (text, want) in cases {
            assert_eq!(actor(text).as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(created(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(created(Some(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(created(None).len(), "1970-01-01T00:00:00Z".len());
    }
}
