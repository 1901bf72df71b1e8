//! Events: the domain of `log-event`, an append-only log of JSON objects by kind. A second
//! domain with another shape than users (no unique key, a free-form payload, a repeat that
//! appends again), written with nothing but `commondb`'s public API.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use commondb::{Case, Error, ErrorKind, Result, Tx};
use serde::Serialize;

/// The largest payload, in bytes of JSON text.
pub const MAX_PAYLOAD: usize = 16 * 1024;

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
        let valid_kind = (1..=64).contains(&kind.len())
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if !valid_kind {
            let (shown, _) = commondb::error::cut(kind, 64);
            return Err(Error::invalid_input(format!(
                "kind \"{}\" is not valid: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter",
                shown.escape_default()
            )));
        }
        if args.payload.len() > MAX_PAYLOAD {
            return Err(Error::invalid_input(format!(
                "the payload is {} bytes; at most {MAX_PAYLOAD} are taken",
                args.payload.len()
            ))
            .hint("log a smaller object, or a reference to where the data is"));
        }
        let payload = match serde_json::from_str::<serde_json::Value>(&args.payload) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                return Err(Error::invalid_input(format!(
                    "the payload must be a JSON object, not {}",
                    kind_of(&other)
                ))
                .hint("wrap the value, e.g. {\"value\": …}"));
            }
            Err(e) => {
                return Err(Error::invalid_input(format!(
                    "the payload is not JSON: {e}"
                )));
            }
        };
        let text = serde_json::Value::Object(payload.clone()).to_string();
        Ok(NewEvent {
            kind: kind.clone(),
            payload,
            text,
            created_at: Utc::now().round_subsecs(6),
        })
    }
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
    fn samples_are_valid_and_unique() {
        let a = NewEvent::new(&LogArgs::sample(1, "r")).unwrap();
        let b = NewEvent::new(&LogArgs::sample(2, "r")).unwrap();
        assert_ne!(a.text, b.text);
    }
}
