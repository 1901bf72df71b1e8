//! The database: where it is ([`Target`]), how a task talks to it ([`Tx`]), and how the
//! harness opens it.
//!
//! A task never opens a connection itself. The harness resolves the [`Target`] from the
//! settings and the app secrets file, opens the connection, checks the schema, begins one write
//! transaction and hands the task a [`Tx`]; it commits only if the task returns `Ok`. The `Tx`
//! API takes `&'static str` SQL so that queries are literals (nothing from a request is ever
//! spliced into SQL) with `?` placeholders (rewritten to `$1`, `$2`, … for PostgreSQL) and a
//! tuple of parameters.
//!
//! Everything that differs between the backends is behind the seam in [`backend`]; the rest of
//! this module (setup, cleanup, status, the schema check, the roles on a server) is written
//! once for all of them.

pub(crate) mod backend;
pub(crate) mod cleanup;
pub(crate) mod requests;
pub(crate) mod roles;
pub(crate) mod schema;
pub(crate) mod setup;
pub(crate) mod status;

pub use backend::{Backend, Param, Params, Record, Tx};
pub(crate) use backend::{Begin, Conn, Location, on_conn};
pub use schema::Migrations;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets::{self, AppSecrets, ExposeSecret};

/// The database an executable works on, resolved from its settings and app secrets.
#[derive(Debug)]
pub(crate) struct Target {
    /// The executable's name ([`crate::Task::NAME`]): it names its secrets file and its roles.
    pub exe: &'static str,
    /// The rights its role gets on a server ([`crate::Task::GRANTS`]).
    pub grants: &'static [crate::Grant],
    /// Where the database is.
    pub location: Location,
    /// The settings it was resolved from (timeouts, durability, role names).
    pub settings: Settings,
    /// The executable's secrets file as it was when the target was resolved (empty if there was
    /// none).
    pub secrets: AppSecrets,
}

impl Target {
    /// The database of task `T`: its secrets file's `database_url` if it has one, else the
    /// `database_url` setting, else a SQLite file named after its domain in the data directory.
    pub(crate) fn of<T: crate::Task>(settings: &Settings) -> Result<Target> {
        let (exe, domain) = (T::NAME, T::DOMAIN);
        let (secrets, _) = secrets::load_app(settings, exe)?;
        let location = match (&secrets.database_url, &settings.database_url) {
            (Some(url), _) => Location::parse(url.expose_secret())?,
            (None, Some(url)) if backend::options::url_has_password(url) => {
                return Err(Error::config("database_url carries a password, and settings are no place for secrets")
                    .hint(format!(
                        "remove it from the URL: setup writes the app's credentials to {} (or put the whole URL there, chmod 600)",
                        secrets::app_file(settings, exe).display()
                    )));
            }
            (None, Some(url)) => Location::parse(url)?,
            (None, None) => {
                let location = Location::embedded(&settings.data_dir, domain);
                refuse_a_new_file_beside_a_former_one(&location, settings, T::FORMERLY)?;
                location
            }
        };
        Ok(Target {
            exe,
            grants: T::GRANTS,
            location,
            settings: settings.clone(),
            secrets,
        })
    }

    /// The backend.
    pub(crate) fn backend(&self) -> Backend {
        self.location.backend()
    }
}

/// Opens `target` for a task (see [`Location::open`]: first-use setup on SQLite).
pub(crate) async fn open(
    target: &Target,
    migrations: &Migrations,
) -> Result<(Conn, Option<setup::SetupReport>)> {
    target.location.open(target, migrations).await
}

/// An embedded database that does not exist yet while the file of a domain the executable
/// belonged to before does: starting a new, empty one would hide the data, so this says how to
/// move it instead (only by hand: a process of the earlier version may still have it open).
fn refuse_a_new_file_beside_a_former_one(
    location: &Location,
    settings: &Settings,
    formerly: &[&str],
) -> Result<()> {
    let Some(path) = location.file().filter(|p| !p.exists()) else {
        return Ok(());
    };
    for former in formerly {
        let old = Location::embedded(&settings.data_dir, former);
        let Some(old) = old.file().filter(|p| p.exists()) else {
            continue;
        };
        return Err(Error::config(format!(
            "{} holds this executable's data from an earlier version, whose database was named after {former}; it is now {}",
            old.display(),
            path.display()
        ))
        .hint(format!(
            "stop every process that uses it, then rename it and its -wal and -shm files: mv {} {}",
            old.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Writes the rows that sample requests `0..count` of run `run` need ([`crate::Task::seed`]), in
/// one transaction, as the database's owner (on a server the administrator: the task's own role
/// may hold no right to write); an embedded database is set up first if it is missing.
pub(crate) async fn seed<T: crate::Task>(target: &Target, run: &str, count: u64) -> Result<u64> {
    target
        .location
        .as_owner(target, T::MIGRATIONS, async |conn: &mut Conn| {
            let mut tx = conn
                .begin_with(&target.location, T::MIGRATIONS, Begin::CHECKED)
                .await?;
            let seeded = T::seed(&mut tx, run, count).await;
            tx.settle(seeded).await
        })
        .await
}

/// Opens `target` as the app (on a server, the app role) without looking at its schema.
pub(crate) async fn connect(target: &Target) -> Result<Conn> {
    target.location.connect(target).await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::error::ErrorKind;
    use crate::testing::{self, DRIFTED, V1, V2};

    #[tokio::test]
    async fn first_use_sets_up_a_missing_database_and_later_uses_do_not() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let (conn, report) = open(&target, V1).await.unwrap();
        conn.close().await.unwrap();
        let report = report.expect("first use reports its setup");
        assert!(report.created);
        assert_eq!(report.schema_version, 1);
        let (conn, report) = open(&target, V1).await.unwrap();
        conn.close().await.unwrap();
        assert!(report.is_none());
    }

    #[tokio::test]
    async fn a_schema_behind_the_binary_is_brought_up_to_date_on_sqlite() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        setup::run(&target, V1).await.unwrap();
        let (conn, report) = open(&target, V2).await.unwrap();
        conn.close().await.unwrap();
        let report = report.expect("the pending migration is reported");
        assert!(!report.created);
        assert_eq!(report.applied.len(), 1);
        assert_eq!(report.applied[0].version, 2);
        assert_eq!(report.schema_version, 2);
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        setup::run(&target, V2).await.unwrap();
        let e = open(&target, V1).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("version 2"), "{}", e.message());
    }

    #[tokio::test]
    async fn a_drifted_migration_is_refused() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        setup::run(&target, V1).await.unwrap();
        let e = setup::run(&target, DRIFTED).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("migration 1"), "{}", e.message());
    }

    #[tokio::test]
    async fn a_unique_violation_is_a_conflict_and_writes_nothing() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let (mut conn, _) = open(&target, V1).await.unwrap();
        let mut tx = conn.begin_task(&target.location, V1).await.unwrap();
        tx.execute("INSERT INTO notes (text) VALUES (?)", ("a",))
            .await
            .unwrap();
        let e = tx
            .execute("INSERT INTO notes (text) VALUES (?)", ("a",))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        tx.rollback().await.unwrap();
        assert_eq!(conn.count("SELECT COUNT(*) FROM notes").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_single_statement_commits_by_itself_and_a_second_is_refused() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let (mut conn, _) = open(&target, V1).await.unwrap();
        let single = Begin {
            check: true,
            single: true,
            read_only: false,
        };
        let mut tx = conn.begin_with(&target.location, V1, single).await.unwrap();
        tx.execute("INSERT INTO notes (text) VALUES (?)", ("a",))
            .await
            .unwrap();
        let e = tx
            .execute("INSERT INTO notes (text) VALUES (?)", ("b",))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("SINGLE_STATEMENT"), "{}", e.message());
        tx.rollback().await.unwrap();
        assert_eq!(conn.count("SELECT COUNT(*) FROM notes").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_writer_that_waits_past_the_busy_timeout_gets_a_temporary_error() {
        let (_dir, mut settings) = testing::scratch();
        let target = testing::target(&settings);
        let (mut holder, _) = open(&target, V1).await.unwrap();
        let _held = holder.begin_task(&target.location, V1).await.unwrap();
        settings.busy_timeout_ms = 50;
        let impatient = Target::of::<testing::Notes>(&settings).unwrap();
        let mut conn = connect(&impatient).await.unwrap();
        let e = conn
            .begin_task(&impatient.location, V1)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Temporary, "{}", e.message());
    }

    #[tokio::test]
    async fn a_read_only_task_neither_waits_for_a_writer_nor_makes_one_wait() {
        let (_dir, mut settings) = testing::scratch();
        let target = testing::target(&settings);
        let (mut writer, _) = open(&target, V1).await.unwrap();
        let mut held = writer.begin_task(&target.location, V1).await.unwrap();
        held.execute("INSERT INTO notes (text) VALUES (?)", ("uncommitted",))
            .await
            .unwrap();
        // A write transaction would give up after 50 ms behind the one held.
        settings.busy_timeout_ms = 50;
        let impatient = Target::of::<testing::Notes>(&settings).unwrap();
        let mut reader = connect(&impatient).await.unwrap();
        let read_only = Begin {
            read_only: true,
            ..Begin::CHECKED
        };
        let mut tx = reader
            .begin_with(&impatient.location, V1, read_only)
            .await
            .unwrap();
        let (seen,): (i64,) = tx
            .fetch_one("SELECT COUNT(*) FROM notes", ())
            .await
            .unwrap();
        assert_eq!(
            seen, 0,
            "the reader sees the last commit, not the open write"
        );
        // The writer commits while the reader's transaction is still open.
        held.commit().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(reader.count("SELECT COUNT(*) FROM notes").await.unwrap(), 1);
    }

    #[test]
    fn many_concurrent_setups_create_the_database_exactly_once() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let created: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        crate::run::block_on(crate::run::Drivers::Timers, setup::run(&target, V1))
                            .unwrap()
                            .created
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    }

    #[test]
    fn the_app_secrets_file_overrides_the_database_url_and_must_be_private() {
        let (dir, mut settings) = testing::scratch();
        settings.database_url = Some("sqlite:///from/settings.db".into());
        assert!(
            matches!(&testing::target(&settings).location, Location::Sqlite(p) if p.as_os_str() == "/from/settings.db")
        );
        let file = secrets::app_file(&settings, "notes");
        secrets::write(&file, "database_url = \"sqlite:///from/secrets.db\"\n").unwrap();
        assert!(
            matches!(&testing::target(&settings).location, Location::Sqlite(p) if p.as_os_str() == "/from/secrets.db")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Target::of::<testing::Notes>(&settings).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permission);
        drop(dir);
    }

    #[test]
    fn unknown_and_malformed_urls_are_configuration_errors_that_hide_the_url() {
        for url in [
            "postgres://u:hunter2@h:x/d",
            "mysql://u:hunter2@h:99999/d",
            "http://u:hunter2@h",
            "hunter2",
        ] {
            let e = Location::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(!e.message().contains("hunter2"), "{}", e.message());
        }
    }
}
