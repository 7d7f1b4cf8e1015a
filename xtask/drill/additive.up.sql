-- The drill's migration: routine additive changes to messages and sessions.
ALTER TABLE messages ADD COLUMN agent_name TEXT;
ALTER TABLE messages ADD COLUMN turn_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN mood TEXT NOT NULL DEFAULT 'calm'
    CONSTRAINT messages_mood_check CHECK (mood IN ('calm', 'angry'));
ALTER TABLE sessions ADD COLUMN title TEXT;
ALTER TABLE sessions ADD COLUMN priority INTEGER NOT NULL DEFAULT 3;
