-- Full-text search over what a session's messages say, live and archived.
--
-- Decisions:
-- * What a message says is the text a model reads from it: its text blocks, the string
--   values of its tool_use inputs, and its tool_result contents (a string, or the text of text
--   blocks). Ids, names, block types and JSON keys are not words of the conversation and stay
--   out. agentpg_search_document(content) is the one definition of that document, and the
--   one place the text-search configuration is chosen ('english': stemming and stop words of
--   English). agentpg_search_query(text) parses a search with the same configuration, in web
--   search syntax (websearch_to_tsquery: words, "quoted phrases", OR, -excluded), which never
--   fails on any input; agentpg_search_snippet(content, query) highlights it.
-- * messages.search_document and message_archive.search_document are stored generated
--   columns over that function (the archive's over the archived row's content), so search
--   covers what compactions removed; the archive keeps rows as JSON, and the copy a
--   compaction archives leaves the search document out (it is derived from content).
-- * GIN indexes on (tenant_id, search_document) (btree_gin, from 001, for the tenant key):
--   a search is one index scan within its tenant, however many tenants share the table.
-- * Adding a stored generated column rewrites each table once (every row's document is
--   computed), under an ACCESS EXCLUSIVE lock: on large tables, run this migration in a
--   maintenance window. The statement timeout below is raised for that rewrite.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30min';

CREATE FUNCTION agentpg_search_document(content jsonb) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT jsonb_to_tsvector(
            'english'::regconfig,
            jsonb_path_query_array(content, '$[*] ? (@.type == "text").text')
                || jsonb_path_query_array(content, '$[*] ? (@.type == "tool_use").input')
                || jsonb_path_query_array(content, '$[*] ? (@.type == "tool_result").content ? (@.type() == "string")')
                || jsonb_path_query_array(content, '$[*] ? (@.type == "tool_result").content[*] ? (@.type == "text").text'),
            '["string"]'
        )
    $$;

CREATE FUNCTION agentpg_search_query(search text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT websearch_to_tsquery('english'::regconfig, search) $$;

CREATE FUNCTION agentpg_search_snippet(content jsonb, query tsquery) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT ts_headline(
            'english'::regconfig,
            (SELECT string_agg(value #>> '{}', ' ')
               FROM jsonb_array_elements(
                   jsonb_path_query_array(content, '$[*] ? (@.type == "text").text')
                   || jsonb_path_query_array(content, 'strict $[*] ? (@.type == "tool_use").input.**')
                   || jsonb_path_query_array(content, '$[*] ? (@.type == "tool_result").content ? (@.type() == "string")')
                   || jsonb_path_query_array(content, '$[*] ? (@.type == "tool_result").content[*] ? (@.type == "text").text')
               ) AS t(value)
              WHERE jsonb_typeof(value) = 'string'),
            query,
            'StartSel=<<, StopSel=>>, MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=" ... "'
        )
    $$;

-- A stored generated column computes every existing row's document: the rewrite is the point
-- (see the decisions above for when to run it).
ALTER TABLE messages ADD COLUMN search_document tsvector
    -- squawk-ignore adding-field-with-default
    GENERATED ALWAYS AS (agentpg_search_document(content)) STORED;
ALTER TABLE message_archive ADD COLUMN search_document tsvector
    -- squawk-ignore adding-field-with-default
    GENERATED ALWAYS AS (agentpg_search_document(original_message -> 'content')) STORED;

-- Not CONCURRENTLY: every migration runs in one transaction, which CONCURRENTLY cannot, and the
-- rewrite above already holds the tables' ACCESS EXCLUSIVE lock, so building the indexes
-- blocks nothing more.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX messages_search_idx ON messages USING gin (tenant_id, search_document);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX message_archive_search_idx ON message_archive USING gin (tenant_id, search_document);

COMMENT ON FUNCTION agentpg_search_document(jsonb) IS 'The search document of message content: its text blocks, tool_use input strings and tool_result texts, under the english configuration.';
COMMENT ON FUNCTION agentpg_search_query(text) IS 'A search in web search syntax, parsed with the configuration of agentpg_search_document.';
COMMENT ON FUNCTION agentpg_search_snippet(jsonb, tsquery) IS 'The words of content around a query''s matches, highlighted with << and >>.';
COMMENT ON COLUMN messages.search_document IS 'What the message says, for full-text search (agentpg_search_document of content).';
COMMENT ON COLUMN message_archive.search_document IS 'What the archived message says, for full-text search (agentpg_search_document of its content).';
