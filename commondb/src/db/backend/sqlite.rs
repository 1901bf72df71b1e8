//! The embedded default: a SQLite file, private to its owner, in WAL mode; its dialect, and how
//! backups read its dynamically typed values.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};

use super::dialect::Dialect;
use super::rows::{Kind, Line};
use super::{Conn, Location};
use crate::config::Settings;
use crate::error::{Error, Result};

/// The files SQLite keeps beside a database in WAL mode (and in rollback mode).
pub(crate) const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Parses `sqlite:PATH`, `sqlite://PATH` and `sqlite:///ABSOLUTE/PATH`.
pub(crate) fn parse_url(url: &str) -> Result<Location> {
    let rest = &url["sqlite:".len()..];
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.contains('?') || path.contains('#') {
        return Err(
            Error::config("sqlite: database URLs take no options (the part after '?')")
                .hint("set synchronous and busy_timeout_ms in the configuration instead"),
        );
    }
    if path.is_empty() || path == ":memory:" {
        return Err(Error::config(
            "the sqlite: database URL names no file (an in-memory database would not outlive the process)",
        )
        .hint("give a file path, e.g. sqlite:///var/lib/app/users.sqlite3"));
    }
    let path = std::path::absolute(path)
        .map_err(|e| Error::config(format!("the sqlite: database path is not usable: {e}")))?;
    Ok(Location::Sqlite(path))
}

/// Opens an existing database file, once [`check_file`] found it and its directory private.
pub(crate) async fn connect(path: &Path, settings: &Settings) -> Result<SqliteConnection> {
    check_file(path)?;
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_millis(settings.busy_timeout_ms))
        .pragma("synchronous", settings.synchronous.as_str())
        .foreign_keys(true)
        .connect()
        .await
        .map_err(|e| {
            let e = Error::from(e);
            Error::new(
                e.kind(),
                format!("cannot open database {}: {}", path.display(), e.message()),
            )
            .hint(
                e.hint_text()
                    .unwrap_or("check the path and its permissions"),
            )
        })
}

/// Checks the database file and its directory as the secrets are checked, at every open: the
/// directory by [`crate::secrets::check_private_dir`] (someone who can write there can replace
/// the file, or plant the `-wal` file SQLite would replay into it), the file itself owned by the
/// user (or root) and not writable by group or others. A missing file is left to the open.
pub(crate) fn check_file(path: &Path) -> Result<()> {
    crate::secrets::check_private_dir(dir_of(path))?;
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    match crate::secrets::foreign(&meta, true) {
        None => Ok(()),
        Some(crate::secrets::Foreign::Owner(uid)) => Err(Error::permission(format!(
            "database {} belongs to user id {uid}, who could change it behind this program's back",
            path.display()
        ))
        .hint(format!(
            "chown {} {}",
            rustix::process::geteuid().as_raw(),
            path.display()
        ))),
        Some(crate::secrets::Foreign::Writable { by_others, mode }) => {
            Err(Error::permission(format!(
                "database {} is writable by {} (mode {mode:04o})",
                path.display(),
                if by_others { "others" } else { "its group" }
            ))
            .hint(format!("chmod go-w {}", path.display())))
        }
    }
}

/// Creates an empty database file with mode 0600; `false` if it already existed.
///
/// SQLite gives its `-wal` and `-shm` files the mode of the database file, so they stay private
/// too.
pub(crate) fn create_file(path: &Path) -> Result<bool> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::permission(format!(
            "cannot create database file {}: {e}",
            path.display()
        ))
        .hint("check that you may write to its directory, or configure data_dir")),
    }
}

/// Whether `path` holds a SQLite database (or the empty file that setup creates first).
pub(crate) fn is_database_file(path: &Path) -> Result<bool> {
    // Only a regular file can be one: a device reads as empty (cleanup would remove
    // /dev/null), a FIFO would never answer, a symlink is not ours to remove.
    let meta = fs::symlink_metadata(path)
        .map_err(|e| Error::permission(format!("cannot inspect {}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Ok(false);
    }
    let mut header = [0u8; 16];
    let mut f = crate::secrets::without_waiting(fs::OpenOptions::new().read(true), false)
        .open(path)
        .map_err(|e| Error::permission(format!("cannot open {}: {e}", path.display())))?;
    let n = f
        .read(&mut header)
        .map_err(|e| Error::permission(format!("cannot read {}: {e}", path.display())))?;
    Ok(n == 0 || (n == 16 && &header == b"SQLite format 3\0"))
}

/// The database file and whichever of its side files exist.
pub(crate) fn existing_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    for suffix in SIDE_FILES {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            files.push(side);
        }
    }
    files
}

/// The directory that holds database `path`.
pub(crate) fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// An exclusive lock on the database's directory, held while setup or cleanup runs so that
/// many copies started at once (say 200 by the runner) set the database up exactly once.
///
/// It locks the directory itself (`flock` on a directory works on Linux) so that no lock file
/// is left behind; the lock goes with the process, however it ends.
pub(crate) struct DirLock {
    _dir: fs::File,
}

impl DirLock {
    /// Takes the lock of the directory that holds database `path`, waiting up to the
    /// `lock_timeout_ms` setting.
    pub(crate) async fn of_database(path: &Path, settings: &Settings) -> Result<DirLock> {
        let wait = Duration::from_millis(settings.lock_timeout_ms);
        DirLock::acquire(dir_of(path), wait).await
    }

    pub(crate) async fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock> {
        let deadline = Instant::now() + timeout;
        loop {
            match DirLock::try_acquire(dir)? {
                Some(lock) => return Ok(lock),
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None => {
                    return Err(Error::temporary(format!(
                        "another process kept the setup lock on {} for over {} ms",
                        dir.display(),
                        timeout.as_millis()
                    ))
                    .hint(
                        "wait for the other setup or cleanup to finish, or raise lock_timeout_ms",
                    ));
                }
            }
        }
    }

    /// Takes the lock of directory `dir` if no one holds it, without waiting.
    pub(crate) fn try_acquire(dir: &Path) -> Result<Option<DirLock>> {
        use rustix::fs::{FlockOperation, flock};
        let file = fs::File::open(dir).map_err(|e| {
            Error::permission(format!("cannot open directory {}: {e}", dir.display()))
        })?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(DirLock { _dir: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::internal(format!(
                "cannot lock directory {}: {e}",
                dir.display()
            ))),
        }
    }
}

/// Creates the database file if it is missing (the caller holds the directory lock) and opens
/// it in WAL mode; says whether it created it.
pub(crate) async fn create(path: &Path, settings: &Settings) -> Result<(Conn, bool)> {
    let created = create_file(path)?;
    let mut conn = connect(path, settings).await?;
    // WAL lets readers run beside the one writer; the mode is stored in the file, so it is set
    // once here and not on every connect.
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut conn)
        .await?;
    Ok((Conn::Sqlite(conn), created))
}

/// SQLite's SQL.
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    fn quote_char(&self) -> char {
        '"'
    }
    fn begin(&self) -> &'static str {
        // The write lock at once, so concurrent writers queue on the busy timeout instead of
        // failing when a read would have to be upgraded to a write.
        "BEGIN IMMEDIATE"
    }
    fn begin_read_only(&self) -> &'static str {
        // Deferred: no lock until the first read, and in WAL mode a reader never waits for the
        // writer, nor makes it wait.
        "BEGIN"
    }
    fn begin_snapshot(&self) -> &'static [&'static str] {
        &["BEGIN"]
    }
    fn begin_restore(&self, _tables: &[String]) -> Vec<String> {
        // The write lock, at once; readers of the WAL go on.
        vec!["BEGIN IMMEDIATE".into()]
    }
    fn tables(&self) -> &'static str {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    }
    fn requests_table(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE IF NOT EXISTS _commondb_requests (executable TEXT NOT NULL, id TEXT NOT NULL, answer TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (executable, id)) WITHOUT ROWID",
            "CREATE INDEX IF NOT EXISTS _commondb_requests_at ON _commondb_requests (executable, at)",
        ]
    }
    fn table_exists(&self) -> &'static str {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
    }
    fn statement_timeout(&self, _timeout_ms: u64) -> Option<String> {
        // A statement waits for the lock at most busy_timeout_ms; it has no other limit.
        None
    }
    fn default_pool_size(&self) -> usize {
        1
    }
    fn one_writer(&self) -> bool {
        true
    }
    fn over_sockets(&self) -> bool {
        false
    }
}

/// The kind of a column by its declared type's affinity, as SQLite decides it; restore converts
/// values for it as for the servers' columns. Backups read SQLite's values by their own storage
/// class whatever the column says.
pub(super) fn kind_of(type_name: &str) -> Kind {
    let t = type_name.to_ascii_uppercase();
    if t.contains("INT") {
        Kind::Int64
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|a| t.contains(a)) {
        Kind::Text
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|a| t.contains(a)) {
        Kind::Float64
    } else {
        Kind::Dynamic
    }
}

/// Encodes a row by each value's own storage class, whatever its column says.
pub(super) fn encode_row(
    row: &SqliteRow,
    kinds: &[Kind],
    table: &str,
    mut line: Line,
) -> Result<()> {
    for i in 0..kinds.len() {
        line.start(i);
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            line.json(&())?;
            continue;
        }
        match raw.type_info().name() {
            "INTEGER" => line.json(&row.try_get_unchecked::<i64, _>(i)?)?,
            "REAL" => line.float(row.try_get_unchecked::<f64, _>(i)?, table)?,
            "BLOB" => line.bytes(&row.try_get_unchecked::<Vec<u8>, _>(i)?)?,
            _ => line.json(&row.try_get_unchecked::<&str, _>(i)?)?,
        }
    }
    line.end();
    Ok(())
}

/// The `AUTOINCREMENT` key of `table`, if the restored keys took its counter to the end.
pub(super) async fn exhausted_key(c: &mut SqliteConnection, table: &str) -> Result<Option<String>> {
    let counters: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
    )
    .fetch_one(&mut *c)
    .await?;
    if counters == 0 {
        return Ok(None);
    }
    sqlx::query_scalar(
        "SELECT name FROM pragma_table_info(?1) WHERE pk = 1 \
         AND (SELECT seq FROM sqlite_sequence WHERE name = ?1) >= 9223372036854775807",
    )
    .bind(table)
    .fetch_optional(&mut *c)
    .await
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn urls_in_three_spellings_name_a_file() {
        let path = |url| match parse_url(url).unwrap() {
            Location::Sqlite(p) => p,
            Location::Server(_) => panic!("{url} is not a file"),
        };
        assert_eq!(
            path("sqlite:///abs/db.sqlite3"),
            std::path::Path::new("/abs/db.sqlite3")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(path("sqlite:rel.db"), cwd.join("rel.db"));
        assert_eq!(path("sqlite://rel.db"), cwd.join("rel.db"));
    }

    #[test]
    fn memory_databases_and_options_are_refused() {
        for url in ["sqlite::memory:", "sqlite:", "sqlite://x.db?mode=rwc"] {
            assert_eq!(
                parse_url(url).unwrap_err().kind(),
                ErrorKind::Config,
                "{url}"
            );
        }
    }

    #[test]
    fn only_sqlite_files_count_as_databases() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        assert!(create_file(&empty).unwrap());
        assert!(!create_file(&empty).unwrap());
        assert!(is_database_file(&empty).unwrap());
        let text = dir.path().join("text");
        fs::write(&text, "not a database, keep me").unwrap();
        assert!(!is_database_file(&text).unwrap());
        // Neither a FIFO (which would never answer), nor a symlink to a database.
        let fifo = dir.path().join("fifo");
        crate::testing::mkfifo(&fifo);
        assert!(!is_database_file(&fifo).unwrap());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&empty, &link).unwrap();
        assert!(!is_database_file(&link).unwrap());
    }

    #[tokio::test]
    async fn a_second_lock_on_the_same_directory_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DirLock::acquire(dir.path(), Duration::from_millis(10))
            .await
            .unwrap();
        let e = DirLock::acquire(dir.path(), Duration::from_millis(30))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Temporary);
    }
}
