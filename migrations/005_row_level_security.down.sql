-- Reverts 005_row_level_security.up.sql. The role agentpg_app stays: roles belong to the whole
-- server, and other databases may still grant it.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DROP POLICY message_archive_tenant ON message_archive;
DROP POLICY message_archive_all_rows ON message_archive;
DROP POLICY compaction_events_tenant ON compaction_events;
DROP POLICY compaction_events_all_rows ON compaction_events;
DROP POLICY messages_tenant ON messages;
DROP POLICY messages_all_rows ON messages;
DROP POLICY sessions_tenant ON sessions;
DROP POLICY sessions_all_rows ON sessions;

ALTER TABLE message_archive DISABLE ROW LEVEL SECURITY;
ALTER TABLE compaction_events DISABLE ROW LEVEL SECURITY;
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
ALTER TABLE sessions DISABLE ROW LEVEL SECURITY;

DO $sequences$
BEGIN
    EXECUTE format('REVOKE USAGE ON SEQUENCE %s FROM agentpg_app',
        pg_get_serial_sequence('compaction_events', 'seq'));
    EXECUTE format('REVOKE USAGE ON SEQUENCE %s FROM agentpg_app',
        pg_get_serial_sequence('messages', 'position'));
END
$sequences$;
REVOKE SELECT, INSERT, UPDATE, DELETE ON sessions, messages, compaction_events, message_archive
    FROM agentpg_app;
REVOKE USAGE ON SCHEMA public FROM agentpg_app;
