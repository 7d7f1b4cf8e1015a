-- Fixture for the code generator: every construct it models, spread over several files.
-- Not part of agentpg's schema.
CREATE TYPE doc_status AS ENUM ('draft', 'published');

CREATE TABLE public."documents" (
    -- Surrogate key.
    -- Second line of the doc.
    id BIGSERIAL PRIMARY KEY,
    uid UUID NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    title VARCHAR(200) NOT NULL,
    code CHAR(4),
    body TEXT DEFAULT '',
    status doc_status NOT NULL DEFAULT 'draft',
    kind TEXT NOT NULL CHECK (kind IN ('note', 'report', 'in-progress')),
    tags TEXT[] NOT NULL DEFAULT '{}',
    scores INT4[],
    attributes JSONB NOT NULL DEFAULT '{}',
    raw JSON,
    small SMALLINT,
    medium INTEGER NOT NULL DEFAULT 0,
    ratio REAL,
    precise DOUBLE PRECISION,
    amount NUMERIC(12, 2),
    flag BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    local_at TIMESTAMP,
    day DATE,
    at_time TIME,
    blob BYTEA,
    word_count INT GENERATED ALWAYS AS (medium * 2) STORED,
    "Quoted Col" TEXT,
    CONSTRAINT documents_title_check CHECK (title <> '')
);

CREATE INDEX documents_title_idx ON documents (title);
COMMENT ON TABLE documents IS 'Documents of the fixture.';
COMMENT ON COLUMN documents.title IS 'Title of the document.';
COMMENT ON TYPE doc_status IS 'Lifecycle of a document.';
