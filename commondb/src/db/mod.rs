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
//! `Backend`, `Location`, `Conn` and `Tx` are the seam between the backends: one variant each
//! for SQLite, PostgreSQL and MySQL/MariaDB.

mod classify;
pub(crate) mod cleanup;
pub(crate) mod dialect;
pub(crate) mod dump;
mod field;
pub(crate) mod schema;
pub(crate) mod server;
pub(crate) mod setup;
pub(crate) mod sqlite;
pub(crate) mod status;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnection, MySqlRow};
use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, FromRow, Type};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::secrets::{self, AppSecrets, ExposeSecret};

pub use schema::Migrations;
pub(crate) use server::ServerOptions;

/// Which kind of database a task runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded default: a file on this machine.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    #[serde(rename = "mysql")]
    MySql,
}

impl Backend {
    /// Quotes an identifier that passed [`schema::quote_identifier`]'s check, for this backend.
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Backend::MySql => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }

    /// The backend's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
            Backend::MySql => "MySQL/MariaDB",
        }
    }
}

/// Where a database is.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A database on a server (boxed: its options are large, a path is not).
    Server(Box<ServerOptions>),
}

impl fmt::Display for Location {
    /// Shows the location without credentials, so it is safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Server(server) => f.write_str(&server.display()),
        }
    }
}

impl Location {
    /// Parses a database URL. Errors never repeat the URL, which may carry a password.
    pub(crate) fn parse(url: &str) -> Result<Location> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => sqlite::parse_url(url),
            "postgres" | "postgresql" => Ok(Location::Server(Box::new(ServerOptions::parse(url, Backend::Postgres)?))),
            "mysql" | "mariadb" => Ok(Location::Server(Box::new(ServerOptions::parse(url, Backend::MySql)?))),
            _ => Err(Error::config(
                "the database URL is not valid: it must start with sqlite:, postgres:, postgresql:, mysql: or mariadb:",
            )
            .hint("e.g. COMMONDB_DATABASE_URL=postgres://127.0.0.1:5432/shop")),
        }
    }

    /// The backend that serves this location.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Server(s) => s.backend(),
        }
    }
}

/// The database an executable works on, resolved from its settings and app secrets.
#[derive(Debug)]
pub(crate) struct Target {
    /// The executable's name (it names the app secrets file and the embedded database).
    pub exe: &'static str,
    /// Where the database is.
    pub location: Location,
    /// The settings it was resolved from (timeouts, durability, role names).
    pub settings: Settings,
    /// The app secrets file as it was when the target was resolved (empty if there was none).
    pub secrets: AppSecrets,
}

impl Target {
    /// Resolves the database of executable `exe`: the app secrets file's `database_url` if it
    /// has one, else the `database_url` setting, else a SQLite file named after the executable
    /// in the data directory.
    pub(crate) fn resolve(settings: &Settings, exe: &'static str) -> Result<Target> {
        let secrets: AppSecrets =
            secrets::load(&secrets::app_file(settings, exe))?.unwrap_or_default();
        let location = match (&secrets.database_url, &settings.database_url) {
            (Some(url), _) => Location::parse(url.expose_secret())?,
            (None, Some(url)) if server::url_has_password(url) => {
                return Err(Error::config("database_url carries a password, and settings are no place for secrets")
                    .hint(format!(
                        "remove it from the URL: setup writes the app's credentials to {} (or put the whole URL there, chmod 600)",
                        secrets::app_file(settings, exe).display()
                    )));
            }
            (None, Some(url)) => Location::parse(url)?,
            (None, None) => Location::Sqlite(settings.data_dir.join(format!("{exe}.sqlite3"))),
        };
        Ok(Target {
            exe,
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

/// Opens `target` for a task.
///
/// The embedded database belongs to the user who runs the program, so on first use it is set up
/// on the spot, and a schema behind the binary's migrations is brought up to date the way
/// `--self-setup` would (under the same lock); the setup report is returned when that happened.
/// On a server the task connects as the app role, which may not change the schema:
/// [`Conn::begin_task`] refuses a database that is not set up, or is behind, with the advice to
/// run `--self-setup`.
pub(crate) async fn open(
    target: &Target,
    migrations: &Migrations,
) -> Result<(Conn, Option<setup::SetupReport>)> {
    match &target.location {
        Location::Sqlite(path) => {
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
        // On a server the schema is checked by `begin_task`, in the round trip that begins the
        // transaction.
        Location::Server(_) => Ok((connect(target).await?, None)),
    }
}

/// Opens `target` as the app (on a server, the app role) without looking at its schema.
pub(crate) async fn connect(target: &Target) -> Result<Conn> {
    match &target.location {
        Location::Sqlite(path) => Ok(Conn::Sqlite(sqlite::connect(path, &target.settings).await?)),
        Location::Server(server) => {
            server::app_options(target, server, false)?
                .connect(&target.settings)
                .await
        }
    }
}

/// An open connection, of whichever backend.
pub(crate) enum Conn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
    MySql(MySqlConnection),
}

/// Runs one sqlx call on whichever connection `$conn` is, as `$c`.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
            Conn::MySql($c) => $body,
        }
    };
}
pub(crate) use on_conn;

impl Conn {
    /// The backend of this connection.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
            Conn::MySql(_) => Backend::MySql,
        }
    }

    /// Begins the transaction a task runs in, after checking that the schema is the binary's.
    ///
    /// On SQLite (checked by [`open`]) it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// concurrent writers queue on the busy timeout instead of failing when a read would have to
    /// be upgraded to a write. On a server the session settings, the schema check and `BEGIN`
    /// go in one simple-query round trip; if the schema differs the transaction is rolled back
    /// and the database refused. (The harness says how with [`Conn::begin_with`]; tests use this.)
    #[cfg(test)]
    pub(crate) async fn begin_task(
        &mut self,
        location: &Location,
        migrations: &Migrations,
    ) -> Result<Tx<'_>> {
        self.begin_with(location, migrations, Begin::CHECKED).await
    }

    /// Begins a task's transaction as `begin` says: with or without the schema check, and for
    /// a single-statement task without `BEGIN` at all (its statement commits by itself).
    pub(crate) async fn begin_with(
        &mut self,
        location: &Location,
        migrations: &Migrations,
        begin: Begin,
    ) -> Result<Tx<'_>> {
        match self {
            // SQLite's schema was checked by `open`, and a single statement needs no BEGIN.
            Conn::Sqlite(_) if begin.single => Ok(self.wrap(begin)),
            Conn::Sqlite(c) => Ok(Tx(TxInner::Sqlite(
                sqlx::Connection::begin_with(c, "BEGIN IMMEDIATE").await?,
            ))),
            server => {
                server.start(location, migrations, begin).await?;
                Ok(server.wrap(begin))
            }
        }
    }

    /// Like [`Conn::begin_with`], for a connection that sat in a pool: if a server connection
    /// fails before the transaction began (the server restarted while it was idle), it is
    /// replaced by `reconnect` and the transaction begun on the new one, checked: nothing was
    /// sent that could have written, so trying again is safe.
    pub(crate) async fn begin_task_or_reconnect(
        &mut self,
        location: &Location,
        migrations: &Migrations,
        begin: Begin,
        reconnect: impl Future<Output = Result<Conn>>,
    ) -> Result<Tx<'_>> {
        if let Conn::Sqlite(_) = self {
            return self.begin_with(location, migrations, begin).await;
        }
        match self.start(location, migrations, begin).await {
            Err(e) if e.kind() == crate::ErrorKind::Unavailable => {
                *self = reconnect.await?;
                let checked = Begin {
                    check: true,
                    ..begin
                };
                self.start(location, migrations, checked).await?;
            }
            other => other?,
        }
        Ok(self.wrap(begin))
    }

    /// What a server sends before the task's first statement: the check and `BEGIN` in one
    /// round trip, `BEGIN` alone, the check alone (single statement), or nothing.
    async fn start(
        &mut self,
        location: &Location,
        migrations: &Migrations,
        begin: Begin,
    ) -> Result<()> {
        match (begin.check, begin.single) {
            (true, single) => self.begin_checked(location, migrations, !single).await,
            (false, false) => {
                let sql = match self.backend() {
                    Backend::MySql => "START TRANSACTION",
                    _ => "BEGIN",
                };
                self.exec(sql.into()).await
            }
            (false, true) => Ok(()),
        }
    }

    fn wrap(&mut self, begin: Begin) -> Tx<'_> {
        if begin.single {
            Tx(TxInner::Single(self, Arc::default()))
        } else {
            Tx(TxInner::Server(self))
        }
    }

    /// Checks the schema on a server (setting the session on MySQL), and begins a transaction
    /// in the same round trip if `begin_tx`.
    async fn begin_checked(
        &mut self,
        location: &Location,
        migrations: &Migrations,
        begin_tx: bool,
    ) -> Result<()> {
        use sqlx::Row;
        const CHECK: &str = schema::APPLIED_SUMMARY;
        let backend = self.backend();
        let mut sql = match backend {
            Backend::MySql => format!("{}; {CHECK}", dialect::MYSQL_SESSION),
            _ => CHECK.to_string(),
        };
        if begin_tx {
            sql.push_str(match backend {
                Backend::MySql => "; START TRANSACTION",
                _ => "; BEGIN",
            });
        }
        let rows = on_conn!(self, c => sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(&mut *c).await.map(|rows| {
            rows.first().map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        }));
        let applied = match rows {
            Ok(Some(Ok(applied))) => Some(applied),
            // No migrations table (or another failure): the full check below says which.
            Ok(_) | Err(_) => None,
        };
        let migrator = migrations.for_backend(backend);
        if applied == Some(schema::embedded(migrator)) {
            return Ok(());
        }
        if applied.is_some() && begin_tx {
            self.exec("ROLLBACK".into()).await?;
        }
        let state = schema::check(self, migrations).await?;
        Err(schema::refusal(state, migrator, location))
    }

    /// Runs one statement given as text, without parameters (transaction control, DDL,
    /// grants: their identifiers are validated and quoted by the caller).
    ///
    /// On a server it goes as a simple query (one round trip, nothing to prepare); on SQLite as
    /// one prepared statement, which is one message to sqlx's worker thread where `raw_sql`
    /// would exchange several.
    pub(crate) async fn exec(&mut self, sql: String) -> Result<()> {
        let sql = AssertSqlSafe(sql);
        match self {
            Conn::Sqlite(c) => sqlx::query(sql).execute(&mut *c).await.map(drop),
            Conn::Postgres(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(drop),
            Conn::MySql(c) => sqlx::raw_sql(sql).execute(&mut *c).await.map(drop),
        }?;
        Ok(())
    }

    /// Runs a query that returns one `BIGINT`.
    pub(crate) async fn scalar(&mut self, sql: &'static str) -> Result<i64> {
        Ok(on_conn!(self, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await)?)
    }

    /// Runs a `SELECT COUNT(*) …` (self-test checks).
    pub(crate) async fn count(&mut self, sql: &'static str) -> Result<i64> {
        let sql = self.native(sql);
        Ok(on_conn!(self, c => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut *c).await)?)
    }

    /// Runs a query with one text parameter (a name) that returns one `BIGINT`.
    pub(crate) async fn count_named(&mut self, sql: &'static str, name: &str) -> Result<i64> {
        Ok(on_conn!(self, c => sqlx::query_scalar(sql).bind(name).fetch_one(&mut *c).await)?)
    }

    /// Runs a query with one text parameter that returns a column of `BIGINT`s.
    pub(crate) async fn ids_named(&mut self, sql: &'static str, name: &str) -> Result<Vec<i64>> {
        Ok(on_conn!(self, c => sqlx::query_scalar(sql).bind(name).fetch_all(&mut *c).await)?)
    }

    /// Runs a query that returns a column of text.
    pub(crate) async fn strings(&mut self, sql: &'static str) -> Result<Vec<String>> {
        Ok(on_conn!(self, c => sqlx::query_scalar(sql).fetch_all(&mut *c).await)?)
    }

    /// What setup recorded for `item`: created (`true`), found (`false`) or nothing.
    pub(crate) async fn marker(&mut self, item: &str) -> Result<Option<bool>> {
        let sql = self.native("SELECT created FROM _commondb_setup WHERE item = ?");
        Ok(
            on_conn!(self, c => sqlx::query_scalar(AssertSqlSafe(sql)).bind(item).fetch_optional(&mut *c).await)?,
        )
    }

    /// `sql` with `?` placeholders rewritten for this backend.
    fn native(&self, sql: &'static str) -> String {
        match self {
            Conn::Postgres(_) => dialect::numbered_placeholders(sql).into_owned(),
            _ => sql.to_string(),
        }
    }

    /// Closes the connection, also after a failure, so that the database is always left
    /// checkpointed; returns `result`, whose error comes before the close's.
    pub(crate) async fn close_after<T>(self, result: Result<T>) -> Result<T> {
        let closed = self.close().await;
        let value = result?;
        closed?;
        Ok(value)
    }

    /// Closes the connection cleanly (on SQLite this checkpoints the write-ahead log).
    pub(crate) async fn close(self) -> Result<()> {
        use sqlx::Connection;
        Ok(on_conn!(self, c => c.close().await)?)
    }
}

/// How a task's transaction begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Begin {
    /// Check the schema (on a server, in the round trip that begins).
    pub check: bool,
    /// The task runs exactly one statement ([`crate::Task::SINGLE_STATEMENT`]): no `BEGIN` and
    /// no `COMMIT`, the statement commits by itself, and a second one is refused.
    pub single: bool,
}

#[cfg(test)]
impl Begin {
    /// A checked, explicit transaction.
    pub(crate) const CHECKED: Begin = Begin {
        check: true,
        single: false,
    };
}

/// The transaction a task's handler runs in; the harness commits it if the handler succeeds and
/// rolls it back otherwise.
pub struct Tx<'c>(TxInner<'c>);

enum TxInner<'c> {
    /// SQLite: sqlx's own transaction, whose BEGIN and COMMIT are one message each to sqlx's
    /// worker thread.
    Sqlite(sqlx::Transaction<'c, Sqlite>),
    /// A server: BEGIN went with the schema check; COMMIT and ROLLBACK are simple queries.
    Server(&'c mut Conn),
    /// A single-statement task's one statement, which commits by itself; whether it was sent.
    Single(&'c mut Conn, Arc<AtomicBool>),
}

/// The connection a transaction's statements run on.
enum Executor<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
    MySql(&'a mut MySqlConnection),
}

/// Runs one sqlx query builder in transaction `$tx`: `$q` is given the SQL (with placeholders
/// for the backend) and the bound arguments, `$e` the executor.
macro_rules! on_tx {
    ($tx:expr, $sql:expr, $params:expr, |$q:ident, $e:ident| $run:expr) => {
        match $tx.executor()? {
            Executor::Sqlite($e) => {
                let $q = ($sql, $params.sqlite()?);
                $run
            }
            Executor::Postgres($e) => {
                let $q = (
                    AssertSqlSafe(dialect::numbered_placeholders($sql).into_owned()),
                    $params.postgres()?,
                );
                $run
            }
            Executor::MySql($e) => {
                let $q = ($sql, $params.mysql()?);
                $run
            }
        }
    };
}

impl Tx<'_> {
    /// The backend, for the rare query that must be written per backend.
    pub fn backend(&self) -> Backend {
        match &self.0 {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Server(conn) | TxInner::Single(conn, _) => conn.backend(),
        }
    }

    /// For a single-statement task, whether its statement was sent (then it may commit by
    /// itself at any moment, and must be waited for rather than cancelled).
    pub(crate) fn single_sent(&self) -> Option<Arc<AtomicBool>> {
        match &self.0 {
            TxInner::Single(_, sent) => Some(Arc::clone(sent)),
            _ => None,
        }
    }

    fn executor(&mut self) -> Result<Executor<'_>> {
        let conn = match &mut self.0 {
            TxInner::Sqlite(tx) => return Ok(Executor::Sqlite(tx)),
            TxInner::Server(conn) => conn,
            TxInner::Single(conn, sent) => {
                if sent.swap(true, Ordering::AcqRel) {
                    return Err(Error::internal(
                        "the task ran a second statement, but it declares SINGLE_STATEMENT",
                    )
                    .hint("set SINGLE_STATEMENT to false in the task: its statements need a transaction"));
                }
                conn
            }
        };
        Ok(match &mut **conn {
            Conn::Sqlite(c) => Executor::Sqlite(c),
            Conn::Postgres(c) => Executor::Postgres(c),
            Conn::MySql(c) => Executor::MySql(c),
        })
    }

    /// Runs a statement and returns how many rows it changed.
    pub async fn execute<'q>(&mut self, sql: &'static str, params: impl Params<'q>) -> Result<u64> {
        on_tx!(self, sql, params, |q, e| Ok(sqlx::query_with(q.0, q.1)
            .execute(e)
            .await?
            .rows_affected()))
    }

    /// Runs an `INSERT` of one row and returns the integer key the database generated for it
    /// in column `key`: with `RETURNING` on PostgreSQL, as the connection's last insert id on
    /// SQLite and MySQL/MariaDB (MySQL has no `RETURNING`).
    pub async fn insert<'q>(
        &mut self,
        sql: &'static str,
        key: &'static str,
        params: impl Params<'q>,
    ) -> Result<i64> {
        match self.executor()? {
            Executor::Sqlite(c) => {
                let done = sqlx::query_with(sql, params.sqlite()?).execute(c).await?;
                Ok(done.last_insert_rowid())
            }
            Executor::Postgres(c) => {
                let sql = format!("{} RETURNING {key}", dialect::numbered_placeholders(sql));
                Ok(
                    sqlx::query_scalar_with(AssertSqlSafe(sql), params.postgres()?)
                        .fetch_one(c)
                        .await?,
                )
            }
            Executor::MySql(c) => {
                let done = sqlx::query_with(sql, params.mysql()?).execute(c).await?;
                i64::try_from(done.last_insert_id()).map_err(|_| {
                    Error::internal("the generated key does not fit a signed 64-bit integer")
                })
            }
        }
    }

    /// Runs a query that returns exactly one row.
    pub async fn fetch_one<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<R> {
        on_tx!(self, sql, params, |q, e| Ok(sqlx::query_as_with(q.0, q.1)
            .fetch_one(e)
            .await?))
    }

    /// Runs a query that returns at most one row.
    pub async fn fetch_optional<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<Option<R>> {
        on_tx!(self, sql, params, |q, e| Ok(sqlx::query_as_with(q.0, q.1)
            .fetch_optional(e)
            .await?))
    }

    /// Runs a query and returns all its rows.
    pub async fn fetch_all<'q, R: Record>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
    ) -> Result<Vec<R>> {
        on_tx!(self, sql, params, |q, e| Ok(sqlx::query_as_with(q.0, q.1)
            .fetch_all(e)
            .await?))
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.commit().await?),
            TxInner::Server(conn) => conn.exec("COMMIT".into()).await,
            TxInner::Single(..) => Ok(()),
        }
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.rollback().await?),
            TxInner::Server(conn) => conn.exec("ROLLBACK".into()).await,
            // The one statement failed, so it wrote nothing; there is nothing to undo.
            TxInner::Single(..) => Ok(()),
        }
    }
}

/// A row type a task can fetch: anything `#[derive(sqlx::FromRow)]` whose fields every backend
/// can decode.
pub trait Record:
    for<'r> FromRow<'r, SqliteRow>
    + for<'r> FromRow<'r, PgRow>
    + for<'r> FromRow<'r, MySqlRow>
    + Send
    + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, SqliteRow>
        + for<'r> FromRow<'r, PgRow>
        + for<'r> FromRow<'r, MySqlRow>
        + Send
        + Unpin
{
}

/// A value a task can bind to a `?` placeholder on every backend: strings, integers, floats,
/// booleans, bytes, `chrono` timestamps, and `Option`s of them (for NULL).
pub trait Param<'q>:
    Encode<'q, Sqlite>
    + Type<Sqlite>
    + Encode<'q, Postgres>
    + Type<Postgres>
    + Encode<'q, MySql>
    + Type<MySql>
    + Send
{
}
impl<'q, T> Param<'q> for T where
    T: Encode<'q, Sqlite>
        + Type<Sqlite>
        + Encode<'q, Postgres>
        + Type<Postgres>
        + Encode<'q, MySql>
        + Type<MySql>
        + Send
{
}

/// The parameters of one statement: a tuple of [`Param`]s, `()` for none.
pub trait Params<'q>: Send {
    #[doc(hidden)]
    fn sqlite(self) -> Result<SqliteArguments>;
    #[doc(hidden)]
    fn postgres(self) -> Result<PgArguments>;
    #[doc(hidden)]
    fn mysql(self) -> Result<MySqlArguments>;
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
            #[allow(non_snake_case, unused_mut)]
            fn postgres(self) -> Result<PgArguments> {
                let ($($p,)*) = self;
                let mut args = PgArguments::default();
                $(args.add($p).map_err(encode_error)?;)*
                Ok(args)
            }
            #[allow(non_snake_case, unused_mut)]
            fn mysql(self) -> Result<MySqlArguments> {
                let ($($p,)*) = self;
                let mut args = MySqlArguments::default();
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
        let impatient = Target::resolve(&settings, "notes").unwrap();
        let mut conn = connect(&impatient).await.unwrap();
        let e = conn
            .begin_task(&impatient.location, V1)
            .await
            .err()
            .unwrap();
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
        let e = Target::resolve(&settings, "notes").unwrap_err();
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
