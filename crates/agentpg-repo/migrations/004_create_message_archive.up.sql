-- Message archive: every message a compaction removed, whole, so the compaction can be reverted.
--
-- Decisions:
-- * id is the archived message's own id. A message is archived by at most one standing
--   compaction at a time (a revert removes its archive rows), so the id is the primary key.
-- * original_message is the whole messages row as a JSON object (to_jsonb of the row): every
--   column, including position, flags and timestamps, so a revert restores it field for field.
--   CHECKs tie it to the row's id and session.

-- Fail fast rather than queue behind other sessions' locks (a foreign key locks the table it
-- references); both settings end with this migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

CREATE TABLE message_archive (
    id UUID NOT NULL,
    compaction_event_id UUID NOT NULL,
    session_id UUID NOT NULL,
    original_message JSONB NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT message_archive_pkey PRIMARY KEY (id),
    CONSTRAINT message_archive_compaction_event_id_fkey FOREIGN KEY (compaction_event_id)
        REFERENCES compaction_events (id) ON DELETE CASCADE,
    CONSTRAINT message_archive_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES sessions (id) ON DELETE CASCADE,
    CONSTRAINT message_archive_original_message_check CHECK (
        jsonb_typeof(original_message) = 'object'
        AND original_message ->> 'id' = id::text
        AND original_message ->> 'session_id' = session_id::text
    )
);

-- The messages an event archived (revert, history).
CREATE INDEX message_archive_compaction_event_id_idx ON message_archive (compaction_event_id);
-- A session's archive, newest first.
CREATE INDEX message_archive_session_id_archived_at_idx ON message_archive (session_id, archived_at DESC);

COMMENT ON TABLE message_archive IS 'Messages removed by a standing compaction, kept whole so the compaction can be reverted.';
COMMENT ON COLUMN message_archive.id IS 'Id of the archived message (the original messages.id).';
COMMENT ON COLUMN message_archive.compaction_event_id IS 'Compaction that removed the message.';
COMMENT ON COLUMN message_archive.session_id IS 'Session the message belonged to.';
COMMENT ON COLUMN message_archive.original_message IS 'The whole original messages row as a JSON object, enough to restore it field for field.';
COMMENT ON COLUMN message_archive.archived_at IS 'When the message was archived.';
