//! Timeouts and retries: how long a slow or failing registry is given, and what is tried again.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::registry::Event;

/// The connect and read timeouts of every network transfer (registries and ADD of a URL):
/// `CAIRN_NET_TIMEOUT` seconds for both, else 30 s each. A read times out when no byte arrives
/// for that long, however long the whole transfer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetTimeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for NetTimeouts {
    fn default() -> NetTimeouts {
        NetTimeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(30),
        }
    }
}

impl NetTimeouts {
    pub const ENV: &'static str = "CAIRN_NET_TIMEOUT";

    /// From the environment; a value that is not a positive number of seconds is ignored.
    pub fn from_env() -> NetTimeouts {
        Self::parse(std::env::var(Self::ENV).ok().as_deref())
    }

    pub(super) fn parse(v: Option<&str>) -> NetTimeouts {
        match v
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        {
            Some(secs) => NetTimeouts {
                connect: Duration::from_secs_f64(secs),
                read: Duration::from_secs_f64(secs),
            },
            None => NetTimeouts::default(),
        }
    }

    /// Sets these timeouts on an agent's configuration.
    pub fn apply(
        &self,
        b: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        b.timeout_resolve(Some(self.connect))
            .timeout_connect(Some(self.connect))
            .timeout_per_read(Some(self.read))
            .timeout_per_write(Some(self.read))
    }

    /// What timed out, and after how long, for an error message.
    pub fn describe(&self, kind: ureq::Timeout) -> String {
        let secs = |d: Duration| {
            let s = d.as_secs_f64();
            if s.fract() == 0.0 {
                format!("{s:.0} s")
            } else {
                format!("{s} s")
            }
        };
        match kind {
            ureq::Timeout::Resolve | ureq::Timeout::Connect => format!(
                "timed out: no connection within {} ({})",
                secs(self.connect),
                Self::ENV
            ),
            ureq::Timeout::PerRead | ureq::Timeout::PerWrite => format!(
                "timed out: nothing sent or received for {} ({})",
                secs(self.read),
                Self::ENV
            ),
            other => format!("timed out ({other})"),
        }
    }

    /// The timeout in an error from ureq, or in an I/O error a response body's reader gave.
    pub fn timeout_in(e: &(dyn std::error::Error + 'static)) -> Option<ureq::Timeout> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(ureq::Error::Timeout(t)) = err.downcast_ref::<ureq::Error>() {
                return Some(*t);
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(ureq::Error::Timeout(t)) = inner.downcast_ref::<ureq::Error>()
            {
                return Some(*t);
            }
            cur = err.source();
        }
        None
    }
}

/// How to retry transient failures: `attempts` tries, waiting `backoff`, then twice that, ...
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Whether an error may go away by trying again: a broken connection, a 5xx or a 429.
pub(crate) fn transient(e: &Error) -> bool {
    match e {
        Error::Http { .. } => true,
        Error::Registry { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

impl Retry {
    /// Runs `f` until it succeeds, fails for good, or runs out of attempts; each retry is
    /// reported.
    pub(crate) fn run<T>(
        &self,
        what: &str,
        events: &(dyn Fn(Event) + Sync),
        mut f: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 1;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && attempt < self.attempts.max(1) => {
                    events(Event::Retrying {
                        what: what.to_owned(),
                        attempt,
                        error: e.to_string(),
                    });
                    std::thread::sleep(self.backoff * 2u32.saturating_pow(attempt - 1));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
