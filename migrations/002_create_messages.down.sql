-- Reverts 002_create_messages.up.sql: the table takes its identity sequence, indexes,
-- constraints and comments with it.
DROP TABLE messages;
