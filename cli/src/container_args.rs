//! The container commands' flags (`cairn run`, `ps`, `rm`, `commit`, `logs`, `stop`, `wait` and
//! docker's `container` group), kept apart from args.rs so both stay readable.
// docker's usage notation (`REPO[:TAG]`) is clap's help text here, not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::Subcommand;

use crate::sandbox_args::{IsolationArg, LimitArgs};

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run the container in the background and print its ID (its output goes to
    /// `cairn logs`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep standard input open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (a bare KEY takes its value from cairn's environment).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines (`#` comments; a bare KEY
    /// takes its value from cairn's environment).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind-mount a host path: HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// The working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// The user (name or uid[:gid]) to run as.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// default (a namespace of its own with user-mode networking), none (only loopback) or
    /// host (the host's network, its loopback services included).
    #[arg(long, value_name = "default|none|host")]
    pub network: Option<String>,
    /// Not supported: cairn publishes no ports (use --network host).
    #[arg(short = 'p', long = "publish", value_name = "PORTS", hide = true)]
    pub publish: Vec<String>,
    /// A name for the container (unique).
    #[arg(long)]
    pub name: Option<String>,
    /// How the container gets its filesystem: overlay, copy, or auto.
    #[arg(long, value_name = "overlay|copy|auto", default_value = "auto")]
    pub snapshotter: String,
    #[command(flatten)]
    pub isolation: IsolationArg,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The platform to run of a multi-platform image (another machine's runs through its
    /// emulator) [default: linux/<this machine's>]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The command, replacing the image's CMD.
    #[arg(value_name = "COMMAND", allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PsArgs {
    /// Show every container (only running ones without).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only the IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Full IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// status=created|running|exited, name=SUBSTRING, id=PREFIX (repeatable).
    #[arg(short = 'f', long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// table, json (one object a line), or a Go-style template ({{.ID}}, {{.Names}},
    /// {{.Status}}, ...; `table TEMPLATE` adds a header).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CommitArgs {
    /// The commit message (the history entry's comment).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// The author.
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// A Dockerfile instruction to apply to the image's config: CMD, ENTRYPOINT, ENV, LABEL,
    /// EXPOSE, USER, WORKDIR, ... (repeatable).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// The name to give the image.
    #[arg(value_name = "REPO[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (`all` for every line).
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    pub tail: String,
    /// Show each line's time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub time: u64,
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ContainerPruneArgs {
    /// Accepted for docker's scripts: cairn never asks.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ContainerInspectArgs {
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

/// `cairn container ...`: docker's spellings of the container commands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers (`cairn ps`).
    #[command(visible_alias = "list", visible_alias = "ps")]
    Ls(PsArgs),
    /// Run a command in a new container (`cairn run`).
    Run(Box<RunArgs>),
    /// Remove containers (`cairn rm`).
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove every container that is not running.
    Prune(ContainerPruneArgs),
    /// Make an image of a container's changes (`cairn commit`).
    Commit(CommitArgs),
    /// Show a container's output (`cairn logs`).
    Logs(LogsArgs),
    /// Stop containers (`cairn stop`).
    Stop(StopArgs),
    /// Wait for containers to end (`cairn wait`).
    Wait(WaitArgs),
    /// Show containers' details as JSON, like `docker container inspect`.
    Inspect(ContainerInspectArgs),
}

/// The monitor of a detached container (`cairn run -d` starts it, never a user).
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorArgs {
    pub id: String,
}
