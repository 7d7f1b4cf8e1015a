-- Sessions: one conversation of one agent, owned by one tenant.
--
-- Decisions:
-- * Every row belongs to exactly one tenant; `(tenant_id, identifier)` is unique, so a caller can
--   address a session by its own name instead of our UUID.
-- * tenant_id and identifier must be non-empty: an empty tenant would silently pool unrelated
--   data together.
-- * A child session (a nested agent) must belong to its parent's tenant. The composite foreign
--   key `(parent_session_id, tenant_id) -> (id, tenant_id)` makes the database enforce that; the
--   extra unique constraint on `(id, tenant_id)` exists only to be its target.
-- * total_tokens and compaction_count are kept exact by agentpg-repo in the same transaction as
--   the writes that change them; they can never go negative.
-- * updated_at is set by agentpg-repo (no trigger), so bulk inserts pay for no per-row trigger.

-- Fail fast rather than queue behind other sessions' locks (a foreign key locks the table it
-- references); both settings end with this migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE sessions (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    parent_session_id UUID,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    compaction_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_id_tenant_id_key UNIQUE (id, tenant_id),
    CONSTRAINT sessions_tenant_id_identifier_key UNIQUE (tenant_id, identifier),
    CONSTRAINT sessions_parent_session_fkey FOREIGN KEY (parent_session_id, tenant_id)
        REFERENCES sessions (id, tenant_id) ON DELETE CASCADE,
    CONSTRAINT sessions_tenant_id_check CHECK (tenant_id <> ''),
    CONSTRAINT sessions_identifier_check CHECK (identifier <> ''),
    CONSTRAINT sessions_not_own_parent_check CHECK (parent_session_id <> id),
    CONSTRAINT sessions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT sessions_total_tokens_check CHECK (total_tokens >= 0),
    CONSTRAINT sessions_compaction_count_check CHECK (compaction_count >= 0)
);

-- A tenant's sessions, most recently updated first; `id` breaks ties for keyset pagination.
CREATE INDEX sessions_tenant_id_updated_at_idx ON sessions (tenant_id, updated_at DESC, id DESC);
-- Children of a session (nested agents), and the cascade when a parent is deleted.
CREATE INDEX sessions_parent_session_id_idx ON sessions (parent_session_id);

COMMENT ON TABLE sessions IS 'One conversation of one agent, owned by one tenant.';
COMMENT ON COLUMN sessions.id IS 'Primary key.';
COMMENT ON COLUMN sessions.tenant_id IS 'Owner of the session; every read and write is scoped by it. Non-empty.';
COMMENT ON COLUMN sessions.identifier IS 'Caller-chosen name of the session, unique within its tenant. Non-empty.';
COMMENT ON COLUMN sessions.parent_session_id IS 'Session that spawned this one (nested agents), in the same tenant; NULL for a root session.';
COMMENT ON COLUMN sessions.metadata IS 'Project metadata as a JSON object; defaults to {}.';
COMMENT ON COLUMN sessions.total_tokens IS 'Sum of input and output tokens of the messages currently in the session, kept exact by agentpg-repo.';
COMMENT ON COLUMN sessions.compaction_count IS 'Number of compactions applied and not reverted.';
COMMENT ON COLUMN sessions.created_at IS 'When the session was created.';
COMMENT ON COLUMN sessions.updated_at IS 'When the session or its messages last changed.';
