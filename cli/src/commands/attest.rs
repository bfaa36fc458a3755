//! A build's attestations: each platform's image with its provenance (and SBOM) statements,
//! gathered in an image index as BuildKit attaches them.

use anyhow::Context as _;
use cairn_builder::build::{BuildOptions, Built};
use cairn_builder::provenance::{self, ProvenanceOptions};
use cairn_builder::sbom::{self, SbomOptions};
use cairn_layers::Store;
use cairn_layers::attest::{Predicate, SPDX, docker_purl, statement};
use cairn_layers::image::Descriptor;
use cairn_layers::reference::Reference;

use crate::attest_args::Attestations;
use crate::commands::annotations::Annotations;

/// The index of `built`'s images and their attestations, stored. Each image is first made as
/// it will leave the store (`deferred::for_export`): a statement names the digest a registry
/// will have.
pub(crate) fn attach(
    store: &Store,
    built: &[Built],
    opts: &BuildOptions,
    (wanted, annotations): (&Attestations, &Annotations),
    tags: &[Reference],
    started: i64,
    quiet: bool,
) -> anyhow::Result<Descriptor> {
    let finished = jiff::Timestamp::now().as_second();
    let mut images = Vec::new();
    let mut attestations = Vec::new();
    for b in built {
        let image = cairn_layers::deferred::for_export(store, &b.manifest)?;
        let names: Vec<String> = tags
            .iter()
            .map(|t| docker_purl(&t.familiar(), Some(&b.platform)))
            .collect();
        let mut statements = Vec::new();
        if let Some(mode) = wanted.provenance {
            let p = ProvenanceOptions {
                mode,
                builder_id: wanted.builder_id.clone(),
                started,
                finished,
            };
            let predicate = provenance::predicate(opts, b, &p);
            statements.push(statement(&names, &image.digest, &predicate));
        }
        if wanted.sbom {
            let predicate = sbom_predicate(store, &image, b, opts, tags, quiet)?;
            statements.push(statement(&names, &image.digest, &predicate));
        }
        attestations.push(store.put_attestations(&image, &statements)?);
        let image = Descriptor {
            platform: Some(b.platform.clone()),
            ..image
        };
        images.push(annotations.describe(image, &b.platform));
    }
    // BuildKit's order: the images, then the attestation manifests.
    images.extend(attestations);
    Ok(annotations.put_index(store, images)?)
}

/// The SPDX document of the image as exported, its gaps said on standard error unless quiet.
fn sbom_predicate(
    store: &Store,
    image: &Descriptor,
    built: &Built,
    opts: &BuildOptions,
    tags: &[Reference],
    quiet: bool,
) -> anyhow::Result<Predicate> {
    let report = sbom::image_sbom(store, image, &SbomOptions::default()).with_context(|| {
        format!(
            "failed to list the packages of the {} image",
            built.platform
        )
    })?;
    if !quiet {
        for gap in &report.not_covered {
            let at = gap
                .path
                .as_deref()
                .map(|p| format!("/{p}: "))
                .unwrap_or_default();
            eprintln!(
                "warning: SBOM of {}: not covered: {at}{}",
                built.platform, gap.reason
            );
        }
    }
    let name = tags
        .first()
        .map_or_else(|| image.digest.to_string(), Reference::familiar);
    let document = report.to_spdx_json(
        &name,
        &sbom::document_namespace(&report.image),
        &sbom::created(opts.source_date_epoch),
    );
    Ok(Predicate {
        predicate_type: SPDX.into(),
        predicate: document,
    })
}
