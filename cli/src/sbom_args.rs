//! `cairn sbom`'s flags, kept out of args.rs so that file stays one screenful per command.
// The doc comments are clap's help text, in docker's usage notation.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::ValueEnum;

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// The image: NAME[:TAG], an ID or a digest in the store.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The platform's image of a multi-platform one [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The document's format.
    #[arg(long, value_enum, default_value_t = SbomFormat::SpdxJson)]
    pub format: SbomFormat,
    /// Write the document to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    SpdxJson,
}
