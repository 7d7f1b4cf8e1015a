//! The compaction planner: which messages a compaction should remove so that a session fits a
//! token target, never touching what the policy protects and never separating a tool use from
//! its result.

use std::collections::HashMap;

use agentpg_schema::{MessageIden, SessionIden};
use sea_query::{Alias, Expr, ExprTrait, JoinType, Order, Query};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::compaction::{CompactionPlan, PendingToolCalls, Summary};
use crate::error::{Entity, Error, Result};
use crate::validate;

/// How [`plan_compaction`] chooses what to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// The session's token total to reach (or go under) once compacted, the summary included.
    pub target_tokens: i64,
    /// Tokens the summary is expected to add (counted against the target).
    pub summary_tokens: i64,
    /// The newest this many messages are never removed.
    pub keep_last_messages: usize,
    /// The newest messages holding at least this many tokens are never removed (counted from
    /// the newest message back, until the count is reached).
    pub keep_last_tokens: i64,
    /// Whether earlier compactions' summaries may be removed (summarized again).
    pub include_summaries: bool,
    /// The strategy name the plan carries (written on the compaction event).
    pub strategy: String,
    /// Whether a tool call whose result has not arrived yet may be removed (by default it is
    /// kept, with everything its pair would take along); the plan carries it to
    /// [`compact`](crate::compact).
    pub pending_tool_calls: PendingToolCalls,
}

impl CompactionPolicy {
    /// A policy for `target_tokens` under strategy `strategy`: no summary estimate, no tail
    /// protected, summaries kept.
    pub fn new(target_tokens: i64, strategy: impl Into<String>) -> Self {
        CompactionPolicy {
            target_tokens,
            summary_tokens: 0,
            keep_last_messages: 0,
            keep_last_tokens: 0,
            include_summaries: false,
            strategy: strategy.into(),
            pending_tool_calls: PendingToolCalls::Keep,
        }
    }

    fn check(&self) -> Result<()> {
        validate::non_empty_text("strategy", &self.strategy)?;
        validate::bounded("strategy", &self.strategy, crate::limits::STRATEGY)?;
        for (name, value) in [
            ("target_tokens", self.target_tokens),
            ("summary_tokens", self.summary_tokens),
            ("keep_last_tokens", self.keep_last_tokens),
        ] {
            if value < 0 {
                return Err(Error::invalid(format!("{name} is negative")));
            }
        }
        // What the policy keeps cannot exceed what it allows.
        let kept = self.keep_last_tokens.saturating_add(self.summary_tokens);
        if kept > self.target_tokens {
            return Err(Error::invalid(format!(
                "the policy contradicts itself: it keeps at least {kept} tokens (keep_last_tokens + summary_tokens) but targets {}",
                self.target_tokens
            )));
        }
        Ok(())
    }
}

/// What [`plan_compaction`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOutcome {
    /// The session already fits the target: nothing to remove.
    AlreadyFits,
    /// The plan brings the session to the target.
    ReachesTarget,
    /// The plan removes everything the policy allows, and the session still misses the target.
    FallsShort,
    /// The session misses the target, and the policy protects every message (the tail,
    /// preserved messages, summaries, and the tool pairs that reach into them).
    NothingRemovable,
}

/// A proposed compaction: the plan (complete it with a summary and pass it to
/// [`compact`](crate::compact)) and its token figures.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionProposal {
    /// The plan, oldest message first; `None` when nothing is to be removed.
    pub plan: Option<CompactionPlan>,
    /// Why: whether the plan reaches the target, or why there is none.
    pub outcome: PlanOutcome,
    /// The session's tokens now.
    pub tokens_before: i64,
    /// The tokens of the messages the plan removes.
    pub tokens_removed: i64,
    /// The session's tokens after the compaction, with the policy's summary estimate.
    pub tokens_after: i64,
}

impl CompactionProposal {
    /// The ids of the messages the plan removes, oldest first (none without a plan).
    pub fn removed_ids(&self) -> &[Uuid] {
        self.plan.as_ref().map_or(&[], |p| &p.remove[..])
    }

    /// The messages the plan removes, whole and oldest first, read in one statement: what the
    /// summarizer reads. Empty without a plan (no statement is sent). A message removed or
    /// changed since the plan was made is read as it is now, or left out; [`compact`](crate::compact)
    /// re-checks the plan under the session lock either way.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the session is not one of `tenant`'s.
    pub async fn removed_messages<'c>(
        &self,
        conn: impl sqlx::Acquire<'c, Database = sqlx::Postgres>,
        tenant: &str,
    ) -> Result<Vec<agentpg_schema::Message>> {
        match &self.plan {
            Some(plan) => crate::get_messages(conn, tenant, plan.session_id, &plan.remove).await,
            None => Ok(Vec::new()),
        }
    }

    /// The plan, completed with `summary`, ready for [`compact`](crate::compact); `None` when
    /// there is nothing to remove.
    pub fn with_summary(self, summary: Summary) -> Option<CompactionPlan> {
        self.plan.map(|plan| CompactionPlan {
            summary: Some(summary),
            ..plan
        })
    }
}

/// One message as the planner sees it: no content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) id: Uuid,
    pub(crate) tokens: i64,
    pub(crate) is_preserved: bool,
    pub(crate) is_summary: bool,
    pub(crate) tool_ids: Vec<String>,
    /// It calls a tool whose result is not in the session yet.
    pub(crate) pending: bool,
}

/// The planner's choice over `messages` (in order): indexes to remove, oldest first, and the
/// outcome.
pub(crate) fn choose(
    messages: &[Candidate],
    policy: &CompactionPolicy,
) -> (Vec<usize>, PlanOutcome, i64) {
    let before: i64 = messages.iter().map(|m| m.tokens).sum();
    if before <= policy.target_tokens {
        return (Vec::new(), PlanOutcome::AlreadyFits, 0);
    }
    // The protected tail: the last N messages, and the newest ones holding K tokens.
    let n = messages.len();
    let mut protected = vec![false; n];
    let mut tail_tokens = 0i64;
    for i in (0..n).rev() {
        let by_count = n - i <= policy.keep_last_messages;
        let by_tokens = tail_tokens < policy.keep_last_tokens;
        if !(by_count || by_tokens) {
            break;
        }
        protected[i] = true;
        tail_tokens += messages[i].tokens;
    }
    let removable = |i: usize| {
        let m = &messages[i];
        !protected[i]
            && !m.is_preserved
            && (policy.include_summaries || !m.is_summary)
            && (!m.pending || policy.pending_tool_calls == PendingToolCalls::Remove)
    };
    // Messages that share a tool id go together: one group per connected set.
    let mut group: Vec<usize> = (0..n).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        for id in &m.tool_ids {
            match first_with.get(id.as_str()) {
                Some(&j) => {
                    let (a, b) = (root(&mut group, i), root(&mut group, j));
                    group[a.max(b)] = a.min(b);
                }
                None => {
                    first_with.insert(id, i);
                }
            }
        }
    }
    // A group is removable only whole; groups in order of their oldest message.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let r = root(&mut group, i);
        members[r].push(i);
    }
    let mut chosen = Vec::new();
    let mut removed = 0i64;
    let fits = |removed: i64| before - removed + policy.summary_tokens <= policy.target_tokens;
    for (r, m) in members.iter().enumerate() {
        if m.is_empty() || m[0] != r || !m.iter().all(|&i| removable(i)) {
            continue;
        }
        chosen.extend(m.iter().copied());
        removed += m.iter().map(|&i| messages[i].tokens).sum::<i64>();
        if fits(removed) {
            break;
        }
    }
    chosen.sort_unstable();
    let outcome = if chosen.is_empty() {
        PlanOutcome::NothingRemovable
    } else if fits(removed) {
        PlanOutcome::ReachesTarget
    } else {
        PlanOutcome::FallsShort
    };
    (chosen, outcome, removed)
}

/// The strings of a JSON array of strings (`tool_use_ids`, `tool_result_ids`).
fn strings(value: Option<Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Proposes a compaction of session `session_id` of `tenant` under `policy`: the oldest
/// messages it may remove, until the session fits `policy.target_tokens` (the summary's
/// estimate included). It never removes a preserved message, the protected tail, an earlier
/// summary (unless the policy allows it), or one half of a tool pair — a tool use and its
/// result are removed together or not at all (the cut grows or shrinks to keep them so). It
/// reaches the target whenever any plan allowed by the policy could.
///
/// One statement reads what it needs — each message's id, tokens, flags and tool ids, never its
/// content. The plan carries no summary: add one and pass it to [`compact`](crate::compact),
/// which checks it again under the session lock.
///
/// # Errors
/// [`Error::NotFound`] if the session is not one of `tenant`'s; [`Error::InvalidInput`] for a
/// negative figure, an empty strategy, or a policy that contradicts itself (it keeps more tokens
/// than it targets).
#[tracing::instrument(skip_all, fields(tenant = %tenant, session = %session_id, target = policy.target_tokens))]
pub async fn plan_compaction(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    session_id: Uuid,
    policy: &CompactionPolicy,
) -> Result<CompactionProposal> {
    validate::tenant(tenant)?;
    policy.check()?;
    let (s, m) = (Alias::new("s"), Alias::new("m"));
    let mut read = Query::select();
    read.column((s.clone(), SessionIden::Id))
        .columns(
            [
                MessageIden::Id,
                MessageIden::Tokens,
                MessageIden::IsPreserved,
                MessageIden::IsSummary,
                MessageIden::ToolUseIds,
                MessageIden::ToolResultIds,
            ]
            .map(|c| (m.clone(), c)),
        )
        .from_as(SessionIden::Table, s.clone())
        .join_as(
            JoinType::LeftJoin,
            MessageIden::Table,
            m.clone(),
            Expr::col((m.clone(), MessageIden::TenantId))
                .equals((s.clone(), SessionIden::TenantId))
                .and(
                    Expr::col((m.clone(), MessageIden::SessionId))
                        .equals((s.clone(), SessionIden::Id)),
                ),
        )
        .and_where(Expr::col((s.clone(), SessionIden::TenantId)).eq(tenant))
        .and_where(Expr::col((s, SessionIden::Id)).eq(session_id))
        .order_by((m, MessageIden::Position), Order::Asc);
    type Row = (
        Uuid,
        Option<Uuid>,
        Option<i64>,
        Option<bool>,
        Option<bool>,
        Option<Value>,
        Option<Value>,
    );
    let (sql, values) = crate::sql::built(&read);
    let rows: Vec<Row> = sqlx::query_as_with(sql, values).fetch_all(executor).await?;
    if rows.is_empty() {
        return Err(Error::NotFound(Entity::Session));
    }
    let rows: Vec<_> = rows
        .into_iter()
        .filter_map(|(_, id, tokens, preserved, summary, uses, results)| {
            Some((
                id?,
                tokens,
                preserved,
                summary,
                strings(uses),
                strings(results),
            ))
        })
        .collect();
    // Calls the session answers somewhere; the others are still running.
    let answered: std::collections::HashSet<&str> = rows
        .iter()
        .flat_map(|r| r.5.iter().map(String::as_str))
        .collect();
    let messages: Vec<Candidate> = rows
        .iter()
        .map(
            |(id, tokens, preserved, summary, uses, results)| Candidate {
                id: *id,
                tokens: tokens.unwrap_or(0),
                is_preserved: preserved.unwrap_or(false),
                is_summary: summary.unwrap_or(false),
                pending: uses.iter().any(|u| !answered.contains(u.as_str())),
                tool_ids: uses.iter().chain(results).cloned().collect(),
            },
        )
        .collect();
    let before: i64 = messages.iter().map(|m| m.tokens).sum();
    let (chosen, outcome, removed) = choose(&messages, policy);
    let plan = (!chosen.is_empty()).then(|| CompactionPlan {
        session_id,
        remove: chosen.iter().map(|&i| messages[i].id).collect(),
        summary: None,
        strategy: policy.strategy.clone(),
        model_used: None,
        duration_ms: None,
        pending_tool_calls: policy.pending_tool_calls,
    });
    let tokens_after = match &plan {
        Some(_) => before - removed + policy.summary_tokens,
        None => before,
    };
    Ok(CompactionProposal {
        plan,
        outcome,
        tokens_before: before,
        tokens_removed: removed,
        tokens_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A conversation: tokens, preserved, summary, and tool pairs as (use index, result index).
    fn conversation() -> impl Strategy<Value = (Vec<Candidate>, Vec<(usize, usize)>)> {
        (2usize..60)
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(
                        (
                            0i64..500,
                            prop::bool::weighted(0.1),
                            prop::bool::weighted(0.08),
                        ),
                        n,
                    ),
                    prop::collection::vec((0..n, 1usize..4), 0..n / 2),
                )
            })
            .prop_map(|(rows, pairs)| {
                let n = rows.len();
                let mut messages: Vec<Candidate> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, (tokens, is_preserved, is_summary))| Candidate {
                        id: Uuid::from_u128(i as u128 + 1),
                        tokens,
                        is_preserved,
                        is_summary,
                        tool_ids: Vec::new(),
                        pending: false,
                    })
                    .collect();
                let mut pairs_out = Vec::new();
                for (k, (at, gap)) in pairs.into_iter().enumerate() {
                    let result = (at + gap).min(n - 1);
                    if result == at {
                        continue;
                    }
                    let id = format!("call_{k}");
                    messages[at].tool_ids.push(id.clone());
                    messages[result].tool_ids.push(id);
                    pairs_out.push((at, result));
                }
                (messages, pairs_out)
            })
    }

    fn policy() -> impl Strategy<Value = CompactionPolicy> {
        (
            0i64..20_000,
            0i64..300,
            0usize..10,
            0i64..2_000,
            any::<bool>(),
        )
            .prop_map(|(target, summary, keep_n, keep_k, include_summaries)| {
                CompactionPolicy {
                    target_tokens: Ord::max(target, keep_k + summary),
                    summary_tokens: summary,
                    keep_last_messages: keep_n,
                    keep_last_tokens: keep_k,
                    include_summaries,
                    strategy: "test".into(),
                    pending_tool_calls: PendingToolCalls::Keep,
                }
            })
    }

    /// The tail the policy protects, computed independently.
    fn tail(messages: &[Candidate], policy: &CompactionPolicy) -> Vec<bool> {
        let n = messages.len();
        let mut protected = vec![false; n];
        let mut tokens = 0;
        let mut i = n;
        while i > 0 && (n - i < policy.keep_last_messages || tokens < policy.keep_last_tokens) {
            i -= 1;
            protected[i] = true;
            tokens += messages[i].tokens;
        }
        protected
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plans_never_touch_what_is_protected_nor_split_a_pair_and_reach_the_target_when_possible(
            (messages, pairs) in conversation(),
            policy in policy(),
        ) {
            let (chosen, outcome, removed) = choose(&messages, &policy);
            let before: i64 = messages.iter().map(|m| m.tokens).sum();
            let protected = tail(&messages, &policy);
            let is_removed = |i: usize| chosen.contains(&i);
            for &i in &chosen {
                prop_assert!(!protected[i], "removes {i} of the protected tail");
                prop_assert!(!messages[i].is_preserved, "removes preserved {i}");
                prop_assert!(policy.include_summaries || !messages[i].is_summary, "removes summary {i}");
            }
            for &(u, r) in &pairs {
                prop_assert_eq!(is_removed(u), is_removed(r), "splits the pair {} / {}", u, r);
            }
            prop_assert_eq!(removed, chosen.iter().map(|&i| messages[i].tokens).sum::<i64>());
            // The most any allowed plan can remove: every message in a group (messages joined by
            // pairs) whose members are all removable.
            let mut group: Vec<usize> = (0..messages.len()).collect();
            fn find(g: &mut Vec<usize>, i: usize) -> usize { if g[i] == i { i } else { let r = find(g, g[i]); g[i] = r; r } }
            for &(u, r) in &pairs { let (a, b) = (find(&mut group, u), find(&mut group, r)); group[a] = b; }
            let allowed = |i: usize| !protected[i] && !messages[i].is_preserved && (policy.include_summaries || !messages[i].is_summary);
            let mut blocked = std::collections::HashSet::new();
            for i in 0..messages.len() { if !allowed(i) { blocked.insert(find(&mut group, i)); } }
            let most: i64 = (0..messages.len()).filter(|&i| !blocked.contains(&find(&mut group, i))).map(|i| messages[i].tokens).sum();
            let fits = |removed: i64| before - removed + policy.summary_tokens <= policy.target_tokens;
            if before <= policy.target_tokens {
                prop_assert_eq!(outcome, PlanOutcome::AlreadyFits);
                prop_assert!(chosen.is_empty());
            } else if fits(most) {
                prop_assert_eq!(outcome, PlanOutcome::ReachesTarget, "a plan could reach the target");
                prop_assert!(fits(removed));
            } else {
                let may = (0..messages.len()).filter(|&i| !blocked.contains(&find(&mut group, i))).count();
                prop_assert_eq!(chosen.len(), may, "falling short, it removes all it may");
                prop_assert_eq!(removed, most);
                let expected = if may == 0 { PlanOutcome::NothingRemovable } else { PlanOutcome::FallsShort };
                prop_assert_eq!(outcome, expected);
            }
        }
    }

    #[test]
    fn a_call_still_running_is_kept_unless_the_policy_removes_it() {
        let m = |tokens, pending| Candidate {
            id: Uuid::new_v4(),
            tokens,
            is_preserved: false,
            is_summary: false,
            tool_ids: if pending {
                vec!["running".into()]
            } else {
                Vec::new()
            },
            pending,
        };
        // 0 plain, 1 calls a tool that has not answered, 2 plain.
        let messages = vec![m(10, false), m(10, true), m(10, false)];
        let mut policy = CompactionPolicy::new(0, "t");
        let (chosen, outcome, _) = choose(&messages, &policy);
        assert_eq!((chosen, outcome), (vec![0, 2], PlanOutcome::FallsShort));
        policy.pending_tool_calls = PendingToolCalls::Remove;
        let (chosen, outcome, _) = choose(&messages, &policy);
        assert_eq!(
            (chosen, outcome),
            (vec![0, 1, 2], PlanOutcome::ReachesTarget)
        );
    }

    #[test]
    fn a_pair_reaching_into_the_tail_is_kept_whole() {
        let m = |tokens, tool: Option<&str>| Candidate {
            id: Uuid::new_v4(),
            tokens,
            is_preserved: false,
            is_summary: false,
            tool_ids: tool.map(|t| vec![t.to_string()]).unwrap_or_default(),
            pending: false,
        };
        // 0 and 1 plain, 2 calls "a", 3 answers "a" (in the tail of 1 message).
        let messages = vec![m(10, None), m(10, None), m(10, Some("a")), m(10, Some("a"))];
        let mut policy = CompactionPolicy::new(0, "t");
        policy.keep_last_messages = 1;
        let (chosen, outcome, removed) = choose(&messages, &policy);
        assert_eq!(
            chosen,
            vec![0, 1],
            "the call stays with its protected result"
        );
        assert_eq!((outcome, removed), (PlanOutcome::FallsShort, 20));
        // A target the first message reaches: the cut stops there.
        policy.target_tokens = 30;
        let (chosen, outcome, _) = choose(&messages, &policy);
        assert_eq!((chosen, outcome), (vec![0], PlanOutcome::ReachesTarget));
    }
}
