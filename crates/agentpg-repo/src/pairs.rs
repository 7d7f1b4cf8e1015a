//! Tool pairs: a `tool_use` block and the `tool_result` that answers it must stay together —
//! model APIs refuse a history holding one without the other. The check reads the messages'
//! generated `tool_use_ids` / `tool_result_ids` columns (never their content), in one query.

use agentpg_schema::MessageIden;
use sea_query::{Alias, BinOper, Expr, ExprTrait, Func, Query, SelectStatement};
use serde_json::json;
use uuid::Uuid;

/// Whether an operation that removes messages may leave half of a tool pair behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolPairs {
    /// Refuse to remove a tool use without its result, or a result without its tool use.
    #[default]
    Keep,
    /// Remove what was asked, even if that splits a pair.
    AllowSplit,
}

/// `SELECT …`: a tool-use id whose `tool_use` and `tool_result` would end up on different
/// sides if the messages `removed` of the session were removed (no row if no pair is split).
///
/// Up to [`INDEX_LOOKUP_MAX`] removed messages, the cost follows the pairs they hold, not the
/// length of the session ([`split_by_index`]); above it, one pass over the session's messages
/// that hold tool results ([`split_by_scan`]). Which of the session's conditions the planner
/// combines with the GIN index depends on the sizes of the id arrays and of the session, so
/// statements holding this check run with a plan made for their values
/// ([`sqlx::query::Query::persistent`]`(false)`): a cached generic plan, made without them,
/// ANDed the GIN bitmap with the session's whole position index (800 ms at 1M messages for a
/// plan of 100).
pub(crate) fn first_split(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    if removed.len() <= INDEX_LOOKUP_MAX {
        split_by_index(tenant, session_id, removed)
    } else {
        split_by_scan(tenant, session_id, removed)
    }
}

/// [`first_split`] for a few removed messages: their tool ids read by primary key, the other
/// halves found through the partial GIN indexes on `tool_use_ids` / `tool_result_ids`:
///
/// ```text
/// SELECT x.value FROM messages k, jsonb_array_elements_text(k.tool_result_ids) x
///  WHERE k is the session's, not removed, and k.tool_result_ids ?| (tool uses of the removed)
///    AND x.value IN (SELECT unnest(tool uses of the removed))
/// UNION ALL
/// SELECT x.value FROM messages k, jsonb_array_elements_text(k.tool_use_ids) x
///  WHERE k is the session's, not removed, and k.tool_use_ids ?| (results of the removed)
///    AND x.value IN (SELECT unnest(results of the removed))
/// LIMIT 1
/// ```
fn split_by_index(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (k, x, u, e) = (
        Alias::new("k"),
        Alias::new("x"),
        Alias::new("u"),
        Alias::new("e"),
    );
    // The ids in `column` of the removed messages, as a text[] (empty when none).
    let ids_of_removed = |column: MessageIden| -> Expr {
        let mut q = ids_in(tenant, session_id, column, &u, &e);
        q.expr(Func::coalesce([
            Func::cust("array_agg").arg(element(&e)).into(),
            Expr::cust("'{}'::text[]"),
        ]))
        .and_where(crate::sql::in_set((u.clone(), MessageIden::Id), removed));
        Expr::from(q).cast_as(Alias::new("text[]"))
    };
    // Kept messages whose `column` holds one of `ids`, and the id they share.
    let other_half = |column: MessageIden, ids: Expr| -> SelectStatement {
        let mut q = ids_in(tenant, session_id, column, &k, &x);
        q.expr_as(element(&x), Alias::new("tool_id"))
            .and_where(Expr::col((k.clone(), column)).binary(BinOper::Custom("?|"), ids.clone()))
            .and_where(crate::sql::in_set((k.clone(), MessageIden::Id), removed).not())
            .and_where(
                element(&x).in_subquery(
                    Query::select()
                        .expr(Func::cust("unnest").arg(ids))
                        .to_owned(),
                ),
            );
        q
    };
    let mut q = other_half(
        MessageIden::ToolResultIds,
        ids_of_removed(MessageIden::ToolUseIds),
    );
    q.union(
        sea_query::UnionType::All,
        other_half(
            MessageIden::ToolUseIds,
            ids_of_removed(MessageIden::ToolResultIds),
        ),
    )
    .limit(1);
    q
}

/// [`first_split`] for many removed messages, in one pass over the session's messages that hold
/// tool results:
///
/// ```text
/// SELECT r.value FROM messages m, jsonb_array_elements_text(m.tool_result_ids) r
///  WHERE m is the session's and holds results
///    AND (m removed AND (tool uses of kept messages) ? r.value
///      OR m kept AND (tool uses of removed messages) ? r.value)
///  LIMIT 1
/// ```
///
/// Each set of tool uses is gathered once (an uncorrelated subquery) into the keys of a JSON
/// object and looked up by key; membership in the removed messages is hashed.
fn split_by_scan(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (m, r, u, e) = (
        Alias::new("m"),
        Alias::new("r"),
        Alias::new("u"),
        Alias::new("e"),
    );
    // The tool-use ids of the removed (or the kept) messages, as the keys of a JSON object:
    // gathered once, then looked up by key (a jsonb object's keys are sorted).
    let uses = |of_removed: bool| -> Expr {
        let mut q = ids_in(tenant, session_id, MessageIden::ToolUseIds, &u, &e);
        let member = crate::sql::in_set((u.clone(), MessageIden::Id), removed);
        q.expr(
            Func::cust("jsonb_object_agg")
                .arg(element(&e))
                .arg(Expr::val(true)),
        )
        .and_where(if of_removed { member } else { member.not() });
        Expr::from(q)
    };
    let used_in = |uses: Expr, id: Expr| uses.binary(BinOper::Custom("?"), id);
    let m_removed = crate::sql::in_set((m.clone(), MessageIden::Id), removed);
    let mut q = ids_in(tenant, session_id, MessageIden::ToolResultIds, &m, &r);
    q.expr_as(element(&r), Alias::new("tool_id"))
        .and_where(
            m_removed
                .clone()
                .and(used_in(uses(false), element(&r)))
                .or(m_removed.not().and(used_in(uses(true), element(&r)))),
        )
        .limit(1);
    q
}

/// `SELECT … FROM messages AS row, jsonb_array_elements_text(row.column) AS element WHERE row is
/// a message of the session holding ids in column`: one row per id (`element.value`), to which
/// the caller adds its output and conditions.
fn ids_in(
    tenant: &str,
    session_id: Uuid,
    column: MessageIden,
    row: &Alias,
    element: &Alias,
) -> SelectStatement {
    let mut q = Query::select();
    q.from_as(MessageIden::Table, row.clone())
        .from_function(
            Func::cust("jsonb_array_elements_text").arg(Expr::col((row.clone(), column))),
            element.clone(),
        )
        .and_where(Expr::col((row.clone(), MessageIden::TenantId)).eq(tenant))
        .and_where(Expr::col((row.clone(), MessageIden::SessionId)).eq(session_id))
        .and_where(Expr::col((row.clone(), column)).ne(Expr::val(json!([]))));
    q
}

/// `SELECT …`: a tool-use id that one of the messages `removed` of the session calls and that
/// no message of the session answers yet (the tool is still running), if there is one: removing
/// the call would leave its result, when it arrives, answering nothing.
///
/// ```text
/// SELECT e.value FROM messages u, jsonb_array_elements_text(u.tool_use_ids) e
///  WHERE u is the session's, holds tool uses, and is removed
///    AND NOT EXISTS (a message of the session whose tool_result_ids ? e.value)
/// LIMIT 1
/// ```
///
/// Each call is looked up in the partial GIN index on `tool_result_ids` (one key, `?`): the
/// cost follows the calls the removed messages hold, not the session's length.
pub(crate) fn first_pending(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (u, e, r) = (Alias::new("u"), Alias::new("e"), Alias::new("r"));
    let mut answered = Query::select();
    answered
        .expr(Expr::val(1))
        .from_as(MessageIden::Table, r.clone())
        .and_where(Expr::col((r.clone(), MessageIden::TenantId)).eq(tenant))
        .and_where(Expr::col((r.clone(), MessageIden::SessionId)).eq(session_id))
        .and_where(Expr::col((r.clone(), MessageIden::ToolResultIds)).ne(Expr::val(json!([]))))
        .and_where(
            Expr::col((r, MessageIden::ToolResultIds)).binary(BinOper::Custom("?"), element(&e)),
        );
    let mut q = ids_in(tenant, session_id, MessageIden::ToolUseIds, &u, &e);
    q.expr_as(element(&e), Alias::new("tool_id"))
        .and_where(crate::sql::in_set((u, MessageIden::Id), removed))
        .and_where(Expr::exists(answered).not())
        .limit(1);
    q
}

/// The error for a pending tool call a removal would take away.
pub(crate) fn pending_error(tool_id: &str, opt_out: &str) -> crate::Error {
    crate::Error::invalid(format!(
        "tool use {tool_id:?} has no result yet (the tool is still running): removing it would leave its result answering nothing; remove it once its result is in, or pass {opt_out}"
    ))
}

/// A check that finds no split: the `tool_id` column of [`first_split`], and no row.
pub(crate) fn no_split() -> SelectStatement {
    Query::select()
        .expr_as(Expr::cust("NULL::text"), Alias::new("tool_id"))
        .and_where(Expr::val(false))
        .to_owned()
}

/// The id an [`ids_in`] row stands for.
fn element(element: &Alias) -> Expr {
    Expr::col((element.clone(), Alias::new("value")))
}

/// Up to this many removed messages, the other halves of their pairs are looked up through the
/// GIN indexes (`?|`); above it, the session's messages that hold tool ids are read and matched
/// by hash. GIN evaluates `?|` for each message it finds against every id of the array, so its
/// cost grows with the number of ids times the messages holding them (quadratic: 2.6 s for the
/// 4,500 ids of 9,000 removed messages, where the read of the session's holders takes
/// milliseconds); below this bound that product stays small, and a small cut of a long session
/// costs what the cut holds.
pub(crate) const INDEX_LOOKUP_MAX: usize = 256;

/// The error for a split pair.
pub(crate) fn split_error(tool_id: &str) -> crate::Error {
    crate::Error::invalid(format!(
        "the messages would split tool use {tool_id:?} from its result; remove both or neither"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long session whose oldest messages call tools, beside other sessions holding results
    /// for the same tool ids (ids repeated across sessions, the worst case for the index): the
    /// pair check reads the messages holding those ids through the GIN index, and never the
    /// session's position index (which would cost the whole session's length).
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn the_pair_check_does_not_scan_the_session(pool: sqlx::PgPool) {
        sqlx::raw_sql(
            "INSERT INTO sessions (tenant_id, id, identifier)
             VALUES ('t', '11111111-1111-1111-1111-111111111111', 'long');
             INSERT INTO messages (tenant_id, session_id, role, content)
             SELECT 't', '11111111-1111-1111-1111-111111111111', 'assistant',
                    CASE WHEN i % 3 = 0
                         THEN jsonb_build_array(jsonb_build_object(
                                'type', 'tool_use', 'id', 'call_' || i, 'name', 'f', 'input', '{}'::jsonb))
                         ELSE jsonb_build_array(jsonb_build_object('type', 'text', 'text', 'm' || i)) END
             FROM generate_series(0, 49999) AS i ORDER BY i;
             INSERT INTO sessions (tenant_id, identifier)
             SELECT 't', 'other-' || g FROM generate_series(1, 500) AS g;
             INSERT INTO messages (tenant_id, session_id, role, content)
             SELECT 't', s.id, 'user',
                    jsonb_build_array(jsonb_build_object(
                      'type', 'tool_result', 'tool_use_id', 'call_' || (i * 3), 'content', 'r'))
             FROM sessions s, generate_series(0, 39) AS i WHERE s.identifier LIKE 'other-%';",
        )
        .execute(&pool)
        .await
        .unwrap();
        crate::test_support::vacuum_analyze(&pool, "messages").await;
        let session: Uuid = "11111111-1111-1111-1111-111111111111".parse().unwrap();
        let oldest: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE session_id = $1 ORDER BY position LIMIT 100",
        )
        .bind(session)
        .fetch_all(&pool)
        .await
        .unwrap();

        // Run as the repo runs it (unprepared, so planned for its values), more than the five
        // times after which PostgreSQL would switch a prepared statement to a generic plan; the
        // plan of each run, as it ran, shows what the statement read.
        for run in 0..8 {
            let mut conn = pool.acquire().await.unwrap();
            let query = first_split("t", session, &oldest);
            let (sql, values) = crate::sql::built(&query);
            let split: Option<String> =
                sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql.0.clone()), values.clone())
                    .persistent(false)
                    .fetch_optional(&mut *conn)
                    .await
                    .unwrap();
            assert_eq!(
                split, None,
                "the other sessions' results are not this session's"
            );
            let used =
                crate::test_support::indexes_read(&mut conn, "t", "messages", &sql.0, values).await;
            assert!(
                used.iter().any(|i| i == "messages_tool_result_ids_idx"),
                "run {run}: the results are found through the GIN index: {used:?}"
            );
            assert!(
                !used.iter().any(|i| i == "messages_session_position_key"),
                "run {run}: the pair check read the session's position index: {used:?}"
            );
        }
    }

    /// Both ways of checking (a few removed messages through the index, many in one pass over
    /// the session) find the same splits, in both directions.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn both_checks_find_a_split_in_either_direction(pool: sqlx::PgPool) {
        // Message 2n calls tool call_n, message 2n+1 answers it.
        sqlx::raw_sql(
            "INSERT INTO sessions (tenant_id, id, identifier)
             VALUES ('t', '22222222-2222-2222-2222-222222222222', 'pairs');
             INSERT INTO messages (tenant_id, session_id, role, content)
             SELECT 't', '22222222-2222-2222-2222-222222222222',
                    CASE WHEN i % 2 = 0 THEN 'assistant' ELSE 'user' END,
                    CASE WHEN i % 2 = 0
                         THEN jsonb_build_array(jsonb_build_object(
                                'type', 'tool_use', 'id', 'call_' || (i / 2), 'name', 'f', 'input', '{}'::jsonb))
                         ELSE jsonb_build_array(jsonb_build_object(
                                'type', 'tool_result', 'tool_use_id', 'call_' || (i / 2), 'content', 'r')) END
             FROM generate_series(0, 1199) AS i ORDER BY i;
             ANALYZE messages;",
        )
        .execute(&pool)
        .await
        .unwrap();
        let session: Uuid = "22222222-2222-2222-2222-222222222222".parse().unwrap();
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM messages WHERE session_id = $1 ORDER BY position")
                .bind(session)
                .fetch_all(&pool)
                .await
                .unwrap();
        let split = |removed: Vec<Uuid>| {
            let pool = pool.clone();
            async move {
                let (sql, values) = crate::sql::built(&first_split("t", session, &removed));
                sqlx::query_scalar_with::<_, String, _>(sql, values)
                    .persistent(false)
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
            }
        };
        let oldest = |n: usize| ids[..n].to_vec();
        let odd_up_to = |n: usize| {
            ids[..n]
                .iter()
                .skip(1)
                .step_by(2)
                .copied()
                .collect::<Vec<_>>()
        };
        for (n, by) in [(5, "index"), (401, "scan")] {
            assert!(n <= INDEX_LOOKUP_MAX || by == "scan");
            // The oldest n end on a tool use whose result stays.
            assert_eq!(
                split(oldest(n)).await.as_deref(),
                Some(format!("call_{}", n / 2).as_str()),
                "{by}"
            );
            assert_eq!(split(oldest(n + 1)).await, None, "{by}");
        }
        // Results removed, their tool uses kept.
        assert_eq!(
            split(odd_up_to(4)).await.as_deref(),
            Some("call_0"),
            "index"
        );
        let many = odd_up_to(1000);
        assert!(many.len() > INDEX_LOOKUP_MAX);
        assert!(split(many).await.is_some(), "scan");
        assert_eq!(
            split(ids.clone()).await,
            None,
            "everything removed splits nothing"
        );
    }
}
