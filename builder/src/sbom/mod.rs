//! An image's software bill of materials, read natively from its package databases: no
//! scanner image, nothing run, nothing unpacked.
//!
//! | file | owns |
//! |---|---|
//! | `files.rs` | the layers streamed once each, keeping only the database paths, whiteouts applied |
//! | `dpkg.rs`, `apk.rs`, `python.rs`, `npm.rs` | each ecosystem's metadata format |
//! | `rpm.rs`, `rpm/header.rs` | rpm's SQLite database and its header blobs; BerkeleyDB and NDB found and reported as not covered |
//! | `purl.rs`, `license.rs` | package URLs; license fields that are SPDX expressions |
//! | `spdx.rs` | the report as an SPDX 2.3 JSON document |

mod apk;
mod dpkg;
mod files;
mod license;
mod npm;
mod purl;
mod python;
mod rpm;
mod spdx;

use std::collections::BTreeSet;

use cairn_layers::Store;
use cairn_layers::image::Descriptor;

pub use crate::error::SbomError;
use files::{Held, ImageFiles, Limits, Lookup};
pub use spdx::{created, document_namespace};

/// What [`image_sbom`] may hold of an untrusted image's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbomOptions {
    /// The most bytes read of one database or metadata file; a larger one is not covered.
    pub max_file_bytes: u64,
    /// The most bytes held of all of them together.
    pub max_total_bytes: u64,
}

impl Default for SbomOptions {
    fn default() -> Self {
        // A Debian image with thousands of packages has a status file of a few MiB.
        SbomOptions {
            max_file_bytes: 64 << 20,
            max_total_bytes: 512 << 20,
        }
    }
}

/// Which package system a package is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Deb,
    Apk,
    Rpm,
    Python,
    Npm,
}

/// One installed package, as its database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The package's architecture (`amd64`, `all`, `x86_64`), for OS packages.
    pub arch: Option<String>,
    /// The license field as the metadata gives it, which may be free text.
    pub license: Option<String>,
    /// Who distributes it: a Debian or Alpine maintainer.
    pub supplier: Option<String>,
    /// Who made it: a Python or npm author.
    pub originator: Option<String>,
    /// The source package it was built from: an rpm's source rpm.
    pub source_package: Option<String>,
    /// The file it was read from, relative to the image's root.
    pub source: String,
}

impl Package {
    /// The package URL, with the image's distribution for OS packages.
    pub fn purl(&self, os: Option<&OsRelease>) -> String {
        purl::of(self, os)
    }
}

/// Part of the image the SBOM does not cover, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCovered {
    /// The file, relative to the image's root, when the gap is one file.
    pub path: Option<String>,
    pub reason: String,
}

/// The distribution, from `/etc/os-release` (os-release(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Parses `KEY=value` lines, values optionally quoted (shell-style, os-release(5)).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = unquote(value.trim());
            let slot = match key.trim() {
                "ID" => &mut os.id,
                "VERSION_ID" => &mut os.version_id,
                "VERSION_CODENAME" => &mut os.version_codename,
                "PRETTY_NAME" => &mut os.pretty_name,
                _ => continue,
            };
            *slot = Some(value).filter(|v| !v.is_empty());
        }
        os
    }

    /// The purl `distro` qualifier: `debian-12`, `alpine-3.19.1`; the codename when there is no
    /// version (Debian testing), nothing without an id.
    pub fn distro(&self) -> Option<String> {
        let id = self.id.as_deref()?;
        let version = self
            .version_id
            .as_deref()
            .or(self.version_codename.as_deref())?;
        Some(format!("{id}-{version}"))
    }
}

fn unquote(v: &str) -> String {
    let inner = match v.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if last == q && v.len() >= 2 => &v[1..v.len() - 1],
        _ => v,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// What an image holds, by its package databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomReport {
    /// The image's manifest digest.
    pub image: String,
    /// The image's platform, `os/arch[/variant]`, from its config.
    pub platform: String,
    pub os: Option<OsRelease>,
    /// Sorted by ecosystem, name and version; one per package URL.
    pub packages: Vec<Package>,
    pub not_covered: Vec<NotCovered>,
}

/// Lists the packages of the image whose manifest is `manifest`: each layer's tar is read once,
/// in order, keeping only package-database files (see `files.rs`), and those are parsed.
pub fn image_sbom(
    store: &Store,
    manifest: &Descriptor,
    opts: &SbomOptions,
) -> Result<SbomReport, SbomError> {
    let image_err = |what: String| {
        move |e: cairn_layers::Error| SbomError::Image {
            what,
            source: Box::new(e),
        }
    };
    let image = store
        .image(manifest)
        .map_err(image_err(manifest.digest.to_string()))?;
    let limits = Limits {
        file: opts.max_file_bytes,
        total: opts.max_total_bytes,
    };
    let mut files = ImageFiles::default();
    for layer in &image.manifest.layers {
        let tar = store
            .open_layer(layer)
            .map_err(image_err(format!("layer {}", layer.digest)))?;
        files
            .add_layer(tar, limits)
            .map_err(|source| SbomError::Layer {
                layer: layer.digest.to_string(),
                source,
            })?;
    }
    let c = &image.config;
    let mut platform = format!("{}/{}", c.os, c.architecture);
    if let Some(v) = &c.variant {
        platform = format!("{platform}/{v}");
    }
    Ok(report(
        &files.finish(),
        manifest.digest.to_string(),
        platform,
    ))
}

/// The report on what `files` hold.
fn report(files: &ImageFiles, image: String, platform: String) -> SbomReport {
    let mut r = Reader {
        files,
        packages: Vec::new(),
        not_covered: Vec::new(),
        databases: 0,
        read: BTreeSet::new(),
    };
    let os = r
        .one("etc/os-release")
        .or_else(|| r.one("usr/lib/os-release"))
        .map(|b| OsRelease::parse(&String::from_utf8_lossy(&b)));
    r.databases = 0;
    if let Some(b) = r.one("var/lib/dpkg/status") {
        r.dpkg(&b, "var/lib/dpkg/status");
    }
    for apk_db in ["lib/apk/db/installed", "usr/lib/apk/db/installed"] {
        if let Some(b) = r.one(apk_db) {
            let (packages, malformed) = apk::parse(&String::from_utf8_lossy(&b), apk_db);
            r.packages.extend(packages);
            r.malformed(apk_db, malformed);
        }
    }
    for db in rpm::DATABASES {
        if let Lookup::Found(real, held) = files.lookup(db)
            && r.read.insert(real.to_owned())
        {
            r.databases += 1;
            r.rpm(real, held);
        }
    }
    for (path, held) in files.iter() {
        let Some(kind) = Metadata::of(path) else {
            continue;
        };
        if !r.read.insert(path.to_owned()) {
            continue;
        }
        r.databases += 1;
        let bytes = match held {
            Held::Bytes(b) => b,
            Held::Skipped(why) => {
                r.gap(Some(path), format!("not read: {why}"));
                continue;
            }
        };
        match kind {
            Metadata::DpkgStatusD => r.dpkg(bytes, path),
            Metadata::Python => match python::parse(&String::from_utf8_lossy(bytes), path) {
                Some(p) => r.packages.push(p),
                None => r.gap(Some(path), "no Name or Version field".into()),
            },
            Metadata::NpmLock => match npm::parse_lock(bytes, path) {
                Ok(p) => r.packages.extend(p),
                Err(why) => r.gap(Some(path), why),
            },
            Metadata::NpmManifest => match npm::parse_manifest(bytes, path) {
                Ok(p) => r.packages.extend(p),
                Err(why) => r.gap(Some(path), why),
            },
        }
    }
    if r.databases == 0 {
        r.gap(
            None,
            "no package database found (looked for dpkg, apk, rpm, Python and npm metadata)".into(),
        );
    }
    let Reader {
        mut packages,
        not_covered,
        ..
    } = r;
    packages.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.arch).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            &b.arch,
        ))
    });
    let mut seen = BTreeSet::new();
    packages.retain(|p| seen.insert(p.purl(os.as_ref())));
    SbomReport {
        image,
        platform,
        os,
        packages,
        not_covered,
    }
}

/// The metadata files found by pattern rather than at one path.
#[derive(Debug, Clone, Copy)]
enum Metadata {
    DpkgStatusD,
    Python,
    NpmLock,
    NpmManifest,
}

impl Metadata {
    fn of(path: &str) -> Option<Metadata> {
        if files::wanted(path) != Some(files::Want::Bytes) {
            return None;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if path.starts_with("var/lib/dpkg/status.d/") {
            Some(Metadata::DpkgStatusD)
        } else if name == "METADATA" || name == "PKG-INFO" || name.ends_with(".egg-info") {
            Some(Metadata::Python)
        } else if name.ends_with("package-lock.json") {
            Some(Metadata::NpmLock)
        } else if name == "package.json" {
            Some(Metadata::NpmManifest)
        } else {
            None
        }
    }
}

/// The readers' shared state while a report is made.
struct Reader<'a> {
    files: &'a ImageFiles,
    packages: Vec<Package>,
    not_covered: Vec<NotCovered>,
    /// How many databases and metadata files were found, read or not.
    databases: usize,
    /// The real paths already read, so that two names of one file count once.
    read: BTreeSet<String>,
}

impl Reader<'_> {
    /// The bytes at one database path, followed through symlinks; a gap when they cannot be
    /// had, nothing when the path is not there.
    fn one(&mut self, path: &str) -> Option<Vec<u8>> {
        match self.files.lookup(path) {
            Lookup::Missing => None,
            Lookup::Found(real, held) => {
                if !self.read.insert(real.to_owned()) {
                    return None;
                }
                self.databases += 1;
                match held {
                    Held::Bytes(b) => Some(b.clone()),
                    Held::Skipped(why) => {
                        self.gap(Some(real), format!("not read: {why}"));
                        None
                    }
                }
            }
            Lookup::Elsewhere(to) => {
                self.databases += 1;
                let reason = match to {
                    Some(to) => {
                        format!("leads through symlinks to /{to}, which cairn does not read")
                    }
                    None => "a symlink loop".to_owned(),
                };
                self.gap(Some(path), reason);
                None
            }
        }
    }

    fn dpkg(&mut self, bytes: &[u8], path: &str) {
        let parsed = dpkg::parse(&String::from_utf8_lossy(bytes), path);
        self.packages.extend(parsed.packages);
        self.malformed(path, parsed.malformed);
    }

    fn rpm(&mut self, path: &str, held: &Held) {
        if rpm::Format::of(path) != rpm::Format::Sqlite {
            self.gap(Some(path), rpm::not_read(path));
            return;
        }
        let db = match held {
            Held::Bytes(b) => b,
            Held::Skipped(why) => {
                self.gap(Some(path), format!("not read: {why}"));
                return;
            }
        };
        // The log beside the file the path led to; one the limits skipped is left out, and
        // what it holds with it.
        let wal_path = format!("{path}{}", rpm::WAL_SUFFIX);
        let wal = match self.files.lookup(&wal_path) {
            Lookup::Found(_, Held::Bytes(b)) => Some(b.as_slice()),
            Lookup::Found(_, Held::Skipped(why)) => {
                self.gap(
                    Some(&wal_path),
                    format!("not read, so neither are transactions only it holds: {why}"),
                );
                None
            }
            _ => None,
        };
        match rpm::read_sqlite(db, wal, path) {
            Ok(read) => {
                self.packages.extend(read.packages);
                if let Some((row, why)) = read.first_malformed {
                    self.gap(
                        Some(path),
                        format!(
                            "{} package headers not readable and skipped (the first, row {row}: {why})",
                            read.malformed
                        ),
                    );
                }
            }
            Err(e) => self.gap(Some(path), format!("not read: {}", e.reason())),
        }
    }

    fn malformed(&mut self, path: &str, n: usize) {
        if n > 0 {
            self.gap(
                Some(path),
                format!("{n} entries without a package name or version skipped"),
            );
        }
    }

    fn gap(&mut self, path: Option<&str>, reason: String) {
        self.not_covered.push(NotCovered {
            path: path.map(str::to_owned),
            reason,
        });
    }
}

#[cfg(test)]
mod tests;
