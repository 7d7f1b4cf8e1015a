//! Concurrency and faults: concurrent appends lose nothing and keep a total order; concurrent
//! compactions serialize; a compaction killed midway leaves the session exactly as it was.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use agentpg_repo::{append_messages, compact, recompute_total_tokens, CompactionPlan, Error};
use agentpg_schema::{MessageRole, NewMessage};
use common::{all_messages, conversation, session, session_row, text, TENANT};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn sixteen_concurrent_appenders_lose_nothing(pool: PgPool) {
    let s = session(&pool, TENANT, "busy").await;
    let mut tasks = Vec::new();
    for task in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            // 200 messages per task, in batches of 1 to 20.
            let mut i = 0;
            while i < 200 {
                let n = (1 + (task + i) % 20).min(200 - i);
                let batch: Vec<NewMessage> = (i..i + n)
                    .map(|j| {
                        text(
                            s.id,
                            MessageRole::User,
                            &format!("{task}:{j}"),
                            j as i64 % 7,
                            1,
                        )
                    })
                    .collect();
                let stored = append_messages(&pool, TENANT, s.id, &batch)
                    .await
                    .unwrap()
                    .into_rows();
                acknowledged.extend(stored.into_iter().map(|m| (m.id, m.position)));
                i += n;
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 16 * 200);
    let stored = all_messages(&pool, s.id).await;
    assert_eq!(stored.len(), 16 * 200, "none lost");
    let ids: HashSet<Uuid> = stored.iter().map(|m| m.id).collect();
    assert!(
        acknowledged.iter().all(|(id, _)| ids.contains(id)),
        "every acknowledged write is there"
    );
    let positions: HashSet<i64> = stored.iter().map(|m| m.position).collect();
    assert_eq!(
        positions.len(),
        stored.len(),
        "positions unique: a total order"
    );
    // Within each task, the order of its messages is the order it appended them.
    for task in 0..16 {
        let own: Vec<usize> = stored
            .iter()
            .map(|m| m.content[0].as_text().unwrap().to_string())
            .filter_map(|t| {
                let (who, j) = t.split_once(':').unwrap();
                (who == task.to_string()).then(|| j.parse().unwrap())
            })
            .collect();
        assert_eq!(own, (0..200).collect::<Vec<_>>(), "task {task}");
    }
    let total = session_row(&pool, s.id).await.total_tokens;
    assert_eq!(
        total,
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap()
    );
    let expected: i64 = (0..16)
        .map(|_| (0..200).map(|j| j % 7 + 1).sum::<i64>())
        .sum();
    assert_eq!(total, expected);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn concurrent_compactions_of_one_session_serialize(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 40).await;
    // Two plans that overlap in half their messages, run together many times over.
    let a: Vec<Uuid> = all[0..20].iter().map(|m| m.id).collect();
    let b: Vec<Uuid> = all[10..30].iter().map(|m| m.id).collect();
    let run = |remove: Vec<Uuid>| {
        let pool = pool.clone();
        tokio::spawn(async move {
            compact(
                &pool,
                TENANT,
                &CompactionPlan {
                    session_id: s.id,
                    remove,
                    summary: None,
                    strategy: "race".into(),
                    model_used: None,
                    duration_ms: None,
                    pending_tool_calls: Default::default(),
                },
            )
            .await
        })
    };
    let (first, second) = tokio::join!(run(a), run(b));
    let results = [first.unwrap(), second.unwrap()];
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one wins: {results:?}");
    let lost = results
        .iter()
        .find(|r| r.is_err())
        .unwrap()
        .as_ref()
        .unwrap_err();
    assert!(
        matches!(lost, Error::InvalidInput { .. }),
        "the loser sees its messages gone: {lost:?}"
    );
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM message_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT id) FROM message_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((archived, distinct), (20, 20), "no message archived twice");
    let row = session_row(&pool, s.id).await;
    assert_eq!(row.compaction_count, 1);
    assert_eq!(
        row.total_tokens,
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap()
    );

    // Disjoint plans both succeed, one after the other.
    let rest: Vec<Uuid> = all_messages(&pool, s.id)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    let (x, y) = tokio::join!(run(rest[0..5].to_vec()), run(rest[5..10].to_vec()));
    x.unwrap().unwrap();
    y.unwrap().unwrap();
    let row = session_row(&pool, s.id).await;
    assert_eq!(row.compaction_count, 3);
    assert_eq!(
        row.total_tokens,
        recompute_total_tokens(&pool, TENANT, s.id).await.unwrap()
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_compaction_killed_midway_leaves_the_session_as_it_was(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let all = conversation(&pool, s.id, 50).await;
    let before = common::dump(&pool).await;

    // Lock the archive table so the compaction stops midway: after it has locked the session
    // row and written its event, when it tries to archive. Then kill its backend.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE message_archive IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let victim_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let mut victim = victim_pool.acquire().await.unwrap();
    let victim_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *victim)
        .await
        .unwrap();
    let remove: Vec<Uuid> = all[..30].iter().map(|m| m.id).collect();
    let compaction = tokio::spawn(async move {
        let result = compact(
            &mut *victim,
            TENANT,
            &CompactionPlan {
                session_id: s.id,
                remove,
                summary: None,
                strategy: "killed".into(),
                model_used: None,
                duration_ms: None,
                pending_tool_calls: Default::default(),
            },
        )
        .await;
        drop(victim);
        result
    });
    // Wait until the victim is blocked on the archive lock, then kill it.
    let mut waited = 0;
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1), false)",
        )
        .bind(victim_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        waited += 1;
        assert!(
            waited < 500,
            "the compaction never blocked on the archive lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Midway: it holds the session row lock.
    let mut probe = pool.begin().await.unwrap();
    let err =
        sqlx::query("SELECT 1 FROM sessions WHERE tenant_id = $1 AND id = $2 FOR UPDATE NOWAIT")
            .bind(TENANT)
            .bind(s.id)
            .execute(&mut *probe)
            .await
            .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("55P03")
    );
    probe.rollback().await.unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(victim_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(killed);
    let err = compaction.await.unwrap().unwrap_err();
    assert!(
        err.is_retryable(),
        "a lost connection is retryable: {err:?}"
    );
    blocker.rollback().await.unwrap();
    assert_eq!(common::dump(&pool).await, before, "nothing half-written");

    // The session is usable afterwards.
    let retry = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            session_id: s.id,
            remove: all[..30].iter().map(|m| m.id).collect(),
            summary: None,
            strategy: "retry".into(),
            model_used: None,
            duration_ms: None,
            pending_tool_calls: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(retry.messages_removed, 30);
}
