//! Cheap checks before any SQL: what PostgreSQL or our constraints would refuse anyway, refused
//! early with a clear reason.

use agentpg_schema::{ContentBlock, Usage};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The deepest JSON nesting accepted in a column: serde_json reads at most 127 nested arrays and
/// objects (its recursion limit), and an archived message sits inside one more object (the row),
/// so anything deeper could be stored but not read back from the archive.
pub(crate) const MAX_JSON_DEPTH: usize = 126;

pub(crate) fn text(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(format!("{field} contains a NUL character")));
    }
    Ok(())
}

pub(crate) fn non_empty_text(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} is empty")));
    }
    text(field, value)
}

/// `value` must fit in `max` bytes (UTF-8).
pub(crate) fn bounded(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid(format!(
            "{field} is {} bytes long; the limit is {max} bytes",
            value.len()
        )));
    }
    Ok(())
}

pub(crate) fn tenant(tenant: &str) -> Result<()> {
    non_empty_text("tenant", tenant)?;
    bounded("tenant", tenant, crate::limits::TENANT)
}

/// JSON that PostgreSQL's jsonb takes: no NUL in any string or key, bounded depth.
pub(crate) fn json(field: &str, value: &Value) -> Result<()> {
    json_at(field, value, 0)
}

/// `depth`: how many arrays and objects enclose `value`.
fn json_at(field: &str, value: &Value, depth: usize) -> Result<()> {
    let inner = || -> Result<usize> {
        if depth + 1 > MAX_JSON_DEPTH {
            return Err(Error::invalid(format!(
                "{field} nests more than {MAX_JSON_DEPTH} arrays and objects"
            )));
        }
        Ok(depth + 1)
    };
    match value {
        Value::String(s) => text(field, s),
        Value::Array(items) => {
            let depth = inner()?;
            items.iter().try_for_each(|v| json_at(field, v, depth))
        }
        Value::Object(map) => object_at(field, map, inner()?),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `depth`: how many arrays and objects enclose the map's values, the map included.
fn object_at(field: &str, map: &Map<String, Value>, depth: usize) -> Result<()> {
    map.iter().try_for_each(|(k, v)| {
        text(field, k)?;
        json_at(field, v, depth)
    })
}

pub(crate) fn json_object(field: &str, value: &Value) -> Result<()> {
    if !value.is_object() {
        return Err(Error::invalid(format!("{field} must be a JSON object")));
    }
    json(field, value)
}

/// Content blocks PostgreSQL's jsonb takes, checked in place (no copy into a JSON tree): the
/// array is depth 0, each block depth 1, its fields' values depth 2.
pub(crate) fn content(field: &str, blocks: &[ContentBlock]) -> Result<()> {
    const FIELDS: usize = 2;
    for (i, block) in blocks.iter().enumerate() {
        if let Some(conflict) = block.storage_conflict() {
            return Err(Error::invalid(format!("{field}[{i}]: {conflict}")));
        }
        match block {
            ContentBlock::Text(b) => {
                text(field, &b.text)?;
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::ToolUse(b) => {
                text(field, &b.id)?;
                bounded(
                    &format!("{field} tool_use id"),
                    &b.id,
                    crate::limits::TOOL_ID,
                )?;
                text(field, &b.name)?;
                json_at(field, &b.input, FIELDS)?;
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::ToolResult(b) => {
                text(field, &b.tool_use_id)?;
                bounded(
                    &format!("{field} tool_result tool_use_id"),
                    &b.tool_use_id,
                    crate::limits::TOOL_ID,
                )?;
                if let Some(content) = &b.content {
                    json_at(field, content, FIELDS)?;
                }
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::Image(b) => {
                json_at(field, &b.source, FIELDS)?;
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::Document(b) => {
                json_at(field, &b.source, FIELDS)?;
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::Thinking(b) => {
                text(field, &b.thinking)?;
                if let Some(signature) = &b.signature {
                    text(field, signature)?;
                }
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::RedactedThinking(b) => {
                text(field, &b.data)?;
                object_at(field, &b.extra, FIELDS)?;
            }
            ContentBlock::Unknown(map) => object_at(field, map, FIELDS)?,
        }
    }
    Ok(())
}

/// Token counts must be non-negative. (What a message counts toward its session is the
/// database's `messages.tokens`; a sum too large for it is refused there, as invalid input.)
pub(crate) fn usage(field: &str, usage: &Usage) -> Result<()> {
    let counts = [
        ("input_tokens", Some(usage.input_tokens)),
        ("output_tokens", Some(usage.output_tokens)),
        (
            "cache_creation_input_tokens",
            usage.cache_creation_input_tokens,
        ),
        ("cache_read_input_tokens", usage.cache_read_input_tokens),
    ];
    if let Some(conflict) = usage.storage_conflict() {
        return Err(Error::invalid(format!("{field}: {conflict}")));
    }
    for (name, count) in counts {
        if count.is_some_and(|c| c < 0) {
            return Err(Error::invalid(format!("{field}.{name} is negative")));
        }
    }
    object_at(field, &usage.extra, 1)
}
