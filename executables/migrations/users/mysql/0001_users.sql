-- The accounts that create-user makes. Usernames are unique; an account may have no password.
-- utf8mb4_bin: exact comparisons, as on SQLite and PostgreSQL.
CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username      VARCHAR(32)  NOT NULL UNIQUE,
    email         VARCHAR(254) NOT NULL,
    -- An argon2id hash in PHC string form, never the password itself.
    password_hash VARCHAR(255),
    -- UTC with microseconds.
    created_at    DATETIME(6)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
