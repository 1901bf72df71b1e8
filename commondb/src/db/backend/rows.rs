//! Rows across the seam, for backups: how each backend describes a table's columns, streams its
//! rows out as portable values (JSON, by the column's [`Kind`]), takes them back in (binary
//! `COPY` on PostgreSQL, multi-row `INSERT`s elsewhere), and what it must be told after a load
//! (indexes rebuilt, sequences moved, keys used up).
//!
//! The backup side (`backup/dump.rs`, `backup/load.rs`) sees only [`Conn`]'s methods here, the
//! [`Sink`] it writes rows into and the [`Rows`] it hands rows over as.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::MySqlArguments;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Column, Executor, SqlSafeStr, Statement, TypeInfo};

use super::{Backend, Conn, check_identifier, classify, mysql, on_conn, postgres, sqlite};
use crate::error::{Error, ErrorKind, Result};

/// How a column's values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int16,
    Int32,
    Int64,
    UInt64,
    Float32,
    Float64,
    Bool,
    Text,
    Bytes,
    /// A timestamp with a time zone (UTC).
    TimeTz,
    /// A timestamp without one, taken to be UTC.
    Time,
    /// SQLite: whatever the value's own storage class is.
    Dynamic,
}

impl Kind {
    /// The kind's name in SQL, for messages.
    pub(crate) fn sql_name(self) -> &'static str {
        match self {
            Kind::Int16 => "smallint",
            Kind::Int32 => "integer",
            Kind::Int64 => "bigint",
            Kind::UInt64 => "bigint unsigned",
            Kind::Float32 => "real",
            Kind::Float64 => "double precision",
            Kind::Bool => "boolean",
            Kind::Text => "text",
            Kind::Bytes => "bytes",
            Kind::TimeTz => "timestamp with time zone",
            Kind::Time => "timestamp",
            Kind::Dynamic => "any value",
        }
    }
}

/// A column of a task table.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub name: String,
    pub kind: Kind,
}

/// A task table and its columns, in the database's order.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
}

impl Table {
    fn column_list(&self, backend: Backend) -> String {
        quoted_list(backend, self.columns.iter().map(|c| c.name.as_str()))
    }
}

/// `names`, each quoted for `backend`, separated by commas.
pub(crate) fn quoted_list<'a>(backend: Backend, names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| backend.quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value converted for its target column, as every backend gets it: PostgreSQL through
/// binary `COPY`, SQLite and MySQL/MariaDB as a bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound<'a> {
    Null,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
    Time(NaiveDateTime),
}

impl Bound<'_> {
    /// About how many bytes the value adds to a statement.
    pub(crate) fn size(&self) -> usize {
        match self {
            Bound::Text(s) => s.len() + 8,
            Bound::Bytes(b) => b.len() + 8,
            _ => 8,
        }
    }

    /// The value, owning its text: a batch outlives the line it was read from.
    pub(crate) fn into_owned(self) -> Bound<'static> {
        match self {
            Bound::Null => Bound::Null,
            Bound::I64(v) => Bound::I64(v),
            Bound::U64(v) => Bound::U64(v),
            Bound::F64(v) => Bound::F64(v),
            Bound::Bool(v) => Bound::Bool(v),
            Bound::Text(v) => Bound::Text(Cow::Owned(v.into_owned())),
            Bound::Bytes(v) => Bound::Bytes(v),
            Bound::Time(v) => Bound::Time(v),
        }
    }
}

/// Where a backup's rows go: one JSON array per row, appended by `encode` (the backup file's
/// writer).
pub(crate) trait Sink {
    /// Writes one row; if `encode` fails, nothing of the row is kept.
    fn row(&mut self, encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()>;
}

/// Takes one row's values, each converted for its column, and says whether the batch is full.
pub(crate) type TakeRow<'f> =
    dyn FnMut(&mut dyn Iterator<Item = Result<Bound<'_>>>) -> Result<bool> + 'f;

/// A table's rows on their way in, handed over by the backup side in batches.
pub(crate) trait Rows {
    /// The table.
    fn table(&self) -> &str;
    /// The columns the rows' values go to, in their order, and the kind each one takes.
    fn columns(&self) -> (&[String], &[Kind]);
    /// How many rows were handed over so far.
    fn count(&self) -> u64;
    /// Hands rows over, each value converted for its column, to `each` until it says the
    /// batch is full (`true`) or the table's rows end; returns whether they ended.
    fn batch(&mut self, each: &mut TakeRow<'_>) -> Result<bool>;
}

/// Batches: a MiB of `COPY` data, or an `INSERT` of at most so many rows, values and bytes.
pub(crate) const BATCH_ROWS: usize = 1000;
const BATCH_PARAMS: usize = 30_000;
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// Appends values to a row line as JSON.
pub(crate) struct Line<'a>(pub &'a mut Vec<u8>);

impl Line<'_> {
    pub(crate) fn start(&mut self, i: usize) {
        self.0.push(if i == 0 { b'[' } else { b',' });
    }
    pub(crate) fn end(self) {
        self.0.push(b']');
    }
    pub(crate) fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut *self.0, v)
            .map_err(|e| Error::internal(format!("a value could not be written: {e}")))
    }
    pub(crate) fn float(&mut self, v: f64, table: &str) -> Result<()> {
        if !v.is_finite() {
            return Err(Error::config(format!(
                "table {table} holds a float that is not finite ({v}), which a backup cannot carry"
            )));
        }
        self.json(&v)
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> Result<()> {
        self.json(&serde_json::json!({ "$b64": BASE64.encode(v) }))
    }
    pub(crate) fn time(&mut self, v: DateTime<Utc>) -> Result<()> {
        // The way sqlx writes a timestamp into SQLite text, so a round trip keeps it exact.
        self.json(&v.to_rfc3339_opts(SecondsFormat::AutoSi, false))
    }
}

impl Conn {
    /// The task's tables (`names`) with their columns, described by the database itself.
    pub(crate) async fn describe(&mut self, names: Vec<String>) -> Result<Vec<Table>> {
        let backend = self.backend();
        let mut tables = Vec::new();
        for name in names {
            let columns: Vec<(String, String, Option<Kind>)> = match self {
                Conn::MySql(c) => mysql::columns(c, &name).await?,
                _ => {
                    let sql = format!("SELECT * FROM {}", backend.quote(&name));
                    on_conn!(self, c => {
                        let stmt = c.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
                        stmt.columns().iter().map(|col| {
                            let type_name = col.type_info().name().to_string();
                            let kind = match backend {
                                Backend::Postgres => postgres::kind_of(&type_name),
                                _ => Some(sqlite::kind_of(&type_name)),
                            };
                            (col.name().to_string(), type_name, kind)
                        }).collect()
                    })
                }
            };
            let columns = columns
                .into_iter()
                .map(|(column, type_name, kind)| {
                    check_identifier(&column)?;
                    let kind = kind.ok_or_else(|| {
                        Error::config(format!(
                            "column {name}.{column} has type {type_name}, which backups do not support"
                        ))
                        .hint("backups carry integers, floats, booleans, text, bytes and timestamps")
                    })?;
                    Ok(ColumnInfo { name: column, kind })
                })
                .collect::<Result<_>>()?;
            tables.push(Table { name, columns });
        }
        Ok(tables)
    }

    /// Streams every row of `table` into `out`, inside the snapshot begun before.
    pub(crate) async fn dump_rows(&mut self, table: &Table, out: &mut dyn Sink) -> Result<()> {
        let backend = self.backend();
        let kinds: Vec<Kind> = table.columns.iter().map(|c| c.kind).collect();
        let sql = format!(
            "SELECT {} FROM {}",
            table.column_list(backend),
            backend.quote(&table.name)
        );
        macro_rules! stream {
            ($c:expr, $encode:path) => {{
                let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *$c);
                while let Some(row) = rows.try_next().await? {
                    out.row(&mut |line| $encode(&row, &kinds, &table.name, Line(line)))?;
                }
            }};
        }
        match self {
            Conn::Sqlite(c) => stream!(c, sqlite::encode_row),
            Conn::Postgres(c) => {
                let columns = table.column_list(backend);
                postgres::copy_out(c, &table.name, &columns, &kinds, out).await?
            }
            Conn::MySql(c) => stream!(c, mysql::encode_row),
        }
        Ok(())
    }

    /// Before a load: drops what the database would otherwise maintain row by row and can
    /// rebuild faster at the end (PostgreSQL's indexes and unique constraints, as pg_restore
    /// does), and returns what [`Conn::after_load`] re-creates. Inside the restore's
    /// transaction, so a failed or killed restore leaves them as they were.
    pub(crate) async fn before_load(&mut self, tables: &[Table]) -> Result<Vec<(String, String)>> {
        match self {
            Conn::Postgres(c) => postgres::detach_indexes(c, tables).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Loads one table's rows.
    pub(crate) async fn load(&mut self, rows: &mut dyn Rows) -> Result<()> {
        match self {
            Conn::Postgres(c) => postgres::copy_in(c, rows).await,
            _ => self.insert_rows(rows).await,
        }
    }

    /// After a load: re-creates what [`Conn::before_load`] dropped (a duplicate key shows
    /// here, where the unique indexes come back), moves sequences past the restored keys, and
    /// refuses restored keys that leave no room for another row.
    pub(crate) async fn after_load(
        &mut self,
        rebuild: Vec<(String, String)>,
        tables: &[Table],
    ) -> Result<()> {
        if let Conn::Postgres(c) = self {
            for (table, sql) in rebuild {
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                    .map_err(|e| classify::refused_rows(e, &table, None))?;
            }
            for t in tables {
                postgres::reset_sequences(c, &t.name).await?;
            }
        }
        for t in tables {
            if let Some(column) = self.exhausted_key(&t.name).await? {
                return Err(Error::invalid_input(format!(
                    "the backup's table {} holds the largest key its column {column} can take: \
                     no row could be added after the restore; nothing was changed",
                    t.name
                ))
                .hint("correct the keys where the backup was taken: they need not be that large"));
            }
        }
        Ok(())
    }

    /// The column of `table` whose generated keys the restored rows used up, if any: the next
    /// row inserted would fail ("database or disk is full" on SQLite, "reached maximum value"
    /// on PostgreSQL, "out of range" on MySQL/MariaDB).
    async fn exhausted_key(&mut self, table: &str) -> Result<Option<String>> {
        match self {
            Conn::Sqlite(c) => sqlite::exhausted_key(c, table).await,
            Conn::Postgres(c) => postgres::exhausted_key(c, table).await,
            Conn::MySql(c) => mysql::exhausted_key(c, table).await,
        }
    }

    /// SQLite and MySQL/MariaDB: multi-row `INSERT`s.
    async fn insert_rows(&mut self, rows: &mut dyn Rows) -> Result<()> {
        let mut batch: Vec<Bound<'static>> = Vec::new();
        let width = rows.columns().1.len().max(1);
        loop {
            let first = rows.count() + 1;
            let mut bytes = 0;
            let ended = rows.batch(&mut |values| {
                for v in values {
                    let b = v?.into_owned();
                    bytes += b.size();
                    batch.push(b);
                }
                let rows = batch.len() / width;
                Ok(rows >= BATCH_ROWS || batch.len() >= BATCH_PARAMS || bytes >= BATCH_BYTES)
            })?;
            if !batch.is_empty() {
                if let Err(e) = self.insert_batch(&*rows, &batch).await {
                    return Err(self.which_row(&*rows, &batch, first, e).await);
                }
                batch.clear();
            }
            if ended {
                return Ok(());
            }
        }
    }

    /// The error for a batch (its first row numbered `first`) that the database refused as a
    /// whole: the rows are tried again one by one, to name the row it refuses. The statement
    /// that failed changed nothing, and the transaction is rolled back anyway.
    async fn which_row(
        &mut self,
        rows: &dyn Rows,
        batch: &[Bound<'static>],
        first: u64,
        e: sqlx::Error,
    ) -> Error {
        let width = rows.columns().1.len().max(1);
        let refused = Error::from(e);
        if matches!(
            refused.kind(),
            ErrorKind::InvalidInput | ErrorKind::Conflict
        ) {
            for (row, values) in (first..).zip(batch.chunks(width)) {
                if let Err(e) = self.insert_batch(rows, values).await {
                    return classify::refused_rows(e, rows.table(), Some(row));
                }
            }
        }
        refused
    }

    async fn insert_batch(
        &mut self,
        rows: &dyn Rows,
        batch: &[Bound<'static>],
    ) -> std::result::Result<(), sqlx::Error> {
        let backend = self.backend();
        let (names, kinds) = rows.columns();
        let width = kinds.len().max(1);
        let one = format!("({})", vec!["?"; kinds.len()].join(", "));
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            backend.quote(rows.table()),
            quoted_list(backend, names.iter().map(String::as_str)),
            vec![one.as_str(); batch.len() / width].join(", ")
        );
        macro_rules! run {
            ($c:expr, $args:ty) => {{
                let mut args = <$args>::default();
                for b in batch {
                    args.bind(b).map_err(sqlx::Error::Encode)?;
                }
                sqlx::query_with(AssertSqlSafe(sql), args)
                    .execute(&mut *$c)
                    .await?;
            }};
        }
        match self {
            Conn::Sqlite(c) => run!(c, SqliteArguments),
            Conn::MySql(c) => run!(c, MySqlArguments),
            Conn::Postgres(_) => {
                return Err(sqlx::Error::Protocol(
                    "PostgreSQL loads through COPY".into(),
                ));
            }
        }
        Ok(())
    }
}

/// SQLite's and MySQL's arguments, which encode every [`Bound`] alike but one: SQLite has no
/// unsigned 64-bit integer (no SQLite column's kind takes one: the backup side's conversion
/// refuses it there), so one would go as its digits, never rounded.
trait Bind {
    fn bind(&mut self, b: &Bound) -> std::result::Result<(), sqlx::error::BoxDynError>;
}

macro_rules! impl_bind {
    ($args:ty, $u64:expr) => {
        impl Bind for $args {
            fn bind(&mut self, b: &Bound) -> std::result::Result<(), sqlx::error::BoxDynError> {
                match b {
                    Bound::Null => self.add(None::<String>),
                    Bound::I64(v) => self.add(*v),
                    Bound::U64(v) => self.add($u64(*v)),
                    Bound::F64(v) => self.add(*v),
                    Bound::Bool(v) => self.add(*v),
                    Bound::Text(v) => self.add(v.as_ref()),
                    Bound::Bytes(v) => self.add(v.as_slice()),
                    Bound::Time(v) => self.add(*v),
                }
            }
        }
    };
}
impl_bind!(SqliteArguments, |v: u64| v.to_string());
impl_bind!(MySqlArguments, |v: u64| v);
