//! Turns a directory into a compressed layer blob file, printing the diff_id, digest and size:
//! the work `bench/layer-blob.sh` measures against `tar | pigz`.
//!
//!     dir_to_blob DIR OUT [gzip|zstd|none]
#![allow(clippy::print_stdout)]

use std::io::Write;

use cairn_layers::compress::{Compression, LayerWriter};
use cairn_layers::diff::{TarOptions, write_dir};
use cairn_layers::idmap::IdMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: dir_to_blob DIR OUT [gzip|zstd|none]".into());
    };
    let compression = match args.get(3).map(String::as_str) {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("none") => Compression::None,
        Some(other) => return Err(format!("unknown compression {other}").into()),
    };
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let opts = TarOptions {
        id_map: IdMap::identity(),
        clamp_mtime: None,
    };
    let writer = write_dir(
        std::path::Path::new(dir),
        LayerWriter::new(file, compression),
        &opts,
    )?;
    let (digests, mut file) = writer.finish()?;
    file.flush()?;
    println!(
        "diff_id {} ({} bytes)\ndigest  {} ({} bytes)",
        digests.diff_id, digests.uncompressed_size, digests.digest, digests.size
    );
    Ok(())
}
