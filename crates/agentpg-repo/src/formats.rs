//! Conversions between stored messages and the shapes model APIs speak.
//!
//! Stored content is **Anthropic Messages content blocks** (`text`, `tool_use`, `tool_result`,
//! `image`, `document`, `thinking`, `redacted_thinking`, and any other block kept whole), with
//! three roles: `user`, `assistant`, `system`. The modules here turn a conversation into each
//! provider's request shape and a provider's messages back into [`Turn`]s to append:
//!
//! * [`anthropic`]: the Messages API. Blocks are passed as they are; `system` turns become the
//!   request's top-level `system` blocks.
//! * [`openai_chat`]: Chat Completions. `tool_use` blocks become `tool_calls` (arguments as a JSON
//!   string), `tool_result` blocks become `tool` messages, images become `image_url` parts.
//! * [`openai_responses`]: the Responses API's input items (`message`, `function_call`,
//!   `function_call_output`, `reasoning`).
//!
//! Every conversion is lossless where both sides can express the content, and a
//! [`FormatError`] naming the message and block where one side cannot (a block the target has
//! no form for, a field the target would drop, a role it does not have). Nothing is dropped
//! silently. Round trips (stored → provider → stored) return the same turns for conversations in
//! the form the provider's shape can carry — for OpenAI's: an assistant turn's text before its
//! tool calls, and a user turn's tool results before its other blocks, since OpenAI carries
//! them as separate messages; the property tests in this module check exactly that.

use agentpg_schema::{ContentBlock, ContentBlocks, Extra, Message, MessageRole, NewMessage, Usage};
use serde_json::{json, Map, Value};

/// A message in stored form: its role and content blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The message's role.
    pub role: MessageRole,
    /// Its content blocks.
    pub content: ContentBlocks,
}

impl Turn {
    /// A turn of `role` with `content`.
    pub fn new(role: MessageRole, content: ContentBlocks) -> Self {
        Turn { role, content }
    }

    /// A message holding this turn, to append to session `session_id` of `tenant` (every other
    /// column left to the database; give it an `id` to make the append retry-safe).
    pub fn into_new_message(self, tenant: &str, session_id: uuid::Uuid) -> NewMessage {
        NewMessage {
            content: Some(sqlx::types::Json(self.content)),
            ..NewMessage::new(tenant.to_owned(), session_id, self.role)
        }
    }
}

impl From<&Message> for Turn {
    fn from(message: &Message) -> Self {
        Turn::new(message.role, message.content.0.clone())
    }
}

/// Why a conversion cannot be made without losing something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot convert message {index}: {reason}")]
pub struct FormatError {
    /// Index of the message (in the input of the conversion) that cannot be converted.
    pub index: usize,
    /// What cannot be expressed, and where.
    pub reason: String,
}

fn fail<T>(index: usize, reason: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError {
        index,
        reason: reason.into(),
    })
}

/// Refuses extra fields: the target shape has nowhere to keep them.
fn no_extra(index: usize, what: &str, extra: &Extra) -> Result<(), FormatError> {
    match extra.keys().next() {
        Some(key) => fail(
            index,
            format!("the {what}'s field `{key}` has no place in the target format"),
        ),
        None => Ok(()),
    }
}

fn object(value: &Value) -> Option<&Map<String, Value>> {
    value.as_object()
}

fn str_field<'a>(
    index: usize,
    map: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, FormatError> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => fail(index, format!("`{field}` must be a string, not {other}")),
        None => fail(index, format!("`{field}` is missing")),
    }
}

/// Blocks from JSON: a string is one text block, an array is blocks.
fn blocks_from(index: usize, content: &Value) -> Result<ContentBlocks, FormatError> {
    match content {
        Value::String(text) => Ok(vec![ContentBlock::text(text.clone())]),
        Value::Array(_) => serde_json::from_value(content.clone()).map_err(|e| FormatError {
            index,
            reason: format!("content blocks: {e}"),
        }),
        other => fail(
            index,
            format!("content must be a string or an array, not {other}"),
        ),
    }
}

/// Blocks from an OpenAI message's content: a string is one text block; an array holds content
/// parts (objects), each turned into a block by `part` (given the part and its fields).
fn blocks_of_parts(
    index: usize,
    content: &Value,
    part: impl Fn(&Value, &Map<String, Value>) -> Result<ContentBlock, FormatError>,
) -> Result<ContentBlocks, FormatError> {
    match content {
        Value::String(s) => Ok(vec![ContentBlock::text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match object(p) {
                Some(map) => part(p, map),
                None => fail(index, "a content part must be an object"),
            })
            .collect(),
        other => fail(
            index,
            format!("content {other} is neither a string nor parts"),
        ),
    }
}

fn to_json(index: usize, blocks: &[ContentBlock]) -> Result<Value, FormatError> {
    serde_json::to_value(blocks).map_err(|e| FormatError {
        index,
        reason: e.to_string(),
    })
}

/// The Anthropic Messages API.
pub mod anthropic {
    use super::*;

    /// A Messages API request's `system` and `messages`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Request {
        /// The `system` text blocks, from the conversation's `system` turns in order (`None` if
        /// it has none).
        pub system: Option<Value>,
        /// The `messages` array.
        pub messages: Vec<Value>,
    }

    /// The request for `turns`: user and assistant turns as messages with their blocks, system
    /// turns as the top-level `system` (Anthropic takes system text only there, so a system
    /// turn after the first user or assistant turn, or one holding other than text, is an
    /// error: moving it would change what the model reads).
    pub fn to_request(turns: &[Turn]) -> Result<Request, FormatError> {
        let mut system: Vec<Value> = Vec::new();
        let mut messages = Vec::with_capacity(turns.len());
        for (index, turn) in turns.iter().enumerate() {
            match turn.role {
                MessageRole::System => {
                    if !messages.is_empty() {
                        return fail(
                            index,
                            "a system turn after the conversation started: Anthropic takes system text only before the messages",
                        );
                    }
                    if let Some(block) = turn.content.iter().find(|b| b.as_text().is_none()) {
                        return fail(
                            index,
                            format!(
                                "a system turn holds a {} block; Anthropic's system takes text blocks only",
                                block.block_type().unwrap_or("untyped")
                            ),
                        );
                    }
                    if let Value::Array(blocks) = to_json(index, &turn.content)? {
                        system.extend(blocks);
                    }
                }
                role => messages.push(json!({
                    "role": role.as_str(),
                    "content": to_json(index, &turn.content)?,
                })),
            }
        }
        Ok(Request {
            system: (!system.is_empty()).then_some(Value::Array(system)),
            messages,
        })
    }

    /// The turns of a request: its `system` (a string, or text blocks) as one system turn,
    /// then its messages ([`from_message`]).
    pub fn from_request(request: &Request) -> Result<Vec<Turn>, FormatError> {
        let mut turns = Vec::with_capacity(request.messages.len() + 1);
        if let Some(system) = &request.system {
            turns.push(Turn::new(MessageRole::System, blocks_from(0, system)?));
        }
        let offset = turns.len();
        for (i, message) in request.messages.iter().enumerate() {
            turns.push(from_message(message).map_err(|e| FormatError {
                index: i + offset,
                ..e
            })?);
        }
        Ok(turns)
    }

    /// The turn of one Messages API message (a request's message, or a response: its `role`
    /// and `content` are read, other fields ignored). Content given as a string is one text
    /// block.
    pub fn from_message(message: &Value) -> Result<Turn, FormatError> {
        let Some(map) = object(message) else {
            return fail(0, "a message must be a JSON object");
        };
        let role = match str_field(0, map, "role")? {
            "user" => MessageRole::User,
            "assistant" => MessageRole::Assistant,
            other => return fail(0, format!("role `{other}` is not a Messages API role")),
        };
        let content = map.get("content").unwrap_or(&Value::Null);
        Ok(Turn::new(role, blocks_from(0, content)?))
    }

    /// A response's `usage`, as reported (Anthropic's usage object is [`Usage`]'s shape).
    pub fn usage(usage: &Value) -> Result<Usage, FormatError> {
        serde_json::from_value(usage.clone()).map_err(|e| FormatError {
            index: 0,
            reason: format!("usage: {e}"),
        })
    }
}

/// A data URL's media type and base64 data.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (media_type, data) = rest.split_once(";base64,")?;
    Some((media_type, data))
}

/// An image block's source as a URL (a data URL for base64 data).
fn image_url(index: usize, source: &Value) -> Result<String, FormatError> {
    let Some(map) = object(source) else {
        return fail(index, "an image source must be an object");
    };
    let known = |keys: &[&str]| map.keys().all(|k| keys.contains(&k.as_str()));
    match map.get("type").and_then(Value::as_str) {
        Some("url") if known(&["type", "url"]) => Ok(str_field(index, map, "url")?.to_owned()),
        Some("base64") if known(&["type", "media_type", "data"]) => Ok(format!(
            "data:{};base64,{}",
            str_field(index, map, "media_type")?,
            str_field(index, map, "data")?
        )),
        _ => fail(
            index,
            format!("the image source {source} has no OpenAI form (a URL or base64 data has)"),
        ),
    }
}

/// The image block for an image URL (base64 data from a data URL).
fn image_block(url: &str) -> ContentBlock {
    let source = match split_data_url(url) {
        Some((media_type, data)) => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None => json!({"type": "url", "url": url}),
    };
    ContentBlock::Image(agentpg_schema::ImageBlock {
        source,
        extra: Extra::new(),
    })
}

/// A tool result's content as OpenAI takes it (in `target`): a string, or text parts. Its extra
/// fields and `is_error` have no place there.
fn tool_output(
    index: usize,
    result: &agentpg_schema::ToolResultBlock,
    target: &str,
) -> Result<Value, FormatError> {
    no_extra(index, "tool result", &result.extra)?;
    if result.is_error.is_some() {
        return fail(
            index,
            format!("a tool result's is_error has no place in {target}"),
        );
    }
    match &result.content {
        None => Ok(Value::String(String::new())),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(items)) => {
            let blocks: ContentBlocks = serde_json::from_value(Value::Array(items.clone()))
                .map_err(|e| FormatError {
                    index,
                    reason: format!("tool result content: {e}"),
                })?;
            let mut parts = Vec::with_capacity(blocks.len());
            for block in &blocks {
                match block {
                    ContentBlock::Text(t) => {
                        no_extra(index, "tool result's text block", &t.extra)?;
                        parts.push(json!({"type": "text", "text": t.text}));
                    }
                    other => {
                        return fail(
                            index,
                            format!(
                                "a tool result holding a {} block: OpenAI's tool messages carry text only",
                                other.block_type().unwrap_or("untyped")
                            ),
                        )
                    }
                }
            }
            Ok(Value::Array(parts))
        }
        Some(other) => fail(
            index,
            format!("tool result content {other} is neither a string nor blocks"),
        ),
    }
}

/// A tool result's content back from OpenAI's (a string, or text parts).
fn tool_content(index: usize, output: &Value) -> Result<Value, FormatError> {
    match output {
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                let Some(map) = object(part) else {
                    return fail(index, "a content part must be an object");
                };
                match map.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text" | "output_text") => {
                        blocks.push(json!({"type": "text", "text": str_field(index, map, "text")?}))
                    }
                    _ => return fail(index, format!("tool output part {part} is not text")),
                }
            }
            Ok(Value::Array(blocks))
        }
        other => fail(
            index,
            format!("tool output {other} is neither a string nor parts"),
        ),
    }
}

/// A tool call's arguments back as the stored input: the JSON they hold, or (a model can write
/// arguments that are not JSON) the raw text as a JSON string, so nothing the model said is
/// lost.
fn arguments_input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

/// OpenAI Chat Completions.
pub mod openai_chat {
    use super::*;

    /// A model's refusal, kept as a block of type `refusal` (stored whole, as every block of a
    /// type agentpg-schema does not name), and given back as a `refusal` content part.
    fn refusal_block(refusal: &str) -> ContentBlock {
        let mut map = Map::new();
        map.insert("type".into(), json!("refusal"));
        map.insert("refusal".into(), json!(refusal));
        ContentBlock::Unknown(map)
    }

    fn is_refusal(map: &Map<String, Value>) -> bool {
        map.len() == 2
            && map.get("type") == Some(&json!("refusal"))
            && map.get("refusal").is_some_and(Value::is_string)
    }

    /// The `messages` of a Chat Completions request for `turns`.
    ///
    /// * `system` → `system` (text only); `user` → `user` with `text` and `image_url` parts;
    ///   `assistant` → `assistant` with its text as `content` and its `tool_use` blocks as
    ///   `tool_calls` (the input as a JSON string in `arguments`).
    /// * A user turn's `tool_result` blocks become one `tool` message each (`tool_call_id`, the
    ///   result's text), sent before the turn's other blocks, which stay a `user` message.
    /// * Refused: thinking and document blocks, blocks with fields OpenAI has no place for
    ///   (`cache_control`, `citations`, …), tool results marked `is_error` (Chat Completions
    ///   cannot say so), and blocks of unknown types.
    pub fn to_messages(turns: &[Turn]) -> Result<Vec<Value>, FormatError> {
        let mut out = Vec::with_capacity(turns.len());
        for (index, turn) in turns.iter().enumerate() {
            match turn.role {
                MessageRole::System => out.push(json!({
                    "role": "system",
                    "content": text_parts(index, &turn.content, false)?,
                })),
                MessageRole::User => {
                    let (results, rest): (Vec<_>, Vec<_>) = turn
                        .content
                        .iter()
                        .partition(|b| matches!(b, ContentBlock::ToolResult(_)));
                    for block in results {
                        if let ContentBlock::ToolResult(r) = block {
                            out.push(json!({
                                "role": "tool",
                                "tool_call_id": r.tool_use_id,
                                "content": tool_output(index, r, "a Chat Completions tool message")?,
                            }));
                        }
                    }
                    if !rest.is_empty() || turn.content.is_empty() {
                        let rest: ContentBlocks = rest.into_iter().cloned().collect();
                        out.push(json!({
                            "role": "user",
                            "content": text_parts(index, &rest, true)?,
                        }));
                    }
                }
                MessageRole::Assistant => out.push(assistant(index, &turn.content)?),
            }
        }
        Ok(out)
    }

    /// Content parts for `blocks`: text (and images, if `images`).
    fn text_parts(
        index: usize,
        blocks: &[ContentBlock],
        images: bool,
    ) -> Result<Value, FormatError> {
        let mut parts = Vec::with_capacity(blocks.len());
        for block in blocks {
            match block {
                ContentBlock::Text(t) => {
                    no_extra(index, "text block", &t.extra)?;
                    parts.push(json!({"type": "text", "text": t.text}));
                }
                ContentBlock::Unknown(map) if is_refusal(map) => {
                    parts.push(Value::Object(map.clone()));
                }
                ContentBlock::Image(i) if images => {
                    no_extra(index, "image block", &i.extra)?;
                    parts.push(json!({"type": "image_url", "image_url": {"url": image_url(index, &i.source)?}}));
                }
                other => {
                    return fail(
                        index,
                        format!(
                            "a {} block has no Chat Completions form here",
                            other.block_type().unwrap_or("untyped")
                        ),
                    )
                }
            }
        }
        Ok(Value::Array(parts))
    }

    fn assistant(index: usize, blocks: &[ContentBlock]) -> Result<Value, FormatError> {
        let mut text = Vec::new();
        let mut calls = Vec::new();
        for block in blocks {
            match block {
                ContentBlock::ToolUse(u) => {
                    no_extra(index, "tool use", &u.extra)?;
                    calls.push(json!({
                        "id": u.id,
                        "type": "function",
                        "function": {"name": u.name, "arguments": u.input.to_string()},
                    }));
                }
                other => text.push(other.clone()),
            }
        }
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            if text.is_empty() {
                Value::Null
            } else {
                text_parts(index, &text, false)?
            },
        );
        if !calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        Ok(Value::Object(message))
    }

    /// The turns of Chat Completions messages (a request's `messages`, or a response's
    /// `choices[i].message`): `system` and `developer` → system; a run of consecutive `tool`
    /// messages (and a `user` message right after them) → one user turn, `tool_result` blocks
    /// first; `tool_calls` → `tool_use` blocks after the message's text.
    pub fn from_messages(messages: &[Value]) -> Result<Vec<Turn>, FormatError> {
        let mut turns: Vec<Turn> = Vec::with_capacity(messages.len());
        let mut in_tool_run = false;
        for (index, message) in messages.iter().enumerate() {
            let Some(map) = object(message) else {
                return fail(index, "a message must be a JSON object");
            };
            let role = str_field(index, map, "role")?;
            let content = map.get("content").unwrap_or(&Value::Null);
            // What a response's message carries beside its content, when empty, says nothing;
            // anything else this shape cannot keep is refused, not dropped.
            for (key, value) in map {
                let empty = value.is_null() || *value == json!([]);
                let kept = ["role", "content", "tool_calls", "tool_call_id"]
                    .contains(&key.as_str())
                    || (key == "refusal" && (empty || role == "assistant"))
                    || (["annotations", "audio", "function_call"].contains(&key.as_str()) && empty);
                if !kept {
                    return fail(
                        index,
                        format!("the message's field `{key}` ({value}) has no stored form"),
                    );
                }
            }
            let was_tool_run = std::mem::replace(&mut in_tool_run, role == "tool");
            let turn = match role {
                "system" | "developer" => {
                    Turn::new(MessageRole::System, parts_back(index, content)?)
                }
                "user" => {
                    let blocks = parts_back(index, content)?;
                    // Right after tool results: the same turn (tool results and the user's
                    // words are one user turn in stored form, as in Anthropic's).
                    match turns.last_mut() {
                        Some(last) if was_tool_run => {
                            last.content.extend(blocks);
                            continue;
                        }
                        _ => Turn::new(MessageRole::User, blocks),
                    }
                }
                "assistant" => {
                    let mut blocks = parts_back(index, content)?;
                    match map.get("refusal") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(refusal)) => blocks.push(refusal_block(refusal)),
                        Some(other) => {
                            return fail(index, format!("refusal must be a string, not {other}"))
                        }
                    }
                    if let Some(calls) = map.get("tool_calls").filter(|c| !c.is_null()) {
                        let Some(calls) = calls.as_array() else {
                            return fail(index, "tool_calls must be an array");
                        };
                        for call in calls {
                            let Some(call) = object(call) else {
                                return fail(index, "a tool call must be an object");
                            };
                            match call.get("type").and_then(Value::as_str) {
                                None | Some("function") => {}
                                Some(other) => {
                                    return fail(
                                        index,
                                        format!("a tool call of type `{other}` has no stored form"),
                                    )
                                }
                            }
                            let Some(function) = call.get("function").and_then(object) else {
                                return fail(index, "a tool call without `function`");
                            };
                            blocks.push(ContentBlock::tool_use(
                                str_field(index, call, "id")?,
                                str_field(index, function, "name")?,
                                arguments_input(str_field(index, function, "arguments")?),
                            ));
                        }
                    }
                    Turn::new(MessageRole::Assistant, blocks)
                }
                "tool" => {
                    let result = ContentBlock::tool_result(
                        str_field(index, map, "tool_call_id")?,
                        tool_content(index, content)?,
                    );
                    match turns.last_mut() {
                        Some(last) if was_tool_run => {
                            last.content.push(result);
                            continue;
                        }
                        _ => Turn::new(MessageRole::User, vec![result]),
                    }
                }
                other => {
                    return fail(
                        index,
                        format!("role `{other}` is not a Chat Completions role"),
                    )
                }
            };
            turns.push(turn);
        }
        Ok(turns)
    }

    /// Blocks from a message's `content`: a string is one text block; parts (`text`,
    /// `image_url`) are blocks; null is none.
    fn parts_back(index: usize, content: &Value) -> Result<ContentBlocks, FormatError> {
        if content.is_null() {
            return Ok(Vec::new());
        }
        blocks_of_parts(index, content, |part, map| {
            match map.get("type").and_then(Value::as_str) {
                Some("text") => Ok(ContentBlock::text(str_field(index, map, "text")?)),
                Some("refusal") => Ok(refusal_block(str_field(index, map, "refusal")?)),
                Some("image_url") => {
                    let Some(image) = map.get("image_url").and_then(object) else {
                        return fail(index, "an image_url part without `image_url`");
                    };
                    if let Some(key) = image.keys().find(|k| k.as_str() != "url") {
                        return fail(
                            index,
                            format!("the image_url field `{key}` has no stored form"),
                        );
                    }
                    Ok(image_block(str_field(index, image, "url")?))
                }
                _ => fail(index, format!("the content part {part} has no stored form")),
            }
        })
    }

    /// A response's `usage` in stored form: `prompt_tokens` is the whole prompt, of which
    /// `prompt_tokens_details.cached_tokens` were read from the cache, so `input_tokens` is the
    /// rest and `cache_read_input_tokens` the cached part ([`Usage::prompt_tokens`] is the
    /// whole prompt again); `completion_tokens` is `output_tokens`. Every other field is kept in
    /// `extra` under its own name.
    pub fn usage(usage: &Value) -> Result<Usage, FormatError> {
        let Some(map) = object(usage) else {
            return fail(0, "usage must be an object");
        };
        let count = |v: Option<&Value>, name: &str| -> Result<i64, FormatError> {
            match v {
                None | Some(Value::Null) => Ok(0),
                Some(v) => v.as_i64().filter(|n| *n >= 0).map_or_else(
                    || {
                        fail(
                            0,
                            format!("usage `{name}` must be a non-negative integer, not {v}"),
                        )
                    },
                    Ok,
                ),
            }
        };
        let prompt = count(map.get("prompt_tokens"), "prompt_tokens")?;
        let cached = match map
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
        {
            None | Some(Value::Null) => None,
            Some(v) => Some(count(Some(v), "cached_tokens")?),
        };
        let mut extra = map.clone();
        for key in ["prompt_tokens", "completion_tokens"] {
            extra.remove(key);
        }
        Ok(Usage {
            input_tokens: prompt - cached.unwrap_or(0).min(prompt),
            output_tokens: count(map.get("completion_tokens"), "completion_tokens")?,
            cache_creation_input_tokens: None,
            cache_read_input_tokens: cached.map(|c| c.min(prompt)),
            extra,
        })
    }
}

/// The OpenAI Responses API's input items.
pub mod openai_responses {
    use super::*;

    /// A reasoning item's fields kept in its thinking block's `extra` (and given back): its id
    /// and its encrypted reasoning, which the API needs to continue from it.
    const REASONING_KEPT: [&str; 2] = ["id", "encrypted_content"];

    /// The `input` items of a Responses request for `turns`: text and images as `message` items
    /// (`input_text` / `input_image` for user and system turns, `output_text` for assistant
    /// turns), `tool_use` blocks as `function_call` items, `tool_result` blocks as
    /// `function_call_output` items, `thinking` blocks as `reasoning` items (their text as a
    /// summary). Items follow the blocks' order. Refused as in
    /// [`openai_chat::to_messages`], and thinking with a signature (it has no place there) and
    /// empty turns (they would be no item). Two turns of one role in a row come back as one
    /// ([`from_items`] joins consecutive items of one role).
    pub fn to_input(turns: &[Turn]) -> Result<Vec<Value>, FormatError> {
        let mut items = Vec::new();
        for (index, turn) in turns.iter().enumerate() {
            if turn.content.is_empty() {
                return fail(
                    index,
                    "an empty turn has no Responses form (it would be no item)",
                );
            }
            let (role, text_type) = match turn.role {
                MessageRole::User => ("user", "input_text"),
                MessageRole::System => ("system", "input_text"),
                MessageRole::Assistant => ("assistant", "output_text"),
            };
            let mut parts: Vec<Value> = Vec::new();
            let flush = |parts: &mut Vec<Value>, items: &mut Vec<Value>| {
                if !parts.is_empty() {
                    items.push(
                        json!({"type": "message", "role": role, "content": std::mem::take(parts)}),
                    );
                }
            };
            for block in &turn.content {
                match block {
                    ContentBlock::Text(t) => {
                        no_extra(index, "text block", &t.extra)?;
                        parts.push(json!({"type": text_type, "text": t.text}));
                    }
                    ContentBlock::Image(i) if turn.role != MessageRole::Assistant => {
                        no_extra(index, "image block", &i.extra)?;
                        parts.push(json!({"type": "input_image", "image_url": image_url(index, &i.source)?}));
                    }
                    ContentBlock::ToolUse(u) if turn.role == MessageRole::Assistant => {
                        no_extra(index, "tool use", &u.extra)?;
                        flush(&mut parts, &mut items);
                        items.push(json!({"type": "function_call", "call_id": u.id, "name": u.name, "arguments": u.input.to_string()}));
                    }
                    ContentBlock::ToolResult(r) if turn.role == MessageRole::User => {
                        let output = tool_output(index, r, "a function_call_output")?;
                        flush(&mut parts, &mut items);
                        let output = match output {
                            Value::Array(parts) => Value::Array(
                                parts
                                    .into_iter()
                                    .map(|p| json!({"type": "input_text", "text": p["text"]}))
                                    .collect(),
                            ),
                            other => other,
                        };
                        items.push(json!({"type": "function_call_output", "call_id": r.tool_use_id, "output": output}));
                    }
                    ContentBlock::Thinking(t) if turn.role == MessageRole::Assistant => {
                        if let Some(key) = t
                            .extra
                            .keys()
                            .find(|k| !REASONING_KEPT.contains(&k.as_str()))
                        {
                            return fail(index, format!("the thinking block's field `{key}` has no place in a reasoning item"));
                        }
                        if t.signature.is_some() {
                            return fail(
                                index,
                                "a thinking block's signature has no place in a reasoning item",
                            );
                        }
                        flush(&mut parts, &mut items);
                        let mut item = t.extra.clone();
                        item.insert("type".into(), json!("reasoning"));
                        item.insert(
                            "summary".into(),
                            json!([{"type": "summary_text", "text": t.thinking}]),
                        );
                        items.push(Value::Object(item));
                    }
                    other => {
                        return fail(
                            index,
                            format!(
                                "a {} block in a {} turn has no Responses form",
                                other.block_type().unwrap_or("untyped"),
                                turn.role.as_str()
                            ),
                        )
                    }
                }
            }
            flush(&mut parts, &mut items);
        }
        Ok(items)
    }

    /// The turns of Responses items (a request's `input`, or a response's `output`): message
    /// items by role, `function_call` items as `tool_use` blocks of an assistant turn,
    /// `function_call_output` items as `tool_result` blocks of a user turn, `reasoning` items
    /// (their summary text, parts joined by a blank line, with the item's `id` and
    /// `encrypted_content` in the block's `extra`) as `thinking` blocks. Consecutive items of
    /// one role make one turn. Message items' own ids and statuses are not kept (the API does
    /// not need them back); items of other types are refused.
    pub fn from_items(items: &[Value]) -> Result<Vec<Turn>, FormatError> {
        let mut turns: Vec<Turn> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(map) = object(item) else {
                return fail(index, "an item must be a JSON object");
            };
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("message");
            let (role, blocks) = match kind {
                "message" => {
                    let role = match str_field(index, map, "role")? {
                        "user" => MessageRole::User,
                        "assistant" => MessageRole::Assistant,
                        "system" | "developer" => MessageRole::System,
                        other => {
                            return fail(index, format!("role `{other}` is not a Responses role"))
                        }
                    };
                    (
                        role,
                        message_blocks(index, map.get("content").unwrap_or(&Value::Null))?,
                    )
                }
                "function_call" => (
                    MessageRole::Assistant,
                    vec![ContentBlock::tool_use(
                        str_field(index, map, "call_id")?,
                        str_field(index, map, "name")?,
                        arguments_input(str_field(index, map, "arguments")?),
                    )],
                ),
                "function_call_output" => (
                    MessageRole::User,
                    vec![ContentBlock::tool_result(
                        str_field(index, map, "call_id")?,
                        tool_content(index, map.get("output").unwrap_or(&Value::Null))?,
                    )],
                ),
                "reasoning" => {
                    if let Some(key) = map.keys().find(|k| {
                        !["type", "summary"].contains(&k.as_str())
                            && !REASONING_KEPT.contains(&k.as_str())
                    }) {
                        return fail(
                            index,
                            format!("the reasoning item's field `{key}` has no stored form"),
                        );
                    }
                    let extra: Extra = REASONING_KEPT
                        .iter()
                        .filter_map(|k| map.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                        .collect();
                    let text = map
                        .get("summary")
                        .and_then(Value::as_array)
                        .map(|parts| {
                            parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join("\n\n")
                        })
                        .unwrap_or_default();
                    (
                        MessageRole::Assistant,
                        vec![ContentBlock::Thinking(agentpg_schema::ThinkingBlock {
                            thinking: text,
                            signature: None,
                            extra,
                        })],
                    )
                }
                other => {
                    return fail(
                        index,
                        format!("an item of type `{other}` has no stored form"),
                    )
                }
            };
            match turns.last_mut() {
                Some(last) if last.role == role => last.content.extend(blocks),
                _ => turns.push(Turn::new(role, blocks)),
            }
        }
        Ok(turns)
    }

    fn message_blocks(index: usize, content: &Value) -> Result<ContentBlocks, FormatError> {
        blocks_of_parts(index, content, |part, map| {
            match map.get("type").and_then(Value::as_str) {
                Some("input_text" | "output_text") => {
                    // Annotations (citations) have no stored form; an empty list is none.
                    let kept = |k: &str| {
                        k == "type" || k == "text" || (k == "annotations" && map[k] == json!([]))
                    };
                    if let Some(key) = map.keys().find(|k| !kept(k)) {
                        return fail(
                            index,
                            format!("the text part's field `{key}` has no stored form"),
                        );
                    }
                    Ok(ContentBlock::text(str_field(index, map, "text")?))
                }
                Some("input_image") => Ok(image_block(str_field(index, map, "image_url")?)),
                _ => fail(index, format!("the content part {part} has no stored form")),
            }
        })
    }

    /// A response's `usage` in stored form: `input_tokens` is the whole prompt, of which
    /// `input_tokens_details.cached_tokens` were cached (stored apart, as for Chat
    /// Completions); `output_tokens` as is; other fields kept in `extra`.
    pub fn usage(usage: &Value) -> Result<Usage, FormatError> {
        let Some(map) = object(usage) else {
            return fail(0, "usage must be an object");
        };
        let mut renamed = map.clone();
        let prompt = renamed.remove("input_tokens").unwrap_or(json!(0));
        let output = renamed.remove("output_tokens").unwrap_or(json!(0));
        renamed.insert("prompt_tokens".into(), prompt);
        renamed.insert("completion_tokens".into(), output);
        if let Some(details) = renamed.remove("input_tokens_details") {
            renamed.insert("prompt_tokens_details".into(), details);
        }
        let mut stored = openai_chat::usage(&Value::Object(renamed))?;
        if let Some(details) = stored.extra.remove("prompt_tokens_details") {
            stored.extra.insert("input_tokens_details".into(), details);
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Any Unicode, quotes, backslashes and JSON-looking text included.
        prop_oneof![
            any::<String>(),
            Just(r#"{"not": "json" "#.to_owned()),
            Just("\"quoted\" \\ back".to_owned()),
            Just(String::new()),
        ]
    }

    fn json_input() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            text().prop_map(Value::from),
            Just(Value::Null),
            (-1.0e300f64..1.0e300).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn image() -> impl Strategy<Value = ContentBlock> {
        prop_oneof![
            "https://[a-z]{1,8}\\.example/[a-z0-9]{1,8}\\.png"
                .prop_map(|url| json!({"type": "url", "url": url})),
            ("image/(png|jpeg|webp)", "[A-Za-z0-9+/]{4,16}={0,2}").prop_map(
                |(media_type, data)| {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
            ),
        ]
        .prop_map(|source| {
            ContentBlock::Image(agentpg_schema::ImageBlock {
                source,
                extra: Extra::new(),
            })
        })
    }

    fn id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_]{1,24}"
    }

    fn result_content() -> impl Strategy<Value = Value> {
        prop_oneof![
            text().prop_map(Value::String),
            prop::collection::vec(text(), 0..3).prop_map(|texts| {
                Value::Array(
                    texts
                        .into_iter()
                        .map(|t| json!({"type": "text", "text": t}))
                        .collect(),
                )
            }),
        ]
    }

    /// An alternating conversation in the form OpenAI's shapes carry: an optional system turn
    /// first; user turns of tool results (answering the previous assistant turn's calls) then
    /// text and images; assistant turns of reasoning (with `reasoning`), text, then tool calls.
    fn conversation(reasoning: bool) -> impl Strategy<Value = Vec<Turn>> {
        let system = prop::option::of(prop::collection::vec(text(), 1..3));
        let rounds = prop::collection::vec(
            (
                prop::collection::vec(
                    prop_oneof![text().prop_map(ContentBlock::text), image()],
                    1..3,
                ),
                prop::option::of(text()),
                prop::collection::vec(text(), 0..2),
                prop::collection::vec((id(), "[a-z_]{1,12}", json_input(), result_content()), 0..3),
            ),
            1..4,
        );
        (system, rounds).prop_map(move |(system, rounds)| {
            let mut turns = Vec::new();
            if let Some(texts) = system {
                turns.push(Turn::new(
                    MessageRole::System,
                    texts.into_iter().map(ContentBlock::text).collect(),
                ));
            }
            let mut pending: Vec<(String, Value)> = Vec::new();
            for (user, thinking, said, calls) in rounds {
                let mut content: ContentBlocks = pending
                    .drain(..)
                    .map(|(id, result)| ContentBlock::tool_result(id, result))
                    .collect();
                content.extend(user);
                turns.push(Turn::new(MessageRole::User, content));
                let mut content = Vec::new();
                if let (true, Some(thinking)) = (reasoning, thinking) {
                    content.push(ContentBlock::Thinking(agentpg_schema::ThinkingBlock {
                        thinking,
                        signature: None,
                        extra: Extra::new(),
                    }));
                }
                content.extend(said.into_iter().map(ContentBlock::text));
                if content.is_empty() && calls.is_empty() {
                    content.push(ContentBlock::text("ok"));
                }
                for (i, (id, name, input, result)) in calls.into_iter().enumerate() {
                    let id = format!("{id}{i}");
                    content.push(ContentBlock::tool_use(id.clone(), name, input));
                    pending.push((id, result));
                }
                turns.push(Turn::new(MessageRole::Assistant, content));
            }
            turns
        })
    }

    proptest! {
        #[test]
        fn anthropic_round_trips(turns in conversation(true)) {
            let request = anthropic::to_request(&turns).unwrap();
            prop_assert_eq!(anthropic::from_request(&request).unwrap(), turns);
        }

        #[test]
        fn openai_chat_round_trips(turns in conversation(false)) {
            let messages = openai_chat::to_messages(&turns).unwrap();
            // What goes over the wire is JSON text.
            let wire: Vec<Value> =
                serde_json::from_str(&serde_json::to_string(&messages).unwrap()).unwrap();
            prop_assert_eq!(openai_chat::from_messages(&wire).unwrap(), turns);
        }

        #[test]
        fn openai_responses_round_trips(turns in conversation(true)) {
            let items = openai_responses::to_input(&turns).unwrap();
            let wire: Vec<Value> =
                serde_json::from_str(&serde_json::to_string(&items).unwrap()).unwrap();
            prop_assert_eq!(openai_responses::from_items(&wire).unwrap(), turns);
        }

        #[test]
        fn tool_call_arguments_that_are_not_json_are_kept_as_text(raw in text()) {
            let messages = vec![json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": raw}}
            ]})];
            let turns = openai_chat::from_messages(&messages).unwrap();
            let ContentBlock::ToolUse(call) = &turns[0].content[0] else { panic!("{turns:?}") };
            match serde_json::from_str::<Value>(&raw) {
                Ok(parsed) => prop_assert_eq!(&call.input, &parsed),
                Err(_) => prop_assert_eq!(&call.input, &Value::String(raw.clone())),
            }
        }
    }

    #[test]
    fn what_a_target_cannot_express_is_an_error_naming_the_message() {
        let mut cached = ContentBlock::text("x");
        if let ContentBlock::Text(t) = &mut cached {
            t.extra
                .insert("cache_control".into(), json!({"type": "ephemeral"}));
        }
        let turns = vec![
            Turn::new(MessageRole::User, vec![ContentBlock::text("hi")]),
            Turn::new(MessageRole::Assistant, vec![cached.clone()]),
        ];
        let err = openai_chat::to_messages(&turns).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.reason.contains("cache_control"), "{err}");
        assert!(openai_responses::to_input(&turns).is_err());
        // Anthropic carries it as is.
        let request = anthropic::to_request(&turns).unwrap();
        assert_eq!(anthropic::from_request(&request).unwrap(), turns);

        let document = ContentBlock::Document(agentpg_schema::DocumentBlock {
            source: json!({"type": "text", "media_type": "text/plain", "data": "doc"}),
            extra: Extra::new(),
        });
        let err =
            openai_chat::to_messages(&[Turn::new(MessageRole::User, vec![document])]).unwrap_err();
        assert!(err.reason.contains("document"), "{err}");

        let mut failed = ContentBlock::tool_result("t", json!("boom"));
        if let ContentBlock::ToolResult(r) = &mut failed {
            r.is_error = Some(true);
        }
        let err =
            openai_chat::to_messages(&[Turn::new(MessageRole::User, vec![failed])]).unwrap_err();
        assert!(err.reason.contains("is_error"), "{err}");

        let late_system = vec![
            Turn::new(MessageRole::User, vec![ContentBlock::text("hi")]),
            Turn::new(MessageRole::System, vec![ContentBlock::text("be brief")]),
        ];
        let err = anthropic::to_request(&late_system).unwrap_err();
        assert_eq!(err.index, 1);

        let signed = ContentBlock::Thinking(agentpg_schema::ThinkingBlock {
            thinking: "hmm".into(),
            signature: Some("sig".into()),
            extra: Extra::new(),
        });
        assert!(
            openai_responses::to_input(&[Turn::new(MessageRole::Assistant, vec![signed])]).is_err()
        );
        let err =
            openai_chat::from_messages(&[json!({"role": "critic", "content": "x"})]).unwrap_err();
        assert!(err.reason.contains("critic"), "{err}");
        assert!(
            openai_responses::from_items(&[json!({"type": "web_search_call", "id": "w"})]).is_err()
        );
    }

    #[test]
    fn openai_tool_messages_and_the_user_message_after_them_are_one_turn() {
        let messages = vec![
            json!({"role": "developer", "content": "be brief"}),
            json!({"role": "user", "content": "weather in Oslo and Rome?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": "call_a", "content": "-3C"}),
            json!({"role": "tool", "tool_call_id": "call_b", "content": "14C"}),
            json!({"role": "user", "content": "and tomorrow?"}),
        ];
        let turns = openai_chat::from_messages(&messages).unwrap();
        assert_eq!(turns.len(), 4);
        assert_eq!(turns[0].role, MessageRole::System);
        assert_eq!(
            turns[2].content[1],
            ContentBlock::tool_use("call_b", "weather", json!({"city": "Rome"}))
        );
        assert_eq!(
            turns[3].content,
            vec![
                ContentBlock::tool_result("call_a", json!("-3C")),
                ContentBlock::tool_result("call_b", json!("14C")),
                ContentBlock::text("and tomorrow?"),
            ]
        );
    }

    #[test]
    fn a_chat_response_message_is_read_whole_or_refused() {
        // As a Chat Completions response's choices[0].message comes.
        let refused = json!({"role": "assistant", "content": null,
            "refusal": "I can't help with that.", "annotations": [], "audio": null});
        let turns = openai_chat::from_messages(std::slice::from_ref(&refused)).unwrap();
        assert_eq!(turns[0].content.len(), 1);
        assert_eq!(turns[0].content[0].block_type(), Some("refusal"));
        let back = openai_chat::to_messages(&turns).unwrap();
        assert_eq!(
            back[0]["content"],
            json!([{"type": "refusal", "refusal": "I can't help with that."}])
        );
        assert_eq!(openai_chat::from_messages(&back).unwrap(), turns);

        for (field, value) in [
            ("name", json!("bob")),
            ("audio", json!({"id": "audio_1", "data": "AAAA"})),
            ("annotations", json!([{"type": "url_citation"}])),
        ] {
            let mut message = json!({"role": "assistant", "content": "hi"});
            message[field] = value;
            let err = openai_chat::from_messages(&[message]).unwrap_err();
            assert!(err.reason.contains(field), "{err}");
        }
        let custom = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}]});
        assert!(openai_chat::from_messages(&[custom]).is_err());
    }

    #[test]
    fn provider_usage_keeps_the_whole_prompt_and_every_field() {
        let chat = openai_chat::usage(&json!({
            "prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 12}
        }))
        .unwrap();
        assert_eq!(chat.prompt_tokens(), 1200);
        assert_eq!(
            (chat.input_tokens, chat.cache_read_input_tokens),
            (176, Some(1024))
        );
        assert_eq!(chat.output_tokens, 80);
        assert_eq!(chat.extra["total_tokens"], json!(1280));
        assert_eq!(
            chat.extra["completion_tokens_details"]["reasoning_tokens"],
            json!(12)
        );
        assert_eq!(chat.storage_conflict(), None);

        let responses = openai_responses::usage(&json!({
            "input_tokens": 300, "output_tokens": 20, "total_tokens": 320,
            "input_tokens_details": {"cached_tokens": 0}
        }))
        .unwrap();
        assert_eq!(responses.prompt_tokens(), 300);
        assert_eq!(responses.output_tokens, 20);
        assert!(responses.extra.contains_key("input_tokens_details"));

        let anthropic = anthropic::usage(&json!({
            "input_tokens": 12, "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 500, "output_tokens": 90
        }))
        .unwrap();
        assert_eq!(anthropic.prompt_tokens(), 2512);

        assert!(openai_chat::usage(&json!({"prompt_tokens": -1})).is_err());
        assert!(openai_chat::usage(&json!({"prompt_tokens": "many"})).is_err());
    }
}
