//! Attestations (provenance, SBOM) as BuildKit stores them: in-toto statements in an
//! attestation manifest that an image index names beside the image it is about.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Descriptor, ImageConfig, Manifest, OCI_CONFIG, OCI_MANIFEST, Platform};
use crate::store::Store;

/// The media type of an in-toto statement blob.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The annotation of a statement layer that names its predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The index annotation that marks an entry as another's attestations ...
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// ... and names the image manifest it is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// SLSA provenance v1's predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// An SPDX document's predicate type.
pub const SPDX: &str = "https://spdx.dev/Document";
/// The in-toto statement type BuildKit writes (v0.1; v1 readers accept it).
const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// The most a statement read back may hold: a predicate is a document, not a layer.
const MAX_STATEMENT: u64 = 64 << 20;

/// A predicate to attest, before it names its subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub predicate_type: String,
    pub predicate: Value,
}

/// One statement read back from an index.
#[derive(Debug, Clone, PartialEq)]
pub struct Attestation {
    /// The image manifest the statement is about.
    pub subject: Digest,
    pub predicate_type: String,
    /// The whole in-toto statement.
    pub statement: Value,
}

/// Whether an index entry is an attestation manifest rather than an image.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST)
}

/// A package URL for an image: `pkg:docker/NAMESPACE/NAME@VERSION?platform=OS%2FARCH`, as
/// BuildKit names subjects and materials. `name` is as written (`busybox:1`,
/// `localhost:5000/app@sha256:..`); a name that is not a reference is kept as it is.
pub fn docker_purl(name: &str, platform: Option<&crate::platform::Platform>) -> String {
    let (repo, version) = match crate::reference::Reference::parse(name) {
        Ok(r) => {
            let version = match (r.digest(), r.tag()) {
                (Some(d), _) => d.to_string(),
                (None, Some(t)) => t.to_owned(),
                (None, None) => "latest".to_owned(),
            };
            (r.familiar_repository(), version)
        }
        Err(_) => (name.to_owned(), String::new()),
    };
    // purl encodes a colon outside the scheme and version separators (a registry port).
    let mut out = format!("pkg:docker/{}", repo.replace(':', "%3A"));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&version.replace(':', "%3A"));
    }
    if let Some(p) = platform {
        out.push_str("?platform=");
        out.push_str(&p.to_string().replace('/', "%2F"));
    }
    out
}

/// The in-toto statement of `predicate` about the image `subject`, named by each of `names`
/// (`_` when it has none, as the in-toto spec allows).
pub fn statement(names: &[String], subject: &Digest, predicate: &Predicate) -> Value {
    let digest = json!({ subject.algorithm(): subject.hex() });
    let subjects: Vec<Value> = if names.is_empty() {
        vec![json!({ "name": "_", "digest": digest })]
    } else {
        names
            .iter()
            .map(|n| json!({ "name": n, "digest": digest }))
            .collect()
    };
    json!({
        "_type": STATEMENT_V01,
        "predicateType": predicate.predicate_type,
        "subject": subjects,
        "predicate": predicate.predicate,
    })
}

impl Store {
    /// Stores the attestation manifest of `statements` about the image `image` and returns
    /// its index entry: `unknown/unknown` platform, annotated with the image's digest. The
    /// config is an empty image config (readers ignore it); each statement is a layer whose
    /// diff ID is its own digest.
    pub fn put_attestations(&self, image: &Descriptor, statements: &[Value]) -> Result<Descriptor> {
        let mut layers = Vec::new();
        let mut config = ImageConfig::scratch();
        config.architecture = "unknown".into();
        config.os = "unknown".into();
        for s in statements {
            let bytes = serde_json::to_vec(s).map_err(|source| Error::Json {
                what: "an in-toto statement".into(),
                source,
            })?;
            let digest = self.put_blob(&bytes)?;
            let predicate_type = s["predicateType"].as_str().unwrap_or_default().to_owned();
            config.rootfs.diff_ids.push(digest.clone());
            layers.push(Descriptor {
                media_type: IN_TOTO.into(),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: BTreeMap::from([(PREDICATE_TYPE.to_owned(), predicate_type)]),
            });
        }
        let config_bytes = config.to_bytes();
        let config = Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: self.put_blob(&config_bytes)?,
            size: config_bytes.len() as u64,
            platform: None,
            annotations: BTreeMap::new(),
        };
        let bytes = Manifest::new(config, layers).to_bytes();
        Ok(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: self.put_blob(&bytes)?,
            size: bytes.len() as u64,
            platform: Some(Platform {
                architecture: "unknown".into(),
                os: "unknown".into(),
                variant: None,
            }),
            annotations: BTreeMap::from([
                (REFERENCE_DIGEST.to_owned(), image.digest.to_string()),
                (REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned()),
            ]),
        })
    }

    /// Every in-toto statement the index `d` holds (none for an image manifest), in index
    /// order. A statement layer of another media type is skipped, as readers must.
    pub fn attestations(&self, d: &Descriptor) -> Result<Vec<Attestation>> {
        if !crate::image::is_index(&d.media_type) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in self.index(d)?.manifests {
            if !is_attestation(&entry) || !self.has_blob(&entry.digest) {
                continue;
            }
            let what = format!("attestation manifest {}", entry.digest);
            let subject = entry
                .annotations
                .get(REFERENCE_DIGEST)
                .and_then(|s| s.parse::<Digest>().ok())
                .ok_or_else(|| {
                    Error::invalid(&what, format!("no valid {REFERENCE_DIGEST} annotation"))
                })?;
            let manifest = Manifest::from_slice(&self.read_blob(&entry.digest)?, &what)?;
            for layer in manifest.layers.iter().filter(|l| l.media_type == IN_TOTO) {
                if layer.size > MAX_STATEMENT {
                    return Err(Error::invalid(
                        &what,
                        format!("statement {} is {} bytes", layer.digest, layer.size),
                    ));
                }
                let statement: Value = serde_json::from_slice(&self.read_blob(&layer.digest)?)
                    .map_err(|source| Error::Json {
                        what: format!("in-toto statement {}", layer.digest),
                        source,
                    })?;
                out.push(Attestation {
                    subject: subject.clone(),
                    predicate_type: statement["predicateType"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    statement,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Index;
    use crate::test_support::{one_layer_image, temp_store};

    #[test]
    fn purls_name_images_as_buildkit_does() {
        let amd64 = crate::platform::Platform::parse("linux/amd64").unwrap();
        let cases = [
            ("busybox", None, "pkg:docker/busybox@latest"),
            (
                "busybox:1.36",
                Some(&amd64),
                "pkg:docker/busybox@1.36?platform=linux%2Famd64",
            ),
            (
                "localhost:5000/team/app:v2",
                None,
                "pkg:docker/localhost%3A5000/team/app@v2",
            ),
        ];
        for (name, platform, want) in cases {
            assert_eq!(docker_purl(name, platform), want, "{name}");
        }
        let pinned = format!("busybox@sha256:{}", "a".repeat(64));
        assert_eq!(
            docker_purl(&pinned, None),
            format!("pkg:docker/busybox@sha256%3A{}", "a".repeat(64))
        );
    }

    #[test]
    fn statements_round_trip_through_an_index() {
        let (_dir, store) = temp_store();
        let image = one_layer_image(&store, None, b"layer");
        let predicate = Predicate {
            predicate_type: SLSA_PROVENANCE_V1.into(),
            predicate: json!({"buildDefinition": {"buildType": "x"}}),
        };
        let names = vec!["pkg:docker/app@1".to_owned()];
        let s = statement(&names, &image.digest, &predicate);
        assert_eq!(s["subject"][0]["digest"]["sha256"], image.digest.hex());
        let entry = store
            .put_attestations(&image, std::slice::from_ref(&s))
            .unwrap();
        assert!(is_attestation(&entry));
        assert!(!is_attestation(&image));
        let index = store
            .put_index(&Index::new(vec![image.clone(), entry.clone()]))
            .unwrap();
        let found = store.attestations(&index).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subject, image.digest);
        assert_eq!(found[0].predicate_type, SLSA_PROVENANCE_V1);
        assert_eq!(found[0].statement, s);
        // The host's image is still the image, never the attestation.
        let picked = store.pick_image(&index, None).unwrap();
        assert_eq!(picked.digest, image.digest);
        // The attestation manifest is a valid image manifest whose layers match its config.
        let read = store.image(&entry).unwrap();
        assert_eq!(
            read.config.rootfs.diff_ids.len(),
            read.manifest.layers.len()
        );
        // An image manifest has no attestations.
        assert!(store.attestations(&image).unwrap().is_empty());
    }
}
