//! Proves which user the end-to-end suite runs as: scripts/e2e-as-user.sh sets
//! `CAIRN_E2E_EXPECT_UNPRIVILEGED=1`, so a run that silently fell back to root fails here.

#[test]
fn runs_as_the_expected_user() {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id runs");
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id -u prints a number");
    match std::env::var("CAIRN_E2E_EXPECT_UNPRIVILEGED").as_deref() {
        Ok("1") => assert_ne!(uid, 0, "the unprivileged run is running as root"),
        _ => assert!(
            std::env::var_os("HOME").is_some(),
            "the suite runs with a HOME"
        ),
    }
}
