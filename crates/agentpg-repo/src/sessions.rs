//! Sessions: create, look up, list, children, metadata, delete. Every call is scoped by tenant.

use agentpg_schema::sessions::{self, SessionByTenantIdIdentifier, SessionKey};
use agentpg_schema::{NewSession, Session, SessionIden};
use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Order};
use serde_json::{Map, Value};
use sqlx::{Acquire, PgExecutor, Postgres};
use uuid::Uuid;

use crate::error::{Entity, Error, Result};
use crate::validate;

/// The order of [`list_sessions`], and what paging in it guarantees while sessions are being
/// written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SessionOrder {
    /// Most recently updated first (ties by id). Every append, compaction or metadata change
    /// moves a session to the front, so paging while sessions are written never returns a
    /// session twice but can miss one that moved in front of the cursor; use it to show
    /// "recent conversations", not to visit every session.
    #[default]
    RecentlyUpdated,
    /// Newest created first (ties by id). `created_at` never changes, so paging never skips or
    /// repeats a session that exists when the first page is read; sessions created meanwhile
    /// sort before the cursor and are not returned.
    NewestFirst,
    /// Oldest created first (ties by id). Same guarantee as [`NewestFirst`](Self::NewestFirst);
    /// sessions created meanwhile sort at the end and are reached by the last pages, which makes
    /// it the order for visiting every session.
    OldestFirst,
}

/// Where a page of [`list_sessions`] ends; pass it back (with the same filter and order) to
/// get the next page. It can be serialized, for an API that hands pages to its own callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionCursor {
    /// The order the page was read in.
    pub order: SessionOrder,
    /// The last session's `updated_at` ([`SessionOrder::RecentlyUpdated`]) or `created_at`.
    pub at: DateTime<Utc>,
    /// The last session's id.
    pub id: Uuid,
}

/// Which sessions [`list_sessions`] returns: those matching every condition set (all of a
/// tenant's sessions for the default, empty filter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    /// Sessions whose metadata contains this object (`metadata @> …`: every key present with
    /// an equal value, nested objects and arrays compared by containment). Backed by a GIN
    /// index on `(tenant_id, metadata)`, which intersects the tenant with the filter in one scan.
    pub metadata: Option<Map<String, Value>>,
    /// Children of this session.
    pub parent: Option<Uuid>,
    /// Sessions whose identifier starts with this text (taken literally: `%` and `_` are not
    /// wildcards). Backed by an index.
    pub identifier_prefix: Option<String>,
    /// Forks of this session.
    pub forked_from: Option<Uuid>,
}

impl SessionFilter {
    /// Sessions whose metadata contains `object` (see [`metadata`](Self::metadata)).
    pub fn metadata(mut self, object: Map<String, Value>) -> Self {
        self.metadata = Some(object);
        self
    }

    /// Children of session `parent`.
    pub fn parent(mut self, parent: Uuid) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Sessions whose identifier starts with `prefix`.
    pub fn identifier_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.identifier_prefix = Some(prefix.into());
        self
    }

    /// Forks of session `source`.
    pub fn forked_from(mut self, source: Uuid) -> Self {
        self.forked_from = Some(source);
        self
    }
}

/// One page of rows and the cursor of the next page (`None` when this is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass to get the next page; `None` after the last page.
    pub next: Option<C>,
}

/// The most rows one page may hold.
pub const MAX_PAGE: u64 = 10_000;

pub(crate) fn page_limit(limit: u64) -> Result<u64> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    Ok(limit)
}

/// Checks a session to create: what the database would refuse, and the counters agentpg-repo
/// keeps itself.
pub(crate) fn check_new(new: &NewSession) -> Result<()> {
    validate::tenant(&new.tenant_id)?;
    validate::non_empty_text("identifier", &new.identifier)?;
    validate::bounded("identifier", &new.identifier, crate::limits::IDENTIFIER)?;
    if let Some(metadata) = &new.metadata {
        validate::json_object("metadata", metadata)?;
    }
    if new.total_tokens.is_some() || new.compaction_count.is_some() || new.last_position.is_some() {
        return Err(Error::invalid(
            "total_tokens, compaction_count and last_position are kept by agentpg-repo; leave them None",
        ));
    }
    if new.forked_from_session_id.is_some() || new.forked_from_message_id.is_some() {
        return Err(Error::invalid(
            "forked_from_session_id and forked_from_message_id are set by fork_session; leave them None",
        ));
    }
    Ok(())
}

/// Creates a session and returns it. Every column of [`NewSession`] is stored (including
/// those later migrations add); the counters (`total_tokens`, `compaction_count`) and the fork
/// lineage are agentpg-repo's to set and must be left `None`.
///
/// # Errors
/// [`Error::InvalidInput`] for an empty or NUL-holding tenant or identifier, metadata that is
/// not a JSON object, or a counter or lineage field set; [`Error::Conflict`] if the tenant
/// already has the identifier; [`Error::NotFound`]`(ParentSession)` if the parent does not
/// exist in the tenant.
#[tracing::instrument(skip_all, fields(tenant = tracing::field::Empty, parent = tracing::field::Empty))]
pub async fn create_session(
    executor: impl PgExecutor<'_>,
    new: impl std::borrow::Borrow<NewSession>,
) -> Result<Session> {
    let new = new.borrow();
    let span = tracing::Span::current();
    span.record("tenant", new.tenant_id.as_str());
    if let Some(parent) = new.parent_session_id {
        span.record("parent", tracing::field::display(parent));
    }
    check_new(new)?;
    sessions::stmt::insert(new)
        .fetch_one(executor)
        .await
        .map_err(parent_missing)
}

/// A foreign-key violation of a session insert: its only foreign key is the parent's, which
/// must exist in the same tenant (a missing parent and another tenant's look alike). Decided by
/// SQLSTATE and the statement, since a distributed database (Citus) reports no constraint name.
pub(crate) fn parent_missing(e: sqlx::Error) -> Error {
    match Error::from(e) {
        Error::ForeignKey { .. } => Error::NotFound(Entity::ParentSession),
        other => other,
    }
}

/// The session `id` of `tenant`, if it exists.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %id))]
pub async fn get_session(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Session>> {
    validate::tenant(tenant)?;
    let key = SessionKey {
        tenant_id: tenant,
        id,
    };
    Ok(sessions::stmt::select_by_pk(&key)
        .fetch_optional(executor)
        .await?)
}

/// The session of `tenant` named `identifier`, if it exists.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub async fn find_session(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    identifier: &str,
) -> Result<Option<Session>> {
    validate::tenant(tenant)?;
    validate::text("identifier", identifier)?;
    validate::bounded("identifier", identifier, crate::limits::IDENTIFIER)?;
    let key = SessionByTenantIdIdentifier {
        tenant_id: tenant,
        identifier,
    };
    Ok(sessions::stmt::select_by_tenant_id_identifier(&key)
        .fetch_optional(executor)
        .await?)
}

/// A page of `tenant`'s sessions matching `filter`, in `order`, starting after `after` (the
/// previous page's `next`). One statement; each order is a keyset over an index, so a page
/// costs the same however deep it is. [`SessionOrder`] says what each order guarantees while
/// sessions are being written.
///
/// # Errors
/// [`Error::InvalidInput`] if `limit` is 0 or above [`MAX_PAGE`], if `after` was read in
/// another order, or for a filter value PostgreSQL would refuse (text holding NUL, an
/// identifier prefix over [`limits::IDENTIFIER`](crate::limits::IDENTIFIER)).
#[tracing::instrument(skip_all, fields(tenant = %tenant, ?order, limit = limit, count = tracing::field::Empty))]
pub async fn list_sessions(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    filter: &SessionFilter,
    order: SessionOrder,
    after: Option<SessionCursor>,
    limit: u64,
) -> Result<Page<Session, SessionCursor>> {
    let limit = page_limit(limit)?;
    let query = list_query(tenant, filter, order, after, limit + 1)?;
    let (sql, values) = crate::sql::built(&query);
    let mut items: Vec<Session> = sqlx::query_as_with(sql, values).fetch_all(executor).await?;
    tracing::Span::current().record("count", items.len().min(limit as usize));
    let next = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(|s| SessionCursor {
            order,
            at: match order {
                SessionOrder::RecentlyUpdated => s.updated_at,
                SessionOrder::NewestFirst | SessionOrder::OldestFirst => s.created_at,
            },
            id: s.id,
        })
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The statement of [`list_sessions`], `limit` rows.
pub(crate) fn list_query(
    tenant: &str,
    filter: &SessionFilter,
    order: SessionOrder,
    after: Option<SessionCursor>,
    limit: u64,
) -> Result<sea_query::SelectStatement> {
    validate::tenant(tenant)?;
    let mut query = sessions::select();
    query.and_where(Expr::col(SessionIden::TenantId).eq(tenant));
    if let Some(object) = &filter.metadata {
        let object = Value::Object(object.clone());
        validate::json("metadata filter", &object)?;
        query.and_where(Expr::col(SessionIden::Metadata).binary(
            sea_query::BinOper::Custom("@>"),
            Expr::val(object).cast_as(sea_query::Alias::new("jsonb")),
        ));
    }
    if let Some(parent) = filter.parent {
        query.and_where(Expr::col(SessionIden::ParentSessionId).eq(parent));
    }
    if let Some(source) = filter.forked_from {
        query.and_where(Expr::col(SessionIden::ForkedFromSessionId).eq(source));
    }
    if let Some(prefix) = &filter.identifier_prefix {
        validate::text("identifier_prefix", prefix)?;
        validate::bounded("identifier_prefix", prefix, crate::limits::IDENTIFIER)?;
        if !prefix.is_empty() {
            let mut pattern = String::with_capacity(prefix.len() + 1);
            for c in prefix.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            query.and_where(
                Expr::col(SessionIden::Identifier)
                    .like(sea_query::LikeExpr::new(pattern).escape('\\')),
            );
        }
    }
    let (column, direction) = match order {
        SessionOrder::RecentlyUpdated => (SessionIden::UpdatedAt, Order::Desc),
        SessionOrder::NewestFirst => (SessionIden::CreatedAt, Order::Desc),
        SessionOrder::OldestFirst => (SessionIden::CreatedAt, Order::Asc),
    };
    if let Some(cursor) = after {
        if cursor.order != order {
            return Err(Error::invalid(format!(
                "the cursor was read in order {:?}, not {order:?}",
                cursor.order
            )));
        }
        // (column, id) after (cursor.at, cursor.id) in the page's direction.
        let key = Expr::tuple([Expr::col(column), Expr::col(SessionIden::Id)]);
        let bound = Expr::tuple([Expr::val(cursor.at), Expr::val(cursor.id)]);
        query.and_where(match direction {
            Order::Asc => key.gt(bound),
            _ => key.lt(bound),
        });
    }
    query
        .order_by(column, direction.clone())
        .order_by(SessionIden::Id, direction)
        .limit(limit);
    Ok(query)
}

/// The direct children of session `parent` of `tenant`, oldest first.
///
/// # Errors
/// [`Error::NotFound`] if `parent` is not a session of `tenant`.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %parent, count = tracing::field::Empty))]
pub async fn list_children<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    parent: Uuid,
) -> Result<Vec<Session>> {
    validate::tenant(tenant)?;
    let mut query = sessions::select();
    query
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::ParentSessionId).eq(parent))
        .order_by(SessionIden::CreatedAt, Order::Asc)
        .order_by(SessionIden::Id, Order::Asc);
    crate::sql::rows_of_session(conn, &query, tenant, parent).await
}

/// How [`update_metadata`] changes a session's metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataUpdate {
    /// Replace the whole object.
    Replace(Map<String, Value>),
    /// Set these keys (top level), keep the others.
    Merge(Map<String, Value>),
}

/// Replaces or merges session `id`'s metadata and returns the session.
///
/// # Errors
/// [`Error::NotFound`] if `id` is not a session of `tenant`; [`Error::InvalidInput`] for
/// metadata PostgreSQL would refuse.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %id))]
pub async fn update_metadata(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    id: Uuid,
    update: &MetadataUpdate,
) -> Result<Session> {
    validate::tenant(tenant)?;
    let (map, merge) = match update {
        MetadataUpdate::Replace(map) => (map, false),
        MetadataUpdate::Merge(map) => (map, true),
    };
    let value = Value::Object(map.clone());
    validate::json("metadata", &value)?;
    let new_value = if merge {
        Expr::col(SessionIden::Metadata).binary(
            sea_query::BinOper::Custom("||"),
            Expr::val(value).cast_as(sea_query::Alias::new("jsonb")),
        )
    } else {
        Expr::val(value)
    };
    let mut query = sea_query::Query::update();
    query
        .table(SessionIden::Table)
        .value(SessionIden::Metadata, new_value)
        .value(SessionIden::UpdatedAt, Expr::current_timestamp())
        .and_where(Expr::col(SessionIden::TenantId).eq(tenant))
        .and_where(Expr::col(SessionIden::Id).eq(id))
        .returning(sea_query::Query::returning().columns(SessionIden::COLUMNS));
    let (sql, values) = crate::sql::built(&query);
    sqlx::query_as_with(sql, values)
        .fetch_optional(executor)
        .await?
        .ok_or(Error::NotFound(Entity::Session))
}

/// Deletes session `id` of `tenant` and everything below it (messages, compactions, archive,
/// child sessions); returns the deleted row.
///
/// # Errors
/// [`Error::NotFound`] if `id` is not a session of `tenant`.
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %id))]
pub async fn delete_session<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
    id: Uuid,
) -> Result<Session> {
    validate::tenant(tenant)?;
    let key = SessionKey {
        tenant_id: tenant,
        id,
    };
    let mut conn = conn.acquire().await?;
    let deleted = sessions::stmt::delete_by_pk(&key)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound(Entity::Session))?;
    // Its followers end with `Deleted` now rather than at their next poll.
    crate::follow::notify_committed(&mut conn, tenant, id).await;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts the statements sqlx runs (its `sqlx::query` events) on this thread.
    struct Statements(Arc<AtomicUsize>);

    impl tracing::Subscriber for Statements {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            metadata.target() == "sqlx::query"
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if event.metadata().target() == "sqlx::query" {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// 100,000 sessions over 10 tenants, each with its own `project`: a metadata-filtered page
    /// is one statement, and PostgreSQL answers it from the GIN index on the tenant and the
    /// metadata.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_metadata_filter_over_100k_sessions_is_one_statement_on_the_gin_index(
        pool: sqlx::PgPool,
    ) {
        sqlx::query(
            "INSERT INTO sessions (tenant_id, identifier, metadata)
             SELECT 'tenant-' || (i % 10), 's' || i,
                    jsonb_build_object('project', 'p' || (i / 10), 'kind', 'agent')
             FROM generate_series(1, 100000) AS i",
        )
        .execute(&pool)
        .await
        .unwrap();
        crate::test_support::vacuum_analyze(&pool, "sessions").await;
        let mut object = Map::new();
        object.insert("project".into(), Value::from("p4242"));
        let filter = SessionFilter::default().metadata(object);

        let count = Arc::new(AtomicUsize::new(0));
        let page = {
            let _guard = tracing::subscriber::set_default(Statements(count.clone()));
            // sqlx's call sites may have cached the interest of another test's thread when
            // they were registered at the same moment as this subscriber: ask them again.
            tracing::callsite::rebuild_interest_cache();
            list_sessions(
                &pool,
                "tenant-3",
                &filter,
                SessionOrder::RecentlyUpdated,
                None,
                50,
            )
            .await
            .unwrap()
        };
        assert_eq!(count.load(Ordering::SeqCst), 1, "one statement");
        assert_eq!(
            page.items
                .iter()
                .map(|s| s.identifier.as_str())
                .collect::<Vec<_>>(),
            vec!["s42423"]
        );

        for order in [SessionOrder::RecentlyUpdated, SessionOrder::NewestFirst] {
            let query = list_query("tenant-3", &filter, order, None, 51).unwrap();
            let (sql, values) = crate::sql::built(&query);
            let mut conn = pool.acquire().await.unwrap();
            let used = crate::test_support::indexes_read(
                &mut conn, "tenant-3", "sessions", &sql.0, values,
            )
            .await;
            assert!(
                used.iter().any(|i| i == "sessions_tenant_id_metadata_idx"),
                "{order:?}: the plan does not use the GIN index: {used:?}"
            );
        }
    }
}
