//! Messages: append, list, get, preserve, delete, recompute — normal and error paths.

mod common;

use agentpg_repo::{
    append_messages, delete_messages, get_message, list_messages, recompute_total_tokens,
    set_preserved, Entity, Error, MessageRange, ToolPairs,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage};
use common::{plan, session, session_row, text, usage, OTHER, TENANT};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn append_keeps_order_and_counts_tokens_in_one_statement(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let given_id = Uuid::new_v4();
    let created_at: chrono::DateTime<chrono::Utc> = "2026-03-04T05:06:07.123456Z".parse().unwrap();
    let batch = vec![
        NewMessage {
            id: Some(given_id),
            metadata: Some(json!({"k": "v"})),
            is_preserved: Some(true),
            created_at: Some(created_at),
            ..text(s.id, MessageRole::System, "be brief", 0, 0)
        },
        text(s.id, MessageRole::User, "hi", 10, 0),
        NewMessage {
            usage: None,
            ..text(s.id, MessageRole::Assistant, "hello", 0, 0)
        },
        text(s.id, MessageRole::Assistant, "again", 3, 7),
    ];
    let stored = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].id, given_id);
    assert_eq!(stored[0].metadata, json!({"k": "v"}));
    assert!(stored[0].is_preserved && !stored[1].is_preserved);
    assert_eq!(stored[0].created_at, created_at);
    assert_eq!(stored[2].usage, None);
    let bodies: Vec<&str> = stored
        .iter()
        .map(|m| m.content[0].as_text().unwrap())
        .collect();
    assert_eq!(bodies, ["be brief", "hi", "hello", "again"]);
    let roles: Vec<MessageRole> = stored.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::System,
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Assistant
        ]
    );
    assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
    assert!(stored.iter().all(|m| !m.is_summary && m.session_id == s.id));

    let after_first = session_row(&pool, s.id).await;
    assert_eq!(after_first.total_tokens, 20);
    assert!(after_first.updated_at > s.updated_at);
    assert_eq!(
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap(),
        20
    );
    assert_eq!(
        list_messages(&pool, TENANT, s.id, MessageRange::default())
            .await
            .unwrap(),
        stored
    );

    // A message left entirely to the defaults comes back as stored.
    let bare = append_messages(
        &pool,
        TENANT,
        s.id,
        &[NewMessage::new(TENANT.into(), s.id, MessageRole::User)],
    )
    .await
    .unwrap()
    .into_rows();
    let listed = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap();
    assert_eq!(listed.last(), bare.last());
    assert_eq!(bare[0].content.0, vec![]);
    assert_eq!(bare[0].metadata, json!({}));
    let after = session_row(&pool, s.id).await;

    // An empty batch writes nothing and reports the session's counters; an unknown session is
    // not found.
    let empty = append_messages(&pool, TENANT, s.id, &[]).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(
        (empty.total_tokens, empty.last_position),
        (after.total_tokens, after.last_position)
    );
    assert_eq!(session_row(&pool, s.id).await, after);
    assert!(matches!(
        append_messages(&pool, TENANT, Uuid::new_v4(), &[]).await,
        Err(Error::NotFound(Entity::Session))
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn append_refuses_bad_input_and_writes_nothing(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let good = text(s.id, MessageRole::User, "ok", 1, 1);
    let other_session = text(Uuid::new_v4(), MessageRole::User, "x", 0, 0);
    let nul_text = text(s.id, MessageRole::User, "a\0b", 0, 0);
    let negative = NewMessage {
        usage: Some(Json(usage(-1, 0))),
        ..good.clone()
    };
    let bad_metadata = NewMessage {
        metadata: Some(json!("not an object")),
        ..good.clone()
    };
    let deep = (0..200).fold(json!(1), |v, _| json!([v]));
    let too_deep = NewMessage {
        metadata: Some(json!({ "deep": deep })),
        ..good.clone()
    };
    let overflow = NewMessage {
        usage: Some(Json(usage(i64::MAX, 1))),
        ..good.clone()
    };
    let before = common::dump(&pool).await;
    for bad in [
        other_session,
        nul_text,
        negative,
        bad_metadata,
        too_deep,
        overflow,
    ] {
        let err = append_messages(&pool, TENANT, s.id, &[good.clone(), bad.clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{bad:?}: {err:?}"
        );
    }
    // An id stored with other values: refused, the statement writes nothing.
    let first = append_messages(&pool, TENANT, s.id, std::slice::from_ref(&good))
        .await
        .unwrap()
        .into_rows();
    let taken = NewMessage {
        id: Some(first[0].id),
        ..text(s.id, MessageRole::User, "other", 1, 1)
    };
    let snapshot = common::dump(&pool).await;
    let err = append_messages(&pool, TENANT, s.id, &[good.clone(), taken])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(common::dump(&pool).await, snapshot);
    assert_ne!(before, snapshot);
    let err = append_messages(
        &pool,
        TENANT,
        Uuid::new_v4(),
        &[text(Uuid::nil(), MessageRole::User, "x", 0, 0)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    let missing = Uuid::new_v4();
    let err = append_messages(
        &pool,
        TENANT,
        missing,
        &[text(missing, MessageRole::User, "x", 0, 0)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound(Entity::Session)), "{err:?}");
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn unknown_blocks_and_fields_are_stored_and_returned_unchanged(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let content = json!([
        {"type": "text", "text": "hi", "citations": [{"x": 1}]},
        {"type": "server_tool_use", "id": "srv", "input": {"q": "x"}, "extra": [1, 2]},
        {"no_type": true},
        {"type": "thinking", "thinking": "…", "signature": "s"},
        {"type": "tool_result", "tool_use_id": "t", "content": "done", "is_error": false}
    ]);
    let blocks: Vec<ContentBlock> = serde_json::from_value(content.clone()).unwrap();
    let stored = append_messages(
        &pool,
        TENANT,
        s.id,
        &[NewMessage {
            content: Some(Json(blocks.clone())),
            ..NewMessage::new(TENANT.into(), s.id, MessageRole::Assistant)
        }],
    )
    .await
    .unwrap()
    .into_rows();
    assert_eq!(stored[0].content.0, blocks);
    let raw: serde_json::Value = sqlx::query_scalar("SELECT content FROM messages WHERE id = $1")
        .bind(stored[0].id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(raw, content);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn list_after_a_position_with_a_limit(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = common::conversation(&pool, s.id, 10).await;
    let page = list_messages(
        &pool,
        TENANT,
        s.id,
        MessageRange {
            after_position: Some(all[3].position),
            limit: Some(4),
            last: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(page, all[4..8].to_vec());
    // The newest ones, oldest first; after a position too; not with a limit.
    let tail = list_messages(&pool, TENANT, s.id, MessageRange::last(3))
        .await
        .unwrap();
    assert_eq!(tail, all[7..].to_vec());
    let tail = list_messages(
        &pool,
        TENANT,
        s.id,
        MessageRange {
            after_position: Some(all[8].position),
            ..MessageRange::last(5)
        },
    )
    .await
    .unwrap();
    assert_eq!(tail, all[9..].to_vec());
    assert_eq!(
        list_messages(&pool, TENANT, s.id, MessageRange::last(100))
            .await
            .unwrap(),
        all
    );
    assert!(matches!(
        list_messages(
            &pool,
            TENANT,
            s.id,
            MessageRange {
                limit: Some(1),
                ..MessageRange::last(1)
            }
        )
        .await,
        Err(Error::InvalidInput { .. })
    ));
    let empty = session(&pool, TENANT, "empty").await;
    assert_eq!(
        list_messages(&pool, TENANT, empty.id, MessageRange::default())
            .await
            .unwrap(),
        vec![]
    );
    assert!(matches!(
        list_messages(&pool, TENANT, Uuid::new_v4(), MessageRange::default()).await,
        Err(Error::NotFound(Entity::Session))
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn get_preserve_and_delete(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = common::conversation(&pool, s.id, 4).await;
    assert_eq!(
        get_message(&pool, TENANT, s.id, all[1].id).await.unwrap(),
        Some(all[1].clone())
    );
    assert_eq!(
        get_message(&pool, TENANT, s.id, Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
    let other = session(&pool, TENANT, "other").await;
    assert_eq!(
        get_message(&pool, TENANT, other.id, all[1].id)
            .await
            .unwrap(),
        None
    );

    let preserved = set_preserved(&pool, TENANT, s.id, all[1].id, true)
        .await
        .unwrap();
    assert!(preserved.is_preserved);
    assert_eq!(preserved.content, all[1].content);
    assert!(
        !set_preserved(&pool, TENANT, s.id, all[1].id, false)
            .await
            .unwrap()
            .is_preserved
    );
    assert!(matches!(
        set_preserved(&pool, TENANT, other.id, all[1].id, true).await,
        Err(Error::NotFound(Entity::Message))
    ));

    // Ids outside the session are ignored; tokens come off the total.
    let deleted = delete_messages(
        &pool,
        TENANT,
        s.id,
        &[all[0].id, all[2].id, Uuid::new_v4()],
        ToolPairs::Keep,
    )
    .await
    .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 6);
    assert_eq!(
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap(),
        6
    );
    assert_eq!(
        delete_messages(&pool, TENANT, other.id, &[all[1].id], ToolPairs::Keep)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        common::all_messages(&pool, s.id)
            .await
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [all[1].id, all[3].id]
    );
    assert!(matches!(
        delete_messages(&pool, TENANT, Uuid::new_v4(), &[all[1].id], ToolPairs::Keep).await,
        Err(Error::NotFound(Entity::Session))
    ));
    assert!(matches!(
        recompute_total_tokens(&pool, TENANT, Uuid::new_v4()).await,
        Err(Error::NotFound(Entity::Session))
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn work_inside_a_callers_transaction_disappears_on_rollback(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let before = common::dump(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let stored = common_append(&mut tx, s.id).await;
    agentpg_repo::compact(&mut *tx, TENANT, &plan(s.id, vec![stored[0].id]))
        .await
        .unwrap();
    agentpg_repo::update_metadata(
        &mut *tx,
        TENANT,
        s.id,
        &agentpg_repo::MetadataUpdate::Replace(serde_json::Map::new()),
    )
    .await
    .unwrap();
    // Visible inside the transaction.
    assert_eq!(
        list_messages(&mut *tx, TENANT, s.id, MessageRange::default())
            .await
            .unwrap()
            .len(),
        2
    );
    tx.rollback().await.unwrap();
    assert_eq!(common::dump(&pool).await, before);
}

async fn common_append(
    tx: &mut sqlx::PgConnection,
    session_id: Uuid,
) -> Vec<agentpg_schema::Message> {
    let batch: Vec<NewMessage> = (0..3)
        .map(|i| text(session_id, MessageRole::User, &format!("t{i}"), 1, 1))
        .collect();
    append_messages(&mut *tx, TENANT, session_id, &batch)
        .await
        .unwrap()
        .into_rows()
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn stream_yields_every_message_in_order(pool: PgPool) {
    use futures_util::StreamExt;
    let s = session(&pool, TENANT, "s").await;
    let all = common::conversation(&pool, s.id, 25).await;
    let streamed: Vec<_> = agentpg_repo::stream_messages(&pool, TENANT, s.id)
        .map(|m| m.unwrap())
        .collect()
        .await;
    assert_eq!(streamed, all);
    // Inside a transaction, and for another tenant (nothing) or a bad tenant (an error).
    let mut tx = pool.begin().await.unwrap();
    let n = agentpg_repo::stream_messages(&mut *tx, TENANT, s.id)
        .count()
        .await;
    assert_eq!(n, 25);
    tx.commit().await.unwrap();
    assert_eq!(
        agentpg_repo::stream_messages(&pool, OTHER, s.id)
            .count()
            .await,
        0
    );
    let items: Vec<_> = agentpg_repo::stream_messages(&pool, "", s.id)
        .collect()
        .await;
    assert!(matches!(
        items.as_slice(),
        [Err(Error::InvalidInput { .. })]
    ));
    // Dropped half-way, the connection goes back to the pool usable.
    let mut stream = agentpg_repo::stream_messages(&pool, TENANT, s.id);
    stream.next().await.unwrap().unwrap();
    drop(stream);
    assert_eq!(
        list_messages(&pool, TENANT, s.id, MessageRange::default())
            .await
            .unwrap(),
        all
    );
}
