CREATE TABLE revisions (
    document_id BIGINT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    revision INT NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    note TEXT,
    PRIMARY KEY (document_id, revision)
);

ALTER TABLE documents ADD COLUMN summary TEXT, ADD COLUMN IF NOT EXISTS title VARCHAR(10);
ALTER TABLE documents ALTER COLUMN body SET NOT NULL;
ALTER TYPE doc_status ADD VALUE 'archived' AFTER 'published';
ALTER TYPE doc_status ADD VALUE IF NOT EXISTS 'draft';
ALTER TYPE doc_status ADD VALUE 'review' BEFORE 'published';

CREATE FUNCTION touch_documents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER documents_touch BEFORE UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION touch_documents();
DO $$ BEGIN RAISE NOTICE 'fixture 002 applied; semicolons; inside'; END $$;
