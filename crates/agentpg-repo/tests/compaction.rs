//! Compaction and revert: atomic, exact, audited; refused plans change nothing.

mod common;

use agentpg_repo::{
    archived_messages, compact, list_compactions, revert_compaction, set_preserved, CompactionPlan,
    Entity, Error, Summary,
};
use agentpg_schema::{ContentBlock, MessageRole};
use common::{all_messages, conversation, session, session_row, usage, TENANT};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn plan(session_id: Uuid, remove: Vec<Uuid>, summary: Option<Summary>) -> CompactionPlan {
    CompactionPlan {
        session_id,
        remove,
        summary,
        strategy: "summarization".into(),
        model_used: Some("model-x".into()),
        duration_ms: Some(1234),
        pending_tool_calls: Default::default(),
    }
}

fn summary(text: &str, input: i64, output: i64) -> Summary {
    Summary {
        id: None,
        role: MessageRole::User,
        content: vec![ContentBlock::text(text)],
        usage: Some(usage(input, output)),
        metadata: Some(json!({"kind": "summary"})),
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn compact_archives_deletes_summarizes_and_counts(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 8).await; // 8 × 3 tokens
    set_preserved(&pool, TENANT, s.id, all[0].id, true)
        .await
        .unwrap();
    let original = all_messages(&pool, s.id).await;
    let remove: Vec<Uuid> = original[1..6].iter().map(|m| m.id).collect();

    let event = compact(
        &pool,
        TENANT,
        &plan(s.id, remove.clone(), Some(summary("sum", 4, 1))),
    )
    .await
    .unwrap();
    assert_eq!(event.session_id, s.id);
    assert_eq!(event.strategy, "summarization");
    assert_eq!(
        (event.original_tokens, event.compacted_tokens),
        (24, 24 - 15 + 5)
    );
    assert_eq!(event.tokens_saved, Some(10));
    assert_eq!(event.messages_removed, 5);
    assert_eq!(event.preserved_message_ids, vec![original[0].id]);
    assert_eq!(event.model_used.as_deref(), Some("model-x"));
    assert_eq!(event.duration_ms, Some(1234));
    assert_eq!(event.reverted_at, None);
    assert_eq!(
        event.summary_content.as_ref().unwrap().0,
        vec![ContentBlock::text("sum")]
    );

    let now = all_messages(&pool, s.id).await;
    assert_eq!(now.len(), 4);
    assert_eq!(now[0], original[0]);
    let summary_row = &now[1];
    assert_eq!(Some(summary_row.id), event.summary_message_id);
    assert_eq!(
        summary_row.position, original[1].position,
        "in the removed messages' place"
    );
    assert!(summary_row.is_summary && !summary_row.is_preserved);
    assert_eq!(summary_row.metadata, json!({"kind": "summary"}));
    assert_eq!(now[2..], original[6..]);

    let after = session_row(&pool, s.id).await;
    assert_eq!((after.total_tokens, after.compaction_count), (14, 1));
    assert_eq!(
        agentpg_repo::recompute_total_tokens(&pool, TENANT, s.id)
            .await
            .unwrap(),
        14
    );
    assert_eq!(
        archived_messages(&pool, TENANT, event.id).await.unwrap(),
        original[1..6].to_vec()
    );
    assert_eq!(
        list_compactions(&pool, TENANT, s.id).await.unwrap(),
        vec![event]
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn revert_restores_every_field_and_keeps_the_audit_trail(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 12).await;
    // Varied rows: metadata, preserved flag, a NULL usage, odd timestamps.
    // (Row by row with bound values: Citus refuses an UPDATE whose values call a STABLE
    // function on a column, as `created_at - interval` does.)
    for m in all_messages(&pool, s.id).await {
        sqlx::query(
            "UPDATE messages SET metadata = $1, created_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(json!({ "n": m.position }))
        .bind(m.created_at - chrono::TimeDelta::microseconds(m.position))
        .bind(TENANT)
        .bind(m.id)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE messages SET usage = NULL WHERE session_id = $1 AND position % 5 = 0")
        .bind(s.id)
        .execute(&pool)
        .await
        .unwrap();
    let recomputed = agentpg_repo::recompute_total_tokens(&pool, TENANT, s.id)
        .await
        .unwrap();
    sqlx::query("UPDATE sessions SET total_tokens = $2 WHERE id = $1")
        .bind(s.id)
        .bind(recomputed)
        .execute(&pool)
        .await
        .unwrap();
    let original = all_messages(&pool, s.id).await;
    let session_before = session_row(&pool, s.id).await;

    // Remove a non-contiguous set.
    let remove: Vec<Uuid> = original
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 2 && *i < 10)
        .map(|(_, m)| m.id)
        .collect();
    let first = compact(
        &pool,
        TENANT,
        &plan(s.id, remove, Some(summary("one", 2, 2))),
    )
    .await
    .unwrap();
    // A second compaction on top, removing the first summary too.
    let after_first = all_messages(&pool, s.id).await;
    let second = compact(
        &pool,
        TENANT,
        &plan(s.id, after_first[..3].iter().map(|m| m.id).collect(), None),
    )
    .await
    .unwrap();
    assert_eq!(session_row(&pool, s.id).await.compaction_count, 2);

    // Only the latest standing compaction can be reverted.
    let err = revert_compaction(&pool, TENANT, first.id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");

    let reverted_second = revert_compaction(&pool, TENANT, second.id).await.unwrap();
    assert!(reverted_second.reverted_at.is_some());
    assert_eq!(all_messages(&pool, s.id).await, after_first);
    let err = revert_compaction(&pool, TENANT, second.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { .. }),
        "reverting twice: {err:?}"
    );

    let reverted_first = revert_compaction(&pool, TENANT, first.id).await.unwrap();
    assert_eq!(reverted_first.id, first.id);
    assert_eq!(
        all_messages(&pool, s.id).await,
        original,
        "every field of every message"
    );
    let session_after = session_row(&pool, s.id).await;
    assert_eq!(session_after.total_tokens, session_before.total_tokens);
    assert_eq!(session_after.compaction_count, 0);
    assert_eq!(common::counts(&pool).await, [1, 12, 2, 0]);

    // The audit trail: both events, newest first, marked reverted.
    let history = list_compactions(&pool, TENANT, s.id).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    assert!(history.iter().all(|e| e.reverted_at.is_some()));
    assert_eq!(
        archived_messages(&pool, TENANT, first.id).await.unwrap(),
        vec![]
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn refused_plans_change_nothing(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 6).await;
    set_preserved(&pool, TENANT, s.id, all[2].id, true)
        .await
        .unwrap();
    let other = session(&pool, TENANT, "other").await;
    let foreign = conversation(&pool, other.id, 1).await;
    let earlier = compact(
        &pool,
        TENANT,
        &plan(other.id, vec![foreign[0].id], Some(summary("s", 0, 0))),
    )
    .await
    .unwrap();
    let before = common::dump(&pool).await;

    let cases = vec![
        ("preserved", plan(s.id, vec![all[0].id, all[2].id], None)),
        (
            "foreign message",
            plan(s.id, vec![all[0].id, foreign[0].id], None),
        ),
        ("unknown id", plan(s.id, vec![Uuid::new_v4()], None)),
        ("duplicate", plan(s.id, vec![all[0].id, all[0].id], None)),
        ("empty", plan(s.id, vec![], None)),
        (
            "another session's summary",
            plan(s.id, vec![earlier.summary_message_id.unwrap()], None),
        ),
        (
            "empty strategy",
            CompactionPlan {
                strategy: String::new(),
                ..plan(s.id, vec![all[0].id], None)
            },
        ),
        (
            "negative duration",
            CompactionPlan {
                duration_ms: Some(-1),
                pending_tool_calls: Default::default(),
                ..plan(s.id, vec![all[0].id], None)
            },
        ),
        (
            "negative summary usage",
            plan(s.id, vec![all[0].id], Some(summary("x", -1, 0))),
        ),
        (
            "NUL in summary",
            plan(s.id, vec![all[0].id], Some(summary("a\0", 0, 0))),
        ),
        (
            "summary id reused",
            plan(
                s.id,
                vec![all[0].id],
                Some(Summary {
                    id: Some(all[0].id),
                    ..summary("x", 0, 0)
                }),
            ),
        ),
        (
            "summary id taken",
            plan(
                s.id,
                vec![all[0].id],
                Some(Summary {
                    id: Some(all[1].id),
                    ..summary("x", 0, 0)
                }),
            ),
        ),
    ];
    for (name, p) in cases {
        let err = compact(&pool, TENANT, &p).await.unwrap_err();
        let expected = if name == "summary id taken" {
            matches!(err, Error::Conflict { .. })
        } else {
            matches!(err, Error::InvalidInput { .. })
        };
        assert!(expected, "{name}: {err:?}");
        assert_eq!(
            common::dump(&pool).await,
            before,
            "{name} changed something"
        );
    }
    let err = compact(&pool, TENANT, &plan(Uuid::new_v4(), vec![all[0].id], None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(Entity::Session)), "{err:?}");
    let err = revert_compaction(&pool, TENANT, Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(Entity::CompactionEvent)),
        "{err:?}"
    );
    assert!(matches!(
        archived_messages(&pool, TENANT, Uuid::new_v4()).await,
        Err(Error::NotFound(Entity::CompactionEvent))
    ));
    assert!(matches!(
        list_compactions(&pool, TENANT, Uuid::new_v4()).await,
        Err(Error::NotFound(Entity::Session))
    ));
    assert_eq!(common::dump(&pool).await, before);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_later_compaction_may_remove_an_earlier_summary(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let first = compact(
        &pool,
        TENANT,
        &plan(s.id, vec![all[0].id, all[1].id], Some(summary("1", 1, 0))),
    )
    .await
    .unwrap();
    let second = compact(
        &pool,
        TENANT,
        &plan(
            s.id,
            vec![first.summary_message_id.unwrap(), all[2].id],
            Some(summary("2", 1, 1)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(second.original_tokens, 1 + 3 + 3);
    assert_eq!(second.compacted_tokens, 2 + 3);
    let now = all_messages(&pool, s.id).await;
    assert_eq!(now.len(), 2);
    assert_eq!(
        now[0].position, all[0].position,
        "the new summary takes the old summary's place"
    );
}

/// An archive taken before an additive migration reverts exactly after it: each column the
/// archived rows predate takes its default (or NULL), and nothing else changes.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn an_archive_from_before_an_additive_migration_reverts_after_it(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 6).await;
    let remove: Vec<Uuid> = all[1..4].iter().map(|m| m.id).collect();
    let event = compact(
        &pool,
        TENANT,
        &plan(s.id, remove, Some(summary("sum", 1, 1))),
    )
    .await
    .unwrap();
    // A routine migration deployed after the compaction: a nullable column, a NOT NULL column
    // with a default, and a CHECK-IN enum column with a default. (The code was generated before
    // it, as in a rolling deploy; `cargo xtask drill` tries the regenerated side.)
    // (One statement each: Citus propagates a DDL command by its text, and refuses a text
    // holding several.)
    for ddl in [
        "ALTER TABLE messages ADD COLUMN probe_note TEXT",
        "ALTER TABLE messages ADD COLUMN probe_count INTEGER NOT NULL DEFAULT 7",
        "ALTER TABLE messages ADD COLUMN probe_kind TEXT NOT NULL DEFAULT 'calm'
             CONSTRAINT messages_probe_kind_check CHECK (probe_kind IN ('calm', 'angry'))",
    ] {
        sqlx::raw_sql(ddl).execute(&pool).await.unwrap();
    }
    // The archived rows read as today's rows.
    let archived = archived_messages(&pool, TENANT, event.id).await.unwrap();
    assert_eq!(archived, all[1..4].to_vec());

    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    assert_eq!(all_messages(&pool, s.id).await, all);
    let added: Vec<(Option<String>, i32, String)> = sqlx::query_as(
        "SELECT probe_note, probe_count, probe_kind FROM messages WHERE session_id = $1 ORDER BY position",
    )
    .bind(s.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(added, vec![(None, 7, "calm".to_string()); 6]);
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 18);
}

/// A column that cannot be restored (NOT NULL, no default, not in the archive) makes the revert
/// a Conflict naming the column, and nothing is written.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn an_archive_that_cannot_be_restored_is_a_conflict_naming_the_column(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let event = compact(&pool, TENANT, &plan(s.id, vec![all[0].id], None))
        .await
        .unwrap();
    for ddl in [
        "ALTER TABLE messages ADD COLUMN probe_shard INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE messages ALTER COLUMN probe_shard DROP DEFAULT",
    ] {
        sqlx::raw_sql(ddl).execute(&pool).await.unwrap();
    }
    let before = common::dump(&pool).await;
    let err = revert_compaction(&pool, TENANT, event.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains("probe_shard")),
        "{err:?}"
    );
    assert_eq!(common::dump(&pool).await, before, "nothing written");
}
