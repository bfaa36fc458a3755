//! rpm databases: the SQLite rpmdb (rpm 4.16 and later) read, one package per header blob in its
//! Packages table (`rpm/header.rs` parses them); BerkeleyDB and NDB databases found and reported
//! as not covered, since cairn does not read those formats.
//!
//! The database file is untrusted. SQLite needs it on disk, so its bytes (and its write-ahead
//! log, which may hold transactions not yet copied into it) go to a private temporary directory
//! and are opened read-only there: whatever SQLite creates beside them (`-shm`) goes away with
//! that directory, and nothing of the image is ever opened in place.

mod header;

use std::error::Error as _;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use super::{Ecosystem, Package};
use header::HeaderError;

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

/// The suffix of a SQLite database's write-ahead log (sqlite.org/wal.html), read with it.
pub const WAL_SUFFIX: &str = "-wal";

/// The most packages read from one database: a large distribution installs a few thousand.
const MAX_PACKAGES: usize = 200_000;

/// How an rpm database is stored, by its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sqlite,
    BerkeleyDb,
    Ndb,
}

impl Format {
    pub fn of(path: &str) -> Format {
        if path.ends_with(".sqlite") {
            Format::Sqlite
        } else if path.ends_with(".db") {
            Format::Ndb
        } else {
            Format::BerkeleyDb
        }
    }
}

/// Why a database at `path` in a format cairn does not read is not in the SBOM.
pub fn not_read(path: &str) -> String {
    let format = match Format::of(path) {
        Format::Sqlite => "SQLite",
        Format::Ndb => "NDB",
        Format::BerkeleyDb => "BerkeleyDB",
    };
    format!(
        "rpm database /{path} ({format}) present but not read: cairn reads only SQLite rpm databases"
    )
}

/// Why a SQLite rpm database cannot be read at all.
#[derive(Debug, Error)]
pub enum RpmdbError {
    #[error("failed to copy it to a private temporary directory")]
    Copy(#[source] std::io::Error),
    #[error("failed to open it as a SQLite database")]
    Open(#[source] rusqlite::Error),
    #[error("it has no Packages table")]
    NoPackages,
    #[error("failed to read its Packages table")]
    Query(#[source] rusqlite::Error),
    #[error("it holds more than {MAX_PACKAGES} packages")]
    TooMany,
}

impl RpmdbError {
    /// The error and its cause, as one line for a not-covered entry. Only the first cause: a
    /// SQLite error's own source repeats its message by its code.
    pub fn reason(&self) -> String {
        match self.source() {
            Some(cause) => format!("{self}: {cause}"),
            None => self.to_string(),
        }
    }
}

/// What one database yields.
#[derive(Debug, Default)]
pub struct Contents {
    pub packages: Vec<Package>,
    /// How many rows held no readable package, with the first one's row number and why.
    pub malformed: usize,
    pub first_malformed: Option<(i64, HeaderError)>,
}

/// Reads the SQLite rpmdb `db` (and its write-ahead log `wal`, when the image has one), which
/// the image holds at `source`.
pub fn read_sqlite(db: &[u8], wal: Option<&[u8]>, source: &str) -> Result<Contents, RpmdbError> {
    read_sqlite_in(&std::env::temp_dir(), db, wal, source)
}

/// [`read_sqlite`] with its private directory made in `tmp`.
fn read_sqlite_in(
    tmp: &Path,
    db: &[u8],
    wal: Option<&[u8]>,
    source: &str,
) -> Result<Contents, RpmdbError> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-rpmdb-")
        .tempdir_in(tmp)
        .map_err(RpmdbError::Copy)?;
    let path = dir.path().join("rpmdb.sqlite");
    write_private(&path, db)?;
    if let Some(wal) = wal {
        write_private(&dir.path().join(format!("rpmdb.sqlite{WAL_SUFFIX}")), wal)?;
    }
    // `query` closes its connection before the directory and all SQLite made in it go.
    query(&path, source)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), RpmdbError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(RpmdbError::Copy)?;
    f.write_all(bytes).map_err(RpmdbError::Copy)
}

fn query(path: &Path, source: &str) -> Result<Contents, RpmdbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(RpmdbError::Open)?;
    harden(&conn).map_err(RpmdbError::Open)?;
    // A view or virtual table named Packages could run arbitrary queries; rpm writes a table.
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'Packages'",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(RpmdbError::Open(e)),
        })?;
    if !sql.is_some_and(|s| {
        s.trim_start()
            .to_ascii_uppercase()
            .starts_with("CREATE TABLE")
    }) {
        return Err(RpmdbError::NoPackages);
    }
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum LIMIT ?1")
        .map_err(RpmdbError::Query)?;
    let mut rows = stmt
        .query([MAX_PACKAGES as i64 + 1])
        .map_err(RpmdbError::Query)?;
    let mut read = Contents::default();
    let mut n = 0;
    while let Some(row) = rows.next().map_err(RpmdbError::Query)? {
        n += 1;
        if n > MAX_PACKAGES {
            return Err(RpmdbError::TooMany);
        }
        let hnum: i64 = row.get(0).unwrap_or(-1);
        let parsed = match row.get_ref(1).map_err(RpmdbError::Query)? {
            rusqlite::types::ValueRef::Blob(b) => package(b, source),
            _ => Err(HeaderError::Short(0)),
        };
        match parsed {
            Ok(p) => read.packages.push(p),
            Err(e) => {
                read.malformed += 1;
                read.first_malformed.get_or_insert((hnum, e));
            }
        }
    }
    Ok(read)
}

/// Settings for a database file from an untrusted image (sqlite.org/security.html, "Untrusted
/// SQLite Database Files"): no schema-defined function may have side effects, corrupt pages are
/// caught early, and nothing can change it.
fn harden(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.pragma_update(None, "cell_size_check", true)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "query_only", true)
}

/// The package a header blob describes.
fn package(blob: &[u8], source: &str) -> Result<Package, HeaderError> {
    use header::*;
    let h = Header::parse(blob)?;
    let required = |tag| {
        h.string(tag)?
            .filter(|s| !s.is_empty())
            .ok_or(HeaderError::Entry {
                tag,
                what: "missing",
            })
    };
    let name = required(NAME)?;
    let mut version = required(VERSION)?;
    if let Some(release) = h.string(RELEASE)?.filter(|r| !r.is_empty()) {
        version = format!("{version}-{release}");
    }
    // rpm's EVR notation: the epoch before a colon, as `rpm -q --qf '%{EVR}'` shows it.
    if let Some(epoch) = h.int32(EPOCH)? {
        version = format!("{epoch}:{version}");
    }
    let text = |tag| -> Result<Option<String>, HeaderError> {
        Ok(h.string(tag)?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s != "(none)"))
    };
    Ok(Package {
        ecosystem: Ecosystem::Rpm,
        name,
        version,
        arch: text(ARCH)?,
        license: text(LICENSE)?,
        supplier: text(VENDOR)?,
        originator: None,
        source_package: text(SOURCERPM)?,
        source: source.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See `rpm/header.rs`: a real header of rpm 4.18.
    const REAL: &[u8] = include_bytes!("testdata/rpm-header.bin");

    /// A SQLite rpmdb made by SQLite itself, with rpm's schema (lib/backend/sqlite.c) and
    /// `rows` as its Packages.
    fn rpmdb(schema: &str, rows: &[&[u8]], wal: bool) -> (Vec<u8>, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        let conn = Connection::open(&path).unwrap();
        if wal {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        }
        conn.execute_batch(schema).unwrap();
        if wal {
            // The schema in the file, the rows only in the log.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
        for row in rows {
            conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [row])
                .unwrap();
        }
        let db = std::fs::read(&path).unwrap();
        let wal = wal.then(|| std::fs::read(dir.path().join("rpmdb.sqlite-wal")).unwrap());
        drop(conn);
        (db, wal)
    }

    const SCHEMA: &str =
        "CREATE TABLE 'Packages' (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);";

    fn names(r: &Contents) -> Vec<(String, String, Option<String>)> {
        r.packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
            .collect()
    }

    #[test]
    fn a_database_of_real_headers() {
        let (db, _) = rpmdb(SCHEMA, &[REAL, b"junk", REAL], false);
        let r = read_sqlite(&db, None, "var/lib/rpm/rpmdb.sqlite").unwrap();
        let one = (
            "cairn-hello".to_owned(),
            "2:1.2.3-4.fc39".to_owned(),
            Some("noarch".to_owned()),
        );
        assert_eq!(names(&r), vec![one.clone(), one]);
        assert_eq!(r.malformed, 1);
        assert_eq!(
            r.first_malformed.as_ref().map(|(n, e)| (*n, e.to_string())),
            Some((
                2,
                "header of 4 bytes is shorter than its 8-byte intro".into()
            ))
        );
        let p = &r.packages[0];
        assert_eq!(
            p.license.as_deref(),
            Some("MIT AND (Apache-2.0 OR BSD-3-Clause)")
        );
        assert_eq!(p.supplier.as_deref(), Some("Fedora Project"));
        assert_eq!(
            p.source_package.as_deref(),
            Some("cairn-hello-1.2.3-4.fc39.src.rpm")
        );
        assert_eq!(p.source, "var/lib/rpm/rpmdb.sqlite");
    }

    #[test]
    fn rows_only_in_the_write_ahead_log_are_read() {
        let (db, wal) = rpmdb(SCHEMA, &[REAL], true);
        let wal = wal.unwrap();
        assert!(!wal.is_empty());
        assert_eq!(read_sqlite(&db, Some(&wal), "x").unwrap().packages.len(), 1);
        // Without the log the file is still a database, of no packages yet.
        assert_eq!(read_sqlite(&db, None, "x").unwrap().packages.len(), 0);
    }

    #[test]
    fn databases_that_are_not_rpm_s() {
        let view = "CREATE TABLE t (hnum INTEGER, blob BLOB); \
                    CREATE VIEW Packages AS SELECT * FROM t;";
        let (view_db, _) = rpmdb(view, &[], false);
        let (no_table, _) = rpmdb("CREATE TABLE Other (x);", &[], false);
        let mut truncated = rpmdb(SCHEMA, &[REAL], false).0;
        truncated.truncate(truncated.len() / 2);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "garbage",
                b"not a database at all, not at all".repeat(200),
                "failed to open it as a SQLite database: file is not a database",
            ),
            ("a view", view_db, "it has no Packages table"),
            ("no table", no_table, "it has no Packages table"),
            (
                "truncated",
                truncated,
                "failed to open it as a SQLite database: database disk image is malformed",
            ),
        ];
        for (name, db, want) in cases {
            let got = read_sqlite(&db, None, "x").map(|r| r.packages.len());
            match got {
                Err(e) => assert_eq!(e.reason(), want, "{name}"),
                Ok(n) => panic!("{name}: read {n} packages"),
            }
        }
    }

    #[test]
    fn nothing_is_left_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, wal) = rpmdb(SCHEMA, &[REAL], true);
        let r = read_sqlite_in(tmp.path(), &db, wal.as_deref(), "x").unwrap();
        assert_eq!(r.packages.len(), 1);
        let garbage = b"SQLite format 3\0".repeat(300);
        assert!(read_sqlite_in(tmp.path(), &garbage, None, "x").is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
