//! The database side of backup and restore: read the task's tables in one consistent snapshot,
//! row by row, as portable values; put rows back in one transaction.
//!
//! Values cross backends through the backup file's JSON types, decoded by the source column's
//! type and encoded for the target column's type. Rows stream both ways, so memory stays flat
//! whatever the table's size: PostgreSQL gets them through `COPY … FROM STDIN`, SQLite and
//! MySQL/MariaDB through multi-row `INSERT`s.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::postgres::PgRow;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments, AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef,
};

use super::{Backend, Conn, on_conn, schema};
use crate::backup::file::{Item, Reader, TableInfo, Writer};
use crate::error::{Error, Result};

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
    fn of(backend: Backend, type_name: &str) -> Option<Kind> {
        let t = type_name.to_ascii_uppercase();
        Some(match backend {
            Backend::Sqlite => Kind::Dynamic,
            Backend::Postgres => match t.as_str() {
                "INT2" => Kind::Int16,
                "INT4" => Kind::Int32,
                "INT8" => Kind::Int64,
                "FLOAT4" => Kind::Float32,
                "FLOAT8" => Kind::Float64,
                "BOOL" => Kind::Bool,
                "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => Kind::Text,
                "BYTEA" => Kind::Bytes,
                "TIMESTAMPTZ" => Kind::TimeTz,
                "TIMESTAMP" => Kind::Time,
                _ => return None,
            },
            // Described from information_schema instead: see `of_mysql`.
            Backend::MySql => return None,
        })
    }
}

impl Kind {
    /// MySQL/MariaDB, from `information_schema.columns`' `data_type` and `column_type` (the
    /// protocol's column flags call a `utf8mb4_bin` text column binary).
    fn of_mysql(data_type: &str, column_type: &str) -> Option<Kind> {
        let column_type = column_type.to_ascii_lowercase();
        Some(match data_type.to_ascii_lowercase().as_str() {
            "tinyint" if column_type.starts_with("tinyint(1)") => Kind::Bool,
            "tinyint" | "smallint" | "int" | "mediumint" | "bigint" => {
                if column_type.contains("unsigned") {
                    Kind::UInt64
                } else {
                    Kind::Int64
                }
            }
            "float" => Kind::Float32,
            "double" => Kind::Float64,
            "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" | "enum" => {
                Kind::Text
            }
            "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => Kind::Bytes,
            "datetime" => Kind::Time,
            "timestamp" => Kind::TimeTz,
            _ => return None,
        })
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
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        quoted_list(backend, &names)
    }
}

fn quote(backend: Backend, name: &str) -> String {
    match backend {
        Backend::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

fn quoted_list(backend: Backend, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote(backend, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The task's tables with their columns, described by the database itself.
pub(crate) async fn tables(conn: &mut Conn) -> Result<Vec<Table>> {
    let backend = conn.backend();
    let mut tables = Vec::new();
    for name in schema::task_tables(conn).await? {
        let columns: Vec<(String, String, Option<Kind>)> = match conn {
            Conn::MySql(c) => {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR) \
                     FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
                )
                .bind(&name)
                .fetch_all(&mut *c)
                .await?;
                rows.into_iter()
                    .map(|(column, data_type, column_type)| {
                        let kind = Kind::of_mysql(&data_type, &column_type);
                        (column, column_type, kind)
                    })
                    .collect()
            }
            _ => {
                let sql = format!("SELECT * FROM {}", quote(backend, &name));
                on_conn!(conn, c => {
                    let stmt = c.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
                    stmt.columns().iter().map(|col| {
                        let type_name = col.type_info().name().to_string();
                        let kind = Kind::of(backend, &type_name);
                        (col.name().to_string(), type_name, kind)
                    }).collect()
                })
            }
        };
        let columns = columns
            .into_iter()
            .map(|(column, type_name, kind)| {
                schema::quote_identifier(&column)?;
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

/// A consistent read of the task's tables: one read-only transaction, begun by [`Snapshot::begin`].
pub(crate) struct Snapshot<'c> {
    conn: &'c mut Conn,
    pub tables: Vec<Table>,
    pub infos: Vec<TableInfo>,
    pub schema_version: i64,
}

impl<'c> Snapshot<'c> {
    /// Begins the snapshot (REPEATABLE READ on PostgreSQL, a consistent-snapshot transaction on
    /// MySQL/MariaDB, a read transaction on SQLite) and reads the tables, their columns, their
    /// row counts and the schema version inside it.
    pub(crate) async fn begin(conn: &'c mut Conn) -> Result<Snapshot<'c>> {
        match conn.backend() {
            Backend::Sqlite => conn.exec("BEGIN".into()).await?,
            Backend::Postgres => {
                conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into())
                    .await?
            }
            Backend::MySql => {
                conn.exec(super::dialect::MYSQL_SESSION.into()).await?;
                conn.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ".into())
                    .await?;
                conn.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY".into())
                    .await?;
            }
        }
        match Self::read_catalog(conn).await {
            Ok((tables, infos, schema_version)) => Ok(Snapshot {
                conn,
                tables,
                infos,
                schema_version,
            }),
            Err(e) => {
                let _ = conn.exec("ROLLBACK".into()).await;
                Err(e)
            }
        }
    }

    async fn read_catalog(conn: &mut Conn) -> Result<(Vec<Table>, Vec<TableInfo>, i64)> {
        let schema_version = conn
            .scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .await?;
        let tables = tables(conn).await?;
        let mut infos = Vec::with_capacity(tables.len());
        for t in &tables {
            let sql = format!("SELECT COUNT(*) FROM {}", quote(conn.backend(), &t.name));
            let rows: i64 = on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut *c).await)?;
            infos.push(TableInfo {
                name: t.name.clone(),
                columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                rows: u64::try_from(rows).unwrap_or(0),
            });
        }
        Ok((tables, infos, schema_version))
    }

    /// Streams every row into `out`, table by table, then ends the transaction.
    pub(crate) async fn write_rows(self, out: &mut Writer) -> Result<()> {
        let Snapshot { conn, tables, .. } = self;
        let result = stream_tables(conn, &tables, out).await;
        let ended = conn.exec("ROLLBACK".into()).await;
        result.and(ended)
    }
}

async fn stream_tables(conn: &mut Conn, tables: &[Table], out: &mut Writer) -> Result<()> {
    let backend = conn.backend();
    let mut line = Vec::with_capacity(1024);
    for table in tables {
        out.table(&table.name)?;
        let sql = format!(
            "SELECT {} FROM {}",
            table.column_list(backend),
            quote(backend, &table.name)
        );
        let kinds: Vec<Kind> = table.columns.iter().map(|c| c.kind).collect();
        macro_rules! stream {
            ($c:expr, $encode:ident) => {{
                let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *$c);
                while let Some(row) = rows.try_next().await? {
                    line.clear();
                    $encode(&row, &kinds, &table.name, &mut line)?;
                    out.row(&line)?;
                }
            }};
        }
        match conn {
            Conn::Sqlite(c) => stream!(c, encode_sqlite),
            Conn::Postgres(c) => stream!(c, encode_pg),
            Conn::MySql(c) => stream!(c, encode_mysql),
        }
    }
    Ok(())
}

/// Appends values to a row line as JSON.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    fn start(&mut self, i: usize) {
        self.0.push(if i == 0 { b'[' } else { b',' });
    }
    fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        serde_json::to_writer(&mut *self.0, v)
            .map_err(|e| Error::internal(format!("a value could not be written: {e}")))
    }
    fn float(&mut self, v: f64, table: &str) -> Result<()> {
        if !v.is_finite() {
            return Err(Error::config(format!(
                "table {table} holds a float that is not finite ({v}), which a backup cannot carry"
            )));
        }
        self.json(&v)
    }
    fn bytes(&mut self, v: &[u8]) -> Result<()> {
        self.json(&serde_json::json!({ "$b64": BASE64.encode(v) }))
    }
    fn time(&mut self, v: DateTime<Utc>) -> Result<()> {
        // The way sqlx writes a timestamp into SQLite text, so a round trip keeps it exact.
        self.json(&v.to_rfc3339_opts(SecondsFormat::AutoSi, false))
    }
}

fn encode_sqlite(row: &SqliteRow, kinds: &[Kind], table: &str, buf: &mut Vec<u8>) -> Result<()> {
    let mut line = Line(buf);
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
    line.0.push(b']');
    Ok(())
}

/// Encodes a row of a server backend, whose columns have fixed types.
macro_rules! encode_typed {
    ($name:ident, $row:ty, $unsigned:ty) => {
        fn $name(row: &$row, kinds: &[Kind], table: &str, buf: &mut Vec<u8>) -> Result<()> {
            let mut line = Line(buf);
            for (i, kind) in kinds.iter().enumerate() {
                line.start(i);
                match kind {
                    Kind::Int16 => line.json(&row.try_get::<Option<i16>, _>(i)?)?,
                    Kind::Int32 => line.json(&row.try_get::<Option<i32>, _>(i)?)?,
                    Kind::Int64 => line.json(&row.try_get::<Option<i64>, _>(i)?)?,
                    Kind::UInt64 => line.json(&row.try_get::<Option<$unsigned>, _>(i)?)?,
                    Kind::Bool => line.json(&row.try_get::<Option<bool>, _>(i)?)?,
                    Kind::Text | Kind::Dynamic => line.json(&row.try_get::<Option<&str>, _>(i)?)?,
                    Kind::Float32 => match row.try_get::<Option<f32>, _>(i)? {
                        Some(v) => line.float(f64::from(v), table)?,
                        None => line.json(&())?,
                    },
                    Kind::Float64 => match row.try_get::<Option<f64>, _>(i)? {
                        Some(v) => line.float(v, table)?,
                        None => line.json(&())?,
                    },
                    Kind::Bytes => match row.try_get::<Option<Vec<u8>>, _>(i)? {
                        Some(v) => line.bytes(&v)?,
                        None => line.json(&())?,
                    },
                    Kind::TimeTz => match row.try_get::<Option<DateTime<Utc>>, _>(i)? {
                        Some(v) => line.time(v)?,
                        None => line.json(&())?,
                    },
                    Kind::Time => match row.try_get::<Option<NaiveDateTime>, _>(i)? {
                        Some(v) => line.time(v.and_utc())?,
                        None => line.json(&())?,
                    },
                }
            }
            line.0.push(b']');
            Ok(())
        }
    };
}
// PostgreSQL has no unsigned integers: its columns never map to `Kind::UInt64`.
encode_typed!(encode_pg, PgRow, i64);
encode_typed!(encode_mysql, MySqlRow, u64);

/// What was restored into one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The table.
    pub table: String,
    /// The rows put back.
    pub rows: u64,
}

/// Checks, before anything is touched, that every table and column of the backup has a place
/// in the target's schema (a backup of an older schema version fits when the newer schema only
/// added tables and columns; those take their defaults).
pub(crate) fn check_fits(infos: &[TableInfo], targets: &[Table]) -> Result<()> {
    for info in infos {
        let Some(target) = targets.iter().find(|t| t.name == info.name) else {
            return Err(Error::invalid_input(format!(
                "the backup holds table {}, which this schema does not have; nothing was changed",
                info.name
            ))
            .hint("restore it with the version of this executable that took it"));
        };
        for column in &info.columns {
            schema::quote_identifier(column)?;
            if !target.columns.iter().any(|c| &c.name == column) {
                return Err(Error::invalid_input(format!(
                    "the backup holds column {}.{column}, which this schema does not have; nothing was changed",
                    info.name
                ))
                .hint("restore it with the version of this executable that took it"));
            }
        }
    }
    Ok(())
}

/// Replaces the rows of every task table with the backup's, in one transaction: all or
/// nothing. The caller has verified the file and checked that it fits ([`check_fits`]).
pub(crate) async fn restore(conn: &mut Conn, reader: &mut Reader) -> Result<Vec<Restored>> {
    let backend = conn.backend();
    match backend {
        Backend::Sqlite => conn.exec("BEGIN IMMEDIATE".into()).await?,
        Backend::Postgres => conn.exec("SET TIME ZONE 'UTC'; BEGIN".into()).await?,
        Backend::MySql => {
            conn.exec(super::dialect::MYSQL_SESSION.into()).await?;
            conn.exec("START TRANSACTION".into()).await?;
        }
    }
    let result = replace(conn, reader).await;
    match result {
        Ok(restored) => {
            conn.exec("COMMIT".into()).await?;
            Ok(restored)
        }
        Err(e) => {
            let _ = conn.exec("ROLLBACK".into()).await;
            Err(e)
        }
    }
}

async fn replace(conn: &mut Conn, reader: &mut Reader) -> Result<Vec<Restored>> {
    let backend = conn.backend();
    let targets = tables(conn).await?;
    check_fits(&reader.header().tables, &targets)?;
    if backend == Backend::Postgres {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        if !names.is_empty() {
            conn.exec(format!("TRUNCATE {}", quoted_list(backend, &names)))
                .await?;
        }
    } else {
        for t in &targets {
            conn.exec(format!("DELETE FROM {}", quote(backend, &t.name)))
                .await?;
        }
    }
    if let Conn::Postgres(c) = conn {
        let restored = load_pg(c, reader, &targets).await?;
        for t in &targets {
            reset_sequences(conn, &t.name).await?;
        }
        return Ok(restored);
    }
    let mut restored = Vec::new();
    let mut loader: Option<Loader> = None;
    loop {
        match reader.next_item()? {
            Item::Table(name) => {
                if let Some(l) = loader.take() {
                    restored.push(l.finish(conn).await?);
                }
                let info = reader
                    .header()
                    .tables
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| Error::internal("a verified table vanished"))?;
                let target = targets
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| Error::internal("a checked table vanished"))?;
                loader = Some(Loader::new(backend, target, &info.columns));
            }
            Item::Row(line) => {
                let l = loader
                    .as_mut()
                    .ok_or_else(|| Error::internal("a row outside a table"))?;
                let values: Vec<Value> = serde_json::from_slice(line).map_err(|e| {
                    Error::invalid_input(format!("a row of table {} does not parse: {e}", l.table))
                })?;
                l.push(values)?;
                if l.full() {
                    l.flush(conn).await?;
                }
            }
            Item::End => break,
        }
    }
    if let Some(l) = loader.take() {
        restored.push(l.finish(conn).await?);
    }
    Ok(restored)
}

/// PostgreSQL: one `COPY … FROM STDIN` per table, fed a MiB at a time without waiting, so that
/// the server stores one batch while the next is parsed.
async fn load_pg(
    c: &mut sqlx::PgConnection,
    reader: &mut Reader,
    targets: &[Table],
) -> Result<Vec<Restored>> {
    let mut restored = Vec::new();
    let mut next = match reader.next_item()? {
        Item::Table(name) => Some(name),
        Item::End => None,
        Item::Row(_) => return Err(Error::internal("a row outside a table")),
    };
    while let Some(name) = next.take() {
        let columns = reader
            .header()
            .tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.columns.clone())
            .ok_or_else(|| Error::internal("a verified table vanished"))?;
        let target = targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::internal("a checked table vanished"))?;
        let mut loader = Loader::new(Backend::Postgres, target, &columns);
        let sql = format!(
            "COPY {} ({}) FROM STDIN",
            quote(Backend::Postgres, &name),
            loader.columns
        );
        let mut copy = c.copy_in_raw(&sql).await?;
        match feed(&mut copy, reader, &mut loader).await {
            Ok(following) => {
                copy.finish().await?;
                next = following;
            }
            Err(e) => {
                let _ = copy.abort("the restore failed").await;
                return Err(e);
            }
        }
        restored.push(Restored {
            table: loader.table,
            rows: loader.rows,
        });
    }
    Ok(restored)
}

/// Sends one table's rows into `copy`; returns the next table's name, if any.
async fn feed(
    copy: &mut sqlx::postgres::PgCopyIn<&mut sqlx::PgConnection>,
    reader: &mut Reader,
    loader: &mut Loader,
) -> Result<Option<String>> {
    let following = loop {
        match reader.next_item()? {
            Item::Row(line) => {
                let values: Vec<Value> = serde_json::from_slice(line).map_err(|e| {
                    Error::invalid_input(format!(
                        "a row of table {} does not parse: {e}",
                        loader.table
                    ))
                })?;
                loader.push(values)?;
                if loader.copy.len() >= BATCH_BYTES {
                    copy.send(std::mem::take(&mut loader.copy)).await?;
                }
            }
            Item::Table(name) => break Some(name),
            Item::End => break None,
        }
    };
    if !loader.copy.is_empty() {
        copy.send(std::mem::take(&mut loader.copy)).await?;
    }
    Ok(following)
}

/// Rows of one table on their way into the database, in batches.
struct Loader {
    backend: Backend,
    table: String,
    columns: String,
    kinds: Vec<Kind>,
    rows: u64,
    /// Rows waiting: COPY text on PostgreSQL, JSON values elsewhere.
    copy: Vec<u8>,
    pending: Vec<Vec<Value>>,
    pending_bytes: usize,
}

const BATCH_ROWS: usize = 1000;
const BATCH_PARAMS: usize = 30_000;
const BATCH_BYTES: usize = 1 << 20;

impl Loader {
    fn new(backend: Backend, target: &Table, columns: &[String]) -> Loader {
        let kinds = columns
            .iter()
            .map(|name| {
                target
                    .columns
                    .iter()
                    .find(|c| &c.name == name)
                    .map_or(Kind::Dynamic, |c| c.kind)
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        Loader {
            backend,
            table: target.name.clone(),
            columns: quoted_list(backend, &names),
            kinds,
            rows: 0,
            copy: Vec::with_capacity(BATCH_BYTES + 4096),
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    fn push(&mut self, values: Vec<Value>) -> Result<()> {
        if values.len() != self.kinds.len() {
            return Err(Error::invalid_input(format!(
                "a row of table {} has {} values for {} columns",
                self.table,
                values.len(),
                self.kinds.len()
            )));
        }
        self.rows += 1;
        if self.backend == Backend::Postgres {
            for (i, (v, kind)) in values.iter().zip(&self.kinds).enumerate() {
                if i > 0 {
                    self.copy.push(b'\t');
                }
                copy_field(&mut self.copy, v, *kind, &self.table)?;
            }
            self.copy.push(b'\n');
        } else {
            self.pending_bytes += values.iter().map(approx_size).sum::<usize>();
            self.pending.push(values);
        }
        Ok(())
    }

    fn full(&self) -> bool {
        self.copy.len() >= BATCH_BYTES
            || self.pending_bytes >= BATCH_BYTES
            || self.pending.len() >= BATCH_ROWS
            || self.pending.len() * self.kinds.len() >= BATCH_PARAMS
    }

    async fn flush(&mut self, conn: &mut Conn) -> Result<()> {
        match conn {
            // PostgreSQL's rows go through `load_pg`'s one COPY per table.
            Conn::Postgres(_) => {}
            Conn::Sqlite(c) => {
                if self.pending.is_empty() {
                    return Ok(());
                }
                let sql = self.insert_sql();
                let mut args = SqliteArguments::default();
                for row in self.pending.drain(..) {
                    for (v, kind) in row.into_iter().zip(&self.kinds) {
                        bind_sqlite(&mut args, bound(v, *kind, &self.table)?)?;
                    }
                }
                sqlx::query_with(AssertSqlSafe(sql), args)
                    .execute(&mut *c)
                    .await?;
            }
            Conn::MySql(c) => {
                if self.pending.is_empty() {
                    return Ok(());
                }
                let sql = self.insert_sql();
                let mut args = MySqlArguments::default();
                for row in self.pending.drain(..) {
                    for (v, kind) in row.into_iter().zip(&self.kinds) {
                        bind_mysql(&mut args, bound(v, *kind, &self.table)?)?;
                    }
                }
                sqlx::query_with(AssertSqlSafe(sql), args)
                    .execute(&mut *c)
                    .await?;
            }
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn insert_sql(&self) -> String {
        let one = format!("({})", vec!["?"; self.kinds.len()].join(", "));
        let values = vec![one.as_str(); self.pending.len().max(1)].join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES {values}",
            quote(self.backend, &self.table),
            self.columns
        )
    }

    async fn finish(mut self, conn: &mut Conn) -> Result<Restored> {
        self.flush(conn).await?;
        Ok(Restored {
            table: self.table,
            rows: self.rows,
        })
    }
}

fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 8,
        Value::Object(_) | Value::Array(_) => 64,
        _ => 8,
    }
}

/// A JSON value of a backup as a value to bind, for the target column's kind.
enum Bound {
    Null,
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Time(NaiveDateTime),
}

fn bound(v: Value, kind: Kind, table: &str) -> Result<Bound> {
    Ok(match v {
        Value::Null => Bound::Null,
        Value::Bool(b) => Bound::Bool(b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Bound::I64(i),
            (None, Some(u), _) => Bound::U64(u),
            (_, _, Some(f)) => Bound::F64(f),
            _ => return Err(bad_value(table, "a number out of range")),
        },
        Value::String(s) if matches!(kind, Kind::Time | Kind::TimeTz) => Bound::Time(
            parse_time(&s).ok_or_else(|| bad_value(table, "a timestamp that does not parse"))?,
        ),
        Value::String(s) => Bound::Text(s),
        Value::Object(o) => match o.get("$b64").and_then(Value::as_str) {
            Some(b64) => Bound::Bytes(
                BASE64
                    .decode(b64)
                    .map_err(|_| bad_value(table, "bytes that are not base64"))?,
            ),
            None => return Err(bad_value(table, "an object that is not bytes")),
        },
        Value::Array(_) => return Err(bad_value(table, "a nested array")),
    })
}

fn bad_value(table: &str, what: &str) -> Error {
    Error::invalid_input(format!(
        "a row of table {table} holds {what}; nothing was changed"
    ))
    .hint("the backup was not written by this program, or by a newer one")
}

/// A timestamp as backups carry it (RFC 3339), or as SQLite may hold one (`YYYY-MM-DD
/// HH:MM:SS[.f]`, taken to be UTC).
fn parse_time(s: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

fn bind_sqlite(args: &mut SqliteArguments, b: Bound) -> Result<()> {
    match b {
        Bound::Null => args.add(None::<String>),
        Bound::I64(v) => args.add(v),
        Bound::U64(v) => args.add(v as f64),
        Bound::F64(v) => args.add(v),
        Bound::Bool(v) => args.add(v),
        Bound::Text(v) => args.add(v),
        Bound::Bytes(v) => args.add(v),
        Bound::Time(v) => args.add(v.and_utc()),
    }
    .map_err(|e| Error::internal(format!("a value could not be bound: {e}")))
}

fn bind_mysql(args: &mut MySqlArguments, b: Bound) -> Result<()> {
    match b {
        Bound::Null => args.add(None::<String>),
        Bound::I64(v) => args.add(v),
        Bound::U64(v) => args.add(v),
        Bound::F64(v) => args.add(v),
        Bound::Bool(v) => args.add(v),
        Bound::Text(v) => args.add(v),
        Bound::Bytes(v) => args.add(v),
        Bound::Time(v) => args.add(v),
    }
    .map_err(|e| Error::internal(format!("a value could not be bound: {e}")))
}

/// Appends one value in `COPY`'s text format.
fn copy_field(out: &mut Vec<u8>, v: &Value, kind: Kind, table: &str) -> Result<()> {
    match v {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.extend_from_slice(match (b, kind) {
            (true, Kind::Int16 | Kind::Int32 | Kind::Int64) => b"1",
            (false, Kind::Int16 | Kind::Int32 | Kind::Int64) => b"0",
            (true, _) => b"t",
            (false, _) => b"f",
        }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => {
            for &byte in s.as_bytes() {
                match byte {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    _ => out.push(byte),
                }
            }
        }
        Value::Object(_) => {
            let Bound::Bytes(bytes) = bound(v.clone(), kind, table)? else {
                return Err(bad_value(table, "an object that is not bytes"));
            };
            out.extend_from_slice(b"\\\\x");
            for b in bytes {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
        }
        Value::Array(_) => return Err(bad_value(table, "a nested array")),
    }
    Ok(())
}

/// Moves PostgreSQL's sequences past the restored keys, so that later inserts do not collide
/// (never backwards: a key handed out before stays handed out). SQLite and MySQL/MariaDB move
/// their counters past explicitly inserted keys by themselves.
async fn reset_sequences(conn: &mut Conn, table: &str) -> Result<()> {
    let Conn::Postgres(c) = conn else {
        return Ok(());
    };
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .bind(table)
    .fetch_all(&mut *c)
    .await?;
    for column in columns {
        schema::quote_identifier(&column)?;
        let sql = format!(
            "SELECT setval(s.seq, GREATEST(m.top, COALESCE(pg_sequence_last_value(s.seq), 0))) \
             FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS seq) s, \
                  (SELECT MAX(\"{column}\") AS top FROM \"{table}\") m \
             WHERE m.top IS NOT NULL AND s.seq IS NOT NULL"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(format!("\"{table}\""))
            .bind(&column)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut out = Vec::new();
        copy_field(
            &mut out,
            &Value::String("a\tb\\c\nd\re".into()),
            Kind::Text,
            "t",
        )
        .unwrap();
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re");
        out.clear();
        copy_field(&mut out, &Value::Null, Kind::Text, "t").unwrap();
        assert_eq!(out, b"\\N");
        out.clear();
        copy_field(
            &mut out,
            &serde_json::json!({"$b64": "AQL/"}),
            Kind::Bytes,
            "t",
        )
        .unwrap();
        assert_eq!(out, b"\\\\x0102ff");
    }

    #[test]
    fn timestamps_parse_in_the_forms_backups_and_sqlite_hold() {
        let want =
            NaiveDateTime::parse_from_str("2026-11-23 10:15:00.123456", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        for s in [
            "2026-11-23T10:15:00.123456+00:00",
            "2026-11-23T11:15:00.123456+01:00",
            "2026-11-23T10:15:00.123456Z",
            "2026-11-23 10:15:00.123456",
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn column_types_map_to_kinds_and_unknown_ones_are_refused() {
        assert_eq!(
            Kind::of(Backend::Postgres, "TIMESTAMPTZ"),
            Some(Kind::TimeTz)
        );
        assert_eq!(
            Kind::of_mysql("bigint", "bigint(20) unsigned"),
            Some(Kind::UInt64)
        );
        assert_eq!(Kind::of_mysql("tinyint", "tinyint(1)"), Some(Kind::Bool));
        assert_eq!(Kind::of_mysql("varchar", "varchar(32)"), Some(Kind::Text));
        assert_eq!(Kind::of_mysql("datetime", "datetime(6)"), Some(Kind::Time));
        assert_eq!(Kind::of(Backend::Postgres, "JSONB"), None);
        assert_eq!(Kind::of(Backend::Sqlite, "ANYTHING"), Some(Kind::Dynamic));
    }
}
