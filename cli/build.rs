//! Stamps the binary with the commit it was built from (`cairn info`), when built from git.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The git directory of the checkout: `../.git`, or where a worktree's `.git` file points.
fn git_dir() -> Option<PathBuf> {
    let dot = Path::new("../.git");
    if dot.is_dir() {
        return Some(dot.to_path_buf());
    }
    let text = std::fs::read_to_string(dot).ok()?;
    let dir = PathBuf::from(text.trim().strip_prefix("gitdir: ")?);
    Some(if dir.is_absolute() {
        dir
    } else {
        Path::new("..").join(dir)
    })
}

fn main() {
    if let Some(git) = git_dir() {
        // A new commit moves HEAD's branch, not HEAD itself.
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(r) = head.trim().strip_prefix("ref: ")
        {
            // A worktree's branches live in the main repository's refs (or packed-refs).
            let common = std::fs::read_to_string(git.join("commondir"))
                .map(|c| git.join(c.trim()))
                .unwrap_or_else(|_| git.clone());
            let loose = common.join(r);
            if loose.exists() {
                println!("cargo:rerun-if-changed={}", loose.display());
            } else {
                println!(
                    "cargo:rerun-if-changed={}",
                    common.join("packed-refs").display()
                );
            }
        }
    }
    println!("cargo:rerun-if-env-changed=CAIRN_COMMIT");
    let commit = std::env::var("CAIRN_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    if let Some(c) = commit.filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=CAIRN_COMMIT={c}");
    }
}
