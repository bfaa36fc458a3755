//! A stage of many ENV lines: parsing it and applying its metadata steps.
//!
//! `cargo bench -p cairn-builder --bench env_lines` parses a Dockerfile of 100,000
//! `ENV Vi=valuei` lines (then one ENV naming the first and last) and applies them to a
//! config as a build does, timing each part. Every step used to copy the whole environment,
//! which made 100,000 lines take hours; `CAIRN_BENCH_LINES` changes the count, to see how the
//! time grows. bench/env-lines.sh times the same through `cairn build`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;

use cairn_layers::image::ImageConfig;

fn main() {
    let n: usize = std::env::var("CAIRN_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut df = String::from("FROM scratch\n");
    for i in 0..n {
        df.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    df.push_str(&format!("ENV LAST=$V0-$V{}\n", n - 1));

    let t = Instant::now();
    let parsed = cairn_parser::parse("Dockerfile", &df).expect("the Dockerfile parses");
    let parse = t.elapsed();

    let t = Instant::now();
    let mut config = ImageConfig::scratch();
    cairn_builder::meta::apply_all(
        &mut config,
        &parsed.stages[0].instructions,
        &BTreeMap::new(),
        '\\',
    )
    .expect("the ENV lines apply");
    let apply = t.elapsed();

    let last = config.config.env.last().cloned().unwrap_or_default();
    assert_eq!(last, format!("LAST=value0-value{}", n - 1));
    println!(
        "{n} ENV lines: parse {:.3}s, apply {:.3}s ({:.2} µs a line)",
        parse.as_secs_f64(),
        apply.as_secs_f64(),
        apply.as_secs_f64() * 1e6 / n as f64
    );
}
