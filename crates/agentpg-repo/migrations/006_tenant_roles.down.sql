-- Reverts 006_tenant_roles.up.sql: 005's policies again. Tenant roles stay: roles belong to the
-- whole server, and other databases may still use them.
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

CREATE POLICY sessions_all_rows ON sessions AS PERMISSIVE FOR ALL TO PUBLIC
    USING (true) WITH CHECK (true);
CREATE POLICY sessions_tenant ON sessions AS RESTRICTIVE FOR ALL TO agentpg_app
    USING (tenant_id = current_setting('agentpg.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentpg.tenant', true));

CREATE POLICY messages_all_rows ON messages AS PERMISSIVE FOR ALL TO PUBLIC
    USING (true) WITH CHECK (true);
CREATE POLICY messages_tenant ON messages AS RESTRICTIVE FOR ALL TO agentpg_app
    USING (tenant_id = current_setting('agentpg.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentpg.tenant', true));

CREATE POLICY compaction_events_all_rows ON compaction_events AS PERMISSIVE FOR ALL TO PUBLIC
    USING (true) WITH CHECK (true);
CREATE POLICY compaction_events_tenant ON compaction_events AS RESTRICTIVE FOR ALL TO agentpg_app
    USING (tenant_id = current_setting('agentpg.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentpg.tenant', true));

CREATE POLICY message_archive_all_rows ON message_archive AS PERMISSIVE FOR ALL TO PUBLIC
    USING (true) WITH CHECK (true);
CREATE POLICY message_archive_tenant ON message_archive AS RESTRICTIVE FOR ALL TO agentpg_app
    USING (tenant_id = current_setting('agentpg.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentpg.tenant', true));

COMMENT ON POLICY sessions_tenant ON sessions IS 'agentpg_app sees and writes only the rows of the tenant in agentpg.tenant.';
COMMENT ON POLICY messages_tenant ON messages IS 'agentpg_app sees and writes only the rows of the tenant in agentpg.tenant.';
COMMENT ON POLICY compaction_events_tenant ON compaction_events IS 'agentpg_app sees and writes only the rows of the tenant in agentpg.tenant.';
COMMENT ON POLICY message_archive_tenant ON message_archive IS 'agentpg_app sees and writes only the rows of the tenant in agentpg.tenant.';

-- The functions exist only for the policies and the tenant roles of 006, dropped here with them.
-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_create_tenant_role(TEXT, NAME);
-- squawk-ignore ban-drop-function
DROP FUNCTION agentpg_tenant_role(TEXT);
