//! The command line, as clap parses it: commands, flags and their docker-compatible spellings.
// The doc comments here are clap's help text, written in docker's usage notation
// (`NAME[:TAG]`, `linux/<arch>`), which rustdoc would otherwise read as links and HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::check_args::{CheckArgs, CheckFlag};
pub use crate::compat_args::{CompatArgs, PullPolicy};
pub use crate::container_args::{
    CommitArgs, ContainerCommand, LogsArgs, MonitorArgs, PsArgs, RmArgs, RunArgs, StopArgs,
    WaitArgs,
};
pub use crate::sandbox_args::{IsolationArg, LimitArgs};

/// cairn: a daemonless, rootless image builder for Dockerfile recipes.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The store directory [default: $CAIRN_ROOT, else $XDG_DATA_HOME/cairn, else
    /// ~/.local/share/cairn]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<BuildArgs>),
    /// Run a command in a new container from an image, in the same sandbox as RUN steps.
    Run(Box<RunArgs>),
    /// List containers (running ones; -a for all).
    Ps(PsArgs),
    /// Remove containers (-f: running ones too, killing them).
    Rm(RmArgs),
    /// Make an image of a container's changes.
    Commit(CommitArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop(StopArgs),
    /// Wait for containers to end and print their exit codes.
    Wait(WaitArgs),
    /// The container commands under docker's `container` group.
    #[command(subcommand)]
    Container(ContainerCommand),
    #[command(name = "__monitor", hide = true)]
    Monitor(MonitorArgs),
    /// Parse a Dockerfile and print its stages, instructions and stage graph.
    Parse(ParseArgs),
    /// Check a Dockerfile against BuildKit's lint rules, as `docker build --check` does.
    Check(CheckArgs),
    /// Load images from an OCI layout, an OCI archive or a docker-archive.
    Load(LoadArgs),
    /// Make a one-layer image from a root filesystem tarball, like `docker import`.
    Import(ImportArgs),
    /// Write images to an archive or an OCI layout directory.
    Save(SaveArgs),
    /// List the images in the store.
    Images(ImagesArgs),
    /// Show an image's history: each step, newest first, with the size of its layer.
    History(HistoryArgs),
    /// Show an image's details as JSON, like `docker image inspect`.
    Inspect(InspectArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove image names (the content goes with the next prune).
    Rmi(RmiArgs),
    /// Remove dangling (untagged) images and what no image name reaches, except the build
    /// cache (unless told).
    Prune(PruneArgs),
    /// Check every blob and image in the store against its digest.
    Fsck,
    /// Show what this cairn is and can do here: version, store, isolation modes (and why one
    /// is missing), snapshotter, cgroups, id ranges, emulators, config files.
    Info(InfoArgs),
    /// Pull an image from a registry into the store.
    Pull(PullArgs),
    /// Push an image from the store to a registry.
    Push(PushArgs),
    /// Log in to a registry: check the credentials and store them.
    Login(LoginArgs),
    /// Remove a registry's stored credentials.
    Logout(LogoutArgs),
    /// Write an SPDX SBOM of an image's packages, read from its own package databases.
    Sbom(crate::sbom_args::SbomArgs),
    /// Make, edit and push manifest lists (image indexes), as podman manifest does.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// The image commands under docker's `image` group: ls, inspect, rm, prune, history, tag,
    /// save, load, import, pull, push.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Store-wide views, as docker's `system` group: df.
    #[command(subcommand)]
    System(SystemCommand),
    /// Print a shell completion script: `cairn completion bash > /etc/bash_completion.d/cairn`,
    /// or `source <(cairn completion bash)`.
    Completion(CompletionArgs),
    /// Write a man page for cairn and each of its commands into DIR (scripts/dist.sh does).
    #[command(hide = true)]
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `cairn image ...`: the same commands as the top-level ones, docker's spellings.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images in the store (`cairn images`).
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Show an image's details as JSON (`cairn inspect`).
    Inspect(InspectArgs),
    /// Remove image names (`cairn rmi`).
    #[command(visible_alias = "remove")]
    Rm(RmiArgs),
    /// Remove dangling images and what nothing reaches (`cairn prune`).
    Prune(PruneArgs),
    /// Show an image's steps (`cairn history`).
    History(HistoryArgs),
    /// Give an image another name (`cairn tag`).
    Tag(TagArgs),
    /// Write images to an archive or layout (`cairn save`).
    Save(SaveArgs),
    /// Load images (`cairn load`).
    Load(LoadArgs),
    /// Make an image from a rootfs tarball (`cairn import`).
    Import(ImportArgs),
    /// Pull from a registry (`cairn pull`).
    Pull(PullArgs),
    /// Push to a registry (`cairn push`).
    Push(PushArgs),
}

/// `cairn system ...`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// How much of the store images and the build cache take, and how much prune would free.
    Df(DfArgs),
}

#[derive(Debug, clap::Args)]
pub struct DfArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// How to reach registries: TLS and credential files.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// Require HTTPS with verified certificates (true), or accept any certificate and plain
    /// HTTP (false) [default: verify; registries marked insecure in the config and loopback
    /// hosts may fall back to plain HTTP]
    #[arg(
        long = "tls-verify",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub tls_verify: Option<bool>,
    /// Trust the CA certificates (*.crt) and use the client certificate (*.cert, *.key) in this
    /// directory [default: certs.d/HOST:PORT under $XDG_CONFIG_HOME/cairn, ~/.config/containers,
    /// /etc/containers, /etc/docker]
    #[arg(long = "cert-dir", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The auth file to read credentials from first (login and logout write it)
    /// [default: $REGISTRY_AUTH_FILE, else docker's config.json]
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The platform to pick from a multi-platform image [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Credentials to use instead of the stored ones.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// Fetch the image of every platform a multi-platform image has, not only one.
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// No progress, only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image: NAME[:TAG] or NAME@DIGEST.
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Credentials to use instead of the stored ones.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
    /// Write the pushed manifest's digest to this file too.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// No progress, only the manifest digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The image in the store (name, ID or digest).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to push it: REGISTRY/REPOSITORY[:TAG] [default: NAME]
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    #[arg(short = 'p', long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The registry: HOST[:PORT] (docker.io for Docker Hub).
    #[arg(value_name = "REGISTRY")]
    pub server: String,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The auth file to remove the credentials from
    /// [default: $REGISTRY_AUTH_FILE, else docker's config.json]
    #[arg(long = "authfile", value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    #[arg(value_name = "REGISTRY")]
    pub server: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParseFormat {
    /// Typed stages and instructions with spans, and the stage graph (see docs/parse-json.md).
    Json,
    /// BuildKit's AST dump: one `(keyword [flags] "arg"...)` line per instruction.
    Ast,
}

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The Dockerfile to read; `-` reads standard input.
    /// [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ParseFormat::Json)]
    pub format: ParseFormat,

    /// The stage to build; the graph's build order lists only the stages it needs.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// A build argument, used to resolve stage references in FROM and --from
    /// (a bare KEY takes its value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// The build context directory, where the Dockerfile is looked for; or the Dockerfile
    /// itself (`cairn parse Dockerfile.prod`).
    #[arg(value_name = "CONTEXT|FILE", default_value = ".")]
    pub context: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The layout directory or archive (tar, or tar.gz) to load [default: an archive on
    /// standard input, as `-`].
    #[arg(short = 'i', long = "input", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// The name to give the image instead of the archive's.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tag: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The root filesystem tarball (plain, gzip or zstd); `-` reads standard input.
    #[arg(value_name = "ROOTFS")]
    pub rootfs: PathBuf,
    /// The name of the new image.
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    /// A Dockerfile instruction to apply to the config (ENV, CMD, ENTRYPOINT, WORKDIR, USER,
    /// EXPOSE, VOLUME, LABEL, STOPSIGNAL, ...); repeatable.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// A commit message for the image's history.
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
    /// The platform the root filesystem is for, recorded in the config
    /// [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// A tar of an OCI image layout (skopeo's oci-archive).
    OciArchive,
    /// `docker save`'s format, which docker load and podman load read.
    DockerArchive,
    /// An OCI image layout directory.
    OciDir,
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// The images to save.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Where to write [default: standard output, as `-`, which must not be a terminal].
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SaveFormat::DockerArchive)]
    pub format: SaveFormat,
    /// The platform a docker-archive gets of a multi-platform image (the OCI formats keep
    /// them all) [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// `table`, `json`, or a template of docker's fields (`{{.Repository}}:{{.Tag}}`,
    /// `{{.ID}}`, `{{.Digest}}`, `{{.CreatedSince}}`, `{{.CreatedAt}}`, `{{.Size}}`,
    /// `{{.Platforms}}`); `table TEMPLATE` adds a header.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only the image IDs, each once.
    #[arg(short, long)]
    pub quiet: bool,
    /// Every image (cairn keeps no intermediate images: the same list as without).
    #[arg(short, long)]
    pub all: bool,
    /// A DIGEST column (the manifest's or index's digest).
    #[arg(long)]
    pub digests: bool,
    /// Whole IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// `dangling=true|false`, `reference=PATTERN` (a glob on REPOSITORY or REPOSITORY:TAG).
    #[arg(short, long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// List only this repository (a glob, with an optional :TAG).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// `table`, `json`, or a template of docker's fields (`{{.ID}}`, `{{.CreatedBy}}`,
    /// `{{.CreatedSince}}`, `{{.CreatedAt}}`, `{{.Size}}`, `{{.Comment}}`).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Only the IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Whole IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// The platform's image of a multi-platform one [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// The platform to show of a multi-platform image [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Print the image's in-toto attestations (provenance, SBOM) instead, as a JSON array.
    #[arg(long)]
    pub attestations: bool,
}

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    #[arg(value_name = "SOURCE")]
    pub source: String,
    #[arg(value_name = "TARGET")]
    pub target: String,
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Remove every name of an image given by ID.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Plain lines when standard error is not a terminal.
    Auto,
    Tty,
    /// Numbered lines (`#3 [2/5] COPY . /app` … `#3 DONE 0.4s`).
    Plain,
    Quiet,
    /// BuildKit's SolveStatus as JSON lines, for programs.
    #[value(name = "rawjson")]
    RawJson,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile]; `-` reads it
    /// from standard input.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// The stage to build [default: the last].
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// A build argument; a bare KEY takes its value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// A label on the image.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// How progress is shown [default: $CAIRN_PROGRESS, else $BUILDKIT_PROGRESS, else auto]
    #[arg(long, value_enum)]
    pub progress: Option<Progress>,
    /// Print where each step's time goes (unpack, names, process, layer, adopt), one
    /// `#N timing: PHASE SECONDSs` line each, on standard error.
    #[arg(long)]
    pub debug_timings: bool,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// A named context for FROM and COPY --from: NAME=DIR or NAME=oci-layout://DIR[:TAG]
    /// (repeatable).
    #[arg(long = "build-context", value_name = "NAME=DIR|oci-layout://DIR[:TAG]")]
    pub build_contexts: Vec<String>,
    /// Where else the result goes: type=oci|oci-archive|docker-archive|local|tar,dest=PATH
    /// (a bare PATH means type=local); repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: id=ID,src=FILE or id=ID,env=VAR (repeatable);
    /// it never reaches a layer or the history.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// Run every step instead of using earlier results (they are still recorded).
    #[arg(long)]
    pub no_cache: bool,
    /// Run every step of this stage (by name or index) instead of using earlier results
    /// (repeatable).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,
    /// How new layers are compressed: gzip, zstd or uncompressed [default: gzip, applied when
    /// the image is pushed or exported; given either flag, layers are compressed as they are
    /// written].
    #[arg(long = "compression-format", value_name = "FORMAT")]
    pub compression_format: Option<String>,
    /// The compression level [default: 5 for gzip (as podman and buildah), 3 for zstd].
    #[arg(long = "compression-level", value_name = "N")]
    pub compression_level: Option<i32>,
    /// Read cached steps from a cache that --cache-to wrote (a directory or a registry), or
    /// from an image built with --cache-to type=inline (a name in the store, or an archive)
    /// (repeatable).
    #[arg(
        long = "cache-from",
        value_name = "type=local,src=DIR|type=registry,ref=REF|IMAGE"
    )]
    pub cache_from: Vec<String>,
    /// Write this build's cached steps to a directory (an OCI layout) or a registry (mode=max
    /// also keeps the steps of stages other than the target; mounts=true its cache mounts), or
    /// into the image itself (type=inline) (repeatable).
    #[arg(
        long = "cache-to",
        value_name = "type=local,dest=DIR|type=registry,ref=REF[,mode=min|max]|type=inline"
    )]
    pub cache_to: Vec<String>,
    /// When to ask the registry for an image the build names: always (bare --pull, or true),
    /// missing (only what the store lacks; false), never (the store only), newer (always,
    /// but the stored image serves when the registry cannot be reached) [default: missing]
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always",
        overrides_with = "pull"
    )]
    pub pull: Option<PullPolicy>,
    /// Push every -t name to its registry after the build.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// How RUN steps get their filesystem: overlay, copy, or auto (overlay where it mounts).
    #[arg(long, value_name = "overlay|copy|auto", default_value = "auto")]
    pub snapshotter: String,
    #[command(flatten)]
    pub isolation: IsolationArg,
    /// The platforms to build for, comma-separated or repeated (`linux/amd64,linux/arm64`;
    /// `local` is this machine's): one image each, in an image index when more than one.
    /// Another architecture's RUN steps run under binfmt_misc emulation (qemu-user-static).
    #[arg(long, value_name = "OS/ARCH[/VARIANT],...", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// An ssh agent for RUN --mount=type=ssh and ssh git sources: `default` ($SSH_AUTH_SOCK),
    /// ID=SOCKET, or ID=KEY[,KEY] (repeatable).
    #[arg(long, value_name = "default|ID[=SOCKET|KEY[,KEY]]")]
    pub ssh: Vec<String>,
    /// RUN's network where the Dockerfile does not choose: default (a namespace of its own
    /// with user-mode networking), none (only loopback) or host (needs --allow network.host).
    #[arg(long, value_name = "default|none|host")]
    pub network: Option<String>,
    /// Grant an entitlement: network.host lets RUN use the host's network (repeatable).
    #[arg(long = "allow", value_name = "network.host")]
    pub allow: Vec<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub compat: CompatArgs,
    #[command(flatten)]
    pub attest: crate::attest_args::AttestArgs,
    #[command(flatten)]
    pub check: CheckFlag,
    /// The build context directory; `-` reads a tar of it from standard input.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
    /// Write the build's result as JSON to this file, with BuildKit's keys
    /// (containerimage.digest, the pushed digest after a push; containerimage.config.digest;
    /// containerimage.descriptor; image.name) and cairn's step and byte counts.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove the whole build cache too.
    #[arg(long)]
    pub all: bool,
    /// Keep at most this much cache (e.g. 2GB), evicting the least recently used first.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// until=DURATION (e.g. 24h): remove cache unused for longer than that.
    #[arg(long, value_name = "until=DURATION")]
    pub filter: Vec<String>,
}

/// How to reach registries, and credentials to use instead of the stored ones.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryAccess {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Credentials to use instead of the stored ones.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub creds: Option<String>,
}

/// `cairn manifest`'s subcommands, podman's spellings.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Make a manifest list named LIST, empty or holding the IMAGEs.
    Create(ManifestCreateArgs),
    /// Add images to a manifest list (replacing its entry for the same platform).
    Add(ManifestAddArgs),
    /// Change an entry's platform or annotations.
    Annotate(ManifestAnnotateArgs),
    /// Print a manifest list (or image manifest) of the store or a registry as JSON.
    Inspect(ManifestInspectArgs),
    /// Push a manifest list and its images to a registry.
    Push(ManifestPushArgs),
    /// Remove an entry from a manifest list.
    Remove(ManifestRemoveArgs),
    /// Remove manifest lists' names (their images stay while other names reach them).
    Rm(ManifestRmArgs),
    /// Succeed when LIST is a manifest list in the store.
    Exists(ManifestRmArgs),
}

/// What an added image's entry says of it, podman's flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EntryArgs {
    /// The OS the entry declares [default: the image config's].
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,
    /// The architecture the entry declares [default: the image config's].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// The variant the entry declares [default: the image config's].
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// An annotation on the entry (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ManifestCreateArgs {
    /// Add every image of an IMAGE that is itself a list, not only one platform's.
    #[arg(long)]
    pub all: bool,
    /// Add to the list LIST names already instead of refusing.
    #[arg(short = 'a', long)]
    pub amend: bool,
    #[command(flatten)]
    pub access: RegistryAccess,
    /// The list's name.
    #[arg(value_name = "LIST")]
    pub list: String,
    /// Images to add: a name or ID in the store, or docker://REF of a registry.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ManifestAddArgs {
    /// Add every image of an IMAGE that is itself a list, not only one platform's.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub entry: EntryArgs,
    #[command(flatten)]
    pub access: RegistryAccess,
    #[arg(value_name = "LIST")]
    pub list: String,
    /// Images to add: a name or ID in the store, or docker://REF of a registry.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ManifestAnnotateArgs {
    #[command(flatten)]
    pub entry: EntryArgs,
    #[arg(value_name = "LIST")]
    pub list: String,
    /// The entry: its manifest digest, or an image in the store.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, clap::Args)]
pub struct ManifestInspectArgs {
    #[command(flatten)]
    pub access: RegistryAccess,
    /// A list in the store, else an image of a registry (NAME[:TAG], docker://REF).
    #[arg(value_name = "IMAGE")]
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct ManifestPushArgs {
    /// Push the list's images too (podman's default); false is not supported.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true", default_missing_value = "true")]
    pub all: bool,
    /// Write the pushed list's digest to this file too.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// No progress, only the list's digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Remove the list's name from the store once pushed.
    #[arg(long)]
    pub rm: bool,
    #[command(flatten)]
    pub access: RegistryAccess,
    #[arg(value_name = "LIST")]
    pub list: String,
    /// Where: REGISTRY/REPOSITORY[:TAG] or docker://… [default: LIST]
    #[arg(value_name = "DESTINATION")]
    pub dest: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ManifestRemoveArgs {
    #[arg(value_name = "LIST")]
    pub list: String,
    /// The entry's manifest digest.
    #[arg(value_name = "DIGEST")]
    pub digest: String,
}

#[derive(Debug, clap::Args)]
pub struct ManifestRmArgs {
    #[arg(value_name = "LIST", required = true)]
    pub lists: Vec<String>,
}
