//! One module per command group; `run` opens the store where a command needs it and dispatches.

mod annotations;
mod attest;
mod build;
mod build_opts;
pub mod check;
mod containers;
mod git_context;
pub mod image;
mod images;
mod info;
mod logfile;
mod manifest;
mod metadata;
mod output;
pub mod parse;
mod registry;
mod run;
mod sbom;
mod ssh;

use anyhow::Context;
use cairn_layers::Store;

use crate::args::{Cli, Command, ContainerCommand, ImageCommand, SystemCommand};

fn open_store(cli_root: Option<&std::path::Path>) -> anyhow::Result<Store> {
    let root = match cli_root {
        Some(r) => r.to_path_buf(),
        None => {
            Store::default_root().context("no store location: set --root, CAIRN_ROOT or HOME")?
        }
    };
    Store::open(&root).with_context(|| format!("failed to open the store at {}", root.display()))
}

/// The store, deleting trees with mapped owners from inside the build's user namespace.
fn with_remover(mut store: Store) -> anyhow::Result<Store> {
    if let Ok(exe) = std::env::current_exe() {
        let sandbox = cairn_builder::sandbox::Sandbox::for_removal(exe, &store)?;
        store.set_remover(sandbox.remover());
    }
    Ok(store)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let root = cli.root.as_deref();
    match cli.command {
        Command::Build(args) => {
            // A build starts by removing what killed builds left, which for a rootless user
            // holds files of its subordinate ids.
            let store = with_remover(open_store(root)?)?;
            build::run(&store, &args)
        }
        Command::Run(args) => run::run(&open_store(root)?, &args),
        Command::Ps(args) => containers::ps(&open_store(root)?, &args),
        Command::Rm(args) => containers::rm(&open_store(root)?, &args),
        Command::Commit(args) => containers::commit(&open_store(root)?, &args),
        Command::Logs(args) => containers::logs(&open_store(root)?, &args),
        Command::Stop(args) => containers::stop(&open_store(root)?, &args),
        Command::Wait(args) => containers::wait(&open_store(root)?, &args),
        Command::Container(cmd) => container_group(root, cmd),
        Command::Monitor(args) => run::monitor(&open_store(root)?, &args),
        Command::Parse(args) => parse::run(&args),
        // A check reads base images' variables from the store when there is one; it never
        // needs one.
        Command::Check(args) => check::run(open_store(root).ok().as_ref(), &args),
        Command::Load(args) => image::load(&open_store(root)?, &args),
        Command::Import(args) => image::import(&open_store(root)?, &args),
        Command::Save(args) => image::save(&open_store(root)?, &args),
        Command::Images(args) => images::images(&open_store(root)?, &args),
        Command::History(args) => images::history(&open_store(root)?, &args),
        Command::Inspect(args) => image::inspect(&open_store(root)?, &args),
        Command::Tag(args) => image::tag(&open_store(root)?, &args),
        Command::Rmi(args) => image::rmi(&open_store(root)?, &args),
        Command::Prune(args) => {
            // Layers unpacked for RUN by a rootless user belong to its subordinate ids.
            let store = with_remover(open_store(root)?)?;
            image::prune(&store, &args)
        }
        Command::Fsck => image::fsck(&open_store(root)?),
        Command::Info(args) => info::info(&open_store(root)?, &args),
        Command::Pull(args) => registry::pull(&open_store(root)?, &args),
        Command::Push(args) => registry::push(&open_store(root)?, &args),
        Command::Login(args) => registry::login(&args),
        Command::Logout(args) => registry::logout(&args),
        Command::Sbom(args) => sbom::run(&open_store(root)?, &args),
        Command::Manifest(cmd) => manifest::run(&open_store(root)?, &cmd),
        Command::Image(cmd) => image_group(root, cmd),
        Command::Completion(args) => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            // Into memory first: clap_complete panics on a write error (`| head`), and a
            // closed pipe is the reader's choice.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "cairn", &mut script);
            use std::io::Write as _;
            std::io::stdout().lock().write_all(&script)?;
            Ok(())
        }
        Command::Man(args) => man_pages(&args.dir),
        Command::System(SystemCommand::Df(args)) => images::df(&open_store(root)?, &args),
    }
}

/// `cairn image ...`: the top-level image commands by docker's group spellings.
fn image_group(root: Option<&std::path::Path>, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Ls(args) => images::images(&open_store(root)?, &args),
        ImageCommand::Inspect(args) => image::inspect(&open_store(root)?, &args),
        ImageCommand::Rm(args) => image::rmi(&open_store(root)?, &args),
        ImageCommand::Prune(args) => image::prune(&with_remover(open_store(root)?)?, &args),
        ImageCommand::History(args) => images::history(&open_store(root)?, &args),
        ImageCommand::Tag(args) => image::tag(&open_store(root)?, &args),
        ImageCommand::Save(args) => image::save(&open_store(root)?, &args),
        ImageCommand::Load(args) => image::load(&open_store(root)?, &args),
        ImageCommand::Import(args) => image::import(&open_store(root)?, &args),
        ImageCommand::Pull(args) => registry::pull(&open_store(root)?, &args),
        ImageCommand::Push(args) => registry::push(&open_store(root)?, &args),
    }
}

/// `cairn container ...`: the container commands by docker's group spellings.
fn container_group(root: Option<&std::path::Path>, cmd: ContainerCommand) -> anyhow::Result<()> {
    let store = open_store(root)?;
    match cmd {
        ContainerCommand::Ls(args) => containers::ps(&store, &args),
        ContainerCommand::Run(args) => run::run(&store, &args),
        ContainerCommand::Rm(args) => containers::rm(&store, &args),
        ContainerCommand::Prune(_) => containers::prune(&store),
        ContainerCommand::Commit(args) => containers::commit(&store, &args),
        ContainerCommand::Logs(args) => containers::logs(&store, &args),
        ContainerCommand::Stop(args) => containers::stop(&store, &args),
        ContainerCommand::Wait(args) => containers::wait(&store, &args),
        ContainerCommand::Inspect(args) => containers::inspect(&store, &args),
    }
}

/// `cairn man DIR`: cairn.1 and a page for each command (`cairn-build.1`, ...), from the same
/// definitions the parser uses.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("failed to write man pages into {}", dir.display()))
}
