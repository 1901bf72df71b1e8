-- The sessions login issues. Only a hash of each token is kept, so a copy of the table (or a
-- backup) opens no session. No foreign key: delete-user removes a user's sessions itself, and a
-- restore may load the tables in any order.
CREATE TABLE sessions (
    -- SHA-256 of the token, in hex.
    token_hash CHAR(64)    NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    -- UTC with microseconds.
    created_at DATETIME(6) NOT NULL,
    expires_at DATETIME(6) NOT NULL,
    INDEX sessions_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
