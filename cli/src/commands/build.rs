//! `cairn build`: runs the builder, renders its progress, tags the image and writes outputs.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use cairn_builder::build::{BuildOptions, Event, build};
use cairn_layers::{Reference, Store};

use crate::args::BuildArgs;
use crate::commands::annotations::Annotations;
use crate::commands::build_opts::{self, Parsed};
use crate::commands::{attest, metadata, output};
use crate::progress::{self, Mode};

pub fn run(store: &Store, args: &BuildArgs) -> anyhow::Result<()> {
    // Everything the build writes to standard error goes to the log file; the error that
    // ends it is printed after the redirect is undone.
    let _log = args
        .compat
        .logfile
        .as_deref()
        .map(crate::commands::logfile::Redirect::to)
        .transpose()?;
    let tags = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = output::parse_outputs(&args.outputs, args.quiet)?;
    if args.push && tags.is_empty() {
        bail!("--push needs a name to push: give -t REGISTRY/REPOSITORY[:TAG]");
    }
    let pushing = args.push || outputs.iter().any(output::Output::pushes);
    let no_default =
        std::env::var_os("BUILDX_NO_DEFAULT_ATTESTATIONS").is_some_and(|v| !v.is_empty());
    let attestations = args.attest.resolve(pushing, no_default)?;
    let started = jiff::Timestamp::now().as_second();
    let Parsed {
        opts,
        annotations,
        registry: registry_options,
        _stdin_context,
        _ssh_agents,
        _git_context,
    } = build_opts::parse(args, attestations.any())?;
    if let Some(format) = args.check.checking()? {
        return crate::commands::check::run_build(store, &opts, format);
    }
    if output::rewrites_timestamps(&args.outputs) && opts.source_date_epoch.is_none() {
        eprintln!(
            "WARNING: rewrite-timestamp is specified, but no source-date-epoch was found \
             (give --source-date-epoch, or set SOURCE_DATE_EPOCH)"
        );
    }
    let requested = progress::requested(args.progress, |v| std::env::var(v).ok())?;
    let mode = progress::choose(requested, args.quiet, std::io::stderr().is_terminal());
    let rawjson = std::sync::Arc::new(crate::rawjson::RawJson::default());
    let plain = std::sync::Arc::new(progress::Plain::default());
    let render: Box<dyn FnMut(Event) + Send> = match mode {
        Mode::Tty => {
            let tty = progress::Tty::stderr();
            Box::new(move |e| tty.event(e))
        }
        Mode::Plain => {
            let p = plain.clone();
            Box::new(move |e| p.event(e))
        }
        Mode::RawJson => {
            let r = rawjson.clone();
            Box::new(move |e| r.event(e))
        }
        // Quiet still says where the time went when asked: the lines are on stderr.
        Mode::Quiet => Box::new(|e| {
            if let Event::Timing { id, phase, seconds } = e {
                eprintln!("{}", progress::timing_line(id, phase, seconds));
            }
        }),
    };
    // Stages of one wave report from their own threads; events reach the renderer one at a time.
    let render = std::sync::Mutex::new(render);
    let timings = args.debug_timings;
    let tally = metadata::Tally::default();
    let lints = std::sync::Mutex::new(Vec::new());
    let built = build(store, &opts, &|e| {
        tally.see(&e);
        if let Event::Lint(l) = &e
            && let Ok(mut v) = lints.lock()
        {
            v.push(crate::lintline::short(l));
        }
        // Timings are shown only when asked for.
        if (timings || !matches!(e, Event::Timing { .. }))
            && let Ok(mut r) = render.lock()
        {
            r(e);
        }
    });
    // Dropping the renderer settles the live bars before the error or the summary is printed.
    drop(render);
    // BuildKit's summary after the build, whether or not it succeeded.
    let lints = lints.into_inner().unwrap_or_default();
    if !lints.is_empty() && !matches!(mode, Mode::Quiet | Mode::RawJson) {
        let s = if lints.len() == 1 { "" } else { "s" };
        let mut text = format!("{} warning{s} found:\n", lints.len());
        for l in &lints {
            text.push_str(&format!(" - {l}\n"));
        }
        eprint!("{text}");
    }
    match (mode, &built) {
        (Mode::RawJson, Err(e)) => rawjson.finish(&e.to_string()),
        (Mode::Plain, Err(e)) => plain.fail(&e.to_string()),
        _ => {}
    }
    let built = built?;
    let ended = Ended {
        mode,
        tally: &tally,
        attestations: &attestations,
        started,
    };
    finish(
        store,
        args,
        (&opts, &annotations),
        built,
        &tags,
        &outputs,
        &registry_options,
        &ended,
    )
}

/// How the build went, for what comes after it.
struct Ended<'a> {
    mode: Mode,
    tally: &'a metadata::Tally,
    attestations: &'a crate::attest_args::Attestations,
    /// When the build started, in Unix seconds.
    started: i64,
}

/// After the build: names the result, writes the outputs, pushes, and reports the image.
#[allow(clippy::too_many_arguments)]
fn finish(
    store: &Store,
    args: &BuildArgs,
    (opts, annotations): (&BuildOptions, &Annotations),
    built: Vec<cairn_builder::build::Built>,
    tags: &[Reference],
    outputs: &[output::Output],
    registry_options: &cairn_layers::registry::RegistryOptions,
    ended: &Ended<'_>,
) -> anyhow::Result<()> {
    let Ended {
        mode,
        tally,
        attestations,
        started,
    } = *ended;
    // Push progress is plain text on stderr: kept out of a machine-read rawjson stream.
    let quiet = matches!(mode, Mode::Quiet | Mode::RawJson);
    // The descriptor annotations ride on the descriptor the store's index.json and an OCI
    // layout's name the result by.
    let (result, id) = match built.as_slice() {
        // Attestations go beside the images in an index, whose digest is the ID.
        _ if attestations.any() => {
            let index = attest::attach(
                store,
                &built,
                opts,
                (attestations, annotations),
                tags,
                started,
                matches!(mode, Mode::Quiet | Mode::RawJson),
            )?;
            let id = index.digest.clone();
            (index, id)
        }
        [one] => (
            annotations.describe(one.manifest.clone(), &one.platform),
            store.image(&one.manifest)?.id().clone(),
        ),
        // Several platforms: an image index of their images, whose digest is the ID (as in
        // docker's containerd image store).
        many => {
            let manifests = many
                .iter()
                .map(|b| {
                    let d = cairn_layers::image::Descriptor {
                        platform: Some(b.platform.clone()),
                        ..b.manifest.clone()
                    };
                    annotations.describe(d, &b.platform)
                })
                .collect();
            let index = annotations.put_index(store, manifests)?;
            let id = index.digest.clone();
            (index, id)
        }
    };
    for t in tags {
        store.tag(t, &result)?;
    }
    if tags.is_empty() && outputs.is_empty() {
        // docker's build without -t leaves a dangling image that its ID names: kept so, it
        // is listed, usable by ID (`cairn run $(cairn build -q .)`) and not pruned by a
        // build's housekeeping.
        store.keep_untagged(&result)?;
    }
    let mut pushed = None;
    for o in outputs {
        if let Some(p) = output::write_output(
            store,
            o,
            &built,
            &result,
            tags,
            opts,
            registry_options,
            quiet,
        )? {
            pushed = Some(p);
        }
    }
    if args.push {
        // The image a registry gets, its layers compressed as they leave the store: made once
        // for every name, and what the metadata reports.
        let exported = cairn_layers::deferred::for_export(store, &result)?;
        for t in tags {
            pushed = Some(output::push(store, &exported, t, registry_options, quiet)?);
        }
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, id.as_str())
            .with_context(|| format!("failed to write {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let value = metadata::metadata(
            store,
            &result,
            pushed.as_ref(),
            built.len() == 1,
            tags,
            tally,
        )?;
        metadata::write(f, &value)?;
    }
    match mode {
        // An output on standard output has it: the ID would corrupt the stream.
        Mode::Quiet if !outputs.iter().any(output::Output::to_stdout) => {
            writeln!(std::io::stdout().lock(), "{id}")?;
        }
        // Standard error carries only JSON lines.
        Mode::Quiet | Mode::RawJson => {}
        // A cache-only build writes no image (BuildKit says nothing of one either).
        Mode::Tty | Mode::Plain
            if !outputs.is_empty() && outputs.iter().all(|o| *o == output::Output::CacheOnly) => {}
        Mode::Tty | Mode::Plain => {
            let mut err = std::io::stderr().lock();
            writeln!(err, "writing image {id} done")?;
            for t in tags {
                writeln!(err, "naming to {t} done")?;
            }
        }
    }
    Ok(())
}
