//! `cairn build --annotation`'s levels, as BuildKit has them: `manifest:` (the default) on each
//! image's manifest, `index:` on a multi-platform build's image index, `manifest-descriptor:`
//! and `index-descriptor:` on the descriptors that point at them (in the index, and in the
//! store's and an OCI layout's index.json); `manifest[os/arch]:` for one platform only.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use cairn_layers::image::{Descriptor, Index};
use cairn_layers::platform::Platform;

/// The levels' annotations: the manifests' go into the build (they are in the manifest it
/// stores), the others are put on when the build's result is named and written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Annotations {
    /// Manifest annotations of every platform, then those of one platform.
    pub manifest: BTreeMap<String, String>,
    pub manifest_for: Vec<(Platform, String, String)>,
    pub index: BTreeMap<String, String>,
    pub index_descriptor: BTreeMap<String, String>,
    pub manifest_descriptor: Vec<(Option<Platform>, String, String)>,
}

/// Reads each `--annotation TYPE[PLATFORM]:KEY=VALUE` for a build of `platforms` (none: this
/// machine's); `attesting`: the build's attestations make an index even of one platform.
pub(crate) fn parse(
    specs: &[String],
    platforms: &[Platform],
    attesting: bool,
) -> anyhow::Result<Annotations> {
    let mut out = Annotations::default();
    let mut built: Vec<Platform> = Vec::new();
    for p in platforms {
        if !built.iter().any(|q| q.matches(p)) {
            built.push(p.clone());
        }
    }
    if built.is_empty() {
        built.push(Platform::host());
    }
    for a in specs {
        let (level, platform, key, value) = split(a)?;
        if let Some(p) = &platform
            && !built.iter().any(|b| b.matches(p))
        {
            bail!("--annotation {a:?}: the build makes no image for {p}");
        }
        match (level, platform) {
            ("manifest", None) => {
                out.manifest.insert(key, value);
            }
            ("manifest", Some(p)) => out.manifest_for.push((p, key, value)),
            ("manifest-descriptor", p) => out.manifest_descriptor.push((p, key, value)),
            // BuildKit reads a platform on the index's levels and ignores it: there is one index.
            ("index" | "index-descriptor", _) if built.len() == 1 && !attesting => bail!(
                "--annotation {a:?}: a single-platform build makes no image index (index \
                 annotations need several --platform values or attestations; use manifest: or \
                 manifest-descriptor:)"
            ),
            ("index", _) => {
                out.index.insert(key, value);
            }
            ("index-descriptor", _) => {
                out.index_descriptor.insert(key, value);
            }
            (other, _) => bail!(
                "--annotation {a:?}: unknown type {other:?} (manifest, index, manifest-descriptor \
                 or index-descriptor)"
            ),
        }
    }
    Ok(out)
}

/// `[TYPE[\[PLATFORM\]]:]KEY=VALUE` as (type, platform, key, value). A prefix is a word (with
/// its platform) and a colon before the `=`; a colon after it is the value's.
fn split(a: &str) -> anyhow::Result<(&str, Option<Platform>, String, String)> {
    let (head, value) = a
        .split_once('=')
        .with_context(|| format!("--annotation {a:?} must be KEY=VALUE"))?;
    let prefix = head.split_once(':').filter(|(p, _)| {
        let word = p.split_once('[').map_or(*p, |(w, _)| w);
        !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
    });
    let (level, platform, key) = match prefix {
        None => ("manifest", None, head),
        Some((p, key)) => match p.split_once('[') {
            None => (p, None, key),
            Some((level, rest)) => {
                let spec = rest
                    .strip_suffix(']')
                    .with_context(|| format!("--annotation {a:?}: the platform needs its `]`"))?;
                let platform = Platform::parse(spec)
                    .with_context(|| format!("--annotation {a:?}: platform {spec:?}"))?;
                (level, Some(platform), key)
            }
        },
    };
    if key.is_empty() {
        bail!("--annotation {a:?} must be KEY=VALUE");
    }
    Ok((level, platform, key.to_owned(), value.to_owned()))
}

impl Annotations {
    /// The manifest descriptor annotations for an image of `platform`.
    pub(crate) fn for_manifest(&self, platform: &Platform) -> BTreeMap<String, String> {
        self.manifest_descriptor
            .iter()
            .filter(|(p, _, _)| p.as_ref().is_none_or(|p| p.matches(platform)))
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `d`, the descriptor of the image for `platform`, with its descriptor annotations added.
    pub(crate) fn describe(&self, mut d: Descriptor, platform: &Platform) -> Descriptor {
        d.annotations.extend(self.for_manifest(platform));
        d
    }

    /// The image index of `manifests`, with its annotations, stored; its descriptor with the
    /// index descriptor's.
    pub(crate) fn put_index(
        &self,
        store: &cairn_layers::Store,
        manifests: Vec<Descriptor>,
    ) -> cairn_layers::Result<Descriptor> {
        let mut index = Index::new(manifests);
        index.annotations = self.index.clone();
        let mut d = store.put_index(&index)?;
        d.annotations.extend(self.index_descriptor.clone());
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<Platform> {
        vec![
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/arm64").unwrap(),
        ]
    }

    #[test]
    fn levels_and_platforms_are_read_as_buildkit_writes_them() {
        let specs: Vec<String> = [
            "a=1",
            "manifest:b=url:http://x",
            "c=x:y",
            "index:i=2",
            "index-descriptor:d=3",
            "manifest-descriptor:m=4",
            "manifest[linux/arm64]:arm=5",
            "manifest-descriptor[linux/amd64]:amd=6",
        ]
        .map(str::to_owned)
        .to_vec();
        let a = parse(&specs, &two(), false).unwrap();
        assert_eq!(a.manifest["a"], "1");
        assert_eq!(a.manifest["b"], "url:http://x");
        assert_eq!(a.manifest["c"], "x:y");
        assert_eq!(a.index["i"], "2");
        assert_eq!(a.index_descriptor["d"], "3");
        assert_eq!(
            a.manifest_for,
            [(two()[1].clone(), "arm".into(), "5".into())]
        );
        let amd = a.for_manifest(&two()[0]);
        assert_eq!((amd["m"].as_str(), amd["amd"].as_str()), ("4", "6"));
        assert!(!a.for_manifest(&two()[1]).contains_key("amd"));
    }

    #[test]
    fn what_does_not_apply_is_refused() {
        let one = |s: &str, platforms: &[Platform]| parse(&[s.to_owned()], platforms, false);
        for bad in ["index:a=1", "index-descriptor:a=1"] {
            let e = one(bad, &[]).unwrap_err().to_string();
            assert!(e.contains("single-platform"), "{e}");
            assert!(one(bad, &two()).is_ok());
            // Attestations make an index of one platform's image too.
            assert!(parse(&[bad.to_owned()], &[], true).is_ok());
        }
        for bad in [
            "noequals",
            "=v",
            "manifest:=v",
            "foo:a=1",
            "manifest[linux/s390x]:a=1",
            "manifest[linux/amd64:a=1",
        ] {
            assert!(one(bad, &two()).is_err(), "{bad}");
        }
    }
}
