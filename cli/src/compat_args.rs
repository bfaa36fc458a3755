//! `cairn build`'s flags from `docker buildx build`, `podman build` and buildah that CI scripts
//! pass, kept apart from cairn's own (args.rs) so both lists stay readable.

use std::path::PathBuf;

use clap::ValueEnum;

/// `--pull`'s values: docker's booleans and podman's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    #[value(alias = "true")]
    Always,
    #[value(alias = "false")]
    Missing,
    Never,
    Newer,
}

/// The build flags of `docker buildx build`, `podman build` and buildah that CI scripts pass,
/// kept apart from cairn's own so the two lists stay readable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CompatArgs {
    /// Accepted for podman and docker scripts: cairn keeps no intermediate containers.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        overrides_with = "rm"
    )]
    pub rm: Option<bool>,
    /// Accepted for podman and docker scripts: cairn keeps no intermediate containers.
    #[arg(
        long = "force-rm",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        overrides_with = "force_rm"
    )]
    pub force_rm: Option<bool>,
    /// Accepted for podman scripts: every step's result is cached (--no-cache runs them all).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        overrides_with = "layers"
    )]
    pub layers: Option<bool>,
    /// Read build arguments from a file: KEY=VALUE lines, `#` comments (repeatable); --build-arg
    /// wins.
    #[arg(long = "build-arg-file", value_name = "FILE")]
    pub build_arg_files: Vec<PathBuf>,
    /// Use this ignore file instead of the context's .dockerignore.
    #[arg(long, value_name = "FILE")]
    pub ignorefile: Option<PathBuf>,
    /// The image's creation time and a clamp on new files' times, in seconds since the epoch
    /// (as SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "SECONDS", conflicts_with = "source_date_epoch")]
    pub timestamp: Option<i64>,
    /// The same as --timestamp (buildah's spelling) [default: $SOURCE_DATE_EPOCH].
    #[arg(long = "source-date-epoch", value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
    /// Set an environment variable in the final image (a bare KEY takes cairn's value)
    /// (repeatable).
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Remove an environment variable from the final image (repeatable).
    #[arg(long = "unsetenv", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// Remove a label (an inherited one) from the final image (repeatable).
    #[arg(long = "unsetlabel", value_name = "KEY")]
    pub unset_labels: Vec<String>,
    /// Leave the history out of the final image's config.
    #[arg(long = "omit-history")]
    pub omit_history: bool,
    /// An annotation: KEY=VALUE on the image's manifest, or with a level (manifest:, index:,
    /// manifest-descriptor:, index-descriptor:) and a platform (manifest[linux/arm64]:)
    /// (repeatable).
    #[arg(long = "annotation", value_name = "[TYPE[PLATFORM]:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Add a line to RUN steps' /etc/hosts (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Registry credentials for the build's pulls and pushes, instead of the stored ones.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// How many times to retry a failed registry request [default: 3].
    #[arg(long, value_name = "N")]
    pub retry: Option<u32>,
    /// How long to wait before the first retry (then twice that, ...), e.g. 2s, 500ms
    /// [default: 500ms].
    #[arg(long = "retry-delay", value_name = "DURATION")]
    pub retry_delay: Option<String>,
    /// A resource limit of RUN steps' processes, docker's names (nofile, nproc, core, ...);
    /// -1 is unlimited (repeatable).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// The size of RUN steps' /dev/shm (bytes, or with a unit: 64m, 1g) [default: 64m].
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Squash the layers the final stage adds into one, on top of its base's layers.
    #[arg(long, conflicts_with = "squash_all")]
    pub squash: bool,
    /// Squash the whole final image, its base's layers included, into one layer.
    #[arg(long = "squash-all")]
    pub squash_all: bool,
    /// Write the build's progress and messages to FILE instead of the terminal.
    #[arg(long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
}
