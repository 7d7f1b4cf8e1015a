//! Token accounting: what each message counts toward its session's `total_tokens`.
//!
//! # The model
//!
//! A model API reports, on every response, the size of the *whole prompt* it was sent
//! (Anthropic: `input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens`;
//! OpenAI: `prompt_tokens` / `input_tokens`) and the output it generated. Stored as a message's
//! `usage`, that figure would make the session's total a sum of prompt sizes. So:
//!
//! * **`provider_usage`** keeps the response's usage exactly as reported, on the assistant
//!   message that response produced. Nothing sums it.
//! * **`usage`** is the message's *own* size, and `tokens` (input plus output of `usage`, computed
//!   by the database) is what it counts toward the session. [`Accounting`] writes it:
//!   - a message the provider did not count (a user turn, tool results, a system message, a
//!     compaction's summary) counts an *estimate* of its size, from a [`TokenEstimator`];
//!   - the assistant message of a response counts its output tokens **corrected by the part of
//!     the prompt that the session had not counted**: the provider's prompt size minus the
//!     session's total when the prompt was sent, the estimators' error on the messages sent since
//!     the previous response ([`response_usage`]). After every response the session's total is
//!     exactly the provider's prompt plus its output.
//!   - what the prompt holds outside the stored messages (tool definitions) is counted on the
//!     system message, which is kept preserved ([`Accounting::count_system`]): it is in every
//!     prompt, so no compaction may take it off the total.
//!
//! Between two responses the total is off by the estimator's error on the messages appended
//! since the last response, and the next response puts it right. A compaction takes the
//! removed responses' corrections with them (the errors of estimates that are gone too); the
//! summary counts its own estimate, and the next response corrects again. An overestimate
//! larger than the response's output cannot be taken back from earlier messages: the total then
//! stays high by the rest until a compaction removes the messages that carry it.
//!
//! # The estimator
//!
//! [`ApproxEstimator`] (the default) needs no tokenizer: about four characters of ASCII text per
//! token, one token per other character, tool inputs and structured results counted as their
//! JSON text, a fixed figure per image and per binary document, and a few tokens of framing per
//! message and per block. With the `tiktoken` feature, `TiktokenEstimator` counts with OpenAI's
//! own `o200k_base` encoding. The unit tests measure both against a tool-using conversation
//! whose prompts are counted by that encoding with OpenAI's documented chat framing.

use agentpg_schema::{ContentBlock, ContentBlocks, MessageRole, NewMessage, Usage};
use serde_json::Value;
use sqlx::types::Json;

use crate::Summary;

/// Estimates the tokens a message adds to a prompt, for messages the provider does not count.
pub trait TokenEstimator {
    /// Tokens that `content`, sent as a message of `role`, adds to a prompt.
    fn estimate(&self, role: MessageRole, content: &[ContentBlock]) -> i64;

    /// Tokens of `text` sent as it is (no message framing): for what a prompt holds outside
    /// the messages, such as tool definitions.
    fn estimate_text(&self, text: &str) -> i64;
}

/// The default estimator: an approximation without a tokenizer, good to some tens of percent on
/// English prose, code and JSON (measured in this module's tests; the accounting corrects the
/// session's total at every response, so its error never accumulates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApproxEstimator {
    /// ASCII characters per token (4.0: the figure both OpenAI and Anthropic give for English).
    pub ascii_chars_per_token: f64,
    /// Tokens per character outside ASCII (1.0: CJK text is about one token per character).
    pub tokens_per_other_char: f64,
    /// Framing tokens per message (role markers).
    pub per_message: i64,
    /// Framing tokens per content block (block markers, tool names and ids).
    pub per_block: i64,
    /// Tokens per image (1,600: what Anthropic charges for an image of about 1.15 megapixels,
    /// the size it scales larger images down to).
    pub per_image: i64,
    /// Tokens per document whose text is not given (a PDF as base64 or a file reference).
    pub per_binary_document: i64,
}

impl Default for ApproxEstimator {
    fn default() -> Self {
        ApproxEstimator {
            ascii_chars_per_token: 4.0,
            tokens_per_other_char: 1.0,
            per_message: 4,
            per_block: 3,
            per_image: 1_600,
            per_binary_document: 1_600,
        }
    }
}

impl ApproxEstimator {
    /// Tokens of `text` by this estimator's rule.
    pub fn text_tokens(&self, text: &str) -> f64 {
        let ascii = text.bytes().filter(u8::is_ascii).count();
        let other = text.chars().count() - ascii;
        ascii as f64 / self.ascii_chars_per_token.max(f64::MIN_POSITIVE)
            + other as f64 * self.tokens_per_other_char
    }

    /// Tokens of a JSON value sent as text (a string as itself, anything else as compact JSON).
    fn json_tokens(&self, value: &Value) -> f64 {
        match value {
            Value::String(s) => self.text_tokens(s),
            other => self.text_tokens(&other.to_string()),
        }
    }

    fn block_tokens(&self, block: &ContentBlock) -> f64 {
        let framing = self.per_block as f64;
        framing
            + match block {
                ContentBlock::Text(b) => self.text_tokens(&b.text),
                ContentBlock::ToolUse(b) => {
                    self.text_tokens(&b.name) + self.text_tokens(&b.id) + self.json_tokens(&b.input)
                }
                ContentBlock::ToolResult(b) => {
                    self.text_tokens(&b.tool_use_id)
                        + match &b.content {
                            // Blocks inside a result count as blocks.
                            Some(Value::Array(items)) => items
                                .iter()
                                .map(|item| {
                                    match serde_json::from_value::<ContentBlock>(item.clone()) {
                                        Ok(block) => self.block_tokens(&block),
                                        Err(_) => self.json_tokens(item),
                                    }
                                })
                                .sum(),
                            Some(other) => self.json_tokens(other),
                            None => 0.0,
                        }
                }
                ContentBlock::Image(_) => self.per_image as f64,
                ContentBlock::Document(b) => {
                    match (
                        b.source.get("type").and_then(Value::as_str),
                        b.source.get("data").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(text)) => self.text_tokens(text),
                        _ => self.per_binary_document as f64,
                    }
                }
                ContentBlock::Thinking(b) => self.text_tokens(&b.thinking),
                // Encrypted reasoning: its size in the prompt is not knowable from here; the
                // data's length is the best figure there is.
                ContentBlock::RedactedThinking(b) => self.text_tokens(&b.data),
                ContentBlock::Unknown(map) => {
                    self.text_tokens(&Value::Object(map.clone()).to_string())
                }
            }
    }
}

impl TokenEstimator for ApproxEstimator {
    fn estimate(&self, _role: MessageRole, content: &[ContentBlock]) -> i64 {
        let tokens: f64 = content.iter().map(|b| self.block_tokens(b)).sum();
        // Rounded up: a message is never free.
        (tokens.ceil() as i64).saturating_add(self.per_message)
    }

    fn estimate_text(&self, text: &str) -> i64 {
        self.text_tokens(text).ceil() as i64
    }
}

/// OpenAI's own tokenizer (`o200k_base`, the encoding of the GPT-4o and later models) with the
/// chat framing OpenAI documents: each message's text tokens plus three framing tokens. Exact
/// for text messages sent to those models; tool calls and results are counted as their JSON
/// text, as they are serialized in the prompt.
#[cfg(feature = "tiktoken")]
pub struct TiktokenEstimator {
    bpe: &'static tiktoken_rs::CoreBPE,
}

#[cfg(feature = "tiktoken")]
impl std::fmt::Debug for TiktokenEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TiktokenEstimator(o200k_base)")
    }
}

#[cfg(feature = "tiktoken")]
impl TiktokenEstimator {
    /// The `o200k_base` estimator (the encoding is built once per process).
    pub fn o200k() -> Self {
        TiktokenEstimator {
            bpe: tiktoken_rs::o200k_base_singleton(),
        }
    }

    fn text(&self, text: &str) -> i64 {
        i64::try_from(self.bpe.encode_ordinary(text).len()).unwrap_or(i64::MAX)
    }
}

#[cfg(feature = "tiktoken")]
impl TokenEstimator for TiktokenEstimator {
    fn estimate(&self, _role: MessageRole, content: &[ContentBlock]) -> i64 {
        let approx = ApproxEstimator::default();
        let body: i64 = content
            .iter()
            .map(|block| match block {
                ContentBlock::Text(b) => self.text(&b.text),
                ContentBlock::ToolUse(b) => {
                    self.text(&b.name) + self.text(&b.input.to_string()) + 3
                }
                ContentBlock::ToolResult(b) => match &b.content {
                    Some(Value::String(s)) => self.text(s),
                    Some(other) => self.text(&other.to_string()),
                    None => 0,
                },
                ContentBlock::Thinking(b) => self.text(&b.thinking),
                other => approx.block_tokens(other).ceil() as i64,
            })
            .fold(0i64, i64::saturating_add);
        body.saturating_add(3)
    }

    fn estimate_text(&self, text: &str) -> i64 {
        self.text(text)
    }
}

/// Writes each message's own size into its `usage` (and the provider's figures into
/// `provider_usage`), by the model in the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Accounting<E = ApproxEstimator> {
    /// The estimator for messages the provider did not count.
    pub estimator: E,
}

impl<E: TokenEstimator> Accounting<E> {
    /// Accounting with `estimator`.
    pub fn new(estimator: E) -> Self {
        Accounting { estimator }
    }

    /// The own size of a message the provider did not count: `input_tokens` is the estimate.
    pub fn estimated_usage(&self, role: MessageRole, content: &[ContentBlock]) -> Usage {
        Usage {
            input_tokens: self.estimator.estimate(role, content).max(0),
            ..Usage::default()
        }
    }

    /// [`estimated_usage`](Self::estimated_usage) of a message to append (its content, or none).
    fn estimated_usage_of(&self, message: &NewMessage) -> Usage {
        let content = message.content.as_ref().map_or(&[][..], |c| &c.0[..]);
        self.estimated_usage(message.role, content)
    }

    /// A compaction summary of `role` with `content`, counting its estimated size.
    pub fn summary(&self, role: MessageRole, content: ContentBlocks) -> Summary {
        let usage = self.estimated_usage(role, &content);
        Summary::new(role, content).with_usage(usage)
    }

    /// Gives the conversation's system message its estimated size plus that of `outside`, the
    /// text the prompt holds outside the stored messages (the tool definitions as the request
    /// sends them), and marks it preserved: that text is in every prompt, so it must be counted
    /// by a message no compaction removes. (Left uncounted, it would land in the first
    /// response's correction, and leave the total with that response when a compaction
    /// removes it.) A `usage` already given is kept.
    pub fn count_system(&self, mut message: NewMessage, outside: &str) -> NewMessage {
        if message.usage.is_none() {
            let mut usage = self.estimated_usage_of(&message);
            usage.input_tokens = usage
                .input_tokens
                .saturating_add(self.estimator.estimate_text(outside).max(0));
            message.usage = Some(Json(usage));
        }
        message.is_preserved = Some(true);
        message
    }

    /// Gives `message` its estimated own size, unless it already has a `usage` (a figure the
    /// caller knows beats an estimate). For user turns, tool results, system messages and
    /// summaries.
    pub fn count(&self, mut message: NewMessage) -> NewMessage {
        if message.usage.is_none() {
            message.usage = Some(Json(self.estimated_usage_of(&message)));
        }
        message
    }
}

/// The own size of the message a response produced, from the provider's `usage` for that
/// response and `counted_before`, the session's `total_tokens` when the prompt was sent (the
/// [`Appended::total_tokens`](crate::Appended::total_tokens) of the last append before the
/// request). With `gap = provider.prompt_tokens() - counted_before`:
///
/// * `gap >= 0` (the session had counted less than the prompt): `input_tokens` is the gap and
///   `output_tokens` the response's output;
/// * `gap < 0` (the estimates ran high): `input_tokens` is 0 and the excess is taken off the
///   output (`output_tokens = output + gap`, down to 0), so the total still lands on the
///   provider's prompt plus output, unless the excess is larger than the output.
///
/// The provider's own figures stay whole in `provider_usage` ([`count_response`]).
pub fn response_usage(provider: &Usage, counted_before: i64) -> Usage {
    let output = provider.output_tokens.max(0);
    let gap = provider.prompt_tokens().saturating_sub(counted_before);
    Usage {
        input_tokens: gap.max(0),
        output_tokens: output.saturating_add(gap.min(0)).max(0),
        ..Usage::default()
    }
}

/// Sets `message` (the assistant message of a response) to count by [`response_usage`], and
/// keeps the provider's figures in its `provider_usage`.
pub fn count_response(mut message: NewMessage, provider: Usage, counted_before: i64) -> NewMessage {
    message.usage = Some(Json(response_usage(&provider, counted_before)));
    message.provider_usage = Some(Json(provider));
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn usage(input: i64, output: i64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn a_response_lands_the_total_on_the_prompt_plus_output() {
        // Counted 900, prompt 1,000 (of it 600 read from the cache), output 50.
        let provider = Usage {
            cache_read_input_tokens: Some(600),
            ..usage(400, 50)
        };
        let own = response_usage(&provider, 900);
        assert_eq!((own.input_tokens, own.output_tokens), (100, 50));
        assert_eq!(900 + own.input_tokens + own.output_tokens, 1_050);
        // Counted 1,020: 20 too many, taken off the output.
        let own = response_usage(&provider, 1_020);
        assert_eq!((own.input_tokens, own.output_tokens), (0, 30));
        // Counted far too many: nothing below zero.
        let own = response_usage(&provider, 5_000);
        assert_eq!((own.input_tokens, own.output_tokens), (0, 0));
        // Extreme figures saturate instead of overflowing.
        let own = response_usage(&usage(i64::MAX, i64::MAX), i64::MIN);
        assert!(own.input_tokens >= 0 && own.output_tokens >= 0);
        let own = response_usage(&usage(0, 10), i64::MAX);
        assert_eq!((own.input_tokens, own.output_tokens), (0, 0));
    }

    #[test]
    fn count_response_keeps_the_provider_figures_whole() {
        let mut provider = usage(1_000, 20);
        provider
            .extra
            .insert("service_tier".into(), "standard".into());
        let message = NewMessage::new("t".into(), Uuid::nil(), MessageRole::Assistant);
        let counted = count_response(message, provider.clone(), 990);
        assert_eq!(counted.provider_usage.map(|u| u.0), Some(provider));
        assert_eq!(counted.usage.map(|u| u.0), Some(usage(10, 20)));
    }

    #[test]
    fn the_approximation_counts_what_it_documents() {
        let e = ApproxEstimator::default();
        assert_eq!(e.estimate_text("abcdefgh"), 2);
        assert_eq!(e.estimate_text("滤网"), 2);
        let message = [ContentBlock::text("abcd")];
        // One token of text, three of block framing, four of message framing.
        assert_eq!(e.estimate(MessageRole::User, &message), 8);
        assert_eq!(e.estimate(MessageRole::User, &[]), 4);
        let image = ContentBlock::Image(agentpg_schema::ImageBlock {
            source: serde_json::json!({"type": "url", "url": "https://x.example/a.png"}),
            extra: Default::default(),
        });
        assert_eq!(e.estimate(MessageRole::User, &[image]), 1_600 + 3 + 4);
        // A caller's figure beats the estimate.
        let accounting = Accounting::<ApproxEstimator>::default();
        let given = NewMessage {
            usage: Some(Json(usage(77, 0))),
            ..NewMessage::new("t".into(), Uuid::nil(), MessageRole::User)
        };
        assert_eq!(
            accounting.count(given).usage.map(|u| u.0),
            Some(usage(77, 0))
        );
        let system = accounting.count_system(
            NewMessage {
                content: Some(Json(message.to_vec())),
                ..NewMessage::new("t".into(), Uuid::nil(), MessageRole::System)
            },
            "abcdefgh",
        );
        assert_eq!(system.usage.map(|u| u.0.input_tokens), Some(10));
        assert_eq!(system.is_preserved, Some(true));
    }
}
