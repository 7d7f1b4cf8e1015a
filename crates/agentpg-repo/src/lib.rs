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
mod fork;
pub mod formats;
pub mod limits;
mod messages;
mod migrate;
mod pairs;
mod planner;
mod retention;
pub mod rls;
mod sessions;
#[cfg(test)]
mod test_support;
pub mod tokens;
mod validate;

pub use compaction::{
    archived_messages, compact, list_compactions, revert_compaction, CompactionPlan,
    PendingToolCalls, Summary,
};
pub use error::{Entity, Error, Result};
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
pub use sessions::{
    create_session, delete_session, find_session, get_session, list_children, list_sessions,
    update_metadata, MetadataUpdate, Page, SessionCursor, SessionFilter, SessionOrder, MAX_PAGE,
};

use sea_query::{
    Alias, Asterisk, CommonTableExpression, Expr, ExprTrait, Func, IntoColumnRef, IntoIden, Query,
};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::{Acquire, AssertSqlSafe, Postgres};
use uuid::Uuid;

/// A sea-query statement as sqlx takes it. The one place this crate asserts run-time SQL text
/// safe: the text is rendered by sea-query from generated identifiers, and every value is a bind
/// parameter in the returned [`SqlxValues`], never part of the text.
fn built(query: &impl SqlxBinder) -> (AssertSqlSafe<String>, SqlxValues) {
    let (sql, values) = query.build_sqlx(sea_query::PostgresQueryBuilder);
    (AssertSqlSafe(sql), values)
}

/// `INSERT INTO table (c…) VALUES (v…)` from (column, value) pairs: each value is written
/// beside its column, so the two cannot fall out of order.
fn insert_values<C: IntoIden>(
    table: impl IntoIden,
    pairs: impl IntoIterator<Item = (C, Expr)>,
) -> sea_query::InsertStatement {
    let (columns, values): (Vec<C>, Vec<Expr>) = pairs.into_iter().unzip();
    Query::insert()
        .into_table(table)
        .columns(columns)
        .values(values)
        .expect("unzipped pairs: as many values as columns")
        .to_owned()
}

/// A common table expression `name AS (query)`.
fn cte(name: &Alias, query: impl Into<sea_query::SubQueryStatement>) -> CommonTableExpression {
    CommonTableExpression::new()
        .table_name(name.clone())
        .query(query)
        .to_owned()
}

/// `column IN (SELECT unnest($ids))`: membership in a set the database hashes, whatever its
/// size (`column = ANY($ids)` compares against every element, row after row).
fn in_set(column: impl IntoColumnRef, ids: &[Uuid]) -> Expr {
    Expr::col(column).in_subquery(
        Query::select()
            .expr(Func::cust("unnest").arg(Expr::val(ids.to_vec())))
            .to_owned(),
    )
}

/// `(SELECT count(*) FROM name)`.
fn count_of(name: &Alias) -> Expr {
    Expr::from(
        Query::select()
            .expr(Expr::col(Asterisk).count())
            .from(name.clone())
            .to_owned(),
    )
}

/// `coalesce(sum(column), 0)::int8`: the total of a column, 0 over no rows.
fn total(column: impl IntoIden) -> Expr {
    Func::coalesce([
        Func::sum(Expr::col(column.into_iden())).into(),
        Expr::val(0),
    ])
    .cast_as(Alias::new("int8"))
}

/// `(SELECT coalesce(sum(column), 0)::int8 FROM name)`.
fn sum_of(column: impl IntoIden, name: &Alias) -> Expr {
    Expr::from(
        Query::select()
            .expr(total(column))
            .from(name.clone())
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
    if rows.is_empty()
        && sessions::get_session(&mut *conn, tenant, session_id)
            .await?
            .is_none()
    {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(rows)
}
