//! The database side of a restore: put a backup's rows back, every task table at once, in
//! one transaction that locks writers out first and commits only after the whole file checked
//! out. The rows are parsed here ([`field`]) and handed to the backend seam as [`Rows`], which
//! loads them its own fastest way.

use super::field::{self, Field, Place};
use crate::backup::file::{Item, Reader, TableInfo};
use crate::db::Conn;
use crate::db::backend::rows::{Kind, Rows, Table, TakeRow};
use crate::error::{Error, Result};
use crate::output::Progress;

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
    let quoted: Vec<String> = targets.iter().map(|t| backend.quote(&t.name)).collect();
    for sql in backend.dialect().begin_restore(&quoted) {
        conn.exec(sql).await?;
    }
    let taken = match before().await {
        Ok(taken) => taken,
        Err(e) => {
            let _ = conn.exec("ROLLBACK".into()).await;
            return Err(e);
        }
    };
    // After the safety backup, whose own bar has gone by then.
    reader.show(Progress::rows(reader.header().rows(), "restore"));
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
    let quoted: Vec<String> = targets.iter().map(|t| backend.quote(&t.name)).collect();
    for sql in backend.dialect().empty(&quoted) {
        conn.exec(sql).await?;
    }
    let rebuild = conn.before_load(targets).await?;
    let mut restored = Vec::new();
    let mut next = match reader.next_item()? {
        Item::Table(name) => Some(name),
        Item::End => None,
        Item::Row(_) => return Err(Error::internal("a row outside a table")),
    };
    while let Some(name) = next.take() {
        let mut load = Load::new(reader, targets, &name)?;
        conn.load(&mut load).await?;
        next = load.next.take().flatten();
        restored.push(Restored {
            table: load.columns.table,
            rows: load.rows,
        });
    }
    conn.after_load(rebuild, targets).await?;
    Ok(restored)
}

/// One table of a backup on its way into the database.
struct Load<'r> {
    reader: &'r mut Reader,
    columns: Columns,
    rows: u64,
    /// Where the table's rows ended, once they did: at the next table, or at the end.
    next: Option<Next>,
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

impl<'r> Load<'r> {
    fn new(reader: &'r mut Reader, targets: &[Table], name: &str) -> Result<Load<'r>> {
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
        let names = columns.clone();
        Ok(Load {
            reader,
            next: None,
            columns: Columns {
                table: name.to_string(),
                names,
                kinds,
            },
            rows: 0,
        })
    }

    /// Passes the table's rows, parsed and counted, to `each` with their number (from 1) until
    /// it says the batch is full (`true`) or the table ends.
    fn rows(
        &mut self,
        mut each: impl FnMut(Vec<Field<'_>>, u64, &Columns) -> Result<bool>,
    ) -> Result<Paused> {
        let columns = &self.columns;
        loop {
            let line = match self.reader.next_item()? {
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
}

impl Rows for Load<'_> {
    fn table(&self) -> &str {
        &self.columns.table
    }

    fn columns(&self) -> (&[String], &[Kind]) {
        (&self.columns.names, &self.columns.kinds)
    }

    fn count(&self) -> u64 {
        self.rows
    }

    fn batch(&mut self, each: &mut TakeRow<'_>) -> Result<bool> {
        let paused = self.rows(|values, row, columns| {
            let mut converted = values
                .iter()
                .zip(columns.each(row))
                .map(|(v, (kind, at))| v.value(kind, &at));
            each(&mut converted)
        })?;
        match paused {
            Paused::Full => Ok(false),
            Paused::Ended(next) => {
                self.next = Some(next);
                Ok(true)
            }
        }
    }
}
