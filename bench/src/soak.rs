//! Soak and fault run: several tenants, many sessions, concurrent appenders, compactions and
//! reverts for a fixed time, while a fault injector terminates random backends (and, with
//! `--restart-server`, restarts PostgreSQL once). Appenders send every batch whose outcome is
//! unknown again, with the same message ids, as real agents do; some batches carry a tool call
//! with its result. At the end every invariant is checked — exactly once: nothing acknowledged
//! lost, nothing stored twice, tokens exact, no tool pair split, no preserved message gone — and
//! the figures printed. Exits non-zero on any violation.
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
    /// Appends sent again after an unknown outcome.
    retries: AtomicU64,
    /// Batches answered after at least one retry.
    retried_then_acked: AtomicU64,
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

/// One message of a batch, with the id the client chose (so that a retry is recognised) and a
/// text no other message has (so that a duplicate would show).
fn message(tenant: &str, session_id: Uuid, rng: &mut fastrand::Rng) -> NewMessage {
    NewMessage {
        id: Some(Uuid::new_v4()),
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

/// A tool call and its result, appended together.
fn tool_pair(tenant: &str, session_id: Uuid, rng: &mut fastrand::Rng) -> [NewMessage; 2] {
    let call = format!("call-{}", rng.u64(..));
    let mut use_ = message(tenant, session_id, rng);
    use_.role = MessageRole::Assistant;
    use_.content = Some(Json(vec![
        ContentBlock::text(format!("calling {}", rng.u64(..))),
        ContentBlock::tool_use(call.clone(), "search", serde_json::json!({"q": "soak"})),
    ]));
    let mut result = message(tenant, session_id, rng);
    result.role = MessageRole::User;
    result.content = Some(Json(vec![ContentBlock::tool_result(
        call,
        serde_json::json!(format!("result {}", rng.u64(..))),
    )]));
    [use_, result]
}

/// The client-side record of acknowledged appends: every message id, and those appended
/// preserved.
#[derive(Default)]
struct Ledger {
    appended: HashSet<Uuid>,
    preserved: HashSet<Uuid>,
}

async fn appender(
    pool: PgPool,
    sessions: Arc<Vec<(String, Uuid)>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        let (tenant, id) = &sessions[rng.usize(..sessions.len())];
        let mut batch: Vec<NewMessage> = (0..rng.usize(1..=20))
            .map(|_| message(tenant, *id, &mut rng))
            .collect();
        if rng.u8(..) < 64 {
            batch.extend(tool_pair(tenant, *id, &mut rng));
        }
        // An append whose outcome is unknown (the connection died, the server restarted) is
        // sent again, with the same ids, as a real agent would, until it is answered.
        let mut retried = false;
        let result = loop {
            let result = append_messages(&pool, tenant, *id, &batch).await;
            match &result {
                Err(e) if e.is_retryable() => {
                    stats.appends.record(&result);
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(rng.u64(10..100))).await;
                }
                _ => break result,
            }
        };
        if let Ok(rows) = &result {
            let mut ledger = ledger.lock().unwrap();
            ledger.appended.extend(rows.rows().map(|m| m.id));
            ledger
                .preserved
                .extend(rows.rows().filter(|m| m.is_preserved).map(|m| m.id));
            if retried {
                stats.retried_then_acked.fetch_add(1, Ordering::Relaxed);
            }
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
            pending_tool_calls: Default::default(),
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
    ledger: &Ledger,
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
        scalar(
            "messages stored twice (the same text, live or archived)",
            "SELECT count(*) - count(DISTINCT (tenant_id, c)) FROM (
                 SELECT tenant_id, content::text AS c FROM messages WHERE NOT is_summary
                 UNION ALL
                 SELECT tenant_id, (original_message -> 'content')::text FROM message_archive
                  WHERE NOT (original_message ->> 'is_summary')::bool
             ) AS texts",
        ),
        scalar(
            "tool uses without their result, or results without their tool use, in a session",
            "WITH uses AS (SELECT tenant_id, session_id, jsonb_array_elements_text(tool_use_ids) AS id FROM messages),
                  results AS (SELECT tenant_id, session_id, jsonb_array_elements_text(tool_result_ids) AS id FROM messages)
             SELECT (SELECT count(*) FROM (SELECT * FROM uses EXCEPT SELECT * FROM results) AS a)
                  + (SELECT count(*) FROM (SELECT * FROM results EXCEPT SELECT * FROM uses) AS b)",
        ),
    ];
    for (name, sql) in queries {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        out.push((name, n));
    }
    let acked: Vec<Uuid> = ledger.appended.iter().copied().collect();
    let present: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS l(id)
          WHERE l.id IN (SELECT id FROM messages UNION ALL SELECT id FROM message_archive)",
    )
    .bind(&acked)
    .fetch_one(pool)
    .await?;
    out.push((
        "acknowledged appends missing".into(),
        acked.len() as i64 - present,
    ));
    let preserved: Vec<Uuid> = ledger.preserved.iter().copied().collect();
    let live_preserved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS l(id)
          WHERE l.id IN (SELECT id FROM messages WHERE is_preserved)",
    )
    .bind(&preserved)
    .fetch_one(pool)
    .await?;
    out.push((
        "acknowledged preserved messages not live".into(),
        preserved.len() as i64 - live_preserved,
    ));
    let (events, summary_ids): (Vec<Uuid>, Vec<Uuid>) = summaries.iter().copied().unzip();
    let missing_summaries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[], $2::uuid[]) AS l(event, id)
          WHERE l.event IN (SELECT id FROM compaction_events WHERE reverted_at IS NULL)
            AND l.id NOT IN (SELECT id FROM messages UNION ALL SELECT id FROM message_archive)",
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
          WHERE l.event NOT IN (SELECT id FROM compaction_events)",
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
    let ledger = Arc::new(Mutex::new(Ledger::default()));
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
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
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
        "ledger     acknowledged appended messages {}  preserved {}  acknowledged summaries {}",
        ledger.appended.len(),
        ledger.preserved.len(),
        summaries.len()
    );
    println!(
        "retries    appends sent again after an unknown outcome {}  batches answered after a retry {}",
        stats.retries.load(Ordering::Relaxed),
        stats.retried_then_acked.load(Ordering::Relaxed)
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
