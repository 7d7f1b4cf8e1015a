//! Conversation integrity: a preserved message is never compacted away, tool calls stay with
//! their results, appends are safe to retry and may be conditional, and every decision holds
//! under the lock it was made under — each shown with two connections interleaved on purpose.

mod common;

use agentpg_repo::{
    append_messages, append_messages_after, compact, delete_messages, list_messages, set_preserved,
    Error, LastSeen, MessageRange, ToolPairs,
};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage};
use common::{
    all_messages, conversation, dump, plan, session, session_row, text, until_someone_waits, usage,
    TENANT,
};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

fn message(session_id: Uuid, role: MessageRole, blocks: Vec<ContentBlock>) -> NewMessage {
    NewMessage {
        content: Some(Json(blocks)),
        usage: Some(Json(usage(1, 1))),
        ..NewMessage::new(TENANT.into(), session_id, role)
    }
}

/// user, assistant calling tool "t1", user with its result, assistant.
async fn tool_conversation(pool: &PgPool, session_id: Uuid) -> Vec<Message> {
    append_messages(
        pool,
        TENANT,
        session_id,
        &[
            message(
                session_id,
                MessageRole::User,
                vec![ContentBlock::text("find it")],
            ),
            message(
                session_id,
                MessageRole::Assistant,
                vec![
                    ContentBlock::text("searching"),
                    ContentBlock::tool_use("t1", "search", json!({"q": "x"})),
                ],
            ),
            message(
                session_id,
                MessageRole::User,
                vec![ContentBlock::tool_result("t1", json!("found"))],
            ),
            message(
                session_id,
                MessageRole::Assistant,
                vec![ContentBlock::text("done")],
            ),
        ],
    )
    .await
    .unwrap()
    .into_rows()
}

/// Transaction A marks M preserved and has not committed; a compaction removing M blocks on the
/// session row A's `set_preserved` locked; A commits. The compaction then reads M preserved
/// and refuses. (The compaction's removal re-checks the flag as well, for writers that set it
/// without the session lock.)
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_message_preserved_while_a_compaction_waits_is_not_compacted_away(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let m = all[1].id;
    let mut a = pool.begin().await.unwrap();
    set_preserved(&mut *a, TENANT, s.id, m, true).await.unwrap();

    let compaction = tokio::spawn({
        let pool = pool.clone();
        async move { compact(&pool, TENANT, &plan(s.id, vec![all[1].id, all[2].id])).await }
    });
    until_someone_waits(&pool).await;
    a.commit().await.unwrap();
    let err = compaction.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("is preserved")),
        "{err:?}"
    );

    let stored = all_messages(&pool, s.id).await;
    assert_eq!(stored.len(), 4, "nothing removed");
    assert!(stored.iter().any(|x| x.id == m && x.is_preserved));
    assert_eq!(
        common::counts(&pool).await,
        [1, 4, 0, 0],
        "no event, no archive"
    );
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 12);
}

/// The other order: the compaction removed M first; marking it preserved afterwards finds no
/// message and says so (it never reports success for a message that is gone).
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn preserving_a_message_a_compaction_removes_reports_not_found(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let mut b = pool.begin().await.unwrap();
    compact(&mut b, TENANT, &plan(s.id, vec![all[1].id]))
        .await
        .unwrap();
    let preserve = tokio::spawn({
        let pool = pool.clone();
        async move { set_preserved(&pool, TENANT, s.id, all[1].id, true).await }
    });
    until_someone_waits(&pool).await;
    b.commit().await.unwrap();
    let err = preserve.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_compaction_that_would_split_a_tool_pair_is_refused(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let m = tool_conversation(&pool, s.id).await;
    let before = dump(&pool).await;
    // Removing the call but keeping its result, and the reverse.
    for remove in [vec![m[0].id, m[1].id], vec![m[2].id, m[3].id]] {
        let err = compact(&pool, TENANT, &plan(s.id, remove))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("t1")),
            "{err:?}"
        );
        assert_eq!(dump(&pool).await, before, "nothing written");
    }
    // Removing both, or neither, is fine.
    compact(&pool, TENANT, &plan(s.id, vec![m[0].id, m[1].id, m[2].id]))
        .await
        .unwrap();
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn deleting_half_a_tool_pair_is_refused_unless_asked_for(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let m = tool_conversation(&pool, s.id).await;
    let before = dump(&pool).await;
    let err = delete_messages(&pool, TENANT, s.id, &[m[2].id], ToolPairs::Keep)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("t1")),
        "{err:?}"
    );
    assert_eq!(dump(&pool).await, before);
    let deleted = delete_messages(&pool, TENANT, s.id, &[m[1].id, m[2].id], ToolPairs::Keep)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the whole pair goes");
    let deleted = delete_messages(&pool, TENANT, s.id, &[m[0].id], ToolPairs::AllowSplit)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
}

/// A tool result appended by a transaction the delete waits for is seen by the delete: the
/// decision is made after the session lock.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_tool_result_appended_while_a_delete_waits_protects_its_call(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let call = append_messages(
        &pool,
        TENANT,
        s.id,
        &[message(
            s.id,
            MessageRole::Assistant,
            vec![ContentBlock::tool_use("t9", "run", json!({}))],
        )],
    )
    .await
    .unwrap()
    .into_rows();
    let mut a = pool.begin().await.unwrap();
    append_messages(
        &mut *a,
        TENANT,
        s.id,
        &[message(
            s.id,
            MessageRole::User,
            vec![ContentBlock::tool_result("t9", json!("ok"))],
        )],
    )
    .await
    .unwrap();
    let delete = tokio::spawn({
        let pool = pool.clone();
        async move { delete_messages(&pool, TENANT, s.id, &[call[0].id], ToolPairs::Keep).await }
    });
    until_someone_waits(&pool).await;
    a.commit().await.unwrap();
    let err = delete.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("t9")),
        "{err:?}"
    );
    assert_eq!(all_messages(&pool, s.id).await.len(), 2);
}

/// The same for a compaction: it reads the messages after taking the session lock.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_tool_result_appended_while_a_compaction_waits_protects_its_call(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let call = append_messages(
        &pool,
        TENANT,
        s.id,
        &[message(
            s.id,
            MessageRole::Assistant,
            vec![ContentBlock::tool_use("t8", "run", json!({}))],
        )],
    )
    .await
    .unwrap()
    .into_rows();
    let mut a = pool.begin().await.unwrap();
    append_messages(
        &mut *a,
        TENANT,
        s.id,
        &[message(
            s.id,
            MessageRole::User,
            vec![ContentBlock::tool_result("t8", json!("ok"))],
        )],
    )
    .await
    .unwrap();
    let compaction = tokio::spawn({
        let pool = pool.clone();
        async move { compact(&pool, TENANT, &plan(s.id, vec![call[0].id])).await }
    });
    until_someone_waits(&pool).await;
    a.commit().await.unwrap();
    let err = compaction.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("t8")),
        "{err:?}"
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_retried_batch_is_stored_once(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let batch: Vec<NewMessage> = (0..3)
        .map(|i| NewMessage {
            id: Some(Uuid::new_v4()),
            ..text(s.id, MessageRole::User, &format!("m{i}"), 2, 3)
        })
        .collect();
    let first = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    let snapshot = dump(&pool).await;
    // The full retry: the stored rows, nothing changed, tokens counted once.
    let again = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    assert_eq!(again, first);
    assert_eq!(
        dump(&pool).await,
        snapshot,
        "nothing written, updated_at untouched"
    );
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 15);

    // A longer batch whose first part is stored: the rest is stored, in order.
    let mut longer = batch.clone();
    longer.push(NewMessage {
        id: Some(Uuid::new_v4()),
        ..text(s.id, MessageRole::Assistant, "m3", 1, 0)
    });
    let stored = append_messages(&pool, TENANT, s.id, &longer)
        .await
        .unwrap()
        .into_rows();
    assert_eq!(&stored[..3], &first[..]);
    assert_eq!(stored[3].id, longer[3].id.unwrap());
    assert!(stored[3].position > first[2].position);
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 16);
    assert_eq!(all_messages(&pool, s.id).await, stored);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn an_id_stored_with_other_values_or_elsewhere_is_a_conflict_naming_it(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let other = session(&pool, TENANT, "other").await;
    let id = Uuid::new_v4();
    append_messages(
        &pool,
        TENANT,
        s.id,
        &[NewMessage {
            id: Some(id),
            ..text(s.id, MessageRole::User, "original", 1, 1)
        }],
    )
    .await
    .unwrap();
    let snapshot = dump(&pool).await;
    let fresh = text(s.id, MessageRole::User, "fresh", 1, 1);
    let changed = NewMessage {
        id: Some(id),
        ..text(s.id, MessageRole::User, "changed", 1, 1)
    };
    let err = append_messages(&pool, TENANT, s.id, &[fresh, changed])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains(&id.to_string()) && reason.contains("other values")),
        "{err:?}"
    );
    let elsewhere = NewMessage {
        id: Some(id),
        ..text(other.id, MessageRole::User, "original", 1, 1)
    };
    let err = append_messages(&pool, TENANT, other.id, &[elsewhere])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains(&id.to_string()) && reason.contains("another session")),
        "{err:?}"
    );
    assert_eq!(
        dump(&pool).await,
        snapshot,
        "nothing of either batch written"
    );
    // Another tenant may use the same id: ids are the tenant's own.
    let theirs = session(&pool, "globex", "s").await;
    append_messages(
        &pool,
        "globex",
        theirs.id,
        &[NewMessage {
            id: Some(id),
            tenant_id: "globex".into(),
            ..text(theirs.id, MessageRole::User, "theirs", 1, 1)
        }],
    )
    .await
    .unwrap();
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_conditional_append_fails_if_anything_was_appended_since(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let first = append_messages_after(
        &pool,
        TENANT,
        s.id,
        LastSeen::Nothing,
        &[text(s.id, MessageRole::User, "a", 1, 1)],
    )
    .await
    .unwrap()
    .into_rows();
    assert_eq!(
        session_row(&pool, s.id).await.last_position,
        Some(first[0].position)
    );
    // Another writer appends.
    append_messages(
        &pool,
        TENANT,
        s.id,
        &[text(s.id, MessageRole::User, "b", 1, 1)],
    )
    .await
    .unwrap();
    let snapshot = dump(&pool).await;
    for stale in [LastSeen::Nothing, LastSeen::Position(first[0].position)] {
        let err = append_messages_after(
            &pool,
            TENANT,
            s.id,
            stale,
            &[text(s.id, MessageRole::User, "c", 1, 1)],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { reason, .. } if reason.contains("moved on")),
            "{err:?}"
        );
    }
    assert_eq!(dump(&pool).await, snapshot);
    let tip = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap()
        .last()
        .unwrap()
        .position;
    let batch = [NewMessage {
        id: Some(Uuid::new_v4()),
        ..text(s.id, MessageRole::User, "c", 1, 1)
    }];
    let stored = append_messages_after(&pool, TENANT, s.id, LastSeen::Position(tip), &batch)
        .await
        .unwrap()
        .into_rows();
    // Its retry (the position it expected has moved, by this very batch) returns it.
    let retried = append_messages_after(&pool, TENANT, s.id, LastSeen::Position(tip), &batch)
        .await
        .unwrap()
        .into_rows();
    assert_eq!(retried, stored);
}

/// Two writers expecting the same last message: one wins, the other is told, even when it
/// waited on the session lock while the first committed.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_conditional_append_decides_on_the_locked_session(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let seen = append_messages(
        &pool,
        TENANT,
        s.id,
        &[text(s.id, MessageRole::User, "a", 1, 1)],
    )
    .await
    .unwrap()
    .into_rows()[0]
        .position;
    let mut a = pool.begin().await.unwrap();
    append_messages_after(
        &mut *a,
        TENANT,
        s.id,
        LastSeen::Position(seen),
        &[text(s.id, MessageRole::Assistant, "first", 1, 1)],
    )
    .await
    .unwrap();
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            append_messages_after(
                &pool,
                TENANT,
                s.id,
                LastSeen::Position(seen),
                &[text(s.id, MessageRole::Assistant, "second", 1, 1)],
            )
            .await
        }
    });
    until_someone_waits(&pool).await;
    a.commit().await.unwrap();
    let err = second.await.unwrap().unwrap_err();
    // It names the session's current last position (the first writer's), not the one its
    // statement's snapshot saw.
    let now = format!("its last message is at position {}, ", seen + 1);
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains(&now)),
        "{err:?}"
    );
    assert_eq!(all_messages(&pool, s.id).await.len(), 2);
}
