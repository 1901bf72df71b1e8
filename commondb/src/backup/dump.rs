//! The database side of a backup: read the task's tables in one consistent snapshot, row by
//! row, as portable values (JSON by column kind: see `db/backend/rows.rs`), into the backup
//! file's [`Writer`].

use crate::backup::file::{TableInfo, Writer};
use crate::db::backend::rows::{Sink, Table};
use crate::db::{Conn, schema};
use crate::error::Result;

/// The task's tables with their columns, described by the database itself.
pub(crate) async fn tables(conn: &mut Conn) -> Result<Vec<Table>> {
    let names = schema::task_tables(conn).await?;
    conn.describe(names).await
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
        for sql in conn.backend().dialect().begin_snapshot() {
            conn.exec((*sql).into()).await?;
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
        let (_, schema_version) = conn.applied_summary().await?;
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
    for table in tables {
        out.table(&table.name)?;
        conn.dump_rows(table, out).await?;
    }
    Ok(())
}

impl Sink for Writer {
    fn row(&mut self, encode: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        Writer::row(self, encode)
    }
}
