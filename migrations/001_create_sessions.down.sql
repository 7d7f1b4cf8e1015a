-- Reverts 001_create_sessions.up.sql: the table takes its indexes, constraints and comments with it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- A down migration exists to drop what its up created.
-- squawk-ignore ban-drop-table
DROP TABLE sessions;
-- The up created btree_gin if it was missing. Without CASCADE, the drop refuses (and the down
-- fails, changing nothing) rather than take an index of anyone else's that still uses it.
-- squawk-ignore ban-drop-extension
DROP EXTENSION IF EXISTS btree_gin;
