//! Tool pairs: a `tool_use` block and the `tool_result` that answers it must stay together —
//! model APIs refuse a history holding one without the other. The check reads the messages'
//! generated `tool_use_ids` / `tool_result_ids` columns (never their content), in one query.

use agentpg_schema::MessageIden;
use sea_query::{Alias, Expr, ExprTrait, Func, JoinType, PgFunc, Query, SelectStatement};
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

/// `SELECT tool_id …`: the first tool-use id whose `tool_use` and `tool_result` would end up on
/// different sides if the messages `removed` of the session were removed (none if no pair is
/// split).
pub(crate) fn first_split(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (tool_id, is_removed) = (Alias::new("tool_id"), Alias::new("removed"));
    let side = |ids: MessageIden| -> SelectStatement {
        Query::select()
            .expr_as(
                Func::cust("jsonb_array_elements_text").arg(Expr::col(ids)),
                tool_id.clone(),
            )
            .expr_as(
                Expr::col(MessageIden::Id).eq(PgFunc::any(Expr::val(removed.to_vec()))),
                is_removed.clone(),
            )
            .from(MessageIden::Table)
            .and_where(Expr::col(MessageIden::TenantId).eq(tenant))
            .and_where(Expr::col(MessageIden::SessionId).eq(session_id))
            .and_where(Expr::col(ids).ne(Expr::val(json!([]))))
            .to_owned()
    };
    let (uses, results) = (Alias::new("uses"), Alias::new("results"));
    Query::select()
        .column((uses.clone(), tool_id.clone()))
        .from_subquery(side(MessageIden::ToolUseIds), uses.clone())
        .join_subquery(
            JoinType::InnerJoin,
            side(MessageIden::ToolResultIds),
            results.clone(),
            Expr::col((uses.clone(), tool_id.clone()))
                .equals((results.clone(), tool_id.clone()))
                .and(
                    Expr::col((uses.clone(), is_removed.clone()))
                        .ne(Expr::col((results, is_removed))),
                ),
        )
        .limit(1)
        .to_owned()
}

/// The error for a split pair.
pub(crate) fn split_error(tool_id: &str) -> crate::Error {
    crate::Error::invalid(format!(
        "the messages would split tool use {tool_id:?} from its result; remove both or neither"
    ))
}
