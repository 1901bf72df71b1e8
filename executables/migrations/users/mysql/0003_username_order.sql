-- On PostgreSQL this migration makes usernames compare byte by byte. The column's utf8mb4_bin
-- collation already does: nothing to change (the version keeps the backends' numbers the same).
SELECT 1;
