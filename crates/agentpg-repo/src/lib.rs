//! Storage for stateful AI agents on PostgreSQL: sessions, their messages, an audit trail of
//! context compactions, and an archive that makes every compaction reversible.
//!
//! Thin async functions over sqlx, built on the statements and row types that
//! [`agentpg_schema`] generates from the migrations. Every function that touches a session's
//! data takes the tenant and behaves for another tenant's ids exactly as for missing ones.
//!
//! * Single statements take `impl PgExecutor<'_>`: pass `&pool`, or `&mut *tx` inside your own
//!   transaction.
//! * Operations of several statements take `impl Acquire<'_, Database = Postgres>`: pass
//!   `&pool`, `&mut *conn` or `&mut tx`; [`compact`] and [`revert_compaction`] open a
//!   transaction, or a savepoint inside yours.
//!
//! ```no_run
//! use agentpg_repo::{append_messages, create_session, CreateSession};
//! use agentpg_schema::{ContentBlock, MessageRole, NewMessage};
//! use sqlx::types::Json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! agentpg_repo::migrate(&pool).await?;
//!
//! let mut tx = pool.begin().await?;
//! let session = create_session(&mut *tx, &CreateSession {
//!     tenant_id: "acme".into(),
//!     identifier: "support-42".into(),
//!     ..CreateSession::default()
//! }).await?;
//! let hello = NewMessage {
//!     content: Some(Json(vec![ContentBlock::text("hello")])),
//!     ..NewMessage::new(session.id, MessageRole::User)
//! };
//! append_messages(&mut *tx, "acme", session.id, &[hello]).await?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

/// SQL for the tokens one `messages` row adds to its session's `total_tokens` (input + output
/// tokens of its usage), over a row aliased `m`, as a literal so statements that use it stay
/// `&'static str` (`concat!`). The one place this rule is written in SQL; [`agentpg_schema::Usage::total`]
/// is the same rule in Rust.
macro_rules! message_tokens {
    () => {
        "(coalesce((m.usage ->> 'input_tokens')::bigint, 0) \
         + coalesce((m.usage ->> 'output_tokens')::bigint, 0))"
    };
}

/// The SQL text of a statement whose shape never changes, built once from its generated
/// builder (the expression) and kept; callers bind the values themselves, in the builder's
/// placeholder order. Saves rebuilding the same text on every call.
macro_rules! cached_sql {
    ($build:expr) => {{
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        sqlx::AssertSqlSafe(
            SQL.get_or_init(|| {
                sea_query_sqlx::SqlxBinder::build_sqlx(&$build, sea_query::PostgresQueryBuilder).0
            })
            .as_str(),
        )
    }};
}

mod compaction;
mod error;
mod messages;
mod migrate;
mod sessions;
mod validate;

pub use compaction::{
    archived_messages, compact, list_compactions, revert_compaction, CompactionPlan, Summary,
};
pub use error::{Entity, Error, Result};
pub use messages::{
    append_messages, delete_messages, get_message, list_messages, recompute_total_tokens,
    set_preserved, MessageRange,
};
pub use migrate::{migrate, MIGRATOR};
pub use sessions::{
    create_session, delete_session, find_session, get_session, list_children, list_sessions,
    update_metadata, CreateSession, MetadataUpdate, Page, SessionCursor, MAX_PAGE,
};

/// SQL this crate writes by hand because no generated builder covers it, for inspection (and
/// for benchmarks that compare against hand-written sqlx running the same text).
pub mod sql {
    /// Appends messages from arrays: `$1` session id, `$2` tenant, `$3` tokens to add, `$4`–`$12`
    /// arrays of id, role, content, usage, metadata, is_preserved, is_summary, created_at,
    /// updated_at. Returns the inserted rows.
    pub const APPEND_MESSAGES: &str = crate::messages::APPEND;
}

use agentpg_schema::SessionIden;
use sea_query::{Expr, ExprTrait, IntoColumnRef, Query, SimpleExpr};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::{Acquire, AssertSqlSafe, PgConnection, Postgres};
use uuid::Uuid;

/// A sea-query statement as sqlx takes it. The one place this crate asserts run-time SQL text
/// safe: the text is rendered by sea-query from generated identifiers, and every value is a bind
/// parameter in the returned [`SqlxValues`], never part of the text.
fn built(query: &impl SqlxBinder) -> (AssertSqlSafe<String>, SqlxValues) {
    let (sql, values) = query.build_sqlx(sea_query::PostgresQueryBuilder);
    (AssertSqlSafe(sql), values)
}

/// `column IN (SELECT id FROM sessions WHERE tenant_id = $tenant)`: scopes rows that point at
/// a session not known in advance to the tenant's sessions.
fn session_of_tenant(column: impl IntoColumnRef, tenant: &str) -> SimpleExpr {
    Expr::col(column).in_subquery(
        Query::select()
            .column(SessionIden::Id)
            .from(SessionIden::Table)
            .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
            .to_owned(),
    )
}

/// `EXISTS (SELECT 1 FROM sessions WHERE id = $session AND tenant_id = $tenant)`: scopes a
/// query already limited to one session. Uncorrelated, so PostgreSQL checks it once (a primary
/// key lookup) whatever the number of rows; the `IN` form above let the planner join all the
/// tenant's sessions once statistics were current (see BENCHMARKS.md).
fn session_is_tenants(session_id: Uuid, tenant: &str) -> SimpleExpr {
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(SessionIden::Table)
            .and_where(Expr::col(SessionIden::Id).eq(session_id))
            .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
            .to_owned(),
    )
}

/// Runs `query` (rows of one session) on one connection and returns its rows; when there are
/// none, tells an empty result from a session that is not the tenant's ([`Error::NotFound`]).
/// Records the row count on the current span.
async fn rows_of_session<'c, T>(
    conn: impl Acquire<'c, Database = Postgres>,
    query: &impl SqlxBinder,
    tenant: &str,
    session_id: Uuid,
) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let (sql, values) = built(query);
    let mut conn = conn.acquire().await?;
    let rows: Vec<T> = sqlx::query_as_with(sql, values)
        .fetch_all(&mut *conn)
        .await?;
    tracing::Span::current().record("count", rows.len());
    if rows.is_empty() {
        require_session(&mut conn, tenant, session_id).await?;
    }
    Ok(rows)
}

/// [`Error::NotFound`] unless `id` is a session of `tenant`.
async fn require_session(conn: &mut PgConnection, tenant: &str, id: Uuid) -> Result<()> {
    match sessions::get_session(conn, tenant, id).await? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound(Entity::Session)),
    }
}
