//! Registry identity tokens (docker's `identitytoken`, what `docker login` stores when the
//! token server gives a refresh token), against the real distribution registry with `auth:
//! token` and the harness's token server: the OAuth2 refresh grant on push and pull, the
//! rotated refresh token used for the rest of the process, login storing the token instead of
//! the password, and a refused token's error.
#![allow(clippy::unwrap_used)]

use std::fs;

use cairn_e2e::registry::{Auth, ClientEnv, Options, Registry, base64, base64_decode, must_run};
use cairn_e2e::{Store, context_with, run_with_stdin, texts};

fn token_registry() -> Registry {
    Registry::start(Options {
        auth: Auth::token("erin", "er1n-pass"),
        tls: false,
    })
}

/// Writes the environment's docker config.json with `entry` as the registry's `auths` entry.
fn config(env: &ClientEnv, reg: &Registry, entry: serde_json::Value) {
    let doc = serde_json::json!({ "auths": { reg.addr(): entry } });
    fs::write(env.docker_config().join("config.json"), doc.to_string()).unwrap();
}

/// The token server's log lines of the refresh grant, and of the others.
fn grants(reg: &Registry) -> (Vec<String>, Vec<String>) {
    reg.token_server()
        .requests()
        .into_iter()
        .partition(|l| l.starts_with("POST grant=refresh_token "))
}

#[test]
fn an_identity_token_pushes_and_pulls_through_the_refresh_grant() {
    let reg = token_registry();
    let env = ClientEnv::new();
    let token = reg.token_server().issue_refresh_token();
    // Only the identity token: no user name, no password.
    config(&env, &reg, serde_json::json!({ "identitytoken": token }));
    let src = Store::new();
    let ctx = context_with("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    // Two repositories in one process: two token requests, the second with the refresh token
    // the first one's answer brought.
    let (a, b) = (reg.image("id/a:1"), reg.image("id/b:1"));
    let mut c = env.cairn(&src, &["build", "-q", "-t", &a, "-t", &b, "--push"]);
    c.arg(ctx.path());
    must_run(c, &reg);
    let (refreshes, others) = grants(&reg);
    assert!(others.is_empty(), "no other flow: {others:?}");
    assert!(refreshes.len() >= 2, "{refreshes:?}");
    assert!(
        refreshes[0].contains(&format!("refresh={token} client_id=cairn user=erin"))
            && refreshes[0].ends_with("-> 200"),
        "{refreshes:?}"
    );
    assert!(
        refreshes[1..]
            .iter()
            .all(|l| !l.contains(&format!("refresh={token} ")) && l.ends_with("-> 200")),
        "later requests send the new refresh token: {refreshes:?}"
    );
    assert!(
        refreshes.iter().any(|l| l.contains("push")),
        "{refreshes:?}"
    );

    let dst = Store::new();
    must_run(env.cairn(&dst, &["pull", &a]), &reg);
    let (refreshes_now, _) = grants(&reg);
    assert!(refreshes_now.len() > refreshes.len());
    // What the harness's skopeo (with the password) sees matches.
    assert_eq!(reg.skopeo_digest("id/a:1"), reg.skopeo_digest("id/b:1"));
}

#[test]
fn a_refused_identity_token_says_to_log_in_again() {
    let reg = token_registry();
    let env = ClientEnv::new();
    config(
        &env,
        &reg,
        serde_json::json!({ "auth": base64(b"erin:", false), "identitytoken": "revoked" }),
    );
    let out = env
        .cairn_bare(&["pull", &reg.image("id/none:1")])
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&reg.addr()) && stderr.contains("HTTP 401") && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`cairn login {}` again", reg.addr())),
        "{stderr}"
    );
    let (refreshes, _) = grants(&reg);
    assert!(
        refreshes
            .iter()
            .all(|l| l.contains("refresh=revoked") && l.ends_with("-> 401")),
        "{refreshes:?}"
    );
}

#[test]
fn login_stores_the_refresh_token_in_place_of_the_password() {
    let reg = token_registry();
    let env = ClientEnv::new();
    let addr = reg.addr();
    let c = env.cairn_bare(&["login", "-u", "erin", "--password-stdin", &addr]);
    let out = run_with_stdin(c, b"er1n-pass\n");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}\n{}", reg.log());
    assert_eq!(stdout.trim(), "Login Succeeded");
    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(env.docker_config().join("config.json")).unwrap())
            .unwrap();
    let entry = &saved["auths"][&addr];
    let token = entry["identitytoken"].as_str().unwrap_or_default();
    assert!(token.starts_with("cairn-test-refresh-"), "{saved}");
    // As docker writes it: the user, and no password.
    let auth = base64_decode(entry["auth"].as_str().unwrap()).unwrap();
    assert_eq!(auth, b"erin:");
    assert!(!saved.to_string().contains("er1n-pass"));

    let src = Store::new();
    let ctx = context_with("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    let mut c = env.cairn(&src, &["build", "-q", "-t", &reg.image("id/c:1"), "--push"]);
    c.arg(ctx.path());
    must_run(c, &reg);
    let (refreshes, _) = grants(&reg);
    assert!(
        refreshes
            .iter()
            .any(|l| l.contains(&format!("refresh={token} ")) && l.ends_with("-> 200")),
        "{refreshes:?}"
    );
}
