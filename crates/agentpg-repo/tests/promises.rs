//! The promises that must hold off the happy path: a retry that lands after a compaction or
//! while the first call still runs, JSON that tries to smuggle a value past the checks, a tool
//! call still running when a compaction comes, retention beside a preserve, extreme arguments.
//! Each test is the user-facing promise; the races are forced, not hoped for.

mod common;

use std::time::Duration;

use agentpg_repo::{
    append_messages, append_messages_after, compact, create_session, delete_idle_sessions,
    delete_messages, finalize_compactions, get_message, list_messages, plan_compaction,
    recompute_total_tokens, revert_compaction, set_preserved, CompactionPolicy, Cutoff, Error,
    LastSeen, MessageRange, PendingToolCalls, StoredMessage, Summary, ToolPairs,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession, Usage};
use chrono::{TimeDelta, Utc};
use common::{
    all_messages, conversation, counts, dump, plan, session, session_row, text,
    until_someone_waits, usage, TENANT,
};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// `n` text messages with ids the caller chose (a retry-safe batch).
fn batch_with_ids(session_id: Uuid, n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            id: Some(Uuid::new_v4()),
            ..text(session_id, MessageRole::User, &format!("m{i}"), 10, 5)
        })
        .collect()
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_batch_retried_after_a_compaction_removed_it_is_not_stored_again(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let batch = batch_with_ids(s.id, 3);
    let first = append_messages(&pool, TENANT, s.id, &batch).await.unwrap();
    let ids: Vec<Uuid> = first.rows().map(|m| m.id).collect();
    let event = compact(&pool, TENANT, &plan(s.id, ids[..2].to_vec()))
        .await
        .unwrap();
    let before = dump(&pool).await;

    // The retry lands after the compaction: nothing is written, the first two come back as
    // archived (as they were stored), the third as it is.
    let retry = append_messages(&pool, TENANT, s.id, &batch).await.unwrap();
    assert_eq!(dump(&pool).await, before, "the retry wrote nothing");
    assert_eq!(
        retry.total_tokens, 15,
        "the third message's tokens, counted once"
    );
    for (i, stored) in retry.messages.iter().enumerate() {
        let original = first.messages[i].message();
        assert_eq!(stored.message(), original, "message {i} as it was stored");
        match (i, stored) {
            (
                0 | 1,
                StoredMessage::Archived {
                    compaction_event_id,
                    ..
                },
            ) => {
                assert_eq!(*compaction_event_id, event.id)
            }
            (2, StoredMessage::Live(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A retry whose archived message differs from what was sent is a clash, not a new message.
    let mut changed = batch.clone();
    changed[0].content = Some(Json(vec![ContentBlock::text("other")]));
    let err = append_messages(&pool, TENANT, s.id, &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains(&ids[0].to_string()) && reason.contains("archived")),
        "{err:?}"
    );
    // Another session cannot take an archived id either.
    let other = session(&pool, TENANT, "other").await;
    let before = dump(&pool).await;
    let mut elsewhere = batch[0].clone();
    elsewhere.session_id = other.id;
    let err = append_messages(&pool, TENANT, other.id, &[elsewhere])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains("another session")),
        "{err:?}"
    );
    assert_eq!(dump(&pool).await, before);

    // The revert still restores everything exactly (no id was stored twice).
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let rows = all_messages(&pool, s.id).await;
    assert_eq!(rows, first.clone().into_rows());
    assert_eq!(
        session_row(&pool, s.id).await.total_tokens,
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap()
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_summary_cannot_take_the_id_of_an_archived_or_live_message(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 6).await;
    compact(&pool, TENANT, &plan(s.id, vec![all[0].id]))
        .await
        .unwrap();
    let before = dump(&pool).await;
    for taken in [all[0].id, all[5].id] {
        let mut p = plan(s.id, vec![all[1].id]);
        p.summary = Some(Summary {
            id: Some(taken),
            role: MessageRole::User,
            content: vec![ContentBlock::text("summary")],
            usage: None,
            metadata: None,
        });
        let err = compact(&pool, TENANT, &p).await.unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { reason, .. } if reason.contains("is taken")),
            "{err:?}"
        );
        assert_eq!(dump(&pool).await, before, "nothing written");
    }
}

/// The client times out while its append still runs (here: the first append's transaction is
/// held open), and sends the batch again. The retry waits for the first one and returns the
/// rows it stored; nothing is stored twice.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_retry_sent_while_the_first_append_still_runs_returns_the_stored_rows(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 2).await;
    let batch = batch_with_ids(s.id, 5);
    let mut first_tx = pool.begin().await.unwrap();
    let first = append_messages(&mut *first_tx, TENANT, s.id, &batch)
        .await
        .unwrap();
    let retry = tokio::spawn({
        let (pool, batch) = (pool.clone(), batch.clone());
        async move { append_messages(&pool, TENANT, s.id, &batch).await }
    });
    until_someone_waits(&pool).await;
    first_tx.commit().await.unwrap();
    let retry = retry.await.unwrap().unwrap();
    assert_eq!(
        retry.messages, first.messages,
        "the rows the first append stored"
    );
    assert_eq!(retry.total_tokens, first.total_tokens);
    assert_eq!(all_messages(&pool, s.id).await.len(), 7);
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 6 + 5 * 15);
}

/// What an append returns is what the database holds: timestamps as PostgreSQL rounds them,
/// JSON as it stores it; the first call and its retry return the same rows.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn an_append_returns_what_is_stored_not_what_was_sent(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let fine: chrono::DateTime<Utc> = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
    let m = NewMessage {
        id: Some(Uuid::new_v4()),
        created_at: Some(fine),
        metadata: Some(json!({"zz": 1, "a": {"y": [1.5, 2], "b": null}})),
        ..text(s.id, MessageRole::User, "hi", 1, 1)
    };
    let first = append_messages(&pool, TENANT, s.id, std::slice::from_ref(&m))
        .await
        .unwrap();
    let stored = get_message(&pool, TENANT, s.id, m.id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.rows().next(),
        Some(&stored),
        "the stored row, read back"
    );
    assert_ne!(stored.created_at, fine, "PostgreSQL keeps microseconds");
    assert_eq!(
        stored.created_at,
        "2026-01-02T03:04:05.123456Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
    );
    let retry = append_messages(&pool, TENANT, s.id, &[m]).await.unwrap();
    assert_eq!(
        retry.messages, first.messages,
        "the retry returns the same rows"
    );
}

/// A compaction's summary is deleted, and its id is then used by a message of another session
/// of the tenant. Reverting the compaction removes its own summary only: the other session's
/// message and total stay as they are.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_revert_never_deletes_another_sessions_message(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let summary_id = Uuid::new_v4();
    let mut p = plan(s.id, vec![all[0].id, all[1].id]);
    p.summary = Some(Summary {
        id: Some(summary_id),
        role: MessageRole::User,
        content: vec![ContentBlock::text("summary")],
        usage: Some(usage(2, 2)),
        metadata: None,
    });
    let event = compact(&pool, TENANT, &p).await.unwrap();
    delete_messages(&pool, TENANT, s.id, &[summary_id], ToolPairs::Keep)
        .await
        .unwrap();
    let other = session(&pool, TENANT, "other").await;
    let reused = NewMessage {
        id: Some(summary_id),
        ..text(other.id, MessageRole::User, "mine", 7, 7)
    };
    append_messages(&pool, TENANT, other.id, &[reused])
        .await
        .unwrap();
    let other_before = (
        all_messages(&pool, other.id).await,
        session_row(&pool, other.id).await.total_tokens,
    );

    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    assert_eq!(
        (
            all_messages(&pool, other.id).await,
            session_row(&pool, other.id).await.total_tokens
        ),
        other_before,
        "the other session is untouched"
    );
    assert_eq!(all_messages(&pool, s.id).await, all);
    assert_eq!(
        session_row(&pool, s.id).await.total_tokens,
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap()
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn json_extra_fields_cannot_override_what_is_checked(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 2).await;
    let before = dump(&pool).await;
    // A usage whose extra names input_tokens: it would be stored as the count.
    let mut lying = Usage {
        input_tokens: 1,
        output_tokens: 500,
        ..Usage::default()
    };
    lying.extra.insert("input_tokens".into(), json!(-1999));
    // A tool use whose extra id is longer than the checked one; a text block posing as a call.
    let mut long_id = ContentBlock::tool_use("ok", "f", json!({}));
    if let ContentBlock::ToolUse(b) = &mut long_id {
        b.extra.insert("id".into(), json!("x".repeat(300)));
    }
    let mut retyped = ContentBlock::text("hi");
    if let ContentBlock::Text(b) = &mut retyped {
        b.extra.insert("type".into(), json!("tool_use"));
    }
    let disguised = ContentBlock::Unknown(
        json!({"type": "tool_use", "id": "y".repeat(300), "name": "f", "input": {}})
            .as_object()
            .unwrap()
            .clone(),
    );
    let cases = [
        NewMessage {
            usage: Some(Json(lying)),
            ..text(s.id, MessageRole::Assistant, "x", 0, 0)
        },
        NewMessage {
            content: Some(Json(vec![long_id])),
            ..text(s.id, MessageRole::Assistant, "x", 0, 0)
        },
        NewMessage {
            content: Some(Json(vec![retyped])),
            ..text(s.id, MessageRole::Assistant, "x", 0, 0)
        },
        NewMessage {
            content: Some(Json(vec![disguised])),
            ..text(s.id, MessageRole::Assistant, "x", 0, 0)
        },
    ];
    for case in cases {
        let err = append_messages(&pool, TENANT, s.id, std::slice::from_ref(&case))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    }
    assert_eq!(dump(&pool).await, before, "nothing written");
    assert_eq!(session_row(&pool, s.id).await.total_tokens, 6);
}

/// A tool call whose result has not arrived (the tool is still running) stays: the planner
/// keeps it, a compaction or delete that would remove it is refused, and only a plan that says
/// `PendingToolCalls::Remove` (or a delete that allows splits) removes it.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_tool_call_still_running_is_never_compacted_away_unasked(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let stored = append_messages(
        &pool,
        TENANT,
        s.id,
        &[
            text(s.id, MessageRole::User, "question", 10, 0),
            NewMessage {
                content: Some(Json(vec![ContentBlock::tool_use(
                    "call_running",
                    "search",
                    json!({"q": "x"}),
                )])),
                usage: Some(Json(usage(0, 10))),
                ..NewMessage::new(TENANT.into(), s.id, MessageRole::Assistant)
            },
        ],
    )
    .await
    .unwrap()
    .into_rows();
    let call = stored[1].id;
    let before = dump(&pool).await;

    let proposal = plan_compaction(&pool, TENANT, s.id, &CompactionPolicy::new(0, "t"))
        .await
        .unwrap();
    let proposed = proposal.plan.map(|p| p.remove).unwrap_or_default();
    assert_eq!(
        proposed,
        vec![stored[0].id],
        "the running call is not proposed"
    );

    let err = compact(&pool, TENANT, &plan(s.id, vec![stored[0].id, call]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("call_running") && reason.contains("no result yet")),
        "{err:?}"
    );
    let err = delete_messages(&pool, TENANT, s.id, &[call], ToolPairs::Keep)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("call_running")),
        "{err:?}"
    );
    assert_eq!(dump(&pool).await, before, "nothing written");

    // Once the result is in, the pair goes together.
    append_messages(
        &pool,
        TENANT,
        s.id,
        &[NewMessage {
            content: Some(Json(vec![ContentBlock::tool_result(
                "call_running",
                json!("found"),
            )])),
            ..NewMessage::new(TENANT.into(), s.id, MessageRole::User)
        }],
    )
    .await
    .unwrap();
    let mut policy = CompactionPolicy::new(0, "t");
    policy.keep_last_messages = 0;
    let proposal = plan_compaction(&pool, TENANT, s.id, &policy).await.unwrap();
    assert_eq!(proposal.plan.unwrap().remove.len(), 3);

    // Asked for explicitly, a running call is removed.
    let s2 = session(&pool, TENANT, "s2").await;
    let running = append_messages(
        &pool,
        TENANT,
        s2.id,
        &[NewMessage {
            content: Some(Json(vec![ContentBlock::tool_use("c2", "f", json!({}))])),
            ..NewMessage::new(TENANT.into(), s2.id, MessageRole::Assistant)
        }],
    )
    .await
    .unwrap()
    .into_rows();
    let mut p = plan(s2.id, vec![running[0].id]);
    p.pending_tool_calls = PendingToolCalls::Remove;
    compact(&pool, TENANT, &p).await.unwrap();
    assert!(all_messages(&pool, s2.id).await.is_empty());
}

/// `ToolPairs::AllowSplit` deletes a tool result without its call, however few messages the
/// delete names.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn allow_split_deletes_a_result_without_its_call(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let stored = append_messages(
        &pool,
        TENANT,
        s.id,
        &[
            NewMessage {
                content: Some(Json(vec![ContentBlock::tool_use("c", "f", json!({}))])),
                ..NewMessage::new(TENANT.into(), s.id, MessageRole::Assistant)
            },
            NewMessage {
                content: Some(Json(vec![ContentBlock::tool_result("c", json!("r"))])),
                ..NewMessage::new(TENANT.into(), s.id, MessageRole::User)
            },
        ],
    )
    .await
    .unwrap()
    .into_rows();
    let err = delete_messages(&pool, TENANT, s.id, &[stored[1].id], ToolPairs::Keep)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    let deleted = delete_messages(&pool, TENANT, s.id, &[stored[1].id], ToolPairs::AllowSplit)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(all_messages(&pool, s.id).await, vec![stored[0].clone()]);
}

/// Preserving a message is activity: the session is no longer idle. And retention never
/// waits for a preserve in progress: it skips that session.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn retention_skips_a_session_being_preserved_and_then_sees_it_active(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 2).await;
    sqlx::query("UPDATE sessions SET updated_at = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(Utc::now() - TimeDelta::hours(2))
        .bind(TENANT)
        .bind(s.id)
        .execute(&pool)
        .await
        .unwrap();
    let mut open = pool.begin().await.unwrap();
    set_preserved(&mut *open, TENANT, s.id, all[0].id, true)
        .await
        .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        delete_idle_sessions(&pool, TENANT, TimeDelta::hours(1), 100),
    )
    .await
    .expect("retention never waits on traffic")
    .unwrap();
    assert_eq!(
        report.sessions_deleted, 0,
        "the session being preserved is skipped"
    );
    open.commit().await.unwrap();
    let report = delete_idle_sessions(&pool, TENANT, TimeDelta::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(report.sessions_deleted, 0, "preserving made it active");
    assert!(session_row(&pool, s.id).await.updated_at > Utc::now() - TimeDelta::minutes(1));
    assert!(all_messages(&pool, s.id).await[0].is_preserved);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn extreme_arguments_are_typed_answers_not_panics(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 3).await;
    for range in [
        MessageRange::last(u64::MAX),
        MessageRange {
            limit: Some(u64::MAX),
            ..MessageRange::default()
        },
        MessageRange::last(i64::MAX as u64 + 1),
    ] {
        let err = list_messages(&pool, TENANT, s.id, range).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{range:?}: {err:?}"
        );
    }
    assert_eq!(
        list_messages(&pool, TENANT, s.id, MessageRange::last(i64::MAX as u64))
            .await
            .unwrap()
            .len(),
        3
    );
    // Older than anything PostgreSQL holds: nothing is selected, nothing fails.
    for cutoff in [
        Cutoff::Age(TimeDelta::days(365 * 10_000)),
        Cutoff::Age(TimeDelta::MAX),
        Cutoff::from(std::time::Duration::MAX),
        Cutoff::Before(chrono::DateTime::<Utc>::MIN_UTC),
    ] {
        let report = delete_idle_sessions(&pool, TENANT, cutoff, 10)
            .await
            .unwrap();
        assert_eq!(report.sessions_deleted, 0, "{cutoff:?}");
        let report = finalize_compactions(&pool, TENANT, cutoff, 10)
            .await
            .unwrap();
        assert_eq!(report.compactions_finalized, 0, "{cutoff:?}");
    }
    // The counters are the repo's: a session cannot start with a last position.
    let err = create_session(
        &pool,
        &NewSession {
            last_position: Some(7),
            ..NewSession::new(TENANT.into(), "with-position".into())
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(counts(&pool).await[0], 1);
}

/// Many writers that have seen nothing race to append the first message: exactly one wins.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn one_first_message_wins_a_race_of_writers_that_saw_nothing(pool: PgPool) {
    for round in 0..5 {
        let s = session(&pool, TENANT, &format!("race-{round}")).await;
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    append_messages_after(
                        &pool,
                        TENANT,
                        s.id,
                        LastSeen::Nothing,
                        &[text(s.id, MessageRole::User, &format!("w{i}"), 1, 0)],
                    )
                    .await
                })
            })
            .collect();
        let mut won = 0;
        for w in writers {
            match w.await.unwrap() {
                Ok(_) => won += 1,
                Err(Error::Conflict { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1, "round {round}");
        assert_eq!(all_messages(&pool, s.id).await.len(), 1);
    }
}

/// A summary preserved after its compaction is kept: reverting the compaction would delete it,
/// so the revert is refused until the summary is unpreserved.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_revert_never_deletes_a_preserved_summary(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 4).await;
    let mut p = plan(s.id, vec![all[0].id, all[1].id]);
    p.summary = Some(Summary {
        id: None,
        role: MessageRole::User,
        content: vec![ContentBlock::text("summary")],
        usage: None,
        metadata: None,
    });
    let event = compact(&pool, TENANT, &p).await.unwrap();
    let summary = event.summary_message_id.unwrap();
    set_preserved(&pool, TENANT, s.id, summary, true)
        .await
        .unwrap();
    let before = dump(&pool).await;
    let err = revert_compaction(&pool, TENANT, event.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains("is preserved")),
        "{err:?}"
    );
    assert_eq!(dump(&pool).await, before, "nothing written");
    set_preserved(&pool, TENANT, s.id, summary, false)
        .await
        .unwrap();
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    assert_eq!(all_messages(&pool, s.id).await.len(), 4);
}
