//! The database: where it is ([`Target`]), how a task talks to it ([`Tx`]), and how its errors
//! become [`Error`]s.
//!
//! A task never opens a connection itself. The harness resolves the [`Target`] from the
//! settings and the app secrets file, opens the connection, checks the schema, begins one write
//! transaction and hands the task a [`Tx`]; it commits only if the task returns `Ok`. The `Tx`
//! API takes `&'static str` SQL so that queries are literals (nothing from a request is ever
//! spliced into SQL) with `?` placeholders and a tuple of parameters.
//!
//! Today the one backend is the embedded SQLite default; the `Backend`, `Conn` and `Tx` enums
//! are the seam where the server backends go.

pub(crate) mod cleanup;
pub(crate) mod schema;
pub(crate) mod setup;
pub(crate) mod sqlite;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, Encode, FromRow, Type};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets::{self, AppSecrets, ExposeSecret};

pub use schema::Migrations;

/// Which kind of database a [`Target`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded default: a file on this machine.
    Sqlite,
}

impl Backend {
    /// The backend's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
        }
    }
}

/// The database an executable works on, resolved from its settings and secrets.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the database is.
    pub location: Location,
    /// The settings it was resolved from (timeouts, durability).
    pub settings: Settings,
}

/// Where a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
}

impl fmt::Display for Location {
    /// Shows the location without credentials, so it is safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Location {
    /// Parses a database URL. Errors never repeat the URL, which may carry a password.
    pub fn parse(url: &str) -> Result<Location> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => sqlite::parse_url(url),
            "postgres" | "postgresql" | "mysql" | "mariadb" => Err(Error::config(format!(
                "database URLs with the scheme \"{scheme}:\" are not supported by this version"
            ))
            .hint("use a sqlite: URL, or leave database_url unset for the embedded default")),
            _ => Err(Error::config(
                "the database URL is not valid: it must start with sqlite:".to_string(),
            )
            .hint("e.g. COMMONDB_DATABASE_URL=sqlite:///var/lib/app/users.sqlite3")),
        }
    }
}

impl Target {
    /// Resolves the database of executable `exe`: the app secrets file's `database_url` if it
    /// has one, else the `database_url` setting, else a SQLite file named after the executable
    /// in the data directory.
    pub fn resolve(settings: &Settings, exe: &str) -> Result<Target> {
        let app: AppSecrets = secrets::load(&secrets::app_file(settings, exe))?.unwrap_or_default();
        let location = match (&app.database_url, &settings.database_url) {
            (Some(url), _) => Location::parse(url.expose_secret())?,
            (None, Some(url)) => Location::parse(url)?,
            (None, None) => Location::Sqlite(settings.data_dir.join(format!("{exe}.sqlite3"))),
        };
        Ok(Target {
            location,
            settings: settings.clone(),
        })
    }
}

/// Opens `target` for a task and checks its schema in one query.
///
/// The embedded database belongs to the user who runs the program, so on first use it is set up
/// on the spot, and a schema behind the binary's migrations is brought up to date the way
/// `--self-setup` would (under the same lock). The setup report is returned when that happened.
pub(crate) async fn open(
    target: &Target,
    migrations: &Migrations,
) -> Result<(Conn, Option<setup::SetupReport>)> {
    let Location::Sqlite(path) = &target.location;
    let mut report = None;
    if !path.exists() {
        report = Some(setup::run(target, migrations).await?).filter(|r| !r.unchanged());
    }
    let mut conn = connect(target).await?;
    if !matches!(
        schema::check(&mut conn, migrations).await?,
        schema::SchemaState::Current { .. }
    ) {
        let r = setup::run(target, migrations).await?;
        if !r.unchanged() {
            report = Some(r);
        }
    }
    Ok((conn, report))
}

/// Opens `target` without looking at its schema.
pub(crate) async fn connect(target: &Target) -> Result<Conn> {
    match &target.location {
        Location::Sqlite(path) => Ok(Conn::Sqlite(sqlite::connect(path, &target.settings).await?)),
    }
}

/// An open connection, of whichever backend.
pub(crate) enum Conn {
    Sqlite(SqliteConnection),
}

impl Conn {
    /// Begins the transaction a task runs in. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout instead of failing
    /// when a read would have to be upgraded to a write.
    pub(crate) async fn begin_write(&mut self) -> Result<Tx<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Tx(TxInner::Sqlite(
                sqlx::Connection::begin_with(c, "BEGIN IMMEDIATE").await?,
            ))),
        }
    }

    /// Runs a `SELECT COUNT(*) …` (self-test checks).
    pub(crate) async fn count(&mut self, sql: &'static str) -> Result<i64> {
        match self {
            Conn::Sqlite(c) => Ok(sqlx::query_scalar(sql).fetch_one(&mut *c).await?),
        }
    }

    /// Closes the connection cleanly (on SQLite this checkpoints the write-ahead log).
    pub(crate) async fn close(self) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(sqlx::Connection::close(c).await?),
        }
    }
}

/// The transaction a task's handler runs in; committed by the harness if the handler succeeds.
pub struct Tx<'c>(TxInner<'c>);

enum TxInner<'c> {
    Sqlite(sqlx::Transaction<'c, Sqlite>),
}

impl Tx<'_> {
    /// The backend, for the rare query that must be written per backend.
    pub fn backend(&self) -> Backend {
        match &self.0 {
            TxInner::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Runs a statement and returns how many rows it changed.
    pub async fn execute<'q>(&mut self, sql: &'static str, params: impl Params<'q>) -> Result<u64> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Ok(sqlx::query_with(sql, params.sqlite()?)
                .execute(&mut **tx)
                .await?
                .rows_affected()),
        }
    }

    /// Runs a query that returns exactly one row.
    pub async fn fetch_one<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<R> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Ok(sqlx::query_as_with(sql, params.sqlite()?)
                .fetch_one(&mut **tx)
                .await?),
        }
    }

    /// Runs a query that returns at most one row.
    pub async fn fetch_optional<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<Option<R>> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Ok(sqlx::query_as_with(sql, params.sqlite()?)
                .fetch_optional(&mut **tx)
                .await?),
        }
    }

    /// Runs a query and returns all its rows.
    pub async fn fetch_all<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<Vec<R>> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Ok(sqlx::query_as_with(sql, params.sqlite()?)
                .fetch_all(&mut **tx)
                .await?),
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.commit().await?),
        }
    }
}

/// A row type a task can fetch: anything `#[derive(sqlx::FromRow)]` on every backend.
pub trait Record: for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}
impl<T> Record for T where T: for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

/// A value a task can bind to a `?` placeholder: strings, integers, floats, booleans, bytes,
/// `chrono` timestamps, and `Option`s of them (for NULL).
pub trait Param<'q>: Encode<'q, Sqlite> + Type<Sqlite> + Send {}
impl<'q, T> Param<'q> for T where T: Encode<'q, Sqlite> + Type<Sqlite> + Send {}

/// The parameters of one statement: a tuple of [`Param`]s, `()` for none.
pub trait Params<'q>: Send {
    #[doc(hidden)]
    fn sqlite(self) -> Result<SqliteArguments>;
}

macro_rules! impl_params {
    ($($p:ident),*) => {
        impl<'q, $($p: Param<'q>),*> Params<'q> for ($($p,)*) {
            #[allow(non_snake_case, unused_mut)]
            fn sqlite(self) -> Result<SqliteArguments> {
                let ($($p,)*) = self;
                let mut args = SqliteArguments::default();
                $(args.add($p).map_err(encode_error)?;)*
                Ok(args)
            }
        }
    };
}
impl_params!();
impl_params!(A);
impl_params!(A, B);
impl_params!(A, B, C);
impl_params!(A, B, C, D);
impl_params!(A, B, C, D, E);
impl_params!(A, B, C, D, E, F);
impl_params!(A, B, C, D, E, F, G);
impl_params!(A, B, C, D, E, F, G, H);
impl_params!(A, B, C, D, E, F, G, H, I);
impl_params!(A, B, C, D, E, F, G, H, I, J);
impl_params!(A, B, C, D, E, F, G, H, I, J, K);
impl_params!(A, B, C, D, E, F, G, H, I, J, K, L);

fn encode_error(e: sqlx::error::BoxDynError) -> Error {
    Error::internal(format!("a query parameter could not be encoded: {e}"))
}

/// SQLite's primary result codes that decide how an error is classified.
mod sqlite_code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const READONLY: i64 = 8;
    pub const IOERR: i64 = 10;
    pub const CORRUPT: i64 = 11;
    pub const FULL: i64 = 13;
    pub const CANTOPEN: i64 = 14;
    pub const NOTADB: i64 = 26;
}

impl From<sqlx::Error> for Error {
    /// Classifies a database error by what the user can do about it.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                use sqlx::error::ErrorKind as K;
                match db.kind() {
                    K::UniqueViolation => {
                        return Error::conflict(format!(
                            "a record with the same key already exists ({})",
                            db.message()
                        ))
                        .hint("nothing was written; use a different value");
                    }
                    K::ForeignKeyViolation | K::NotNullViolation | K::CheckViolation => {
                        return Error::invalid_input(format!(
                            "the database refused the data: {}",
                            db.message()
                        ))
                        .hint("nothing was written; correct the request");
                    }
                    _ => {}
                }
                let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff;
                let msg = db.message().to_string();
                match code {
                    sqlite_code::BUSY | sqlite_code::LOCKED => Error::temporary(format!(
                        "the database is busy: {msg}"
                    ))
                    .hint("another process held the lock too long; try again, or raise busy_timeout_ms"),
                    sqlite_code::READONLY => Error::permission(format!(
                        "the database cannot be written: {msg}"
                    ))
                    .hint("check the owner and mode of the database file and its directory"),
                    sqlite_code::CORRUPT | sqlite_code::NOTADB => Error::internal(format!(
                        "the database file is damaged or is not a database: {msg}"
                    ))
                    .hint("restore it from a backup, or remove it with --self-cleanup and set up again"),
                    sqlite_code::FULL => Error::temporary(format!("the disk is full: {msg}"))
                        .hint("free some space and try again"),
                    sqlite_code::IOERR | sqlite_code::CANTOPEN => Error::unavailable(format!(
                        "the database file cannot be read or written: {msg}"
                    ))
                    .hint("check that the file and its directory exist and are yours"),
                    _ => Error::internal(format!("the database reported an error: {msg}")),
                }
            }
            sqlx::Error::Io(e) => Error::unavailable(format!("cannot reach the database: {e}"))
                .hint("check that the database is running and reachable"),
            sqlx::Error::Configuration(e) => {
                Error::config(format!("the database settings are not valid: {e}"))
            }
            sqlx::Error::PoolTimedOut => Error::temporary("no database connection became free in time")
                .hint("the database is overloaded; try again"),
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Error::unavailable(format!("the database connection was lost: {e}"))
                    .hint("try again")
            }
            other => Error::internal(format!(
                "the database returned something this program does not expect: {other}"
            ))
            .hint("check that the schema matches this version (--self-setup applies pending migrations)"),
        }
    }
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
        let mut tx = conn.begin_write().await.unwrap();
        tx.execute("INSERT INTO notes (text) VALUES (?)", ("a",))
            .await
            .unwrap();
        let e = tx
            .execute("INSERT INTO notes (text) VALUES (?)", ("a",))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        drop(tx);
        assert_eq!(conn.count("SELECT COUNT(*) FROM notes").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_writer_that_waits_past_the_busy_timeout_gets_a_temporary_error() {
        let (_dir, mut settings) = testing::scratch();
        let target = testing::target(&settings);
        let (mut holder, _) = open(&target, V1).await.unwrap();
        let _held = holder.begin_write().await.unwrap();
        settings.busy_timeout_ms = 50;
        let impatient = Target::resolve(&settings, "notes").unwrap();
        let mut conn = connect(&impatient).await.unwrap();
        let e = conn.begin_write().await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Temporary, "{}", e.message());
    }

    #[test]
    fn many_concurrent_setups_create_the_database_exactly_once() {
        let (_dir, settings) = testing::scratch();
        let target = testing::target(&settings);
        let created: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        crate::run::block_on(setup::run(&target, V1))
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
        assert_eq!(
            testing::target(&settings).location,
            Location::Sqlite("/from/settings.db".into())
        );
        let file = secrets::app_file(&settings, "notes");
        secrets::write(&file, "database_url = \"sqlite:///from/secrets.db\"\n").unwrap();
        assert_eq!(
            testing::target(&settings).location,
            Location::Sqlite("/from/secrets.db".into())
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Target::resolve(&settings, "notes").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permission);
        drop(dir);
    }

    #[test]
    fn server_and_unknown_urls_are_configuration_errors_that_hide_the_url() {
        for url in [
            "postgres://u:hunter2@h/d",
            "mysql://u:hunter2@h/d",
            "http://u:hunter2@h",
            "hunter2",
        ] {
            let e = Location::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(!e.message().contains("hunter2"), "{}", e.message());
        }
    }
}
