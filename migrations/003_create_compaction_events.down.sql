-- Reverts 003_create_compaction_events.up.sql.
DROP TABLE compaction_events;
