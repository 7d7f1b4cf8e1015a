//! Hand-written types for the JSONB columns declared typed in `xtask/src/codegen/config.rs`:
//! message content blocks and token usage.
//!
//! Every block and usage object round-trips exactly: fields this crate does not name are kept
//! in `extra`, and a block of a type it does not know is kept whole as [`ContentBlock::Unknown`].

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The content of a message: a JSON array of blocks.
pub type ContentBlocks = Vec<ContentBlock>;

/// Fields of a JSON object that have no field of their own in the Rust type.
pub type Extra = Map<String, Value>;

/// One block of message content, tagged by its `type` field.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlock {
    /// `{"type": "text", "text": …}`
    Text(TextBlock),
    /// `{"type": "tool_use", "id": …, "name": …, "input": …}`
    ToolUse(ToolUseBlock),
    /// `{"type": "tool_result", "tool_use_id": …, "content"?: …, "is_error"?: …}`
    ToolResult(ToolResultBlock),
    /// `{"type": "image", "source": …}`
    Image(ImageBlock),
    /// `{"type": "document", "source": …}`
    Document(DocumentBlock),
    /// `{"type": "thinking", "thinking": …, "signature"?: …}`
    Thinking(ThinkingBlock),
    /// `{"type": "redacted_thinking", "data": …}`
    RedactedThinking(RedactedThinkingBlock),
    /// A block of any other type (or without a `type`), kept whole.
    Unknown(Map<String, Value>),
}

/// A text block.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextBlock {
    /// The text.
    pub text: String,
    /// Other fields (e.g. `citations`, `cache_control`).
    pub extra: Extra,
}

/// A request from the model to call a tool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolUseBlock {
    /// Id the matching tool result refers to.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Tool input (any JSON).
    pub input: Value,
    /// Other fields.
    pub extra: Extra,
}

/// The result of a tool call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolResultBlock {
    /// Id of the tool use this answers.
    pub tool_use_id: String,
    /// The result: a string or an array of blocks, as sent.
    pub content: Option<Value>,
    /// True if the tool failed.
    pub is_error: Option<bool>,
    /// Other fields.
    pub extra: Extra,
}

/// An image.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageBlock {
    /// Where the image comes from (base64 data, URL, file id), as sent.
    pub source: Value,
    /// Other fields.
    pub extra: Extra,
}

/// A document (PDF, plain text, …).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentBlock {
    /// Where the document comes from, as sent.
    pub source: Value,
    /// Other fields (e.g. `title`, `context`, `citations`).
    pub extra: Extra,
}

/// The model's visible reasoning.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThinkingBlock {
    /// The reasoning text.
    pub thinking: String,
    /// Signature that lets the block be sent back to the model.
    pub signature: Option<String>,
    /// Other fields.
    pub extra: Extra,
}

/// Reasoning the provider returned encrypted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedactedThinkingBlock {
    /// The encrypted data.
    pub data: String,
    /// Other fields.
    pub extra: Extra,
}

impl ContentBlock {
    /// A text block with no other fields.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text(TextBlock {
            text: text.into(),
            extra: Extra::new(),
        })
    }

    /// A request to call tool `name` with `input`, answered by the tool result that names `id`.
    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        ContentBlock::ToolUse(ToolUseBlock {
            id: id.into(),
            name: name.into(),
            input,
            extra: Extra::new(),
        })
    }

    /// The result of the tool use `tool_use_id`, with `content` (a string or blocks).
    pub fn tool_result(tool_use_id: impl Into<String>, content: Value) -> Self {
        ContentBlock::ToolResult(ToolResultBlock {
            tool_use_id: tool_use_id.into(),
            content: Some(content),
            is_error: None,
            extra: Extra::new(),
        })
    }

    /// The block's `type`, if it has one.
    pub fn block_type(&self) -> Option<&str> {
        Some(match self {
            ContentBlock::Text(_) => "text",
            ContentBlock::ToolUse(_) => "tool_use",
            ContentBlock::ToolResult(_) => "tool_result",
            ContentBlock::Image(_) => "image",
            ContentBlock::Document(_) => "document",
            ContentBlock::Thinking(_) => "thinking",
            ContentBlock::RedactedThinking(_) => "redacted_thinking",
            ContentBlock::Unknown(map) => return map.get("type").and_then(Value::as_str),
        })
    }

    /// The keys a block of this kind names itself (`type` included); `extra` must hold none of
    /// them. `None` for [`ContentBlock::Unknown`].
    pub fn own_keys(&self) -> Option<&'static [&'static str]> {
        Some(match self {
            ContentBlock::Text(_) => &["type", "text"],
            ContentBlock::ToolUse(_) => &["type", "id", "name", "input"],
            ContentBlock::ToolResult(_) => &["type", "tool_use_id", "content", "is_error"],
            ContentBlock::Image(_) | ContentBlock::Document(_) => &["type", "source"],
            ContentBlock::Thinking(_) => &["type", "thinking", "signature"],
            ContentBlock::RedactedThinking(_) => &["type", "data"],
            ContentBlock::Unknown(_) => return None,
        })
    }

    /// The fields this crate does not name, kept as sent (a map of its own for
    /// [`ContentBlock::Unknown`]).
    pub fn extra(&self) -> &Extra {
        match self {
            ContentBlock::Text(b) => &b.extra,
            ContentBlock::ToolUse(b) => &b.extra,
            ContentBlock::ToolResult(b) => &b.extra,
            ContentBlock::Image(b) => &b.extra,
            ContentBlock::Document(b) => &b.extra,
            ContentBlock::Thinking(b) => &b.extra,
            ContentBlock::RedactedThinking(b) => &b.extra,
            ContentBlock::Unknown(map) => map,
        }
    }

    /// Why the block cannot be stored as what it says it is, if it cannot: an `extra` key that
    /// names one of the block's own fields (serialized, it would be a second key of that name,
    /// and PostgreSQL's jsonb keeps the last one, so the stored block would not be the block
    /// that was checked), or an [`ContentBlock::Unknown`] block whose `type` is one this crate
    /// knows (it would be read back as another kind of block, or not at all). Nothing that
    /// fails this check is serialized: [`Serialize`] refuses it too.
    pub fn storage_conflict(&self) -> Option<String> {
        match self.own_keys() {
            Some(own) => self
                .extra()
                .keys()
                .find(|k| own.contains(&k.as_str()))
                .map(|k| format!("the extra field `{k}` would replace the block's own `{k}`")),
            None => match self.block_type() {
                Some(kind) if KNOWN_TYPES.contains(&kind) => Some(format!(
                    "a block of type `{kind}` must be a ContentBlock of that kind, not Unknown"
                )),
                _ => None,
            },
        }
    }

    /// The text of a text block.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ContentBlock::Text(block) => Some(&block.text),
            _ => None,
        }
    }
}

/// The block types this crate reads into a typed [`ContentBlock`].
const KNOWN_TYPES: [&str; 7] = [
    "text",
    "tool_use",
    "tool_result",
    "image",
    "document",
    "thinking",
    "redacted_thinking",
];

fn take<E: de::Error>(
    map: &mut Map<String, Value>,
    block: &str,
    field: &'static str,
) -> Result<Value, E> {
    map.remove(field)
        .ok_or_else(|| E::custom(format!("{block} block without `{field}`")))
}

fn take_string<E: de::Error>(
    map: &mut Map<String, Value>,
    block: &str,
    field: &'static str,
) -> Result<String, E> {
    match take(map, block, field)? {
        Value::String(s) => Ok(s),
        other => Err(E::custom(format!(
            "{block} block: `{field}` must be a string, not {other}"
        ))),
    }
}

fn take_optional_string<E: de::Error>(
    map: &mut Map<String, Value>,
    block: &str,
    field: &'static str,
) -> Result<Option<String>, E> {
    match map.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(E::custom(format!(
            "{block} block: `{field}` must be a string, not {other}"
        ))),
    }
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(deserializer)?;
        let kind = match map.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            _ => return Ok(ContentBlock::Unknown(map)),
        };
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            return Ok(ContentBlock::Unknown(map));
        }
        map.remove("type");
        let m = &mut map;
        Ok(match kind.as_str() {
            "text" => ContentBlock::Text(TextBlock {
                text: take_string(m, "text", "text")?,
                extra: map,
            }),
            "tool_use" => ContentBlock::ToolUse(ToolUseBlock {
                id: take_string(m, "tool_use", "id")?,
                name: take_string(m, "tool_use", "name")?,
                input: take(m, "tool_use", "input")?,
                extra: map,
            }),
            "tool_result" => ContentBlock::ToolResult(ToolResultBlock {
                tool_use_id: take_string(m, "tool_result", "tool_use_id")?,
                content: m.remove("content"),
                is_error: match m.remove("is_error") {
                    None => None,
                    Some(Value::Bool(b)) => Some(b),
                    Some(other) => {
                        return Err(de::Error::custom(format!(
                            "tool_result block: `is_error` must be a boolean, not {other}"
                        )))
                    }
                },
                extra: map,
            }),
            "image" => ContentBlock::Image(ImageBlock {
                source: take(m, "image", "source")?,
                extra: map,
            }),
            "document" => ContentBlock::Document(DocumentBlock {
                source: take(m, "document", "source")?,
                extra: map,
            }),
            "thinking" => ContentBlock::Thinking(ThinkingBlock {
                thinking: take_string(m, "thinking", "thinking")?,
                signature: take_optional_string(m, "thinking", "signature")?,
                extra: map,
            }),
            _ => ContentBlock::RedactedThinking(RedactedThinkingBlock {
                data: take_string(m, "redacted_thinking", "data")?,
                extra: map,
            }),
        })
    }
}

impl Serialize for ContentBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(conflict) = self.storage_conflict() {
            return Err(serde::ser::Error::custom(conflict));
        }
        /// Opens the map with `type` first; the caller adds the block's own fields.
        fn open<S: Serializer>(
            serializer: S,
            kind: &str,
            fields: usize,
            extra: &Extra,
        ) -> Result<S::SerializeMap, S::Error> {
            let mut map = serializer.serialize_map(Some(1 + fields + extra.len()))?;
            map.serialize_entry("type", kind)?;
            Ok(map)
        }
        /// Adds the extra fields and closes the map.
        fn close<M: SerializeMap>(mut map: M, extra: &Extra) -> Result<M::Ok, M::Error> {
            for (k, v) in extra {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
        match self {
            ContentBlock::Text(b) => {
                let mut m = open(serializer, "text", 1, &b.extra)?;
                m.serialize_entry("text", &b.text)?;
                close(m, &b.extra)
            }
            ContentBlock::ToolUse(b) => {
                let mut m = open(serializer, "tool_use", 3, &b.extra)?;
                m.serialize_entry("id", &b.id)?;
                m.serialize_entry("name", &b.name)?;
                m.serialize_entry("input", &b.input)?;
                close(m, &b.extra)
            }
            ContentBlock::ToolResult(b) => {
                let fields =
                    1 + usize::from(b.content.is_some()) + usize::from(b.is_error.is_some());
                let mut m = open(serializer, "tool_result", fields, &b.extra)?;
                m.serialize_entry("tool_use_id", &b.tool_use_id)?;
                if let Some(content) = &b.content {
                    m.serialize_entry("content", content)?;
                }
                if let Some(is_error) = b.is_error {
                    m.serialize_entry("is_error", &is_error)?;
                }
                close(m, &b.extra)
            }
            ContentBlock::Image(b) => {
                let mut m = open(serializer, "image", 1, &b.extra)?;
                m.serialize_entry("source", &b.source)?;
                close(m, &b.extra)
            }
            ContentBlock::Document(b) => {
                let mut m = open(serializer, "document", 1, &b.extra)?;
                m.serialize_entry("source", &b.source)?;
                close(m, &b.extra)
            }
            ContentBlock::Thinking(b) => {
                let mut m = open(
                    serializer,
                    "thinking",
                    1 + usize::from(b.signature.is_some()),
                    &b.extra,
                )?;
                m.serialize_entry("thinking", &b.thinking)?;
                if let Some(signature) = &b.signature {
                    m.serialize_entry("signature", signature)?;
                }
                close(m, &b.extra)
            }
            ContentBlock::RedactedThinking(b) => {
                let mut m = open(serializer, "redacted_thinking", 1, &b.extra)?;
                m.serialize_entry("data", &b.data)?;
                close(m, &b.extra)
            }
            ContentBlock::Unknown(map) => map.serialize(serializer),
        }
    }
}

/// A token usage object, in the shape of Anthropic's (and of what agentpg-repo converts
/// OpenAI's usage to). Two columns hold one: `messages.usage` is the message's *own* token
/// counts, from which the database computes `messages.tokens`, what the message counts toward
/// its session (the rule is written once, in the migration); `messages.provider_usage` is the
/// usage a model API reported for the response that produced the message, whose
/// `input_tokens` is the whole prompt ([`Usage::prompt_tokens`]) and which nothing sums.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub input_tokens: i64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<i64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<i64>,
    /// Other fields, kept as sent. None of them may be named like a field above (see
    /// [`Usage::storage_conflict`]).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// The whole prompt this usage reports: `input_tokens` plus the cache figures. (Anthropic
    /// reports cached input apart from `input_tokens`; agentpg-repo's OpenAI conversion puts
    /// OpenAI's cached tokens in `cache_read_input_tokens` and the rest of its prompt in
    /// `input_tokens`, so the sum is the prompt for both.)
    pub fn prompt_tokens(&self) -> i64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
    }

    /// The keys `Usage` names itself.
    pub const OWN_KEYS: [&'static str; 4] = [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ];

    /// Why the usage cannot be stored as it is, if it cannot: an `extra` key named like one of
    /// its own fields would be a second key of that name, and PostgreSQL's jsonb keeps the last
    /// one (an `extra["input_tokens"]` of -1,499 would be what the database counts). Nothing that
    /// fails this check is serialized.
    pub fn storage_conflict(&self) -> Option<String> {
        self.extra
            .keys()
            .find(|k| Self::OWN_KEYS.contains(&k.as_str()))
            .map(|k| format!("the extra field `{k}` would replace the usage's own `{k}`"))
    }
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(conflict) = self.storage_conflict() {
            return Err(serde::ser::Error::custom(conflict));
        }
        let optional = usize::from(self.cache_creation_input_tokens.is_some())
            + usize::from(self.cache_read_input_tokens.is_some());
        let mut map = serializer.serialize_map(Some(2 + optional + self.extra.len()))?;
        map.serialize_entry("input_tokens", &self.input_tokens)?;
        map.serialize_entry("output_tokens", &self.output_tokens)?;
        if let Some(n) = self.cache_creation_input_tokens {
            map.serialize_entry("cache_creation_input_tokens", &n)?;
        }
        if let Some(n) = self.cache_read_input_tokens {
            map.serialize_entry("cache_read_input_tokens", &n)?;
        }
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) -> ContentBlock {
        let block: ContentBlock = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&block).unwrap(), value);
        block
    }

    #[test]
    fn every_known_block_round_trips_with_extra_fields() {
        let text = round_trip(
            json!({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}),
        );
        assert_eq!(text.as_text(), Some("hi"));
        let ContentBlock::Text(t) = &text else {
            panic!("{text:?}")
        };
        assert_eq!(
            t.extra,
            json!({"cache_control": {"type": "ephemeral"}})
                .as_object()
                .unwrap()
                .clone()
        );

        let tool_use =
            round_trip(json!({"type": "tool_use", "id": "t1", "name": "grep", "input": {"q": 1}}));
        assert_eq!(tool_use.block_type(), Some("tool_use"));
        round_trip(
            json!({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "x"}], "is_error": false}),
        );
        round_trip(json!({"type": "tool_result", "tool_use_id": "t1"}));
        round_trip(
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}),
        );
        round_trip(
            json!({"type": "document", "source": {"type": "text", "data": "doc"}, "title": "T"}),
        );
        let thinking =
            round_trip(json!({"type": "thinking", "thinking": "hmm", "signature": "sig"}));
        assert!(
            matches!(&thinking, ContentBlock::Thinking(b) if b.signature.as_deref() == Some("sig"))
        );
        round_trip(json!({"type": "redacted_thinking", "data": "xyz"}));
    }

    #[test]
    fn unknown_blocks_round_trip_whole() {
        let block = round_trip(
            json!({"type": "server_tool_use", "id": "s", "nested": {"a": [1, 2.5, null]}}),
        );
        assert_eq!(block.block_type(), Some("server_tool_use"));
        assert!(matches!(block, ContentBlock::Unknown(_)));
        let untyped = round_trip(json!({"no_type": true}));
        assert_eq!(untyped.block_type(), None);
        let odd_type = round_trip(json!({"type": 7}));
        assert!(matches!(odd_type, ContentBlock::Unknown(_)));
    }

    #[test]
    fn malformed_known_blocks_are_errors() {
        let err = serde_json::from_value::<ContentBlock>(json!({"type": "text"})).unwrap_err();
        assert!(
            err.to_string().contains("text block without `text`"),
            "{err}"
        );
        let err =
            serde_json::from_value::<ContentBlock>(json!({"type": "text", "text": 1})).unwrap_err();
        assert!(err.to_string().contains("must be a string"), "{err}");
        assert!(serde_json::from_value::<ContentBlock>(json!("text")).is_err());
    }

    #[test]
    fn extra_fields_cannot_shadow_a_field_of_their_own_and_nothing_serializes_twice() {
        let mut text = ContentBlock::text("hello");
        if let ContentBlock::Text(b) = &mut text {
            b.extra.insert("type".into(), json!("tool_use"));
        }
        assert!(text.storage_conflict().unwrap().contains("`type`"));
        assert!(serde_json::to_string(&text).is_err());
        let mut tool = ContentBlock::tool_use("short", "f", json!({}));
        if let ContentBlock::ToolUse(b) = &mut tool {
            b.extra.insert("id".into(), json!("x".repeat(300)));
        }
        assert!(tool.storage_conflict().is_some());
        assert!(serde_json::to_value(&tool).is_err());
        let disguised: ContentBlock = ContentBlock::Unknown(
            json!({"type": "tool_use", "id": "x", "name": "f", "input": {}})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert!(disguised.storage_conflict().is_some());
        assert!(serde_json::to_value(&disguised).is_err());
        let mut usage = Usage {
            input_tokens: 1,
            output_tokens: 500,
            ..Usage::default()
        };
        usage.extra.insert("input_tokens".into(), json!(-1999));
        assert!(usage.storage_conflict().is_some());
        assert!(serde_json::to_value(&usage).is_err());
        // What is not a conflict serializes each key once.
        let fine = ContentBlock::text("x");
        assert_eq!(fine.storage_conflict(), None);
        assert_eq!(
            serde_json::to_string(&fine).unwrap(),
            r#"{"type":"text","text":"x"}"#
        );
    }

    #[test]
    fn usage_keeps_unknown_fields() {
        let value = json!({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3, "service_tier": "standard"});
        let usage: Usage = serde_json::from_value(value.clone()).unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (10, 5));
        assert_eq!(usage.cache_read_input_tokens, Some(3));
        assert_eq!(usage.cache_creation_input_tokens, None);
        assert_eq!(serde_json::to_value(&usage).unwrap(), value);
    }
}
