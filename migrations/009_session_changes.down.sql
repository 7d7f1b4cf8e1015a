-- Reverts 009_session_changes.up.sql.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- On Citus, dropping a distributed table and function in one transaction needs one connection
-- per node; elsewhere this setting is an unused placeholder.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_follow_channel(TEXT, UUID);
-- squawk-ignore ban-drop-table
DROP TABLE session_changes;
