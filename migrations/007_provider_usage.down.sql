-- Reverts 007_provider_usage.up.sql: the column and its constraint, and 002's comment on usage.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- A down migration exists to drop what its up created.
-- squawk-ignore ban-drop-column
ALTER TABLE messages DROP COLUMN provider_usage;

COMMENT ON COLUMN messages.usage IS 'Token usage reported for the message (input, output, cache creation, cache read), as a JSON object; NULL when unknown.';
