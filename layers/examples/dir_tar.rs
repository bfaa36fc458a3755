//! Writes `write_dir(ARG1)` as an uncompressed layer tar to stdout, for benchmarking layer
//! generation: `cargo run --release -p cairn-layers --example dir_tar -- DIR > layer.tar`.
//! SOURCE_DATE_EPOCH, when set, clamps mtimes.

use std::io::Write;
use std::path::PathBuf;

use cairn_layers::diff::{TarOptions, write_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: dir_tar DIR > layer.tar")?
        .into();
    let clamp_mtime = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => Some(s.parse()?),
        Err(_) => None,
    };
    let opts = TarOptions {
        clamp_mtime,
        ..TarOptions::default()
    };
    let mut out = write_dir(&dir, std::io::stdout().lock(), &opts)?;
    out.flush()?;
    Ok(())
}
