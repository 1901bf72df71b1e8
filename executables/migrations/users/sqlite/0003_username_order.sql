-- On PostgreSQL this migration makes usernames compare byte by byte. SQLite's BINARY collation
-- already does: nothing to change (the version keeps the backends' numbers the same).
SELECT 1;
