//! `cairn check`'s flags and `cairn build --check`, kept out of args.rs.

use std::path::PathBuf;

use clap::ValueEnum;

/// How `cairn check` prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Each warning with its rule, URL and the Dockerfile lines it is about.
    Text,
    /// BuildKit's lint result (`docker build --call=check,format=json`).
    Json,
    /// GitHub Actions workflow commands: `::warning file=…,line=…,title=RULE::message`.
    Github,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile, else CONTEXT/Containerfile].
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// How the warnings are printed.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    /// A build argument, as the build would get it; `BUILDKIT_DOCKERFILE_CHECK=skip=…;error=…`
    /// replaces the Dockerfile's `# check=` options.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Check only what building this stage runs [default: every stage].
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// The platform the build would be for (its TARGETPLATFORM, its base images' variables).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The build context, read only for its .dockerignore.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// `cairn build --check`, as `docker build --check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckFlag {
    /// Check the Dockerfile against BuildKit's lint rules and print the warnings instead of
    /// building; fails when `# check=error=true` and there are warnings.
    #[arg(long)]
    pub check: bool,
    /// What the build does, as buildx's `--call`: `build` (the default) or
    /// `check[,format=text|json|github]` (`--check` with a format).
    #[arg(long, value_name = "build|check[,format=text|json|github]")]
    pub call: Option<String>,
}

impl CheckFlag {
    /// Whether the build only checks, and how it prints the result.
    pub fn checking(&self) -> anyhow::Result<Option<CheckFormat>> {
        let Some(call) = &self.call else {
            return Ok(self.check.then_some(CheckFormat::Text));
        };
        let mut parts = call.split(',');
        match parts.next().unwrap_or_default() {
            "build" if !self.check => return Ok(None),
            "build" => anyhow::bail!("--check and --call=build ask for different things"),
            "check" => {}
            other => anyhow::bail!("--call {other:?}: cairn knows build and check"),
        }
        let mut format = CheckFormat::Text;
        for opt in parts {
            format = match opt.split_once('=') {
                Some(("format", f)) => CheckFormat::from_str(f, true).map_err(|_| {
                    anyhow::anyhow!("--call check: format={f:?} (text, json or github)")
                })?,
                _ => anyhow::bail!("--call check: unknown option {opt:?} (format=...)"),
            };
        }
        Ok(Some(format))
    }
}
