-- The sessions login issues. Only a hash of each token is kept, so a copy of the table (or a
-- backup) opens no session. No foreign key: delete-user removes a user's sessions itself, and a
-- restore may load the tables in any order.
CREATE TABLE sessions (
    -- SHA-256 of the token, in hex.
    token_hash TEXT        NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
