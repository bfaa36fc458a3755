//! `cairn build`'s attestation flags, as `docker buildx build` spells them: `--provenance`,
//! `--sbom` and `--attest type=...`, and which attestations a build gets.

use anyhow::bail;

/// The attestation flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AttestArgs {
    /// SLSA v1 provenance attached to the image (on by default when pushing, as BuildKit):
    /// `true`, `false`, or `mode=min|max[,builder-id=URI]`.
    #[arg(
        long,
        value_name = "true|false|mode=min|max",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub provenance: Option<String>,
    /// An SPDX SBOM of the image's packages attached to it: `true` or `false`.
    #[arg(
        long,
        value_name = "true|false",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub sbom: Option<String>,
    /// `type=provenance[,mode=min|max][,disabled=true]` or `type=sbom[,disabled=true]`.
    #[arg(long, value_name = "type=provenance|sbom,...")]
    pub attest: Vec<String>,
}

/// What a build attaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attestations {
    pub provenance: Option<cairn_builder::provenance::ProvenanceMode>,
    pub builder_id: Option<String>,
    pub sbom: bool,
}

impl Attestations {
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom
    }
}

impl AttestArgs {
    /// The attestations asked for; provenance (`mode=min`) by default when the image is
    /// pushed, unless `BUILDX_NO_DEFAULT_ATTESTATIONS` is set, as buildx does.
    pub fn resolve(&self, pushing: bool, no_default: bool) -> anyhow::Result<Attestations> {
        use cairn_builder::provenance::ProvenanceMode as Mode;
        let mut out = Attestations::default();
        let mut provenance: Option<Option<Mode>> = None;
        let mut sbom: Option<bool> = None;
        // `--provenance`/`--sbom` are shorthands of `--attest`: one list, read in order.
        let mut specs: Vec<(String, String)> = Vec::new();
        if let Some(p) = &self.provenance {
            specs.push(("provenance".into(), shorthand(p)));
        }
        if let Some(s) = &self.sbom {
            specs.push(("sbom".into(), shorthand(s)));
        }
        for a in &self.attest {
            let kind = a
                .split(',')
                .find_map(|kv| kv.strip_prefix("type="))
                .ok_or_else(|| anyhow::anyhow!("--attest {a}: no type= (provenance or sbom)"))?;
            let rest: Vec<&str> = a.split(',').filter(|kv| !kv.starts_with("type=")).collect();
            specs.push((kind.to_owned(), rest.join(",")));
        }
        for (kind, attrs) in specs {
            if kind != "provenance" && kind != "sbom" {
                bail!("--attest type={kind}: unknown type (provenance or sbom)");
            }
            let mut disabled = false;
            let mut mode = Mode::Min;
            for kv in attrs.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match (kind.as_str(), k) {
                    (_, "disabled") => disabled = parse_bool(kind.as_str(), v)?,
                    ("provenance", "mode") => {
                        mode = match v {
                            "min" => Mode::Min,
                            "max" => Mode::Max,
                            _ => bail!("--attest type=provenance: mode={v:?} (min or max)"),
                        }
                    }
                    ("provenance", "builder-id") => out.builder_id = Some(v.to_owned()),
                    _ => bail!("--attest type={kind}: unknown option {k:?}"),
                }
            }
            match kind.as_str() {
                "provenance" => provenance = Some((!disabled).then_some(mode)),
                _ => sbom = Some(!disabled),
            }
        }
        out.provenance = match provenance {
            Some(p) => p,
            None if pushing && !no_default => Some(Mode::Min),
            None => None,
        };
        out.sbom = sbom.unwrap_or(false);
        Ok(out)
    }
}

/// `--provenance=false` → `disabled=true`; `true` → nothing; anything else is attributes.
fn shorthand(value: &str) -> String {
    match value {
        "true" | "1" => String::new(),
        "false" | "0" => "disabled=true".into(),
        attrs => attrs.to_owned(),
    }
}

fn parse_bool(kind: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("--attest type={kind}: disabled={v:?} (true or false)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_builder::provenance::ProvenanceMode as Mode;

    fn args(provenance: Option<&str>, sbom: Option<&str>, attest: &[&str]) -> AttestArgs {
        AttestArgs {
            provenance: provenance.map(str::to_owned),
            sbom: sbom.map(str::to_owned),
            attest: attest.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn flags_resolve_as_buildx_reads_them() {
        let cases: &[(AttestArgs, bool, bool, Option<Mode>, bool)] = &[
            (args(None, None, &[]), false, false, None, false),
            (args(None, None, &[]), true, false, Some(Mode::Min), false),
            (args(None, None, &[]), true, true, None, false),
            (args(Some("false"), None, &[]), true, false, None, false),
            (
                args(Some("true"), Some("true"), &[]),
                false,
                false,
                Some(Mode::Min),
                true,
            ),
            (
                args(Some("mode=max"), None, &[]),
                false,
                false,
                Some(Mode::Max),
                false,
            ),
            (
                args(None, None, &["type=provenance,mode=max", "type=sbom"]),
                false,
                false,
                Some(Mode::Max),
                true,
            ),
            (
                args(None, Some("true"), &["type=sbom,disabled=true"]),
                false,
                false,
                None,
                false,
            ),
        ];
        for (a, pushing, no_default, provenance, sbom) in cases {
            let got = a.resolve(*pushing, *no_default).unwrap();
            assert_eq!(got.provenance, *provenance, "{a:?} pushing={pushing}");
            assert_eq!(got.sbom, *sbom, "{a:?}");
        }
        let got = args(Some("mode=max,builder-id=urn:ci:job:7"), None, &[])
            .resolve(false, false)
            .unwrap();
        assert_eq!(got.builder_id.as_deref(), Some("urn:ci:job:7"));
    }

    #[test]
    fn bad_attestations_are_named() {
        for (a, want) in [
            (args(None, None, &["mode=max"]), "no type="),
            (args(None, None, &["type=vex"]), "unknown type"),
            (args(Some("mode=full"), None, &[]), "mode=\"full\""),
            (args(None, Some("yes"), &[]), "unknown option \"yes\""),
        ] {
            let e = a.resolve(false, false).unwrap_err().to_string();
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }
}
