//! The task's side of the seam: [`Tx`], the transaction a task's handler runs in, and what it
//! binds and fetches ([`Params`], [`Param`], [`Record`]), written once for every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::mysql::{MySql, MySqlArguments, MySqlConnection, MySqlRow};
use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, FromRow, Type};

use super::dialect::numbered_placeholders;
use super::{Backend, Conn};
use crate::error::{Error, Result};
use crate::stream::{Row, RowSink};

/// How a task's transaction begins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Begin {
    /// Check the schema (on a server, in the round trip that begins).
    pub check: bool,
    /// The task runs exactly one statement ([`crate::Task::SINGLE_STATEMENT`]): no `BEGIN` and
    /// no `COMMIT`, the statement commits by itself, and a second one is refused.
    pub single: bool,
    /// The task only reads ([`crate::Task::READ_ONLY`]): a read-only transaction.
    pub read_only: bool,
}

impl Begin {
    /// The statement that begins this transaction on a backend with `dialect`.
    pub(crate) fn statement(self, dialect: &dyn super::Dialect) -> &'static str {
        if self.read_only {
            dialect.begin_read_only()
        } else {
            dialect.begin()
        }
    }
}

impl Begin {
    /// A checked, explicit transaction.
    pub(crate) const CHECKED: Begin = Begin {
        check: true,
        single: false,
        read_only: false,
    };
}

/// The transaction a task's handler runs in; the harness commits it if the handler succeeds and
/// rolls it back otherwise.
pub struct Tx<'c> {
    pub(super) inner: TxInner<'c>,
    /// Where [`Tx::stream`]'s rows go (none: nowhere).
    sink: Option<&'c mut RowSink>,
}

pub(super) enum TxInner<'c> {
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
                    AssertSqlSafe(numbered_placeholders($sql).into_owned()),
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

impl<'c> Tx<'c> {
    pub(super) fn new(inner: TxInner<'c>) -> Tx<'c> {
        Tx { inner, sink: None }
    }

    /// The transaction with `sink` for the rows [`Tx::stream`] sends.
    pub(crate) fn with_sink(mut self, sink: &'c mut RowSink) -> Tx<'c> {
        self.sink = Some(sink);
        self
    }
}

impl Tx<'_> {
    /// The backend, for the rare query that must be written per backend.
    pub fn backend(&self) -> Backend {
        match &self.inner {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Server(conn) | TxInner::Single(conn, _) => conn.backend(),
        }
    }

    /// For a single-statement task, whether its statement was sent (then it may commit by
    /// itself at any moment, and must be waited for rather than cancelled).
    pub(crate) fn single_sent(&self) -> Option<Arc<AtomicBool>> {
        match &self.inner {
            TxInner::Single(_, sent) => Some(Arc::clone(sent)),
            _ => None,
        }
    }

    fn executor(&mut self) -> Result<Executor<'_>> {
        self.inner.executor()
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
                let sql = format!("{} RETURNING {key}", numbered_placeholders(sql));
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

    /// Runs a query and sends each row on as it is read, so that memory stays flat whatever
    /// the count: `each` turns a row into what is sent (or `None` to send nothing for it, say
    /// the one row past a page that shows another page follows). Where the rows go is the
    /// harness's choice (stdout in process mode, the answer over `--serve`). Returns how many
    /// rows were sent.
    pub async fn stream<'q, R: Record, O: Row>(
        &mut self,
        sql: &'static str,
        params: impl Params<'q>,
        mut each: impl FnMut(R) -> Result<Option<O>> + Send,
    ) -> Result<u64> {
        use futures_util::TryStreamExt;
        let Tx { inner, sink } = self;
        let mut nowhere = RowSink::discard();
        let sink: &mut RowSink = match sink {
            Some(sink) => sink,
            None => &mut nowhere,
        };
        sink.start();
        let mut sent = 0;
        on_tx!(inner, sql, params, |q, e| {
            let mut rows = sqlx::query_as_with::<_, R, _>(q.0, q.1).fetch(e);
            while let Some(row) = rows.try_next().await? {
                if let Some(out) = each(row)? {
                    sink.push(&out)?;
                    sent += 1;
                }
            }
        });
        Ok(sent)
    }

    /// Ends the transaction as `outcome` says: committed if it is `Ok`, else rolled back
    /// explicitly, so that a server never holds a failed transaction until the connection
    /// closes. If the rollback fails, the connection is in no known state: the error says so,
    /// and its kind keeps a pool from taking the connection back.
    pub(crate) async fn settle<O>(self, outcome: Result<O>) -> Result<O> {
        match outcome {
            Ok(output) => {
                self.commit().await?;
                Ok(output)
            }
            Err(e) => match self.rollback().await {
                Ok(()) => Err(e),
                Err(failed) => Err(Error::unavailable(format!(
                    "{} (and rolling back failed: {})",
                    e.message(),
                    failed.message()
                ))
                .hint("nothing was written; try again")),
            },
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(tx) => Ok(tx.commit().await?),
            TxInner::Server(conn) => conn.exec("COMMIT".into()).await,
            TxInner::Single(..) => Ok(()),
        }
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(tx) => Ok(tx.rollback().await?),
            TxInner::Server(conn) => conn.exec("ROLLBACK".into()).await,
            // The one statement failed, so it wrote nothing; there is nothing to undo.
            TxInner::Single(..) => Ok(()),
        }
    }
}

impl TxInner<'_> {
    fn executor(&mut self) -> Result<Executor<'_>> {
        let conn = match self {
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
