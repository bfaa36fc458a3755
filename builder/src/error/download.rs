//! What stops an ADD download (kept here, below `remote`, so the crate's error can wrap it).

use std::path::PathBuf;

/// Why an ADD of a URL failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// What stops the download without an error of its own: the `--checksum` given, an
    /// answer refused (a status, a redirect), a checksum mismatch, a cancelled build.
    #[error("{0}")]
    Refused(String),
    /// A read that timed out; `what` says which timeout, and how to change it.
    #[error("failed to download {url}: {what}")]
    Timeout { url: String, what: String },
    /// The request failed.
    #[error("failed to download {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The body's transfer failed.
    #[error("failed to download {url}: {source}")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The file it goes to that cannot be made or written.
    #[error("failed to {action} {}{}: {source}", path.display(), for_url(url))]
    File {
        action: &'static str,
        path: PathBuf,
        /// The URL, when the message names it.
        url: Option<String>,
        #[source]
        source: std::io::Error,
    },
}

fn for_url(url: &Option<String>) -> String {
    url.as_ref()
        .map(|u| format!(" for {u}"))
        .unwrap_or_default()
}
