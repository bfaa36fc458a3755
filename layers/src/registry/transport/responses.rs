//! Registry responses: bodies read within a limit, error documents turned into messages.

use std::io::Read;

use ureq::Body;
use ureq::http::{Response, StatusCode};

use crate::error::{Error, Result};

use super::retry::NetTimeouts;

/// The registry's error document (`{"errors":[{"code","message","detail"}]}`) as one line, or
/// the start of whatever else the body says.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Doc {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    if let Ok(doc) = serde_json::from_slice::<Doc>(body)
        && !doc.errors.is_empty()
    {
        return doc
            .errors
            .iter()
            .map(|e| {
                let mut s = match (e.code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.code, e.message),
                    (false, true) => e.code.clone(),
                    _ => e.message.clone(),
                };
                match &e.detail {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(d) if d.is_empty() => {}
                    d => s.push_str(&format!(" ({d})")),
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    // A HEAD answer has no body: name the code the registry would have sent with one.
    let reason = match status {
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED: authentication required",
        StatusCode::FORBIDDEN => "DENIED: requested access to the resource is denied",
        StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS: too many requests",
        s => s.canonical_reason().unwrap_or("error"),
    };
    if text.is_empty() {
        reason.to_owned()
    } else {
        let short: String = text.chars().take(300).collect();
        format!("{reason}: {short}")
    }
}

/// A response's body read to the end (at most `limit` bytes).
pub(crate) fn read_body(resp: Response<Body>, limit: u64, url: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    resp.into_body()
        .into_reader()
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::Http {
            what: "read the response".into(),
            url: url.to_owned(),
            message: match NetTimeouts::timeout_in(&e) {
                Some(t) => NetTimeouts::from_env().describe(t),
                None => e.to_string(),
            },
        })?;
    Ok(out)
}

/// An error for an unexpected response, with the registry's own words.
pub(crate) fn status_error(what: &str, url: &str, resp: Response<Body>) -> Error {
    let status = resp.status();
    let body = read_body(resp, 64 << 10, url).unwrap_or_default();
    Error::Registry {
        what: what.to_owned(),
        url: url.to_owned(),
        status: status.as_u16(),
        message: error_message(status, &body),
    }
}

/// A header's value as text.
pub(crate) fn header<'r>(resp: &'r Response<Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}
