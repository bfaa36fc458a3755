//! Platforms (`os/arch[/variant]`): parsed and normalised once, as containerd does, matched
//! against image indexes and image configs, and named for the emulator that runs them.

use std::fmt;

use crate::error::{Error, Result};
pub use crate::image::Platform;
use crate::image::{Descriptor, ImageConfig, Index};

/// The variant an architecture has when none is named.
fn default_variant(arch: &str) -> Option<&'static str> {
    match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

impl Platform {
    /// The machine cairn runs on: `linux/<arch>`, arm's variant as the machine gives it.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: crate::image::host_architecture().into(),
            variant: None,
        }
    }

    /// `os/arch[/variant]`, a bare `arch` (on linux), or `local` (the host), normalised as
    /// containerd normalises: lowercase, architecture aliases to their Go names (`x86_64` →
    /// `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`), arm64's default variant dropped.
    pub fn parse(spec: &str) -> Result<Platform> {
        let bad = |reason: &str| Error::invalid(format!("platform {spec:?}"), reason);
        if spec.eq_ignore_ascii_case("local") {
            return Ok(Platform::host());
        }
        let parts: Vec<String> = spec.split('/').map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(bad("expected OS/ARCH[/VARIANT], like linux/arm64"));
        }
        let (os, arch, variant) = match parts.as_slice() {
            // containerd's rule: a lone OS name means that OS on this machine's architecture.
            [os] if matches!(os.as_str(), "linux" | "windows" | "darwin" | "freebsd") => (
                os.clone(),
                crate::image::host_architecture().to_owned(),
                None,
            ),
            [arch] => ("linux".to_owned(), arch.clone(), None),
            [os, arch] => (os.clone(), arch.clone(), None),
            [os, arch, variant] => (os.clone(), arch.clone(), Some(variant.clone())),
            _ => return Err(bad("expected OS/ARCH[/VARIANT], like linux/arm64")),
        };
        if !parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(bad("letters, digits and `_` only between the slashes"));
        }
        let (arch, variant) = match (arch.as_str(), variant) {
            ("x86_64" | "x86-64", v) => ("amd64".to_owned(), v),
            ("aarch64", v) => ("arm64".to_owned(), v),
            ("i386" | "i686", v) => ("386".to_owned(), v),
            ("armhf", None) => ("arm".to_owned(), Some("v7".to_owned())),
            ("armel", None) => ("arm".to_owned(), Some("v6".to_owned())),
            (_, v) => (arch, v),
        };
        Ok(Platform {
            variant: variant.filter(|v| !(arch == "arm64" && v == "v8")),
            os,
            architecture: arch,
        })
    }

    /// This platform with its architecture's default variant dropped (or, for `arm`,
    /// made explicit), so that equal platforms compare equal.
    fn normal(&self) -> (String, String, Option<String>) {
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self
            .variant
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase)
            .or_else(|| default_variant(&arch).map(str::to_owned));
        (self.os.to_ascii_lowercase(), arch, variant)
    }

    /// Whether an image for `other` is an image for this platform: same OS and
    /// architecture, and the same variant once defaults are filled in.
    pub fn matches(&self, other: &Platform) -> bool {
        self.normal() == other.normal()
    }

    /// The platform an image config declares.
    pub fn of_config(config: &ImageConfig) -> Platform {
        Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone().filter(|v| !v.is_empty()),
        }
    }

    /// Whether binaries of this platform run natively here (no emulator needed): the host's
    /// own, and the 32-bit modes of 64-bit hosts that run them (amd64 runs 386).
    pub fn is_native(&self) -> bool {
        let host = Platform::host();
        if self.os != "linux" {
            return false;
        }
        self.matches(&host) || (host.architecture == "amd64" && self.architecture == "386")
    }

    /// The name qemu's user-mode emulator (and its binfmt_misc entry, `qemu-<name>`) has
    /// for this architecture.
    pub fn qemu_name(&self) -> Option<&'static str> {
        Some(match self.architecture.as_str() {
            "amd64" => "x86_64",
            "386" => "i386",
            "arm64" => "aarch64",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "ppc64le" => "ppc64le",
            "s390x" => "s390x",
            "mips64le" => "mips64el",
            "loong64" => "loongarch64",
            _ => return None,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => write!(f, "{}/{}/{v}", self.os, self.architecture),
            None => write!(f, "{}/{}", self.os, self.architecture),
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        Platform::parse(s)
    }
}

/// The index entry for `want`: same OS and architecture, and the variant asked for (an
/// entry without one counts as the architecture's default). Without a variant asked for,
/// the default variant is preferred, then the first entry.
pub fn select<'i>(index: &'i Index, want: &Platform, what: &str) -> Result<&'i Descriptor> {
    let same_arch = |p: &Platform| {
        p.os.eq_ignore_ascii_case(&want.os)
            && p.architecture.eq_ignore_ascii_case(&want.architecture)
    };
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| same_arch(p) && (want.variant.is_none() || p.matches(want)))
        })
        .collect();
    let preferred = candidates
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)));
    if let Some(d) = preferred.or(candidates.first()) {
        return Ok(d);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::to_string)
        .collect();
    Err(Error::invalid(
        what,
        format!(
            "no image for {want} (it has {})",
            if available.is_empty() {
                "no platforms".to_owned()
            } else {
                available.join(", ")
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, v: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: v.map(str::to_owned),
        }
    }

    #[test]
    fn platforms_normalise_as_containerd_does() {
        let cases = [
            ("linux/amd64", Some(p("linux", "amd64", None))),
            ("amd64", Some(p("linux", "amd64", None))),
            ("linux/x86_64", Some(p("linux", "amd64", None))),
            ("Linux/AMD64", Some(p("linux", "amd64", None))),
            ("linux/aarch64", Some(p("linux", "arm64", None))),
            ("linux/arm64/v8", Some(p("linux", "arm64", None))),
            ("linux/arm/v7", Some(p("linux", "arm", Some("v7")))),
            ("linux/armhf", Some(p("linux", "arm", Some("v7")))),
            ("linux/riscv64", Some(p("linux", "riscv64", None))),
            ("windows/amd64", Some(p("windows", "amd64", None))),
            ("local", Some(Platform::host())),
            ("linux", Some(Platform::host())),
            ("linux//v8", None),
            ("linux/", None),
            ("linux/amd64/v2/x", None),
            ("", None),
            ("linux/am d64", None),
            ("../x", None),
        ];
        for (spec, want) in cases {
            assert_eq!(Platform::parse(spec).ok(), want, "{spec}");
        }
    }

    #[test]
    fn matching_fills_in_default_variants() {
        let cases = [
            (
                p("linux", "arm64", None),
                p("linux", "arm64", Some("v8")),
                true,
            ),
            (p("linux", "arm", None), p("linux", "arm", Some("v7")), true),
            (
                p("linux", "arm", Some("v6")),
                p("linux", "arm", Some("v7")),
                false,
            ),
            (p("linux", "amd64", None), p("linux", "arm64", None), false),
            (
                p("linux", "amd64", None),
                p("windows", "amd64", None),
                false,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(a.matches(&b), want, "{a} vs {b}");
        }
    }
}

#[cfg(test)]
mod select_tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::OCI_MANIFEST;
    use std::collections::BTreeMap;

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn platforms() {
        let index = Index::new(vec![
            entry(0, "unknown", "unknown", None),
            entry(1, "linux", "amd64", None),
            entry(2, "linux", "arm", Some("v6")),
            entry(3, "linux", "arm", Some("v7")),
            entry(4, "linux", "arm64", Some("v8")),
            entry(5, "windows", "amd64", None),
        ]);
        let p = |s: &str| {
            let parts: Vec<&str> = s.split('/').collect();
            Platform {
                os: parts[0].into(),
                architecture: parts[1].into(),
                variant: parts.get(2).map(|v| (*v).into()),
            }
        };
        let cases: &[(&str, Option<u8>)] = &[
            ("linux/amd64", Some(1)),
            ("linux/arm", Some(3)),
            ("linux/arm/v6", Some(2)),
            ("linux/arm/v7", Some(3)),
            ("linux/arm64", Some(4)),
            ("linux/arm64/v8", Some(4)),
            ("windows/amd64", Some(5)),
            ("linux/s390x", None),
            ("linux/arm/v5", None),
        ];
        for (want, found) in cases {
            let got = select(&index, &p(want), "index");
            match found {
                Some(n) => assert_eq!(got.unwrap().digest, Digest::of(&[*n]), "{want}"),
                None => {
                    let e = got.unwrap_err().to_string();
                    assert!(e.contains("linux/arm/v6, linux/arm/v7"), "{e}");
                    assert!(!e.contains("unknown"), "{e}");
                }
            }
        }
    }
}
