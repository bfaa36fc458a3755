//! prune (what no tag reaches) and fsck (what no longer matches its digest).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Manifest};
use crate::owner;

use super::blob::temp_owner;
use super::{FsckReport, PruneReport, Store, entries};

impl Store {
    /// The blobs a tag's descriptor reaches: an image's manifest, config and layers; an
    /// index's own blob and those of the entries the store holds (nested indexes followed;
    /// entries never pulled are no loss). Returns the images reached.
    fn reachable_from(
        &self,
        top: &Descriptor,
        into: &mut BTreeSet<Digest>,
    ) -> Result<Vec<Descriptor>> {
        let mut images = Vec::new();
        self.walk(top, &mut |d, is_index| {
            into.insert(d.digest.clone());
            if !is_index {
                let m = Manifest::from_slice(
                    &self.read_blob(&d.digest)?,
                    &format!("manifest {}", d.digest),
                )?;
                into.insert(m.config.digest.clone());
                into.extend(m.layers.into_iter().map(|l| l.digest));
                images.push(d.clone());
            }
            Ok(())
        })?;
        Ok(images)
    }

    /// Removes every blob no tag reaches, unpacked layers no reachable image uses, and temp
    /// files. Waits for running writers to finish first.
    pub fn prune(&self) -> Result<PruneReport> {
        self.prune_keeping(&BTreeSet::new(), &BTreeSet::new())
    }

    /// Like [`Store::prune`], keeping also the blobs `blobs` and the unpacked forms of the
    /// layers `diff_ids` (what the build cache still records).
    pub fn prune_keeping(
        &self,
        blobs: &BTreeSet<Digest>,
        diff_ids: &BTreeSet<Digest>,
    ) -> Result<PruneReport> {
        let _gc = self.lock("gc.lock", true)?;
        let mut report = PruneReport::default();
        let mut keep = blobs.clone();
        let mut keep_layers: BTreeSet<String> =
            diff_ids.iter().map(|d| d.hex().to_owned()).collect();
        // Dangling images stay until they are removed (docker keeps them until `image prune`).
        let manifests = self
            .tags()?
            .into_iter()
            .map(|t| t.manifest)
            .chain(self.untagged()?);
        for top in manifests {
            for m in self.reachable_from(&top, &mut keep)? {
                let Ok(img) = self.image(&m) else { continue };
                keep_layers.extend(
                    img.config
                        .rootfs
                        .diff_ids
                        .iter()
                        .map(|d| d.hex().to_owned()),
                );
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in entries(&blobs)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let known = format!("sha256:{name}").parse::<Digest>().ok();
            if known.as_ref().is_some_and(|d| keep.contains(d)) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs_err::remove_file(entry.path()).map_err(|source| Error::Io {
                action: "remove",
                path: entry.path(),
                source,
            })?;
            if let Some(d) = &known {
                let _ = std::fs::remove_file(self.chunk_index_path(d));
            }
            report.blobs += 1;
            report.bytes += len;
        }
        let layers = self.root.join("layers/sha256");
        for entry in entries(&layers)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<diff_id>`, `<diff_id>.<key>` and their `.lock` files.
            let diff_id = name.split('.').next().unwrap_or_default();
            if !keep_layers.contains(diff_id) {
                self.remove_tree(&entry.path())?;
                report.layers += 1;
            }
        }
        report.temp_files = self.clean_tmp()?;
        Ok(report)
    }

    /// Removes the scratch directory's entries, except those of live processes: a `cairn
    /// run` or a build of another cairn may be using them.
    fn clean_tmp(&self) -> Result<u64> {
        let tmp = self.tmp();
        let mut n = 0;
        for entry in entries(&tmp)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let live = temp_owner(&name).is_some_and(|o| !owner::is_gone(o));
            if !live {
                self.remove_tree(&entry.path())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Verifies every blob against its digest, and that every tag's manifest, config and
    /// layers are present and well-formed.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let blobs = self.root.join("blobs/sha256");
        let mut present = BTreeSet::new();
        for entry in entries(&blobs)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            report.blobs += 1;
            let Ok(expected) = format!("sha256:{name}").parse::<Digest>() else {
                report.problems.push(format!(
                    "{}: not named by a sha256 digest",
                    entry.path().display()
                ));
                continue;
            };
            let mut w = HashingWriter::new(io::sink());
            let copied = File::open(entry.path()).and_then(|mut f| io::copy(&mut f, &mut w));
            if let Err(e) = copied {
                report
                    .problems
                    .push(format!("{}: unreadable: {e}", entry.path().display()));
                continue;
            }
            let (actual, _, _) = w.finish();
            if actual != expected {
                report.problems.push(format!(
                    "{}: content digest is {actual}",
                    entry.path().display()
                ));
                continue;
            }
            present.insert(expected);
        }
        // Named images by name, dangling ones by manifest digest.
        let images = self
            .tags()?
            .into_iter()
            .map(|t| (t.reference.to_string(), t.manifest))
            .chain(
                self.untagged()?
                    .into_iter()
                    .map(|m| (format!("untagged image {}", m.digest), m)),
            );
        for (name, top) in images {
            report.images += 1;
            if !present.contains(&top.digest) {
                report.problems.push(format!(
                    "{name}: manifest {} is missing or corrupt",
                    top.digest
                ));
                continue;
            }
            // An index is checked through the images it holds; those never pulled are fine.
            let mut manifests = Vec::new();
            let walked = self.walk(&top, &mut |d, is_index| {
                if !is_index {
                    manifests.push(d.clone());
                }
                Ok(())
            });
            if let Err(e) = walked {
                report.problems.push(format!("{name}: {e}"));
                continue;
            }
            for manifest in manifests {
                self.check_image(&name, &manifest, &present, &mut report);
            }
        }
        let tmp = self.tmp();
        report.temp_files = entries(&tmp)?.len() as u64;
        Ok(report)
    }

    /// fsck's checks of one image manifest (present in the store): its config and layers.
    fn check_image(
        &self,
        name: &str,
        manifest: &Descriptor,
        present: &BTreeSet<Digest>,
        report: &mut FsckReport,
    ) {
        match self.image(manifest) {
            Err(e) => report.problems.push(format!("{name}: {e}")),
            Ok(img) => {
                let wanted = std::iter::once(&img.manifest.config).chain(&img.manifest.layers);
                for d in wanted {
                    if !present.contains(&d.digest) {
                        report
                            .problems
                            .push(format!("{name}: blob {} is missing or corrupt", d.digest));
                    }
                }
                if img.config.rootfs.diff_ids.len() != img.manifest.layers.len() {
                    report.problems.push(format!(
                        "{name}: {} layers but {} diff_ids in the config",
                        img.manifest.layers.len(),
                        img.config.rootfs.diff_ids.len()
                    ));
                }
            }
        }
    }
}
