//! A git repository as the build context (`cairn build https://host/repo.git#ref:subdir`): the
//! ref resolved and its commit checked out by the builder's fenced-in git, for the build's
//! length.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use cairn_builder::git::{self, Access, Checkout, GitLimits};

/// A checked-out context: removed when dropped.
pub(crate) struct GitContext {
    checkout: Checkout,
    /// The URL as shown (credentials hidden) and the commit it was.
    pub shown: String,
    pub commit: String,
    _scratch: tempfile::TempDir,
}

impl GitContext {
    /// The context directory: the checkout, or its subdirectory.
    pub(crate) fn context_dir(&self) -> &Path {
        &self.checkout.tree
    }

    /// The Dockerfile of a git context, as docker reads it: `-f FILE` (else `Dockerfile`,
    /// `dockerfile`, `Containerfile`) inside the checkout, never `..` out of it or through a
    /// symlink that leaves it (a repository is untrusted). Its path and the name shown.
    pub(crate) fn dockerfile(&self, file: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
        let rel = match file {
            Some(f) => f.to_path_buf(),
            None => super::parse::DOCKERFILE_NAMES
                .iter()
                .map(PathBuf::from)
                .find(|n| self.context_dir().join(n).symlink_metadata().is_ok())
                .unwrap_or_else(|| PathBuf::from("Dockerfile")),
        };
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "-f {}: with a git context the Dockerfile is a relative path inside the repository",
                rel.display()
            );
        }
        let real = self
            .context_dir()
            .join(&rel)
            .canonicalize()
            .with_context(|| format!("{} has no {}", self.shown, rel.display()))?;
        let root = self.context_dir().canonicalize()?;
        if !real.starts_with(&root) {
            bail!(
                "{}: the Dockerfile leads out of the repository {}",
                rel.display(),
                self.shown
            );
        }
        Ok((real, rel.display().to_string()))
    }
}

/// `spec` as a git context, fetched; None when it is no git URL (or is a local path).
pub(crate) fn open(
    spec: &Path,
    ssh_agent: Option<PathBuf>,
    limits: &GitLimits,
) -> anyhow::Result<Option<GitContext>> {
    let Some(text) = spec.to_str() else {
        return Ok(None);
    };
    if spec.exists() {
        return Ok(None);
    }
    let Some(parsed) = git::url::parse(text) else {
        return Ok(None);
    };
    let r = parsed.map_err(|e| anyhow::anyhow!("build context {}: {e}", git::redact(text)))?;
    let shown = git::redact(text);
    let access = Access { ssh_agent };
    let resolved =
        git::resolve(&r, &access, limits).with_context(|| format!("build context {shown}"))?;
    if let Some(want) = &r.checksum {
        git::check_checksum(&r, &resolved, want)
            .with_context(|| format!("build context {shown}"))?;
    }
    let scratch = tempfile::Builder::new()
        .prefix("cairn-git-context.")
        .tempdir()
        .context("failed to make a temp dir for the git context")?;
    let checkout = git::checkout(
        &r,
        &resolved,
        r.keep_git_dir.unwrap_or(false),
        scratch.path().join("checkout"),
        &access,
        limits,
    )
    .with_context(|| format!("build context {shown}"))?;
    if !checkout.tree.is_dir() {
        bail!("build context {shown}: {:?} is not a directory", r.subdir);
    }
    Ok(Some(GitContext {
        checkout,
        shown,
        commit: resolved.commit,
        _scratch: scratch,
    }))
}
