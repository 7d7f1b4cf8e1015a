-- Token accounting: a message counts its own size; the model API's usage is kept beside it.
--
-- Decisions:
-- * A model API reports the whole prompt on every response: Anthropic's input_tokens (plus
--   cache_creation_input_tokens and cache_read_input_tokens, which it reports apart), OpenAI's
--   prompt_tokens / input_tokens. Stored as a message's usage, that figure would make
--   sessions.total_tokens a sum of prompt sizes, counting every earlier message again at each
--   turn.
-- * provider_usage keeps the usage object of the response that produced the message, exactly as
--   the provider reported it (prompt, output and cache figures). Nothing sums it: it is the
--   record of what the provider said, and what agentpg-repo's accounting reconciles against.
-- * usage keeps the meaning 002 gave it, now stated: the message's own token counts. tokens
--   (input plus output of usage) stays what a message counts toward its session, computed by
--   the same rule. agentpg-repo's accounting (agentpg_repo::tokens) writes usage from the
--   provider's figures where they exist: an assistant message counts its output tokens plus the
--   part of the prompt that answered it which the session had not counted yet (the error of
--   the estimates since the previous response, and text sent outside the stored messages), so
--   the session's total equals the provider's prompt plus output after every response; any
--   other message counts an estimate of its own size until the next response corrects it.
-- * Additive: one nullable column, no default, no table rewrite. Existing rows keep meaning
--   what they meant: their provider_usage is NULL and their tokens are unchanged. The archive
--   holds whole rows as JSON, so a message archived before this migration is restored with
--   provider_usage NULL.

-- Fail fast rather than queue behind other sessions' locks; both settings end with this
-- migration's transaction.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

ALTER TABLE messages ADD COLUMN provider_usage JSONB
    CONSTRAINT messages_provider_usage_check CHECK (jsonb_typeof(provider_usage) = 'object');

COMMENT ON COLUMN messages.provider_usage IS 'Usage the model API reported for the response that produced the message (whole prompt, output, cache figures), as reported; never summed. NULL when the message is not a model response or the caller did not give it.';
COMMENT ON COLUMN messages.usage IS 'The message''s own token counts (what it adds to a prompt, or the output it generated), as a JSON object; NULL when unknown. Not the provider''s per-response usage, which is provider_usage.';
