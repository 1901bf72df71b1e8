-- The accounts that create-user makes. Usernames are unique; an account may have no password.
CREATE TABLE users (
    -- AUTOINCREMENT: an id is never reused, even after the newest row is deleted.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL,
    -- An argon2id hash in PHC string form, never the password itself.
    password_hash TEXT,
    -- UTC, RFC 3339 with microseconds.
    created_at    TEXT    NOT NULL
);
