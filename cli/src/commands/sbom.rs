//! `cairn sbom`: an image's SPDX document, read from its own package databases.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use cairn_builder::sbom::{self, SbomOptions};
use cairn_layers::Store;

use crate::sbom_args::{SbomArgs, SbomFormat};

pub fn run(store: &Store, args: &SbomArgs) -> anyhow::Result<()> {
    let platform = args
        .platform
        .as_deref()
        .map(super::registry::parse_platform)
        .transpose()?;
    let (reference, manifest) = store.resolve_image(&args.image, platform.as_ref())?;
    let report = sbom::image_sbom(store, &manifest, &SbomOptions::default())
        .with_context(|| format!("failed to list the packages of {}", args.image))?;
    let name = reference.map_or_else(|| args.image.clone(), |r| r.familiar());
    let created = sbom::created(super::image::source_date_epoch()?);
    let doc = match args.format {
        SbomFormat::SpdxJson => {
            report.to_spdx_json(&name, &sbom::document_namespace(&report.image), &created)
        }
    };
    let mut stderr = std::io::stderr().lock();
    for gap in &report.not_covered {
        match &gap.path {
            Some(p) => writeln!(stderr, "warning: not covered: /{p}: {}", gap.reason)?,
            None => writeln!(stderr, "warning: not covered: {}", gap.reason)?,
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&doc)?;
    bytes.push(b'\n');
    match &args.output {
        Some(path) => write_whole(path, &bytes)
            .with_context(|| format!("failed to write the SBOM to {}", path.display())),
        None => Ok(std::io::stdout().lock().write_all(&bytes)?),
    }
}

/// A temp file beside `path`, renamed into place: a reader never sees half a document.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.persist(path)?;
    Ok(())
}
