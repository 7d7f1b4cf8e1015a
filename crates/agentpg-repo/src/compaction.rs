//! Compaction and its exact revert, each one transaction (a savepoint inside the caller's).

use std::collections::HashSet;

use agentpg_schema::{
    compaction_events, messages, sessions, CompactionEvent, CompactionEventIden,
    CompactionEventPatch, ContentBlocks, Message, MessageArchiveIden, MessageIden, MessageRole,
    NewCompactionEvent, SessionPatch, Usage,
};
use chrono::{DateTime, Utc};
use sea_query::{Alias, CommonTableExpression, Expr, ExprTrait, Order, PgFunc, Query};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Acquire, FromRow, PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::validate;

/// The summary message a compaction puts in place of the messages it removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Id of the summary message; generated when `None`.
    pub id: Option<Uuid>,
    /// Role of the summary message (usually `User` or `System`).
    pub role: MessageRole,
    /// Content blocks of the summary.
    pub content: ContentBlocks,
    /// Token usage of the summary (counts toward the session's total).
    pub usage: Option<Usage>,
    /// Metadata of the summary message; a JSON object (`{}` when `None`).
    pub metadata: Option<Value>,
}

/// What one compaction does.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPlan {
    /// The session to compact.
    pub session_id: Uuid,
    /// The messages to remove (archived, then deleted). Must be non-empty, without duplicates,
    /// in the session, and not preserved.
    pub remove: Vec<Uuid>,
    /// The summary written in the removed messages' place, if any.
    pub summary: Option<Summary>,
    /// Name of the strategy; non-empty.
    pub strategy: String,
    /// Model that wrote the summary.
    pub model_used: Option<String>,
    /// How long the compaction took, as the caller measured it.
    pub duration_ms: Option<i64>,
}

fn check_plan(plan: &CompactionPlan) -> Result<()> {
    validate::non_empty_text("strategy", &plan.strategy)?;
    if let Some(model) = &plan.model_used {
        validate::text("model_used", model)?;
    }
    if plan.duration_ms.is_some_and(|d| d < 0) {
        return Err(Error::invalid("duration_ms is negative"));
    }
    if plan.remove.is_empty() {
        return Err(Error::invalid("the plan removes no messages"));
    }
    let mut seen = HashSet::with_capacity(plan.remove.len());
    if let Some(dup) = plan.remove.iter().find(|id| !seen.insert(**id)) {
        return Err(Error::invalid(format!(
            "message {dup} is named twice in the plan"
        )));
    }
    if let Some(summary) = &plan.summary {
        validate::content("summary.content", &summary.content)?;
        if let Some(usage) = &summary.usage {
            validate::usage("summary.usage", usage)?;
        }
        if let Some(metadata) = &summary.metadata {
            validate::json_object("summary.metadata", metadata)?;
        }
        if summary.id.is_some_and(|id| seen.contains(&id)) {
            return Err(Error::invalid(
                "the summary's id is one of the removed messages",
            ));
        }
    }
    Ok(())
}

/// The locked session row and the transaction's clock.
#[derive(sqlx::FromRow)]
struct Locked {
    id: Uuid,
    total_tokens: i64,
    compaction_count: i64,
    now: DateTime<Utc>,
}

/// Applies `plan` to session `plan.session_id` of `tenant` atomically and returns the event.
///
/// In one transaction (a savepoint when `conn` is already in one): lock the session row; check
/// every id is a non-preserved message of the session; write the event (token figures, preserved
/// ids, summary id, strategy, model, duration); archive each removed row whole and delete it;
/// insert the summary at the position of the first removed message; bump `compaction_count` and
/// set `total_tokens`. Four statements (plus BEGIN and COMMIT) whatever the plan's size.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] for an
/// empty plan, duplicates, ids outside the session, preserved messages, or bad summary content.
/// Nothing is written on any error.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %plan.session_id, remove = plan.remove.len(), event = tracing::field::Empty))]
pub async fn compact<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    plan: &CompactionPlan,
) -> Result<CompactionEvent> {
    validate::tenant(tenant)?;
    check_plan(plan)?;
    let mut tx = conn.begin().await?;
    let event = compact_in(&mut tx, tenant, plan).await?;
    tx.commit().await?;
    Ok(event)
}

async fn compact_in(
    conn: &mut PgConnection,
    tenant: &str,
    plan: &CompactionPlan,
) -> Result<CompactionEvent> {
    // 1. Lock the session row: compactions, reverts and appends of one session serialize here.
    let session: Locked = sqlx::query_as(
        "SELECT id, total_tokens, compaction_count, now() AS now
           FROM sessions WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(plan.session_id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound(Entity::Session))?;

    // 2. The plan's messages and the session's preserved ones.
    let found: Vec<(Uuid, i64, bool, bool, i64)> = sqlx::query_as(concat!(
        "SELECT m.id, m.position, m.is_preserved, m.id = ANY($2), ",
        message_tokens!(),
        " FROM messages m
          WHERE m.session_id = $1 AND (m.id = ANY($2) OR m.is_preserved)
          ORDER BY m.position"
    ))
    .bind(session.id)
    .bind(&plan.remove)
    .fetch_all(&mut *conn)
    .await?;
    let mut removed_tokens: i64 = 0;
    let mut removed = 0usize;
    let mut first_position = None;
    let mut preserved_ids = Vec::new();
    for (id, position, is_preserved, in_plan, tokens) in &found {
        if *in_plan {
            if *is_preserved {
                return Err(Error::invalid(format!("message {id} is preserved")));
            }
            removed += 1;
            removed_tokens += tokens;
            first_position.get_or_insert(*position);
        } else {
            preserved_ids.push(*id);
        }
    }
    if removed != plan.remove.len() {
        let known: HashSet<Uuid> = found.iter().filter(|f| f.3).map(|f| f.0).collect();
        let missing = plan
            .remove
            .iter()
            .find(|id| !known.contains(id))
            .expect("one is missing");
        return Err(Error::invalid(format!(
            "message {missing} is not in the session"
        )));
    }
    let summary_tokens = match &plan.summary {
        Some(Summary { usage: Some(u), .. }) => u.total(),
        _ => 0,
    };
    let compacted_tokens = session.total_tokens - removed_tokens + summary_tokens;
    let summary_id = plan
        .summary
        .as_ref()
        .map(|s| s.id.unwrap_or_else(Uuid::new_v4));

    // 3. One statement, so a compaction of any size costs the same round trips: write the
    //    event, archive each removed row whole (to_jsonb of the row) and delete it, and set the
    //    counters — each part built from the generated statements.
    let new_event = NewCompactionEvent {
        summary_content: plan.summary.as_ref().map(|s| Json(s.content.clone())),
        summary_message_id: summary_id,
        preserved_message_ids: Some(preserved_ids),
        model_used: plan.model_used.clone(),
        duration_ms: plan.duration_ms,
        created_at: Some(session.now),
        ..NewCompactionEvent::new(
            session.id,
            plan.strategy.clone(),
            session.total_tokens,
            compacted_tokens,
            removed as i64,
        )
    };
    let counters = SessionPatch {
        total_tokens: Some(compacted_tokens),
        compaction_count: Some(session.compaction_count + 1),
        updated_at: Some(session.now),
        ..SessionPatch::default()
    };
    let (sql, values) = crate::built(&apply_statement(
        &new_event,
        &counters,
        session.id,
        &plan.remove,
        session.now,
    ));
    let row = sqlx::query_with(sql, values).fetch_one(&mut *conn).await?;
    let archived: i64 = row.try_get("archived")?;
    let event = CompactionEvent::from_row(&row)?;
    if archived != removed as i64 {
        return Err(Error::conflict(
            "the session's messages changed during the compaction",
        ));
    }
    tracing::Span::current().record("event", tracing::field::display(event.id));

    // 4. The summary, in the place of the first removed message.
    if let (Some(summary), Some(id), Some(position)) = (&plan.summary, summary_id, first_position) {
        let row = Message {
            id,
            session_id: session.id,
            position,
            role: summary.role,
            content: Json(summary.content.clone()),
            usage: summary.usage.clone().map(Json),
            metadata: summary
                .metadata
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            is_preserved: false,
            is_summary: true,
            created_at: session.now,
            updated_at: session.now,
        };
        let (sql, values) = crate::built(&messages::insert_rows([&row]).expect("one row"));
        sqlx::query_with(sql, values).execute(&mut *conn).await?;
    }

    Ok(event)
}

/// `WITH event AS (INSERT INTO compaction_events …), removed AS (DELETE FROM messages …),
/// archived AS (INSERT INTO message_archive SELECT … to_jsonb(removed) …), counters AS
/// (UPDATE sessions …) SELECT event.*, (SELECT count(*) FROM archived) AS archived FROM event`.
fn apply_statement(
    event: &NewCompactionEvent,
    counters: &SessionPatch,
    session_id: Uuid,
    remove: &[Uuid],
    now: DateTime<Utc>,
) -> sea_query::WithQuery {
    let (event_cte, removed_cte, archived_cte) = (
        Alias::new("event"),
        Alias::new("removed"),
        Alias::new("archived"),
    );
    let mut delete = Query::delete();
    delete
        .from_table(MessageIden::Table)
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(Expr::col(MessageIden::Id).eq(PgFunc::any(Expr::val(remove.to_vec()))))
        .returning_all();
    let mut rows = Query::select();
    rows.column((removed_cte.clone(), MessageIden::Id))
        .expr(Expr::cust("(SELECT id FROM event)"))
        .column((removed_cte.clone(), MessageIden::SessionId))
        .expr(Expr::cust("to_jsonb(removed)"))
        .expr(Expr::val(now))
        .from(removed_cte.clone());
    let mut archive = Query::insert();
    archive
        .into_table(MessageArchiveIden::Table)
        .columns([
            MessageArchiveIden::Id,
            MessageArchiveIden::CompactionEventId,
            MessageArchiveIden::SessionId,
            MessageArchiveIden::OriginalMessage,
            MessageArchiveIden::ArchivedAt,
        ])
        .select_from(rows)
        .expect("five columns, five values")
        .returning_col(MessageArchiveIden::Id);
    let counters = sessions::update_by_pk(&session_id, counters).expect("the patch sets columns");
    let cte = |name: &Alias, query: &dyn Fn(&mut CommonTableExpression)| {
        let mut cte = CommonTableExpression::new();
        cte.table_name(name.clone());
        query(&mut cte);
        cte
    };
    let with = Query::with()
        .cte(cte(&event_cte, &|c| {
            c.query(compaction_events::insert(event));
        }))
        .cte(cte(&removed_cte, &|c| {
            c.query(delete.clone());
        }))
        .cte(cte(&archived_cte, &|c| {
            c.query(archive.clone());
        }))
        .cte(cte(&Alias::new("counters"), &|c| {
            c.query(counters.clone());
        }))
        .to_owned();
    Query::select()
        .expr(Expr::cust("event.*"))
        .expr_as(
            Expr::cust("(SELECT count(*) FROM archived)"),
            Alias::new("archived"),
        )
        .from(event_cte)
        .to_owned()
        .with(with)
}

/// Reverts compaction `event_id` of `tenant`: restores the archived messages exactly (id,
/// position, role, content, usage, metadata, flags, timestamps), deletes the summary, restores
/// `total_tokens` and `compaction_count`, removes the archive rows, and marks the event reverted
/// (it stays as history). Returns the updated event.
///
/// # Errors
/// [`Error::NotFound`] if the event is not in one of `tenant`'s sessions; [`Error::Conflict`] if
/// it is not the session's latest standing (unreverted) compaction. Nothing is written on any
/// error.
#[tracing::instrument(skip_all, fields(tenant = %tenant, event = %event_id, session = tracing::field::Empty, restored = tracing::field::Empty))]
pub async fn revert_compaction<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    event_id: Uuid,
) -> Result<CompactionEvent> {
    validate::tenant(tenant)?;
    let mut tx = conn.begin().await?;
    let event = revert_in(&mut tx, tenant, event_id).await?;
    tx.commit().await?;
    Ok(event)
}

async fn revert_in(
    conn: &mut PgConnection,
    tenant: &str,
    event_id: Uuid,
) -> Result<CompactionEvent> {
    // 1. Lock the event's session.
    let session: Locked = sqlx::query_as(
        "SELECT s.id, s.total_tokens, s.compaction_count, now() AS now
           FROM sessions s JOIN compaction_events e ON e.session_id = s.id
          WHERE e.id = $1 AND s.tenant_id = $2
            FOR UPDATE OF s",
    )
    .bind(event_id)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound(Entity::CompactionEvent))?;
    tracing::Span::current().record("session", tracing::field::display(session.id));

    // 2. Only the latest standing compaction may be reverted.
    let mut latest = compaction_events::select();
    latest
        .and_where(Expr::col(CompactionEventIden::SessionId).eq(session.id))
        .and_where(Expr::col(CompactionEventIden::RevertedAt).is_null())
        .order_by(CompactionEventIden::Seq, Order::Desc)
        .limit(1);
    let (sql, values) = crate::built(&latest);
    let latest: Option<CompactionEvent> = sqlx::query_as_with(sql, values)
        .fetch_optional(&mut *conn)
        .await?;
    let event = match latest {
        Some(e) if e.id == event_id => e,
        _ => {
            return Err(Error::conflict(format!(
                "compaction {event_id} is not the latest standing compaction of its session"
            )))
        }
    };

    // 3. Remove the summary (its position goes back to the first restored message).
    let summary_tokens: i64 = match event.summary_message_id {
        Some(id) => sqlx::query_scalar(concat!(
            "DELETE FROM messages m WHERE m.id = $1 AND m.session_id = $2 RETURNING ",
            message_tokens!()
        ))
        .bind(id)
        .bind(session.id)
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(0),
        None => 0,
    };

    // 4. Restore every archived row exactly as it was and drop the archive rows.
    let (restored, restored_tokens): (i64, i64) = sqlx::query_as(concat!(
        "WITH restored AS (
             INSERT INTO messages AS m
             SELECT r.* FROM message_archive a
                  CROSS JOIN LATERAL jsonb_populate_record(NULL::messages, a.original_message) r
              WHERE a.compaction_event_id = $1
              ORDER BY r.position
             RETURNING ",
        message_tokens!(),
        " AS tokens
         ), dropped AS (
             DELETE FROM message_archive WHERE compaction_event_id = $1
         )
         SELECT count(*), coalesce(sum(tokens), 0)::bigint FROM restored",
    ))
    .bind(event.id)
    .fetch_one(&mut *conn)
    .await?;
    tracing::Span::current().record("restored", restored);
    if restored != event.messages_removed {
        return Err(Error::conflict(format!(
            "the archive of compaction {event_id} holds {restored} messages, not {}",
            event.messages_removed
        )));
    }

    // 5. The counters.
    let patch = SessionPatch {
        total_tokens: Some(session.total_tokens - summary_tokens + restored_tokens),
        compaction_count: Some(session.compaction_count - 1),
        updated_at: Some(session.now),
        ..SessionPatch::default()
    };
    let (sql, values) =
        crate::built(&sessions::update_by_pk(&session.id, &patch).expect("the patch sets columns"));
    sqlx::query_with(sql, values).execute(&mut *conn).await?;

    // 6. Mark the event reverted; it stays as history.
    let patch = CompactionEventPatch {
        reverted_at: Some(Some(session.now)),
        ..CompactionEventPatch::default()
    };
    let (sql, values) = crate::built(
        &compaction_events::update_by_pk(&event.id, &patch).expect("the patch sets columns"),
    );
    Ok(sqlx::query_as_with(sql, values)
        .fetch_one(&mut *conn)
        .await?)
}

/// The compaction events of session `session_id` of `tenant`, newest first (reverted ones too).
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = tracing::field::Empty))]
pub async fn list_compactions<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
) -> Result<Vec<CompactionEvent>> {
    validate::tenant(tenant)?;
    let mut query = compaction_events::select();
    query
        .and_where(Expr::col(CompactionEventIden::SessionId).eq(session_id))
        .and_where(crate::session_is_tenants(session_id, tenant))
        .order_by(CompactionEventIden::Seq, Order::Desc);
    crate::rows_of_session(conn, &query, tenant, session_id).await
}

/// The messages compaction `event_id` of `tenant` archived and still holds (none once it is
/// reverted), in their original order.
///
/// # Errors
/// [`Error::NotFound`] if the event is not in one of `tenant`'s sessions.
#[tracing::instrument(skip_all, fields(tenant = %tenant, event = %event_id, count = tracing::field::Empty))]
pub async fn archived_messages<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    event_id: Uuid,
) -> Result<Vec<Message>> {
    validate::tenant(tenant)?;
    let mut query = sea_query::Query::select();
    query
        .column(MessageArchiveIden::OriginalMessage)
        .from(MessageArchiveIden::Table)
        .and_where(Expr::col(MessageArchiveIden::CompactionEventId).eq(event_id))
        .and_where(crate::session_of_tenant(
            MessageArchiveIden::SessionId,
            tenant,
        ));
    let (sql, values) = crate::built(&query);
    let mut conn = conn.acquire().await?;
    let rows: Vec<Json<Message>> = sqlx::query_scalar_with(sql, values)
        .fetch_all(&mut *conn)
        .await?;
    tracing::Span::current().record("count", rows.len());
    if rows.is_empty() {
        let mut exists = compaction_events::select_by_pk(&event_id);
        exists.and_where(crate::session_of_tenant(
            CompactionEventIden::SessionId,
            tenant,
        ));
        let (sql, values) = crate::built(&exists);
        let event: Option<CompactionEvent> = sqlx::query_as_with(sql, values)
            .fetch_optional(&mut *conn)
            .await?;
        if event.is_none() {
            return Err(Error::NotFound(Entity::CompactionEvent));
        }
    }
    let mut messages: Vec<Message> = rows.into_iter().map(|Json(m)| m).collect();
    messages.sort_by_key(|m| m.position);
    Ok(messages)
}
