//! Registry credentials: `WWW-Authenticate` challenges, reading credentials from auth files and
//! credential helpers, and storing or removing them for login and logout.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// docker's `identitytoken`: an OAuth2 refresh token the token server takes instead of
    /// the password (what `docker login` stores when the server gives one).
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.username)
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            identity_token: None,
        }
    }

    /// An identity token (and the user name it was issued to, which may be empty).
    pub fn identity(username: impl Into<String>, token: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: String::new(),
            identity_token: Some(token.into()),
        }
    }

    /// The `Authorization` value for Basic authentication.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`basic`, `bearer`).
    pub scheme: String,
    /// The parameters, keys lowercased (`realm`, `service`, `scope`, `error`).
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): challenges of a scheme and `key=value`
/// parameters, values plain tokens or quoted strings with backslash escapes. Unparseable tails
/// are dropped rather than failing: what was understood may still be enough.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c);
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            break;
        }
        let word = &header[start..i];
        // `word=` is a parameter of the current challenge; a bare word starts a new one.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch_len = header[i..].chars().next().map_or(1, char::len_utf8);
                    v.push_str(&header[i..i + ch_len]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                header[s..i].to_owned()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

/// The user name docker's credential helpers keep an identity token under.
const IDENTITY_USER: &str = "<token>";

/// The docker config key Docker uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The registry host an `auths` key or a login argument names: `host`, `host:port`,
/// `https://host/v1/` all give `host[:port]`; Docker Hub's spellings give `docker.io`.
pub fn normalize_registry(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        h => h.to_owned(),
    }
}

/// The server name given to credential helpers for a registry (Docker Hub's legacy URL).
fn helper_server(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The auth files credentials are read from, in order: `authfile` (given on the command
/// line), `$REGISTRY_AUTH_FILE`, docker's config.json, `$XDG_RUNTIME_DIR/containers/auth.json`.
pub fn auth_files(authfile: Option<&Path>) -> Vec<PathBuf> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    out.extend(authfile.map(Path::to_path_buf));
    out.extend(var("REGISTRY_AUTH_FILE"));
    out.extend(docker_config_path());
    out.extend(var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    out
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(Error::Config {
            path: path.to_path_buf(),
            message: "expected a JSON object".into(),
        }),
        Err(e) => Err(Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Finds credentials for `registry` (`host[:port]`, `docker.io`) in the auth files and the
/// credential helpers they name. `None`: go anonymous.
pub fn lookup(registry: &str, authfile: Option<&Path>) -> Result<Option<Credentials>> {
    for path in auth_files(authfile) {
        let Some(doc) = read_json(&path)? else {
            continue;
        };
        if let Some(found) = lookup_in(&doc, &path, registry)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn lookup_in(doc: &Map<String, Value>, path: &Path, registry: &str) -> Result<Option<Credentials>> {
    if let Some(helper) = doc
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_registry(k) == registry)
                .and_then(|(_, v)| v.as_str())
        })
    {
        return helper_get(helper, registry);
    }
    if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
        for (key, entry) in auths {
            if normalize_registry(key) != registry {
                continue;
            }
            if let Some(c) = entry_credentials(entry, path, key)? {
                return Ok(Some(c));
            }
        }
    }
    if let Some(store) = doc.get("credsStore").and_then(Value::as_str) {
        return helper_get(store, registry);
    }
    Ok(None)
}

/// The credentials of one `auths` entry: `auth` (base64 of `user:password`) or
/// `username`/`password`, and docker's `identitytoken`, which replaces the password.
fn entry_credentials(entry: &Value, path: &Path, key: &str) -> Result<Option<Credentials>> {
    let bad = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let field = |k| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut found = None;
    if let Some(auth) = field("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.{key:?}.auth is not base64: {e}")))?;
        let raw =
            String::from_utf8(raw).map_err(|_| bad(format!("auths.{key:?}.auth is not UTF-8")))?;
        let (u, p) = raw
            .split_once(':')
            .ok_or_else(|| bad(format!("auths.{key:?}.auth is not user:password")))?;
        found = Some(Credentials::new(u, p));
    } else if let (Some(u), Some(p)) = (field("username"), field("password")) {
        found = Some(Credentials::new(u, p));
    }
    if let Some(token) = field("identitytoken") {
        let user = found.map(|c| c.username).unwrap_or_default();
        return Ok(Some(Credentials::identity(user, token)));
    }
    Ok(found)
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin; its stdout, or `None`
/// when it says it has no credentials for the server.
fn run_helper(helper: &str, action: &str, input: &str, registry: &str) -> Result<Option<String>> {
    let program = format!("docker-credential-{helper}");
    let failed = |message: String| Error::Auth {
        registry: registry.to_owned(),
        message,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run credential helper {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("credential helper {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let said = if stdout.is_empty() {
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        } else {
            stdout
        };
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!(
            "credential helper {program} {action} failed ({}): {said}",
            out.status
        )));
    }
    Ok(Some(stdout))
}

fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    let Some(out) = run_helper(helper, "get", &helper_server(registry), registry)? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&out).map_err(|e| Error::Auth {
        registry: registry.to_owned(),
        message: format!("credential helper docker-credential-{helper} printed bad JSON: {e}"),
    })?;
    let field = |k| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let (user, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Ok(None);
    }
    // docker's helpers hold an identity token under the user name `<token>`.
    if user == IDENTITY_USER {
        return Ok(Some(Credentials::identity("", secret)));
    }
    Ok(Some(Credentials::new(user, secret)))
}

/// The file login and logout write: `authfile`, else `$REGISTRY_AUTH_FILE`, else docker's
/// config.json.
pub fn target_file(authfile: Option<&Path>) -> Result<PathBuf> {
    authfile
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("REGISTRY_AUTH_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(docker_config_path)
        .ok_or_else(|| Error::Auth {
            registry: String::new(),
            message: "no auth file: set --authfile, REGISTRY_AUTH_FILE, DOCKER_CONFIG or HOME"
                .into(),
        })
}

/// The helper the file names for `registry`, if any.
fn helper_for<'a>(doc: &'a Map<String, Value>, registry: &str) -> Option<&'a str> {
    doc.get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| normalize_registry(k) == registry)
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| doc.get("credsStore").and_then(Value::as_str))
}

/// The `auths` key written for a registry: docker's Hub URL in a docker config, the host
/// elsewhere.
fn auths_key(registry: &str, path: &Path) -> String {
    let docker = path.file_name().is_some_and(|n| n == "config.json");
    if registry == "docker.io" && docker {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// Stores credentials for `registry` in `path` (created 0600 if need be, other content kept),
/// or in the credential helper the file names for it. Returns where they went.
pub fn store(path: &Path, registry: &str, creds: &Credentials) -> Result<String> {
    let mut doc = read_json(path)?.unwrap_or_default();
    let key = auths_key(registry, path);
    let helper = helper_for(&doc, registry).map(str::to_owned);
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let Value::Object(auths) = auths else {
        return Err(Error::Config {
            path: path.to_path_buf(),
            message: "auths is not an object".into(),
        });
    };
    // Other spellings of the same registry would shadow (or outlive) the new entry.
    auths.retain(|k, _| normalize_registry(k) != registry);
    let place = if let Some(helper) = &helper {
        let (user, secret) = match &creds.identity_token {
            Some(t) => (IDENTITY_USER, t),
            None => (creds.username.as_str(), &creds.password),
        };
        let input = serde_json::json!({
            "ServerURL": helper_server(registry),
            "Username": user,
            "Secret": secret,
        })
        .to_string();
        run_helper(helper, "store", &input, registry)?;
        // Docker lists helper-held registries with an empty entry.
        auths.insert(key, Value::Object(Map::new()));
        format!("credential helper docker-credential-{helper}")
    } else {
        // As docker writes an identity token: `auth` with the user and no password.
        let raw = format!("{}:{}", creds.username, creds.password);
        let mut entry = Map::new();
        entry.insert(
            "auth".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        );
        if let Some(t) = &creds.identity_token {
            entry.insert("identitytoken".into(), Value::String(t.clone()));
        }
        auths.insert(key, Value::Object(entry));
        path.display().to_string()
    };
    write_private(path, &doc)?;
    Ok(place)
}

/// Removes `registry`'s credentials from `path` (and its credential helper); an error when
/// there were none.
pub fn remove(path: &Path, registry: &str) -> Result<()> {
    let mut doc = read_json(path)?.unwrap_or_default();
    let helper = helper_for(&doc, registry).map(str::to_owned);
    let mut found = false;
    if let Some(Value::Object(auths)) = doc.get_mut("auths") {
        let before = auths.len();
        auths.retain(|k, _| normalize_registry(k) != registry);
        found = auths.len() != before;
    }
    if let Some(helper) = helper {
        found |= run_helper(&helper, "erase", &helper_server(registry), registry)?.is_some();
    }
    if !found {
        return Err(Error::Auth {
            registry: registry.to_owned(),
            message: format!("not logged in (no credentials in {})", path.display()),
        });
    }
    write_private(path, &doc)
}

/// Writes a JSON document atomically with mode 0600, creating its directory.
fn write_private(path: &Path, doc: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .map_or_else(|| "auth.json".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let p = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let cases: &[(&str, Vec<Challenge>)] = &[
            (
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
                vec![Challenge {
                    scheme: "bearer".into(),
                    params: p(&[
                        ("realm", "https://auth.example/token"),
                        ("service", "registry.example"),
                        ("scope", "repository:a/b:pull"),
                    ]),
                }],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![Challenge {
                    scheme: "basic".into(),
                    params: p(&[("realm", "Registry Realm")]),
                }],
            ),
            (
                r#"BEARER Realm = "http://127.0.0.1:1/t" , error="insufficient_scope", scope="repository:x:pull,push""#,
                vec![Challenge {
                    scheme: "bearer".into(),
                    params: p(&[
                        ("realm", "http://127.0.0.1:1/t"),
                        ("error", "insufficient_scope"),
                        ("scope", "repository:x:pull,push"),
                    ]),
                }],
            ),
            (
                r#"Bearer realm=token-host,service="a\"b", Basic realm="x""#,
                vec![
                    Challenge {
                        scheme: "bearer".into(),
                        params: p(&[("realm", "token-host"), ("service", "a\"b")]),
                    },
                    Challenge {
                        scheme: "basic".into(),
                        params: p(&[("realm", "x")]),
                    },
                ],
            ),
            ("", vec![]),
            (
                "Negotiate",
                vec![Challenge {
                    scheme: "negotiate".into(),
                    params: p(&[]),
                }],
            ),
        ];
        for (header, want) in cases {
            assert_eq!(&parse_challenges(header), want, "{header}");
        }
    }

    #[test]
    fn registry_keys() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("registry.example/some/path", "registry.example"),
        ];
        for (key, want) in cases {
            assert_eq!(normalize_registry(key), *want, "{key}");
        }
    }

    #[test]
    fn auth_file_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("u1:p:1");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://127.0.0.1:5000/v1/":{{"auth":"{b64}"}},
                "localhost:5001":{{"username":"u2","password":"p2"}},
                "https://index.docker.io/v1/":{{"auth":"{b64}"}}}}}}"#
            ),
        )
        .unwrap();
        let doc = read_json(&path).unwrap().unwrap();
        let cases: &[(&str, Option<Credentials>)] = &[
            ("127.0.0.1:5000", Some(Credentials::new("u1", "p:1"))),
            ("localhost:5001", Some(Credentials::new("u2", "p2"))),
            ("docker.io", Some(Credentials::new("u1", "p:1"))),
            ("127.0.0.1:5002", None),
        ];
        for (registry, want) in cases {
            assert_eq!(
                &lookup_in(&doc, &path, registry).unwrap(),
                want,
                "{registry}"
            );
        }
    }

    #[test]
    fn store_and_remove_keep_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"psFormat":"x","auths":{"other:1":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        store(&path, "127.0.0.1:5000", &Credentials::new("me", "pw")).unwrap();
        store(&path, "docker.io", &Credentials::new("hub", "pw")).unwrap();
        let doc = read_json(&path).unwrap().unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert!(doc["auths"].get("other:1").is_some());
        assert!(doc["auths"].get("https://index.docker.io/v1/").is_some());
        assert_eq!(
            lookup_in(&doc, &path, "127.0.0.1:5000").unwrap(),
            Some(Credentials::new("me", "pw"))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        remove(&path, "127.0.0.1:5000").unwrap();
        let err = remove(&path, "127.0.0.1:5000").unwrap_err().to_string();
        assert!(err.contains("not logged in"), "{err}");
        let doc = read_json(&path).unwrap().unwrap();
        assert!(lookup_in(&doc, &path, "127.0.0.1:5000").unwrap().is_none());
        assert!(doc["auths"].get("other:1").is_some());
    }

    #[test]
    fn identity_tokens_are_read_and_stored_as_docker_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"auths":{
                "only:1":{"identitytoken":"t1"},
                "with-user:1":{"auth":"dTo=","identitytoken":"t2"},
                "plain:1":{"auth":"dTpw"}}}"#,
        )
        .unwrap();
        let cases = [
            ("only:1", Some(Credentials::identity("", "t1"))),
            ("with-user:1", Some(Credentials::identity("u", "t2"))),
            ("plain:1", Some(Credentials::new("u", "p"))),
        ];
        for (registry, want) in cases {
            assert_eq!(
                lookup_in(&doc, &path, registry).unwrap(),
                want,
                "{registry}"
            );
        }
        store(&path, "reg:1", &Credentials::identity("me", "tok")).unwrap();
        let doc = read_json(&path).unwrap().unwrap();
        assert_eq!(doc["auths"]["reg:1"]["identitytoken"], "tok");
        assert_eq!(doc["auths"]["reg:1"]["auth"], "bWU6");
        assert_eq!(
            lookup_in(&doc, &path, "reg:1").unwrap(),
            Some(Credentials::identity("me", "tok"))
        );
    }
}
