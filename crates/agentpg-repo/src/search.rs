//! Full-text search over what a tenant's messages say, live and archived (migration 008).

use agentpg_schema::{
    Message, MessageArchive, MessageArchiveIden, MessageIden, MessageRole, SessionIden,
};
use chrono::{DateTime, Utc};
use sea_query::extension::postgres::PgExpr;
use sea_query::{
    Alias, Asterisk, Cond, Expr, ExprTrait, Func, Order, Query, SelectStatement, UnionType,
};
use serde_json::{Map, Value};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::sessions::{page_limit, Page};
use crate::validate;

/// Whether a search also covers the messages compactions removed (kept whole in the archive
/// until retention finalizes their compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Archived {
    /// Only the messages sessions hold now.
    #[default]
    Exclude,
    /// Also the archived ones.
    Include,
}

/// What [`search_messages`] looks for, and where. The filters compose (every one given must
/// hold).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageSearch {
    /// The search, in web search syntax: words (all must match, stemmed: "refunds" finds
    /// "refund"), `"a quoted phrase"`, `or`, `-excluded`. Any text is a valid search; one with no
    /// searchable word (only stop words or punctuation) finds nothing.
    pub text: String,
    /// Only messages of these sessions (`None`: every session of the tenant).
    pub sessions: Option<Vec<Uuid>>,
    /// Only messages of sessions whose metadata contains this object (`@>`).
    pub session_metadata: Option<Map<String, Value>>,
    /// Only messages of these roles (`None`: any).
    pub roles: Option<Vec<MessageRole>>,
    /// Only messages created at or after this instant.
    pub created_from: Option<DateTime<Utc>>,
    /// Only messages created before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Whether archived (compacted) messages are searched too.
    pub archived: Archived,
}

impl MessageSearch {
    /// A search for `text` over the tenant's live messages.
    pub fn new(text: impl Into<String>) -> Self {
        MessageSearch {
            text: text.into(),
            ..MessageSearch::default()
        }
    }
}

/// Where a hit was found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Both variants are rows a caller reads whole; boxing the larger would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Found {
    /// A message a session holds: the row as it is.
    Live(Message),
    /// A message a compaction removed: its archive row (the message whole in
    /// `original_message`, and the compaction that removed it in `compaction_event_id`;
    /// [`archived_messages`](crate::archived_messages) reads them as messages).
    Archived(MessageArchive),
}

/// One message that matches a search.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchHit {
    /// The session the message is (or was) in.
    pub session_id: Uuid,
    /// The message's id.
    pub message_id: Uuid,
    /// How well it matches (`ts_rank`: higher is better; hits come best first).
    pub rank: f32,
    /// The words around the matches, each match between `<<` and `>>`.
    pub snippet: String,
    /// The message, or its archive row.
    pub found: Found,
}

/// Where the next page of a search starts: after the hit of this rank and id. Hits come by
/// rank, best first, then by id: an order every hit keeps while messages are appended,
/// compacted or restored (a message's rank depends only on its content and the search), so
/// every hit that exists when paging starts is returned exactly once. A message appended
/// meanwhile is returned if it ranks after the cursor.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchCursor {
    rank: f32,
    id: Uuid,
}

/// A row of the page statement: id, session, archived, rank, the row as JSON, the snippet.
type HitRow = (Uuid, Uuid, bool, f32, Option<Value>, Option<String>);

/// The longest search text accepted, in bytes.
pub const MAX_SEARCH_TEXT: usize = 4_096;

// Names the statement gives what it computes (none is a column's).
const HITS: &str = "hits";
const ID: &str = "hit_id";
const SESSION: &str = "hit_session";
const RANK: &str = "rank";
const ARCHIVED: &str = "archived";
const ROW: &str = "row";
const SNIPPET: &str = "snippet";

fn check(search: &MessageSearch) -> Result<()> {
    validate::text("text", &search.text)?;
    validate::bounded("text", &search.text, MAX_SEARCH_TEXT)?;
    if let Some(metadata) = &search.session_metadata {
        validate::json_object("session_metadata", &Value::Object(metadata.clone()))?;
    }
    if let (Some(from), Some(before)) = (search.created_from, search.created_before) {
        if from >= before {
            return Err(Error::invalid(format!(
                "the time range is empty: created_from {from} is not before created_before {before}"
            )));
        }
    }
    Ok(())
}

/// `agentpg_search_query($text)`: the search, parsed as migration 008 defines.
fn query(text: &str) -> Expr {
    Func::cust("agentpg_search_query").arg(text).into()
}

/// The live or archived half of the hits: ids, sessions and ranks of the matching rows, best
/// first, after the cursor.
fn half(
    tenant: &str,
    search: &MessageSearch,
    after: Option<&SearchCursor>,
    limit: u64,
    archived: bool,
) -> SelectStatement {
    let t = Alias::new("t");
    let (table, id, tenant_col, session, document) = if archived {
        (
            MessageArchiveIden::Table.name(),
            MessageArchiveIden::Id.name(),
            MessageArchiveIden::TenantId.name(),
            MessageArchiveIden::SessionId.name(),
            MessageArchiveIden::SearchDocument.name(),
        )
    } else {
        (
            MessageIden::Table.name(),
            MessageIden::Id.name(),
            MessageIden::TenantId.name(),
            MessageIden::SessionId.name(),
            MessageIden::SearchDocument.name(),
        )
    };
    let col = |name: &str| Expr::col((t.clone(), Alias::new(name)));
    // A message's own column: the live row's, or the archived row's JSON value under the
    // column's name, as text.
    let message_field = |name: &str| -> Expr {
        if archived {
            Expr::col((t.clone(), MessageArchiveIden::OriginalMessage)).cast_json_field(name)
        } else {
            col(name)
        }
    };
    let rank: Expr = Func::cust("ts_rank")
        .arg(col(document))
        .arg(query(&search.text))
        .into();
    let mut q = Query::select();
    q.expr_as(col(id), Alias::new(ID))
        .expr_as(col(session), Alias::new(SESSION))
        .expr_as(Expr::val(archived), Alias::new(ARCHIVED))
        .expr_as(rank.clone(), Alias::new(RANK))
        .from_as(Alias::new(table), t.clone())
        .and_where(col(tenant_col).eq(tenant))
        .and_where(col(document).matches(query(&search.text)));
    if let Some(sessions) = &search.sessions {
        q.and_where(crate::sql::in_set(
            (t.clone(), Alias::new(session)),
            sessions,
        ));
    }
    if let Some(metadata) = &search.session_metadata {
        q.and_where(Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(SessionIden::Table)
                .and_where(Expr::col((SessionIden::Table, SessionIden::TenantId)).eq(tenant))
                .and_where(
                    Expr::col((SessionIden::Table, SessionIden::Id))
                        .equals((t.clone(), Alias::new(session))),
                )
                .and_where(
                    Expr::col((SessionIden::Table, SessionIden::Metadata))
                        .contains(Expr::val(Value::Object(metadata.clone()))),
                )
                .to_owned(),
        ));
    }
    if let Some(roles) = &search.roles {
        let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
        q.and_where(message_field(MessageIden::Role.name()).is_in(roles));
    }
    let created = || -> Expr {
        let field = message_field(MessageIden::CreatedAt.name());
        if archived {
            field.cast_as(Alias::new("timestamptz"))
        } else {
            field
        }
    };
    if let Some(from) = search.created_from {
        q.and_where(created().gte(from));
    }
    if let Some(before) = search.created_before {
        q.and_where(created().lt(before));
    }
    if let Some(after) = after {
        q.cond_where(
            Cond::any().add(rank.clone().lt(after.rank)).add(
                Cond::all()
                    .add(rank.clone().eq(after.rank))
                    .add(col(id).gt(after.id)),
            ),
        );
    }
    q.order_by_expr(rank, Order::Desc)
        .order_by_expr(col(id), Order::Asc)
        .limit(limit);
    q
}

/// Searches the messages of `tenant` for `search`: one page of at most `limit` hits, best
/// first, after `after` (a page's `next`). One statement per page: each half (live messages,
/// and with [`Archived::Include`] the archive) is a scan of its search document's index
/// (`(tenant_id, search_document)`, GIN) ranked and cut to the page, and the page reads the
/// hits' rows whole and their snippets.
///
/// What a message says is its text blocks, the strings of its tool_use inputs, and its
/// tool_result texts; migration 008 defines it, with the text-search configuration
/// (`english`).
///
/// # Errors
/// [`Error::InvalidInput`] for a `limit` of 0 or above [`MAX_PAGE`](crate::MAX_PAGE), a text
/// longer than [`MAX_SEARCH_TEXT`] bytes or holding NUL, metadata that is not storable JSON, or
/// an empty time range; [`Error::Schema`] if migration 008 has not run.
#[tracing::instrument(skip_all, fields(tenant = %tenant, limit = limit, hits = tracing::field::Empty))]
pub async fn search_messages(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    search: &MessageSearch,
    after: Option<&SearchCursor>,
    limit: u64,
) -> Result<Page<SearchHit, SearchCursor>> {
    validate::tenant(tenant)?;
    check(search)?;
    let limit = page_limit(limit)?;
    let (sql, values) = crate::sql::built(&statement(tenant, search, after, limit));
    let rows: Vec<HitRow> = sqlx::query_as_with(sql, values).fetch_all(executor).await?;
    page(rows, limit)
}

/// The statement of one page: `limit + 1` hits (one more than the page, to know whether
/// another follows).
fn statement(
    tenant: &str,
    search: &MessageSearch,
    after: Option<&SearchCursor>,
    limit: u64,
) -> SelectStatement {
    let fetch = limit + 1;
    let mut hits = half(tenant, search, after, fetch, false);
    if search.archived == Archived::Include {
        let mut union = Query::select();
        union
            .column(Asterisk)
            .from_subquery(hits, Alias::new("live"))
            .union(
                UnionType::All,
                Query::select()
                    .column(Asterisk)
                    .from_subquery(half(tenant, search, after, fetch, true), Alias::new("old"))
                    .to_owned(),
            );
        let mut ranked = Query::select();
        ranked
            .column(Asterisk)
            .from_subquery(union, Alias::new("u"))
            .order_by(Alias::new(RANK), Order::Desc)
            .order_by(Alias::new(ID), Order::Asc)
            .limit(fetch);
        hits = ranked;
    }
    let h = Alias::new(HITS);
    let hit = |name: &str| Expr::col((h.clone(), Alias::new(name)));
    // The hit's row, whole, as JSON: the live message, or its archive row.
    let row_of = |table: Alias, tenant_col: &str, id_col: &str, search: &[&str]| -> Expr {
        Expr::from(
            Query::select()
                .expr(crate::sql::row_json(table.clone(), search))
                .from(table.clone())
                .and_where(Expr::col((table.clone(), Alias::new(tenant_col))).eq(tenant))
                .and_where(
                    Expr::col((table, Alias::new(id_col))).equals((h.clone(), Alias::new(ID))),
                )
                .to_owned(),
        )
    };
    let live = row_of(
        Alias::new(MessageIden::Table.name()),
        MessageIden::TenantId.name(),
        MessageIden::Id.name(),
        &MessageIden::SEARCH.map(MessageIden::name),
    );
    let old = row_of(
        Alias::new(MessageArchiveIden::Table.name()),
        MessageArchiveIden::TenantId.name(),
        MessageArchiveIden::Id.name(),
        &MessageArchiveIden::SEARCH.map(MessageArchiveIden::name),
    );
    let mut page = Query::select();
    page.column((h.clone(), Alias::new(ID)))
        .column((h.clone(), Alias::new(SESSION)))
        .column((h.clone(), Alias::new(ARCHIVED)))
        .column((h.clone(), Alias::new(RANK)))
        .expr_as(
            Expr::case(hit(ARCHIVED), old).finally(live),
            Alias::new(ROW),
        )
        .from_subquery(hits, h.clone());
    // The snippet, over the content of the row the page read.
    let r = Alias::new("r");
    let read = |name: &str| Expr::col((r.clone(), Alias::new(name)));
    let content = Expr::case(
        read(ARCHIVED),
        read(ROW)
            .get_json_field(MessageArchiveIden::OriginalMessage.name())
            .get_json_field(MessageIden::Content.name()),
    )
    .finally(read(ROW).get_json_field(MessageIden::Content.name()));
    let mut outer = Query::select();
    outer
        .columns([ID, SESSION, ARCHIVED, RANK, ROW].map(|c| (r.clone(), Alias::new(c))))
        .expr_as(
            Func::cust("agentpg_search_snippet")
                .arg(content)
                .arg(query(&search.text)),
            Alias::new(SNIPPET),
        )
        .from_subquery(page, r.clone())
        .order_by((r.clone(), Alias::new(RANK)), Order::Desc)
        .order_by((r.clone(), Alias::new(ID)), Order::Asc);
    outer
}

/// The page of the statement's rows.
fn page(rows: Vec<HitRow>, limit: u64) -> Result<Page<SearchHit, SearchCursor>> {
    let more = rows.len() as u64 > limit;
    let mut items = Vec::with_capacity(rows.len());
    for (message_id, session_id, archived, rank, row, snippet) in
        rows.into_iter().take(limit as usize)
    {
        // The row is read in the statement that found it: it is there.
        let row =
            row.ok_or_else(|| Error::Database(agentpg_schema::generated::null_column(ROW)))?;
        let found = if archived {
            Found::Archived(decode(row, MessageArchiveIden::Table.name())?)
        } else {
            Found::Live(decode(row, MessageIden::Table.name())?)
        };
        items.push(SearchHit {
            session_id,
            message_id,
            rank,
            snippet: snippet.unwrap_or_default(),
            found,
        });
    }
    tracing::Span::current().record("hits", items.len());
    let next = match (more, items.last()) {
        (true, Some(last)) => Some(SearchCursor {
            rank: last.rank,
            id: last.message_id,
        }),
        _ => None,
    };
    Ok(Page { items, next })
}

/// A row read as JSON (`to_jsonb`), as its row type; a row that does not decode is an error.
fn decode<T: serde::de::DeserializeOwned>(row: Value, table: &str) -> Result<T> {
    crate::sql::from_json(row, ROW, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200,000 messages over 10 tenants and 2,000 sessions, and an archive of the same size: a
    /// page of a rare word is answered from the search documents' GIN indexes (the live one, and
    /// the archive's when archived messages are searched).
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_search_page_is_one_statement_on_the_gin_indexes(pool: sqlx::PgPool) {
        sqlx::raw_sql(
            "INSERT INTO sessions (tenant_id, id, identifier)
             SELECT 'tenant-' || (i % 10), md5('s' || i)::uuid, 's' || i FROM generate_series(1, 2000) AS i;
             INSERT INTO messages (tenant_id, session_id, role, content)
             SELECT 'tenant-' || (s % 10), md5('s' || s)::uuid, 'user',
                    jsonb_build_array(jsonb_build_object('type', 'text', 'text',
                        'message ' || i || ' about shipping and returns'
                        || CASE WHEN i % 5000 = 0 THEN ' kumquat' ELSE '' END))
             FROM generate_series(1, 200000) AS i, LATERAL (SELECT 1 + (i % 2000) AS s) AS x;
             -- An archive of the same size (a compaction per session; the rows stay live too,
             -- which no plan cares about).
             INSERT INTO compaction_events (tenant_id, id, session_id, strategy, original_tokens,
                                            compacted_tokens, messages_removed)
             SELECT tenant_id, md5('e' || id)::uuid, id, 'test', 0, 0, 0 FROM sessions;
             INSERT INTO message_archive (id, tenant_id, compaction_event_id, session_id, original_message)
             SELECT id, tenant_id, md5('e' || session_id)::uuid, session_id, to_jsonb(m) - 'search_document'
             FROM messages AS m;",
        )
        .execute(&pool)
        .await
        .unwrap();
        crate::test_support::vacuum_analyze(&pool, "messages").await;
        crate::test_support::vacuum_analyze(&pool, "message_archive").await;
        let tenant = "tenant-1";
        let page = search_messages(&pool, tenant, &MessageSearch::new("kumquat"), None, 20)
            .await
            .unwrap();
        assert!(!page.items.is_empty());
        for archived in [Archived::Exclude, Archived::Include] {
            let search = MessageSearch {
                archived,
                ..MessageSearch::new("kumquat")
            };
            let (sql, values) = crate::sql::built(&statement(tenant, &search, None, 20));
            let mut conn = pool.acquire().await.unwrap();
            let used =
                crate::test_support::indexes_read(&mut conn, tenant, "messages", &sql.0, values)
                    .await;
            assert!(
                used.iter().any(|i| i == "messages_search_idx"),
                "{archived:?}: the plan does not use the search index: {used:?}"
            );
            if archived == Archived::Include {
                let (sql, values) = crate::sql::built(&statement(tenant, &search, None, 20));
                let used = crate::test_support::indexes_read(
                    &mut conn,
                    tenant,
                    "message_archive",
                    &sql.0,
                    values,
                )
                .await;
                assert!(
                    used.iter().any(|i| i == "message_archive_search_idx"),
                    "the archive half does not use its search index: {used:?}"
                );
            }
        }
    }
}
