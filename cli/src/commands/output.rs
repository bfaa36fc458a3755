//! `cairn build -o`: the outputs a build writes besides the store (files, directories, standard
//! output, registries), and the push that `--push` and `type=registry` share.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_builder::build::{BuildOptions, Built};
use cairn_layers::archive::{self, SaveFormat, ToSave};
use cairn_layers::image::Descriptor;
use cairn_layers::platform::Platform;
use cairn_layers::{Reference, Store};

/// One `-o` output. A `dest` of `-` is standard output (BuildKit's spelling), for the formats
/// that are one stream: a tar of the filesystem, an OCI archive, a docker archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// `type=oci`: a layout directory, or an OCI archive when `dest` is `-` (as buildx).
    Oci(PathBuf),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    Local(PathBuf),
    Tar(PathBuf),
    /// Push to this reference (`type=registry,name=REF`, or `type=image,name=REF,push=true`,
    /// which also names the image in the store).
    Registry {
        name: Reference,
        tag: bool,
        /// `push-by-digest=true`: pushed by its digest alone, no tag (BuildKit's option, for
        /// per-architecture builds that `cairn manifest` stitches into one index later).
        by_digest: bool,
    },
    /// `type=cacheonly`: the build's steps are recorded in the cache and nothing else is
    /// written (no dangling image is kept either).
    CacheOnly,
}

impl Output {
    /// Whether this output pushes to a registry (provenance is on by default then).
    pub(crate) fn pushes(&self) -> bool {
        matches!(self, Output::Registry { .. })
    }

    /// Whether this output goes to standard output.
    pub(crate) fn to_stdout(&self) -> bool {
        match self {
            Output::Oci(d) | Output::OciArchive(d) | Output::DockerArchive(d) | Output::Tar(d) => {
                is_stdout(d)
            }
            Output::Local(_) | Output::Registry { .. } | Output::CacheOnly => false,
        }
    }
}

fn is_stdout(dest: &Path) -> bool {
    dest == Path::new("-")
}

/// Every `-o` spec, checked together: one at most may write to standard output, which must
/// not be a terminal, and `-q` (whose image ID goes there too) cannot share it. Checked before
/// the build so a long build does not end in a refusal.
pub(crate) fn parse_outputs(specs: &[String], quiet: bool) -> anyhow::Result<Vec<Output>> {
    let outputs = specs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let to_stdout = outputs.iter().filter(|o| o.to_stdout()).count();
    if to_stdout > 1 {
        bail!("--output: {to_stdout} outputs name standard output (dest=-); give one at most");
    }
    if to_stdout == 1 {
        if quiet {
            bail!("--output to standard output (dest=-) and -q: both would write there");
        }
        refuse_terminal("--output dest=-")?;
    }
    Ok(outputs)
}

fn parse_output(spec: &str) -> anyhow::Result<Output> {
    // `-o -` is BuildKit's shorthand for a tar of the filesystem on standard output.
    if spec == "-" {
        return Ok(Output::Tar(PathBuf::from("-")));
    }
    if !spec.contains('=') {
        return Ok(Output::Local(PathBuf::from(spec)));
    }
    let mut kind = None;
    let mut dest = None;
    let (mut name, mut push, mut by_digest) = (None, None, false);
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_owned()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some(("name", v)) => name = Some(v.to_owned()),
            Some(("push", v)) => push = Some(v == "true"),
            Some(("push-by-digest", v)) => by_digest = v == "true",
            // BuildKit's clamp of the layers' file times to SOURCE_DATE_EPOCH: cairn's new
            // layers always have it when an epoch is given (see `rewrites_timestamps`).
            Some(("rewrite-timestamp", "true" | "false")) => {}
            Some(("rewrite-timestamp", v)) => {
                bail!("--output {spec:?}: rewrite-timestamp is true or false, not {v:?}")
            }
            _ => bail!("--output {spec:?}: unknown field {field:?} (use type=...,dest=...)"),
        }
    }
    if let Some(kind @ ("registry" | "image")) = kind.as_deref() {
        let name = name.with_context(|| format!("--output {spec:?} needs name=REF"))?;
        let name = Reference::parse(&name)?;
        return match (kind, push) {
            ("registry", None | Some(true)) => Ok(Output::Registry {
                name,
                tag: false,
                by_digest,
            }),
            ("image", Some(true)) => Ok(Output::Registry {
                name,
                tag: !by_digest,
                by_digest,
            }),
            _ => bail!("--output {spec:?}: type=image without push=true is what -t does"),
        };
    }
    if kind.as_deref() == Some("cacheonly") {
        if dest.is_some() {
            bail!("--output {spec:?}: type=cacheonly writes nothing, so takes no dest");
        }
        return Ok(Output::CacheOnly);
    }
    let dest = dest.with_context(|| format!("--output {spec:?} needs dest=PATH"))?;
    Ok(match kind.as_deref() {
        Some("oci") => Output::Oci(dest),
        Some("oci-archive") => Output::OciArchive(dest),
        Some("docker-archive" | "docker") => Output::DockerArchive(dest),
        Some("local") if is_stdout(&dest) => bail!(
            "--output {spec:?}: type=local writes a directory; use type=tar,dest=- for a tar \
             on standard output"
        ),
        Some("local") => Output::Local(dest),
        Some("tar") => Output::Tar(dest),
        Some(other) => bail!(
            "--output type={other} is not one of oci, oci-archive, docker-archive, local, tar, \
             registry, cacheonly"
        ),
        None => bail!("--output {spec:?} needs type=..."),
    })
}

/// Whether an `-o` spec asks for `rewrite-timestamp=true`: a build without an epoch then gets
/// BuildKit's warning, as there is nothing to clamp to.
pub(crate) fn rewrites_timestamps(specs: &[String]) -> bool {
    specs
        .iter()
        .any(|s| s.split(',').any(|f| f == "rewrite-timestamp=true"))
}

/// Refuses to write an archive to a terminal, where it would only scramble the screen.
pub(crate) fn refuse_terminal(what: &str) -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() {
        bail!(
            "{what}: standard output is a terminal; redirect it to a file or a pipe, or name a \
             file"
        );
    }
    Ok(())
}

/// Writes one `-o` output of the build: `result` is its image, or the index of its images
/// for several platforms, which the OCI outputs and a push keep whole, and the filesystem
/// outputs split into one directory per platform. A push gives back what the registry got
/// (its digest differs from `result`'s: layers are compressed on the way out).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_output(
    store: &Store,
    o: &Output,
    built: &[Built],
    result: &Descriptor,
    tags: &[Reference],
    opts: &BuildOptions,
    registry: &cairn_layers::registry::RegistryOptions,
    quiet: bool,
) -> anyhow::Result<Option<Descriptor>> {
    let save = |format, dest: &Path| {
        let images = [ToSave {
            reference: tags.first().cloned(),
            manifest: result.clone(),
        }];
        if is_stdout(dest) {
            let mut out = std::io::stdout().lock();
            archive::save_to_writer(store, &images, format, &Platform::host(), &mut out)
                .context("failed to write the image to standard output")
        } else {
            archive::save(store, &images, format, dest)
                .with_context(|| format!("failed to write {}", dest.display()))
        }
    };
    let single = match built {
        [one] => Some(one),
        _ => None,
    };
    match (o, single) {
        // buildx writes an OCI archive for `type=oci,dest=-`: a directory cannot be a stream.
        (Output::Oci(d), _) if is_stdout(d) => save(SaveFormat::OciArchive, d)?,
        (Output::Oci(d), _) => save(SaveFormat::OciDir, d)?,
        (Output::OciArchive(d), _) => save(SaveFormat::OciArchive, d)?,
        (Output::DockerArchive(d), Some(_)) => save(SaveFormat::DockerArchive, d)?,
        (Output::DockerArchive(d), None) => bail!(
            "--output type=docker,dest={}: a docker archive holds one platform's image; \
             build one --platform, or write type=oci or type=oci-archive, which keep the index",
            d.display()
        ),
        (Output::Local(d), Some(one)) => cairn_builder::output::local(store, one, d)?,
        // BuildKit's layout: one directory per platform, named like `linux_arm64`.
        (Output::Local(d), None) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("failed to create {}", d.display()))?;
            for b in built {
                let sub = d.join(b.platform.to_string().replace('/', "_"));
                cairn_builder::output::local(store, b, &sub)?;
            }
        }
        (Output::Tar(d), Some(one)) if is_stdout(d) => {
            let out = std::io::stdout().lock();
            cairn_builder::output::tar_to_writer(
                store,
                one,
                out,
                Path::new("standard output"),
                opts.source_date_epoch,
            )?
        }
        (Output::Tar(d), Some(one)) => {
            cairn_builder::output::tar(store, one, d, opts.source_date_epoch)?
        }
        (Output::Tar(d), None) => bail!(
            "--output type=tar,dest={}: a tar holds one platform's filesystem; build one \
             --platform, or use type=local, which writes one directory per platform",
            d.display()
        ),
        (
            Output::Registry {
                name,
                tag,
                by_digest,
            },
            _,
        ) => {
            if *tag {
                store.tag(name, result)?;
            }
            // The image the registry gets: layers compressed as they leave the store.
            let exported = cairn_layers::deferred::for_export(store, result)?;
            let dest = if *by_digest {
                name.with_digest(&exported.digest)?
            } else {
                name.clone()
            };
            return push(store, &exported, &dest, registry, quiet).map(Some);
        }
        (Output::CacheOnly, _) => {}
    }
    Ok(None)
}

/// Pushes `manifest` (as [`cairn_layers::deferred::for_export`] gives it), its progress as
/// plain lines unless quiet; gives back what the registry holds.
pub(crate) fn push(
    store: &Store,
    manifest: &Descriptor,
    dest: &Reference,
    opts: &cairn_layers::registry::RegistryOptions,
    quiet: bool,
) -> anyhow::Result<Descriptor> {
    let events = crate::commands::registry::render_push(quiet);
    let digest = cairn_layers::registry::push(store, manifest, dest, opts, &events)
        .with_context(|| format!("failed to push {}", dest.familiar()))?;
    if !quiet {
        writeln!(
            std::io::stderr().lock(),
            "pushed {} {digest}",
            dest.familiar()
        )?;
    }
    Ok(Descriptor {
        digest,
        ..manifest.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_and_cacheonly_specs() {
        let tar = Output::Tar(PathBuf::from("-"));
        assert_eq!(parse_output("-").unwrap(), tar);
        assert_eq!(parse_output("type=tar,dest=-").unwrap(), tar);
        assert!(parse_output("type=oci,dest=-").unwrap().to_stdout());
        assert!(
            parse_output("type=docker-archive,dest=-")
                .unwrap()
                .to_stdout()
        );
        assert!(!parse_output("type=oci,dest=out").unwrap().to_stdout());
        assert_eq!(parse_output("type=cacheonly").unwrap(), Output::CacheOnly);
        assert!(parse_output("type=cacheonly,dest=x").is_err());
        assert!(parse_output("type=local,dest=-").is_err());
        let two = ["-".to_owned(), "type=oci,dest=-".to_owned()];
        let err = parse_outputs(&two, false).unwrap_err().to_string();
        assert!(err.contains("2 outputs"), "{err}");
        let err = parse_outputs(&two[..1], true).unwrap_err().to_string();
        assert!(err.contains("-q"), "{err}");
    }
}
