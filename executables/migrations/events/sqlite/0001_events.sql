-- The events that log-event appends: a kind and a JSON object, never changed afterwards.
CREATE TABLE events (
    -- AUTOINCREMENT: an id is never reused, so the log's order is its ids' order.
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    -- The payload's JSON text, as the request gave it once it parsed as an object.
    payload    TEXT    NOT NULL,
    -- UTC, RFC 3339 with microseconds.
    created_at TEXT    NOT NULL
);
-- Reading one kind's events in order.
CREATE INDEX events_kind_id ON events (kind, id);
