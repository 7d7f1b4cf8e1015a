//! Storage for stateful AI agents on PostgreSQL: sessions, their messages, an audit trail of
//! context compactions, and an archive that makes every compaction reversible.
//!
//! Thin async functions over sqlx, built on the statements and row types that
//! [`agentpg_schema`] generates from the migrations. Every function that touches a session's
//! data takes the tenant and behaves for another tenant's ids exactly as for missing ones; the
//! tenant leads every key of the schema, so the database refuses a row that points across
//! tenants.
//!
//! * Single statements take `impl PgExecutor<'_>`: pass `&pool`, or `&mut *tx` inside your own
//!   transaction.
//! * Operations of several statements take `impl Acquire<'_, Database = Postgres>`: pass
//!   `&pool`, `&mut *conn` or `&mut tx`; [`compact`] and [`revert_compaction`] open a
//!   transaction, or a savepoint inside yours.
//!
//! [`follow_session`] is a `Stream` of what happens to a session (appends, compactions,
//! reverts, deletes), in commit order, from a cursor the caller keeps: the database is the
//! truth, `LISTEN/NOTIFY` only wakes the follower.
//!
//! Model APIs: [`tokens`] keeps each message's own size in `usage` and the provider's reported
//! usage in `provider_usage`, so `total_tokens` lands on the provider's prompt after every
//! response; [`formats`] converts stored content (Anthropic Messages content blocks) to and from
//! the Anthropic Messages, OpenAI Chat Completions and OpenAI Responses shapes.
//!
//! Applications must use sqlx 0.9 to pass their pool or transaction in: the API is made of its
//! types, and two sqlx major versions cannot share a pool or a transaction.
//!
//! ```no_run
//! use agentpg_repo::{append_messages, create_session};
//! use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession};
//! use sqlx::types::Json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! agentpg_repo::migrate(&pool).await?;
//!
//! let mut tx = pool.begin().await?;
//! let session = create_session(&mut *tx, &NewSession::new("acme".into(), "support-42".into())).await?;
//! let hello = NewMessage {
//!     content: Some(Json(vec![ContentBlock::text("hello")])),
//!     ..NewMessage::new("acme".into(), session.id, MessageRole::User)
//! };
//! append_messages(&mut *tx, "acme", session.id, &[hello]).await?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

mod compaction;
mod error;
mod follow;
mod fork;
pub mod formats;
pub mod limits;
mod messages;
mod migrate;
mod pairs;
mod planner;
mod retention;
pub mod rls;
mod search;
mod sessions;
mod sql;
#[cfg(test)]
mod test_support;
pub mod tokens;
mod validate;

pub use compaction::{
    archived_messages, compact, list_compactions, revert_compaction, CompactionPlan,
    PendingToolCalls, Summary,
};
pub use error::{Entity, Error, Result};
pub use follow::{
    follow_cursor_now, follow_session, Follow, FollowCursor, Followed, SessionEvent,
    DEFAULT_COALESCE, DEFAULT_POLL_INTERVAL,
};
pub use fork::fork_session;
pub use messages::{
    append_messages, append_messages_after, delete_messages, get_message, get_messages,
    list_messages, recompute_total_tokens, set_preserved, stream_messages, Appended, LastSeen,
    MessageRange, MessageStream, StoredMessage,
};
pub use migrate::{migrate, MIGRATOR};
pub use pairs::ToolPairs;
pub use planner::{plan_compaction, CompactionPolicy, CompactionProposal, PlanOutcome};
pub use retention::{
    delete_idle_sessions, finalize_compactions, Cutoff, FinalizeReport, IdleReport, MAX_BATCH,
};
pub use search::{
    search_messages, Archived, Found, MessageSearch, SearchCursor, SearchHit, MAX_SEARCH_TEXT,
};
pub use sessions::{
    create_session, delete_session, find_session, get_session, list_children, list_sessions,
    update_metadata, MetadataUpdate, Page, SessionCursor, SessionFilter, SessionOrder, MAX_PAGE,
};
