ALTER TABLE documents RENAME COLUMN body TO content;
ALTER TABLE documents ALTER COLUMN content DROP DEFAULT;
ALTER TABLE documents ALTER COLUMN medium SET DEFAULT 7;
ALTER TABLE documents ALTER COLUMN small TYPE BIGINT;
ALTER TABLE documents ALTER COLUMN summary SET DEFAULT 'none';
ALTER TABLE documents ALTER COLUMN code SET NOT NULL;
ALTER TABLE documents ALTER COLUMN code DROP NOT NULL;
ALTER TABLE documents DROP COLUMN raw;
ALTER TABLE documents DROP COLUMN IF EXISTS never_existed;
ALTER TABLE IF EXISTS never_existed ADD COLUMN x INT;
CREATE TABLE IF NOT EXISTS documents (id INT);

ALTER TABLE revisions ADD COLUMN mood TEXT;
ALTER TABLE revisions ADD CONSTRAINT revisions_mood_check CHECK (mood IN ('calm', 'angry'));
ALTER TABLE revisions ADD CONSTRAINT revisions_note_check CHECK (note <> '');
ALTER TABLE revisions DROP CONSTRAINT revisions_note_check;
ALTER TABLE revisions DROP CONSTRAINT IF EXISTS revisions_never_existed;
ALTER TABLE revisions RENAME CONSTRAINT revisions_mood_check TO revisions_mood_allowed;

CREATE TABLE scratch (id UUID PRIMARY KEY, n INT);
ALTER TABLE scratch RENAME TO scratch_renamed;
DROP TABLE scratch_renamed;
DROP TABLE IF EXISTS scratch;

CREATE TABLE "Labels" (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id BIGINT REFERENCES documents ON DELETE CASCADE,
    "type" TEXT NOT NULL,
    status doc_status,
    statuses doc_status[]
);
ALTER TABLE "Labels" RENAME TO labels;

CREATE TYPE obsolete AS ENUM ('a', 'b');
DROP TYPE obsolete;
ALTER TYPE doc_status RENAME VALUE 'archived' TO 'retired';

COMMENT ON COLUMN documents.content IS 'Body text.';
COMMENT ON COLUMN public.labels.type IS 'What kind of label.';
GRANT SELECT ON documents TO PUBLIC;
