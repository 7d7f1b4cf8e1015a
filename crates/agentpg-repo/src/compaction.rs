//! Compaction and its exact revert, each one transaction (a savepoint inside the caller's).

use std::collections::HashSet;

use agentpg_schema::compaction_events::{self, CompactionEventKey};
use agentpg_schema::messages::{self, MessageArchived};
use agentpg_schema::sessions::{self, SessionKey};
use agentpg_schema::{
    CompactionEvent, CompactionEventIden, CompactionEventPatch, ContentBlocks, Message,
    MessageArchiveIden, MessageIden, MessageRole, Session, SessionChangeKind, SessionIden,
    SessionPatch, Usage,
};
use chrono::{DateTime, Utc};
use sea_query::{
    Alias, Expr, ExprTrait, Func, IntoIden, LockType, Order, PgFunc, Query, SelectStatement,
};
use serde_json::Value;
use sqlx::{Acquire, FromRow, PgConnection, Postgres};
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
    /// Token usage of the summary (its tokens count toward the session's total).
    pub usage: Option<Usage>,
    /// Metadata of the summary message; a JSON object (`{}` when `None`).
    pub metadata: Option<Value>,
}

impl Summary {
    /// A summary of `role` with `content`, a generated id, no usage and no metadata. Give it
    /// its size with [`with_usage`](Self::with_usage) (for instance
    /// [`Accounting::estimated_usage`](crate::tokens::Accounting::estimated_usage)), or it
    /// counts nothing toward the session until the next response corrects the total.
    pub fn new(role: MessageRole, content: ContentBlocks) -> Self {
        Summary {
            id: None,
            role,
            content,
            usage: None,
            metadata: None,
        }
    }

    /// A summary of `role` holding one text block.
    pub fn text(role: MessageRole, text: impl Into<String>) -> Self {
        Summary::new(role, vec![agentpg_schema::ContentBlock::text(text)])
    }

    /// The summary with `usage` (its own size).
    pub fn with_usage(self, usage: Usage) -> Self {
        Summary {
            usage: Some(usage),
            ..self
        }
    }

    /// The summary with `metadata` (a JSON object).
    pub fn with_metadata(self, metadata: Value) -> Self {
        Summary {
            metadata: Some(metadata),
            ..self
        }
    }
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
    /// Whether the plan may remove a tool call whose result has not arrived yet (the tool is
    /// still running): by default it may not, since the result appended later would answer a
    /// call the session no longer holds.
    pub pending_tool_calls: PendingToolCalls,
}

/// What a compaction may do with a tool call (`tool_use`) whose result (`tool_result`) is not
/// in the session yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PendingToolCalls {
    /// Keep it: a plan that removes it is refused, and the planner never proposes it.
    #[default]
    Keep,
    /// Remove it anyway: its result, when it arrives, answers a call the session no longer
    /// holds (the archive keeps the call until retention finalizes the compaction).
    Remove,
}

fn check_plan(plan: &CompactionPlan) -> Result<()> {
    validate::non_empty_text("strategy", &plan.strategy)?;
    validate::bounded("strategy", &plan.strategy, crate::limits::STRATEGY)?;
    if let Some(model) = &plan.model_used {
        validate::text("model_used", model)?;
        validate::bounded("model_used", model, crate::limits::MODEL)?;
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
#[derive(FromRow)]
struct Locked {
    #[sqlx(flatten)]
    session: Session,
    now: DateTime<Utc>,
}

/// `SELECT sessions.*, now() AS now FROM sessions … FOR UPDATE [OF sessions]`.
///
/// Only the locked row is read afresh when the lock had to wait (PostgreSQL re-reads the row it
/// locks, not the rest of the statement): whatever else a writer decides on is read by a
/// later statement, which sees what the lock's previous holder committed.
fn lock_session() -> SelectStatement {
    let mut query = Query::select();
    query
        .columns(SessionIden::COLUMNS.map(|c| (SessionIden::Table, c)))
        .expr_as(Expr::current_timestamp(), Alias::new("now"))
        .from(SessionIden::Table)
        .lock_with_tables(LockType::Update, [SessionIden::Table]);
    query
}

/// Applies `plan` to session `plan.session_id` of `tenant` atomically and returns the event.
///
/// In one transaction (a savepoint when `conn` is already in one): lock the session row; check
/// every id is a non-preserved message of the session and that the plan keeps every tool use
/// with its result (checked in one query, on the stored rows, which it locks: from then on no
/// writer changes them); write the event; archive each planned row whole, then remove it;
/// insert the summary at the position of the first removed message; set the event's token figures and the session's counters. Each
/// statement touches the tenant's rows alone, so a distributed database (Citus) runs it on the
/// tenant's node only. Six statements (plus BEGIN and COMMIT) whatever the plan's size, with a
/// summary or without.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] for an
/// empty plan, duplicates, ids outside the session, preserved messages, a plan that would split a
/// tool use from its result (naming the tool-use id), or bad summary content;
/// [`Error::Conflict`] if a message of the plan was preserved or removed by another transaction
/// while the compaction ran. Nothing is written on any error.
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
    crate::follow::notify(&mut tx, tenant, plan.session_id).await?;
    tx.commit().await?;
    Ok(event)
}

async fn compact_in(
    conn: &mut PgConnection,
    tenant: &str,
    plan: &CompactionPlan,
) -> Result<CompactionEvent> {
    // 1. Lock the session row: compactions, reverts and appends of one session serialize here.
    let mut lock = lock_session();
    lock.and_where(Expr::col((SessionIden::Table, SessionIden::TenantId)).eq(tenant))
        .and_where(Expr::col((SessionIden::Table, SessionIden::Id)).eq(plan.session_id));
    let (sql, values) = crate::sql::built(&lock);
    let locked: Locked = sqlx::query_as_with(sql, values)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound(Entity::Session))?;
    let session = &locked.session;

    // 2. The plan's messages and the session's preserved ones, read under the lock.
    let mut read = Query::select();
    read.columns([
        MessageIden::Id,
        MessageIden::IsPreserved,
        MessageIden::Tokens,
        MessageIden::Position,
    ])
    .expr(crate::sql::in_set(MessageIden::Id, &plan.remove))
    .expr(Expr::from(crate::pairs::first_split(
        tenant,
        session.id,
        &plan.remove,
    )))
    .expr(Expr::from(match plan.pending_tool_calls {
        PendingToolCalls::Keep => crate::pairs::first_pending(tenant, session.id, &plan.remove),
        PendingToolCalls::Remove => crate::pairs::no_split(),
    }))
    .expr(match plan.summary.as_ref().and_then(|s| s.id) {
        Some(id) => summary_id_taken(tenant, id),
        None => Expr::val(false),
    })
    // The session's latest change, read after the lock (the seq the compaction's follows).
    .expr(crate::follow::latest_change(tenant, Expr::val(session.id)))
    .from(MessageIden::Table)
    .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
    .and_where(Expr::col(MessageIden::SessionId).eq(session.id))
    .and_where(
        Expr::col(MessageIden::Id)
            .eq(PgFunc::any(Expr::val(plan.remove.clone())))
            .or(Expr::col(MessageIden::IsPreserved)),
    )
    .order_by(MessageIden::Position, Order::Asc)
    // The rows stay as read until the compaction commits: no writer, agentpg-repo's or any
    // other, changes or removes them between the archive copy and the removal.
    .lock_with_tables(LockType::Update, [MessageIden::Table]);
    let (sql, values) = crate::sql::built(&read);
    // Planned for its values, never from a cached generic plan: see `pairs::first_split`.
    type Found = (
        Uuid,
        bool,
        i64,
        i64,
        bool,
        Option<String>,
        Option<String>,
        bool,
        i64,
    );
    let found: Vec<Found> = sqlx::query_as_with(sql, values)
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;
    let mut in_plan = HashSet::with_capacity(plan.remove.len());
    let mut preserved_ids = Vec::new();
    let mut figures = Removed::default();
    for (id, is_preserved, tokens, position, planned, _, _, _, _) in &found {
        if *planned {
            if *is_preserved {
                return Err(Error::invalid(format!("message {id} is preserved")));
            }
            in_plan.insert(*id);
            figures.add(*tokens, *position)?;
        } else {
            preserved_ids.push(*id);
        }
    }
    if let Some(missing) = plan.remove.iter().find(|id| !in_plan.contains(id)) {
        return Err(Error::invalid(format!(
            "message {missing} is not in the session"
        )));
    }
    // The same query said whether the plan splits a tool pair (on what is stored, under the
    // session lock).
    if let Some(tool_id) = found.first().and_then(|f| f.5.as_deref()) {
        return Err(crate::pairs::split_error(tool_id));
    }
    if let Some(tool_id) = found.first().and_then(|f| f.6.as_deref()) {
        return Err(crate::pairs::pending_error(
            tool_id,
            "PendingToolCalls::Remove in the plan",
        ));
    }

    // A summary id the caller gives must be new to the tenant: not a message of any session,
    // and not archived (an id is an identity forever; a revert brings the archived one back).
    if let (Some(id), Some(true)) = (
        plan.summary.as_ref().and_then(|s| s.id),
        found.first().map(|f| f.7),
    ) {
        return Err(Error::conflict(format!(
            "the summary's id {id} is taken: a message of the tenant has it, or had it and a compaction archived it"
        )));
    }

    // 3. The writes, each a statement of the tenant's rows alone (a distributed database
    //    sends each to the tenant's node, and nowhere else): the event (the archive rows
    //    refer to it), the messages removed and archived, the summary in the first one's
    //    place, then the event's figures and the session's counters.
    let event_id = Uuid::new_v4();
    let (sql, values) = crate::sql::built(&insert_event(
        tenant,
        session,
        plan,
        event_id,
        preserved_ids,
    ));
    sqlx::query_with(sql, values).execute(&mut *conn).await?;

    let (sql, values) = crate::sql::built(&archive(tenant, session.id, plan, event_id));
    let archived = sqlx::query_with(sql, values)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let (sql, values) = crate::sql::built(&remove(tenant, session.id, plan));
    let removed = sqlx::query_with(sql, values)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let planned = plan.remove.len() as u64;
    if archived != planned || removed != planned {
        return Err(Error::conflict(
            "a message of the plan was preserved, changed or removed by another transaction during the compaction",
        ));
    }

    // The change its followers replay, with the removed ids in position order.
    crate::follow::record(
        &mut *conn,
        crate::follow::Change {
            tenant,
            session_id: session.id,
            seq: found.first().map_or(0, |f| f.8) + 1,
            kind: SessionChangeKind::Compacted,
            after_position: session.last_position,
            event: Some(event_id),
            message_ids: found.iter().filter(|f| f.4).map(|f| f.0).collect(),
        },
    )
    .await?;

    let summary = match &plan.summary {
        None => None,
        Some(s) => {
            let position = figures.first.ok_or_else(|| {
                Error::invalid("the plan removes no message, so the summary has no place")
            })?;
            Some(insert_summary(tenant, session.id, s, position))
        }
    };
    let kept = session
        .total_tokens
        .checked_sub(figures.tokens)
        .ok_or_else(|| Error::invalid("the session's token total would overflow"))?;
    let (sql, values) = crate::sql::built(&summary_figures_and_counters(
        tenant, session.id, event_id, kept, summary,
    ));
    let event: CompactionEvent = sqlx::query_as_with(sql, values)
        .fetch_one(&mut *conn)
        .await?;
    tracing::Span::current().record("event", tracing::field::display(event.id));
    Ok(event)
}

/// What the plan removes, as read under the session lock: its tokens and its first position.
#[derive(Default)]
struct Removed {
    tokens: i64,
    first: Option<i64>,
}

impl Removed {
    fn add(&mut self, tokens: i64, position: i64) -> Result<()> {
        self.tokens = self
            .tokens
            .checked_add(tokens)
            .ok_or_else(|| Error::invalid("the removed messages' tokens overflow a 64-bit sum"))?;
        self.first = Some(self.first.map_or(position, |p| std::cmp::min(p, position)));
        Ok(())
    }
}

/// Whether a message or an archived message of `tenant` has id `id` (read under the session
/// lock; the primary key of `messages` refuses a live duplicate in any case).
fn summary_id_taken(tenant: &str, id: Uuid) -> Expr {
    let live = Query::select()
        .expr(Expr::val(1))
        .from(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::Id).eq(id))
        .to_owned();
    let archived = Query::select()
        .expr(Expr::val(1))
        .from(MessageArchiveIden::Table)
        .and_where(Expr::col(MessageArchiveIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageArchiveIden::Id).eq(id))
        .to_owned();
    Expr::exists(live).or(Expr::exists(archived))
}

/// `INSERT INTO compaction_events (…) VALUES (…)`: the event with the session's total as both
/// token figures; [`figures_and_counters`] sets the compacted one (and the summary's id) once
/// the summary is written.
fn insert_event(
    tenant: &str,
    session: &Session,
    plan: &CompactionPlan,
    id: Uuid,
    preserved_ids: Vec<Uuid>,
) -> sea_query::InsertStatement {
    let mut pairs = vec![
        (CompactionEventIden::Id, Expr::val(id)),
        (CompactionEventIden::TenantId, Expr::val(tenant)),
        (CompactionEventIden::SessionId, Expr::val(session.id)),
        (
            CompactionEventIden::Strategy,
            Expr::val(plan.strategy.clone()),
        ),
        (
            CompactionEventIden::OriginalTokens,
            Expr::val(session.total_tokens),
        ),
        (
            CompactionEventIden::CompactedTokens,
            Expr::val(session.total_tokens),
        ),
        (
            CompactionEventIden::MessagesRemoved,
            Expr::val(plan.remove.len() as i64),
        ),
        (
            CompactionEventIden::PreservedMessageIds,
            Expr::val(preserved_ids),
        ),
        (
            CompactionEventIden::ModelUsed,
            Expr::val(plan.model_used.clone()),
        ),
        (CompactionEventIden::DurationMs, Expr::val(plan.duration_ms)),
    ];
    if let Some(s) = &plan.summary {
        pairs.push((
            CompactionEventIden::SummaryContent,
            Expr::val(json(&s.content)),
        ));
    }
    crate::sql::insert_values(CompactionEventIden::Table, pairs)
}

/// A `messages` row as the archive keeps it: the whole row as JSON, without its search
/// documents (derived from its content, and recomputed by the archive's own).
fn archived_row() -> Expr {
    crate::sql::row_json(
        MessageIden::Table,
        &MessageIden::SEARCH.map(MessageIden::name),
    )
}

/// `INSERT INTO message_archive (id, tenant_id, compaction_event_id, session_id,
/// original_message) SELECT id, …, to_jsonb(messages) FROM messages WHERE … AND id IN (plan)
/// AND NOT is_preserved`: each planned row, whole. (It reads the rows of one tenant's table
/// and writes them to the tenant's archive with the tenant's key, so Citus runs it on the
/// tenant's node as it is.)
fn archive(
    tenant: &str,
    session: Uuid,
    plan: &CompactionPlan,
    event: Uuid,
) -> sea_query::InsertStatement {
    let mut rows = Query::select();
    rows.column(MessageIden::Id)
        .column(MessageIden::TenantId)
        .expr(Expr::val(event))
        .column(MessageIden::SessionId)
        .expr(archived_row())
        .from(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session))
        .and_where(crate::sql::in_set(MessageIden::Id, &plan.remove))
        .and_where(Expr::col(MessageIden::IsPreserved).not());
    Query::insert()
        .into_table(MessageArchiveIden::Table)
        .columns([
            MessageArchiveIden::Id,
            MessageArchiveIden::TenantId,
            MessageArchiveIden::CompactionEventId,
            MessageArchiveIden::SessionId,
            MessageArchiveIden::OriginalMessage,
        ])
        .select_from(rows)
        .expect("five columns, five values")
        .to_owned()
}

/// `DELETE FROM messages WHERE … AND id IN (plan) AND NOT is_preserved`: the rows [`archive`]
/// copied. They are locked since the read (`FOR UPDATE`), so they are what was archived; the
/// caller still compares the counts.
fn remove(tenant: &str, session: Uuid, plan: &CompactionPlan) -> sea_query::DeleteStatement {
    Query::delete()
        .from_table(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session))
        .and_where(crate::sql::in_set(MessageIden::Id, &plan.remove))
        .and_where(Expr::col(MessageIden::IsPreserved).not())
        .to_owned()
}

/// `INSERT INTO messages (…) VALUES (…) RETURNING id, tokens`: the summary at `position`.
fn insert_summary(
    tenant: &str,
    session: Uuid,
    summary: &Summary,
    position: i64,
) -> sea_query::InsertStatement {
    let mut pairs = vec![
        (MessageIden::TenantId, Expr::val(tenant)),
        (MessageIden::SessionId, Expr::val(session)),
        (MessageIden::Position, Expr::val(position)),
        (MessageIden::Role, Expr::val(summary.role)),
        (MessageIden::Content, Expr::val(json(&summary.content))),
        (MessageIden::IsSummary, Expr::val(true)),
    ];
    if let Some(id) = summary.id {
        pairs.push((MessageIden::Id, Expr::val(id)));
    }
    if let Some(usage) = &summary.usage {
        pairs.push((MessageIden::Usage, Expr::val(json(usage))));
    }
    if let Some(metadata) = &summary.metadata {
        pairs.push((MessageIden::Metadata, Expr::val(metadata.clone())));
    }
    crate::sql::insert_values(MessageIden::Table, pairs)
        .returning(Query::returning().columns([MessageIden::Id, MessageIden::Tokens]))
        .to_owned()
}

/// The tokens the session holds after the compaction: `kept` (what it held less what was
/// removed) plus the summary's, if one was inserted.
fn compacted_tokens(kept: i64, summary: &Alias) -> Expr {
    Expr::val(kept).add(Expr::expr(Func::coalesce([
        Expr::from(
            Query::select()
                .column(MessageIden::Tokens)
                .from(summary.clone())
                .to_owned(),
        ),
        Expr::val(0i64),
    ])))
}

/// The summary inserted (if any), then the event's compacted figure and summary id and the
/// session's counters, in one statement of the tenant's rows (an `INSERT … VALUES` and two
/// `UPDATE`s: Citus runs it on the tenant's node as one query):
///
/// ```text
/// WITH summary AS (INSERT INTO messages … VALUES … RETURNING id, tokens),   -- with a summary
///      counters AS (UPDATE sessions SET total_tokens = kept + summary's tokens,
///                   compaction_count + 1, updated_at = now() WHERE tenant and id)
/// UPDATE compaction_events SET compacted_tokens = kept + summary's tokens,
///        summary_message_id = summary's id WHERE tenant and id RETURNING every column
/// ```
fn summary_figures_and_counters(
    tenant: &str,
    session: Uuid,
    event: Uuid,
    kept: i64,
    summary: Option<sea_query::InsertStatement>,
) -> sea_query::WithQuery {
    let summary_cte = Alias::new("summary");
    let (compacted, summary_id) = match summary {
        Some(_) => (
            compacted_tokens(kept, &summary_cte),
            Expr::from(
                Query::select()
                    .column(MessageIden::Id)
                    .from(summary_cte.clone())
                    .to_owned(),
            ),
        ),
        None => (Expr::val(kept), Expr::val(Option::<Uuid>::None)),
    };
    let mut counters = Query::update();
    counters
        .table(SessionIden::Table)
        .value(SessionIden::TotalTokens, compacted.clone())
        .value(
            SessionIden::CompactionCount,
            Expr::col(SessionIden::CompactionCount).add(1),
        )
        .value(SessionIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session));
    let mut event_update = Query::update();
    event_update
        .table(CompactionEventIden::Table)
        .value(CompactionEventIden::CompactedTokens, compacted)
        .value(CompactionEventIden::SummaryMessageId, summary_id)
        .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
        .and_where(Expr::col(CompactionEventIden::Id).eq(event))
        .returning_all();
    let mut with = Query::with();
    if let Some(insert) = summary {
        with.cte(crate::sql::cte(&summary_cte, insert));
    }
    with.cte(crate::sql::cte(&Alias::new("counters"), counters));
    event_update.with(with)
}

/// A value of a declared JSON type as a sea-query JSON value.
fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("a declared JSON type serializes to JSON")
}

/// Reverts compaction `event_id` of `tenant`: restores the archived messages exactly (id,
/// position, role, content, usage, metadata, flags, timestamps; a column added since the
/// compaction takes its default), deletes the summary, restores `total_tokens` and
/// `compaction_count`, removes the archive rows, and marks the event reverted (it stays as
/// history). Returns the updated event.
///
/// # Errors
/// [`Error::NotFound`] if the event is not in one of `tenant`'s sessions; [`Error::Conflict`] if
/// it is not the session's latest standing (unreverted) compaction, if retention finalized it
/// (its archive is gone), if its summary was preserved since (unpreserve it first: a revert
/// never deletes a preserved message), or if an archived message cannot be restored (a column
/// added since is NOT NULL without a default; the error names it). Nothing is written on any
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
    crate::follow::notify(&mut tx, tenant, event.session_id).await?;
    tx.commit().await?;
    Ok(event)
}

async fn revert_in(
    conn: &mut PgConnection,
    tenant: &str,
    event_id: Uuid,
) -> Result<CompactionEvent> {
    // 1. Lock the event's session and the event.
    let mut lock = lock_session();
    lock.inner_join(
        CompactionEventIden::Table,
        Expr::col((CompactionEventIden::Table, CompactionEventIden::TenantId))
            .equals((SessionIden::Table, SessionIden::TenantId))
            .and(
                Expr::col((CompactionEventIden::Table, CompactionEventIden::SessionId))
                    .equals((SessionIden::Table, SessionIden::Id)),
            ),
    )
    .and_where(Expr::col((CompactionEventIden::Table, CompactionEventIden::TenantId)).eq(tenant))
    .and_where(Expr::col((CompactionEventIden::Table, CompactionEventIden::Id)).eq(event_id))
    // The event row too: retention skips an event a revert holds, and a revert waits for a
    // finalization in progress, then sees it finalized.
    .lock_with_tables(
        LockType::Update,
        [
            SessionIden::Table.into_iden(),
            CompactionEventIden::Table.into_iden(),
        ],
    );
    let (sql, values) = crate::sql::built(&lock);
    let locked: Locked = sqlx::query_as_with(sql, values)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound(Entity::CompactionEvent))?;
    let (session, now) = (&locked.session, locked.now);
    tracing::Span::current().record("session", tracing::field::display(session.id));

    // 2. Only the latest standing compaction may be reverted, and only while it has its archive.
    let mut latest = compaction_events::select();
    latest
        .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
        .and_where(Expr::col(CompactionEventIden::SessionId).eq(session.id))
        .and_where(Expr::col(CompactionEventIden::RevertedAt).is_null())
        .order_by(CompactionEventIden::Seq, Order::Desc)
        .limit(1);
    let (sql, values) = crate::sql::built(&latest);
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
    if event.finalized_at.is_some() {
        return Err(Error::conflict(format!(
            "archive finalized: retention dropped the archive of compaction {event_id}, so it can no longer be reverted"
        )));
    }

    // 3. Remove the summary (its position goes back to the first restored message): the row
    //    of this session that this compaction wrote, identified by tenant, session and id, so
    //    that an id reused elsewhere after the summary was deleted is never touched.
    let summary_tokens = match event.summary_message_id {
        Some(id) => {
            let mut delete = Query::delete();
            delete
                .from_table(MessageIden::Table)
                .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
                .and_where(Expr::col(MessageIden::SessionId).eq(session.id))
                .and_where(Expr::col(MessageIden::Id).eq(id))
                .and_where(Expr::col(MessageIden::IsSummary))
                .returning(
                    Query::returning().columns([MessageIden::Tokens, MessageIden::IsPreserved]),
                );
            let (sql, values) = crate::sql::built(&delete);
            match sqlx::query_as_with::<_, (i64, bool), _>(sql, values)
                .fetch_optional(&mut *conn)
                .await?
            {
                // Preserved since the compaction wrote it: the revert would take away what the
                // caller asked to keep. (Returning the flag from the delete decides it on the
                // row as deleted; the error rolls the delete back.)
                Some((_, true)) => {
                    return Err(Error::conflict(format!(
                        "the summary {id} of compaction {event_id} is preserved: unpreserve it to revert the compaction"
                    )))
                }
                Some((tokens, false)) => tokens,
                None => 0,
            }
        }
        None => 0,
    };

    // 4. Restore every archived row as it was, then drop the archive rows.
    let archived = MessageArchived {
        tenant_id: tenant,
        compaction_event_id: event.id,
    };
    let restored: Vec<Message> = messages::stmt::restore(&archived)
        .fetch_all(&mut *conn)
        .await
        .map_err(restore_error)?;
    tracing::Span::current().record("restored", restored.len());
    if restored.len() as i64 != event.messages_removed {
        return Err(Error::conflict(format!(
            "the archive of compaction {event_id} holds {} messages, not {}",
            restored.len(),
            event.messages_removed
        )));
    }
    let restored_tokens: i64 = restored.iter().map(|m| m.tokens).sum();
    let latest = Query::select()
        .expr(crate::follow::latest_change(tenant, Expr::val(session.id)))
        .to_owned();
    let (sql, values) = crate::sql::built(&latest);
    let last_change: i64 = sqlx::query_scalar_with(sql, values)
        .fetch_one(&mut *conn)
        .await?;
    let mut back: Vec<(i64, Uuid)> = restored.iter().map(|m| (m.position, m.id)).collect();
    back.sort_unstable();
    crate::follow::record(
        &mut *conn,
        crate::follow::Change {
            tenant,
            session_id: session.id,
            seq: last_change + 1,
            kind: SessionChangeKind::Reverted,
            after_position: session.last_position,
            event: Some(event.id),
            message_ids: back.into_iter().map(|(_, id)| id).collect(),
        },
    )
    .await?;
    let mut drop = Query::delete();
    drop.from_table(MessageArchiveIden::Table)
        .and_where(Expr::col(MessageArchiveIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageArchiveIden::CompactionEventId).eq(event.id));
    let (sql, values) = crate::sql::built(&drop);
    sqlx::query_with(sql, values).execute(&mut *conn).await?;

    // 5. The counters.
    let patch = SessionPatch {
        total_tokens: Some(session.total_tokens - summary_tokens + restored_tokens),
        compaction_count: Some(session.compaction_count - 1),
        updated_at: Some(now),
        ..SessionPatch::default()
    };
    let key = SessionKey {
        tenant_id: tenant,
        id: session.id,
    };
    sessions::stmt::update_by_pk(&key, &patch)
        .expect("the patch sets columns")
        .fetch_one(&mut *conn)
        .await?;

    // 6. Mark the event reverted; it stays as history.
    let patch = CompactionEventPatch {
        reverted_at: Some(Some(now)),
        ..CompactionEventPatch::default()
    };
    let key = CompactionEventKey {
        tenant_id: tenant,
        id: event.id,
    };
    Ok(compaction_events::stmt::update_by_pk(&key, &patch)
        .expect("the patch sets columns")
        .fetch_one(&mut *conn)
        .await?)
}

/// A restore that fails on a NOT NULL column is not the caller's input: the archive predates a
/// column that has no default, so the row cannot be restored.
fn restore_error(e: sqlx::Error) -> Error {
    if let Some(db) = e.as_database_error() {
        if db.kind() == sqlx::error::ErrorKind::NotNullViolation {
            let column = crate::error::column_of(db);
            return Error::Conflict {
                reason: format!(
                    "an archived message cannot be restored: {column} has no archived value and no default"
                ),
                source: Some(e),
            };
        }
    }
    e.into()
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
        .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
        .and_where(Expr::col(CompactionEventIden::SessionId).eq(session_id))
        .order_by(CompactionEventIden::Seq, Order::Desc);
    crate::sql::rows_of_session(conn, &query, tenant, session_id).await
}

/// The messages compaction `event_id` of `tenant` archived and still holds (none once it is
/// reverted or finalized), in their original order, as rows of today's `messages` (a column
/// added since the compaction shows its default).
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
    let mut conn = conn.acquire().await?;
    let archived = MessageArchived {
        tenant_id: tenant,
        compaction_event_id: event_id,
    };
    let rows = messages::stmt::archived(&archived)
        .fetch_all(&mut *conn)
        .await?;
    tracing::Span::current().record("count", rows.len());
    if rows.is_empty() {
        let key = CompactionEventKey {
            tenant_id: tenant,
            id: event_id,
        };
        let event = compaction_events::stmt::select_by_pk(&key)
            .fetch_optional(&mut *conn)
            .await?;
        if event.is_none() {
            return Err(Error::NotFound(Entity::CompactionEvent));
        }
    }
    Ok(rows)
}
