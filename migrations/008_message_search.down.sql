-- Reverts 008_message_search.up.sql.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- On Citus, dropping the functions (distributed objects) in the transaction that changed the
-- shards needs one connection per node; elsewhere this setting is an unused placeholder.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

DROP INDEX message_archive_search_idx;
DROP INDEX messages_search_idx;
ALTER TABLE message_archive DROP COLUMN search_document;
ALTER TABLE messages DROP COLUMN search_document;
DROP FUNCTION agentpg_search_snippet(jsonb, tsquery);
DROP FUNCTION agentpg_search_query(text);
DROP FUNCTION agentpg_search_document(jsonb);
