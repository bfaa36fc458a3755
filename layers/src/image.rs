//! Image documents: the config (OCI fields plus the Docker ones OCI lacks), manifests and
//! indexes, with the media types cairn reads and writes.
//!
//! The config is cairn's own type rather than oci-spec's because Docker's `Healthcheck`,
//! `Shell`, `OnBuild` and `ArgsEscaped` must survive a round trip (BuildKit writes them into
//! `config`), and unknown fields are kept too. Manifests and indexes use oci-spec. Documents
//! read from elsewhere are never re-serialised: their bytes are kept so digests stay stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation that names an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How many indexes may nest below a name (or a layout's `index.json`). Real images nest one
/// (a multi-platform index); a long chain only serves to exhaust the stack or the disk.
pub const MAX_INDEX_DEPTH: usize = 8;

/// Whether a media type is an image index's (OCI) or manifest list's (Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether a media type is an image manifest's (OCI, or Docker's schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Docker's health check settings (`HEALTHCHECK`), durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The runtime defaults of an image (`config` in the image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "OnBuild")]
    pub on_build: Option<Vec<String>>,
    /// Fields cairn does not model, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `{}`: the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (OCI image-spec config.md, plus Docker's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// An empty config for this machine's platform (`FROM scratch`).
    pub fn scratch() -> ImageConfig {
        ImageConfig {
            created: None,
            author: None,
            architecture: host_architecture().to_owned(),
            os: "linux".to_owned(),
            variant: None,
            config: ContainerConfig::default(),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: Vec::new(),
            },
            history: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: what.to_owned(),
            source,
        })
    }

    /// The canonical bytes cairn writes: compact JSON with fields in a fixed order.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these plain types cannot fail; fall back to empty rather than panic.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The architecture name OCI uses for the machine cairn runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    }
}

/// A content descriptor (OCI descriptor.md), the fields cairn uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI, or Docker's v2 schema 2, which has the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A new OCI manifest.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: what.to_owned(),
            source,
        })?;
        if m.schema_version != 2 {
            return Err(Error::invalid(
                what,
                format!("schemaVersion {} (expected 2)", m.schema_version),
            ));
        }
        Ok(m)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Index> {
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: what.to_owned(),
            source,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The current time, or `SOURCE_DATE_EPOCH`'s, as RFC 3339 in UTC.
pub fn timestamp(epoch: Option<i64>) -> String {
    let ts = match epoch.and_then(|e| jiff::Timestamp::from_second(e).ok()) {
        Some(t) => t,
        None => jiff::Timestamp::now(),
    };
    ts.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_keeps_docker_fields_and_unknowns() {
        let src = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000},"Shell":["/bin/bash","-c"],"OnBuild":["RUN x"],"ArgsEscaped":true,"Custom":1},"rootfs":{"type":"layers","diff_ids":[]},"future":{"x":1}}"#;
        let c = ImageConfig::from_slice(src.as_bytes(), "config").unwrap();
        assert_eq!(
            c.config.shell.as_deref(),
            Some(&["/bin/bash".to_owned(), "-c".to_owned()][..])
        );
        assert_eq!(
            c.config.healthcheck.as_ref().unwrap().interval,
            30_000_000_000
        );
        let back: Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        let orig: Value = serde_json::from_str(src).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(Some(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert!(timestamp(None).ends_with('Z'));
    }
}
