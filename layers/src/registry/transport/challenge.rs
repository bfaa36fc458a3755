//! The auth flows a 401 asks for: Basic, or a Bearer token fetched for the scopes needed.

use ureq::Body;
use ureq::http::{Method, Response};

use crate::error::{Error, Result};
use crate::registry::auth::{Challenge, Credentials, parse_challenges};

use super::responses::{error_message, read_body};
use super::{Auth, Payload, Registry, query_escape};

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
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if !service.is_empty() {
            url.push_str(&format!("{sep}service={}", query_escape(service)));
            sep = '&';
        }
        for s in &sorted {
            url.push_str(&format!("{sep}scope={}", query_escape(s)));
            sep = '&';
        }
        let auth_err = |message: String| Error::Auth {
            registry: self.domain.clone(),
            message,
        };
        let basic = self.creds.as_ref().map(Credentials::basic);
        let resp = self
            .raw(Method::GET, &url, &[], Payload::Empty, basic.as_deref())
            .map_err(|e| auth_err(format!("token server {realm}: {e}")))?;
        let status = resp.status();
        let body = read_body(resp, 1 << 20, &url)?;
        if !status.is_success() {
            return Err(auth_err(format!(
                "token server {realm} answered HTTP {}: {}",
                status.as_u16(),
                error_message(status, &body)
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenDoc {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
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
