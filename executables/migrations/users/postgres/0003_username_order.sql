-- Usernames compare byte by byte, as on SQLite (BINARY) and MySQL/MariaDB (utf8mb4_bin): a
-- prefix is then a range of the unique index (list-users --prefix), whatever the database's
-- locale, whose collation would sort '.', '-' and '_' by other rules.
ALTER TABLE users ALTER COLUMN username TYPE TEXT COLLATE "C";
