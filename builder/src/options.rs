//! What a build is asked to do: its [`BuildOptions`] and the named contexts of `--build-context`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_layers::compress::LayerCompression;

use crate::sandbox::{Limits, Snapshotter};

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile's name for messages, its text, and its path (for `<name>.dockerignore`).
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub dockerfile_path: Option<PathBuf>,
    pub target: Option<String>,
    /// `--platform`: the platforms to build for (TARGETPLATFORM), one image each; empty is
    /// this machine's. The build platform is always this machine's.
    pub platforms: Vec<cairn_layers::platform::Platform>,
    pub build_args: BTreeMap<String, String>,
    /// `--label`: added to the final image.
    pub labels: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH: the image's creation time, and a clamp on file times in new layers.
    pub source_date_epoch: Option<i64>,
    /// How new layers are compressed (`--compression-format`, `--compression-level`).
    pub compression: LayerCompression,
    /// Whether new layers stay plain tars in the store, `compression` applied when the image
    /// leaves it (`cairn_layers::deferred`), as BuildKit's docker image store does; else
    /// they are compressed as they are written.
    pub defer_compression: bool,
    /// `--build-context NAME=...`: named contexts that FROM and COPY --from may use.
    pub contexts: BTreeMap<String, NamedContext>,
    /// The RUN sandbox: the cairn binary to re-execute as its helper (no RUN without one),
    /// the snapshotter and the resource limits.
    pub helper: Option<PathBuf>,
    pub snapshotter: Snapshotter,
    pub limits: Limits,
    /// `--isolation`: the rung of the ladder RUN steps get (`auto`: the strongest available).
    pub isolation: crate::sandbox::Isolation,
    /// `--secret id=...`: secret id → its bytes, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh id=...`: ssh id → the agent socket RUN `--mount=type=ssh` forwards and git
    /// sources over ssh authenticate with (`default`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// How long git may take and how much it may fetch, for git sources.
    pub git: crate::git::GitLimits,
    /// `--no-cache`: run every step; `--no-cache-filter STAGE`: run every step of these
    /// stages (by name or index). Results are recorded either way.
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    /// `--cache-from`: caches to read records and layers from.
    pub cache_from: Vec<crate::cache::CacheImport>,
    /// `--cache-to`: where to write this build's records.
    pub cache_to: Vec<crate::cache::CacheExport>,
    /// How to reach registries, for images the store lacks (FROM, COPY --from, RUN --mount
    /// from=) and registry caches; `None`: the store only.
    pub registry: Option<cairn_layers::registry::RegistryOptions>,
    /// `--pull`: when a named image's registry is asked.
    pub pull: Pull,
    /// `--network`: RUN's network where the Dockerfile leaves it at `default`.
    pub network: crate::sandbox::Network,
    /// `--allow network.host`: RUN may use the host's network.
    pub allow_network_host: bool,
    /// `--ignorefile`: the ignore file to use instead of the context's `.dockerignore`.
    pub ignorefile: Option<PathBuf>,
    /// `--add-host HOST:IP`: lines added to RUN steps' /etc/hosts, as (host, ip).
    pub add_hosts: Vec<(String, String)>,
    /// `--env`, `--unsetenv`, `--unsetlabel`, `--omit-history`, `--annotation`: changes to the
    /// final image only, not to the steps that make it.
    pub edits: ImageEdits,
    /// `--ulimit`: resource limits of RUN steps' processes.
    pub ulimits: Vec<crate::sandbox::Ulimit>,
    /// `--shm-size`: the size of RUN steps' /dev/shm in bytes [default: 64 MiB].
    pub shm_size: Option<u64>,
    /// The git repository (`REMOTE#REF`, credentials hidden) and commit the context was
    /// checked out from, when it was one: provenance's config source.
    pub context_git: Option<(String, String)>,
    /// `--squash`, `--squash-all`: the final image's layers folded into one.
    pub squash: Squash,
}

/// Which of the final image's layers are squashed into one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Squash {
    /// None: a layer per step.
    #[default]
    No,
    /// buildah's `--squash`: the layers the final stage adds, on top of its base's.
    New,
    /// podman's `--squash-all`: every layer, the base's included.
    All,
}

/// `--pull`: when the registry is asked for an image the build names (FROM, COPY --from,
/// RUN --mount from=).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pull {
    /// Every time, even when the store has it (a failed check fails the build).
    Always,
    /// Only when the store lacks it.
    #[default]
    Missing,
    /// Never: what the store lacks fails the build.
    Never,
    /// Every time, but the stored image serves when the registry cannot answer.
    Newer,
}

/// Changes to the final image's config and manifest that no step makes (buildah's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageEdits {
    /// Variables set (replacing a value the steps left), in order.
    pub env: Vec<(String, String)>,
    /// Variables removed.
    pub unset_env: Vec<String>,
    /// Labels removed (before `--label`'s are added).
    pub unset_labels: Vec<String>,
    /// No history entries in the config.
    pub omit_history: bool,
    /// Annotations on the image's manifest.
    pub annotations: BTreeMap<String, String>,
    /// Annotations on the manifest of one platform's image only.
    pub platform_annotations: Vec<(cairn_layers::platform::Platform, String, String)>,
}

impl ImageEdits {
    /// The manifest annotations of the image for `platform`.
    pub(crate) fn annotations_for(
        &self,
        platform: &cairn_layers::platform::Platform,
    ) -> BTreeMap<String, String> {
        let mut out = self.annotations.clone();
        for (p, k, v) in &self.platform_annotations {
            if p.matches(platform) {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

impl ImageEdits {
    /// Applies the config changes; the annotations go on the manifest when it is written.
    pub(crate) fn apply(&self, config: &mut cairn_layers::image::ImageConfig) {
        let c = &mut config.config;
        c.env.retain(|kv| {
            let name = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !self.unset_env.iter().any(|u| u == name)
        });
        for (k, v) in &self.env {
            let line = format!("{k}={v}");
            match c
                .env
                .iter_mut()
                .find(|kv| kv.split_once('=').map(|(n, _)| n) == Some(k))
            {
                Some(slot) => *slot = line,
                None => c.env.push(line),
            }
        }
        for l in &self.unset_labels {
            c.labels.remove(l);
        }
        if self.omit_history {
            config.history.clear();
        }
    }
}

/// A named build context: a directory (COPY --from reads it with its own .dockerignore; FROM
/// makes an image of it) or an image in an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Dir(PathBuf),
    OciLayout { dir: PathBuf, tag: Option<String> },
}

impl NamedContext {
    /// `oci-layout://DIR[:TAG]`, or a directory path.
    pub fn parse(spec: &str) -> NamedContext {
        match spec.strip_prefix("oci-layout://") {
            Some(rest) => {
                // A `:TAG` after the last `/`; a colon earlier belongs to the path.
                let (dir, tag) = match rest.rsplit_once(':') {
                    Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_owned())),
                    _ => (rest, None),
                };
                NamedContext::OciLayout {
                    dir: PathBuf::from(dir),
                    tag,
                }
            }
            None => NamedContext::Dir(PathBuf::from(spec)),
        }
    }
}

impl BuildOptions {
    /// Whether this build leaves its layers plain: not when an inline cache goes into the
    /// image's config, as its records name the layers by the blobs an export writes.
    pub(crate) fn deferring(&self) -> bool {
        self.defer_compression && !self.cache_to.contains(&crate::cache::CacheExport::Inline)
    }

    /// How a step writes its layer into the store.
    pub(crate) fn layer_compression(&self) -> LayerCompression {
        if self.deferring() {
            cairn_layers::compress::Compression::None.into()
        } else {
            self.compression
        }
    }
}
