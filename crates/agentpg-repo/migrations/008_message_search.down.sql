-- Reverts 008_message_search.up.sql.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- On Citus, dropping the functions (distributed objects) in the transaction that changed the
-- shards needs one connection per node; elsewhere this setting is an unused placeholder.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- A down migration exists to drop what its up created (in the migration's transaction, which
-- DROP INDEX CONCURRENTLY cannot run in).
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX message_archive_search_idx;
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX messages_search_idx;
-- squawk-ignore ban-drop-column
ALTER TABLE message_archive DROP COLUMN search_document;
-- squawk-ignore ban-drop-column
ALTER TABLE messages DROP COLUMN search_document;
-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_search_snippet(jsonb, tsquery);
-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_search_query(text);
-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_search_document(jsonb);
