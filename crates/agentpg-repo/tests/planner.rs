//! The compaction planner against stored conversations: every plan it proposes applies cleanly
//! and leaves the session where it said.

mod common;

use agentpg_repo::{
    append_messages, compact, plan_compaction, CompactionPolicy, Entity, Error, PlanOutcome,
    Summary,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage};
use common::*;
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A conversation of `n` messages: random usage, some preserved, some earlier summaries, and
/// tool pairs whose result follows the use by one to three messages.
fn generated(rng: &mut Rng, session_id: uuid::Uuid, n: usize) -> Vec<NewMessage> {
    let mut blocks: Vec<Vec<ContentBlock>> = (0..n)
        .map(|i| vec![ContentBlock::text(format!("m{i}"))])
        .collect();
    for k in 0..n / 3 {
        let at = rng.below(n as u64) as usize;
        let result = (at + 1 + rng.below(3) as usize).min(n - 1);
        if result == at {
            continue;
        }
        let id = format!("call_{k}");
        blocks[at].push(ContentBlock::tool_use(&id, "run", json!({})));
        blocks[result].push(ContentBlock::tool_result(&id, json!("ok")));
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, content)| NewMessage {
            content: Some(Json(content)),
            usage: Some(Json(usage(rng.below(300) as i64, rng.below(200) as i64))),
            is_preserved: Some(rng.chance(8)),
            is_summary: Some(rng.chance(6)),
            ..NewMessage::new(
                TENANT.into(),
                session_id,
                if i % 2 == 0 {
                    MessageRole::User
                } else {
                    MessageRole::Assistant
                },
            )
        })
        .collect()
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn every_plan_applies_cleanly_and_lands_where_it_said(pool: PgPool) {
    let mut reached = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let s = session(&pool, TENANT, &format!("seed-{seed}")).await;
        let n = 4 + rng.below(40) as usize;
        let stored = append_messages(&pool, TENANT, s.id, &generated(&mut rng, s.id, n))
            .await
            .unwrap()
            .into_rows();
        let before: i64 = stored.iter().map(|m| m.tokens).sum();
        let summary_tokens = rng.below(200) as i64;
        let keep_last_tokens = rng.below(800) as i64;
        let policy = CompactionPolicy {
            target_tokens: keep_last_tokens + summary_tokens + rng.below(before as u64 + 1) as i64,
            summary_tokens,
            keep_last_messages: rng.below(6) as usize,
            keep_last_tokens,
            include_summaries: rng.chance(50),
            ..CompactionPolicy::new(0, "planned")
        };
        let proposal = plan_compaction(&pool, TENANT, s.id, &policy).await.unwrap();
        assert_eq!(proposal.tokens_before, before, "seed {seed}");
        let Some(mut plan) = proposal.plan else {
            assert!(
                matches!(
                    proposal.outcome,
                    PlanOutcome::AlreadyFits | PlanOutcome::NothingRemovable
                ),
                "seed {seed}: no plan, yet {:?}",
                proposal.outcome
            );
            continue;
        };
        plan.summary = Some(Summary {
            id: None,
            role: MessageRole::User,
            content: vec![ContentBlock::text("summary")],
            usage: Some(usage(summary_tokens, 0)),
            metadata: None,
        });
        let event = compact(&pool, TENANT, &plan)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the plan does not apply: {e}"));
        assert_eq!(event.compacted_tokens, proposal.tokens_after, "seed {seed}");
        let after = session_row(&pool, s.id).await;
        assert_eq!(after.total_tokens, proposal.tokens_after, "seed {seed}");
        if proposal.outcome == PlanOutcome::ReachesTarget {
            reached += 1;
            assert!(after.total_tokens <= policy.target_tokens, "seed {seed}");
        }
        // Nothing protected went: preserved messages, the last N, and (unless allowed) summaries.
        let remaining: std::collections::HashSet<_> = all_messages(&pool, s.id)
            .await
            .into_iter()
            .map(|m| m.id)
            .collect();
        for (i, m) in stored.iter().enumerate() {
            let protected = m.is_preserved
                || i + policy.keep_last_messages >= stored.len()
                || (m.is_summary && !policy.include_summaries);
            if protected {
                assert!(
                    remaining.contains(&m.id),
                    "seed {seed}: message {i} removed"
                );
            }
        }
    }
    assert!(
        reached > 5,
        "the generated cases rarely reach a target ({reached})"
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_session_that_fits_gets_no_plan(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 4).await; // 12 tokens
    let proposal = plan_compaction(&pool, TENANT, s.id, &CompactionPolicy::new(12, "p"))
        .await
        .unwrap();
    assert_eq!(proposal.outcome, PlanOutcome::AlreadyFits);
    assert_eq!(
        (proposal.plan, proposal.tokens_before, proposal.tokens_after),
        (None, 12, 12)
    );
    // An empty session fits any target.
    let empty = session(&pool, TENANT, "empty").await;
    let proposal = plan_compaction(&pool, TENANT, empty.id, &CompactionPolicy::new(0, "p"))
        .await
        .unwrap();
    assert_eq!(proposal.outcome, PlanOutcome::AlreadyFits);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn the_oldest_messages_go_first_and_the_tail_stays(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 10).await; // 3 tokens each, 30 in all
    let mut policy = CompactionPolicy::new(20, "p");
    policy.summary_tokens = 2;
    let proposal = plan_compaction(&pool, TENANT, s.id, &policy).await.unwrap();
    // 30 - 12 + 2 = 20: the four oldest.
    let plan = proposal.plan.unwrap();
    assert_eq!(
        plan.remove,
        all[..4].iter().map(|m| m.id).collect::<Vec<_>>()
    );
    assert_eq!(plan.strategy, "p");
    assert_eq!(
        (
            proposal.outcome,
            proposal.tokens_removed,
            proposal.tokens_after
        ),
        (PlanOutcome::ReachesTarget, 12, 20)
    );

    // Protecting the last 8 leaves two to remove: the plan falls short and says so.
    policy.keep_last_messages = 8;
    let proposal = plan_compaction(&pool, TENANT, s.id, &policy).await.unwrap();
    assert_eq!(proposal.outcome, PlanOutcome::FallsShort);
    assert_eq!(proposal.plan.unwrap().remove.len(), 2);
    assert_eq!(proposal.tokens_after, 30 - 6 + 2);

    // The last 9 messages hold 27 tokens: protecting 27 leaves only the first; protecting
    // 28 protects all of them.
    policy.keep_last_messages = 0;
    policy.keep_last_tokens = 28;
    policy.summary_tokens = 0;
    policy.target_tokens = 28;
    let proposal = plan_compaction(&pool, TENANT, s.id, &policy).await.unwrap();
    assert_eq!(proposal.outcome, PlanOutcome::NothingRemovable);
    assert_eq!(proposal.plan, None);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn another_tenants_session_and_contradictory_policies_are_refused(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let err = plan_compaction(&pool, OTHER, s.id, &CompactionPolicy::new(0, "p"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(Entity::Session)), "{err}");

    let mut policy = CompactionPolicy::new(100, "p");
    policy.keep_last_tokens = 90;
    policy.summary_tokens = 20;
    let err = plan_compaction(&pool, TENANT, s.id, &policy)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("contradicts")),
        "{err}"
    );
    for policy in [
        CompactionPolicy::new(-1, "p"),
        CompactionPolicy::new(10, ""),
    ] {
        let err = plan_compaction(&pool, TENANT, s.id, &policy)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
}
