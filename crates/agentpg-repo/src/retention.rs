//! Retention: bounded growth. Old compactions give up their archive (and with it their revert);
//! idle sessions go.

use agentpg_schema::{CompactionEventIden, MessageArchiveIden, SessionIden};
use chrono::{DateTime, TimeDelta, Utc};
use sea_query::{Alias, Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use sqlx::{Acquire, Postgres};

use crate::error::{Error, Result};
use crate::validate;

/// The most rows one retention batch may touch.
pub const MAX_BATCH: u64 = 10_000;

/// Where retention draws the line: rows older than an instant, or older than an age measured
/// on the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Older than this instant. An instant after the database's `now()` is refused.
    Before(DateTime<Utc>),
    /// Older than `now() - age`, `now()` read by the database. A negative age is refused.
    Age(TimeDelta),
}

impl From<DateTime<Utc>> for Cutoff {
    fn from(at: DateTime<Utc>) -> Self {
        Cutoff::Before(at)
    }
}

impl From<TimeDelta> for Cutoff {
    fn from(age: TimeDelta) -> Self {
        Cutoff::Age(age)
    }
}

impl From<std::time::Duration> for Cutoff {
    fn from(age: std::time::Duration) -> Self {
        Cutoff::Age(TimeDelta::from_std(age).unwrap_or(TimeDelta::MAX))
    }
}

/// The earliest instant PostgreSQL's `timestamptz` holds (4714-11-24 BC, proleptic
/// Gregorian, which chrono numbers as year -4713): a cut-off before it selects nothing, since
/// no row can be older.
fn earliest_timestamptz() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
}

/// The oldest age computed as `now() - age` (about 6,000 years: `now()` minus it stays inside
/// PostgreSQL's range); an older age selects nothing, as no row can be that old.
const MAX_AGE_DAYS: i64 = 6_000 * 365;

impl Cutoff {
    /// The cut-off as a SQL expression, and a check that it is not in the future. A cut-off
    /// older than any instant PostgreSQL can hold is `-infinity`: it selects nothing.
    fn expr(self) -> Result<Expr> {
        let nothing = || Expr::cust("'-infinity'::timestamptz");
        Ok(match self {
            Cutoff::Before(at) if at < earliest_timestamptz() => nothing(),
            Cutoff::Before(at) => Expr::val(at).cast_as(Alias::new("timestamptz")),
            Cutoff::Age(age) => {
                if age < TimeDelta::zero() {
                    return Err(Error::invalid(format!(
                        "the cut-off is in the future (a negative age, {age})"
                    )));
                }
                if age.num_days() > MAX_AGE_DAYS {
                    return Ok(nothing());
                }
                // now() - µs * interval '1 microsecond': exact to the microsecond.
                let micros = age.num_microseconds().unwrap_or(i64::MAX);
                Expr::current_timestamp()
                    .sub(Expr::val(micros).mul(Expr::cust("interval '1 microsecond'")))
            }
        })
    }
}

/// The error for a cut-off the database found to be in the future (each batch statement checks
/// it against its own `now()` and writes nothing then).
fn refuse_future(future: bool) -> Result<()> {
    if future {
        return Err(Error::invalid(
            "the cut-off is in the future (after the database's now())",
        ));
    }
    Ok(())
}

fn batch_size(batch: u64) -> Result<i64> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::invalid(format!(
            "batch must be between 1 and {MAX_BATCH}, not {batch}"
        )));
    }
    Ok(batch as i64)
}

/// What [`finalize_compactions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinalizeReport {
    /// Compaction events marked finalized.
    pub compactions_finalized: u64,
    /// Archive rows dropped.
    pub archived_messages_dropped: u64,
    /// Statements (each one batch, committed on its own unless `conn` is in a transaction).
    pub batches: u64,
}

/// What [`delete_idle_sessions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleReport {
    /// Sessions deleted (with their messages, compactions and archive).
    pub sessions_deleted: u64,
    /// Statements (each one batch, committed on its own unless `conn` is in a transaction).
    pub batches: u64,
}

/// Drops the archive of `tenant`'s standing compactions created before `older_than`, at most
/// `batch` compactions per statement, and marks each finalized (`finalized_at`); the events stay
/// as audit history, but can no longer be reverted ([`revert_compaction`](crate::revert_compaction)
/// then answers `Conflict`, "archive finalized"). Reverted and already finalized compactions are
/// left alone. Runs batches until none is left and reports what it did.
///
/// Safe beside normal traffic: a batch locks only the event rows it finalizes, skips events
/// another transaction holds (a revert in progress keeps its archive; a later run finalizes it
/// if it still stands), and takes no session lock, so appends and compactions never wait on it.
/// Each batch commits on its own when `conn` is a pool or connection; inside your transaction,
/// all of them commit with it.
///
/// # Errors
/// [`Error::InvalidInput`] for a `batch` of 0 or above [`MAX_BATCH`], or a cut-off in the
/// future (by the database's clock); nothing is written then.
#[tracing::instrument(skip_all, fields(tenant = %tenant, batch = batch, finalized = tracing::field::Empty))]
pub async fn finalize_compactions<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    older_than: impl Into<Cutoff>,
    batch: u64,
) -> Result<FinalizeReport> {
    validate::tenant(tenant)?;
    let limit = batch_size(batch)?;
    let cutoff = older_than.into().expr()?;
    let mut conn = conn.acquire().await?;
    let mut report = FinalizeReport::default();
    loop {
        let (sql, values) = crate::sql::built(&finalize_batch(tenant, cutoff.clone(), limit));
        let (future, finalized, dropped): (bool, i64, i64) = sqlx::query_as_with(sql, values)
            .fetch_one(&mut *conn)
            .await?;
        refuse_future(future)?;
        report.batches += 1;
        report.compactions_finalized += finalized as u64;
        report.archived_messages_dropped += dropped as u64;
        if finalized < limit {
            break;
        }
    }
    tracing::Span::current().record("finalized", report.compactions_finalized);
    Ok(report)
}

/// One batch: pick (and lock, skipping locked ones) up to `limit` standing, unfinalized events
/// older than the cut-off, drop their archive rows, mark them finalized.
fn finalize_batch(tenant: &str, cutoff: Expr, limit: i64) -> sea_query::WithQuery {
    let (picked, dropped, marked) = (
        Alias::new("picked"),
        Alias::new("dropped"),
        Alias::new("marked"),
    );
    let mut pick = Query::select();
    pick.column(CompactionEventIden::Id)
        .from(CompactionEventIden::Table)
        .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
        .and_where(Expr::col(CompactionEventIden::RevertedAt).is_null())
        .and_where(Expr::col(CompactionEventIden::FinalizedAt).is_null())
        .and_where(Expr::col(CompactionEventIden::CreatedAt).lt(cutoff.clone()))
        .and_where(cutoff.clone().lte(Expr::current_timestamp()))
        .order_by(CompactionEventIden::CreatedAt, Order::Asc)
        .limit(limit as u64)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let of_picked = |column: Expr| {
        column.in_subquery(
            Query::select()
                .column(CompactionEventIden::Id)
                .from(picked.clone())
                .to_owned(),
        )
    };
    let mut drop = Query::delete();
    drop.from_table(MessageArchiveIden::Table)
        .and_where(Expr::col(MessageArchiveIden::TenantId).eq(tenant))
        .and_where(of_picked(Expr::col(MessageArchiveIden::CompactionEventId)))
        .returning(Query::returning().expr(Expr::val(1)));
    let mut mark = Query::update();
    mark.table(CompactionEventIden::Table)
        .value(CompactionEventIden::FinalizedAt, Expr::current_timestamp())
        .and_where(Expr::col(CompactionEventIden::TenantId).eq(tenant))
        .and_where(of_picked(Expr::col(CompactionEventIden::Id)))
        .returning(Query::returning().column(CompactionEventIden::Id));
    let mut with = Query::with();
    with.cte(crate::sql::cte(&picked, pick))
        .cte(crate::sql::cte(&dropped, drop))
        .cte(crate::sql::cte(&marked, mark));
    Query::select()
        .expr(cutoff.gt(Expr::current_timestamp()))
        .expr(crate::sql::count_of(&marked))
        .expr(crate::sql::count_of(&dropped))
        .to_owned()
        .with(with)
}

/// Deletes `tenant`'s sessions not updated since the cut-off (`updated_at` before it), with
/// everything they hold (messages, compactions, archive), at most `batch` sessions per
/// statement, and reports how many went. A session that still has child sessions is deleted
/// only once its children are (children go first, in earlier batches, if they are idle too), so
/// an active nested agent never loses its parent and no deletion cascades beyond the sessions
/// counted.
///
/// Safe beside normal traffic: each batch locks only the sessions it deletes and skips sessions
/// another transaction holds (an append, compaction or fork in progress keeps its session; the
/// decision "idle" is made on the locked row, in the deleting statement). Each batch commits on
/// its own when `conn` is a pool or connection; inside your transaction, all of them commit
/// with it. A batch's cost grows with the messages its sessions hold: choose `batch` with that
/// in mind.
///
/// # Errors
/// [`Error::InvalidInput`] for a `batch` of 0 or above [`MAX_BATCH`], or a cut-off in the
/// future (by the database's clock); nothing is written then.
#[tracing::instrument(skip_all, fields(tenant = %tenant, batch = batch, deleted = tracing::field::Empty))]
pub async fn delete_idle_sessions<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    idle_for: impl Into<Cutoff>,
    batch: u64,
) -> Result<IdleReport> {
    validate::tenant(tenant)?;
    let limit = batch_size(batch)?;
    let cutoff = idle_for.into().expr()?;
    let mut conn = conn.acquire().await?;
    let mut report = IdleReport::default();
    loop {
        let (sql, values) = crate::sql::built(&idle_batch(tenant, cutoff.clone(), limit));
        let (future, deleted): (bool, i64) = sqlx::query_as_with(sql, values)
            .fetch_one(&mut *conn)
            .await?;
        refuse_future(future)?;
        report.batches += 1;
        report.sessions_deleted += deleted as u64;
        // A short batch may have left parents whose children it just deleted: one more pass
        // picks those up; a batch that deletes nothing ends the run.
        if deleted == 0 {
            break;
        }
    }
    tracing::Span::current().record("deleted", report.sessions_deleted);
    Ok(report)
}

/// One batch: pick (and lock, skipping locked ones) up to `limit` sessions idle since the
/// cut-off and without children, and delete them.
fn idle_batch(tenant: &str, cutoff: Expr, limit: i64) -> sea_query::WithQuery {
    let (picked, deleted, child) = (
        Alias::new("picked"),
        Alias::new("deleted"),
        Alias::new("child"),
    );
    let mut pick = Query::select();
    pick.column(SessionIden::Id)
        .from(SessionIden::Table)
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::UpdatedAt).lt(cutoff.clone()))
        .and_where(cutoff.clone().lte(Expr::current_timestamp()))
        .and_where(
            Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from_as(SessionIden::Table, child.clone())
                    .and_where(
                        Expr::col((child.clone(), SessionIden::TenantId))
                            .equals((SessionIden::Table, SessionIden::TenantId)),
                    )
                    .and_where(
                        Expr::col((child, SessionIden::ParentSessionId))
                            .equals((SessionIden::Table, SessionIden::Id)),
                    )
                    .to_owned(),
            )
            .not(),
        )
        .order_by(SessionIden::UpdatedAt, Order::Asc)
        .limit(limit as u64)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let mut delete = Query::delete();
    delete
        .from_table(SessionIden::Table)
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(
            Expr::col(SessionIden::Id).in_subquery(
                Query::select()
                    .column(SessionIden::Id)
                    .from(picked.clone())
                    .to_owned(),
            ),
        )
        .returning(Query::returning().column(SessionIden::Id));
    let mut with = Query::with();
    with.cte(crate::sql::cte(&picked, pick))
        .cte(crate::sql::cte(&deleted, delete));
    Query::select()
        .expr(cutoff.gt(Expr::current_timestamp()))
        .expr(crate::sql::count_of(&deleted))
        .to_owned()
        .with(with)
        .to_owned()
}
