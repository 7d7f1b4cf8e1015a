//! Following a session: every event exactly once and in commit order, from any cursor, across
//! compactions, reverts, deletes, concurrent writers, a lost notification, a dropped
//! connection while a writer commits; tenants and row-level security.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use agentpg_repo::rls::{create_tenant_role, tenant_connect_options};
use agentpg_repo::*;
use agentpg_schema::{MessageRole, NewMessage};
use common::*;
use futures_util::StreamExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a test waits for an event before it calls the follower stuck.
const PATIENCE: Duration = Duration::from_secs(30);

/// An event as its kind and ids: what must be the same however late a follower reads it.
fn shape(event: &SessionEvent) -> String {
    match event {
        SessionEvent::Appended(m) => format!("appended {}", m.id),
        SessionEvent::Compacted { event, removed, .. } => {
            format!("compacted {} {removed:?}", event.id)
        }
        SessionEvent::Reverted { event, restored } => format!(
            "reverted {} {:?}",
            event.id,
            restored.iter().map(|m| m.id).collect::<Vec<_>>()
        ),
        SessionEvent::Removed { ids } => format!("removed {ids:?}"),
        SessionEvent::Deleted => "deleted".into(),
        other => format!("{other:?}"),
    }
}

/// The next `n` events of `follow` (errors are failures).
async fn take(follow: &mut Follow, n: usize) -> Vec<Followed> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = tokio::time::timeout(PATIENCE, follow.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {} of {n}", out.len()))
            .expect("the stream ended early");
        out.push(item.unwrap());
    }
    out
}

/// Whether `follow` gives nothing more within a short while.
async fn quiet(follow: &mut Follow) -> bool {
    tokio::time::timeout(Duration::from_millis(300), follow.next())
        .await
        .is_err()
}

fn msg(session: Uuid, body: &str) -> NewMessage {
    NewMessage {
        id: Some(Uuid::new_v4()),
        ..text(session, MessageRole::User, body, 1, 1)
    }
}

/// A history with every kind of event: 4 appends, a compaction with a summary, 2 appends, the
/// revert, a delete. Returns the shapes of its events in order, and the ids appended.
async fn history(pool: &PgPool, session: Uuid) -> (Vec<String>, Vec<Uuid>) {
    let first = append_messages(
        pool,
        TENANT,
        session,
        &(0..4)
            .map(|i| msg(session, &format!("m{i}")))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .into_rows();
    let ids: Vec<Uuid> = first.iter().map(|m| m.id).collect();
    let event = compact(
        pool,
        TENANT,
        &CompactionPlan {
            summary: Some(Summary::text(MessageRole::User, "m1 and m2, briefly")),
            ..plan(session, vec![ids[1], ids[2]])
        },
    )
    .await
    .unwrap();
    let more = append_messages(
        pool,
        TENANT,
        session,
        &[msg(session, "m4"), msg(session, "m5")],
    )
    .await
    .unwrap()
    .into_rows();
    revert_compaction(pool, TENANT, event.id).await.unwrap();
    delete_messages(pool, TENANT, session, &[ids[0]], ToolPairs::Keep)
        .await
        .unwrap();
    let mut shapes: Vec<String> = ids.iter().map(|id| format!("appended {id}")).collect();
    shapes.push(format!("compacted {} {:?}", event.id, vec![ids[1], ids[2]]));
    shapes.extend(more.iter().map(|m| format!("appended {}", m.id)));
    shapes.push(format!("reverted {} {:?}", event.id, vec![ids[1], ids[2]]));
    shapes.push(format!("removed {:?}", vec![ids[0]]));
    let mut all = ids;
    all.extend(more.iter().map(|m| m.id));
    (shapes, all)
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_live_follower_sees_every_event_once_in_commit_order(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    // Listening before the first write: the follower has read once and waits.
    assert!(quiet(&mut follow).await);
    let mut seen = Vec::new();
    let mut shapes = |events: &[Followed]| {
        seen.extend(events.iter().cloned());
        events.iter().map(|f| shape(&f.event)).collect::<Vec<_>>()
    };

    let first = append_messages(
        &pool,
        TENANT,
        s.id,
        &(0..4)
            .map(|i| msg(s.id, &format!("m{i}")))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .into_rows();
    let got = take(&mut follow, 4).await;
    assert_eq!(
        got.iter().map(|f| f.event.clone()).collect::<Vec<_>>(),
        first
            .iter()
            .cloned()
            .map(SessionEvent::Appended)
            .collect::<Vec<_>>()
    );
    shapes(&got);

    let event = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            summary: Some(Summary::text(MessageRole::User, "m1 and m2, briefly")),
            ..plan(s.id, vec![first[1].id, first[2].id])
        },
    )
    .await
    .unwrap();
    let got = take(&mut follow, 1).await;
    match &got[0].event {
        SessionEvent::Compacted {
            event: e,
            removed,
            summary,
        } => {
            assert_eq!(e, &event);
            assert_eq!(removed, &vec![first[1].id, first[2].id]);
            assert_eq!(summary.as_ref().map(|m| m.id), event.summary_message_id);
        }
        other => panic!("{other:?}"),
    }
    shapes(&got);

    let more = append_messages(&pool, TENANT, s.id, &[msg(s.id, "m4"), msg(s.id, "m5")])
        .await
        .unwrap()
        .into_rows();
    let got = take(&mut follow, 2).await;
    assert_eq!(got[0].event, SessionEvent::Appended(more[0].clone()));
    assert_eq!(got[1].event, SessionEvent::Appended(more[1].clone()));
    shapes(&got);

    let reverted = revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let got = take(&mut follow, 1).await;
    assert_eq!(
        got[0].event,
        SessionEvent::Reverted {
            event: reverted,
            restored: vec![first[1].clone(), first[2].clone()],
        }
    );
    shapes(&got);

    delete_messages(&pool, TENANT, s.id, &[first[0].id], ToolPairs::Keep)
        .await
        .unwrap();
    let got = take(&mut follow, 1).await;
    assert_eq!(
        got[0].event,
        SessionEvent::Removed {
            ids: vec![first[0].id]
        }
    );
    shapes(&got);

    delete_session(&pool, TENANT, s.id).await.unwrap();
    let got = take(&mut follow, 1).await;
    assert_eq!(got[0].event, SessionEvent::Deleted);
    shapes(&got);
    // Deleted is the last item.
    assert!(tokio::time::timeout(PATIENCE, follow.next())
        .await
        .unwrap()
        .is_none());
    // Cursors only move forward.
    for pair in seen.windows(2) {
        assert!(pair[0].cursor <= pair[1].cursor, "{pair:?}");
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_late_follower_replays_what_the_database_holds(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let (live, ids) = history(&pool, s.id).await;
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    // The deleted message is gone: its append cannot be replayed, its removal is.
    let expected: Vec<String> = live
        .iter()
        .filter(|shape| **shape != format!("appended {}", ids[0]))
        .cloned()
        .collect();
    let seen = take(&mut follow, expected.len()).await;
    assert_eq!(
        seen.iter().map(|f| shape(&f.event)).collect::<Vec<_>>(),
        expected
    );
    assert!(quiet(&mut follow).await);
    // The messages come as stored.
    let stored = get_messages(&pool, TENANT, s.id, &ids[1..]).await.unwrap();
    let appended: Vec<_> = seen
        .iter()
        .filter_map(|f| match &f.event {
            SessionEvent::Appended(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    for m in &appended {
        assert!(stored.contains(m), "{m:?} is not as stored");
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_compacted_message_is_replayed_from_the_archive_and_the_summary_is_not_an_append(
    pool: PgPool,
) {
    let s = session(&pool, TENANT, "s").await;
    let rows = conversation(&pool, s.id, 3).await;
    let event = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            summary: Some(Summary::text(MessageRole::User, "the start")),
            ..plan(s.id, vec![rows[0].id, rows[1].id])
        },
    )
    .await
    .unwrap();
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    let seen = take(&mut follow, 4).await;
    let archived = archived_messages(&pool, TENANT, event.id).await.unwrap();
    assert_eq!(seen[0].event, SessionEvent::Appended(archived[0].clone()));
    assert_eq!(seen[1].event, SessionEvent::Appended(archived[1].clone()));
    assert_eq!(seen[2].event, SessionEvent::Appended(rows[2].clone()));
    match &seen[3].event {
        SessionEvent::Compacted {
            event: e,
            removed,
            summary,
        } => {
            assert_eq!(e, &event);
            assert_eq!(removed, &vec![rows[0].id, rows[1].id]);
            let summary = summary.as_ref().expect("the summary");
            assert_eq!(Some(summary.id), event.summary_message_id);
            assert!(summary.is_summary);
        }
        other => panic!("{other:?}"),
    }
    assert!(quiet(&mut follow).await);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn resuming_from_any_kept_cursor_continues_with_the_next_event(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let (live, _) = history(&pool, s.id).await;
    let all = take(
        &mut follow_session(&pool, TENANT, s.id, FollowCursor::START),
        live.len() - 1,
    )
    .await;
    for (i, at) in all.iter().enumerate() {
        // Kept as text, as a process would keep it.
        let kept = serde_json::to_string(&at.cursor).unwrap();
        let cursor: FollowCursor = serde_json::from_str(&kept).unwrap();
        let mut follow = follow_session(&pool, TENANT, s.id, cursor);
        let rest = take(&mut follow, all.len() - i - 1).await;
        assert_eq!(rest, all[i + 1..].to_vec(), "resumed after event {i}");
        assert!(quiet(&mut follow).await, "resumed after event {i}");
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_follower_from_now_sees_only_what_happens_next(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    conversation(&pool, s.id, 3).await;
    let now = follow_cursor_now(&pool, TENANT, s.id).await.unwrap();
    assert_eq!(now.position(), 3);
    let mut follow = follow_session(&pool, TENANT, s.id, now);
    assert!(quiet(&mut follow).await);
    let next = append_messages(&pool, TENANT, s.id, &[msg(s.id, "next")])
        .await
        .unwrap()
        .into_rows();
    let seen = take(&mut follow, 1).await;
    assert_eq!(seen[0].event, SessionEvent::Appended(next[0].clone()));
    assert!(matches!(
        follow_cursor_now(&pool, OTHER, s.id).await,
        Err(Error::NotFound(Entity::Session))
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn notifications_wake_the_follower_without_polling(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    // A poll interval no test waits out: only notifications can deliver these in time.
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START)
        .poll_interval(Duration::from_secs(3600));
    assert!(quiet(&mut follow).await);
    for i in 0..5 {
        let rows = append_messages(&pool, TENANT, s.id, &[msg(s.id, &format!("m{i}"))])
            .await
            .unwrap()
            .into_rows();
        let seen = take(&mut follow, 1).await;
        assert_eq!(seen[0].event, SessionEvent::Appended(rows[0].clone()));
    }
    // Inside the writer's transaction: the wake-up comes with the commit.
    let mut tx = pool.begin().await.unwrap();
    let rows = append_messages(&mut tx, TENANT, s.id, &[msg(s.id, "in a transaction")])
        .await
        .unwrap()
        .into_rows();
    assert!(quiet(&mut follow).await, "an uncommitted append was seen");
    tx.commit().await.unwrap();
    let seen = take(&mut follow, 1).await;
    assert_eq!(seen[0].event, SessionEvent::Appended(rows[0].clone()));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_write_that_notifies_nobody_is_seen_at_the_next_poll(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START)
        .poll_interval(Duration::from_millis(200));
    assert!(quiet(&mut follow).await);
    // An append in plain SQL: no notification.
    let id: Uuid = sqlx::query_scalar(
        "WITH s AS (UPDATE sessions SET last_position = coalesce(last_position, 0) + 1
                     WHERE tenant_id = $1 AND id = $2 RETURNING last_position)
         INSERT INTO messages (tenant_id, session_id, position, role)
         SELECT $1, $2, last_position, 'user' FROM s RETURNING id",
    )
    .bind(TENANT)
    .bind(s.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let seen = take(&mut follow, 1).await;
    assert!(matches!(&seen[0].event, SessionEvent::Appended(m) if m.id == id));
}

/// Ends the follower's listening connection from the server side.
async fn drop_listeners(pool: &PgPool) -> u64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
    .unwrap() as u64
}

/// The appended ids `follow` gives until it has `n`, skipping the errors a dropped connection
/// causes (retryable ones only).
async fn appended_ids(follow: &mut Follow, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let item = tokio::time::timeout(PATIENCE, follow.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {} of {n}", ids.len()))
            .expect("the stream ended early");
        match item {
            Ok(Followed {
                event: SessionEvent::Appended(m),
                ..
            }) => ids.push(m.id),
            Ok(_) => {}
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    ids
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_writer_committing_while_the_follower_reconnects_is_seen_once(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START)
        .poll_interval(Duration::from_secs(3600));
    assert!(quiet(&mut follow).await);
    let mut expected = Vec::new();
    for round in 0..3 {
        // The follower listens and waits; the append is in, uncommitted; the follower's
        // connection goes; then the commit, while the follower has no connection to hear it on.
        assert!(quiet(&mut follow).await);
        let mut tx = pool.begin().await.unwrap();
        let rows = append_messages(
            &mut tx,
            TENANT,
            s.id,
            &[
                msg(s.id, &format!("r{round}a")),
                msg(s.id, &format!("r{round}b")),
            ],
        )
        .await
        .unwrap()
        .into_rows();
        assert_eq!(drop_listeners(&pool).await, 1, "round {round}");
        tx.commit().await.unwrap();
        expected.extend(rows.iter().map(|m| m.id));
        let got = appended_ids(&mut follow, 2).await;
        assert_eq!(got, rows.iter().map(|m| m.id).collect::<Vec<_>>());
    }
    assert!(quiet(&mut follow).await);
    let all = appended_ids(
        &mut follow_session(&pool, TENANT, s.id, FollowCursor::START),
        expected.len(),
    )
    .await;
    assert_eq!(all, expected);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn many_writers_and_a_compaction_reach_the_follower_exactly_once_in_order(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let seed = conversation(&pool, s.id, 4).await;
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    let writers = 4;
    let per_writer = 15;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pool = pool.clone();
        let id = s.id;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_writer {
                let batch: Vec<NewMessage> = (0..1 + (i % 3))
                    .map(|k| msg(id, &format!("w{w} m{i}.{k}")))
                    .collect();
                let rows = append_messages(&pool, TENANT, id, &batch)
                    .await
                    .unwrap()
                    .into_rows();
                ids.extend(rows.iter().map(|m| m.id));
            }
            ids
        }));
    }
    let compaction = {
        let pool = pool.clone();
        let plan = plan(s.id, vec![seed[0].id, seed[1].id]);
        tokio::spawn(async move { compact(&pool, TENANT, &plan).await.unwrap() })
    };
    let mut written: HashSet<Uuid> = seed.iter().map(|m| m.id).collect();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    let event = compaction.await.unwrap();
    let total = written.len();
    let mut seen = Vec::new();
    let mut compacted = 0;
    let mut last_position = 0;
    while seen.len() < total || compacted == 0 {
        let f = take(&mut follow, 1).await.remove(0);
        match f.event {
            SessionEvent::Appended(m) => {
                assert!(m.position > last_position, "out of order: {m:?}");
                last_position = m.position;
                seen.push(m.id);
            }
            SessionEvent::Compacted { event: e, .. } => {
                assert_eq!(e.id, event.id);
                compacted += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.len(), total, "an append came twice");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), written);
    assert!(quiet(&mut follow).await);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn another_tenants_session_is_not_found_and_bad_input_is_an_error(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let mut follow = follow_session(&pool, OTHER, s.id, FollowCursor::START);
    assert!(matches!(
        follow.next().await,
        Some(Err(Error::NotFound(Entity::Session)))
    ));
    assert!(follow.next().await.is_none());
    let mut follow = follow_session(&pool, "", s.id, FollowCursor::START);
    assert!(matches!(
        follow.next().await,
        Some(Err(Error::InvalidInput { .. }))
    ));
    assert!(follow.next().await.is_none());
    // A session deleted while nobody followed: from a kept cursor, its end.
    conversation(&pool, s.id, 1).await;
    let cursor = follow_cursor_now(&pool, TENANT, s.id).await.unwrap();
    delete_session(&pool, TENANT, s.id).await.unwrap();
    let mut follow = follow_session(&pool, TENANT, s.id, cursor);
    assert_eq!(take(&mut follow, 1).await[0].event, SessionEvent::Deleted);
    assert!(follow.next().await.is_none());
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn under_row_level_security_a_tenant_follows_its_own_sessions_only(pool: PgPool) {
    for tenant in [TENANT, OTHER] {
        create_tenant_role(&pool, tenant, None).await.unwrap();
    }
    let mine = session(&pool, TENANT, "mine").await;
    let theirs = session(&pool, OTHER, "theirs").await;
    let options = tenant_connect_options((*pool.connect_options()).clone(), TENANT).unwrap();
    let as_tenant = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let mut follow = follow_session(&as_tenant, TENANT, mine.id, FollowCursor::START)
        .poll_interval(Duration::from_secs(3600));
    assert!(quiet(&mut follow).await);
    let rows = append_messages(&as_tenant, TENANT, mine.id, &[msg(mine.id, "hello")])
        .await
        .unwrap()
        .into_rows();
    assert_eq!(
        take(&mut follow, 1).await[0].event,
        SessionEvent::Appended(rows[0].clone())
    );
    // The other tenant's session, even named with its own tenant: not there.
    let mut other = follow_session(&as_tenant, OTHER, theirs.id, FollowCursor::START);
    assert!(matches!(other.next().await, Some(Err(_))));
    let mut other = follow_session(&as_tenant, TENANT, theirs.id, FollowCursor::START);
    assert!(matches!(
        other.next().await,
        Some(Err(Error::NotFound(Entity::Session)))
    ));
    as_tenant.close().await;
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_history_longer_than_one_read_replays_in_order(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let mut expected = Vec::new();
    let mut appended = Vec::new();
    for round in 0..3 {
        let rows = append_messages(
            &pool,
            TENANT,
            s.id,
            &(0..300)
                .map(|i| msg(s.id, &format!("r{round} m{i}")))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .into_rows();
        expected.extend(rows.iter().map(|m| format!("appended {}", m.id)));
        appended.extend(rows.iter().map(|m| m.id));
        // Changes between the appends, several in a row.
        for k in 0..3 {
            let ids = vec![rows[10 * k].id, rows[10 * k + 1].id];
            let event = compact(&pool, TENANT, &plan(s.id, ids.clone()))
                .await
                .unwrap();
            expected.push(format!("compacted {} {ids:?}", event.id));
        }
    }
    delete_messages(&pool, TENANT, s.id, &[appended[299]], ToolPairs::Keep)
        .await
        .unwrap();
    expected.retain(|e| *e != format!("appended {}", appended[299]));
    expected.push(format!("removed {:?}", vec![appended[299]]));
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    let seen = take(&mut follow, expected.len()).await;
    assert_eq!(
        seen.iter().map(|f| shape(&f.event)).collect::<Vec<_>>(),
        expected
    );
    assert!(quiet(&mut follow).await);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn changes_that_waited_for_the_lock_take_the_next_seqs(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let rows = conversation(&pool, s.id, 6).await;
    // The first compaction holds the session's lock, uncommitted, while a second compaction
    // and a delete queue behind it.
    let mut tx = pool.begin().await.unwrap();
    let first = compact(&mut tx, TENANT, &plan(s.id, vec![rows[0].id]))
        .await
        .unwrap();
    let second = {
        let (pool, plan) = (pool.clone(), plan(s.id, vec![rows[1].id]));
        tokio::spawn(async move { compact(&pool, TENANT, &plan).await })
    };
    until_someone_waits(&pool).await;
    let delete = {
        let (pool, id, session) = (pool.clone(), rows[5].id, s.id);
        tokio::spawn(async move {
            delete_messages(&pool, TENANT, session, &[id], ToolPairs::Keep).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.commit().await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(delete.await.unwrap().unwrap(), 1);
    // Each took the seq after the one committed before it: all three are followed, in order.
    let mut follow = follow_session(&pool, TENANT, s.id, FollowCursor::START);
    let seen: Vec<String> = take(&mut follow, 5 + 3)
        .await
        .iter()
        .map(|f| shape(&f.event))
        .filter(|s| !s.starts_with("appended"))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        format!("compacted {} {:?}", first.id, vec![rows[0].id])
    );
    assert!(seen[1..].contains(&format!("compacted {} {:?}", second.id, vec![rows[1].id])));
    assert!(seen[1..].contains(&format!("removed {:?}", vec![rows[5].id])));
    assert!(quiet(&mut follow).await);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn followers_in_one_process_share_a_connection_and_each_get_everything(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let other = session(&pool, TENANT, "other").await;
    let early: Vec<Uuid> = conversation(&pool, s.id, 3)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    // Twenty followers of the session, half replaying it from the start, half from now, and
    // one of another session: all share this process's listening connection and reads.
    let now = follow_cursor_now(&pool, TENANT, s.id).await.unwrap();
    let mut follows = Vec::new();
    for i in 0..20 {
        if i % 2 == 0 {
            let mut f = follow_session(&pool, TENANT, s.id, FollowCursor::START);
            assert_eq!(appended_ids(&mut f, 3).await, early, "follower {i}");
            follows.push(f);
        } else {
            let mut f = follow_session(&pool, TENANT, s.id, now);
            assert!(tokio::time::timeout(Duration::from_millis(50), f.next())
                .await
                .is_err());
            follows.push(f);
        }
    }
    let mut elsewhere = follow_session(&pool, TENANT, other.id, FollowCursor::START);
    assert!(quiet(&mut elsewhere).await);
    let listening: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(listening, 1, "one listening connection for the process");
    let mut expected = Vec::new();
    for i in 0..5 {
        let batch = [msg(s.id, &format!("n{i}")), msg(s.id, &format!("x{i}"))];
        let rows = append_messages(&pool, TENANT, s.id, &batch)
            .await
            .unwrap()
            .into_rows();
        expected.extend(rows.iter().map(|m| m.id));
    }
    for (i, f) in follows.iter_mut().enumerate() {
        assert_eq!(
            appended_ids(f, expected.len()).await,
            expected,
            "follower {i}"
        );
        assert!(quiet(f).await, "follower {i} got more");
    }
    assert!(quiet(&mut elsewhere).await);
}
