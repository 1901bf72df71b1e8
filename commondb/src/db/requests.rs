//! Request ids: exactly-once effects over at-least-once delivery.
//!
//! A broker delivers a request again when its worker died after the commit but before the
//! acknowledgement, and a client retries when an answer was lost. A request that carries an id
//! (NATS `Nats-Msg-Id`, HTTP `Idempotency-Key`, a `request_id` field on the line protocol) is
//! recorded in the task's own transaction, with its answer, in `_commondb_requests`: the row and
//! the task's effect commit together or not at all. The same id again (from the same executable)
//! writes nothing and gets the first answer back.
//!
//! The record is written after the task, not looked up before it: a request seen before fails
//! its own insert (the primary key), or its task refuses first (a duplicate key of the domain),
//! and either way the transaction rolls back and [`recorded`] finds the first answer. So the
//! common case pays one statement more than a request without an id, and a duplicate running
//! at the same moment waits on the first one's lock, then finds its answer.
//!
//! Setup creates the table (as part of the schema, owned by the administrator) and gives the
//! role of every executable that writes `SELECT`, `INSERT` and `DELETE` on it; it is not part of
//! backups. Ids are kept for `serve.request_ids_keep_s` (a day by default), then pruned by the
//! service that wrote them: within that window a retry is harmless.

use std::fmt;

use sqlx::AssertSqlSafe;

use super::{Conn, Tx, on_conn};
use crate::error::{Error, Result};

/// The table's name.
pub(crate) const TABLE: &str = "_commondb_requests";

/// The longest request id.
pub const MAX_ID_LEN: usize = 128;

/// A request's id, as a client made it: 1 to 128 characters of `A-Z a-z 0-9 . _ : -` (a UUID,
/// a ULID, `run-17`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// Checks `text` (`what` names where it came from, for the error).
    pub fn parse(text: &str, what: &str) -> Result<RequestId> {
        let fits = !text.is_empty()
            && text.len() <= MAX_ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !fits {
            return Err(Error::usage(format!(
                "the request id {:?} (from {what}) is not 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -",
                text.chars().take(MAX_ID_LEN + 1).collect::<String>()
            ))
            .hint("make one per request, e.g. a UUID, and send the same one when you retry"));
        }
        Ok(RequestId(text.to_string()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An answer to a request with an id: the answer's JSON text, and whether it was the first
/// answer given again rather than a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub answer: String,
    pub replayed: bool,
}

/// Whether a task with `grants` writes, and so records its requests' ids.
pub(crate) fn writes(grants: &[crate::Grant]) -> bool {
    grants
        .iter()
        .flat_map(|g| g.rights.iter())
        .any(|r| *r != crate::Right::Select)
}

/// The rights a writing task's role needs on the table.
pub(crate) const RIGHTS: &[crate::Right] = &[
    crate::Right::Select,
    crate::Right::Insert,
    crate::Right::Delete,
];

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The answer to record for a request whose task returned `output`: the JSON `--serve` sends
/// (without its newline).
pub(crate) fn answer_text<O: serde::Serialize>(output: &O) -> Result<String> {
    serde_json::to_string(&crate::protocol::Answer::success(output))
        .map_err(|e| Error::internal(format!("the task's output cannot be encoded: {e}")))
}

/// Records request `id` of executable `exe` with its `answer`, in the task's transaction.
pub(crate) async fn record(tx: &mut Tx<'_>, exe: &str, id: &RequestId, answer: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO _commondb_requests (executable, id, answer, at) VALUES (?, ?, ?, ?)",
        (exe, id.as_str(), answer, now_s()),
    )
    .await
    .map(drop)
}

/// Records request `id` on `conn`, inside a transaction the caller holds (SQLite's group
/// commit).
pub(crate) async fn record_on(
    conn: &mut Conn,
    exe: &str,
    id: &RequestId,
    answer: &str,
) -> Result<()> {
    let sql = native(
        conn,
        "INSERT INTO _commondb_requests (executable, id, answer, at) VALUES (?, ?, ?, ?)",
    );
    let at = now_s();
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(exe).bind(id.as_str()).bind(answer).bind(at).execute(&mut *c).await.map(drop))?;
    Ok(())
}

/// The answer recorded for request `id` of executable `exe`, if any.
pub(crate) async fn recorded(conn: &mut Conn, exe: &str, id: &RequestId) -> Result<Option<String>> {
    let sql = native(
        conn,
        "SELECT answer FROM _commondb_requests WHERE executable = ? AND id = ?",
    );
    Ok(
        on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql)).bind(exe).bind(id.as_str()).fetch_optional(&mut *c).await)?,
    )
}

/// Removes executable `exe`'s ids older than `keep_s` seconds; returns how many.
pub(crate) async fn prune(conn: &mut Conn, exe: &str, keep_s: u64) -> Result<u64> {
    let sql = native(
        conn,
        "DELETE FROM _commondb_requests WHERE executable = ? AND at < ?",
    );
    let before = now_s().saturating_sub(i64::try_from(keep_s).unwrap_or(i64::MAX));
    Ok(
        on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(exe).bind(before).execute(&mut *c).await.map(|r| r.rows_affected()))?,
    )
}

/// Whether the database has the table (a database set up by an earlier version has not, until
/// `--self-setup` runs again).
pub(crate) async fn available(conn: &mut Conn) -> Result<bool> {
    super::schema::table_exists(conn, TABLE).await
}

/// Creates the table if it is missing (setup, as the database's owner).
pub(crate) async fn create(conn: &mut Conn) -> Result<()> {
    for sql in conn.backend().dialect().requests_table() {
        conn.exec((*sql).to_string()).await?;
    }
    Ok(())
}

/// The error for a request with an id on a database without the table.
pub(crate) fn missing(exe: &str) -> Error {
    Error::config("this database has no table for request ids: it was set up by an earlier version")
        .hint(format!(
            "run `{exe} --self-setup` once; requests without an id work meanwhile"
        ))
}

fn native(conn: &Conn, sql: &'static str) -> String {
    conn.backend().dialect().placeholders(sql).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_plain() {
        assert!(RequestId::parse("run-17", "test").is_ok());
        assert!(RequestId::parse("0b6f0c1e-4a3b-4c1d-9e2f-6a7b8c9d0e1f", "test").is_ok());
        assert!(RequestId::parse(&"a".repeat(MAX_ID_LEN), "test").is_ok());
        for bad in ["", "a b", "a'b", "ü", "x;DROP", &"a".repeat(MAX_ID_LEN + 1)] {
            let e = RequestId::parse(bad, "test").unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Usage, "{bad:?}");
        }
    }

    #[test]
    fn only_writing_tasks_record() {
        use crate::{Grant, Right};
        let read = [Grant {
            table: "users",
            rights: &[Right::Select],
        }];
        let write = [Grant {
            table: "users",
            rights: &[Right::Select, Right::Insert],
        }];
        assert!(!writes(&read));
        assert!(writes(&write));
    }
}
