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
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::postgres::{PgConnection, PgCopyIn};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Arguments, AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef,
};

use super::field::{self, Bound, Field, Place};
use super::{Backend, Conn, classify, on_conn, schema};
use crate::backup::file::{Item, Reader, TableInfo, Writer};
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

    fn of(backend: Backend, type_name: &str) -> Option<Kind> {
        let t = type_name.to_ascii_uppercase();
        Some(match backend {
            // By the declared type's affinity, as SQLite decides it; restore converts values
            // for it as for the servers' columns. Backups read SQLite's values by their own
            // storage class whatever the column says.
            Backend::Sqlite if t.contains("INT") => Kind::Int64,
            Backend::Sqlite if ["CHAR", "CLOB", "TEXT"].iter().any(|a| t.contains(a)) => Kind::Text,
            Backend::Sqlite if ["REAL", "FLOA", "DOUB"].iter().any(|a| t.contains(a)) => {
                Kind::Float64
            }
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
        quoted_list(backend, self.columns.iter().map(|c| c.name.as_str()))
    }
}

fn quoted_list<'a>(backend: Backend, names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| backend.quote(n))
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
                let sql = format!("SELECT * FROM {}", backend.quote(&name));
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
    tables: Vec<Table>,
    rows: Vec<u64>,
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
            Ok((tables, rows, schema_version)) => Ok(Snapshot {
                conn,
                tables,
                rows,
                schema_version,
            }),
            Err(e) => {
                let _ = conn.exec("ROLLBACK".into()).await;
                Err(e)
            }
        }
    }

    async fn read_catalog(conn: &mut Conn) -> Result<(Vec<Table>, Vec<u64>, i64)> {
        let (_, schema_version) = schema::applied_summary(conn).await?;
        let tables = tables(conn).await?;
        let counts = schema::count_rows(conn, tables.iter().map(|t| t.name.clone())).await?;
        let rows = counts
            .into_iter()
            .map(|(_, n)| u64::try_from(n).unwrap_or(0))
            .collect();
        Ok((tables, rows, schema_version))
    }

    /// The tables as a backup's header lists them: names, columns, row counts.
    pub(crate) fn infos(&self) -> Vec<TableInfo> {
        self.tables
            .iter()
            .zip(&self.rows)
            .map(|(t, rows)| TableInfo {
                name: t.name.clone(),
                columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                rows: *rows,
            })
            .collect()
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
    for table in tables {
        out.table(&table.name)?;
        let sql = format!(
            "SELECT {} FROM {}",
            table.column_list(backend),
            backend.quote(&table.name)
        );
        let kinds: Vec<Kind> = table.columns.iter().map(|c| c.kind).collect();
        macro_rules! stream {
            ($c:expr, $encode:ident) => {{
                let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *$c);
                while let Some(row) = rows.try_next().await? {
                    out.row(|line| $encode(&row, &kinds, &table.name, line))?;
                }
            }};
        }
        match conn {
            Conn::Sqlite(c) => stream!(c, encode_sqlite),
            Conn::Postgres(c) => copy_out(c, table, backend, &kinds, out).await?,
            Conn::MySql(c) => stream!(c, encode_mysql),
        }
    }
    Ok(())
}

/// PostgreSQL: one binary `COPY … TO STDOUT` per table, its rows decoded here from their
/// binary form straight into JSON (no per-row statement machinery), in the same snapshot.
async fn copy_out(
    c: &mut PgConnection,
    table: &Table,
    backend: Backend,
    kinds: &[Kind],
    out: &mut Writer,
) -> Result<()> {
    let sql = format!(
        "COPY {} ({}) TO STDOUT (FORMAT binary)",
        backend.quote(&table.name),
        table.column_list(backend)
    );
    let mut chunks = c.copy_out_raw(&sql).await?;
    let broken = |why: &str| Error::internal(format!("PostgreSQL's COPY of {}: {why}", table.name));
    // Bytes received and not yet used: rows may arrive split across chunks.
    let mut data: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut header = false;
    let mut ended = false;
    while let Some(chunk) = chunks.try_next().await? {
        if ended {
            return Err(broken("data after its end"));
        }
        data.extend_from_slice(&chunk);
        let mut at = 0;
        if !header {
            let Some(len) = copy_header_len(&data).map_err(&broken)? else {
                continue;
            };
            at = len;
            header = true;
        }
        while let Some(tuple) = copy_tuple_len(&data[at..], kinds.len()).map_err(&broken)? {
            if tuple == 2 {
                ended = true;
                at += 2;
                break;
            }
            let row = &data[at..at + tuple];
            out.row(|line| encode_copy_binary(row, kinds, &table.name, line))?;
            at += tuple;
        }
        data.drain(..at);
    }
    if !ended || !data.is_empty() {
        return Err(broken("it ended early"));
    }
    Ok(())
}

/// The length of binary `COPY`'s header once `data` holds all of it.
fn copy_header_len(data: &[u8]) -> std::result::Result<Option<usize>, &'static str> {
    if data.len() < 19 {
        return Ok(None);
    }
    if data[..11] != COPY_BINARY_HEADER[..11] {
        return Err("not binary COPY data");
    }
    let extension = i32::from_be_bytes([data[15], data[16], data[17], data[18]]);
    let len = 19 + usize::try_from(extension).map_err(|_| "a negative header extension")?;
    Ok((data.len() >= len).then_some(len))
}

/// The length of the tuple `data` starts with, once it holds all of it (2 for the trailer).
fn copy_tuple_len(data: &[u8], width: usize) -> std::result::Result<Option<usize>, &'static str> {
    let Some(count) = data.get(..2) else {
        return Ok(None);
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Some(2));
    }
    if usize::try_from(count) != Ok(width) {
        return Err("a row with another number of columns");
    }
    let mut at = 2;
    for _ in 0..width {
        let Some(len) = data.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += usize::try_from(len).unwrap_or(0);
        if data.len() < at {
            return Ok(None);
        }
    }
    Ok(Some(at))
}

/// Encodes one complete binary `COPY` tuple (as [`copy_tuple_len`] measured it) as a row
/// line, exactly as the other backends' rows are encoded.
fn encode_copy_binary(tuple: &[u8], kinds: &[Kind], table: &str, buf: &mut Vec<u8>) -> Result<()> {
    let wrong = |what: &str| Error::internal(format!("PostgreSQL sent {what} for table {table}"));
    let mut line = Line(buf);
    let mut at = 2;
    for (i, kind) in kinds.iter().enumerate() {
        line.start(i);
        let len = i32::from_be_bytes(
            tuple[at..at + 4]
                .try_into()
                .map_err(|_| wrong("a cut row"))?,
        );
        at += 4;
        let Ok(len) = usize::try_from(len) else {
            line.json(&())?;
            continue;
        };
        let v = &tuple[at..at + len];
        at += len;
        macro_rules! number {
            ($t:ty) => {
                <$t>::from_be_bytes(
                    v.try_into()
                        .map_err(|_| wrong("a number of another size"))?,
                )
            };
        }
        match kind {
            Kind::Int16 => line.json(&number!(i16))?,
            Kind::Int32 => line.json(&number!(i32))?,
            Kind::Int64 => line.json(&number!(i64))?,
            Kind::Float32 => line.float(f64::from(number!(f32)), table)?,
            Kind::Float64 => line.float(number!(f64), table)?,
            Kind::Bool => line.json(&(v.first().copied().unwrap_or(0) != 0))?,
            Kind::Text => {
                line.json(std::str::from_utf8(v).map_err(|_| wrong("text that is not UTF-8"))?)?
            }
            Kind::Bytes => line.bytes(v)?,
            Kind::TimeTz | Kind::Time => {
                let time = field::from_pg_micros(number!(i64)).ok_or_else(|| {
                        Error::config(format!(
                            "table {table} holds an infinite or out-of-range timestamp, which a backup cannot carry"
                        ))
                    })?;
                line.time(time)?;
            }
            Kind::UInt64 | Kind::Dynamic => return Err(wrong("a type it has no columns of")),
        }
    }
    line.0.push(b']');
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

/// Encodes a row of MySQL/MariaDB, whose columns have fixed types.
fn encode_mysql(row: &MySqlRow, kinds: &[Kind], table: &str, buf: &mut Vec<u8>) -> Result<()> {
    let mut line = Line(buf);
    for (i, kind) in kinds.iter().enumerate() {
        line.start(i);
        match kind {
            Kind::Int16 => line.json(&row.try_get::<Option<i16>, _>(i)?)?,
            Kind::Int32 => line.json(&row.try_get::<Option<i32>, _>(i)?)?,
            Kind::Int64 => line.json(&row.try_get::<Option<i64>, _>(i)?)?,
            Kind::UInt64 => line.json(&row.try_get::<Option<u64>, _>(i)?)?,
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

/// Replaces the rows of every task table (`targets`, as [`tables`] described them) with the
/// backup's, in one transaction: all or nothing. The caller has verified the file and checked
/// that it fits ([`check_fits`]).
///
/// The transaction first locks the task tables against writers (readers go on), then runs
/// `before` (the safety backup, on a connection of its own), so that what `before` reads is
/// exactly what the restore replaces: nothing can be committed in between. If the restore
/// then fails and is rolled back, what `before` made is handed to `unneeded`: the data it
/// holds is still in the database. (A failed `COMMIT` is not a rollback: its outcome is
/// unknown, so the safety backup stays.)
pub(crate) async fn restore<S>(
    conn: &mut Conn,
    reader: &mut Reader,
    targets: &[Table],
    before: impl AsyncFnOnce() -> Result<S>,
    unneeded: impl FnOnce(S),
) -> Result<(Vec<Restored>, S)> {
    let backend = conn.backend();
    let names = || targets.iter().map(|t| t.name.as_str());
    match backend {
        // The write lock, at once; readers of the WAL go on.
        Backend::Sqlite => conn.exec("BEGIN IMMEDIATE".into()).await?,
        Backend::Postgres => {
            let mut sql = "SET TIME ZONE 'UTC'; BEGIN".to_string();
            if !targets.is_empty() {
                sql.push_str(&format!(
                    "; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                    quoted_list(backend, names())
                ));
            }
            conn.exec(sql).await?;
        }
        Backend::MySql => {
            conn.exec(super::dialect::MYSQL_SESSION.into()).await?;
            conn.exec("START TRANSACTION".into()).await?;
            // Shared next-key locks on every row and gap: writers wait, snapshot readers don't.
            for name in names() {
                conn.exec(format!(
                    "SELECT COUNT(*) FROM {} LOCK IN SHARE MODE",
                    backend.quote(name)
                ))
                .await?;
            }
        }
    }
    let taken = match before().await {
        Ok(taken) => taken,
        Err(e) => {
            let _ = conn.exec("ROLLBACK".into()).await;
            return Err(e);
        }
    };
    match replace(conn, reader, targets).await {
        Ok(restored) => {
            conn.exec("COMMIT".into()).await?;
            Ok((restored, taken))
        }
        Err(e) => {
            // Even if the ROLLBACK cannot be sent, the server rolls back what a lost
            // connection left open.
            let _ = conn.exec("ROLLBACK".into()).await;
            unneeded(taken);
            Err(e)
        }
    }
}

async fn replace(conn: &mut Conn, reader: &mut Reader, targets: &[Table]) -> Result<Vec<Restored>> {
    let backend = conn.backend();
    let names = targets.iter().map(|t| t.name.as_str());
    if backend == Backend::Postgres {
        if !targets.is_empty() {
            conn.exec(format!("TRUNCATE {}", quoted_list(backend, names)))
                .await?;
        }
    } else {
        for name in names {
            conn.exec(format!("DELETE FROM {}", backend.quote(name)))
                .await?;
        }
    }
    // Indexes are built once, after the rows are in, as pg_restore does: maintaining them row by
    // row is most of a large COPY's time. Dropping them is DDL inside this transaction, so a
    // failed or killed restore leaves them as they were.
    let rebuild = match conn {
        Conn::Postgres(c) => detach_indexes(c, targets).await?,
        _ => Vec::new(),
    };
    let mut restored = Vec::new();
    let mut next = match reader.next_item()? {
        Item::Table(name) => Some(name),
        Item::End => None,
        Item::Row(_) => return Err(Error::internal("a row outside a table")),
    };
    while let Some(name) = next.take() {
        let mut load = Load::new(backend, reader, targets, &name)?;
        next = match conn {
            Conn::Postgres(c) => load.copy(c, reader).await?,
            _ => load.insert(conn, reader).await?,
        };
        restored.push(Restored {
            table: load.columns.table,
            rows: load.rows,
        });
    }
    if let Conn::Postgres(c) = conn {
        // A duplicate key shows here, where the unique indexes come back.
        for (table, sql) in rebuild {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *c)
                .await
                .map_err(|e| classify::refused_rows(e, &table, None))?;
        }
        for t in targets {
            reset_sequences(c, &t.name).await?;
        }
    }
    for t in targets {
        if let Some(column) = exhausted_key(conn, &t.name).await? {
            return Err(Error::invalid_input(format!(
                "the backup's table {} holds the largest key its column {column} can take: \
                 no row could be added after the restore; nothing was changed",
                t.name
            ))
            .hint("correct the keys where the backup was taken: they need not be that large"));
        }
    }
    Ok(restored)
}

/// Drops the primary-key and unique constraints and the other indexes of `targets` that can be
/// rebuilt afterwards (a table that a foreign key references keeps its own), and returns the
/// statements that re-create them, as the database itself spells them, with their tables.
async fn detach_indexes(c: &mut PgConnection, targets: &[Table]) -> Result<Vec<(String, String)>> {
    let mut drop = Vec::new();
    let mut rebuild = Vec::new();
    for t in targets {
        let table = Backend::Postgres.quote(&t.name);
        let referenced: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = to_regclass($1))",
        )
        .bind(&table)
        .fetch_one(&mut *c)
        .await?;
        if referenced {
            continue;
        }
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT quote_ident(conname::text), pg_get_constraintdef(oid) FROM pg_constraint              WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u') ORDER BY contype, conname",
        )
        .bind(&table)
        .fetch_all(&mut *c)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i              WHERE i.indrelid = to_regclass($1)              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)              ORDER BY 1",
        )
        .bind(&table)
        .fetch_all(&mut *c)
        .await?;
        for (name, definition) in constraints {
            drop.push(format!("ALTER TABLE {table} DROP CONSTRAINT {name}"));
            rebuild.push((
                t.name.clone(),
                format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"),
            ));
        }
        for (name, definition) in indexes {
            drop.push(format!("DROP INDEX {name}"));
            rebuild.push((t.name.clone(), definition));
        }
    }
    for sql in drop {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *c).await?;
    }
    Ok(rebuild)
}

/// One table of a backup on its way into the database.
struct Load {
    backend: Backend,
    columns: Columns,
    rows: u64,
}

/// A table's columns in the order of the backup's rows, with the target column's kind for
/// each.
struct Columns {
    table: String,
    names: Vec<String>,
    kinds: Vec<Kind>,
}

impl Columns {
    /// Each column's kind, and the place a value of row `row` refused there names.
    fn each(&self, row: u64) -> impl Iterator<Item = (Kind, Place<'_>)> {
        self.kinds
            .iter()
            .zip(&self.names)
            .map(move |(kind, column)| {
                let at = Place {
                    table: &self.table,
                    row,
                    column,
                };
                (*kind, at)
            })
    }

    /// The names, quoted for SQL.
    fn quoted(&self, backend: Backend) -> String {
        quoted_list(backend, self.names.iter().map(String::as_str))
    }
}

/// Where a table's rows end: at the next table (its name), or at the end of the backup.
type Next = Option<String>;

/// Why [`Load::rows`] stopped passing rows on.
enum Paused {
    /// The batch is full; more rows may follow.
    Full,
    /// The table's rows ended.
    Ended(Next),
}

/// Batches: a MiB of `COPY` data, or an `INSERT` of at most so many rows, values and bytes.
const BATCH_ROWS: usize = 1000;
const BATCH_PARAMS: usize = 30_000;
const BATCH_BYTES: usize = 1 << 20;

/// PostgreSQL's binary `COPY` header: signature, flags, no extension.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl Load {
    fn new(backend: Backend, reader: &Reader, targets: &[Table], name: &str) -> Result<Load> {
        let columns = &reader
            .header()
            .tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::internal("a verified table vanished"))?
            .columns;
        let target = targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::internal("a checked table vanished"))?;
        let kinds = columns
            .iter()
            .map(|column| {
                target
                    .columns
                    .iter()
                    .find(|c| &c.name == column)
                    .map(|c| c.kind)
                    .ok_or_else(|| Error::internal("a checked column vanished"))
            })
            .collect::<Result<_>>()?;
        Ok(Load {
            backend,
            columns: Columns {
                table: name.to_string(),
                names: columns.clone(),
                kinds,
            },
            rows: 0,
        })
    }

    /// Passes the table's rows, parsed and counted, to `each` with their number (from 1) until
    /// it says the batch is full (`true`) or the table ends.
    fn rows(
        &mut self,
        reader: &mut Reader,
        mut each: impl FnMut(Vec<Field<'_>>, u64, &Columns) -> Result<bool>,
    ) -> Result<Paused> {
        let columns = &self.columns;
        loop {
            let line = match reader.next_item()? {
                Item::Row(line) => line,
                Item::Table(name) => return Ok(Paused::Ended(Some(name))),
                Item::End => return Ok(Paused::Ended(None)),
            };
            let row = self.rows + 1;
            let values = field::parse_row(line, &columns.table, row)?;
            if values.len() != columns.kinds.len() {
                return Err(Error::invalid_input(format!(
                    "row {row} of table {} has {} values for its {} columns; nothing was changed",
                    columns.table,
                    values.len(),
                    columns.kinds.len()
                ))
                .hint("the backup was not written by this program, or by a newer one"));
            }
            self.rows = row;
            if each(values, row, columns)? {
                return Ok(Paused::Full);
            }
        }
    }

    /// PostgreSQL: one binary `COPY … FROM STDIN`, which the server takes in about half the
    /// time of the text format (it parses no numbers or timestamps), fed a MiB at a time.
    async fn copy(&mut self, c: &mut PgConnection, reader: &mut Reader) -> Result<Next> {
        let sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.backend.quote(&self.columns.table),
            self.columns.quoted(self.backend)
        );
        let table = self.columns.table.clone();
        let mut copy = c.copy_in_raw(&sql).await?;
        match self.feed(&mut copy, reader).await {
            Ok(next) => {
                copy.finish()
                    .await
                    .map_err(|e| classify::refused_rows(e, &table, None))?;
                Ok(next)
            }
            Err(e) => {
                let _ = copy.abort("the restore failed").await;
                Err(e)
            }
        }
    }

    async fn feed(
        &mut self,
        copy: &mut PgCopyIn<&mut PgConnection>,
        reader: &mut Reader,
    ) -> Result<Next> {
        let mut data = Vec::with_capacity(BATCH_BYTES + 4096);
        data.extend_from_slice(COPY_BINARY_HEADER);
        let width = i16::try_from(self.columns.kinds.len())
            .map_err(|_| Error::internal("a table with more columns than COPY takes"))?;
        loop {
            let paused = self.rows(reader, |values, row, columns| {
                data.extend_from_slice(&width.to_be_bytes());
                for (v, (kind, at)) in values.iter().zip(columns.each(row)) {
                    v.copy_binary(&mut data, kind, &at)?;
                }
                Ok(data.len() >= BATCH_BYTES)
            })?;
            let refused = |e| classify::refused_rows(e, &self.columns.table, None);
            if let Paused::Ended(next) = paused {
                data.extend_from_slice(&(-1i16).to_be_bytes());
                copy.send(data).await.map_err(refused)?;
                return Ok(next);
            }
            copy.send(std::mem::replace(
                &mut data,
                Vec::with_capacity(BATCH_BYTES + 4096),
            ))
            .await
            .map_err(refused)?;
        }
    }

    /// SQLite and MySQL/MariaDB: multi-row `INSERT`s.
    async fn insert(&mut self, conn: &mut Conn, reader: &mut Reader) -> Result<Next> {
        let mut batch: Vec<Bound<'static>> = Vec::new();
        let mut bytes = 0;
        loop {
            let first = self.rows + 1;
            let paused = self.rows(reader, |values, row, columns| {
                for (v, (kind, at)) in values.iter().zip(columns.each(row)) {
                    let b = v.value(kind, &at)?.into_owned();
                    bytes += b.size();
                    batch.push(b);
                }
                let rows = batch.len() / columns.kinds.len().max(1);
                Ok(rows >= BATCH_ROWS || batch.len() >= BATCH_PARAMS || bytes >= BATCH_BYTES)
            })?;
            if !batch.is_empty() {
                if let Err(e) = self.insert_batch(conn, &batch).await {
                    return Err(self.which_row(conn, &batch, first, e).await);
                }
                batch.clear();
                bytes = 0;
            }
            if let Paused::Ended(next) = paused {
                return Ok(next);
            }
        }
    }

    /// The error for a batch (its first row numbered `first`) that the database refused as a
    /// whole: the rows are tried again one by one, to name the row it refuses. The statement
    /// that failed changed nothing, and the transaction is rolled back anyway.
    async fn which_row(
        &self,
        conn: &mut Conn,
        batch: &[Bound<'static>],
        first: u64,
        e: sqlx::Error,
    ) -> Error {
        let table = &self.columns.table;
        let width = self.columns.kinds.len().max(1);
        let refused = Error::from(e);
        if matches!(
            refused.kind(),
            ErrorKind::InvalidInput | ErrorKind::Conflict
        ) {
            for (row, values) in (first..).zip(batch.chunks(width)) {
                if let Err(e) = self.insert_batch(conn, values).await {
                    return classify::refused_rows(e, table, Some(row));
                }
            }
        }
        refused
    }

    async fn insert_batch(
        &self,
        conn: &mut Conn,
        batch: &[Bound<'static>],
    ) -> std::result::Result<(), sqlx::Error> {
        let columns = &self.columns;
        let width = columns.kinds.len().max(1);
        let one = format!("({})", vec!["?"; columns.kinds.len()].join(", "));
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.backend.quote(&columns.table),
            columns.quoted(self.backend),
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
        match conn {
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
/// unsigned 64-bit integer (no SQLite column's kind takes one: [`Field::value`] refuses it
/// there), so one would go as its digits, never rounded.
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

/// The column of `table` whose generated keys the restored rows used up, if any: the next row
/// inserted would fail ("database or disk is full" on SQLite, "reached maximum value" on
/// PostgreSQL, "out of range" on MySQL/MariaDB).
async fn exhausted_key(conn: &mut Conn, table: &str) -> Result<Option<String>> {
    let found: Option<String> = match conn {
        Conn::Sqlite(c) => {
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
            .await?
        }
        Conn::Postgres(c) => {
            sqlx::query_scalar(
                "SELECT a.attname::text FROM pg_depend d \
                 JOIN pg_sequence s ON s.seqrelid = d.objid \
                 JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
                 WHERE d.classid = 'pg_class'::regclass AND d.refobjid = to_regclass($1) \
                 AND pg_sequence_last_value(s.seqrelid) >= s.seqmax LIMIT 1",
            )
            .bind(Backend::Postgres.quote(table))
            .fetch_optional(&mut *c)
            .await?
        }
        Conn::MySql(c) => {
            let auto: Option<(String, String)> = sqlx::query_as(
                "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
                 FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = ? AND extra LIKE '%auto_increment%'",
            )
            .bind(table)
            .fetch_optional(&mut *c)
            .await?;
            let Some((column, column_type)) = auto else {
                return Ok(None);
            };
            let Some(largest) = mysql_largest(&column_type) else {
                return Ok(None);
            };
            schema::quote_identifier(&column)?;
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE {} >= {largest}",
                Backend::MySql.quote(table),
                Backend::MySql.quote(&column)
            );
            let at_end: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut *c)
                .await?;
            (at_end > 0).then_some(column)
        }
    };
    Ok(found)
}

/// The largest value of a MySQL/MariaDB integer column type (`bigint(20) unsigned`, say).
fn mysql_largest(column_type: &str) -> Option<u64> {
    let t = column_type.to_ascii_lowercase();
    let bits = [
        ("tinyint", 8),
        ("smallint", 16),
        ("mediumint", 24),
        ("bigint", 64),
        ("int", 32),
    ]
    .iter()
    .find(|(name, _)| t.starts_with(name))?
    .1;
    Some(if t.contains("unsigned") {
        u64::MAX >> (64 - bits)
    } else {
        u64::MAX >> (65 - bits)
    })
}

/// Moves PostgreSQL's sequences past the restored keys, so that later inserts do not collide
/// (never backwards: a key handed out before stays handed out). SQLite and MySQL/MariaDB move
/// their counters past explicitly inserted keys by themselves.
async fn reset_sequences(c: &mut PgConnection, table: &str) -> Result<()> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .bind(table)
    .fetch_all(&mut *c)
    .await?;
    let quoted_table = Backend::Postgres.quote(table);
    for column in columns {
        schema::quote_identifier(&column)?;
        let sql = format!(
            "SELECT setval(s.seq, GREATEST(m.top, COALESCE(pg_sequence_last_value(s.seq), 0))) \
             FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS seq) s, \
                  (SELECT MAX({}) AS top FROM {quoted_table}) m \
             WHERE m.top IS NOT NULL AND s.seq IS NOT NULL",
            Backend::Postgres.quote(&column)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&quoted_table)
            .bind(&column)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary `COPY` tuple of `fields` (None: NULL).
    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(v) => {
                    t.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    t.extend_from_slice(v);
                }
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        t
    }

    #[test]
    fn binary_copy_tuples_are_measured_only_once_whole_and_encoded_as_rows() {
        let mut header = COPY_BINARY_HEADER.to_vec();
        for cut in 0..header.len() {
            assert_eq!(copy_header_len(&header[..cut]), Ok(None), "{cut}");
        }
        assert_eq!(copy_header_len(&header), Ok(Some(19)));
        header[0] = b'X';
        assert!(copy_header_len(&header).is_err());

        let kinds = [
            Kind::Int64,
            Kind::Text,
            Kind::Bool,
            Kind::TimeTz,
            Kind::Bytes,
            Kind::Float32,
        ];
        let micros = 1_000_001i64.to_be_bytes();
        let row = tuple(&[
            Some(&42i64.to_be_bytes()),
            Some("tab\t\"q\" ü".as_bytes()),
            Some(&[1]),
            Some(&micros),
            Some(&[0, 255]),
            Some(&1.5f32.to_be_bytes()),
        ]);
        for cut in 0..row.len() {
            assert_eq!(copy_tuple_len(&row[..cut], kinds.len()), Ok(None), "{cut}");
        }
        assert_eq!(copy_tuple_len(&row, kinds.len()), Ok(Some(row.len())));
        assert_eq!(
            copy_tuple_len(&(-1i16).to_be_bytes(), kinds.len()),
            Ok(Some(2))
        );
        assert!(copy_tuple_len(&row, 2).is_err(), "a row of another width");
        let mut line = Vec::new();
        encode_copy_binary(&row, &kinds, "t", &mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"[42,"tab\t\"q\" ü",true,"2000-01-01T00:00:01.000001+00:00",{"$b64":"AP8="},1.5]"#
        );
        let nulls = tuple(&[None; 6]);
        let mut line = Vec::new();
        encode_copy_binary(&nulls, &kinds, "t", &mut line).unwrap();
        assert_eq!(line, b"[null,null,null,null,null,null]");
        let infinity = tuple(&[None, None, None, Some(&i64::MAX.to_be_bytes()), None, None]);
        let e = encode_copy_binary(&infinity, &kinds, "t", &mut Vec::new()).unwrap_err();
        assert!(e.message().contains("infinite"), "{}", e.message());
    }

    #[test]
    fn mysql_integer_types_have_their_largest_values() {
        assert_eq!(mysql_largest("bigint(20)"), Some(i64::MAX as u64));
        assert_eq!(mysql_largest("BIGINT UNSIGNED"), Some(u64::MAX));
        assert_eq!(mysql_largest("int(11)"), Some(i32::MAX as u64));
        assert_eq!(mysql_largest("int(10) unsigned"), Some(u32::MAX as u64));
        assert_eq!(mysql_largest("mediumint"), Some(8_388_607));
        assert_eq!(mysql_largest("tinyint(4)"), Some(127));
        assert_eq!(mysql_largest("smallint unsigned"), Some(65_535));
        assert_eq!(mysql_largest("varchar(3)"), None);
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
        // SQLite by the declared type's affinity.
        assert_eq!(Kind::of(Backend::Sqlite, "INTEGER"), Some(Kind::Int64));
        assert_eq!(Kind::of(Backend::Sqlite, "varchar(32)"), Some(Kind::Text));
        assert_eq!(Kind::of(Backend::Sqlite, "DOUBLE"), Some(Kind::Float64));
        assert_eq!(Kind::of(Backend::Sqlite, "BLOB"), Some(Kind::Dynamic));
    }
}
