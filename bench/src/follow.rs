//! Following sessions: how long an append takes to reach its followers, and what followers
//! cost the writers. `cargo xtask bench follow` runs it on a throwaway server of its own. The
//! followers run in this process, as an application's would: they share one listening
//! connection and the reads of a session (see `agentpg_repo::follow_session`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, create_session, follow_cursor_now, follow_session, SessionEvent,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession};
use futures_util::StreamExt;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

const TENANT: &str = "follow-bench";

/// Writes between two appends in the latency cases.
const PACE: Duration = Duration::from_millis(20);

fn message(session: Uuid, i: usize) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![ContentBlock::text(format!("message {i}"))])),
        metadata: Some(serde_json::json!({ "i": i })),
        ..NewMessage::new(TENANT.into(), session, MessageRole::User)
    }
}

async fn sessions(pool: &PgPool, prefix: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let s = create_session(
            pool,
            NewSession::new(TENANT.into(), format!("{prefix}-{i}")),
        )
        .await
        .expect("a session");
        ids.push(s.id);
    }
    ids
}

/// Starts one follower of each of `targets`, from now; each records, for every message it
/// receives, how long after `sent[i]` it arrived. Returns when every follower listens.
async fn followers(
    pool: &PgPool,
    targets: &[Uuid],
    sent: Arc<Mutex<Vec<Option<Instant>>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    expected_each: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for &session in targets {
        let from = follow_cursor_now(pool, TENANT, session)
            .await
            .expect("a cursor");
        let mut follow = follow_session(pool, TENANT, session, from);
        // The first poll listens and reads (nothing yet): wait for it before writing.
        let first = tokio::time::timeout(Duration::from_millis(50), follow.next()).await;
        assert!(first.is_err(), "a follower from now saw {first:?}");
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < expected_each {
                let Some(item) = follow.next().await else {
                    break;
                };
                let Ok(followed) = item else { continue };
                if let SessionEvent::Appended(m) = followed.event {
                    let now = Instant::now();
                    let i = m.metadata["i"].as_u64().expect("the index") as usize;
                    let at = sent.lock().unwrap().get(i).copied().flatten();
                    if let Some(at) = at {
                        latencies.lock().unwrap().push(now.duration_since(at));
                    }
                    got += 1;
                }
            }
        }));
    }
    tasks
}

/// Followers of `targets` from now that only take their events (a consumer that does
/// nothing with them): what following costs, without the latency bookkeeping.
async fn drains(
    pool: &PgPool,
    targets: &[Uuid],
    coalesce: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for &session in targets {
        let from = follow_cursor_now(pool, TENANT, session)
            .await
            .expect("a cursor");
        let mut follow = follow_session(pool, TENANT, session, from).coalesce(coalesce);
        let first = tokio::time::timeout(Duration::from_millis(50), follow.next()).await;
        assert!(first.is_err(), "a follower from now saw {first:?}");
        tasks.push(tokio::spawn(async move {
            while let Some(item) = follow.next().await {
                let _ = std::hint::black_box(item);
            }
        }));
    }
    tasks
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

/// One latency case: `followers_n` followers, on one session or one session each, and
/// `appends` appends paced [`PACE`] apart (round robin over the sessions).
async fn latency(
    pool: &PgPool,
    followers_n: usize,
    spread: bool,
    appends: usize,
) -> (Duration, Duration, usize) {
    let name = format!("lat-{followers_n}-{spread}");
    let targets = sessions(pool, &name, if spread { followers_n } else { 1 }).await;
    let sent = Arc::new(Mutex::new(vec![None; appends]));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let followed: Vec<Uuid> = if spread {
        targets.clone()
    } else {
        vec![targets[0]; followers_n]
    };
    let each = if spread {
        appends / followers_n
    } else {
        appends
    };
    let tasks = followers(pool, &followed, sent.clone(), latencies.clone(), each).await;
    for i in 0..appends {
        let session = targets[i % targets.len()];
        sent.lock().unwrap()[i] = Some(Instant::now());
        append_messages(pool, TENANT, session, &[message(session, i)])
            .await
            .expect("an append");
        tokio::time::sleep(PACE).await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort_unstable();
    (percentile(&all, 0.5), percentile(&all, 0.99), all.len())
}

/// Appends per second of one writer appending `appends` messages back to back to `session`.
async fn append_rate(pool: &PgPool, session: Uuid, appends: usize, offset: usize) -> f64 {
    let started = Instant::now();
    for i in 0..appends {
        append_messages(pool, TENANT, session, &[message(session, offset + i)])
            .await
            .expect("an append");
    }
    appends as f64 / started.elapsed().as_secs_f64()
}

/// What `followers_n` followers of the written session cost one writer: runs with and without
/// them alternate, medians of each.
async fn writer_cost(
    pool: &PgPool,
    followers_n: usize,
    spread: bool,
    coalesce: Duration,
    quick: bool,
) -> (f64, f64) {
    let rounds = if quick { 2 } else { 4 };
    let appends = if quick { 150 } else { 400 };
    let name = format!("cost-{followers_n}-{spread}-{}", coalesce.as_millis());
    let targets = sessions(pool, &name, if spread { followers_n } else { 1 }).await;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut offset = 0;
    for round in 0..rounds {
        for followed in [round % 2 == 0, round % 2 == 1] {
            // The writer appends to the first session; spread followers follow one each.
            let tasks = if followed {
                let follows: Vec<Uuid> = if spread {
                    targets.clone()
                } else {
                    vec![targets[0]; followers_n]
                };
                drains(pool, &follows, coalesce).await
            } else {
                Vec::new()
            };
            // Indexes past the followers' table: they record no latency here.
            let rate = append_rate(pool, targets[0], appends, 1_000_000 + offset).await;
            offset += appends;
            for t in &tasks {
                t.abort();
            }
            if followed {
                with.push(rate);
            } else {
                without.push(rate);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (median(with), median(without))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The follow cases, printed as a table of their own.
pub(crate) async fn run(pool: &PgPool, quick: bool) {
    println!();
    println!("following sessions (append-to-event latency: from the writer's call to the follower's event; appends {} ms apart)", PACE.as_millis());
    println!(
        "{:<58} {:>10} {:>10} {:>8}",
        "case", "median", "p99", "events"
    );
    let appends = if quick { 50 } else { 200 };
    for spread in [false, true] {
        for n in [1usize, 10, 100] {
            // Spread: every session gets at least two appends.
            let appends = if spread { appends.max(2 * n) } else { appends };
            let (median, p99, events) = latency(pool, n, spread, appends).await;
            let case = if spread {
                format!("{n} followers, one session each ({appends} appends round robin)")
            } else {
                format!("{n} followers of one session ({appends} appends)")
            };
            println!("{case:<58} {:>10} {:>10} {events:>8}", ms(median), ms(p99));
        }
    }
    println!();
    println!(
        "{:<58} {:>10} {:>10} {:>8}  target",
        "writer cost (appends/s, back to back)", "followed", "alone", "ratio"
    );
    for (spread, coalesce) in [
        (false, agentpg_repo::DEFAULT_COALESCE),
        (true, agentpg_repo::DEFAULT_COALESCE),
        (false, Duration::from_millis(50)),
        (true, Duration::from_millis(50)),
    ] {
        let (with, without) = writer_cost(pool, 100, spread, coalesce, quick).await;
        let ratio = with / without;
        let case = if spread {
            format!(
                "100 followers, one session each, coalesce {} ms",
                coalesce.as_millis()
            )
        } else {
            format!(
                "100 followers of the written session, coalesce {} ms",
                coalesce.as_millis()
            )
        };
        println!(
            "{case:<58} {with:>10.0} {without:>10.0} {ratio:>8.3}  ratio >= 0.9 ({})",
            if ratio >= 0.9 { "met" } else { "MISSED" }
        );
    }
}
