//! Soak and fault run: several tenants, many sessions, concurrent appenders, compactions and
//! reverts for a fixed time, while a fault injector terminates random backends (and, with
//! `--restart-server`, restarts PostgreSQL once). At the end every invariant is checked and the
//! figures printed. Exits non-zero on any invariant violation or lost acknowledged write.
//!
//! Loopback only: refuses a `DATABASE_URL` whose host is not this machine. Uses (and drops) its
//! own database `agentpg_soak`.
//!
//! ```sh
//! cargo xtask soak --duration 60s [--restart-server]
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, compact, list_compactions, list_messages, revert_compaction, CompactionPlan,
    Error, MessageRange, Summary,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession, Usage};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

const TENANTS: usize = 4;
const SESSIONS_PER_TENANT: usize = 8;
const APPENDERS: usize = 8;
const COMPACTORS: usize = 2;
const REVERTERS: usize = 1;

/// Attempted / committed / failed counts of one kind of operation.
#[derive(Default)]
struct Counts {
    attempted: AtomicU64,
    committed: AtomicU64,
    failed_clean: AtomicU64,
    failed_unexpected: AtomicU64,
}

impl Counts {
    fn record<T>(&self, result: &Result<T, Error>) {
        self.attempted.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => self.committed.fetch_add(1, Ordering::Relaxed),
            // Expected under faults: lost connections (retryable), races between compactions
            // and reverts (Conflict / InvalidInput), and state that moved on (NotFound).
            Err(e)
                if e.is_retryable()
                    || matches!(
                        e,
                        Error::Conflict { .. } | Error::InvalidInput { .. } | Error::NotFound(_)
                    ) =>
            {
                self.failed_clean.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                eprintln!("unexpected error: {e:?}");
                self.failed_unexpected.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<10} attempted {:>7}  committed {:>7}  failed cleanly {:>6}  failed otherwise {:>3}",
            self.attempted.load(Ordering::Relaxed),
            self.committed.load(Ordering::Relaxed),
            self.failed_clean.load(Ordering::Relaxed),
            self.failed_unexpected.load(Ordering::Relaxed),
        )
    }
}

#[derive(Default)]
struct Stats {
    appends: Counts,
    compactions: Counts,
    reverts: Counts,
    kills: AtomicU64,
    restarts: AtomicU64,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("bad duration unit in {text:?} (use s, m or ms)")),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn message(tenant: &str, session_id: Uuid, rng: &mut fastrand::Rng) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![ContentBlock::text(format!(
            "soak {}",
            rng.u64(..)
        ))])),
        usage: Some(Json(Usage {
            input_tokens: rng.i64(0..500),
            output_tokens: rng.i64(0..200),
            ..Usage::default()
        })),
        is_preserved: Some(rng.u8(..) < 8),
        ..NewMessage::new(
            tenant.to_string(),
            session_id,
            if rng.bool() {
                MessageRole::User
            } else {
                MessageRole::Assistant
            },
        )
    }
}

async fn appender(
    pool: PgPool,
    sessions: Arc<Vec<(String, Uuid)>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    ledger: Arc<Mutex<HashSet<Uuid>>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let (tenant, id) = &sessions[rng.usize(..sessions.len())];
        let batch: Vec<NewMessage> = (0..rng.usize(1..=20))
            .map(|_| message(tenant, *id, &mut rng))
            .collect();
        let result = append_messages(&pool, tenant, *id, &batch).await;
        if let Ok(rows) = &result {
            ledger.lock().unwrap().extend(rows.iter().map(|m| m.id));
        }
        stats.appends.record(&result);
    }
}

/// Acknowledged summaries: (event, summary message). A summary is removed again when its
/// compaction is reverted, so it must be present only while its event stands.
type Summaries = Arc<Mutex<Vec<(Uuid, Uuid)>>>;

async fn compactor(
    pool: PgPool,
    sessions: Arc<Vec<(String, Uuid)>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    summaries: Summaries,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let (tenant, id) = &sessions[rng.usize(..sessions.len())];
        let Ok(messages) = list_messages(&pool, tenant, *id, MessageRange::default()).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let candidates: Vec<Uuid> = messages
            .iter()
            .filter(|m| !m.is_preserved)
            .map(|m| m.id)
            .collect();
        if candidates.len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let take = rng.usize(1..=candidates.len() / 2);
        let start = rng.usize(..=candidates.len() - take);
        let summary_id = Uuid::new_v4();
        let plan = CompactionPlan {
            session_id: *id,
            remove: candidates[start..start + take].to_vec(),
            summary: rng.bool().then(|| Summary {
                id: Some(summary_id),
                role: MessageRole::User,
                content: vec![ContentBlock::text("summary")],
                usage: Some(Usage {
                    input_tokens: rng.i64(0..100),
                    ..Usage::default()
                }),
                metadata: None,
            }),
            strategy: "soak".into(),
            model_used: None,
            duration_ms: Some(1),
        };
        let result = compact(&pool, tenant, &plan).await;
        if let Ok(event) = &result {
            if let Some(id) = event.summary_message_id {
                summaries.lock().unwrap().push((event.id, id));
            }
        }
        stats.compactions.record(&result);
        tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
    }
}

async fn reverter(
    pool: PgPool,
    sessions: Arc<Vec<(String, Uuid)>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let (tenant, id) = &sessions[rng.usize(..sessions.len())];
        if let Ok(events) = list_compactions(&pool, tenant, *id).await {
            if let Some(latest) = events.iter().find(|e| e.reverted_at.is_none()) {
                let result = revert_compaction(&pool, tenant, latest.id).await;
                stats.reverts.record(&result);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..120))).await;
    }
}

/// Terminates 1–3 random backends of the soak database every 0.5–2 s, and restarts the server
/// once at half time when allowed.
async fn fault_injector(
    admin: PgConnectOptions,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    restart_at: Option<Instant>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut restarted = false;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
        if let Some(at) = restart_at {
            if !restarted && Instant::now() >= at {
                restarted = true;
                let version = std::fs::read_dir("/etc/postgresql")
                    .ok()
                    .and_then(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .max()
                    })
                    .unwrap_or_else(|| "15".into());
                let args = [
                    "--skip-systemctl-redirect",
                    &version,
                    "main",
                    "restart",
                    "-m",
                    "fast",
                ]
                .map(String::from);
                let status = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("pg_ctlcluster")
                        .args(args)
                        .status()
                })
                .await
                .expect("the restart thread");
                match status {
                    Ok(s) if s.success() => {
                        stats.restarts.fetch_add(1, Ordering::Relaxed);
                        println!("fault: restarted PostgreSQL {version}");
                    }
                    other => eprintln!("fault: restart failed: {other:?}"),
                }
                continue;
            }
        }
        let Ok(mut conn) = admin.connect().await else {
            continue;
        };
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = 'agentpg_soak' AND pid <> pg_backend_pid()
              ORDER BY random() LIMIT $1",
        )
        .bind(rng.i64(1..=3))
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        stats.kills.fetch_add(
            killed.iter().filter(|k| **k).count() as u64,
            Ordering::Relaxed,
        );
        let _ = conn.close().await;
    }
}

/// Every invariant, as (description, violations).
async fn check(
    pool: &PgPool,
    ledger: &HashSet<Uuid>,
    summaries: &[(Uuid, Uuid)],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut out = Vec::new();
    let scalar = |name: &str, sql: &'static str| (name.to_string(), sql);
    let queries = [
        scalar(
            "sessions whose total_tokens differs from the recomputed sum",
            "SELECT count(*) FROM sessions s WHERE s.total_tokens <> (
                 SELECT coalesce(sum(coalesce((m.usage ->> 'input_tokens')::bigint, 0)
                                   + coalesce((m.usage ->> 'output_tokens')::bigint, 0)), 0)
                   FROM messages m WHERE m.tenant_id = s.tenant_id AND m.session_id = s.id)",
        ),
        scalar(
            "duplicate positions within a session",
            "SELECT count(*) - count(DISTINCT (tenant_id, session_id, position)) FROM messages",
        ),
        scalar(
            "messages that are both live and archived",
            "SELECT count(*) FROM messages m JOIN message_archive a USING (tenant_id, id)",
        ),
        scalar(
            "archived messages of reverted or missing events",
            "SELECT count(*) FROM message_archive a LEFT JOIN compaction_events e
                 ON e.tenant_id = a.tenant_id AND e.id = a.compaction_event_id
              WHERE e.id IS NULL OR e.reverted_at IS NOT NULL",
        ),
        scalar(
            "standing events whose archive size differs from messages_removed",
            "SELECT count(*) FROM compaction_events e WHERE e.reverted_at IS NULL
                AND e.messages_removed <> (SELECT count(*) FROM message_archive a
                                           WHERE a.tenant_id = e.tenant_id AND a.compaction_event_id = e.id)",
        ),
        scalar(
            "sessions whose compaction_count differs from their standing events",
            "SELECT count(*) FROM sessions s WHERE s.compaction_count <> (
                 SELECT count(*) FROM compaction_events e
                  WHERE e.tenant_id = s.tenant_id AND e.session_id = s.id AND e.reverted_at IS NULL)",
        ),
        scalar(
            "archived messages whose row disagrees with the archive's id or session",
            "SELECT count(*) FROM message_archive a
              WHERE a.original_message ->> 'id' <> a.id::text OR a.original_message ->> 'session_id' <> a.session_id::text",
        ),
    ];
    for (name, sql) in queries {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        out.push((name, n));
    }
    let acked: Vec<Uuid> = ledger.iter().copied().collect();
    let present: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS l(id)
          WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = l.id)
             OR EXISTS (SELECT 1 FROM message_archive a WHERE a.id = l.id)",
    )
    .bind(&acked)
    .fetch_one(pool)
    .await?;
    out.push((
        "acknowledged appends missing".into(),
        acked.len() as i64 - present,
    ));
    let (events, summary_ids): (Vec<Uuid>, Vec<Uuid>) = summaries.iter().copied().unzip();
    let missing_summaries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[], $2::uuid[]) AS l(event, id)
           JOIN compaction_events e ON e.id = l.event
          WHERE e.reverted_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = l.id)
            AND NOT EXISTS (SELECT 1 FROM message_archive a WHERE a.id = l.id)",
    )
    .bind(&events)
    .bind(&summary_ids)
    .fetch_one(pool)
    .await?;
    out.push((
        "acknowledged summaries of standing compactions missing".into(),
        missing_summaries,
    ));
    let lost_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS l(event)
          WHERE NOT EXISTS (SELECT 1 FROM compaction_events e WHERE e.id = l.event)",
    )
    .bind(&events)
    .fetch_one(pool)
    .await?;
    out.push(("acknowledged compaction events missing".into(), lost_events));
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut duration = Duration::from_secs(60);
    let mut restart = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--duration" => {
                duration = parse_duration(iter.next().ok_or("--duration needs a value")?)?
            }
            "--restart-server" => restart = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let admin: PgConnectOptions = url.parse()?;
    if !is_loopback(admin.get_host()) {
        return Err(format!(
            "refusing to soak a non-loopback server ({})",
            admin.get_host()
        )
        .into());
    }
    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE IF EXISTS agentpg_soak WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE DATABASE agentpg_soak")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let options = admin.clone().database("agentpg_soak");
    let pool = PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_with(options.clone())
        .await?;
    agentpg_repo::migrate(&pool).await?;

    let mut sessions = Vec::new();
    for t in 0..TENANTS {
        for s in 0..SESSIONS_PER_TENANT {
            let tenant = format!("tenant-{t}");
            let created = agentpg_repo::create_session(
                &pool,
                &NewSession::new(tenant.clone(), format!("session-{s}")),
            )
            .await?;
            sessions.push((tenant, created.id));
        }
    }
    let sessions = Arc::new(sessions);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let ledger = Arc::new(Mutex::new(HashSet::new()));
    let summaries: Summaries = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let seed = fastrand::u64(..);
    println!(
        "soak: {} tenants x {} sessions, {APPENDERS} appenders, {COMPACTORS} compactors, {REVERTERS} reverter, {}s, seed {seed}{}",
        TENANTS,
        SESSIONS_PER_TENANT,
        duration.as_secs(),
        if restart { ", one server restart" } else { "" }
    );

    let mut tasks = Vec::new();
    for i in 0..APPENDERS {
        tasks.push(tokio::spawn(appender(
            pool.clone(),
            sessions.clone(),
            stop.clone(),
            stats.clone(),
            ledger.clone(),
            seed + i as u64,
        )));
    }
    for i in 0..COMPACTORS {
        tasks.push(tokio::spawn(compactor(
            pool.clone(),
            sessions.clone(),
            stop.clone(),
            stats.clone(),
            summaries.clone(),
            seed + 100 + i as u64,
        )));
    }
    for i in 0..REVERTERS {
        tasks.push(tokio::spawn(reverter(
            pool.clone(),
            sessions.clone(),
            stop.clone(),
            stats.clone(),
            seed + 200 + i as u64,
        )));
    }
    let faults = tokio::spawn(fault_injector(
        admin.clone(),
        stop.clone(),
        stats.clone(),
        restart.then(|| started + duration / 2),
        seed + 300,
    ));
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    faults.await?;

    // Check with a fresh pool: the old one may hold connections the faults broke.
    pool.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    let ledger = ledger.lock().unwrap().clone();
    let summaries = summaries.lock().unwrap().clone();
    let results = check(&pool, &ledger, &summaries).await?;
    let (messages, archived, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_archive), (SELECT count(*) FROM compaction_events)",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;

    println!("\nafter {:.1}s:", started.elapsed().as_secs_f64());
    println!("{}", stats.appends.line("appends"));
    println!("{}", stats.compactions.line("compacts"));
    println!("{}", stats.reverts.line("reverts"));
    println!(
        "faults     backends terminated {}  server restarts {}",
        stats.kills.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed)
    );
    println!("database   messages {messages}  archived {archived}  compaction events {events}",);
    println!(
        "ledger     acknowledged appended messages {}  acknowledged summaries {}",
        ledger.len(),
        summaries.len()
    );
    println!("\ninvariants:");
    let mut violations = 0;
    for (name, n) in &results {
        println!("  {n:>5}  {name}");
        violations += n;
    }
    let unexpected = stats.appends.failed_unexpected.load(Ordering::Relaxed)
        + stats.compactions.failed_unexpected.load(Ordering::Relaxed)
        + stats.reverts.failed_unexpected.load(Ordering::Relaxed);
    println!("\nviolations: {violations}; errors that were not clean: {unexpected}");

    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE agentpg_soak WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    if violations != 0 || unexpected != 0 {
        std::process::exit(1);
    }
    Ok(())
}
