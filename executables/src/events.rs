//! Events: the domain of `log-event` and `list-events`, an append-only log of JSON objects by
//! kind. A second domain with another shape than users (no unique key, a free-form payload, a
//! repeat that appends again, a read-only task returning many rows), written with nothing but
//! `commondb`'s public API.

use std::fmt;

use crate::paging::Bounds;
use chrono::{DateTime, SubsecRound, Utc};
use commondb::{Case, Error, ErrorKind, Migrations, Result, Tx};
use serde::Serialize;

/// The domain's name: its executables share the database `events.sqlite3` (or the URL's), the
/// credentials in `events.toml`, and its backups.
pub const DOMAIN: &str = "events";

/// The domain's schema, declared once for all its executables.
pub const MIGRATIONS: &Migrations = &Migrations {
    sqlite: sqlx::migrate!("migrations/events/sqlite"),
    postgres: sqlx::migrate!("migrations/events/postgres"),
    mysql: sqlx::migrate!("migrations/events/mysql"),
};

/// The largest payload, in bytes of JSON text.
pub const MAX_PAYLOAD: usize = 16 * 1024;

pub use crate::paging::MAX_LIMIT;

/// What `log-event --log` takes.
#[derive(clap::Args, Debug, Serialize)]
pub struct LogArgs {
    /// What happened: 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter (user.login)
    #[arg(long, value_name = "KIND")]
    pub kind: String,
    /// The event's data: a JSON object of at most 16 KiB
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub payload: String,
}

impl LogArgs {
    /// The arguments of one request.
    pub fn new(kind: &str, payload: &str) -> Self {
        LogArgs {
            kind: kind.into(),
            payload: payload.into(),
        }
    }

    /// Sample request `n` of run `run`: a small payload naming both.
    pub fn sample(n: u64, run: &str) -> Self {
        Self::new(
            "sample.event",
            &serde_json::json!({ "n": n, "run": run }).to_string(),
        )
    }
}

/// A validated event, ready to append.
#[derive(Debug)]
pub struct NewEvent {
    kind: String,
    payload: serde_json::Map<String, serde_json::Value>,
    /// The payload as stored: compact JSON.
    text: String,
    created_at: DateTime<Utc>,
}

impl NewEvent {
    /// Checks the kind and the payload.
    pub fn new(args: &LogArgs) -> Result<NewEvent> {
        let kind = &args.kind;
        check_kind(kind)?;
        if args.payload.len() > MAX_PAYLOAD {
            return Err(Error::invalid_input(format!(
                "the payload is {} bytes; at most {MAX_PAYLOAD} are taken",
                args.payload.len()
            ))
            .hint("log a smaller object, or a reference to where the data is"));
        }
        let parsed: serde_json::Value = serde_json::from_str(&args.payload)
            .map_err(|e| Error::invalid_input(format!("the payload is not JSON: {e}")))?;
        // Compact, whatever spacing the request had.
        let text = parsed.to_string();
        let payload = match parsed {
            serde_json::Value::Object(map) => map,
            other => {
                return Err(Error::invalid_input(format!(
                    "the payload must be a JSON object, not {}",
                    kind_of(&other)
                ))
                .hint("wrap the value, e.g. {\"value\": …}"));
            }
        };
        Ok(NewEvent {
            kind: kind.clone(),
            payload,
            text,
            created_at: Utc::now().round_subsecs(6),
        })
    }
}

/// Checks an event's kind: 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter.
fn check_kind(kind: &str) -> Result<()> {
    let valid = (1..=64).contains(&kind.len())
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if valid {
        return Ok(());
    }
    let (shown, _) = commondb::error::cut(kind, 64);
    Err(Error::invalid_input(format!(
        "kind \"{}\" is not valid: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter",
        shown.escape_default()
    )))
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An appended event, as the task returns it.
#[derive(Debug, Serialize)]
pub struct Event {
    /// Its place in the log.
    pub id: i64,
    /// What happened.
    pub kind: String,
    /// Its data.
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// When it was logged, in UTC.
    pub created_at: DateTime<Utc>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "logged event {} {} ({} field(s)) at {}",
            self.id,
            self.kind,
            self.payload.len(),
            self.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// Appends `event` to the log.
pub async fn append(tx: &mut Tx<'_>, event: NewEvent) -> Result<Event> {
    let id = tx
        .insert(
            "INSERT INTO events (kind, payload, created_at) VALUES (?, ?, ?)",
            "id",
            (event.kind.as_str(), event.text.as_str(), event.created_at),
        )
        .await?;
    Ok(Event {
        id,
        kind: event.kind,
        payload: event.payload,
        created_at: event.created_at,
    })
}

/// What `list-events --list` takes.
#[derive(clap::Args, Debug, Serialize)]
pub struct ListArgs {
    /// Only events of this kind
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only events after this id: the `next` of the previous page
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// At most this many events, 1 to 1000
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u32,
}

impl ListArgs {
    /// The arguments of one listing.
    pub fn new(kind: Option<&str>, after: Option<i64>, limit: u32) -> Self {
        ListArgs {
            kind: kind.map(String::from),
            after,
            limit,
        }
    }
}

/// A validated listing.
#[derive(Debug)]
pub struct Listing {
    kind: Option<String>,
    bounds: Bounds,
}

impl Listing {
    /// Checks the kind, the cursor and the limit.
    pub fn new(args: &ListArgs) -> Result<Listing> {
        if let Some(kind) = &args.kind {
            check_kind(kind)?;
        }
        Ok(Listing {
            kind: args.kind.clone(),
            bounds: Bounds::new(args.after, args.limit)?,
        })
    }
}

/// One page of the log, oldest first, and where the next begins.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The events.
    pub events: Vec<Event>,
    /// The cursor of the next page (`--after`), if there are more events.
    pub next: Option<i64>,
}

impl fmt::Display for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .events
            .iter()
            .map(|e| e.kind.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:>8}  {:<27}  {:<width$}  payload",
            "id", "created_at", "kind"
        )?;
        for e in &self.events {
            writeln!(
                f,
                "{:>8}  {:<27}  {:<width$}  {}",
                e.id,
                e.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                e.kind,
                serde_json::Value::Object(e.payload.clone())
            )?;
        }
        match self.next {
            Some(next) => write!(
                f,
                "{} event(s); more with --after {next}",
                self.events.len()
            ),
            None => write!(f, "{} event(s)", self.events.len()),
        }
    }
}

/// A row of the log as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    id: i64,
    kind: String,
    payload: String,
    created_at: DateTime<Utc>,
}

/// One page of the log: the events after the cursor, oldest first, at most the limit (keyset
/// pagination: a page costs the same wherever it starts).
pub async fn list(tx: &mut Tx<'_>, listing: Listing) -> Result<Page> {
    let (after, fetch) = (listing.bounds.after, listing.bounds.fetch());
    let rows: Vec<Stored> = match &listing.kind {
        Some(kind) => {
            tx.fetch_all(
                "SELECT id, kind, payload, created_at FROM events \
                 WHERE kind = ? AND id > ? ORDER BY id LIMIT ?",
                (kind.as_str(), after, fetch),
            )
            .await?
        }
        None => {
            tx.fetch_all(
                "SELECT id, kind, payload, created_at FROM events \
                 WHERE id > ? ORDER BY id LIMIT ?",
                (after, fetch),
            )
            .await?
        }
    };
    let (rows, next) = listing.bounds.page(rows, |row| row.id);
    let events = rows
        .into_iter()
        .map(|row| {
            let payload = match serde_json::from_str(&row.payload) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => {
                    return Err(Error::internal(format!(
                        "event {} holds a payload that is not a JSON object",
                        row.id
                    )));
                }
            };
            Ok(Event {
                id: row.id,
                kind: row.kind,
                payload,
                created_at: row.created_at,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Page { events, next })
}

/// The events `list-events`' self-test reads: three of two kinds, unique to the run.
pub async fn seed(tx: &mut Tx<'_>, run: &str) -> Result<u64> {
    for (kind, n) in [("seed.a", 1), ("seed.a", 2), ("seed.b", 3)] {
        let args = LogArgs::new(kind, &serde_json::json!({ "n": n, "run": run }).to_string());
        append(tx, NewEvent::new(&args)?).await?;
    }
    Ok(3)
}

/// `list-events`' own self-test cases, on the seeded log.
pub fn list_cases() -> Vec<Case<ListArgs>> {
    vec![
        Case::new(
            "a kind's events are listed, a page at a time",
            ListArgs::new(Some("seed.a"), None, 1),
        ),
        Case::new(
            "a kind with no events lists none",
            ListArgs::new(Some("never.logged"), None, 10),
        ),
        Case::new(
            "a limit over 1000 is refused",
            ListArgs::new(None, None, MAX_LIMIT + 1),
        )
        .fails_with(ErrorKind::InvalidInput),
        Case::new(
            "a negative cursor is refused",
            ListArgs::new(None, Some(-1), 10),
        )
        .fails_with(ErrorKind::InvalidInput),
        Case::new(
            "listing writes nothing",
            ListArgs::new(None, None, MAX_LIMIT),
        )
        .then_count("SELECT COUNT(*) FROM events", 3),
    ]
}

/// `log-event`'s own self-test cases, run in order on one scratch database.
pub fn cases() -> Vec<Case<LogArgs>> {
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_PAYLOAD));
    vec![
        Case::new(
            "an event is appended with its payload as given",
            LogArgs::new(
                "deploy.done",
                r#"{"version": "1.2.3", "hosts": ["a", "b"]}"#,
            ),
        )
        .then_count(
            "SELECT COUNT(*) FROM events WHERE kind = 'deploy.done' \
             AND payload = '{\"hosts\":[\"a\",\"b\"],\"version\":\"1.2.3\"}'",
            1,
        ),
        Case::new(
            "the same event twice is two entries",
            LogArgs::new(
                "deploy.done",
                r#"{"version": "1.2.3", "hosts": ["a", "b"]}"#,
            ),
        )
        .then_count("SELECT COUNT(*) FROM events WHERE kind = 'deploy.done'", 2),
        Case::new(
            "a payload that is not an object is refused",
            LogArgs::new("x", "[1, 2]"),
        )
        .fails_with(ErrorKind::InvalidInput),
        Case::new(
            "a payload that is not JSON is refused",
            LogArgs::new("x", "{nope"),
        )
        .fails_with(ErrorKind::InvalidInput),
        Case::new("a payload over 16 KiB is refused", LogArgs::new("x", &big))
            .fails_with(ErrorKind::InvalidInput),
        Case::new(
            "a kind with capitals or spaces is refused",
            LogArgs::new("User Login", "{}"),
        )
        .fails_with(ErrorKind::InvalidInput),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_payloads_are_checked_before_the_database() {
        for ok in ["a", "user.login", "x-1_2.3", &"k".repeat(64)] {
            NewEvent::new(&LogArgs::new(ok, "{}")).unwrap();
        }
        for bad in ["", "1a", "A", "a b", "a/b", "é", &"k".repeat(65)] {
            let e = NewEvent::new(&LogArgs::new(bad, "{}")).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        for bad in ["", "null", "1", "\"s\"", "[]", "{", "{} {}"] {
            let e = NewEvent::new(&LogArgs::new("k", bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        let e = NewEvent::new(&LogArgs::new("k", &" ".repeat(MAX_PAYLOAD + 1))).unwrap_err();
        assert!(e.message().contains("at most 16384"), "{}", e.message());
    }

    #[test]
    fn the_payload_is_stored_as_compact_json_with_its_fields() {
        let e = NewEvent::new(&LogArgs::new("k", "{ \"b\" : 1, \"a\" : [true] }")).unwrap();
        assert_eq!(e.text, r#"{"a":[true],"b":1}"#);
        assert_eq!(e.payload.len(), 2);
    }

    #[test]
    fn listings_are_checked_before_the_database() {
        Listing::new(&ListArgs::new(Some("a.b"), Some(7), 1)).unwrap();
        Listing::new(&ListArgs::new(None, None, MAX_LIMIT)).unwrap();
        for bad in [
            ListArgs::new(Some("A"), None, 10),
            ListArgs::new(None, None, 0),
            ListArgs::new(None, None, MAX_LIMIT + 1),
            ListArgs::new(None, Some(-1), 10),
        ] {
            let e = Listing::new(&bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn samples_are_valid_and_unique() {
        let a = NewEvent::new(&LogArgs::sample(1, "r")).unwrap();
        let b = NewEvent::new(&LogArgs::sample(2, "r")).unwrap();
        assert_ne!(a.text, b.text);
    }
}
