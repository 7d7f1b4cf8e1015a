ALTER TABLE sessions DROP COLUMN priority;
ALTER TABLE sessions DROP COLUMN title;
ALTER TABLE messages DROP COLUMN mood;
ALTER TABLE messages DROP COLUMN turn_index;
ALTER TABLE messages DROP COLUMN agent_name;
