//! Emulated RUN: which binfmt_misc entries run another platform's binaries, and whether the
//! one a step needs is there, enabled and usable from inside a sandbox.

use std::path::Path;

use cairn_layers::platform::Platform;

pub use crate::error::EmulationError;

/// Where the kernel lists binfmt_misc's entries.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// One binfmt_misc entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Emulator {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
}

impl Emulator {
    /// The `F` (fix-binary) flag: the kernel opened the interpreter when it was registered,
    /// so it runs inside a step's root, which does not hold it, and no emulator is copied in.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// The entries registered in `dir` (binfmt_misc's mount), by name.
pub fn registered(dir: &Path) -> Vec<Emulator> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Emulator> = entries
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_str(), Some("register" | "status")))
        .filter_map(|e| {
            parse(
                &e.file_name().to_string_lossy(),
                &std::fs::read_to_string(e.path()).ok()?,
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// An entry's file: `enabled` or `disabled`, then `key value` lines.
fn parse(name: &str, text: &str) -> Option<Emulator> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let state = text.lines().next()?;
    Some(Emulator {
        name: name.to_owned(),
        enabled: state == "enabled",
        interpreter: field("interpreter "),
        flags: field("flags:"),
    })
}

/// Whether a RUN step of `platform` can run: natively, or through an enabled binfmt_misc
/// entry with the F flag (looked for in `dir`).
pub fn check(platform: &Platform, dir: &Path) -> Result<(), EmulationError> {
    // An image that names no architecture (hand-made, or from an old tool) is run as this
    // machine's, as docker runs it.
    if platform.is_native() || platform.architecture.is_empty() {
        return Ok(());
    }
    let Some(qemu) = platform.qemu_name() else {
        return Err(EmulationError::Unknown {
            platform: platform.to_string(),
        });
    };
    let entry = format!("qemu-{qemu}");
    let missing = |why| EmulationError::Missing {
        platform: platform.to_string(),
        entry: entry.clone(),
        why,
        dir: BINFMT_DIR,
    };
    let Some(text) = std::fs::read_to_string(dir.join(&entry)).ok() else {
        let mounted = dir.join("register").exists();
        return Err(missing(if mounted {
            ""
        } else {
            " (binfmt_misc is not mounted)"
        }));
    };
    let Some(e) = parse(&entry, &text) else {
        return Err(missing(" that can be read"));
    };
    if !e.enabled {
        return Err(missing(" enabled"));
    }
    if !e.fix_binary() {
        return Err(EmulationError::NoFixBinary {
            platform: platform.to_string(),
            entry,
            flags: e.flags,
            interpreter: e.interpreter,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_for_enabled_and_fix_binary() {
        let dir = tempfile::tempdir().unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        // Not mounted: no `register` file.
        let e = check(&arm64, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("not mounted") && e.contains("qemu-aarch64"),
            "{e}"
        );
        write("register", "");
        let e = check(&arm64, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("qemu-user-static") && !e.contains("not mounted"),
            "{e}"
        );
        let entry = |state: &str, flags: &str| {
            format!(
                "{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\nmagic 7f454c46\n"
            )
        };
        write("qemu-aarch64", &entry("disabled", "PF"));
        let e = check(&arm64, dir.path()).unwrap_err().to_string();
        assert!(e.contains("update-binfmts --enable qemu-aarch64"), "{e}");
        write("qemu-aarch64", &entry("enabled", "P"));
        let e = check(&arm64, dir.path()).unwrap_err().to_string();
        assert!(e.contains("fix-binary"), "{e}");
        write("qemu-aarch64", &entry("enabled", "PF"));
        check(&arm64, dir.path()).unwrap();
        assert_eq!(registered(dir.path()).len(), 1);
        // The host's own platform needs nothing.
        check(&Platform::host(), Path::new("/nonexistent")).unwrap();
        let e = check(&Platform::parse("linux/sparc").unwrap(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("no emulator"), "{e}");
    }
}
