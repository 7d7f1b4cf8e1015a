-- Reverts 004_create_message_archive.up.sql.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- A down migration exists to drop what its up created.
-- squawk-ignore ban-drop-table
DROP TABLE message_archive;
