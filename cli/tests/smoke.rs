//! A smoke test of the binary from its own package, which also makes `cargo test` build it for
//! the end-to-end suite in `tests/`.

#[test]
fn prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--version")
        .output()
        .expect("cairn runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cairn "));
}
