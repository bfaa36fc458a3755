//! `cairn images` and `cairn history`: the store's images and an image's steps as docker lists
//! them — tables, JSON, `-q`, `--filter`, and `--format` templates in docker's spelling.

use std::io::Write;

use anyhow::{Context, bail};
use cairn_layers::Digest;
use cairn_layers::Reference;
use cairn_layers::image::Descriptor;
use cairn_layers::platform::Platform;
use cairn_layers::registry::is_index;
use cairn_layers::store::{Image, Store};
use serde_json::{Value, json};

use crate::args::{HistoryArgs, ImagesArgs};

/// Seconds from an RFC 3339 time until now; None when there is none or it does not parse.
pub(crate) fn seconds_since(ts: Option<&str>) -> Option<i64> {
    let ts = ts?.parse::<jiff::Timestamp>().ok()?;
    Some(jiff::Timestamp::now().as_second() - ts.as_second())
}

/// docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours".
pub(crate) fn human_duration(secs: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (minutes, hours) = (secs / 60, (secs as f64 / 3600.0 + 0.5) as i64);
    match secs {
        ..1 => "Less than a second".into(),
        1..60 => plural(secs, "second"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => plural(minutes, "minute"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => plural(hours, "hour"),
        _ if hours < 24 * 7 * 2 => plural(hours / 24, "day"),
        _ if hours < 24 * 30 * 2 => plural(hours / 24 / 7, "week"),
        _ if hours < 24 * 365 * 2 => plural(hours / 24 / 30, "month"),
        _ => plural(hours / 24 / 365, "year"),
    }
}

/// "3 hours ago", as docker shows creation times (its HumanDuration and " ago").
pub(crate) fn ago(created: Option<&str>) -> String {
    match seconds_since(created) {
        Some(secs) => format!("{} ago", human_duration(secs.max(0))),
        None => "N/A".to_owned(),
    }
}

/// Bytes as docker shows them: 4.26MB (decimal units).
pub(crate) fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + units[i]
    }
}

/// How a listing is printed: `table`, `json`, or a template (`table TEMPLATE` with a header).
pub(crate) enum Format {
    Table,
    Json,
    Template { text: String, header: bool },
}

impl Format {
    pub(crate) fn parse(spec: &str) -> Format {
        match spec.trim() {
            "" | "table" => Format::Table,
            "json" => Format::Json,
            t => match t.strip_prefix("table ") {
                Some(rest) => Format::Template {
                    text: unescape(rest),
                    header: true,
                },
                None => Format::Template {
                    text: unescape(t),
                    header: false,
                },
            },
        }
    }
}

/// docker's formatter turns the two-character `\t` and `\n` a shell passes into a tab and a
/// newline.
fn unescape(t: &str) -> String {
    t.replace("\\t", "\t").replace("\\n", "\n")
}

/// Fills `{{.Field}}` (and `{{json .Field}}`, `{{json .}}`) from `fields`; an unknown field is
/// an error naming it, as docker's template errors do.
fn render(template: &str, fields: &serde_json::Map<String, Value>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("--format {template:?}: an unclosed {{{{"))?;
        let action = after[..end].trim();
        let (json_of, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let value = match path {
            "." => Value::Object(fields.clone()),
            p => {
                let name = p.strip_prefix('.').with_context(|| {
                    format!("--format {template:?}: {{{{{action}}}}} is not .Field")
                })?;
                fields.get(name).cloned().with_context(|| {
                    let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                    format!(
                        "--format: no field {name:?} (there are {})",
                        known.join(", ")
                    )
                })?
            }
        };
        match (&value, json_of) {
            (_, true) => out.push_str(&value.to_string()),
            (Value::String(s), false) => out.push_str(s),
            (Value::Null, false) => out.push_str("<no value>"),
            (v, false) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Prints `rows` (each an object of docker's field names) as `format` asks, `columns` naming
/// the table's fields and headers.
pub(crate) fn print(
    format: &Format,
    rows: &[serde_json::Map<String, Value>],
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Template { text, header } => {
            if *header {
                let names: serde_json::Map<String, Value> = columns
                    .iter()
                    .map(|(f, h)| ((*f).to_owned(), Value::String((*h).to_owned())))
                    .collect();
                writeln!(out, "{}", render(text, &names)?)?;
            }
            for r in rows {
                writeln!(out, "{}", render(text, r)?)?;
            }
        }
        Format::Table => {
            let text = |r: &serde_json::Map<String, Value>, f: &str| match r.get(f) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| columns.iter().map(|(f, _)| text(r, f)).collect())
                .collect();
            let head: Vec<String> = columns.iter().map(|(_, h)| (*h).to_owned()).collect();
            let mut widths: Vec<usize> = head.iter().map(String::len).collect();
            for row in &table {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            for row in std::iter::once(&head).chain(&table) {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect();
                writeln!(out, "{}", line.join("   ").trim_end())?;
            }
        }
    }
    Ok(())
}

/// One line of `cairn images`: an image, or an index of them shown as one.
struct Row {
    reference: Option<Reference>,
    /// The image ID: the config's digest, or an index's own.
    id: Digest,
    /// The manifest's or index's digest.
    digest: Digest,
    created: Option<String>,
    size: u64,
    /// The platforms of an index the store holds; None for an image.
    platforms: Option<Vec<String>>,
}

impl Row {
    fn of_image(reference: Option<Reference>, img: &Image) -> Row {
        Row {
            reference,
            id: img.id().clone(),
            digest: img.manifest_descriptor.digest.clone(),
            created: img.config.created.clone(),
            size: img.size(),
            platforms: None,
        }
    }

    /// An index, by the images of it the store holds: their sizes summed, the host's
    /// creation time (else the newest).
    fn of_index(
        store: &Store,
        reference: Option<Reference>,
        d: &Descriptor,
    ) -> anyhow::Result<Row> {
        let mut images = Vec::new();
        let mut attestations = 0;
        for m in store.images_in(d)? {
            let img = store.image(&m)?;
            // Attestation manifests are about an image, not one of their own (docker too
            // lists them under no platform); their bytes count.
            if cairn_layers::attest::is_attestation(&m) {
                attestations += img.size();
                continue;
            }
            let platform = m
                .platform
                .clone()
                .unwrap_or_else(|| Platform::of_config(&img.config));
            images.push((platform, img));
        }
        let host = Platform::host();
        let created = images
            .iter()
            .find(|(p, _)| p.matches(&host))
            .map(|(_, i)| i.config.created.clone())
            .unwrap_or_else(|| {
                images
                    .iter()
                    .filter_map(|(_, i)| i.config.created.clone())
                    .max()
            });
        Ok(Row {
            reference,
            id: d.digest.clone(),
            digest: d.digest.clone(),
            created,
            size: images.iter().map(|(_, i)| i.size()).sum::<u64>() + attestations,
            platforms: Some(images.iter().map(|(p, _)| p.to_string()).collect()),
        })
    }

    /// docker's field names, as `--format` templates and `--format json` give them.
    fn fields(&self, no_trunc: bool) -> serde_json::Map<String, Value> {
        let r = &self.reference;
        let id = if no_trunc {
            self.id.to_string()
        } else {
            self.id.short().to_owned()
        };
        let mut m = serde_json::Map::new();
        let repository = r
            .as_ref()
            .map_or_else(|| "<none>".to_owned(), Reference::familiar_repository);
        m.insert("Repository".into(), json!(repository));
        m.insert(
            "Tag".into(),
            json!(r.as_ref().and_then(Reference::tag).unwrap_or("<none>")),
        );
        m.insert("ID".into(), json!(id));
        m.insert("Digest".into(), json!(self.digest.to_string()));
        m.insert("CreatedSince".into(), json!(ago(self.created.as_deref())));
        m.insert(
            "CreatedAt".into(),
            json!(self.created.clone().unwrap_or_default()),
        );
        m.insert("Size".into(), json!(human_size(self.size)));
        m.insert(
            "Platforms".into(),
            json!(self.platforms.as_ref().map(|p| p.join(","))),
        );
        m
    }
}

/// `--filter` and the `REPOSITORY[:TAG]` argument: which rows are listed.
struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
}

impl Filters {
    fn parse(args: &ImagesArgs) -> anyhow::Result<Filters> {
        let mut f = Filters {
            dangling: None,
            references: args.reference.iter().cloned().collect(),
        };
        for spec in &args.filter {
            match spec.split_once('=') {
                Some(("dangling", v)) => {
                    f.dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("--filter {spec:?}: dangling takes true or false"),
                    })
                }
                Some(("reference", v)) => f.references.push(v.to_owned()),
                _ => bail!(
                    "--filter {spec:?}: cairn filters by dangling=true|false and reference=PATTERN"
                ),
            }
        }
        Ok(f)
    }

    /// docker's rule: a reference pattern matches the familiar repository, or repository:tag,
    /// as a shell glob.
    fn keeps(&self, row: &Row) -> bool {
        if let Some(d) = self.dangling
            && d != row.reference.is_none()
        {
            return false;
        }
        if self.references.is_empty() {
            return true;
        }
        let Some(r) = &row.reference else {
            return false;
        };
        let repo = r.familiar_repository();
        let full = format!("{repo}:{}", r.tag().unwrap_or_default());
        self.references.iter().any(|p| {
            path_match(p.as_bytes(), repo.as_bytes()) || path_match(p.as_bytes(), full.as_bytes())
        })
    }
}

/// Go's path.Match for `*` and `?` (neither crosses a `/`), which docker's reference filter
/// uses; other characters match themselves.
fn path_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            path_match(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && path_match(p, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => path_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b && *a != b'?' => path_match(&p[1..], &s[1..]),
        _ => false,
    }
}

pub fn images(store: &Store, args: &ImagesArgs) -> anyhow::Result<()> {
    let filters = Filters::parse(args)?;
    let mut rows: Vec<Row> = Vec::new();
    for t in store.tags()? {
        let what = || format!("image {}", t.reference.familiar());
        let row = if is_index(&t.manifest.media_type) {
            Row::of_index(store, Some(t.reference.clone()), &t.manifest).with_context(what)?
        } else {
            Row::of_image(
                Some(t.reference.clone()),
                &store.image(&t.manifest).with_context(what)?,
            )
        };
        rows.push(row);
    }
    // Dangling images, as docker lists them: `<none>` for repository and tag.
    // One whose blobs are gone (an older cairn's prune did not know them) is not listed: it
    // names nothing, and the next prune forgets it.
    for m in store.untagged()? {
        let row = if is_index(&m.media_type) {
            Row::of_index(store, None, &m).ok()
        } else {
            store.image(&m).ok().map(|img| Row::of_image(None, &img))
        };
        rows.extend(row);
    }
    rows.retain(|r| filters.keeps(r));
    let mut out = std::io::stdout().lock();
    if args.quiet {
        // docker prints each ID once.
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            let id = if args.no_trunc {
                r.id.to_string()
            } else {
                r.id.short().to_owned()
            };
            if seen.insert(id.clone()) {
                writeln!(out, "{id}")?;
            }
        }
        return Ok(());
    }
    let fields: Vec<_> = rows.iter().map(|r| r.fields(args.no_trunc)).collect();
    let format = Format::parse(&args.format);
    if let Format::Json = format {
        // The JSON listing keeps the fields scripts have read since it was added.
        let v: Vec<Value> = rows
            .iter()
            .map(|row| {
                let r = &row.reference;
                let mut v = json!({
                    "repository": r.as_ref().map_or_else(|| "<none>".to_owned(), Reference::familiar_repository),
                    "tag": r.as_ref().and_then(Reference::tag),
                    "name": r.as_ref().map(Reference::to_string),
                    "id": row.id,
                    "digest": row.digest,
                    "created": row.created,
                    "size": row.size,
                });
                if let Some(p) = &row.platforms {
                    v["platforms"] = json!(p);
                }
                v
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut columns = vec![("Repository", "REPOSITORY"), ("Tag", "TAG")];
    if args.digests {
        columns.push(("Digest", "DIGEST"));
    }
    columns.extend([
        ("ID", "IMAGE ID"),
        ("CreatedSince", "CREATED"),
        ("Size", "SIZE"),
    ]);
    // The PLATFORMS column only when an index is listed: single images' output stays docker's.
    if rows.iter().any(|r| r.platforms.is_some()) {
        columns.push(("Platforms", "PLATFORMS"));
    }
    drop(out);
    print(&format, &fields, &columns)
}

/// `cairn history IMAGE`: the image's history entries, newest first, each with the size of
/// the layer it made.
pub fn history(store: &Store, args: &HistoryArgs) -> anyhow::Result<()> {
    let platform = args
        .platform
        .as_deref()
        .map(super::registry::parse_platform)
        .transpose()?;
    let (_, manifest) = store.resolve_image(&args.image, platform.as_ref())?;
    let img = store.image(&manifest)?;
    let mut layers = img.manifest.layers.iter();
    let mut rows = Vec::new();
    for h in &img.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map_or(0, |l| l.size)
        };
        let created_by = h.created_by.clone().unwrap_or_default();
        let shown = if args.no_trunc || created_by.chars().count() <= 45 {
            created_by.clone()
        } else {
            created_by.chars().take(44).collect::<String>() + "…"
        };
        let mut m = serde_json::Map::new();
        m.insert("ID".into(), json!("<missing>"));
        m.insert("CreatedSince".into(), json!(ago(h.created.as_deref())));
        m.insert(
            "CreatedAt".into(),
            json!(h.created.clone().unwrap_or_default()),
        );
        m.insert("CreatedBy".into(), json!(shown));
        m.insert("Size".into(), json!(human_size(size)));
        m.insert(
            "Comment".into(),
            json!(h.comment.clone().unwrap_or_default()),
        );
        rows.push(m);
    }
    rows.reverse();
    // docker names the image on its newest entry; the others came from elsewhere.
    if let Some(top) = rows.first_mut() {
        let id = if args.no_trunc {
            img.id().to_string()
        } else {
            img.id().short().to_owned()
        };
        top.insert("ID".into(), json!(id));
    }
    if args.quiet {
        let mut out = std::io::stdout().lock();
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(());
    }
    let columns = [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ];
    print(&Format::parse(&args.format), &rows, &columns)
}

/// Blobs (by digest) and their sizes, that the images `tops` reach.
fn reached(
    store: &Store,
    tops: &[Descriptor],
) -> anyhow::Result<std::collections::BTreeMap<Digest, u64>> {
    let mut out = std::collections::BTreeMap::new();
    for top in tops {
        out.insert(top.digest.clone(), top.size);
        for m in store.images_in(top)? {
            let img = store.image(&m)?;
            out.insert(m.digest.clone(), m.size);
            out.insert(img.manifest.config.digest.clone(), img.manifest.config.size);
            for l in &img.manifest.layers {
                out.insert(l.digest.clone(), l.size);
            }
        }
    }
    Ok(out)
}

/// `cairn system df`: what images and the build cache take in the store, and what `prune`
/// (dangling images) and `prune --all` (the cache too) would free.
pub fn df(store: &Store, args: &crate::args::DfArgs) -> anyhow::Result<()> {
    let tagged: Vec<Descriptor> = store.tags()?.into_iter().map(|t| t.manifest).collect();
    let dangling = store.untagged()?;
    let kept = reached(store, &tagged)?;
    let all_images: Vec<Descriptor> = tagged.iter().chain(&dangling).cloned().collect();
    let images = reached(store, &all_images)?;
    let images_size: u64 = images.values().sum();
    let dangling_only: u64 = images
        .iter()
        .filter(|(d, _)| !kept.contains_key(*d))
        .map(|(_, s)| s)
        .sum();
    // Every other blob is the build cache's (layers and records no image names) or garbage a
    // prune removes either way.
    let mut cache_size = 0;
    let blobs = store.root().join("blobs/sha256");
    for e in std::fs::read_dir(&blobs)
        .with_context(|| format!("failed to read {}", blobs.display()))?
        .flatten()
    {
        let named = format!("sha256:{}", e.file_name().to_string_lossy())
            .parse::<Digest>()
            .ok();
        if named.is_none_or(|d| !images.contains_key(&d)) {
            cache_size += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let records = std::fs::read_dir(store.root().join("buildcache/records"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rows = [
        json!({"Type": "Images", "TotalCount": all_images.len(), "Active": tagged.len(),
               "Size": human_size(images_size), "Reclaimable": human_size(dangling_only)}),
        json!({"Type": "Build Cache", "TotalCount": records, "Active": 0,
               "Size": human_size(cache_size), "Reclaimable": human_size(cache_size)}),
    ];
    let rows: Vec<serde_json::Map<String, Value>> = rows
        .into_iter()
        .filter_map(|r| r.as_object().cloned())
        .collect();
    let format = match args.format {
        crate::args::ListFormat::Json => Format::Json,
        crate::args::ListFormat::Table => Format::Table,
    };
    let columns = [
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ];
    print(&format, &rows, &columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        for (secs, want) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (150, "2 minutes"),
            (3600, "About an hour"),
            (7200, "2 hours"),
            (3 * 86400, "3 days"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn reference_patterns_match_as_go_path_match() {
        let cases = [
            ("busybox", "busybox", true),
            ("busy*", "busybox", true),
            ("busybox:*", "busybox:latest", true),
            ("*", "someone/app", false),
            ("*/*", "someone/app", true),
            ("b?sybox", "busybox", true),
            ("busybox", "busybox2", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(path_match(p.as_bytes(), s.as_bytes()), want, "{p} {s}");
        }
    }

    #[test]
    fn templates_fill_docker_fields() {
        let mut f = serde_json::Map::new();
        f.insert("Repository".into(), json!("busybox"));
        f.insert("Tag".into(), json!("latest"));
        f.insert("Platforms".into(), Value::Null);
        let cases: &[(&str, Option<&str>)] = &[
            ("{{.Repository}}:{{.Tag}}", Some("busybox:latest")),
            ("{{ .Repository }}\\t{{.Tag}}", Some("busybox\tlatest")),
            ("{{json .Tag}}", Some("\"latest\"")),
            ("{{.Platforms}}", Some("<no value>")),
            ("plain", Some("plain")),
            ("{{.Nope}}", None),
            ("{{.Tag", None),
            ("{{Tag}}", None),
        ];
        for (t, want) in cases {
            let got = render(&unescape(t), &f).ok();
            assert_eq!(got.as_deref(), *want, "{t}");
        }
    }
}
