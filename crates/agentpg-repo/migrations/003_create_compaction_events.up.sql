-- Compaction events: the audit trail of every compaction applied to a session.
--
-- Decisions:
-- * The key is (tenant_id, id); the foreign key (tenant_id, session_id) -> sessions keeps an
--   event in its own tenant's session.
-- * Token figures are recorded as measured when the compaction ran; tokens_saved is a stored
--   generated column so it can never disagree with them (it is negative when a summary is
--   longer than what it replaced).
-- * summary_message_id names the summary message the compaction inserted. It is not a foreign
--   key: reverting deletes the summary message while the event stays as history.
-- * preserved_message_ids lists the messages the compaction was asked to keep; an array of ids
--   for the same reason (the messages may later be deleted, the event must not be).
-- * A revert does not delete the event: it sets reverted_at, so the audit trail stays whole.
-- * Retention drops the archive of an old standing compaction and sets finalized_at: the event
--   stays as history, but can no longer be reverted.
-- * seq orders a session's compactions totally (created_at is the transaction's start time, so
--   two compactions in one transaction tie); only the latest standing compaction, the one with
--   the highest seq and no reverted_at, may be reverted.

-- Fail fast rather than queue behind other sessions' locks (a foreign key locks the table it
-- references); both settings end with this migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE compaction_events (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id TEXT NOT NULL,
    session_id UUID NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    strategy TEXT NOT NULL,
    original_tokens BIGINT NOT NULL,
    compacted_tokens BIGINT NOT NULL,
    tokens_saved BIGINT GENERATED ALWAYS AS (original_tokens - compacted_tokens) STORED,
    messages_removed BIGINT NOT NULL,
    summary_content JSONB,
    summary_message_id UUID,
    preserved_message_ids UUID[] NOT NULL DEFAULT '{}',
    model_used TEXT,
    duration_ms BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reverted_at TIMESTAMPTZ,
    finalized_at TIMESTAMPTZ,
    CONSTRAINT compaction_events_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT compaction_events_session_fkey FOREIGN KEY (tenant_id, session_id)
        REFERENCES sessions (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT compaction_events_strategy_check CHECK (strategy <> ''),
    CONSTRAINT compaction_events_original_tokens_check CHECK (original_tokens >= 0),
    CONSTRAINT compaction_events_compacted_tokens_check CHECK (compacted_tokens >= 0),
    CONSTRAINT compaction_events_messages_removed_check CHECK (messages_removed >= 0),
    CONSTRAINT compaction_events_summary_content_check CHECK (jsonb_typeof(summary_content) = 'array'),
    CONSTRAINT compaction_events_duration_ms_check CHECK (duration_ms >= 0),
    CONSTRAINT compaction_events_finalized_check CHECK (finalized_at IS NULL OR reverted_at IS NULL)
);

-- A session's compaction history, newest first.
CREATE INDEX compaction_events_session_created_at_idx ON compaction_events (tenant_id, session_id, created_at DESC);
-- The latest standing compaction of a session (revert, and the order of history).
CREATE INDEX compaction_events_standing_idx ON compaction_events (tenant_id, session_id, seq DESC) WHERE reverted_at IS NULL;
-- Standing compactions whose archive is still kept, oldest first (retention).
CREATE INDEX compaction_events_unfinalized_idx ON compaction_events (tenant_id, created_at)
    WHERE reverted_at IS NULL AND finalized_at IS NULL;
-- A tenant's compactions by strategy, for reporting.
CREATE INDEX compaction_events_strategy_idx ON compaction_events (tenant_id, strategy);

COMMENT ON TABLE compaction_events IS 'Audit trail of the compactions applied to a session; reverted events stay, marked by reverted_at.';
COMMENT ON COLUMN compaction_events.id IS 'Identifier of the compaction, unique within its tenant.';
COMMENT ON COLUMN compaction_events.tenant_id IS 'Owner of the compaction: always its session''s tenant.';
COMMENT ON COLUMN compaction_events.session_id IS 'Session that was compacted.';
COMMENT ON COLUMN compaction_events.seq IS 'Order of the compactions: increases with every compaction, across sessions.';
COMMENT ON COLUMN compaction_events.strategy IS 'Name of the compaction strategy (for example summarization or hybrid). Non-empty.';
COMMENT ON COLUMN compaction_events.original_tokens IS 'Session token total before the compaction.';
COMMENT ON COLUMN compaction_events.compacted_tokens IS 'Session token total after the compaction.';
COMMENT ON COLUMN compaction_events.tokens_saved IS 'original_tokens - compacted_tokens, computed by the database.';
COMMENT ON COLUMN compaction_events.messages_removed IS 'Number of messages the compaction archived and removed.';
COMMENT ON COLUMN compaction_events.summary_content IS 'Content blocks of the summary message, as a JSON array; NULL when no summary was written.';
COMMENT ON COLUMN compaction_events.summary_message_id IS 'Id of the summary message the compaction inserted; NULL when none. Not a foreign key: the event outlives the message.';
COMMENT ON COLUMN compaction_events.preserved_message_ids IS 'Ids of the preserved messages the compaction kept.';
COMMENT ON COLUMN compaction_events.model_used IS 'Model that wrote the summary, if any.';
COMMENT ON COLUMN compaction_events.duration_ms IS 'How long the compaction took, in milliseconds, as measured by the caller.';
COMMENT ON COLUMN compaction_events.created_at IS 'When the compaction was applied.';
COMMENT ON COLUMN compaction_events.reverted_at IS 'When the compaction was reverted; NULL while it stands.';
COMMENT ON COLUMN compaction_events.finalized_at IS 'When retention dropped the archive of this standing compaction; it can no longer be reverted. NULL while the archive is kept.';
