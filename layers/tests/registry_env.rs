//! Credentials found through the environment: a docker config.json under `DOCKER_CONFIG` and a
//! `docker-credential-*` helper on `PATH`, for lookup, login and logout. One test in its own
//! binary, because it changes the process environment.

// Helpers outside #[test] functions panic on broken fixtures too.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use cairn_layers::Reference;
use cairn_layers::registry::{self, Credentials};
use support::*;

const HELPER: &str = r#"#!/bin/sh
# A credential helper keeping one secret in a file next to it.
dir=$(dirname "$0")
read -r server
case "$1" in
get)
  if [ -f "$dir/secret" ] && [ "$server" = "$(cat "$dir/server")" ]; then
    cat "$dir/secret"
  else
    echo "credentials not found in native keychain"; exit 1
  fi ;;
store)
  printf '%s\n' "$server" > "$dir/stored" ;;
erase)
  echo "$server" > "$dir/erased" ;;
esac
"#;

#[test]
fn registry_credentials_from_docker_config_and_helpers() {
    let reg = TestRegistry::start_with_auth(Some(("alice", "s3cret")));
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    let docker = home.path().join("docker");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&docker).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // SAFETY: this binary's only test, changing the environment before it starts any thread
    // of its own; the registry process already runs with its own copy.
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::set_var("DOCKER_CONFIG", &docker);
        std::env::set_var("XDG_RUNTIME_DIR", home.path().join("run"));
        std::env::remove_var("REGISTRY_AUTH_FILE");
        std::env::set_var("PATH", path);
    }
    let (_a, src) = store();
    let desc = image(&src, 9, &[200], "amd64");
    let dest = Reference::parse(&format!("{}/env:1", reg.addr)).unwrap();
    let ev = Events::default();
    let config = docker.join("config.json");

    // Nothing configured: refused.
    let e = registry::push(&src, &desc, &dest, &opts(), &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("UNAUTHORIZED"), "{e}");

    // `auths` in DOCKER_CONFIG's config.json, keyed by a URL.
    let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"https://{}/v1/":{{"auth":"{b64}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    registry::push(&src, &desc, &dest, &opts(), &ev.sink()).unwrap();

    // A credential helper for the registry wins over `auths`.
    let helper = bin.join("docker-credential-cairntest");
    std::fs::write(&helper, HELPER).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("server"), &reg.addr).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"{{"credHelpers":{{"{}":"cairntest"}},"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.addr,
            reg.addr,
            base64::engine::general_purpose::STANDARD.encode("alice:wrong"),
        ),
    )
    .unwrap();
    std::fs::write(
        bin.join("secret"),
        r#"{"ServerURL":"x","Username":"alice","Secret":"s3cret"}"#,
    )
    .unwrap();
    let (_b, dst) = store();
    registry::pull(&dst, &dest, &opts(), &ev.sink()).unwrap();
    // The helper has nothing: the registry refuses (the wrong `auths` entry is not used).
    std::fs::remove_file(bin.join("secret")).unwrap();
    let (_c, dst) = store();
    let e = registry::pull(&dst, &dest, &opts(), &ev.sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("UNAUTHORIZED"), "{e}");

    // login stores through the helper the config names, logout erases there.
    registry::login(
        &reg.addr,
        &Credentials::new("alice", "s3cret"),
        &opts(),
        &ev.sink(),
    )
    .unwrap();
    let stored = std::fs::read_to_string(bin.join("stored")).unwrap();
    assert!(stored.contains(r#""Username":"alice""#), "{stored}");
    assert!(stored.contains(r#""Secret":"s3cret""#), "{stored}");
    registry::logout(&reg.addr, None).unwrap();
    assert_eq!(
        std::fs::read_to_string(bin.join("erased")).unwrap().trim(),
        reg.addr
    );

    // Without helpers, login writes config.json (0600), keeping what else it holds.
    std::fs::write(&config, r#"{"detachKeys":"ctrl-x"}"#).unwrap();
    registry::login(
        &reg.addr,
        &Credentials::new("alice", "s3cret"),
        &opts(),
        &ev.sink(),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(doc["detachKeys"], "ctrl-x");
    assert_eq!(doc["auths"][&reg.addr]["auth"], b64);
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (_d, dst) = store();
    registry::pull(&dst, &dest, &opts(), &ev.sink()).unwrap();
}
