//! rpm databases: found, not read. Their packages are reported as not covered.
//!
//! Modern distributions keep the rpmdb in SQLite (`rpmdb.sqlite`), older ones in BerkeleyDB
//! (`Packages`) or NDB (`Packages.db`); each row is an rpm header blob. Reading them needs a
//! SQLite library and a header parser, which cairn does not carry yet: saying that the
//! database is there, unread, keeps the SBOM honest about what it lists.

/// Where rpm keeps its database: the traditional directory, and `/usr/lib/sysimage/rpm` that
/// Fedora 36 and later (and openSUSE) use, with `/var/lib/rpm` a symlink to it.
pub const DATABASES: [&str; 6] = [
    "var/lib/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/Packages",
    "usr/lib/sysimage/rpm/Packages.db",
];

/// Why a database at `path` is not in the SBOM.
pub fn not_read(path: &str) -> String {
    let format = if path.ends_with(".sqlite") {
        "SQLite"
    } else if path.ends_with(".db") {
        "NDB"
    } else {
        "BerkeleyDB"
    };
    format!(
        "rpm database /{path} ({format}) present but not read: cairn does not read rpm databases yet"
    )
}
