DROP TRIGGER documents_touch ON documents;
DROP FUNCTION touch_documents();
ALTER TABLE documents DROP COLUMN summary;
ALTER TABLE documents ALTER COLUMN body DROP NOT NULL;
DROP TABLE revisions;
