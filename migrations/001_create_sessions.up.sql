-- Sessions: one conversation of one agent, owned by one tenant.
--
-- Decisions:
-- * Every row of every table belongs to exactly one tenant, and the tenant leads every key:
--   the primary key is (tenant_id, id), and every foreign key between our tables includes
--   tenant_id, so the database itself refuses a row that points at another tenant's row. The
--   same layout lets the schema be hash-partitioned or distributed by tenant (Citus) unchanged.
-- * (tenant_id, identifier) is unique, so a caller can address a session by its own name.
-- * tenant_id and identifier must be non-empty: an empty tenant would silently pool unrelated
--   data together.
-- * A child session (a nested agent) belongs to its parent's tenant: the foreign key
--   (tenant_id, parent_session_id) -> (tenant_id, id) cannot point elsewhere.
-- * A fork records where it came from (forked_from_session_id, forked_from_message_id). They are
--   not foreign keys: a fork outlives the session and message it was copied from.
-- * total_tokens and compaction_count are kept exact by agentpg-repo in the same statement as
--   the writes that change them; they can never go negative.
-- * last_position is the position of the last message appended (NULL before the first). It
--   lives on the session row, which every append locks, so "append only if nothing was appended
--   since position P" is decided under that lock, on the current value.
-- * updated_at is set by agentpg-repo (no trigger), so bulk inserts pay for no per-row trigger.
--   created_at never changes after insert, which makes it a stable key to page over.
-- * Metadata search is scoped to a tenant, so its GIN index holds the tenant too: one index scan
--   intersects "this tenant" with "this metadata" whatever either matches alone. A GIN index over
--   a text column needs the btree_gin extension (shipped with PostgreSQL's contrib modules and
--   trusted since PostgreSQL 13: a database owner can create it without superuser rights).

-- Fail fast rather than queue behind other sessions' locks (a foreign key locks the table it
-- references); both settings end with this migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE sessions (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    parent_session_id UUID,
    forked_from_session_id UUID,
    forked_from_message_id UUID,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    total_tokens BIGINT NOT NULL DEFAULT 0,
    compaction_count BIGINT NOT NULL DEFAULT 0,
    last_position BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT sessions_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT sessions_tenant_id_identifier_key UNIQUE (tenant_id, identifier),
    CONSTRAINT sessions_parent_session_fkey FOREIGN KEY (tenant_id, parent_session_id)
        REFERENCES sessions (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT sessions_tenant_id_check CHECK (tenant_id <> ''),
    CONSTRAINT sessions_identifier_check CHECK (identifier <> ''),
    CONSTRAINT sessions_not_own_parent_check CHECK (parent_session_id <> id),
    CONSTRAINT sessions_fork_check CHECK (
        (forked_from_session_id IS NULL) = (forked_from_message_id IS NULL)
    ),
    CONSTRAINT sessions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT sessions_total_tokens_check CHECK (total_tokens >= 0),
    CONSTRAINT sessions_compaction_count_check CHECK (compaction_count >= 0)
);

-- A tenant's sessions, most recently updated first; `id` breaks ties for keyset pagination.
CREATE INDEX sessions_tenant_id_updated_at_idx ON sessions (tenant_id, updated_at DESC, id DESC);
-- A tenant's sessions, newest created first: the keyset order that writes never move.
CREATE INDEX sessions_tenant_id_created_at_idx ON sessions (tenant_id, created_at DESC, id DESC);
-- Children of a session (nested agents), and the cascade when a parent is deleted.
CREATE INDEX sessions_parent_session_idx ON sessions (tenant_id, parent_session_id);
-- Forks of a session.
CREATE INDEX sessions_forked_from_session_idx ON sessions (tenant_id, forked_from_session_id)
    WHERE forked_from_session_id IS NOT NULL;
-- A tenant's sessions whose metadata contains a given JSON object
-- (`tenant_id = $1 AND metadata @> '{"project": "x"}'`).
CREATE INDEX sessions_tenant_id_metadata_idx ON sessions USING gin (tenant_id, metadata jsonb_path_ops);
-- Sessions whose identifier starts with a given prefix (`identifier LIKE 'abc%'`).
CREATE INDEX sessions_identifier_prefix_idx ON sessions (tenant_id, identifier text_pattern_ops);

COMMENT ON TABLE sessions IS 'One conversation of one agent, owned by one tenant.';
COMMENT ON COLUMN sessions.id IS 'Identifier of the session, unique within its tenant.';
COMMENT ON COLUMN sessions.tenant_id IS 'Owner of the session; leads every key, and every read and write is scoped by it. Non-empty.';
COMMENT ON COLUMN sessions.identifier IS 'Caller-chosen name of the session, unique within its tenant. Non-empty.';
COMMENT ON COLUMN sessions.parent_session_id IS 'Session that spawned this one (nested agents), in the same tenant; NULL for a root session.';
COMMENT ON COLUMN sessions.forked_from_session_id IS 'Session this one was forked from, if it is a fork (not a foreign key: the fork outlives its source).';
COMMENT ON COLUMN sessions.forked_from_message_id IS 'Last message of the source session that the fork copied, if it is a fork.';
COMMENT ON COLUMN sessions.metadata IS 'Project metadata as a JSON object; defaults to {}.';
COMMENT ON COLUMN sessions.total_tokens IS 'Sum of the tokens of the messages currently in the session, kept exact by agentpg-repo.';
COMMENT ON COLUMN sessions.compaction_count IS 'Number of compactions applied and not reverted.';
COMMENT ON COLUMN sessions.last_position IS 'Position of the last message appended to the session; NULL before the first.';
COMMENT ON COLUMN sessions.created_at IS 'When the session was created; never changes.';
COMMENT ON COLUMN sessions.updated_at IS 'When the session or its messages last changed.';
