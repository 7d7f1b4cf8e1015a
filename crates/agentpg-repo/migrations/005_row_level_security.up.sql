-- Row-level security: a role whose every statement sees and writes only the rows of one tenant,
-- the tenant named by the setting agentpg.tenant.
--
-- Decisions:
-- * The role is agentpg_app (NOLOGIN). Applications, analytics and support tools that must be
--   kept to one tenant connect as a login role granted agentpg_app (or SET ROLE agentpg_app) and
--   set agentpg.tenant: per connection (a startup option, free) or per transaction
--   (set_config('agentpg.tenant', …, true), one round trip). With no tenant set, nothing is
--   visible and nothing can be written.
-- * Roles belong to the whole server, not to one database: the role is created only if it does
--   not exist yet (two databases migrating at once both succeed), and the down migration leaves
--   it in place, because other databases may still grant it.
-- * Every other role keeps seeing every row: the table owner (and so the migrations) bypasses
--   row-level security as it is not forced, and each table has a permissive policy admitting
--   every row to every role, to which the tenant policy adds a restrictive condition for
--   agentpg_app alone. Enabling this migration changes nothing for a role that is not
--   agentpg_app.
-- * The tenant condition is tenant_id = current_setting('agentpg.tenant', true): a stable
--   expression, so index scans on the tenant-leading keys still apply; on writes the same
--   condition is the WITH CHECK, so a row for another tenant is refused.
-- * Foreign-key checks and ON DELETE CASCADE run as the table owner, unaffected by policies,
--   which is safe because every foreign key includes tenant_id.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

DO $role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agentpg_app') THEN
        CREATE ROLE agentpg_app NOLOGIN;
    END IF;
EXCEPTION
    -- Another database created it between the check and the CREATE.
    WHEN duplicate_object OR unique_violation THEN
        NULL;
END
$role$;

GRANT USAGE ON SCHEMA public TO agentpg_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON sessions, messages, compaction_events, message_archive
    TO agentpg_app;
-- Appends draw message positions from the identity sequence of messages.position.
DO $sequences$
BEGIN
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO agentpg_app',
        pg_get_serial_sequence('messages', 'position'));
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO agentpg_app',
        pg_get_serial_sequence('compaction_events', 'seq'));
END
$sequences$;

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE compaction_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_archive ENABLE ROW LEVEL SECURITY;

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
