//! What a COPY or ADD asks for, its words expanded: sources, destination, options.

use std::path::PathBuf;

use super::error::CopyError;
use crate::error::Result;
use crate::users::Owner;

/// One thing to copy: a path in the source root, literal content (a heredoc), or a file from
/// outside the source root (ADD's download), written as a regular file named `name`.
#[derive(Debug, Clone)]
pub enum CopySource {
    Path(String),
    Content {
        name: String,
        data: Vec<u8>,
    },
    /// Mode 0600 before `--chmod`, as Docker gives an ADD from a URL; `mtime` in seconds.
    /// `unpack`: an archive is extracted into the destination instead (`ADD --unpack=true`).
    File {
        name: String,
        path: PathBuf,
        mtime: i64,
        unpack: bool,
    },
}

/// A COPY or ADD, its words already expanded.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub sources: Vec<CopySource>,
    /// As written (relative to `workdir` unless absolute); a trailing `/` means a directory.
    pub dest: String,
    pub workdir: String,
    pub owner: Owner,
    /// `--chmod`, octal or symbolic.
    pub chmod: Option<String>,
    /// SOURCE_DATE_EPOCH: no mtime later than this.
    pub clamp_mtime: Option<i64>,
    /// ADD: unpack local tar archives into the destination (unless `--unpack=false`).
    pub unpack_archives: bool,
    /// `--parents`: keep each source's directories (`a/b/f` lands at `DEST/a/b/f`).
    pub parents: bool,
    /// `--exclude`: .dockerignore-style patterns, matched against paths below each source and
    /// against each source itself.
    pub excludes: Vec<String>,
}

/// `--chmod` (octal, or symbolic as BuildKit reads it), parsed the first time it is applied
/// and not again for every entry of the layer.
#[derive(Debug)]
pub(crate) struct Chmod<'a> {
    spec: Option<&'a str>,
    mode: std::cell::OnceCell<cairn_parser::chmod::Mode>,
}

impl<'a> Chmod<'a> {
    pub(crate) fn new(spec: Option<&'a str>) -> Self {
        Chmod {
            spec,
            mode: std::cell::OnceCell::new(),
        }
    }

    /// `mode` with `--chmod` applied; `mode` itself without one.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> Result<u32> {
        let Some(spec) = self.spec else {
            return Ok(mode);
        };
        let parsed = match self.mode.get() {
            Some(m) => m,
            None => {
                let m = cairn_parser::chmod::Mode::parse(spec).map_err(CopyError::from)?;
                self.mode.get_or_init(|| m)
            }
        };
        Ok(parsed.apply(mode, is_dir))
    }
}
