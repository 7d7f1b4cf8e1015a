DROP TABLE documents;
DROP TYPE doc_status;
