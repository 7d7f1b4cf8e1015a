//! Messages: append in one statement, list in order, get, preserve, delete, recompute tokens.

use agentpg_schema::{messages, Message, MessageIden, MessageRole, NewMessage, Usage};
use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Order};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Acquire, PgExecutor, Postgres};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::validate;

/// Checks one message to append and returns its tokens.
fn check(session_id: Uuid, index: usize, m: &NewMessage) -> Result<i64> {
    let field = |name: &str| format!("messages[{index}].{name}");
    if m.session_id != session_id {
        return Err(Error::invalid(format!(
            "{} is {}, not the session appended to ({session_id})",
            field("session_id"),
            m.session_id
        )));
    }
    if let Some(content) = &m.content {
        validate::content(&field("content"), content)?;
    }
    if let Some(metadata) = &m.metadata {
        validate::json_object(&field("metadata"), metadata)?;
    }
    match &m.usage {
        Some(usage) => validate::usage(&field("usage"), usage),
        None => Ok(0),
    }
}

/// The append statement: one round trip for any number of messages. Public as
/// [`crate::sql::APPEND_MESSAGES`]. It updates the session
/// row first (scoped by tenant; the row lock also keeps concurrent appends to one session from
/// interleaving their positions), then inserts the rows from arrays in the given order.
/// Columns the caller leaves `None` get the values of the table's defaults (mirrored here and in
/// [`append_messages`]; the tests compare the returned rows with the stored ones). Only the
/// columns the database fills come back, so the content is not sent twice over the wire.
pub(crate) const APPEND: &str = "\
WITH session AS (
    UPDATE sessions
       SET total_tokens = total_tokens + $3, updated_at = now()
     WHERE id = $1 AND tenant_id = $2
 RETURNING id
)
INSERT INTO messages (id, session_id, role, content, usage, metadata, is_preserved, is_summary,
                      created_at, updated_at)
SELECT coalesce(i.id, gen_random_uuid()), session.id, i.role, coalesce(i.content, '[]'), i.usage,
       coalesce(i.metadata, '{}'), coalesce(i.is_preserved, false), coalesce(i.is_summary, false),
       coalesce(i.created_at, now()), coalesce(i.updated_at, now())
  FROM session,
       unnest($4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[], $8::jsonb[], $9::bool[],
              $10::bool[], $11::timestamptz[], $12::timestamptz[])
       WITH ORDINALITY AS i(id, role, content, usage, metadata, is_preserved, is_summary,
                            created_at, updated_at, ord)
 ORDER BY i.ord
RETURNING id, position, created_at, updated_at";

/// Appends `batch` to session `session_id` of `tenant` in one statement, in the given order,
/// and adds their tokens (input + output) to the session's `total_tokens`. Returns the stored
/// rows in order: id, position and timestamps as the database filled them, the other fields as
/// given (or their defaults). An empty batch is a no-op (and does not check the session).
///
/// PostgreSQL keeps JSON in a canonical form (object keys sorted, numbers like `1e2` as `100`);
/// read the rows back with [`list_messages`] to see exactly what was stored.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] for a
/// message of another session, NUL characters, metadata that is not an object, or negative
/// token counts (nothing is written); [`Error::Conflict`] if a given id is taken.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = batch.len()))]
pub async fn append_messages(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
    batch: &[NewMessage],
) -> Result<Vec<Message>> {
    validate::tenant(tenant)?;
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tokens: i64 = 0;
    for (i, m) in batch.iter().enumerate() {
        tokens = tokens
            .checked_add(check(session_id, i, m)?)
            .ok_or_else(|| Error::invalid("the batch's token total overflows"))?;
    }
    let ids: Vec<Option<Uuid>> = batch.iter().map(|m| m.id).collect();
    let roles: Vec<MessageRole> = batch.iter().map(|m| m.role).collect();
    let contents: Vec<Option<&Json<agentpg_schema::ContentBlocks>>> =
        batch.iter().map(|m| m.content.as_ref()).collect();
    let usages: Vec<Option<&Json<Usage>>> = batch.iter().map(|m| m.usage.as_ref()).collect();
    let metadata: Vec<Option<Json<&Value>>> = batch
        .iter()
        .map(|m| m.metadata.as_ref().map(Json))
        .collect();
    let preserved: Vec<Option<bool>> = batch.iter().map(|m| m.is_preserved).collect();
    let summary: Vec<Option<bool>> = batch.iter().map(|m| m.is_summary).collect();
    let created: Vec<Option<DateTime<Utc>>> = batch.iter().map(|m| m.created_at).collect();
    let updated: Vec<Option<DateTime<Utc>>> = batch.iter().map(|m| m.updated_at).collect();
    let mut filled: Vec<(Uuid, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(APPEND)
        .bind(session_id)
        .bind(tenant)
        .bind(tokens)
        .bind(ids)
        .bind(roles)
        .bind(contents)
        .bind(usages)
        .bind(metadata)
        .bind(preserved)
        .bind(summary)
        .bind(created)
        .bind(updated)
        .fetch_all(executor)
        .await?;
    if filled.is_empty() {
        return Err(Error::NotFound(Entity::Session));
    }
    // Positions were drawn in input order.
    filled.sort_by_key(|f| f.1);
    let rows = batch
        .iter()
        .zip(filled)
        .map(|(m, (id, position, created_at, updated_at))| {
            debug_assert!(m.id.is_none_or(|given| given == id));
            Message {
                id,
                session_id,
                position,
                role: m.role,
                content: m.content.clone().unwrap_or_else(|| Json(Vec::new())),
                usage: m.usage.clone(),
                metadata: m
                    .metadata
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                is_preserved: m.is_preserved.unwrap_or(false),
                is_summary: m.is_summary.unwrap_or(false),
                created_at,
                updated_at,
            }
        })
        .collect();
    Ok(rows)
}

/// Which messages [`list_messages`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageRange {
    /// Only messages after this position.
    pub after_position: Option<i64>,
    /// At most this many.
    pub limit: Option<u64>,
}

/// The messages of session `session_id` of `tenant`, in order.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = tracing::field::Empty))]
pub async fn list_messages<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    range: MessageRange,
) -> Result<Vec<Message>> {
    validate::tenant(tenant)?;
    let mut query = messages::select();
    query
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(crate::session_is_tenants(session_id, tenant))
        .order_by(MessageIden::Position, Order::Asc);
    if let Some(after) = range.after_position {
        query.and_where(Expr::col(MessageIden::Position).gt(after));
    }
    if let Some(limit) = range.limit {
        query.limit(limit);
    }
    crate::rows_of_session(conn, &query, tenant, session_id).await
}

/// Message `id` of session `session_id` of `tenant`, if it exists.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, message = %id))]
pub async fn get_message(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
    id: Uuid,
) -> Result<Option<Message>> {
    validate::tenant(tenant)?;
    let mut query = messages::select_by_pk(&id);
    query
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(crate::session_is_tenants(session_id, tenant));
    let (sql, values) = crate::built(&query);
    Ok(sqlx::query_as_with(sql, values)
        .fetch_optional(executor)
        .await?)
}

/// Marks message `id` preserved (never compacted away) or not; returns the message.
///
/// # Errors
/// [`Error::NotFound`] if the message is not in session `session_id` of `tenant`.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, message = %id, preserved = preserved))]
pub async fn set_preserved(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
    id: Uuid,
    preserved: bool,
) -> Result<Message> {
    validate::tenant(tenant)?;
    let mut query = sea_query::Query::update();
    query
        .table(MessageIden::Table)
        .value(MessageIden::IsPreserved, preserved)
        .value(MessageIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(MessageIden::Id).eq(id))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(crate::session_is_tenants(session_id, tenant))
        .returning(sea_query::Query::returning().columns(MessageIden::COLUMNS));
    let (sql, values) = crate::built(&query);
    sqlx::query_as_with(sql, values)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Message))
}

/// Deletes the messages `ids` of session `session_id` of `tenant` (ids outside the session are
/// ignored) and takes their tokens off the session's total, in one statement. Returns how many
/// were deleted.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = ids.len(), deleted = tracing::field::Empty))]
pub async fn delete_messages(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
    ids: &[Uuid],
) -> Result<u64> {
    validate::tenant(tenant)?;
    let sql = concat!(
        "WITH session AS (
             SELECT id FROM sessions WHERE id = $1 AND tenant_id = $2 FOR UPDATE
         ), gone AS (
             DELETE FROM messages m USING session
              WHERE m.session_id = session.id AND m.id = ANY($3)
          RETURNING ",
        message_tokens!(),
        " AS tokens
         ), updated AS (
             UPDATE sessions s
                SET total_tokens = s.total_tokens - (SELECT coalesce(sum(tokens), 0) FROM gone),
                    updated_at = now()
               FROM session
              WHERE s.id = session.id AND (SELECT count(*) FROM gone) > 0
         )
         SELECT (SELECT count(*) FROM session), (SELECT count(*) FROM gone)"
    );
    let (sessions, deleted): (i64, i64) = sqlx::query_as(sql)
        .bind(session_id)
        .bind(tenant)
        .bind(ids)
        .fetch_one(executor)
        .await?;
    if sessions == 0 {
        return Err(Error::NotFound(Entity::Session));
    }
    tracing::Span::current().record("deleted", deleted);
    Ok(deleted as u64)
}

/// The token total of session `session_id` recomputed from its messages (input + output tokens
/// of each), to verify `total_tokens`.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id))]
pub async fn recompute_total_tokens(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
) -> Result<i64> {
    validate::tenant(tenant)?;
    let sql = concat!(
        "SELECT (SELECT coalesce(sum(",
        message_tokens!(),
        "), 0)::bigint FROM messages m WHERE m.session_id = s.id)
           FROM sessions s WHERE s.id = $1 AND s.tenant_id = $2"
    );
    sqlx::query_scalar(sql)
        .bind(session_id)
        .bind(tenant)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Session))
}
