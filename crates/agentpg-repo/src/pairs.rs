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
/// SELECT r.value FROM messages m, jsonb_array_elements_text(m.tool_result_ids) r
///  WHERE m is the session's and holds results
///    AND (m removed AND (tool uses of kept messages) ? r.value
///      OR m kept AND (tool uses of removed messages) ? r.value)
///  LIMIT 1
/// ```
///
/// Each set of tool uses is gathered once (an uncorrelated subquery) into the keys of a JSON
/// object and looked up by key; membership in the removed messages is hashed: one pass over the
/// session's messages, whatever the number of pairs.
pub(crate) fn first_split(tenant: &str, session_id: Uuid, removed: &[Uuid]) -> SelectStatement {
    let (m, r, value) = (Alias::new("m"), Alias::new("r"), Alias::new("value"));
    let of_session = |q: &mut SelectStatement, alias: &Alias| {
        q.and_where(Expr::col((alias.clone(), MessageIden::TenantId)).eq(tenant))
            .and_where(Expr::col((alias.clone(), MessageIden::SessionId)).eq(session_id));
    };
    // The tool-use ids of the removed (or the kept) messages, as the keys of a JSON object:
    // gathered once, then looked up by key (a jsonb object's keys are sorted).
    let uses = |of_removed: bool| -> Expr {
        let (u, e) = (Alias::new("u"), Alias::new("e"));
        let mut q = Query::select();
        q.expr(
            Func::cust("jsonb_object_agg")
                .arg(Expr::col((e.clone(), value.clone())))
                .arg(Expr::val(true)),
        )
        .from_as(MessageIden::Table, u.clone())
        .from_function(
            Func::cust("jsonb_array_elements_text")
                .arg(Expr::col((u.clone(), MessageIden::ToolUseIds))),
            e,
        );
        of_session(&mut q, &u);
        q.and_where(Expr::col((u.clone(), MessageIden::ToolUseIds)).ne(Expr::val(json!([]))));
        let member = crate::in_set((u, MessageIden::Id), removed);
        q.and_where(if of_removed { member } else { member.not() });
        Expr::from(q)
    };
    let used_in = |uses: Expr, id: Expr| uses.binary(BinOper::Custom("?"), id);
    let m_removed = crate::in_set((m.clone(), MessageIden::Id), removed);
    let result = || Expr::col((r.clone(), value.clone()));
    let mut q = Query::select();
    q.expr_as(result(), Alias::new("tool_id"))
        .from_as(MessageIden::Table, m.clone())
        .from_function(
            Func::cust("jsonb_array_elements_text")
                .arg(Expr::col((m.clone(), MessageIden::ToolResultIds))),
            r.clone(),
        );
    of_session(&mut q, &m);
    q.and_where(Expr::col((m.clone(), MessageIden::ToolResultIds)).ne(Expr::val(json!([]))))
        .and_where(
            m_removed
                .clone()
                .and(used_in(uses(false), result()))
                .or(m_removed.not().and(used_in(uses(true), result()))),
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
