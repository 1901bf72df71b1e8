//! An open connection, of whichever backend, and what the harness sends on it outside a task:
//! beginning a task's transaction (with the schema check in the same round trip on a server),
//! statements as text, the small queries of setup, cleanup and the self-test.

use std::future::Future;
use std::sync::Arc;

use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::tx::{Begin, Tx, TxInner};
use super::{Backend, Location};
use crate::db::schema::{self, Migrations};
use crate::error::Result;

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
            Conn::Sqlite(c) => Ok(Tx::new(TxInner::Sqlite(
                sqlx::Connection::begin_with(c, begin.statement(Backend::Sqlite.dialect())).await?,
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
        let statement = begin.statement(self.backend().dialect());
        match (begin.check, begin.single) {
            (true, false) => {
                self.begin_checked(location, migrations, Some(statement))
                    .await
            }
            (true, true) => self.begin_checked(location, migrations, None).await,
            (false, false) => self.exec(statement.into()).await,
            (false, true) => Ok(()),
        }
    }

    fn wrap(&mut self, begin: Begin) -> Tx<'_> {
        if begin.single {
            Tx::new(TxInner::Single(self, Arc::default()))
        } else {
            Tx::new(TxInner::Server(self))
        }
    }

    /// Checks the schema on a server (setting the session on MySQL), and begins a transaction
    /// with `begin` in the same round trip if there is one.
    async fn begin_checked(
        &mut self,
        location: &Location,
        migrations: &Migrations,
        begin: Option<&'static str>,
    ) -> Result<()> {
        use sqlx::Row;
        const CHECK: &str = schema::APPLIED_SUMMARY;
        let backend = self.backend();
        let dialect = backend.dialect();
        let mut sql = match dialect.session() {
            Some(session) => format!("{session}; {CHECK}"),
            None => CHECK.to_string(),
        };
        if let Some(begin) = begin {
            sql.push_str("; ");
            sql.push_str(begin);
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
        if applied.is_some() && begin.is_some() {
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

    /// Runs a query with one text parameter that returns a column of text.
    pub(crate) async fn strings_named(
        &mut self,
        sql: &'static str,
        name: &str,
    ) -> Result<Vec<String>> {
        Ok(on_conn!(self, c => sqlx::query_scalar(sql).bind(name).fetch_all(&mut *c).await)?)
    }

    /// Every item setup recorded as created (`database`, `role:<name>`), in order.
    pub(crate) async fn created_items(&mut self) -> Result<Vec<String>> {
        self.strings("SELECT item FROM _commondb_setup WHERE created ORDER BY item")
            .await
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
        self.backend().dialect().placeholders(sql).into_owned()
    }

    /// Runs [`schema::APPLIED_SUMMARY`]: how many migrations were applied, and the newest.
    ///
    /// On a server this is sent as a simple (unprepared) query: one round trip instead of two,
    /// on the path of every task.
    pub(crate) async fn applied_summary(&mut self) -> Result<(i64, i64)> {
        use sqlx::Row;
        let sql = schema::APPLIED_SUMMARY;
        Ok(match self {
            Conn::Sqlite(c) => sqlx::query_as(sql).fetch_one(&mut *c).await?,
            Conn::Postgres(c) => {
                let row = sqlx::raw_sql(sql).fetch_one(&mut *c).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            Conn::MySql(c) => {
                let row = sqlx::raw_sql(sql).fetch_one(&mut *c).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        })
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
