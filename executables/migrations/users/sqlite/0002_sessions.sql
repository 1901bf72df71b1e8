-- The sessions login issues. Only a hash of each token is kept, so a copy of the table (or a
-- backup) opens no session. No foreign key: delete-user removes a user's sessions itself, and a
-- restore may load the tables in any order.
CREATE TABLE sessions (
    -- SHA-256 of the token, in hex.
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    -- UTC, RFC 3339 with microseconds.
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
