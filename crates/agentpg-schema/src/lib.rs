//! Typed Rust for the agentpg schema, generated from the migrations by `cargo xtask codegen`.
//!
//! Per table (module `sessions`, `messages`, `compaction_events`, `message_archive`): a row
//! struct ([`Session`], [`Message`], [`CompactionEvent`], [`MessageArchive`]), an insert struct
//! (`New…`), a patch struct (`…Patch`), a sea-query `Iden` enum (`…Iden`), builders returning
//! sea-query statements, and the column list. `CHECK (col IN (…))` columns become Rust enums
//! ([`MessageRole`]). JSONB columns declared typed in `xtask/src/codegen/config.rs` use the
//! hand-written types of this crate ([`ContentBlock`], [`Usage`]).
//!
//! ```
//! use agentpg_schema::{messages, ContentBlock, MessageRole, NewMessage};
//! use sea_query::PostgresQueryBuilder;
//! use sqlx::types::Json;
//!
//! let new = NewMessage {
//!     content: Some(Json(vec![ContentBlock::text("hello")])),
//!     ..NewMessage::new(uuid::Uuid::nil(), MessageRole::User)
//! };
//! let (sql, values) = messages::insert(&new).build(PostgresQueryBuilder);
//! assert!(sql.starts_with(
//!     r#"INSERT INTO "messages" ("id", "session_id", "role", "content", "usage", "metadata", "#
//! ));
//! assert!(sql.contains("VALUES (DEFAULT, $1, $2, $3, $4, DEFAULT, DEFAULT, DEFAULT, DEFAULT, DEFAULT)"));
//! assert_eq!(values.0.len(), 4); // session_id, role, content and a NULL usage
//! ```

mod json;

#[rustfmt::skip]
pub mod generated;

pub use generated::*;
pub use json::{
    ContentBlock, ContentBlocks, DocumentBlock, Extra, ImageBlock, RedactedThinkingBlock,
    TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, Usage,
};
