//! Forks: a new session holding copies of a source session's messages up to a fork point.

use agentpg_schema::sessions;
use agentpg_schema::{MessageIden, NewSession, Session, SessionIden};
use sea_query::{Alias, Asterisk, Expr, ExprTrait, Query};
use sqlx::{Acquire, Postgres};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::validate;

/// Forks session `source` of `tenant` at message `at_message`: creates the session `new`
/// describes, holding copies of the source's messages up to and including `at_message` — new
/// ids, the same positions (so the same order), and every other column copied as stored (role,
/// content, usage, metadata, flags, timestamps, and any column a later migration adds). The
/// fork's `total_tokens` is the exact sum of what it holds, and its lineage is stored:
/// `forked_from_session_id` and `forked_from_message_id` (find a session's forks with
/// [`SessionFilter::forked_from`](crate::SessionFilter::forked_from)).
///
/// The copy is what the source held at one instant: the fork point and the messages up to it
/// are read by the same statement that copies them, so a compaction or append on the source
/// at the same time either happened wholly before the fork or not at all for it; the source is
/// not locked. Summaries the source holds are copied as messages; the fork has no compaction
/// history of its own (`compaction_count` 0) and keeps `parent_session_id` as `new` sets it.
///
/// Two statements in one transaction (a savepoint inside yours), whatever the length.
///
/// # Errors
/// [`Error::NotFound`]`(Session)` if `source` is not a session of `tenant`;
/// [`Error::InvalidInput`] if `at_message` is not a message of `source`, if `new` is for
/// another tenant, or for anything [`create_session`](crate::create_session) refuses (a
/// counter or the lineage set); [`Error::Conflict`] if the tenant already has `new`'s
/// identifier. Nothing is written on any error.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %source, at = %at_message, copied = tracing::field::Empty))]
pub async fn fork_session<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    source: Uuid,
    at_message: Uuid,
    new: impl std::borrow::Borrow<NewSession>,
) -> Result<Session> {
    let new = new.borrow();
    validate::tenant(tenant)?;
    crate::sessions::check_new(new)?;
    if new.tenant_id != tenant {
        return Err(Error::invalid(format!(
            "the fork is for tenant {:?}, the source is {tenant:?}'s",
            new.tenant_id
        )));
    }
    let mut tx = conn.begin().await?;
    let fork = NewSession {
        forked_from_session_id: Some(source),
        forked_from_message_id: Some(at_message),
        ..new.clone()
    };
    let created = sessions::stmt::insert(&fork)
        .fetch_one(&mut *tx)
        .await
        .map_err(crate::sessions::parent_missing)?;

    let (sql, values) = crate::sql::built(&copy(tenant, source, at_message, created.id));
    let forked: Option<Session> = sqlx::query_as_with(sql, values)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(forked) = forked else {
        // Nothing copied and no fork point: say which of the two ids is wrong.
        return Err(
            match crate::sessions::get_session(&mut *tx, tenant, source).await? {
                None => Error::NotFound(Entity::Session),
                Some(_) => {
                    Error::invalid(format!("message {at_message} is not in session {source}"))
                }
            },
        );
    };
    tx.commit().await?;
    Ok(forked)
}

/// One statement: find the fork point in the source, copy the messages up to it into session
/// `fork`, and set the fork's counters from what was copied; returns the fork's row, or no row
/// when the fork point is not in the source.
fn copy(tenant: &str, source: Uuid, at_message: Uuid, fork: Uuid) -> sea_query::WithQuery {
    let (copied, forked) = (Alias::new("copied"), Alias::new("forked"));
    // The fork point, in the insert itself: an insert that read a CTE would make Citus send
    // the CTE's result to every node.
    let mut point = Query::select();
    point
        .column(MessageIden::Position)
        .from(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(source))
        .and_where(Expr::col(MessageIden::Id).eq(at_message));

    // Every column a message is written with, from the source row, but a fresh id (the
    // column's default) and the fork's session id.
    let columns: Vec<MessageIden> = MessageIden::WRITABLE
        .into_iter()
        .filter(|c| *c != MessageIden::Id)
        .collect();
    let mut rows = Query::select();
    for column in &columns {
        match column {
            MessageIden::SessionId => rows.expr(Expr::val(fork)),
            other => rows.expr(Expr::col(*other)),
        };
    }
    rows.from(MessageIden::Table)
        .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
        .and_where(Expr::col(MessageIden::SessionId).eq(source))
        .and_where(Expr::col(MessageIden::Position).lte(Expr::from(point)));
    let mut insert = Query::insert();
    insert
        .into_table(MessageIden::Table)
        .columns(columns)
        .select_from(rows)
        .expect("as many values as columns")
        .returning(Query::returning().columns([MessageIden::Tokens, MessageIden::Position]));

    let mut counters = Query::update();
    counters
        .table(SessionIden::Table)
        .value(
            SessionIden::TotalTokens,
            crate::sql::sum_of(MessageIden::Tokens, &copied),
        )
        .value(
            SessionIden::LastPosition,
            Expr::from(
                Query::select()
                    .expr(Expr::col(MessageIden::Position).max())
                    .from(copied.clone())
                    .to_owned(),
            ),
        )
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(fork))
        // The fork point is copied whenever it is in the source.
        .and_where(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(copied.clone())
                .to_owned(),
        ))
        .returning(Query::returning().columns(SessionIden::COLUMNS));

    let mut with = Query::with();
    with.cte(crate::sql::cte(&copied, insert))
        .cte(crate::sql::cte(&forked, counters));
    Query::select()
        .column(Asterisk)
        .from(forked)
        .to_owned()
        .with(with)
}
