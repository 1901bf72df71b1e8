//! `--self-backup` and `--self-restore`: one portable file per backup, taken in one consistent
//! snapshot, checked before use, put back all or nothing.
//!
//! A backup reads the task's tables as the backup role (on a server) inside one read
//! transaction and streams them through [`file::Writer`] into a partial file that is synced and
//! renamed into place only when complete. Retention then keeps the newest `backup_keep`.
//!
//! A restore first checks the file ([`verify`]: its format, its checksum over the compressed
//! bytes, executable, schema version) and that its tables and columns fit the schema, then
//! takes a safety backup of the data it is about to replace, then replaces every task table's
//! rows in one transaction ([`load::restore`]), which commits only once the reader
//! found the content's structure, row counts and checksum right. Until that transaction
//! commits, the database is as it was; a kill at any point leaves it so. A restore refused
//! after the safety backup was taken removes it again.

mod dump;
mod field;
pub mod file;
mod load;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Backend;
use crate::db::schema::{self, SchemaState};
use crate::db::{Conn, Location, Migrations, Target};
use crate::error::{Error, Result};
use crate::output::Progress;
use crate::task::Task;
use dump::Snapshot;
use file::{Header, Kind, Reader, TableInfo, Writer};
use load::Restored;

/// What a backup wrote, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub file: PathBuf,
    /// Its size on disk, compressed.
    pub bytes: u64,
    /// Why it was taken.
    pub kind: Kind,
    /// The database it was taken from (without credentials).
    pub database: String,
    /// Its backend.
    pub backend: Backend,
    /// Its schema version.
    pub schema_version: i64,
    /// When the snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// Every table with its row count.
    pub tables: Vec<TableInfo>,
    /// All tables' rows.
    pub rows: u64,
    /// Older backups that retention removed.
    pub removed: Vec<PathBuf>,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backed up {} row(s) of {} to {} ({})",
            self.rows,
            self.database,
            self.file.display(),
            size(self.bytes)
        )?;
        for t in &self.tables {
            write!(f, "\n  table {}: {} row(s)", t.name, t.rows)?;
        }
        for old in &self.removed {
            write!(f, "\n  removed old backup {}", old.display())?;
        }
        Ok(())
    }
}

/// What a restore put back, for people and for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub file: PathBuf,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The backend it was taken from.
    pub from_backend: Backend,
    /// Its schema version (the database keeps its own, which may be newer).
    pub schema_version: i64,
    /// The database restored (without credentials).
    pub database: String,
    /// Every table with the rows put back.
    pub tables: Vec<Restored>,
    /// All tables' rows.
    pub rows: u64,
    /// The safety backup of the data that was replaced.
    pub safety_backup: PathBuf,
}

impl fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restored {} row(s) into {} from {} (taken {} on {}, schema version {})",
            self.rows,
            self.database,
            self.file.display(),
            self.taken_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.from_backend.name(),
            self.schema_version
        )?;
        for t in &self.tables {
            write!(f, "\n  table {}: {} row(s)", t.table, t.rows)?;
        }
        write!(
            f,
            "\n  the replaced data is in {} (restore it with --from to undo)",
            self.safety_backup.display()
        )
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 10 << 10 => format!("{b} bytes"),
        b if b < 10 << 20 => format!("{} KiB", b >> 10),
        b => format!("{} MiB", b >> 20),
    }
}

/// Takes a backup of task `T`'s database, then applies retention.
pub(crate) async fn backup<T: Task>(target: &Target, kind: Kind) -> Result<BackupReport> {
    let keep = keep(target)?;
    let mut report = backup_unpruned::<T>(target, kind).await?;
    report.removed = retention(target, T::DOMAIN, kind, keep);
    Ok(report)
}

/// Takes a backup without applying retention (yet).
async fn backup_unpruned<T: Task>(target: &Target, kind: Kind) -> Result<BackupReport> {
    let mut conn = connect_reader(target, T::MIGRATIONS).await?;
    let result = write_backup::<T>(target, &mut conn, kind).await;
    let _ = conn.close().await;
    result
}

fn keep(target: &Target) -> Result<usize> {
    match target.settings.backup_keep {
        0 => Err(
            Error::config("backup_keep is 0, which would delete the only backup")
                .hint("set backup_keep to 1 or more"),
        ),
        n => Ok(n as usize),
    }
}

/// Opens the database for reading a backup: as the backup role on a server. A database that
/// does not exist or was never set up has nothing to back up.
async fn connect_reader(target: &Target, migrations: &Migrations) -> Result<Conn> {
    let mut conn = target.location.connect_reader(target).await?;
    if schema::check(&mut conn, migrations).await? == SchemaState::Missing {
        let _ = conn.close().await;
        return Err(Error::config(format!(
            "database {} is not set up: there is nothing to back up",
            target.location
        ))
        .hint("run --self-setup first"));
    }
    Ok(conn)
}

async fn write_backup<T: Task>(
    target: &Target,
    conn: &mut Conn,
    kind: Kind,
) -> Result<BackupReport> {
    let backend = conn.backend();
    let created_at = Utc::now();
    let snapshot = Snapshot::begin(conn).await?;
    let header = Header {
        format: file::FORMAT.to_string(),
        format_version: file::FORMAT_VERSION,
        executable: T::NAME.to_string(),
        domain: (T::DOMAIN != T::NAME).then(|| T::DOMAIN.to_string()),
        executable_version: T::VERSION.to_string(),
        schema_version: snapshot.schema_version,
        backend,
        created_at,
        kind,
        tables: snapshot.infos(),
    };
    let dir = target.settings.backup_dir();
    let name = file::file_name(&series(T::DOMAIN, &target.location), created_at, kind);
    let mut writer = Writer::create(&dir, name, &header)?;
    let what = match kind {
        Kind::Backup => "backup",
        Kind::Safety => "safety backup",
    };
    writer.show(Progress::rows(header.rows(), what));
    snapshot.write_rows(&mut writer).await?;
    let (path, bytes) = writer.finish()?;
    Ok(BackupReport {
        file: path,
        bytes,
        kind,
        database: target.location.to_string(),
        backend,
        schema_version: header.schema_version,
        created_at,
        rows: header.rows(),
        tables: header.tables,
        removed: Vec::new(),
    })
}

/// The name that the backups of `domain`'s database at `location` share: the domain's (an
/// executable's own name, unless it shares a domain), then a short hash of the location (as
/// shown, without credentials). So the backups of two databases of one domain never mix: the
/// newest backup to restore and retention count only their own database's.
pub(crate) fn series(domain: &str, location: &Location) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(location.to_string().as_bytes());
    format!("{domain}-{}", &hex::encode(digest)[..8])
}

/// Keeps the newest `keep` backups of `kind` of the target's database whose header reads, and
/// removes the older ones. The newest good ones are never removed, so the only good backup
/// never is.
pub(crate) fn retention(target: &Target, domain: &str, kind: Kind, keep: usize) -> Vec<PathBuf> {
    let dir = target.settings.backup_dir();
    let Ok(entries) = file::list(&dir, &series(domain, &target.location)) else {
        return Vec::new();
    };
    let mut good = 0;
    let mut removed = Vec::new();
    for entry in entries.into_iter().filter(|e| e.kind == kind) {
        if good < keep {
            if file::header(&entry.path).is_ok() {
                good += 1;
            }
            continue;
        }
        if std::fs::remove_file(&entry.path).is_ok() {
            removed.push(entry.path);
        }
    }
    removed
}

/// The backup to restore: `from`, or the newest one (safety backups aside). A `from` that
/// another user owns or could have changed (group or others may write it) is refused unless
/// `trust_file`: whoever could write it chooses what goes into the database.
pub(crate) fn choose(
    target: &Target,
    domain: &str,
    from: Option<PathBuf>,
    trust_file: bool,
) -> Result<PathBuf> {
    if let Some(path) = from {
        use crate::secrets::{Foreign, foreign};
        // A file that is not there or cannot be read is refused when it is opened (exit 66).
        if let Ok(meta) = std::fs::metadata(&path) {
            let why = foreign(&meta, false).map(|why| match why {
                Foreign::Owner(uid) => format!("is owned by user {uid}, not by you"),
                Foreign::Writable { by_others, mode } => format!(
                    "can be changed by {} (mode {:o})",
                    if by_others { "anyone" } else { "its group" },
                    mode & 0o777
                ),
            });
            if let Some(why) = why.filter(|_| !trust_file) {
                return Err(Error::permission(format!(
                    "{} {why}: whoever can write it decides what the restore puts in the database; nothing was changed",
                    path.display()
                ))
                .hint("check where it came from; if you trust it, add --trust-file (or copy it and chmod 600 the copy)"));
            }
        }
        return Ok(path);
    }
    let dir = target.settings.backup_dir();
    file::list(&dir, &series(domain, &target.location))?
        .into_iter()
        .find(|e| e.kind == Kind::Backup)
        .map(|e| e.path)
        .ok_or_else(|| {
            Error::no_input(format!(
                "there is no backup of {} (domain {domain}) in {}",
                target.location,
                dir.display()
            ))
            .hint("take one with --self-backup, or name one with --from FILE")
        })
}

/// Checks that task `T` can restore the backup at `path`: intact (its file checksum holds),
/// its own, and of a schema version no newer than the program's. The restore checks the rest
/// as it reads the rows, and commits nothing unless all of it holds.
pub(crate) fn verify<T: Task>(path: &Path, backend: Backend) -> Result<Header> {
    let header = Reader::open(path)?.into_header();
    may_restore::<T>(path, header, backend)
}

fn may_restore<T: Task>(path: &Path, header: Header, backend: Backend) -> Result<Header> {
    // A backup of the task's own, or of another executable of its domain: the same tables.
    let same_domain = header.domain.as_deref() == Some(T::DOMAIN);
    if header.executable != T::NAME && !same_domain {
        return Err(Error::invalid_input(format!(
            "{} is a backup of {}, not of {}; nothing was changed",
            path.display(),
            header.executable,
            T::NAME
        ))
        .hint(format!("restore it with {}", header.executable)));
    }
    let (_, newest) = schema::embedded(T::MIGRATIONS.for_backend(backend));
    if header.schema_version > newest {
        return Err(Error::invalid_input(format!(
            "{} has schema version {}, newer than this program's ({newest}); nothing was changed",
            path.display(),
            header.schema_version
        ))
        .hint(format!(
            "restore it with version {} of {} or newer",
            header.executable_version,
            T::NAME
        )));
    }
    Ok(header)
}

/// Restores the backup at `path` into task `T`'s database: a safety backup of the current
/// data first, then every row replaced in one transaction.
pub(crate) async fn restore<T: Task>(
    target: &Target,
    path: &Path,
    header: &Header,
) -> Result<RestoreReport> {
    let replace = async |conn: &mut Conn| -> Result<(Vec<Restored>, PathBuf)> {
        let targets = dump::tables(conn).await?;
        load::check_fits(&header.tables, &targets)?;
        // Opened before any retention runs: an open file survives its own removal.
        let mut reader = Reader::open(path)?;
        let safety = async || backup_unpruned::<T>(target, Kind::Safety).await;
        let unneeded = |safety: BackupReport| {
            let _ = std::fs::remove_file(&safety.file);
        };
        let (restored, safety) =
            load::restore(conn, &mut reader, &targets, safety, unneeded).await?;
        Ok((restored, safety.file))
    };
    let (tables, safety_backup) = target
        .location
        .as_owner(target, T::MIGRATIONS, replace)
        .await?;
    // Only now, with the restore committed, may older safety backups go.
    retention(target, T::DOMAIN, Kind::Safety, keep(target)?);
    Ok(RestoreReport {
        file: path.to_path_buf(),
        taken_at: header.created_at,
        from_backend: header.backend,
        schema_version: header.schema_version,
        database: target.location.to_string(),
        rows: tables.iter().map(|t| t.rows).sum(),
        tables,
        safety_backup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;
    use crate::error::ErrorKind;
    use crate::testing::{self, Notes, NotesV2};

    async fn add(target: &Target, migrations: &Migrations, text: &str) {
        let (mut conn, _) = db::open(target, migrations).await.unwrap();
        let mut tx = conn.begin_task(&target.location, migrations).await.unwrap();
        tx.execute("INSERT INTO notes (text) VALUES (?)", (text,))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        conn.close().await.unwrap();
    }

    async fn count(target: &Target, sql: &'static str) -> i64 {
        let mut conn = db::connect(target).await.unwrap();
        let n = conn.count(sql).await.unwrap();
        conn.close().await.unwrap();
        n
    }

    #[tokio::test]
    async fn a_backup_of_an_older_schema_restores_into_the_newer_one() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        add(&target, Notes::MIGRATIONS, "old").await;
        let old = backup::<Notes>(&target, Kind::Backup).await.unwrap();
        assert_eq!(old.schema_version, 1);
        // The newer program migrates the database on first use; the old rows go back in, and
        // the column the old schema lacked takes its default.
        add(&target, NotesV2::MIGRATIONS, "new").await;
        let header = verify::<NotesV2>(&old.file, Backend::Sqlite).unwrap();
        let report = restore::<NotesV2>(&target, &old.file, &header)
            .await
            .unwrap();
        assert_eq!(report.rows, 1);
        assert_eq!(
            count(
                &target,
                "SELECT COUNT(*) FROM notes WHERE text = 'old' AND tag IS NULL"
            )
            .await,
            1
        );
        assert_eq!(count(&target, "SELECT COUNT(*) FROM notes").await, 1);
    }

    #[tokio::test]
    async fn a_backup_of_a_newer_schema_is_refused_naming_both_versions() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        add(&target, NotesV2::MIGRATIONS, "new").await;
        let newer = backup::<NotesV2>(&target, Kind::Backup).await.unwrap();
        let e = verify::<Notes>(&newer.file, Backend::Sqlite).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.message()
                .contains("schema version 2, newer than this program's (1)"),
            "{}",
            e.message()
        );
    }

    #[tokio::test]
    async fn a_file_refused_as_it_loads_changes_nothing_and_leaves_no_safety_backup() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        add(&target, Notes::MIGRATIONS, "kept").await;
        let good = backup::<Notes>(&target, Kind::Backup).await.unwrap();
        add(&target, Notes::MIGRATIONS, "late").await;
        // Sound as a file (its file checksum holds), unsound inside: the header promises a row
        // the file does not hold, which only the end of the rows shows.
        let mut header = file::header(&good.file).unwrap();
        header.tables[0].rows += 1;
        let dir = target.settings.backup_dir();
        let mut w = Writer::create(&dir, "forged.jsonl.zst".into(), &header).unwrap();
        for (table, rows) in file::rows(&good.file).unwrap() {
            w.table(&table).unwrap();
            for row in rows {
                w.row(|buf| {
                    buf.extend_from_slice(&row);
                    Ok(())
                })
                .unwrap();
            }
        }
        let (forged, _) = w.finish().unwrap();
        let header = verify::<Notes>(&forged, Backend::Sqlite).unwrap();
        let e = restore::<Notes>(&target, &forged, &header)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e.message());
        assert!(e.message().contains("row counts"), "{}", e.message());
        assert_eq!(count(&target, "SELECT COUNT(*) FROM notes").await, 2);
        let safety = file::list(&dir, &series(Notes::NAME, &target.location))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == Kind::Safety)
            .count();
        assert_eq!(safety, 0, "the refused restore left its safety backup");
    }

    #[tokio::test]
    async fn nothing_to_restore_and_nothing_to_back_up_are_clear_errors() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let e = choose(&target, Notes::NAME, None, false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoInput);
        let e = backup::<Notes>(&target, Kind::Backup).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            !target.settings.backup_dir().exists(),
            "a failed backup made a directory"
        );
    }

    #[tokio::test]
    async fn retention_never_counts_a_damaged_backup_as_a_good_one() {
        let (_dir, mut settings) = testing::scratch();
        settings.backup_keep = 1;
        let target = Target::of::<Notes>(&settings).unwrap();
        add(&target, Notes::MIGRATIONS, "a").await;
        let good = backup::<Notes>(&target, Kind::Backup).await.unwrap();
        // A newer file that is not a readable backup does not push the good one out.
        let fake = settings.backup_dir().join(file::file_name(
            &series(Notes::NAME, &target.location),
            Utc::now(),
            Kind::Backup,
        ));
        std::fs::write(&fake, b"garbage").unwrap();
        let removed = retention(&target, Notes::NAME, Kind::Backup, 1);
        assert!(removed.is_empty(), "{removed:?}");
        assert!(good.file.exists());
        let zero = Target::of::<Notes>(&crate::config::Settings {
            backup_keep: 0,
            ..settings.clone()
        })
        .unwrap();
        assert_eq!(
            backup::<Notes>(&zero, Kind::Backup)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
    }
}
