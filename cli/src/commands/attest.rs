//! A build's attestations: each platform's image with its provenance (and SBOM) statements,
//! gathered in an image index as BuildKit attaches them.

use cairn_builder::build::{BuildOptions, Built};
use cairn_builder::provenance::{self, ProvenanceOptions};
use cairn_layers::Store;
use cairn_layers::attest::{docker_purl, statement};
use cairn_layers::image::{Descriptor, Index};
use cairn_layers::reference::Reference;

use crate::attest_args::Attestations;

/// The index of `built`'s images and their attestations, stored. Each image is first made as
/// it will leave the store (`deferred::for_export`): a statement names the digest a registry
/// will have.
pub(crate) fn attach(
    store: &Store,
    built: &[Built],
    opts: &BuildOptions,
    wanted: &Attestations,
    tags: &[Reference],
    started: i64,
) -> anyhow::Result<Descriptor> {
    if wanted.sbom {
        anyhow::bail!("--sbom: this build of cairn cannot write SBOMs yet");
    }
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
        attestations.push(store.put_attestations(&image, &statements)?);
        images.push(Descriptor {
            platform: Some(b.platform.clone()),
            ..image
        });
    }
    // BuildKit's order: the images, then the attestation manifests.
    images.extend(attestations);
    Ok(store.put_index(&Index::new(images))?)
}
