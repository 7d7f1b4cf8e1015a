//! Forks: copies up to the fork point, exact counters, stored lineage, nothing written on error.

mod common;

use agentpg_repo::{
    append_messages, compact, fork_session, list_messages, list_sessions, CompactionPlan, Entity,
    Error, MessageRange, SessionFilter, SessionOrder,
};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage, NewSession};
use common::*;
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;

fn fork_of(identifier: &str) -> NewSession {
    NewSession {
        metadata: Some(json!({"branch": identifier})),
        ..NewSession::new(TENANT.into(), identifier.into())
    }
}

/// Every column of a message but those a copy changes (id, session).
fn same_message(a: &Message, b: &Message) -> bool {
    let strip = |m: &Message| Message {
        id: uuid::Uuid::nil(),
        session_id: uuid::Uuid::nil(),
        ..m.clone()
    };
    strip(a) == strip(b)
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_fork_copies_everything_up_to_the_fork_point(pool: PgPool) {
    let source = session(&pool, TENANT, "source").await;
    let mut batch = vec![
        text(source.id, MessageRole::User, "hello", 3, 0),
        NewMessage {
            content: Some(Json(vec![
                ContentBlock::text("let me look"),
                ContentBlock::tool_use("t1", "search", json!({"q": "x"})),
            ])),
            usage: Some(Json(usage(5, 7))),
            metadata: Some(json!({"turn": 1})),
            is_preserved: Some(true),
            ..NewMessage::new(TENANT.into(), source.id, MessageRole::Assistant)
        },
        NewMessage {
            content: Some(Json(vec![ContentBlock::tool_result("t1", json!("found"))])),
            ..NewMessage::new(TENANT.into(), source.id, MessageRole::User)
        },
    ];
    batch.push(text(source.id, MessageRole::Assistant, "after", 100, 100));
    let stored = append_messages(&pool, TENANT, source.id, &batch)
        .await
        .unwrap()
        .into_rows();

    let fork = fork_session(&pool, TENANT, source.id, stored[2].id, &fork_of("fork"))
        .await
        .unwrap();
    assert_eq!(fork.forked_from_session_id, Some(source.id));
    assert_eq!(fork.forked_from_message_id, Some(stored[2].id));
    assert_eq!(fork.identifier, "fork");
    assert_eq!(fork.metadata, json!({"branch": "fork"}));
    assert_eq!(fork.total_tokens, 3 + 12);
    assert_eq!(fork.last_position, Some(stored[2].position));
    assert_eq!(fork.compaction_count, 0);
    assert_eq!(session_row(&pool, fork.id).await, fork);

    let copied = all_messages(&pool, fork.id).await;
    assert_eq!(copied.len(), 3);
    for (copy, original) in copied.iter().zip(&stored) {
        assert_ne!(copy.id, original.id, "a copy has a new id");
        assert_eq!(copy.session_id, fork.id);
        assert!(same_message(copy, original), "{copy:?} != {original:?}");
    }
    // The source is untouched, and the fork lives on its own: appends continue after the
    // fork point and count toward the fork alone.
    assert_eq!(all_messages(&pool, source.id).await, stored);
    assert_eq!(session_row(&pool, source.id).await.total_tokens, 215);
    let next = append_messages(
        &pool,
        TENANT,
        fork.id,
        &[text(fork.id, MessageRole::Assistant, "other way", 1, 1)],
    )
    .await
    .unwrap()
    .into_rows();
    assert!(next[0].position > stored[2].position);
    assert_eq!(session_row(&pool, fork.id).await.total_tokens, 17);

    // The lineage is queryable: the source's forks.
    let second = fork_session(&pool, TENANT, source.id, stored[0].id, &fork_of("second"))
        .await
        .unwrap();
    assert_eq!(second.total_tokens, 3);
    let forks = list_sessions(
        &pool,
        TENANT,
        &SessionFilter::default().forked_from(source.id),
        SessionOrder::OldestFirst,
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        forks.items.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![fork.id, second.id]
    );
    // A fork of a fork.
    let third = fork_session(&pool, TENANT, fork.id, next[0].id, &fork_of("third"))
        .await
        .unwrap();
    assert_eq!(third.total_tokens, 17);
    assert_eq!(all_messages(&pool, third.id).await.len(), 4);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_fork_of_a_compacted_session_copies_the_summary_and_the_fork_outlives_its_source(
    pool: PgPool,
) {
    let source = session(&pool, TENANT, "source").await;
    let stored = conversation(&pool, source.id, 6).await;
    compact(
        &pool,
        TENANT,
        &CompactionPlan {
            session_id: source.id,
            remove: stored[..3].iter().map(|m| m.id).collect(),
            summary: Some(agentpg_repo::Summary {
                id: None,
                role: MessageRole::User,
                content: vec![ContentBlock::text("earlier: m0..m2")],
                usage: Some(usage(1, 0)),
                metadata: None,
            }),
            strategy: "summarization".into(),
            model_used: None,
            duration_ms: None,
            pending_tool_calls: Default::default(),
        },
    )
    .await
    .unwrap();
    let fork = fork_session(&pool, TENANT, source.id, stored[4].id, &fork_of("fork"))
        .await
        .unwrap();
    let copied = list_messages(&pool, TENANT, fork.id, MessageRange::default())
        .await
        .unwrap();
    assert_eq!(copied.len(), 3, "summary, m3, m4");
    assert!(copied[0].is_summary);
    assert_eq!(fork.total_tokens, 1 + 3 + 3);

    agentpg_repo::delete_session(&pool, TENANT, source.id)
        .await
        .unwrap();
    assert_eq!(all_messages(&pool, fork.id).await, copied);
    assert_eq!(
        session_row(&pool, fork.id).await.forked_from_session_id,
        Some(source.id)
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn bad_forks_write_nothing(pool: PgPool) {
    let source = session(&pool, TENANT, "source").await;
    let stored = conversation(&pool, source.id, 2).await;
    let elsewhere = session(&pool, TENANT, "elsewhere").await;
    let foreign = conversation(&pool, elsewhere.id, 1).await;
    let theirs = session(&pool, OTHER, "theirs").await;
    let before = dump(&pool).await;

    // A fork point outside the source.
    for at in [foreign[0].id, uuid::Uuid::new_v4()] {
        let err = fork_session(&pool, TENANT, source.id, at, &fork_of("fork"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("is not in session")),
            "{err}"
        );
    }
    // Another tenant's session, or none.
    for (tenant, id) in [
        (TENANT, theirs.id),
        (TENANT, uuid::Uuid::new_v4()),
        (OTHER, source.id),
    ] {
        let new = NewSession::new(tenant.into(), "fork".into());
        let err = fork_session(&pool, tenant, id, stored[0].id, &new)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(Entity::Session)), "{err}");
    }
    // A fork for another tenant, lineage or counters set, an identifier taken.
    let mut bad = vec![
        NewSession::new(OTHER.into(), "fork".into()),
        NewSession {
            forked_from_session_id: Some(source.id),
            forked_from_message_id: Some(stored[0].id),
            ..fork_of("fork")
        },
        NewSession {
            total_tokens: Some(5),
            ..fork_of("fork")
        },
    ];
    bad.push(fork_of("source"));
    for (i, new) in bad.iter().enumerate() {
        let err = fork_session(&pool, TENANT, source.id, stored[1].id, new)
            .await
            .unwrap_err();
        let expected = if i == 3 {
            matches!(err, Error::Conflict { .. })
        } else {
            matches!(err, Error::InvalidInput { .. })
        };
        assert!(expected, "case {i}: {err}");
    }
    assert_eq!(dump(&pool).await, before, "a failed fork wrote something");
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_fork_inside_a_transaction_goes_with_it(pool: PgPool) {
    let source = session(&pool, TENANT, "source").await;
    let stored = conversation(&pool, source.id, 3).await;
    let mut tx = pool.begin().await.unwrap();
    let fork = fork_session(&mut *tx, TENANT, source.id, stored[2].id, &fork_of("fork"))
        .await
        .unwrap();
    assert_eq!(
        all_messages(&pool, fork.id).await.len(),
        0,
        "not committed yet"
    );
    tx.rollback().await.unwrap();
    assert!(agentpg_repo::get_session(&pool, TENANT, fork.id)
        .await
        .unwrap()
        .is_none());
}
