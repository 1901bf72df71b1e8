-- The events that log-event appends: a kind and a JSON object, never changed afterwards.
-- utf8mb4_bin: exact comparisons, as on SQLite and PostgreSQL.
CREATE TABLE events (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind       VARCHAR(64) NOT NULL,
    -- The payload's JSON text (TEXT holds 64 KiB; payloads are at most 16 KiB).
    payload    TEXT        NOT NULL,
    -- UTC with microseconds.
    created_at DATETIME(6) NOT NULL,
    INDEX events_kind_id (kind, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
