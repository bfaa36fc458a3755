//! What one platform's build did, for its provenance: the images it resolved, the context
//! files it read and the steps it took with their cache keys.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cairn_layers::Digest;
use cairn_layers::image::Descriptor;
use cairn_layers::platform::Platform;

/// An image the build used (a FROM base, `COPY --from`, a RUN mount's source), as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The name the Dockerfile gave it, as expanded.
    pub name: String,
    /// The image manifest's digest.
    pub digest: Digest,
    pub platform: Platform,
}

/// One step of a stage, as it ran or came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTrace {
    /// The stage's name, else `stage-N`.
    pub stage: String,
    /// The instruction as written.
    pub instruction: String,
    /// The cache key the stage's chain reached after the step.
    pub key: String,
    pub cached: bool,
}

/// The record of one platform's build (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildTrail {
    /// Each image once, ordered by name.
    pub materials: Vec<Material>,
    /// Context files read by COPY and ADD, by path relative to the context: their content
    /// digests as the cache keys saw them.
    pub context_files: BTreeMap<String, String>,
    /// Steps in the order they finished.
    pub steps: Vec<StepTrace>,
    /// Git repositories ADD fetched: `REMOTE#REF` (credentials hidden) → the commit it was.
    pub git_sources: BTreeMap<String, String>,
}

impl BuildTrail {
    /// One digest of the context files the build read: the sha256 of their sorted
    /// `path NUL digest NL` lines. Files the build never read do not change it.
    pub fn context_digest(&self) -> Digest {
        let mut text = Vec::new();
        for (path, digest) in &self.context_files {
            text.extend_from_slice(path.as_bytes());
            text.push(0);
            text.extend_from_slice(digest.as_bytes());
            text.push(b'\n');
        }
        Digest::of(&text)
    }
}

/// A [`BuildTrail`] filled in by the stages of a build as they run, from their threads.
#[derive(Debug, Default)]
pub(crate) struct Trail(Mutex<BuildTrail>);

impl Trail {
    pub(crate) fn material(&self, name: &str, manifest: &Descriptor, platform: &Platform) {
        let m = Material {
            name: name.to_owned(),
            digest: manifest.digest.clone(),
            platform: platform.clone(),
        };
        if let Ok(mut t) = self.0.lock()
            && !t.materials.contains(&m)
        {
            t.materials.push(m);
            t.materials
                .sort_by(|a, b| (&a.name, a.digest.as_str()).cmp(&(&b.name, b.digest.as_str())));
        }
    }

    /// Context files a step read, by path relative to the context, with their content
    /// digests: one lock for the step, however many files.
    pub(crate) fn context_files<'p>(
        &self,
        files: impl Iterator<Item = (&'p std::path::Path, &'p [u8; 32])>,
    ) {
        if let Ok(mut t) = self.0.lock() {
            for (path, d) in files {
                t.context_files.insert(
                    path.to_string_lossy().into_owned(),
                    format!("sha256:{}", hex::encode(d)),
                );
            }
        }
    }

    pub(crate) fn git_source(&self, uri: String, commit: String) {
        if let Ok(mut t) = self.0.lock() {
            t.git_sources.insert(uri, commit);
        }
    }

    pub(crate) fn step(&self, step: StepTrace) {
        if let Ok(mut t) = self.0.lock() {
            t.steps.push(step);
        }
    }

    pub(crate) fn take(&self) -> BuildTrail {
        self.0
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_digest_follows_the_files_read() {
        let trail = |files: &[(&str, &str)]| BuildTrail {
            context_files: files
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_string()))
                .collect(),
            ..BuildTrail::default()
        };
        let a = trail(&[("a", "sha256:1"), ("b", "sha256:2")]);
        let same = trail(&[("b", "sha256:2"), ("a", "sha256:1")]);
        let edited = trail(&[("a", "sha256:1"), ("b", "sha256:3")]);
        let renamed = trail(&[("a", "sha256:1"), ("c", "sha256:2")]);
        assert_eq!(a.context_digest(), same.context_digest());
        assert_ne!(a.context_digest(), edited.context_digest());
        assert_ne!(a.context_digest(), renamed.context_digest());
        assert_ne!(a.context_digest(), BuildTrail::default().context_digest());
    }
}
