//! Written into a copy of the workspace by `cargo xtask drill`, after the drill's migration
//! (xtask/drill/additive.up.sql) and `cargo xtask codegen`: the columns it adds are settable
//! through the generated insert structs and survive compact → revert, and an archive written
//! before the migration reverts after it. Nothing else in the copy is edited.

mod common;

use agentpg_repo::{
    append_messages, archived_messages, compact, create_session, list_messages,
    revert_compaction, CompactionPlan, MessageRange, Summary,
};
use agentpg_schema::{ContentBlock, MessageMood, MessageRole, NewMessage, NewSession};
use common::{text, TENANT};
use sqlx::PgPool;

fn plan(session_id: uuid::Uuid, remove: Vec<uuid::Uuid>) -> CompactionPlan {
    CompactionPlan {
        session_id,
        remove,
        summary: Some(Summary {
            id: None,
            role: MessageRole::User,
            content: vec![ContentBlock::text("summary")],
            usage: None,
            metadata: None,
        }),
        strategy: "drill".into(),
        model_used: None,
        duration_ms: None,
        pending_tool_calls: Default::default(),
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn new_columns_are_settable_and_survive_compact_and_revert(pool: PgPool) {
    let s = create_session(
        &pool,
        &NewSession {
            title: Some("Drill".into()),
            priority: Some(1),
            ..NewSession::new(TENANT.into(), "drill".into())
        },
    )
    .await
    .unwrap();
    assert_eq!((s.title.as_deref(), s.priority), (Some("Drill"), 1));
    let plain = create_session(&pool, &NewSession::new(TENANT.into(), "plain".into()))
        .await
        .unwrap();
    assert_eq!((plain.title, plain.priority), (None, 3), "defaults");

    let batch = vec![
        NewMessage {
            agent_name: Some("planner".into()),
            turn_index: Some(4),
            mood: Some(MessageMood::Angry),
            ..text(s.id, MessageRole::User, "a", 1, 2)
        },
        text(s.id, MessageRole::Assistant, "b", 3, 4),
        text(s.id, MessageRole::User, "c", 5, 6),
    ];
    let stored = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    assert_eq!(
        (stored[0].agent_name.as_deref(), stored[0].turn_index, stored[0].mood),
        (Some("planner"), 4, MessageMood::Angry)
    );
    assert_eq!(
        (stored[1].agent_name.as_deref(), stored[1].turn_index, stored[1].mood),
        (None, 0, MessageMood::Calm),
        "defaults from the migration"
    );

    let event = compact(&pool, TENANT, &plan(s.id, vec![stored[0].id, stored[1].id]))
        .await
        .unwrap();
    assert_eq!(
        archived_messages(&pool, TENANT, event.id).await.unwrap(),
        stored[..2].to_vec()
    );
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let listed = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap();
    assert_eq!(listed, stored, "every column, the new ones too, restored exactly");
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn an_archive_from_before_the_migration_reverts_after_it(pool: PgPool) {
    let s = create_session(&pool, &NewSession::new(TENANT.into(), "old".into()))
        .await
        .unwrap();
    let batch: Vec<NewMessage> = ["a", "b", "c"]
        .iter()
        .map(|body| NewMessage {
            agent_name: Some("worker".into()),
            turn_index: Some(9),
            mood: Some(MessageMood::Angry),
            ..text(s.id, MessageRole::User, body, 1, 1)
        })
        .collect();
    let stored = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    let event = compact(&pool, TENANT, &plan(s.id, vec![stored[0].id, stored[1].id]))
        .await
        .unwrap();
    // What an archive written before the migration holds: rows without the new columns.
    sqlx::query(
        "UPDATE message_archive
            SET original_message = original_message - 'agent_name' - 'turn_index' - 'mood'",
    )
    .execute(&pool)
    .await
    .unwrap();
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let listed = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap();
    for (restored, original) in listed[..2].iter().zip(&stored) {
        assert_eq!(
            (restored.agent_name.as_deref(), restored.turn_index, restored.mood),
            (None, 0, MessageMood::Calm),
            "the new columns take their defaults"
        );
        let mut expected = original.clone();
        expected.agent_name = None;
        expected.turn_index = 0;
        expected.mood = MessageMood::Calm;
        assert_eq!(restored, &expected, "everything else exactly as archived");
    }
    assert_eq!(listed[2], stored[2]);
}
