-- Session changes: the changes to a session's conversation other than appends, in the order
-- they committed, so that a follower (agentpg_repo::follow_session) can replay a session.
--
-- Decisions:
-- * Appends need no row here: every append takes positions after the session's
--   last_position, under the session row's lock, so positions already order appends by
--   commit. A change (a compaction, a revert, a delete of messages) takes the next seq of its
--   session under the same lock and records the session's last_position at that moment in
--   after_position: it committed after every append at or below that position and before
--   every append above it. Positions and (after_position, seq) together are one total order
--   of everything that happened to the session, with no gap (a rolled-back change frees its
--   seq for the next) and in commit order.
-- * message_ids are the messages the change removed (compacted, deleted) or brought back
--   (reverted), in position order: the archive forgets them on revert and retention, the
--   change row keeps them.
-- * Like every table of the schema, the primary key is (tenant_id, id), and the unique key
--   (tenant_id, session_id, seq) and the foreign keys lead with tenant_id: on Citus the table is distributed by tenant_id with the others (below, when the
--   schema is already distributed; SCALING.md otherwise), and its rows go with their session.
-- * agentpg_follow_channel(tenant, session) names the LISTEN/NOTIFY channel of one session:
--   writers notify it after a change, followers listen on it. A notification only wakes a
--   follower, which then reads the changes by position; a lost one delays it until its next
--   poll, never loses a change. The name is a hash, so a channel tells nobody the tenant.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';
-- On Citus, distributing the table in the transaction that created it needs one connection per
-- node; elsewhere this setting is an unused placeholder.
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';

CREATE TABLE session_changes (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id TEXT NOT NULL,
    session_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    after_position BIGINT NOT NULL,
    compaction_event_id UUID,
    message_ids UUID[] NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT session_changes_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT session_changes_session_seq_key UNIQUE (tenant_id, session_id, seq),
    CONSTRAINT session_changes_seq_check CHECK (seq > 0),
    CONSTRAINT session_changes_kind_check CHECK (kind IN ('compacted', 'reverted', 'removed')),
    CONSTRAINT session_changes_after_position_check CHECK (after_position >= 0),
    CONSTRAINT session_changes_event_check CHECK (
        (compaction_event_id IS NOT NULL) = (kind IN ('compacted', 'reverted'))
    )
);

-- On a schema Citus already distributes, the new table joins it before its foreign keys (a
-- local table cannot reference a distributed one).
DO $distribute$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        IF EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'sessions'::regclass) THEN
            PERFORM create_distributed_table('session_changes', 'tenant_id', colocate_with => 'sessions');
        END IF;
    END IF;
END
$distribute$;

ALTER TABLE session_changes ADD CONSTRAINT session_changes_session_fkey
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE session_changes ADD CONSTRAINT session_changes_compaction_event_fkey
    FOREIGN KEY (tenant_id, compaction_event_id) REFERENCES compaction_events (tenant_id, id)
    ON DELETE CASCADE;

CREATE INDEX session_changes_compaction_event_idx ON session_changes (tenant_id, compaction_event_id)
    WHERE compaction_event_id IS NOT NULL;

GRANT SELECT, INSERT, DELETE ON session_changes TO agentpg_app;
ALTER TABLE session_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY session_changes_all_rows ON session_changes AS PERMISSIVE FOR ALL TO PUBLIC
    USING (NOT pg_has_role('agentpg_app', 'USAGE'))
    WITH CHECK (NOT pg_has_role('agentpg_app', 'USAGE'));
CREATE POLICY session_changes_tenant ON session_changes AS PERMISSIVE FOR ALL TO agentpg_app
    USING (agentpg_tenant_role(tenant_id) = current_user)
    WITH CHECK (agentpg_tenant_role(tenant_id) = current_user);

CREATE FUNCTION agentpg_follow_channel(tenant TEXT, session UUID) RETURNS TEXT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT 'agentpg_f_' || left(encode(sha256(convert_to(tenant || '/' || session::text, 'UTF8')), 'hex'), 48) $$;

COMMENT ON FUNCTION agentpg_follow_channel(TEXT, UUID) IS 'The LISTEN/NOTIFY channel of session `session` of tenant `tenant` (agentpg_f_ and 48 hex digits of the SHA-256 of tenant/session): writers notify it after a change, followers listen on it.';

COMMENT ON TABLE session_changes IS 'Changes to a session''s conversation other than appends (compactions, reverts, deletes of messages), in commit order; with the positions of appended messages, the order a follower replays.';
COMMENT ON COLUMN session_changes.id IS 'Identifier of the change, unique within its tenant.';
COMMENT ON COLUMN session_changes.tenant_id IS 'Owner of the change: always its session''s tenant.';
COMMENT ON COLUMN session_changes.session_id IS 'Session that changed.';
COMMENT ON COLUMN session_changes.seq IS 'Order of the session''s changes: 1, 2, 3, … in commit order, with no gap; unique within the session.';
COMMENT ON COLUMN session_changes.kind IS 'What changed: compacted, reverted (a compaction undone) or removed (messages deleted).';
COMMENT ON COLUMN session_changes.after_position IS 'The session''s last_position when the change committed (0 before the first message): the change follows every append at or below it and precedes every append above it.';
COMMENT ON COLUMN session_changes.compaction_event_id IS 'The compaction applied or reverted; NULL for removed.';
COMMENT ON COLUMN session_changes.message_ids IS 'Ids of the messages the change removed (compacted, removed) or restored (reverted), in position order.';
COMMENT ON COLUMN session_changes.created_at IS 'When the change was written.';
