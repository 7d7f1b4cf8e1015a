-- Reverts 002_create_messages.up.sql: the table takes its identity sequence, indexes,
-- constraints and comments with it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- A down migration exists to drop what its up created.
-- squawk-ignore ban-drop-table
DROP TABLE messages;
