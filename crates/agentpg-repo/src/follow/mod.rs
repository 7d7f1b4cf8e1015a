//! Following a session as it changes: a stream of its events, in commit order, from a cursor
//! the caller keeps (migration 009).
//!
//! The database is the truth. Appended messages are read by position (every append takes
//! positions after the session's `last_position`, under the session row's lock); compactions,
//! reverts and deletes of messages are rows of `session_changes`, each with the next `seq` of
//! its session and the session's `last_position` when it was written. Together they are one
//! order, the order the changes committed in, and a cursor is a place in it. `LISTEN/NOTIFY`
//! only wakes a follower; a notification lost or coalesced costs at most one poll interval.

use std::collections::VecDeque;
use std::time::Duration;

use agentpg_schema::{
    CompactionEvent, CompactionEventIden, Message, MessageArchiveIden, MessageIden, SessionChange,
    SessionChangeIden, SessionChangeKind, SessionIden,
};
use sea_query::extension::postgres::PgExpr;
use sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, Order, Query, SelectStatement, UnionType};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::validate;

mod hub;

/// A place in a session's history: everything up to it has been seen. Serialize it (serde) to
/// keep it across processes; a follower started from it continues with the next event, and
/// never repeats one it gave before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FollowCursor {
    /// The position of the last appended message seen (0 before the first).
    position: i64,
    /// The `seq` of the last change seen (0 before the first).
    change: i64,
}

impl FollowCursor {
    /// Before anything happened to the session: a follower from here replays its history.
    pub const START: FollowCursor = FollowCursor {
        position: 0,
        change: 0,
    };

    /// The position of the last appended message this cursor has seen.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The `seq` of the last session change (compaction, revert, delete) this cursor has seen.
    pub fn change_seq(&self) -> i64 {
        self.change
    }
}

/// What happened to a followed session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Each variant is read whole by the caller; boxing the larger ones would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum SessionEvent {
    /// A message was appended: the row as the session holds it now (or as the archive keeps
    /// it, if a compaction removed it since).
    Appended(Message),
    /// A compaction was applied.
    Compacted {
        /// The event, as it is now (`reverted_at` is set if it was reverted since).
        event: CompactionEvent,
        /// The messages it removed, in position order.
        removed: Vec<Uuid>,
        /// The summary it put in their place, if it wrote one and the message still exists
        /// (live, or archived by a later compaction).
        summary: Option<Message>,
    },
    /// A compaction was reverted: its summary is gone and its messages are back.
    Reverted {
        /// The event, now marked reverted.
        event: CompactionEvent,
        /// The messages it brought back, in position order, as they are now (one since removed
        /// for good, by a delete or by retention, is left out).
        restored: Vec<Message>,
    },
    /// Messages were deleted ([`delete_messages`](crate::delete_messages)).
    Removed {
        /// Their ids, in position order.
        ids: Vec<Uuid>,
    },
    /// The session was deleted. The last event of the stream.
    Deleted,
}

/// An event and the cursor just after it: keep the cursor to resume after this event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Followed {
    /// What happened.
    pub event: SessionEvent,
    /// Where a follower resumes to see what happened next.
    pub cursor: FollowCursor,
}

/// How many rows of each kind one read of a follower takes at most.
const BATCH: u64 = 256;

/// How long a follower waits for a notification before it reads anyway, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How long, by default, a woken follower lets pass since its previous read before it reads
/// again (so that under a steady stream of appends it reads a few at a time).
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(10);

/// The pause before a follower retries after a retryable error.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Follows session `session_id` of `tenant` from `from`: a stream of what happens to it, in the
/// order it committed, each event exactly once, starting with the first event after `from`
/// ([`FollowCursor::START`] replays the whole history the database still holds, then goes on
/// live). The stream ends after [`SessionEvent::Deleted`].
///
/// The followers of one process share one listening connection per set of connect options
/// (opened with `pool`'s options, outside the pool, so it runs as the pool's role), on which
/// they `LISTEN` for their sessions' channels; they read through `pool`, one connection for
/// one statement at a time, and followers of one session at the same place share one read.
/// The listening connection closes once the last follower using it is dropped (closing `pool`
/// does not close it).
/// Under row-level security, give it a pool that logs in as the tenant's role
/// ([`rls::tenant_connect_options`](crate::rls::tenant_connect_options)): it then sees what
/// that role sees. A shared pool used with [`rls::begin_as_tenant`](crate::rls::begin_as_tenant)
/// logs in as a role that sees no rows outside such a transaction, so a follower on it finds no
/// session.
///
/// It reads again when notified (no sooner than [`DEFAULT_COALESCE`] after its previous read:
/// [`Follow::coalesce`]), and every [`DEFAULT_POLL_INTERVAL`] regardless
/// ([`Follow::poll_interval`]), so a lost notification (a writer that crashed before
/// notifying, or one that wrote with plain SQL) delays an event, never loses one. A dropped
/// connection or a restarted server is an `Err` item, and the stream goes on: the next item
/// reads again from the last event given, after a short pause. Any other error is the last
/// item.
///
/// What the database no longer holds cannot be replayed: a message deleted, or removed by a
/// compaction whose archive retention dropped, before the follower read it, is not
/// [`SessionEvent::Appended`] (its removal still is an event). Writes made with plain SQL, not
/// through agentpg-repo, are seen only as far as positions tell: appended rows are, a
/// compaction done by hand is not.
///
/// # Errors
/// Each item is a [`Result`]: [`Error::InvalidInput`] for a bad tenant and [`Error::NotFound`]
/// if the session is not one of `tenant`'s when the stream starts from
/// [`FollowCursor::START`] (from a later cursor, a session that is gone is
/// [`SessionEvent::Deleted`]), each as the last item; [`Error::Schema`] if migration 009 has
/// not run.
pub fn follow_session(pool: &PgPool, tenant: &str, session_id: Uuid, from: FollowCursor) -> Follow {
    let state = State {
        pool: pool.clone(),
        tenant: tenant.to_owned(),
        session_id,
        cursor: from,
        subscription: None,
        channel: None,
        ready: VecDeque::new(),
        poll: DEFAULT_POLL_INTERVAL,
        coalesce: DEFAULT_COALESCE,
        last_read: None,
        seen_session: from != FollowCursor::START,
        caught_up: false,
        pause: false,
        ended: false,
    };
    Follow {
        inner: None,
        state: Some(state),
    }
}

/// The cursor at the end of session `session_id`'s history as it is now: a follower from it
/// sees only what happens next (read the history first, for example with
/// [`list_messages`](crate::list_messages), then follow from here).
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s.
pub async fn follow_cursor_now(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
) -> Result<FollowCursor> {
    validate::tenant(tenant)?;
    let mut query = Query::select();
    query
        .expr(Func::coalesce([
            Expr::col((SessionIden::Table, SessionIden::LastPosition)),
            Expr::val(0i64),
        ]))
        .expr(latest_change(tenant, Expr::val(session_id)))
        .from(SessionIden::Table)
        .and_where(Expr::col((SessionIden::Table, SessionIden::TenantId)).eq(tenant))
        .and_where(Expr::col((SessionIden::Table, SessionIden::Id)).eq(session_id));
    let (sql, values) = crate::sql::built(&query);
    let (position, change): (i64, i64) = sqlx::query_as_with(sql, values)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Session))?;
    Ok(FollowCursor { position, change })
}

/// `(SELECT coalesce(max(seq), 0) FROM session_changes WHERE tenant_id = $tenant AND
/// session_id = session)`: the seq of the session's latest change (0 before the first).
pub(crate) fn latest_change(tenant: &str, session: impl Into<Expr>) -> Expr {
    Expr::from(
        Query::select()
            .expr(Func::coalesce([
                Func::max(Expr::col((
                    SessionChangeIden::Table,
                    SessionChangeIden::Seq,
                )))
                .into(),
                Expr::val(0i64),
            ]))
            .from(SessionChangeIden::Table)
            .and_where(
                Expr::col((SessionChangeIden::Table, SessionChangeIden::TenantId)).eq(tenant),
            )
            .and_where(
                Expr::col((SessionChangeIden::Table, SessionChangeIden::SessionId))
                    .eq(session.into()),
            )
            .to_owned(),
    )
}

/// A change to record: what the writer did, under the session lock.
pub(crate) struct Change<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) session_id: Uuid,
    /// One more than the session's latest change, as read under the lock.
    pub(crate) seq: i64,
    pub(crate) kind: SessionChangeKind,
    /// The session's `last_position` as read under the lock.
    pub(crate) after_position: Option<i64>,
    pub(crate) event: Option<Uuid>,
    pub(crate) message_ids: Vec<Uuid>,
}

/// Writes `INSERT INTO session_changes (…) VALUES (…)` on `conn`: the change, with the seq
/// its writer read under the session row's lock (every writer of the session takes it, so seqs
/// follow commit order, and a second writer with the same seq cannot exist: it waits for the
/// lock, then reads this one). A plain insert of values, which Citus routes to the tenant's
/// shard as it is.
pub(crate) async fn record(conn: &mut PgConnection, change: Change<'_>) -> Result<()> {
    let insert = crate::sql::insert_values(
        SessionChangeIden::Table,
        [
            (SessionChangeIden::TenantId, Expr::val(change.tenant)),
            (SessionChangeIden::SessionId, Expr::val(change.session_id)),
            (SessionChangeIden::Seq, Expr::val(change.seq)),
            (SessionChangeIden::Kind, Expr::val(change.kind.as_str())),
            (
                SessionChangeIden::AfterPosition,
                Expr::val(change.after_position.unwrap_or(0)),
            ),
            (
                SessionChangeIden::CompactionEventId,
                Expr::val(change.event),
            ),
            (SessionChangeIden::MessageIds, Expr::val(change.message_ids)),
        ],
    );
    let (sql, values) = crate::sql::built(&insert);
    sqlx::query_with(sql, values).execute(conn).await?;
    Ok(())
}

/// `SELECT pg_notify(agentpg_follow_channel(tenant, session), '')`: wakes the session's
/// followers (at commit, inside a transaction). A statement of its own, with no table, so a
/// distributed database (Citus) runs it on the node the followers listen on.
pub(crate) async fn notify(conn: &mut PgConnection, tenant: &str, session_id: Uuid) -> Result<()> {
    let query = Query::select()
        .expr(
            Func::cust("pg_notify")
                .arg(channel_of(tenant, session_id))
                .arg(""),
        )
        .to_owned();
    let (sql, values) = crate::sql::built(&query);
    sqlx::query_with(sql, values).execute(conn).await?;
    Ok(())
}

/// [`notify`] after a statement that already committed (an append outside a transaction):
/// its failure loses only a wake-up, which followers make up at their next poll.
pub(crate) async fn notify_committed(conn: &mut PgConnection, tenant: &str, session_id: Uuid) {
    if let Err(e) = notify(conn, tenant, session_id).await {
        tracing::warn!(error = %e, "followers of the session were not notified");
    }
}

fn channel_of(tenant: &str, session_id: Uuid) -> Expr {
    Func::cust("agentpg_follow_channel")
        .arg(tenant)
        .arg(session_id)
        .into()
}

/// The stream [`follow_session`] returns.
pub struct Follow {
    inner: Option<futures_core::stream::BoxStream<'static, Result<Followed>>>,
    state: Option<State>,
}

impl Follow {
    /// Reads at least this often, notified or not (default [`DEFAULT_POLL_INTERVAL`]). Takes
    /// effect only before the stream is first polled.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        if let Some(state) = self.state.as_mut() {
            state.poll = every;
        }
        self
    }

    /// When woken, reads no sooner than this after its previous read (default
    /// [`DEFAULT_COALESCE`]): a wake-up after a quiet spell is read at once, while a steady
    /// stream of appends is read a few at a time, which is what keeps followers cheap for the
    /// writers. `Duration::ZERO` reads on every wake-up. Takes effect only before the stream is
    /// first polled.
    pub fn coalesce(mut self, at_most_every: Duration) -> Self {
        if let Some(state) = self.state.as_mut() {
            state.coalesce = at_most_every;
        }
        self
    }
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follow").finish_non_exhaustive()
    }
}

impl futures_core::Stream for Follow {
    type Item = Result<Followed>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            let Some(state) = self.state.take() else {
                return std::task::Poll::Ready(None);
            };
            let stream = futures_util::stream::unfold(state, |mut state| async move {
                let item = state.next().await?;
                Some((item, state))
            });
            self.inner = Some(Box::pin(stream));
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

struct State {
    pool: PgPool,
    tenant: String,
    session_id: Uuid,
    /// Just after the last event given.
    cursor: FollowCursor,
    /// The session's channel, with this process's other followers of it (one listening
    /// connection, one wake-up counter, the last read).
    subscription: Option<hub::Subscription>,
    channel: Option<String>,
    /// Events read and not yet given.
    ready: VecDeque<Followed>,
    poll: Duration,
    coalesce: Duration,
    /// When the last read after a wake-up started.
    last_read: Option<tokio::time::Instant>,
    /// The session existed when this follower (or the one whose cursor it resumes) saw it.
    seen_session: bool,
    /// The last read found nothing new: the next one waits for a wake-up first.
    caught_up: bool,
    /// The last attempt failed: pause before the next.
    pause: bool,
    ended: bool,
}

impl State {
    async fn next(&mut self) -> Option<Result<Followed>> {
        loop {
            if let Some(followed) = self.ready.pop_front() {
                self.cursor = followed.cursor;
                if followed.event == SessionEvent::Deleted {
                    self.ended = true;
                    self.ready.clear();
                }
                return Some(Ok(followed));
            }
            if self.ended {
                return None;
            }
            if self.pause {
                self.pause = false;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            match self.step().await {
                Ok(()) => {}
                Err(e) => {
                    // Listening may be what failed: subscribe again, listening before the next
                    // read, so nothing committed after that read goes unnoticed.
                    self.subscription = None;
                    self.caught_up = false;
                    if e.is_retryable() {
                        self.pause = true;
                    } else {
                        self.ended = true;
                    }
                    return Some(Err(e));
                }
            }
        }
    }

    /// One round: listen (if not yet), wait for a wake-up when the last read was caught up,
    /// then read what follows the cursor into `ready`.
    async fn step(&mut self) -> Result<()> {
        // Whether to read the database itself rather than another follower's read.
        let mut fresh = false;
        if self.subscription.is_none() {
            validate::tenant(&self.tenant)?;
            let channel = match &self.channel {
                Some(c) => c.clone(),
                None => {
                    let query = Query::select()
                        .expr(channel_of(&self.tenant, self.session_id))
                        .to_owned();
                    let (sql, values) = crate::sql::built(&query);
                    let c: String = sqlx::query_scalar_with(sql, values)
                        .fetch_one(&self.pool)
                        .await?;
                    self.channel = Some(c.clone());
                    c
                }
            };
            let options = self.pool.connect_options();
            self.subscription = Some(hub::subscribe(&options, &channel).await?);
            // Listening now: read before waiting, whatever the last read found.
            self.caught_up = false;
            fresh = true;
        }
        if self.caught_up {
            if let Some(subscription) = self.subscription.as_mut() {
                match tokio::time::timeout(self.poll, subscription.wakeups.changed()).await {
                    Ok(Ok(())) => {
                        let now = tokio::time::Instant::now();
                        if let Some(next) = self.last_read.map(|at| at + self.coalesce) {
                            if next > now {
                                tokio::time::sleep_until(next).await;
                            }
                        }
                        self.last_read = Some(tokio::time::Instant::now());
                    }
                    // The hub is gone (its runtime ended): subscribe again after this read.
                    Ok(Err(_)) => {
                        self.subscription = None;
                        fresh = true;
                    }
                    // The poll interval passed: what changed without a notification is in the
                    // database, not in a read made before.
                    Err(_) => fresh = true,
                }
            }
        }
        let (read, complete) = self.read(fresh).await?;
        // A read that gave all it saw leaves nothing to read until the next wake-up.
        self.caught_up = read.is_empty() || complete;
        self.ready.extend(read);
        Ok(())
    }

    /// The events after the cursor: another follower's read of this session, if it started
    /// here (or passed here) since the last wake-up, else a read of the database, which the
    /// others may then use.
    async fn read(&mut self, fresh: bool) -> Result<(Vec<Followed>, bool)> {
        let Some(subscription) = self.subscription.as_mut() else {
            return self.read_database().await;
        };
        let generation = *subscription.wakeups.borrow_and_update();
        let session = subscription.session.clone();
        let mut last = session.last_read.lock().await;
        if !fresh {
            if let Some(events) = last
                .as_ref()
                .filter(|r| r.generation == generation)
                .and_then(|r| Some((r.after(self.cursor)?, r.complete)))
            {
                return Ok(events);
            }
        }
        let from = self.cursor;
        let (events, complete) = self.read_database().await?;
        *last = Some(hub::LastRead {
            generation,
            from,
            events: events.clone(),
            complete,
        });
        Ok((events, complete))
    }

    /// The events after the cursor, as one statement sees the session, and whether they are
    /// all it saw (no limit cut the read short).
    async fn read_database(&mut self) -> Result<(Vec<Followed>, bool)> {
        let (sql, values) = crate::sql::built(&read_statement(
            &self.tenant,
            self.session_id,
            self.cursor,
            BATCH,
        ));
        let row: (Option<bool>, Option<Value>, Option<Value>) = sqlx::query_as_with(sql, values)
            .fetch_one(&self.pool)
            .await?;
        let (exists, changes, messages) = row;
        if exists != Some(true) {
            if !self.seen_session {
                return Err(Error::NotFound(Entity::Session));
            }
            let deleted = Followed {
                event: SessionEvent::Deleted,
                cursor: self.cursor,
            };
            return Ok((vec![deleted], true));
        }
        self.seen_session = true;
        let changes: Vec<ChangeRow> = decode_list(changes, "change")?;
        let messages: Vec<Message> = decode_list(messages, "message")?;
        let mut referenced = Vec::new();
        for c in &changes {
            match c.change.kind {
                SessionChangeKind::Reverted => referenced.extend(&c.change.message_ids),
                SessionChangeKind::Compacted => {
                    referenced.extend(c.event.as_ref().and_then(|e| e.summary_message_id))
                }
                SessionChangeKind::Removed => {}
            }
        }
        let referenced = if referenced.is_empty() {
            Vec::new()
        } else {
            self.messages_by_id(&referenced).await?
        };
        let complete = (changes.len() as u64) < BATCH && (messages.len() as u64) < BATCH;
        Ok((
            merge(self.cursor, changes, messages, &referenced, BATCH)?,
            complete,
        ))
    }

    /// Messages of the session by id, live or archived, as they are now.
    async fn messages_by_id(&self, ids: &[Uuid]) -> Result<Vec<Message>> {
        let query = Query::select()
            .expr(Func::cust("jsonb_agg").arg(Expr::col((Alias::new("m"), Alias::new(ROW)))))
            .from_subquery(
                messages_where(
                    &self.tenant,
                    self.session_id,
                    Summaries::Include,
                    |id, _| {
                        id.in_subquery(
                            Query::select()
                                .expr(Func::cust("unnest").arg(Expr::val(ids.to_vec())))
                                .to_owned(),
                        )
                    },
                ),
                Alias::new("m"),
            )
            .to_owned();
        let (sql, values) = crate::sql::built(&query);
        let rows: Option<Value> = sqlx::query_scalar_with(sql, values)
            .fetch_one(&self.pool)
            .await?;
        decode_list(rows, "message")
    }
}

/// A change as the read statement returns it: the row, and its compaction event if it has one.
#[derive(serde::Deserialize)]
struct ChangeRow {
    change: SessionChange,
    event: Option<CompactionEvent>,
}

// Names the read statement gives what it computes (none is a column's).
const ROW: &str = "row";
const POSITION: &str = "at_position";

/// Whether [`messages_where`] keeps the summaries compactions of the session wrote.
#[derive(Clone, Copy, PartialEq)]
enum Summaries {
    Include,
    /// Reading appends: a summary is part of its compaction's event, not an append.
    Exclude,
}

/// The session's messages, live and archived, that `filter` keeps (given the id and position
/// expressions of each half), as rows (`at_position`, `row`): the row as JSON, without its
/// search document.
fn messages_where(
    tenant: &str,
    session_id: Uuid,
    summaries: Summaries,
    filter: impl Fn(Expr, Expr) -> Expr,
) -> SelectStatement {
    let not_a_summary = |id: Expr| {
        if summaries == Summaries::Include {
            return Expr::val(true);
        }
        Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(CompactionEventIden::Table)
                .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
                .and_where(Expr::col(CompactionEventIden::SessionId).eq(session_id))
                .and_where(Expr::col(CompactionEventIden::SummaryMessageId).eq(id))
                .to_owned(),
        )
        .not()
    };
    let live_id = Expr::col((MessageIden::Table, MessageIden::Id));
    let live_position = Expr::col((MessageIden::Table, MessageIden::Position));
    let live = Query::select()
        .expr_as(live_position.clone(), Alias::new(POSITION))
        .expr_as(
            crate::sql::row_json(
                MessageIden::Table,
                &MessageIden::SEARCH.map(MessageIden::name),
            ),
            Alias::new(ROW),
        )
        .from(MessageIden::Table)
        .and_where(Expr::col((MessageIden::Table, MessageIden::TenantId)).eq(tenant))
        .and_where(Expr::col((MessageIden::Table, MessageIden::SessionId)).eq(session_id))
        .and_where(filter(live_id.clone(), live_position))
        .and_where(not_a_summary(live_id))
        .to_owned();
    let original = Expr::col((
        MessageArchiveIden::Table,
        MessageArchiveIden::OriginalMessage,
    ));
    let archived_id = Expr::col((MessageArchiveIden::Table, MessageArchiveIden::Id));
    let archived_position = original
        .clone()
        .cast_json_field(MessageIden::Position.name())
        .cast_as(Alias::new("int8"));
    let archived = Query::select()
        .expr_as(archived_position.clone(), Alias::new(POSITION))
        .expr_as(original, Alias::new(ROW))
        .from(MessageArchiveIden::Table)
        .and_where(Expr::col((MessageArchiveIden::Table, MessageArchiveIden::TenantId)).eq(tenant))
        .and_where(
            Expr::col((MessageArchiveIden::Table, MessageArchiveIden::SessionId)).eq(session_id),
        )
        .and_where(filter(archived_id.clone(), archived_position))
        .and_where(not_a_summary(archived_id))
        .to_owned();
    let mut both = live;
    both.union(UnionType::All, archived);
    Query::select()
        .column(Asterisk)
        .from_subquery(both, Alias::new("both"))
        .to_owned()
}

/// One read: whether the session exists, the changes after the cursor (with their events) as
/// a JSON array, and the messages after the cursor's position as a JSON array, both in order
/// and at most `limit` each. One statement, so both halves see one snapshot.
fn read_statement(
    tenant: &str,
    session_id: Uuid,
    cursor: FollowCursor,
    limit: u64,
) -> SelectStatement {
    let exists = Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(SessionIden::Table)
            .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
            .and_where(Expr::col(SessionIden::Id).eq(session_id))
            .to_owned(),
    );
    let c = Alias::new("c");
    let event_of = Query::select()
        .expr(Func::cust("to_jsonb").arg(Expr::col(CompactionEventIden::Table)))
        .from(CompactionEventIden::Table)
        .and_where(
            Expr::col((CompactionEventIden::Table, CompactionEventIden::TenantId)).eq(tenant),
        )
        .and_where(
            Expr::col((CompactionEventIden::Table, CompactionEventIden::Id))
                .equals((c.clone(), SessionChangeIden::CompactionEventId)),
        )
        .to_owned();
    let changes = Query::select()
        .column(Asterisk)
        .from(SessionChangeIden::Table)
        .and_where(Expr::col(SessionChangeIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionChangeIden::SessionId).eq(session_id))
        .and_where(Expr::col(SessionChangeIden::Seq).gt(cursor.change))
        .order_by(SessionChangeIden::Seq, Order::Asc)
        .limit(limit)
        .to_owned();
    let changes = Query::select()
        .expr(Expr::from(Func::cust("jsonb_agg").arg(
            Func::cust("jsonb_build_object").args([
                Expr::val("change"),
                Expr::from(Func::cust("to_jsonb").arg(Expr::col(c.clone()))),
                Expr::val("event"),
                Expr::from(event_of),
            ]),
        )))
        .from_subquery(changes, c.clone())
        .to_owned();
    let m = Alias::new("m");
    let messages = messages_where(tenant, session_id, Summaries::Exclude, |_, position| {
        position.gt(cursor.position)
    })
    .order_by(Alias::new(POSITION), Order::Asc)
    .limit(limit)
    .to_owned();
    let messages = Query::select()
        .expr(Func::cust("jsonb_agg").arg(Expr::col((m.clone(), Alias::new(ROW)))))
        .from_subquery(messages, m)
        .to_owned();
    Query::select()
        .expr(exists)
        .expr(Expr::from(changes))
        .expr(Expr::from(messages))
        .to_owned()
}

/// A JSON array of rows (or NULL: none) as typed rows; a row that does not decode is an error.
fn decode_list<T: serde::de::DeserializeOwned>(rows: Option<Value>, what: &str) -> Result<Vec<T>> {
    match rows {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(rows) => crate::sql::from_json(rows, what, what),
    }
}

/// The events of one read, in order: a change follows every message at or below its
/// `after_position` and precedes every one above it; changes in seq order. A read that hit its
/// limit on one side gives only what is certain to come before what it did not read.
fn merge(
    mut cursor: FollowCursor,
    changes: Vec<ChangeRow>,
    messages: Vec<Message>,
    referenced: &[Message],
    limit: u64,
) -> Result<Vec<Followed>> {
    let full = |n: usize| n as u64 >= limit;
    let mut bound = i64::MAX;
    if full(messages.len()) {
        bound = std::cmp::min(bound, messages.last().map_or(i64::MAX, |m| m.position));
    }
    if full(changes.len()) {
        bound = std::cmp::min(
            bound,
            changes.last().map_or(i64::MAX, |c| c.change.after_position),
        );
    }
    let find = |id: Uuid| referenced.iter().find(|m| m.id == id).cloned();
    let mut out = Vec::with_capacity(messages.len() + changes.len());
    let mut messages = messages.into_iter().peekable();
    let mut changes = changes.into_iter().peekable();
    loop {
        let next_message = messages.peek().map(|m| m.position).filter(|p| *p <= bound);
        let next_change = changes
            .peek()
            .map(|c| c.change.after_position)
            .filter(|p| *p <= bound);
        let take_message = match (next_message, next_change) {
            (Some(p), Some(after)) => p <= after,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_message {
            let Some(m) = messages.next() else { break };
            cursor.position = std::cmp::max(cursor.position, m.position);
            out.push(Followed {
                event: SessionEvent::Appended(m),
                cursor,
            });
            continue;
        }
        let Some(ChangeRow { change, event }) = changes.next() else {
            break;
        };
        cursor.change = change.seq;
        cursor.position = std::cmp::max(cursor.position, change.after_position);
        let event_of = |event: Option<CompactionEvent>| {
            event.ok_or_else(|| {
                Error::Database(agentpg_schema::generated::null_column(
                    "compaction_event_id",
                ))
            })
        };
        let event = match change.kind {
            SessionChangeKind::Compacted => {
                let event = event_of(event)?;
                let summary = event.summary_message_id.and_then(find);
                SessionEvent::Compacted {
                    event,
                    removed: change.message_ids,
                    summary,
                }
            }
            SessionChangeKind::Reverted => SessionEvent::Reverted {
                event: event_of(event)?,
                restored: change
                    .message_ids
                    .iter()
                    .filter_map(|id| find(*id))
                    .collect(),
            },
            SessionChangeKind::Removed => SessionEvent::Removed {
                ids: change.message_ids,
            },
        };
        out.push(Followed { event, cursor });
    }
    Ok(out)
}
