//! Typed Rust for the agentpg schema, generated from the migrations by `cargo xtask codegen`.
//!
//! Per table (module `sessions`, `messages`, `compaction_events`, `message_archive`):
//!
//! * a row struct ([`Session`], [`Message`], [`CompactionEvent`], [`MessageArchive`]), an insert
//!   struct (`New…`) without the columns the database always fills, and a patch struct
//!   (`…Patch`);
//! * `stmt`: statements of fixed shape as `&'static str` SQL written at codegen time, each with
//!   a function that binds its typed arguments in placeholder order (`INSERT`, `INSERT_BATCH`
//!   from arrays, `SELECT_BY_PK` / `UPDATE_BY_PK` / `DELETE_BY_PK` with a `…Key`, a `SELECT_BY_…`
//!   per unique key, the batch append of messages under their session, and the archive's
//!   read-back and restore);
//! * a sea-query `Iden` enum (`…Iden`), builders returning sea-query statements for composing
//!   others, the column list, and `constraint::…` names.
//!
//! `CHECK (col IN (…))` columns become Rust enums ([`MessageRole`]). JSONB columns declared typed
//! in `xtask/src/codegen/config.rs` use the hand-written types of this crate ([`ContentBlock`],
//! [`Usage`]).
//!
//! ```no_run
//! use agentpg_schema::sessions::SessionKey;
//! use agentpg_schema::{messages, sessions, ContentBlock, MessageRole, NewMessage};
//! use sqlx::types::Json;
//!
//! # async fn run(pool: sqlx::PgPool, session_id: uuid::Uuid) -> Result<(), sqlx::Error> {
//! let session = sessions::stmt::select_by_pk(&SessionKey { tenant_id: "acme", id: session_id })
//!     .fetch_optional(&pool)
//!     .await?;
//! let hello = NewMessage {
//!     content: Some(Json(vec![ContentBlock::text("hello")])),
//!     ..NewMessage::new("acme".into(), session_id, MessageRole::User)
//! };
//! let stored = messages::stmt::insert(&hello).fetch_one(&pool).await?;
//! assert_eq!(stored.position > 0, true);
//! # let _ = session;
//! # Ok(())
//! # }
//! ```

mod json;

#[rustfmt::skip]
pub mod generated;

pub use generated::*;
pub use json::{
    ContentBlock, ContentBlocks, DocumentBlock, Extra, ImageBlock, RedactedThinkingBlock,
    TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, Usage,
};
