//! `cairn build --logfile FILE` (podman's): the build's progress and messages go to FILE, for
//! as long as the build runs; the error that ends a failed build still reaches the terminal.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Context;

/// Standard error sent to a file until dropped, when it is put back.
pub(crate) struct Redirect {
    saved: OwnedFd,
}

impl Redirect {
    /// Sends standard error to `path` (created, or emptied, mode 0600 as podman makes it).
    pub(crate) fn to(path: &Path) -> anyhow::Result<Redirect> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("--logfile: cannot write {}", path.display()))?;
        let saved = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stderr(), 3)
            .context("--logfile: cannot keep standard error")?;
        rustix::stdio::dup2_stderr(&file).context("--logfile: cannot redirect standard error")?;
        Ok(Redirect { saved })
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        let _ = rustix::stdio::dup2_stderr(&self.saved);
    }
}
