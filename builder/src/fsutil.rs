//! Files written whole: through a temp file and a rename, so no reader sees half of one.

use std::path::Path;

/// Writes `bytes` at `path` through a temp file beside it and a rename: never half a file
/// under its name, and no temp file left when it fails.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(temp_name(&name));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// A temp file name no other writer uses: stages of one wave (and other builds) write at once.
pub(crate) fn temp_name(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{base}.{}.{n}", std::process::id())
}
