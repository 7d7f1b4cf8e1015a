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
/// sides if the messages `removed` of the session were removed (no row if no pair is split):
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
///
/// The removed messages' ids are read by primary key, and the other halves are found through
/// the partial GIN indexes on `tool_use_ids` / `tool_result_ids`: the cost follows the pairs the
/// removed messages hold, not the length of the session. Which of the session's conditions the
/// planner combines with the GIN index depends on the sizes of the id arrays and of the session,
/// so statements holding this check run with a plan made for their values
/// ([`sqlx::query::Query::persistent`]`(false)`): a cached generic plan, made without them, ANDed
/// the GIN bitmap with the session's whole position index (800 ms at 1M messages for a plan of
/// 100).
pub(crate) fn first_split(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (k, x, value) = (Alias::new("k"), Alias::new("x"), Alias::new("value"));
    let of_session = |q: &mut SelectStatement, alias: &Alias| {
        q.and_where(Expr::col((alias.clone(), MessageIden::TenantId)).eq(tenant))
            .and_where(Expr::col((alias.clone(), MessageIden::SessionId)).eq(session_id));
    };
    // The ids in `column` of the removed messages, as a text[] (empty when none).
    let ids_of_removed = |column: MessageIden| -> Expr {
        let (u, e) = (Alias::new("u"), Alias::new("e"));
        let mut q = Query::select();
        q.expr(Func::coalesce([
            Func::cust("array_agg")
                .arg(Expr::col((e.clone(), value.clone())))
                .into(),
            Expr::cust("'{}'::text[]"),
        ]))
        .from_as(MessageIden::Table, u.clone())
        .from_function(
            Func::cust("jsonb_array_elements_text").arg(Expr::col((u.clone(), column))),
            e,
        );
        of_session(&mut q, &u);
        q.and_where(crate::in_set((u.clone(), MessageIden::Id), removed))
            .and_where(Expr::col((u, column)).ne(Expr::val(json!([]))));
        Expr::from(q).cast_as(Alias::new("text[]"))
    };
    // Kept messages whose `column` holds one of `ids`, and the id they share.
    let other_half = |column: MessageIden, ids: Expr| -> SelectStatement {
        let mut q = Query::select();
        q.expr_as(Expr::col((x.clone(), value.clone())), Alias::new("tool_id"))
            .from_as(MessageIden::Table, k.clone())
            .from_function(
                Func::cust("jsonb_array_elements_text").arg(Expr::col((k.clone(), column))),
                x.clone(),
            );
        of_session(&mut q, &k);
        q.and_where(Expr::col((k.clone(), column)).ne(Expr::val(json!([]))))
            .and_where(Expr::col((k.clone(), column)).binary(BinOper::Custom("?|"), ids.clone()))
            .and_where(crate::in_set((k.clone(), MessageIden::Id), removed).not())
            .and_where(
                Expr::col((x.clone(), value.clone())).in_subquery(
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
             FROM sessions s, generate_series(0, 39) AS i WHERE s.identifier LIKE 'other-%';
             ANALYZE messages;",
        )
        .execute(&pool)
        .await
        .unwrap();
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
        // transaction's own index statistics show what the statement read.
        for run in 0..8 {
            let mut tx = pool.begin().await.unwrap();
            let query = first_split("t", session, &oldest);
            let (sql, values) = crate::built(&query);
            let split: Option<String> = sqlx::query_scalar_with(sql, values)
                .persistent(false)
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
            assert_eq!(
                split, None,
                "the other sessions' results are not this session's"
            );
            let scans: Vec<(String, i64)> = sqlx::query_as(
                "SELECT i.relname::text, pg_stat_get_xact_numscans(i.oid)
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                 WHERE x.indrelid = 'messages'::regclass AND pg_stat_get_xact_numscans(i.oid) > 0
                 ORDER BY 1",
            )
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            let used: Vec<&str> = scans.iter().map(|(name, _)| name.as_str()).collect();
            assert!(
                used.contains(&"messages_tool_result_ids_idx"),
                "run {run}: the results are found through the GIN index: {scans:?}"
            );
            assert!(
                !used.contains(&"messages_session_position_key"),
                "run {run}: the pair check read the session's position index: {scans:?}"
            );
            tx.rollback().await.unwrap();
        }
    }
}
