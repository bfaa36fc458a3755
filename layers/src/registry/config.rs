//! cairn's registry config file (mirrors, rewrites, insecure registries), shaped like
//! containers-registries.conf v2, and the endpoints it gives a reference.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::Reference;

/// The parsed config file; the default (no file) has no entries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// The file it was read from, for messages.
    pub path: Option<PathBuf>,
    pub registries: Vec<RegistryEntry>,
}

/// The file's shape. Keys cairn does not use (`unqualified-search-registries`, ...) are
/// allowed, so a copy of an existing registries.conf works.
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RegistryEntry {
    /// The references it applies to: a registry host, or host/path prefix (defaults to
    /// `location`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Where references under the prefix really live (the prefix is rewritten to this).
    #[serde(default)]
    pub location: Option<String>,
    /// Plain HTTP, or HTTPS with any certificate, is allowed for `location`.
    #[serde(default)]
    pub insecure: bool,
    /// Pulls and pushes under the prefix are refused.
    #[serde(default)]
    pub blocked: bool,
    /// Tried in order before `location`, for pulls only.
    #[serde(default)]
    pub mirror: Vec<MirrorEntry>,
}

/// One `[[registry.mirror]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MirrorEntry {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One place to fetch a repository from: a registry host and the repository's path there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as references spell it (`docker.io` for Docker Hub).
    pub domain: String,
    pub path: String,
    /// The config allows plain HTTP or unverified TLS here.
    pub insecure: bool,
    /// A mirror rather than the repository's own location.
    pub mirror: bool,
}

impl Endpoint {
    /// `domain/path`, as messages name a repository.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl RegistryConfig {
    /// The config file's path: `$CAIRN_CONFIG`, else `$XDG_CONFIG_HOME/cairn/config.toml`,
    /// else `~/.config/cairn/config.toml`.
    pub fn default_path() -> Option<PathBuf> {
        let var = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("CAIRN_CONFIG")
            .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("cairn/config.toml")))
            .or_else(|| var("HOME").map(|h| h.join(".config/cairn/config.toml")))
    }

    /// Reads the config from its default path; no file means no entries, but a file named by
    /// `CAIRN_CONFIG` must exist.
    pub fn load() -> Result<RegistryConfig> {
        let Some(path) = Self::default_path() else {
            return Ok(RegistryConfig::default());
        };
        let explicit = std::env::var_os("CAIRN_CONFIG").is_some_and(|v| !v.is_empty());
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(RegistryConfig::default())
            }
            Err(source) => Err(Error::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Parses config text; errors name `path` and the line.
    pub fn parse(text: &str, path: &Path) -> Result<RegistryConfig> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => bad(format!("line {l}: {}", e.message().trim_end())),
                None => bad(e.message().trim_end().to_owned()),
            }
        })?;
        for (i, r) in file.registry.iter().enumerate() {
            let n = i + 1;
            match (&r.prefix, &r.location) {
                (None, None) => {
                    return Err(bad(format!(
                        "[[registry]] number {n} needs a prefix or a location"
                    )));
                }
                (Some(p), _) if p.is_empty() || p.contains("://") => {
                    return Err(bad(format!(
                        "[[registry]] number {n}: prefix {p:?} must be host[:port][/path]"
                    )));
                }
                _ => {}
            }
            let locations = r
                .location
                .iter()
                .chain(r.mirror.iter().map(|m| &m.location));
            for l in locations {
                if l.is_empty() || l.contains("://") || l.ends_with('/') {
                    return Err(bad(format!(
                        "[[registry]] number {n}: location {l:?} must be host[:port][/path]"
                    )));
                }
            }
        }
        Ok(RegistryConfig {
            path: Some(path.to_path_buf()),
            registries: file.registry,
        })
    }

    /// The entry for a `domain/path` name: the one with the longest prefix that is the name
    /// or a leading run of its components.
    fn entry_for(&self, name: &str) -> Option<(&RegistryEntry, &str)> {
        self.registries
            .iter()
            .filter_map(|r| {
                let prefix = r.prefix.as_deref().or(r.location.as_deref())?;
                let matches = name == prefix
                    || (name.starts_with(prefix)
                        && name.as_bytes().get(prefix.len()) == Some(&b'/'));
                matches.then_some((r, prefix))
            })
            .max_by_key(|(_, p)| p.len())
    }

    /// Where to get `reference` from: for pulls the mirrors in order then the location; for
    /// pushes the location only.
    pub fn endpoints(&self, reference: &Reference, pull: bool) -> Result<Vec<Endpoint>> {
        let name = reference.repository();
        let Some((entry, prefix)) = self.entry_for(&name) else {
            return Ok(vec![Endpoint {
                domain: reference.domain().to_owned(),
                path: reference.path().to_owned(),
                insecure: false,
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(Error::InvalidReference {
                value: reference.to_string(),
                reason: format!(
                    "registry prefix {prefix:?} is blocked in {}",
                    self.path
                        .as_deref()
                        .map_or_else(|| "the config".to_owned(), |p| p.display().to_string())
                ),
            });
        }
        let rest = &name[prefix.len()..];
        let at = |location: &str, insecure: bool, mirror: bool| -> Result<Endpoint> {
            let full = format!("{location}{rest}");
            let (domain, path) = full
                .split_once('/')
                .filter(|(_, p)| !p.is_empty())
                .ok_or_else(|| Error::InvalidReference {
                    value: reference.to_string(),
                    reason: format!("rewriting {prefix:?} to {location:?} leaves no repository"),
                })?;
            Ok(Endpoint {
                domain: domain.to_owned(),
                path: path.to_owned(),
                insecure,
                mirror,
            })
        };
        let mut out = Vec::new();
        if pull {
            for m in &entry.mirror {
                out.push(at(&m.location, m.insecure, true)?);
            }
        }
        match &entry.location {
            Some(l) => out.push(at(l, entry.insecure, false)?),
            None => out.push(Endpoint {
                domain: reference.domain().to_owned(),
                path: reference.path().to_owned(),
                insecure: entry.insecure,
                mirror: false,
            }),
        }
        Ok(out)
    }

    /// Whether the config marks a registry host insecure (as a location or a mirror).
    pub fn host_insecure(&self, host: &str) -> bool {
        let domain = |l: &str| l.split('/').next().unwrap_or_default().to_owned();
        self.registries.iter().any(|r| {
            let own = r
                .location
                .as_deref()
                .or(r.prefix.as_deref())
                .is_some_and(|l| r.insecure && domain(l) == host);
            own || r
                .mirror
                .iter()
                .any(|m| m.insecure && domain(&m.location) == host)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "127.0.0.1:5000"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true
[[registry.mirror]]
location = "mirror.example/hub"

[[registry]]
prefix = "docker.io/library/busybox"
location = "registry.example/base/busybox"

[[registry]]
location = "localhost:5002"
insecure = true

[[registry]]
prefix = "blocked.example"
blocked = true
"#;

    fn ep(domain: &str, path: &str, insecure: bool, mirror: bool) -> Endpoint {
        Endpoint {
            domain: domain.into(),
            path: path.into(),
            insecure,
            mirror,
        }
    }

    #[test]
    fn endpoints_follow_the_longest_prefix() {
        let c = RegistryConfig::parse(CONFIG, Path::new("config.toml")).unwrap();
        let cases: &[(&str, bool, Vec<Endpoint>)] = &[
            (
                "alpine",
                true,
                vec![
                    ep("127.0.0.1:5001", "library/alpine", true, true),
                    ep("mirror.example", "hub/library/alpine", false, true),
                    ep("127.0.0.1:5000", "library/alpine", true, false),
                ],
            ),
            (
                "alpine",
                false,
                vec![ep("127.0.0.1:5000", "library/alpine", true, false)],
            ),
            (
                "busybox:1",
                true,
                vec![ep("registry.example", "base/busybox", false, false)],
            ),
            // `busybox` is a prefix of `busyboxes` as a string, not as a path.
            (
                "busyboxes",
                false,
                vec![ep("127.0.0.1:5000", "library/busyboxes", true, false)],
            ),
            (
                "localhost:5002/app",
                true,
                vec![ep("localhost:5002", "app", true, false)],
            ),
            (
                "registry.example/other/app",
                true,
                vec![ep("registry.example", "other/app", false, false)],
            ),
        ];
        for (input, pull, want) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(
                &c.endpoints(&r, *pull).unwrap(),
                want,
                "{input} pull={pull}"
            );
        }
        let r = Reference::parse("blocked.example/x").unwrap();
        assert!(c.endpoints(&r, true).is_err());
        assert!(c.host_insecure("127.0.0.1:5001"));
        assert!(c.host_insecure("localhost:5002"));
        assert!(!c.host_insecure("mirror.example"));
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let cases: &[(&str, &str)] = &[
            ("[[registry]]\nprefix = \"x\"\ninsecure = maybe\n", "line 3"),
            ("[[registry]]\nprefix = 1\n", "line 2"),
            (
                "[[registry]]\ninsecure = true\n",
                "needs a prefix or a location",
            ),
            (
                "[[registry]]\nlocation = \"https://x.example\"\n",
                "must be host[:port][/path]",
            ),
        ];
        for (text, want) in cases {
            let e = RegistryConfig::parse(text, Path::new("/cfg/config.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/cfg/config.toml"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
