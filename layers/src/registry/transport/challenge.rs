//! The auth flows a 401 asks for: Basic, or a Bearer token fetched for the scopes needed.

use ureq::Body;
use ureq::http::{Method, Response};

use crate::error::{Error, Result};
use crate::registry::auth::{Challenge, Credentials, parse_challenges};

use super::responses::{error_message, read_body};
use super::{Auth, Payload, Registry, query_escape};

/// The `client_id` cairn names itself by to token servers (docker says `docker`).
const CLIENT_ID: &str = "cairn";

/// Refresh tokens a token server replaced, old to new, for the whole process: every registry
/// handle of the process sends the newest, as docker's session does.
static ROTATED: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The newest refresh token `token` was replaced by (itself if none).
fn latest_refresh_token(token: &str) -> String {
    let rotated = ROTATED.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = token;
    // Bounded: a server handing back an older token must not loop.
    for _ in 0..=rotated.len() {
        match rotated.get(t) {
            Some(next) => t = next,
            None => break,
        }
    }
    t.to_owned()
}

/// The token request of the Docker token protocol: `GET realm?service=&scope=...`, with
/// `offline_token=true` when a refresh token is wanted too.
fn token_url(realm: &str, service: &str, scopes: &[String], offline: bool) -> String {
    let mut url = realm.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    let mut add = |k: &str, v: &str| {
        url.push_str(&format!("{sep}{k}={}", query_escape(v)));
        sep = '&';
    };
    if !service.is_empty() {
        add("service", service);
    }
    for s in scopes {
        add("scope", s);
    }
    if offline {
        add("offline_token", "true");
        add("client_id", CLIENT_ID);
    }
    url
}

/// The OAuth2 refresh grant's form: the scopes in one space-separated `scope`.
fn oauth_form(refresh: &str, service: &str, scopes: &[String]) -> String {
    let mut form = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={CLIENT_ID}",
        query_escape(refresh)
    );
    if !service.is_empty() {
        form.push_str(&format!("&service={}", query_escape(service)));
    }
    if !scopes.is_empty() {
        form.push_str(&format!("&scope={}", query_escape(&scopes.join(" "))));
    }
    form
}

impl Registry {
    /// Records how a 401 answer asks to authenticate; whether it said anything usable.
    pub(super) fn learn_challenge(&self, resp: &Response<Body>) -> bool {
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let new = match (bearer, challenges.iter().any(|c| c.scheme == "basic")) {
            (Some(c), _) => match c.param("realm") {
                Some(realm) => Auth::Bearer {
                    realm: realm.to_owned(),
                    service: c.param("service").unwrap_or_default().to_owned(),
                },
                None => return false,
            },
            (None, true) => Auth::Basic,
            (None, false) => return false,
        };
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = new;
        true
    }

    /// A bearer token for `scopes`, from the cache or the token server.
    fn token(&self, realm: &str, service: &str, scopes: &[String], fresh: bool) -> Result<String> {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        sorted.dedup();
        let key = sorted.join(" ");
        // One fetch at a time, so threads needing the same token wait for it rather than each
        // asking the token server.
        let _fetching = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh
            && let Some(t) = self
                .tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
        {
            return Ok(t.clone());
        }
        let auth_err = |message: String| Error::Auth {
            registry: self.domain.clone(),
            message,
        };
        let identity = self
            .creds
            .as_ref()
            .and_then(|c| c.identity_token.as_deref())
            .map(latest_refresh_token);
        let (resp, url) = match &identity {
            // An identity token is an OAuth2 refresh token (distribution's docs/spec/auth/
            // oauth.md): POSTed as a form, never sent as a password.
            Some(refresh) => {
                let form = oauth_form(refresh, service, &sorted);
                let headers = [(
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                )];
                let resp = self.raw(
                    Method::POST,
                    realm,
                    &headers,
                    Payload::Bytes(form.as_bytes()),
                    None,
                );
                (resp, realm.to_owned())
            }
            None => {
                let url = token_url(realm, service, &sorted, self.offline);
                let basic = self.creds.as_ref().map(Credentials::basic);
                let resp = self.raw(Method::GET, &url, &[], Payload::Empty, basic.as_deref());
                (resp, url)
            }
        };
        let resp = resp.map_err(|e| auth_err(format!("token server {realm}: {e}")))?;
        let status = resp.status();
        let body = read_body(resp, 1 << 20, &url)?;
        if !status.is_success() {
            let message = error_message(status, &body);
            // OAuth2 answers a bad refresh token with 400 invalid_grant (RFC 6749 5.2).
            let refused = matches!(status.as_u16(), 401 | 403)
                || (identity.is_some() && status.as_u16() == 400);
            if refused {
                return Err(Error::TokenRefused {
                    registry: self.domain.clone(),
                    realm: realm.to_owned(),
                    status: status.as_u16(),
                    message,
                });
            }
            return Err(auth_err(format!(
                "token server {realm} answered HTTP {}: {message}",
                status.as_u16(),
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenDoc {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            refresh_token: String,
        }
        let doc: TokenDoc = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("token server {realm} sent bad JSON: {e}")))?;
        let token = if doc.token.is_empty() {
            doc.access_token
        } else {
            doc.token
        };
        if token.is_empty() {
            return Err(auth_err(format!("token server {realm} sent no token")));
        }
        if !doc.refresh_token.is_empty() {
            // A new refresh token replaces the one sent, for the rest of the process.
            if let Some(old) = &identity
                && *old != doc.refresh_token
            {
                ROTATED
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(old.clone(), doc.refresh_token.clone());
            }
            *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc.refresh_token);
        }
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, token.clone());
        Ok(token)
    }

    /// The `Authorization` value for a request needing `scopes`, as the registry asked.
    pub(super) fn authorization(&self, scopes: &[String], fresh: bool) -> Result<Option<String>> {
        let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match auth {
            Auth::None => Ok(None),
            Auth::Basic => Ok(self.creds.as_ref().map(Credentials::basic)),
            Auth::Bearer { realm, service } => Ok(Some(format!(
                "Bearer {}",
                self.token(&realm, &service, scopes, fresh)?
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_requests_have_the_protocols_shapes() {
        let scopes = [
            "repository:a/b:pull".to_owned(),
            "repository:c:pull,push".to_owned(),
        ];
        let cases = [
            (
                token_url("http://t/token", "reg", &scopes, false),
                "http://t/token?service=reg&scope=repository%3Aa%2Fb%3Apull&scope=repository%3Ac%3Apull%2Cpush",
            ),
            (
                token_url("http://t/token?x=1", "", &scopes[..1], true),
                "http://t/token?x=1&scope=repository%3Aa%2Fb%3Apull&offline_token=true&client_id=cairn",
            ),
            (
                oauth_form("r+t/1", "reg", &scopes),
                "grant_type=refresh_token&refresh_token=r%2Bt%2F1&client_id=cairn&service=reg&scope=repository%3Aa%2Fb%3Apull%20repository%3Ac%3Apull%2Cpush",
            ),
            (
                oauth_form("r", "", &[]),
                "grant_type=refresh_token&refresh_token=r&client_id=cairn",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_rotated_refresh_token_is_followed_to_the_newest() {
        {
            let mut r = ROTATED.lock().unwrap();
            r.insert("test-old".into(), "test-mid".into());
            r.insert("test-mid".into(), "test-new".into());
            r.insert("test-loop-a".into(), "test-loop-b".into());
            r.insert("test-loop-b".into(), "test-loop-a".into());
        }
        assert_eq!(latest_refresh_token("test-old"), "test-new");
        assert_eq!(latest_refresh_token("test-other"), "test-other");
        // A cycle ends.
        latest_refresh_token("test-loop-a");
    }
}
