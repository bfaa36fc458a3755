//! The sandbox's flags that `cairn build` and `cairn run` share: isolation and resource limits.

/// `--isolation`, for build and run.
#[derive(Debug, Clone, clap::Args)]
pub struct IsolationArg {
    /// How RUN steps (and `cairn run`'s container) are isolated: user namespaces, root's
    /// namespaces without a user one, or a chroot where no namespace can be made (a default
    /// container); auto picks the strongest this process may use and says which and why.
    #[arg(
        long = "isolation",
        env = "CAIRN_ISOLATION",
        value_name = "auto|userns|rootful|chroot",
        default_value = "auto"
    )]
    pub value: String,
}

impl IsolationArg {
    pub fn parse(&self) -> anyhow::Result<cairn_builder::sandbox::Isolation> {
        self.value
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--isolation: {e}"))
    }
}

/// Resource limits for each RUN step (or `cairn run`'s container), docker's spellings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Memory limit (bytes, or with a unit: 512m, 2g).
    #[arg(short = 'm', long, value_name = "BYTES")]
    pub memory: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares", value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds per period.
    #[arg(
        long = "cpu-quota",
        value_name = "MICROSECONDS",
        allow_negative_numbers = true
    )]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period", value_name = "MICROSECONDS")]
    pub cpu_period: Option<u64>,
    /// Maximum number of processes (-1 for no limit).
    #[arg(long = "pids-limit", value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
}
