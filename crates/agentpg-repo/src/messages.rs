//! Messages: append in one statement, list in order, get, preserve, delete, recompute tokens.

use agentpg_schema::generated::Stored;
use agentpg_schema::messages::{self, MessageKey, MessageParent};
use agentpg_schema::{
    AppendOutcome, Message, MessageIden, NewMessage, SessionChangeKind, SessionIden,
};
use sea_query::{Alias, Expr, ExprTrait, Func, LockType, Order, Query};
use sqlx::{Acquire, PgExecutor, Postgres};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::pairs::{self, ToolPairs};
use crate::validate;

/// Checks one message to append.
fn check(tenant: &str, session_id: Uuid, index: usize, m: &NewMessage) -> Result<()> {
    let field = |name: &str| format!("messages[{index}].{name}");
    if m.session_id != session_id {
        return Err(Error::invalid(format!(
            "{} is {}, not the session appended to ({session_id})",
            field("session_id"),
            m.session_id
        )));
    }
    if m.tenant_id != tenant {
        return Err(Error::invalid(format!(
            "{} is not the tenant appending",
            field("tenant_id")
        )));
    }
    if m.position.is_some() {
        return Err(Error::invalid(format!(
            "{} is set; an append draws positions in order",
            field("position")
        )));
    }
    if let Some(content) = &m.content {
        validate::content(&field("content"), content)?;
    }
    if let Some(metadata) = &m.metadata {
        validate::json_object(&field("metadata"), metadata)?;
    }
    if let Some(usage) = &m.usage {
        validate::usage(&field("usage"), usage)?;
    }
    if let Some(usage) = &m.provider_usage {
        validate::usage(&field("provider_usage"), usage)?;
    }
    Ok(())
}

/// What an append did: every message of the batch as the database holds it, in batch order,
/// and the session's counters after the append (read from the locked session row).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Appended {
    /// One per message of the batch, in batch order: appended by this call, or stored by an
    /// earlier call this one repeats (and possibly compacted away since).
    pub messages: Vec<StoredMessage>,
    /// The session's `total_tokens` after the append.
    pub total_tokens: i64,
    /// The session's `last_position` after the append (`None` while it holds no message).
    pub last_position: Option<i64>,
}

impl Appended {
    /// Every message's row as the database holds it (live or archived), in batch order.
    pub fn rows(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter().map(StoredMessage::message)
    }

    /// The rows of [`rows`](Self::rows), owned.
    pub fn into_rows(self) -> Vec<Message> {
        self.messages
            .into_iter()
            .map(StoredMessage::into_message)
            .collect()
    }
}

/// One message of an appended batch, as the database holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoredMessage {
    /// In the session: appended by this call, or by an earlier call that this one repeats.
    Live(Message),
    /// Appended by an earlier call that this one repeats, and removed since by a compaction,
    /// which keeps it in its archive: the message as archived. Nothing was appended for it.
    Archived {
        /// The message as archived.
        message: Message,
        /// The compaction that removed it ([`revert_compaction`](crate::revert_compaction)
        /// brings it back).
        compaction_event_id: Uuid,
    },
}

impl StoredMessage {
    /// The message's row, live or archived.
    pub fn message(&self) -> &Message {
        match self {
            StoredMessage::Live(m) | StoredMessage::Archived { message: m, .. } => m,
        }
    }

    /// The message's row, owned.
    pub fn into_message(self) -> Message {
        match self {
            StoredMessage::Live(m) | StoredMessage::Archived { message: m, .. } => m,
        }
    }

    /// True if a compaction removed it since it was stored.
    pub fn is_archived(&self) -> bool {
        matches!(self, StoredMessage::Archived { .. })
    }
}

/// Appends `batch` to session `session_id` of `tenant` in one statement, in the given order,
/// and adds their tokens to the session's `total_tokens`. Returns every message as stored (read
/// back from the database: timestamps as PostgreSQL rounds them, JSON as jsonb normalises it)
/// and the session's counters after the append. Every column of [`NewMessage`] is stored,
/// including those later migrations add; columns left `None` take their defaults. An empty
/// batch appends nothing and reports the session's counters.
///
/// Safe to retry, at any moment: a message whose `id` the caller gave and which is already
/// stored with the same values is not stored again and comes back as stored (its tokens are
/// counted once), so a batch whose outcome is unknown (a lost connection, a client timeout
/// while the first call still runs) can simply be sent again with the same ids. A message
/// that a compaction has removed since it was stored comes back as
/// [`StoredMessage::Archived`], and nothing is stored for it. A batch partly stored stores the
/// rest. The retry waits for an append still running on the session and then reads what that
/// one stored (see [`stmt::append`](agentpg_schema::messages::stmt::append)).
///
/// The statement is the generated `messages::stmt::APPEND`: it locks the session row, so
/// concurrent appends to one session never interleave their positions; positions follow the
/// session's `last_position`.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] for a
/// message of another session or tenant, a position given, an id given twice, NUL characters,
/// metadata that is not an object, negative token counts, or JSON that would not store what
/// its type says (see [`ContentBlock`](agentpg_schema::ContentBlock)); [`Error::Conflict`]
/// naming the id if a given id is stored (or archived) with other values or in another
/// session. Nothing is written on any error.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = batch.len()))]
pub async fn append_messages<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    batch: &[NewMessage],
) -> Result<Appended> {
    append(conn, tenant, session_id, None, batch).await
}

/// What a conditional append expects the session's last appended message to be: the newest
/// message the caller has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastSeen {
    /// Nothing was ever appended to the session.
    Nothing,
    /// The last message appended is at this position.
    Position(i64),
}

/// [`append_messages`], only if nothing was appended to the session since the message the
/// caller last saw (one writer per conversation): decided on the locked session row, in the
/// same statement. A retry of a batch this call already stored still returns it.
///
/// # Errors
/// As [`append_messages`], and [`Error::Conflict`] if the session's last appended message is
/// not `last_seen` (nothing is written).
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = batch.len(), last_seen = ?last_seen))]
pub async fn append_messages_after<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    last_seen: LastSeen,
    batch: &[NewMessage],
) -> Result<Appended> {
    let expected = match last_seen {
        LastSeen::Nothing => None,
        LastSeen::Position(p) => Some(p),
    };
    append(conn, tenant, session_id, Some(expected), batch).await
}

async fn append<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    expected_last: Option<Option<i64>>,
    batch: &[NewMessage],
) -> Result<Appended> {
    validate::tenant(tenant)?;
    let mut ids = std::collections::HashSet::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        check(tenant, session_id, i, m)?;
        if let Some(id) = m.id {
            if !ids.insert(id) {
                return Err(Error::invalid(format!(
                    "messages[{i}].id {id} is given twice in the batch"
                )));
            }
        }
    }
    let parent = MessageParent {
        tenant_id: tenant,
        session_id,
    };
    let mut conn = conn.acquire().await?;
    let outcome = messages::stmt::append(&mut conn, &parent, expected_last, batch).await?;
    if matches!(outcome, AppendOutcome::Appended { .. }) && !batch.is_empty() {
        crate::follow::notify_committed(&mut conn, tenant, session_id).await;
    }
    match outcome {
        AppendOutcome::Appended { rows, last, total } => Ok(Appended {
            messages: rows
                .into_iter()
                .map(|stored| match stored {
                    Stored::Live(m) => StoredMessage::Live(m),
                    Stored::Archived { row, by } => StoredMessage::Archived {
                        message: row,
                        compaction_event_id: by,
                    },
                })
                .collect(),
            total_tokens: total.ok_or_else(|| {
                Error::Database(agentpg_schema::generated::null_column("total_tokens"))
            })?,
            last_position: last,
        }),
        AppendOutcome::NoParent => Err(Error::NotFound(Entity::Session)),
        AppendOutcome::Clash { row, .. } if row.session_id != session_id => Err(Error::conflict(
            format!("message {} already exists in another session", row.id),
        )),
        AppendOutcome::Clash {
            row,
            archived_by: Some(event),
        } => Err(Error::conflict(format!(
            "message {} was stored with other values, and compaction {event} has archived it since",
            row.id
        ))),
        AppendOutcome::Clash { row, .. } => Err(Error::conflict(format!(
            "message {} already exists with other values",
            row.id
        ))),
        AppendOutcome::Moved { last } => Err(Error::conflict(format!(
            "the session moved on: its last message is at position {}, not {}",
            last.map_or("(none)".into(), |p| p.to_string()),
            expected_last
                .flatten()
                .map_or("(none)".into(), |p| p.to_string())
        ))),
    }
}

/// Which messages [`list_messages`] returns: all of the session's by default, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageRange {
    /// Only messages after this position.
    pub after_position: Option<i64>,
    /// At most this many: the oldest ones (of those after `after_position`).
    pub limit: Option<u64>,
    /// Only the newest this many (of those after `after_position`), still returned oldest
    /// first: the tail of a conversation, read from the end of the session's index whatever its
    /// length. Not together with `limit`.
    pub last: Option<u64>,
}

impl MessageRange {
    /// The newest `n` messages, oldest first.
    pub fn last(n: u64) -> Self {
        MessageRange {
            last: Some(n),
            ..MessageRange::default()
        }
    }
}

/// The messages of session `session_id` of `tenant`, in order.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] if the
/// range sets both `limit` and `last`.
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
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id));
    if let Some(after) = range.after_position {
        query.and_where(Expr::col(MessageIden::Position).gt(after));
    }
    for (name, n) in [("limit", range.limit), ("last", range.last)] {
        if n.is_some_and(|n| i64::try_from(n).is_err()) {
            return Err(Error::invalid(format!(
                "a message range's {name} is at most {}",
                i64::MAX
            )));
        }
    }
    match (range.limit, range.last) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "a message range takes limit (the oldest) or last (the newest), not both",
            ))
        }
        (None, Some(last)) => {
            query
                .order_by(MessageIden::Position, Order::Desc)
                .limit(last);
            let mut rows: Vec<Message> =
                crate::sql::rows_of_session(conn, &query, tenant, session_id).await?;
            rows.reverse();
            return Ok(rows);
        }
        (limit, None) => {
            query.order_by(MessageIden::Position, Order::Asc);
            if let Some(limit) = limit {
                query.limit(limit);
            }
        }
    }
    crate::sql::rows_of_session(conn, &query, tenant, session_id).await
}

/// The messages of session `session_id` of `tenant`, in order, as a stream: for exports and
/// analytics over sessions of any length, in memory that does not grow with the session. One
/// statement; rows are decoded as they arrive, and the server sends more only as the stream is
/// read (consume it with `futures::StreamExt` or `tokio_stream::StreamExt`). The stream holds
/// `executor` (a pool connection, or your transaction) until it ends or is dropped, and sees the
/// session as of its start.
///
/// A session that is not `tenant`'s streams nothing; ask [`get_session`](crate::get_session)
/// to tell it from an empty one.
///
/// # Errors
/// Each item is a [`Result`]: [`Error::InvalidInput`] (as the only item) for a bad tenant, or
/// the database error that ended the stream.
pub fn stream_messages<'e, E>(executor: E, tenant: &'e str, session_id: Uuid) -> MessageStream<'e>
where
    E: PgExecutor<'e> + 'e,
{
    if let Err(e) = validate::tenant(tenant) {
        return MessageStream {
            inner: None,
            early: Some(e),
        };
    }
    let mut query = messages::select();
    query
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .order_by(MessageIden::Position, Order::Asc);
    let (sql, values) = crate::sql::built(&query);
    MessageStream {
        inner: Some(sqlx::query_as_with(sql, values).fetch(executor)),
        early: None,
    }
}

/// The stream [`stream_messages`] returns: typed rows in order.
pub struct MessageStream<'e> {
    inner: Option<futures_core::stream::BoxStream<'e, sqlx::Result<Message>>>,
    early: Option<Error>,
}

impl std::fmt::Debug for MessageStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream").finish_non_exhaustive()
    }
}

impl futures_core::Stream for MessageStream<'_> {
    type Item = Result<Message>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(e) = self.early.take() {
            return std::task::Poll::Ready(Some(Err(e)));
        }
        match self.inner.as_mut() {
            Some(inner) => inner
                .as_mut()
                .poll_next(cx)
                .map(|item| item.map(|row| row.map_err(Error::from))),
            None => std::task::Poll::Ready(None),
        }
    }
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
    let key = MessageKey {
        tenant_id: tenant,
        id,
    };
    let message = messages::stmt::select_by_pk(&key)
        .fetch_optional(executor)
        .await?;
    Ok(message.filter(|m| m.session_id == session_id))
}

/// The messages of session `session_id` of `tenant` whose ids are in `ids`, in the session's
/// order (by position), each once; ids not in the session are left out. One statement over the
/// primary key, however long the session: for reading what a compaction plan removes
/// ([`CompactionProposal::removed_messages`](crate::CompactionProposal::removed_messages)) or
/// any set of messages a caller keeps ids of.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, ids = ids.len(), count = tracing::field::Empty))]
pub async fn get_messages<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Message>> {
    validate::tenant(tenant)?;
    let mut query = messages::select();
    query
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(crate::sql::in_set(MessageIden::Id, ids))
        .order_by(MessageIden::Position, Order::Asc);
    crate::sql::rows_of_session(conn, &query, tenant, session_id).await
}

/// Marks message `id` preserved (never compacted away) or not; returns the message as stored.
///
/// One statement: it locks the session row first, as every write to a session's messages does,
/// then sets the flag and the session's `updated_at` (preserving a message is activity: the
/// session is no longer idle for retention). A compaction running at the same time either
/// sees the flag (and is refused) or removed the message before it was set (and this call then
/// finds no message): the compaction re-checks the flag in the statement that removes the
/// rows. Retention skips a session this call holds, and never waits for it.
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
    let (parent, updated) = (Alias::new("parent"), Alias::new("updated"));
    let exists_in = |name: &Alias| {
        Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(name.clone())
                .to_owned(),
        )
    };
    let mut lock = Query::select();
    lock.column(SessionIden::Id)
        .from(SessionIden::Table)
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session_id))
        .lock(LockType::NoKeyUpdate);
    let mut update = Query::update();
    update
        .table(MessageIden::Table)
        .value(MessageIden::IsPreserved, preserved)
        .value(MessageIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(Expr::col(MessageIden::Id).eq(id))
        .and_where(exists_in(&parent))
        .returning(Query::returning().columns(MessageIden::COLUMNS));
    let mut touch = Query::update();
    touch
        .table(SessionIden::Table)
        .value(SessionIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session_id))
        .and_where(exists_in(&updated));
    let with = Query::with()
        .cte(crate::sql::cte(&parent, lock))
        .cte(crate::sql::cte(&updated, update))
        .cte(crate::sql::cte(&Alias::new("touched"), touch))
        .to_owned();
    let query = Query::select()
        .columns(MessageIden::COLUMNS)
        .from(updated)
        .to_owned()
        .with(with);
    let (sql, values) = crate::sql::built(&query);
    sqlx::query_as_with(sql, values)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Message))
}

/// Deletes the messages `ids` of session `session_id` of `tenant` (ids outside the session are
/// ignored) and takes their tokens off the session's total. Returns how many were deleted.
///
/// With [`ToolPairs::Keep`], deleting a tool use without its result (or a result without its
/// tool use) is refused; [`ToolPairs::AllowSplit`] deletes what was asked regardless. The check
/// and the delete run after the session row is locked (two statements in a transaction, or a
/// savepoint inside yours), so a message appended meanwhile is seen.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] naming
/// the tool-use id if the delete would split a pair. Nothing is written on any error.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, count = ids.len(), deleted = tracing::field::Empty))]
pub async fn delete_messages<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    session_id: Uuid,
    ids: &[Uuid],
    pairs: ToolPairs,
) -> Result<u64> {
    validate::tenant(tenant)?;
    let mut tx = conn.begin().await?;
    let mut lock = Query::select();
    lock.column(SessionIden::LastPosition)
        .from(SessionIden::Table)
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session_id))
        .lock(LockType::NoKeyUpdate);
    let (sql, values) = crate::sql::built(&lock);
    let last_position: Option<i64> = sqlx::query_scalar_with(sql, values)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound(Entity::Session))?;
    let (sql, values) = crate::sql::built(&delete_statement(tenant, session_id, ids, pairs));
    // Planned for its values, never from a cached generic plan: see `pairs::first_split`.
    type Outcome = (Option<String>, Option<String>, Vec<Uuid>, i64);
    let (split, pending, gone, last_change): Outcome = sqlx::query_as_with(sql, values)
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    if let Some(tool_id) = split {
        return Err(pairs::split_error(&tool_id));
    }
    if let Some(tool_id) = pending {
        return Err(pairs::pending_error(&tool_id, "ToolPairs::AllowSplit"));
    }
    let deleted = gone.len();
    if !gone.is_empty() {
        // The change the session's followers replay.
        crate::follow::record(
            &mut tx,
            crate::follow::Change {
                tenant,
                session_id,
                seq: last_change + 1,
                kind: SessionChangeKind::Removed,
                after_position: last_position,
                event: None,
                message_ids: gone,
            },
        )
        .await?;
        crate::follow::notify(&mut tx, tenant, session_id).await?;
    }
    tx.commit().await?;
    tracing::Span::current().record("deleted", deleted);
    Ok(deleted as u64)
}

/// `WITH split AS (first split pair), gone AS (DELETE … unless split, RETURNING tokens),
/// updated AS (UPDATE sessions SET total_tokens = total_tokens - sum, updated_at = now() …)
/// SELECT (SELECT tool_id FROM split), (SELECT tool_id FROM pending), ARRAY(SELECT id FROM
/// gone ORDER BY position), (the session's latest change seq)`, from the generated names.
fn delete_statement(
    tenant: &str,
    session_id: Uuid,
    ids: &[Uuid],
    pairs: ToolPairs,
) -> sea_query::WithQuery {
    let (split, pending, gone) = (
        Alias::new("split"),
        Alias::new("pending"),
        Alias::new("gone"),
    );
    // With AllowSplit there is nothing to check: no pair check at all (a condition added to
    // the check would reach only one branch of its UNION).
    let (check, calls) = match pairs {
        ToolPairs::Keep => (
            pairs::first_split(tenant, session_id, ids),
            pairs::first_pending(tenant, session_id, ids),
        ),
        ToolPairs::AllowSplit => (pairs::no_split(), pairs::no_split()),
    };
    let none_in = |name: &Alias| {
        Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(name.clone())
                .to_owned(),
        )
        .not()
    };
    let first_of = |name: &Alias| {
        Expr::from(
            Query::select()
                .column(Alias::new("tool_id"))
                .from(name.clone())
                .to_owned(),
        )
    };
    let mut delete = Query::delete();
    delete
        .from_table(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
        .and_where(Expr::col(MessageIden::Id).eq(sea_query::PgFunc::any(Expr::val(ids.to_vec()))))
        .and_where(none_in(&split))
        .and_where(none_in(&pending))
        .returning(Query::returning().columns([
            MessageIden::Tokens,
            MessageIden::Id,
            MessageIden::Position,
        ]));
    let removed_tokens = crate::sql::sum_of(MessageIden::Tokens, &gone);
    let mut update = Query::update();
    update
        .table(SessionIden::Table)
        .value(
            SessionIden::TotalTokens,
            Expr::col(SessionIden::TotalTokens).sub(removed_tokens),
        )
        .value(SessionIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session_id))
        .and_where(crate::sql::count_of(&gone).gt(0));
    let with = Query::with()
        .cte(crate::sql::cte(&split, check))
        .cte(crate::sql::cte(&pending, calls))
        .cte(crate::sql::cte(&gone, delete))
        .cte(crate::sql::cte(&Alias::new("updated"), update))
        .to_owned();
    // The ids deleted, in position order: `ARRAY(SELECT id FROM gone ORDER BY position)`.
    let gone_ids = Func::cust("ARRAY").arg(Expr::from(
        Query::select()
            .column(MessageIden::Id)
            .from(gone.clone())
            .order_by(MessageIden::Position, Order::Asc)
            .to_owned(),
    ));
    Query::select()
        .expr(first_of(&split))
        .expr(first_of(&pending))
        .expr(gone_ids)
        // The session's latest change, read after the lock: the seq this delete follows.
        .expr(crate::follow::latest_change(tenant, Expr::val(session_id)))
        .to_owned()
        .with(with)
}

/// The token total of session `session_id` recomputed from its messages (the sum of their
/// `tokens`), to verify `total_tokens`.
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
    let mut sum = Query::select();
    sum.expr(crate::sql::total(MessageIden::Tokens))
        .from(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(session_id));
    let mut query = Query::select();
    query
        .expr(Expr::from(sum))
        .from(SessionIden::Table)
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(session_id));
    let (sql, values) = crate::sql::built(&query);
    sqlx::query_scalar_with(sql, values)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Session))
}
