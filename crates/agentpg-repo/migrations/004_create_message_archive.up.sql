-- Message archive: every message a compaction removed, whole, so the compaction can be reverted.
--
-- Decisions:
-- * The key is (tenant_id, id), id being the archived message's own id. A message is archived
--   by at most one standing compaction at a time (a revert removes its archive rows).
-- * The foreign keys include tenant_id, so an archive row belongs to an event and a session of
--   its own tenant.
-- * original_message is the whole messages row as a JSON object (to_jsonb of the row): every
--   column, including position, flags and timestamps, so a revert restores it field for field.
--   A revert reads each current column from its key and gives a column the archive does not
--   have (one a later migration added) its default, so archives survive additive migrations.
--   CHECKs tie the JSON to the row's id, session and tenant.

-- Fail fast rather than queue behind other sessions' locks (a foreign key locks the table it
-- references); both settings end with this migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE message_archive (
    id UUID NOT NULL,
    tenant_id TEXT NOT NULL,
    compaction_event_id UUID NOT NULL,
    session_id UUID NOT NULL,
    original_message JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT message_archive_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT message_archive_compaction_event_fkey FOREIGN KEY (tenant_id, compaction_event_id)
        REFERENCES compaction_events (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT message_archive_session_fkey FOREIGN KEY (tenant_id, session_id)
        REFERENCES sessions (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT message_archive_original_message_check CHECK (
        jsonb_typeof(original_message) = 'object'
        AND original_message ->> 'id' = id::text
        AND original_message ->> 'session_id' = session_id::text
        AND original_message ->> 'tenant_id' = tenant_id
    )
);

-- The messages an event archived (revert, history, retention).
CREATE INDEX message_archive_compaction_event_idx ON message_archive (tenant_id, compaction_event_id);
-- A session's archive, newest first.
CREATE INDEX message_archive_session_archived_at_idx ON message_archive (tenant_id, session_id, archived_at DESC);

COMMENT ON TABLE message_archive IS 'Messages removed by a standing compaction, kept whole so the compaction can be reverted.';
COMMENT ON COLUMN message_archive.id IS 'Id of the archived message (the original messages.id).';
COMMENT ON COLUMN message_archive.tenant_id IS 'Owner of the archived message.';
COMMENT ON COLUMN message_archive.compaction_event_id IS 'Compaction that removed the message.';
COMMENT ON COLUMN message_archive.session_id IS 'Session the message belonged to.';
COMMENT ON COLUMN message_archive.original_message IS 'The whole original messages row as a JSON object, enough to restore it field for field.';
COMMENT ON COLUMN message_archive.archived_at IS 'When the archive row was written.';
