-- Row-level security that a connection cannot talk its way out of: a tenant is a role.
--
-- Decisions:
-- * 005 bound a connection to a tenant by the setting agentpg.tenant, which any SQL on the
--   connection can change (`SELECT set_config('agentpg.tenant', 'other', false)`): a connection
--   of one tenant could read another's rows. Here the tenant of a connection is its role:
--   agentpg_tenant_role(tenant) names the role of a tenant (agentpg_t_ and the first 48 hex
--   digits of the SHA-256 of the tenant id: any tenant id fits in a role name, and two tenants
--   never share a role in practice), and a row is visible to, and writable by, the role of its
--   tenant alone. SQL on a tenant's connection becomes another tenant only by logging in as
--   that tenant's role or by being granted it, and granting roles takes CREATEROLE, which no
--   tenant role has. RESET ROLE or SET ROLE agentpg_app leads to a role that sees nothing.
-- * A tenant role is a member of agentpg_app (which holds the table privileges) and may log in:
--   per connection, an application connects as it (with the password or certificate its
--   operator gave the role); on Citus the coordinator connects to the workers as the current
--   role, so the role that reads must be able to log in there. agentpg_create_tenant_role()
--   creates it (the caller needs CREATEROLE) and may grant it to a login that switches tenants
--   per transaction (SET LOCAL ROLE). Roles belong to the whole server: the down migration
--   leaves them, as other databases may use them.
-- * Only permissive policies: Citus (13.2) creates a table's policies on its shards without
--   AS RESTRICTIVE, which turned 005's restrictive tenant condition into one more permissive
--   policy there, and every row visible. Permissive policies are combined with OR, so the two
--   of each table never overlap: `<table>_all_rows` admits every row to a role without
--   agentpg_app's privileges (nothing changes for them, the owner, or superusers), and
--   `<table>_tenant` admits to agentpg_app's members the rows whose tenant's role is the
--   current role.
-- * The condition is computed per row (the hash of the row's tenant, compared with
--   current_user): agentpg-repo's statements reach rows through tenant-leading keys anyway, so
--   the policy adds a filter, not a scan; BENCHMARKS.md has its cost.
-- * agentpg.tenant is no longer read.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE FUNCTION agentpg_tenant_role(tenant TEXT) RETURNS NAME
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('agentpg_t_' || left(encode(sha256(convert_to(tenant, 'UTF8')), 'hex'), 48))::name $$;

COMMENT ON FUNCTION agentpg_tenant_role(TEXT) IS 'The role whose statements see and write the rows of tenant `tenant` (agentpg_t_ and 48 hex digits of the SHA-256 of the tenant id).';

CREATE FUNCTION agentpg_create_tenant_role(tenant TEXT, grantee NAME DEFAULT NULL) RETURNS NAME
    LANGUAGE plpgsql VOLATILE
    AS $$
DECLARE
    tenant_role NAME := agentpg_tenant_role(tenant);
BEGIN
    IF tenant IS NULL OR tenant = '' THEN
        RAISE EXCEPTION 'a tenant role needs a non-empty tenant' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = tenant_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN IN ROLE agentpg_app', tenant_role);
        EXCEPTION
            -- Another session created it between the check and the CREATE.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
    IF grantee IS NOT NULL THEN
        EXECUTE format('GRANT %I TO %I', tenant_role, grantee);
    END IF;
    RETURN tenant_role;
END
$$;

COMMENT ON FUNCTION agentpg_create_tenant_role(TEXT, NAME) IS 'Creates the role of tenant `tenant` (a login, member of agentpg_app) unless it exists, grants it to `grantee` if given, and returns its name. Needs CREATEROLE.';

DROP POLICY sessions_tenant ON sessions;
DROP POLICY sessions_all_rows ON sessions;
DROP POLICY messages_tenant ON messages;
DROP POLICY messages_all_rows ON messages;
DROP POLICY compaction_events_tenant ON compaction_events;
DROP POLICY compaction_events_all_rows ON compaction_events;
DROP POLICY message_archive_tenant ON message_archive;
DROP POLICY message_archive_all_rows ON message_archive;

CREATE POLICY sessions_all_rows ON sessions AS PERMISSIVE FOR ALL TO PUBLIC
    USING (NOT pg_has_role('agentpg_app', 'USAGE'))
    WITH CHECK (NOT pg_has_role('agentpg_app', 'USAGE'));
CREATE POLICY sessions_tenant ON sessions AS PERMISSIVE FOR ALL TO agentpg_app
    USING (agentpg_tenant_role(tenant_id) = current_user)
    WITH CHECK (agentpg_tenant_role(tenant_id) = current_user);

CREATE POLICY messages_all_rows ON messages AS PERMISSIVE FOR ALL TO PUBLIC
    USING (NOT pg_has_role('agentpg_app', 'USAGE'))
    WITH CHECK (NOT pg_has_role('agentpg_app', 'USAGE'));
CREATE POLICY messages_tenant ON messages AS PERMISSIVE FOR ALL TO agentpg_app
    USING (agentpg_tenant_role(tenant_id) = current_user)
    WITH CHECK (agentpg_tenant_role(tenant_id) = current_user);

CREATE POLICY compaction_events_all_rows ON compaction_events AS PERMISSIVE FOR ALL TO PUBLIC
    USING (NOT pg_has_role('agentpg_app', 'USAGE'))
    WITH CHECK (NOT pg_has_role('agentpg_app', 'USAGE'));
CREATE POLICY compaction_events_tenant ON compaction_events AS PERMISSIVE FOR ALL TO agentpg_app
    USING (agentpg_tenant_role(tenant_id) = current_user)
    WITH CHECK (agentpg_tenant_role(tenant_id) = current_user);

CREATE POLICY message_archive_all_rows ON message_archive AS PERMISSIVE FOR ALL TO PUBLIC
    USING (NOT pg_has_role('agentpg_app', 'USAGE'))
    WITH CHECK (NOT pg_has_role('agentpg_app', 'USAGE'));
CREATE POLICY message_archive_tenant ON message_archive AS PERMISSIVE FOR ALL TO agentpg_app
    USING (agentpg_tenant_role(tenant_id) = current_user)
    WITH CHECK (agentpg_tenant_role(tenant_id) = current_user);

COMMENT ON POLICY sessions_all_rows ON sessions IS 'Roles without agentpg_app''s privileges see every row, as without row-level security.';
COMMENT ON POLICY sessions_tenant ON sessions IS 'agentpg_app''s members see and write only the rows of the tenant whose role is the current role.';
COMMENT ON POLICY messages_all_rows ON messages IS 'Roles without agentpg_app''s privileges see every row, as without row-level security.';
COMMENT ON POLICY messages_tenant ON messages IS 'agentpg_app''s members see and write only the rows of the tenant whose role is the current role.';
COMMENT ON POLICY compaction_events_all_rows ON compaction_events IS 'Roles without agentpg_app''s privileges see every row, as without row-level security.';
COMMENT ON POLICY compaction_events_tenant ON compaction_events IS 'agentpg_app''s members see and write only the rows of the tenant whose role is the current role.';
COMMENT ON POLICY message_archive_all_rows ON message_archive IS 'Roles without agentpg_app''s privileges see every row, as without row-level security.';
COMMENT ON POLICY message_archive_tenant ON message_archive IS 'agentpg_app''s members see and write only the rows of the tenant whose role is the current role.';
