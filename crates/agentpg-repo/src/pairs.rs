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
///    AND x.value = ANY (tool uses of the removed)
/// UNION ALL
/// SELECT x.value FROM messages k, jsonb_array_elements_text(k.tool_use_ids) x
///  WHERE k is the session's, not removed, and k.tool_use_ids ?| (results of the removed)
///    AND x.value = ANY (results of the removed)
/// LIMIT 1
/// ```
///
/// The removed messages' ids are read by primary key, and the other halves are found through
/// the partial GIN indexes on `tool_use_ids` / `tool_result_ids`: the cost follows the pairs the
/// removed messages hold, not the length of the session.
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
            .and_where(Expr::col((x.clone(), value.clone())).eq(sea_query::PgFunc::any(ids)));
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
