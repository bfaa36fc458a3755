//! Helpers for cairn's end-to-end tests: find the real `cairn` binary and run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `cairn` binary under test: `$CAIRN_BIN`, else the one cargo built next to this test.
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p cairn) or set CAIRN_BIN",
        bin.display()
    );
    bin
}

/// The repository's root, for fixtures: `$CAIRN_REPO_ROOT` (set when the suite runs as another
/// user from a staged copy), else where this crate was built.
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_REPO_ROOT") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// A `cairn` command with a clean, predictable environment.
pub fn cairn() -> Command {
    let mut cmd = Command::new(cairn_bin());
    cmd.env_remove("CAIRN_ROOT").env("NO_COLOR", "1");
    cmd
}

/// Runs `cmd` with `stdin` fed to it and returns what it did.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("cairn finishes")
}

/// Stdout and stderr as text, for assertions and failure messages.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
