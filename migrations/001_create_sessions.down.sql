-- Reverts 001_create_sessions.up.sql: the table takes its indexes, constraints and comments with it.
DROP TABLE sessions;
