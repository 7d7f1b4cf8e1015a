//! Retention: finalizing old compactions and deleting idle sessions, in batches, beside
//! traffic that never waits on them.

mod common;

use std::time::Duration;

use agentpg_repo::{
    append_messages, compact, delete_idle_sessions, finalize_compactions, get_session,
    revert_compaction, Cutoff, Error, FinalizeReport, IdleReport, MAX_BATCH,
};
use agentpg_schema::{CompactionEvent, MessageRole, NewSession};
use chrono::{TimeDelta, Utc};
use common::*;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

/// Compacts the two oldest messages of a fresh session of `tenant` and back-dates the event
/// by `days`.
async fn old_compaction(pool: &PgPool, tenant: &str, name: &str, days: i32) -> CompactionEvent {
    let s = common::session(pool, tenant, name).await;
    let batch: Vec<_> = (0..4)
        .map(|i| agentpg_schema::NewMessage {
            tenant_id: tenant.into(),
            ..text(s.id, MessageRole::User, &format!("m{i}"), 1, 1)
        })
        .collect();
    let stored = append_messages(pool, tenant, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    let event = compact(pool, tenant, &plan(s.id, vec![stored[0].id, stored[1].id]))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE compaction_events SET created_at = now() - make_interval(days => $2) WHERE id = $1",
    )
    .bind(event.id)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
    event
}

async fn event_row(pool: &PgPool, id: Uuid) -> CompactionEvent {
    sqlx::query_as("SELECT * FROM compaction_events WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn archived(pool: &PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM message_archive WHERE compaction_event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A connection that gives up on any lock wait after `ms` milliseconds: what "never waits"
/// means in these tests.
async fn impatient(pool: &PgPool, ms: u32) -> PoolConnection<Postgres> {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SET lock_timeout = {ms}")))
        .execute(&mut *conn)
        .await
        .unwrap();
    conn
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn old_compactions_give_up_their_archive_in_batches(pool: PgPool) {
    let old: Vec<_> = [40, 35, 31]
        .into_iter()
        .enumerate()
        .map(|(i, days)| (format!("old{i}"), days))
        .collect();
    let mut events = Vec::new();
    for (name, days) in &old {
        events.push(old_compaction(&pool, TENANT, name, *days).await);
    }
    let recent = old_compaction(&pool, TENANT, "recent", 0).await;
    let reverted = old_compaction(&pool, TENANT, "reverted", 50).await;
    revert_compaction(&pool, TENANT, reverted.id).await.unwrap();
    let theirs = old_compaction(&pool, OTHER, "theirs", 60).await;

    let report = finalize_compactions(&pool, TENANT, TimeDelta::days(30), 2)
        .await
        .unwrap();
    assert_eq!(
        report,
        FinalizeReport {
            compactions_finalized: 3,
            archived_messages_dropped: 6,
            batches: 2,
        }
    );
    for event in &events {
        let row = event_row(&pool, event.id).await;
        assert!(row.finalized_at.is_some());
        assert_eq!(row.reverted_at, None);
        assert_eq!(archived(&pool, event.id).await, 0);
        // The event stays as history; its revert is refused.
        let err = revert_compaction(&pool, TENANT, event.id)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Conflict { reason, .. } if reason.contains("archive finalized")),
            "{err}"
        );
    }
    assert_eq!(event_row(&pool, recent.id).await.finalized_at, None);
    assert_eq!(archived(&pool, recent.id).await, 2);
    assert_eq!(event_row(&pool, reverted.id).await.finalized_at, None);
    assert_eq!(event_row(&pool, theirs.id).await.finalized_at, None);
    assert_eq!(archived(&pool, theirs.id).await, 2);

    // Nothing left: one batch, nothing done. An instant as cut-off works the same.
    let report = finalize_compactions(&pool, TENANT, Utc::now() - TimeDelta::days(1), 100)
        .await
        .unwrap();
    assert_eq!(report.compactions_finalized, 0);
    assert_eq!(report.batches, 1);
    // The recent one, with a std Duration of zero age (everything up to now).
    let report = finalize_compactions(&pool, TENANT, Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(report.compactions_finalized, 1);
    // The other tenant's goes when its tenant asks.
    let report = finalize_compactions(&pool, OTHER, TimeDelta::days(30), 100)
        .await
        .unwrap();
    assert_eq!(
        (
            report.compactions_finalized,
            report.archived_messages_dropped
        ),
        (1, 2)
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn bad_retention_input_writes_nothing(pool: PgPool) {
    old_compaction(&pool, TENANT, "old", 40).await;
    let s = session(&pool, TENANT, "idle").await;
    sqlx::query("UPDATE sessions SET updated_at = now() - interval '90 days' WHERE id = $1")
        .bind(s.id)
        .execute(&pool)
        .await
        .unwrap();
    let before = dump(&pool).await;
    let future: Vec<Cutoff> = vec![
        (Utc::now() + TimeDelta::hours(1)).into(),
        TimeDelta::seconds(-1).into(),
    ];
    for cutoff in future {
        for result in [
            finalize_compactions(&pool, TENANT, cutoff, 10)
                .await
                .map(|_| ()),
            delete_idle_sessions(&pool, TENANT, cutoff, 10)
                .await
                .map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("future")),
                "{err}"
            );
        }
    }
    for batch in [0, MAX_BATCH + 1] {
        for result in [
            finalize_compactions(&pool, TENANT, TimeDelta::days(1), batch)
                .await
                .map(|_| ()),
            delete_idle_sessions(&pool, TENANT, TimeDelta::days(1), batch)
                .await
                .map(|_| ()),
        ] {
            assert!(matches!(result, Err(Error::InvalidInput { .. })));
        }
    }
    for tenant in ["", "a\0b"] {
        assert!(matches!(
            finalize_compactions(&pool, tenant, TimeDelta::days(1), 1).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            delete_idle_sessions(&pool, tenant, TimeDelta::days(1), 1).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    assert_eq!(dump(&pool).await, before);
}

/// Back-dates session `id`'s last update by `days`.
async fn idle_for(pool: &PgPool, id: Uuid, days: i32) {
    sqlx::query("UPDATE sessions SET updated_at = now() - make_interval(days => $2) WHERE id = $1")
        .bind(id)
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn idle_sessions_go_children_first_and_active_families_stay(pool: PgPool) {
    let child_of = |parent: Uuid, name: &str| NewSession {
        parent_session_id: Some(parent),
        ..NewSession::new(TENANT.into(), name.into())
    };
    // An idle family (parent, child, grandchild), an idle parent with an active child, an
    // active session, and another tenant's idle session.
    let idle_parent = session(&pool, TENANT, "idle-parent").await;
    let idle_child = agentpg_repo::create_session(&pool, &child_of(idle_parent.id, "idle-child"))
        .await
        .unwrap();
    let idle_grandchild =
        agentpg_repo::create_session(&pool, &child_of(idle_child.id, "idle-grandchild"))
            .await
            .unwrap();
    let busy_parent = session(&pool, TENANT, "busy-parent").await;
    let busy_child = agentpg_repo::create_session(&pool, &child_of(busy_parent.id, "busy-child"))
        .await
        .unwrap();
    let active = session(&pool, TENANT, "active").await;
    let theirs = session(&pool, OTHER, "theirs").await;
    conversation(&pool, idle_parent.id, 3).await;
    for id in [
        idle_parent.id,
        idle_child.id,
        idle_grandchild.id,
        busy_parent.id,
        theirs.id,
    ] {
        idle_for(&pool, id, 40).await;
    }
    let report = delete_idle_sessions(&pool, TENANT, Duration::from_secs(30 * 86_400), 1)
        .await
        .unwrap();
    assert_eq!(
        report,
        IdleReport {
            sessions_deleted: 3,
            batches: 4,
        }
    );
    for id in [idle_parent.id, idle_child.id, idle_grandchild.id] {
        assert!(get_session(&pool, TENANT, id).await.unwrap().is_none());
    }
    assert_eq!(all_messages(&pool, idle_parent.id).await, vec![]);
    for id in [busy_parent.id, busy_child.id, active.id] {
        assert!(get_session(&pool, TENANT, id).await.unwrap().is_some());
    }
    assert!(get_session(&pool, OTHER, theirs.id)
        .await
        .unwrap()
        .is_some());
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn retention_skips_what_traffic_holds_and_traffic_never_waits_on_retention(pool: PgPool) {
    // 1. A session in the middle of an append (uncommitted) is skipped, without waiting.
    let busy = session(&pool, TENANT, "busy").await;
    let quiet = session(&pool, TENANT, "quiet").await;
    idle_for(&pool, busy.id, 40).await;
    idle_for(&pool, quiet.id, 40).await;
    let mut writer = pool.begin().await.unwrap();
    append_messages(
        &mut *writer,
        TENANT,
        busy.id,
        &[text(busy.id, MessageRole::User, "still here", 1, 1)],
    )
    .await
    .unwrap();
    let mut retention = impatient(&pool, 2_000).await;
    let report = delete_idle_sessions(&mut *retention, TENANT, TimeDelta::days(30), 10)
        .await
        .unwrap();
    assert_eq!(report.sessions_deleted, 1, "only the quiet session");
    writer.commit().await.unwrap();
    assert!(get_session(&pool, TENANT, busy.id).await.unwrap().is_some());
    // Its append made it active again: a second run leaves it.
    let report = delete_idle_sessions(&mut *retention, TENANT, TimeDelta::days(30), 10)
        .await
        .unwrap();
    assert_eq!(report.sessions_deleted, 0);

    // 2. A compaction being reverted (uncommitted) keeps its archive; finalization skips it
    //    without waiting, and the revert then completes.
    let event = old_compaction(&pool, TENANT, "reverting", 40).await;
    let mut reverter = pool.begin().await.unwrap();
    revert_compaction(&mut *reverter, TENANT, event.id)
        .await
        .unwrap();
    let report = finalize_compactions(&mut *retention, TENANT, TimeDelta::days(30), 10)
        .await
        .unwrap();
    assert_eq!(report.compactions_finalized, 0);
    reverter.commit().await.unwrap();
    let row = event_row(&pool, event.id).await;
    assert!(row.reverted_at.is_some() && row.finalized_at.is_none());

    // 3. A finalization in progress (uncommitted) holds only its events: appends, compactions
    //    and metadata updates of the same session go on without waiting; a revert of the
    //    event waits for it, then sees the archive finalized.
    let event = old_compaction(&pool, TENANT, "finalizing", 40).await;
    let mut finalizer = pool.begin().await.unwrap();
    let report = finalize_compactions(&mut *finalizer, TENANT, TimeDelta::days(30), 10)
        .await
        .unwrap();
    assert_eq!(report.compactions_finalized, 1);
    let mut traffic = impatient(&pool, 2_000).await;
    let appended = append_messages(
        &mut *traffic,
        TENANT,
        event.session_id,
        &[
            text(event.session_id, MessageRole::User, "a", 1, 1),
            text(event.session_id, MessageRole::User, "b", 1, 1),
        ],
    )
    .await
    .unwrap()
    .into_rows();
    compact(
        &mut *traffic,
        TENANT,
        &plan(event.session_id, vec![appended[0].id]),
    )
    .await
    .unwrap();
    // Undo that newer compaction (it is not the finalizer's), so the old one is the latest
    // standing again.
    let newer = agentpg_repo::list_compactions(&mut *traffic, TENANT, event.session_id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id != event.id)
        .unwrap();
    revert_compaction(&mut *traffic, TENANT, newer.id)
        .await
        .unwrap();
    let pool2 = pool.clone();
    let waiting = tokio::spawn(async move { revert_compaction(&pool2, TENANT, event.id).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the revert waits for the finalization"
    );
    finalizer.commit().await.unwrap();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains("archive finalized")),
        "{err}"
    );
    assert_eq!(archived(&pool, event.id).await, 0);
}
