//! The soak's clients: appenders (with retries of every kind), compactors, reverters, forkers,
//! a preserver, retention, a tenant connection that tries to reach other tenants, and the probe
//! that watches calls while a worker is down.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, compact, delete_idle_sessions, finalize_compactions, fork_session,
    get_session, list_compactions, list_messages, plan_compaction, revert_compaction,
    set_preserved, Appended, CompactionPlan, CompactionPolicy, Error, MessageRange,
    PendingToolCalls, Summary,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession, Usage};
use sqlx::types::Json;
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

use super::check::RETENTION_TENANT;
use super::ledger::{Ledger, Stats};

/// What every client shares.
pub(crate) struct Ctx {
    pub(crate) pool: PgPool,
    pub(crate) sessions: Vec<(String, Uuid)>,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: Stats,
    pub(crate) ledger: Mutex<Ledger>,
    /// Tool results waiting to be appended: their call went in an earlier batch (the tool is
    /// still running), by session.
    pub(crate) pending: Mutex<HashMap<Uuid, (String, Vec<NewMessage>)>>,
    /// Acknowledged batches, to send again later (a retry that lands after compactions).
    pub(crate) recent: Mutex<VecDeque<(String, Uuid, Vec<NewMessage>)>>,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> &(String, Uuid) {
        &self.sessions[rng.usize(..self.sessions.len())]
    }
}

/// One message with the id the client chose (so that a retry is recognised) and a text no
/// other message has (so that a duplicate would show).
pub(crate) fn message(tenant: &str, session_id: Uuid, rng: &mut fastrand::Rng) -> NewMessage {
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

/// A tool call and its result.
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

/// Sends `batch` until it is answered (an unknown outcome is sent again with the same ids), for
/// up to about a minute.
async fn send(
    ctx: &Ctx,
    tenant: &str,
    session: Uuid,
    batch: &[NewMessage],
    rng: &mut fastrand::Rng,
) -> Result<Appended, Error> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = append_messages(&ctx.pool, tenant, session, batch).await;
        match &result {
            Err(e) if e.is_retryable() && attempts < 1000 => {
                ctx.stats.appends.record(&result);
                ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng.u64(10..100))).await;
            }
            _ => {
                if attempts > 1 && result.is_ok() {
                    ctx.stats.retried_then_acked.fetch_add(1, Ordering::Relaxed);
                }
                return result;
            }
        }
    }
}

fn acknowledge(ctx: &Ctx, tenant: &str, session: Uuid, batch: &[NewMessage], answer: &Appended) {
    let mut ledger = ctx.ledger.lock().unwrap();
    for stored in &answer.messages {
        let m = stored.message();
        ledger.appended.insert(m.id, tenant.to_string());
        if m.is_preserved {
            ledger.preserved.insert(m.id, tenant.to_string());
        }
    }
    drop(ledger);
    let mut recent = ctx.recent.lock().unwrap();
    recent.push_back((tenant.to_string(), session, batch.to_vec()));
    if recent.len() > 200 {
        recent.pop_front();
    }
}

/// An acknowledged batch sent again, later: every message comes back (live, or archived by a
/// compaction since) and nothing is written.
async fn late_retry(ctx: &Ctx, rng: &mut fastrand::Rng) {
    let picked = {
        let recent = ctx.recent.lock().unwrap();
        if recent.is_empty() {
            return;
        }
        recent[rng.usize(..recent.len())].clone()
    };
    let (tenant, session, batch) = picked;
    ctx.stats.late_retries.fetch_add(1, Ordering::Relaxed);
    match append_messages(&ctx.pool, &tenant, session, &batch).await {
        Ok(answer) => {
            let ids: Vec<Uuid> = answer.rows().map(|m| m.id).collect();
            let sent: Vec<Uuid> = batch.iter().map(|m| m.id.expect("ids given")).collect();
            if ids != sent {
                ctx.stats
                    .violation(&format!("a late retry answered {ids:?} for {sent:?}"));
            }
            let archived = answer.messages.iter().filter(|m| m.is_archived()).count();
            ctx.stats
                .late_retries_archived
                .fetch_add(archived as u64, Ordering::Relaxed);
        }
        Err(e) if e.is_retryable() => {}
        // Retention deletes the retention tenant's sessions.
        Err(Error::NotFound(_)) if tenant == RETENTION_TENANT => {}
        Err(e) => ctx.stats.violation(&format!("a late retry failed: {e:?}")),
    }
}

/// The same new batch sent twice at once: both answers are the stored rows, and it is stored
/// once.
async fn concurrent_duplicate(
    ctx: &Ctx,
    tenant: &str,
    session: Uuid,
    batch: &[NewMessage],
) -> Option<Appended> {
    ctx.stats
        .concurrent_duplicates
        .fetch_add(1, Ordering::Relaxed);
    let (a, b) = tokio::join!(
        append_messages(&ctx.pool, tenant, session, batch),
        append_messages(&ctx.pool, tenant, session, batch)
    );
    match (a, b) {
        (Ok(a), Ok(b)) => {
            // The two answers may be read at different moments: a compaction may have
            // archived the batch, or the preserver marked a message, between them. What they
            // must agree on is every message as stored.
            let stored = |answer: &Appended| -> Vec<agentpg_schema::Message> {
                answer
                    .rows()
                    .map(|m| agentpg_schema::Message {
                        is_preserved: false,
                        updated_at: m.created_at,
                        ..m.clone()
                    })
                    .collect()
            };
            if stored(&a) != stored(&b) {
                ctx.stats.violation(&format!(
                    "a batch sent twice at once was answered differently: {:?} / {:?}",
                    a.messages, b.messages
                ));
            }
            Some(a)
        }
        (Ok(a), Err(e)) | (Err(e), Ok(a)) if e.is_retryable() => Some(a),
        (Err(a), Err(b)) if a.is_retryable() && b.is_retryable() => None,
        (Err(Error::NotFound(_)), _) | (_, Err(Error::NotFound(_)))
            if tenant == RETENTION_TENANT =>
        {
            None
        }
        (a, b) => {
            ctx.stats.violation(&format!(
                "a batch sent twice at once: {:?} / {:?}",
                a.map(|_| ()),
                b.map(|_| ())
            ));
            None
        }
    }
}

pub(crate) async fn appender(ctx: &Ctx, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while ctx.running() {
        if rng.u8(..) < 12 {
            late_retry(ctx, &mut rng).await;
        }
        let (tenant, session) = ctx.pick(&mut rng).clone();
        let mut batch = Vec::new();
        let waiting = ctx.pending.lock().unwrap().remove(&session);
        if let Some((_, results)) = &waiting {
            batch.extend(results.iter().cloned());
        }
        batch.extend((0..rng.usize(1..=20)).map(|_| message(&tenant, session, &mut rng)));
        if rng.u8(..) < 64 {
            batch.extend(tool_pair(&tenant, session, &mut rng));
        }
        // A call whose tool is still running: its result goes in a later batch.
        let mut pending = None;
        if waiting.is_none() && tenant != RETENTION_TENANT && rng.u8(..) < 32 {
            let [call, result] = tool_pair(&tenant, session, &mut rng);
            batch.push(call);
            pending = Some(result);
        }
        let answer = if rng.u8(..) < 8 {
            match concurrent_duplicate(ctx, &tenant, session, &batch).await {
                Some(a) => Ok(a),
                None => send(ctx, &tenant, session, &batch, &mut rng).await,
            }
        } else {
            send(ctx, &tenant, session, &batch, &mut rng).await
        };
        ctx.stats.appends.record(&answer);
        match &answer {
            Ok(a) => {
                acknowledge(ctx, &tenant, session, &batch, a);
                if let Some(result) = pending {
                    ctx.stats.pending_calls.fetch_add(1, Ordering::Relaxed);
                    wait_for(ctx, session, &tenant, vec![result]);
                }
            }
            Err(_) => {
                // Not stored: the results waiting for this session still wait.
                if let Some((tenant, results)) = waiting {
                    wait_for(ctx, session, &tenant, results);
                }
            }
        }
    }
}

/// Results that will be appended to `session` later (with those already waiting).
fn wait_for(ctx: &Ctx, session: Uuid, tenant: &str, results: Vec<NewMessage>) {
    ctx.pending
        .lock()
        .unwrap()
        .entry(session)
        .or_insert_with(|| (tenant.to_string(), Vec::new()))
        .1
        .extend(results);
}

/// After the run: every tool still running gets its result.
pub(crate) async fn answer_pending_calls(ctx: &Ctx) {
    let waiting: Vec<(Uuid, (String, Vec<NewMessage>))> =
        ctx.pending.lock().unwrap().drain().collect();
    let mut rng = fastrand::Rng::with_seed(1);
    for (session, (tenant, batch)) in waiting {
        if let Ok(a) = send(ctx, &tenant, session, &batch, &mut rng).await {
            acknowledge(ctx, &tenant, session, &batch, &a);
        }
    }
}

/// A summary, or none.
fn summary(rng: &mut fastrand::Rng) -> Option<Summary> {
    rng.bool().then(|| Summary {
        id: Some(Uuid::new_v4()),
        role: MessageRole::User,
        content: vec![ContentBlock::text("summary")],
        usage: Some(Usage {
            input_tokens: rng.i64(0..100),
            ..Usage::default()
        }),
        metadata: None,
    })
}

pub(crate) async fn compactor(ctx: &Ctx, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while ctx.running() {
        let (tenant, session) = ctx.pick(&mut rng).clone();
        let plan = if rng.bool() {
            // Through the planner: half the session, the newest messages kept.
            let Ok(Some(s)) = get_session(&ctx.pool, &tenant, session).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut policy = CompactionPolicy::new(s.total_tokens / 2, "soak-planned");
            policy.keep_last_messages = 2;
            match plan_compaction(&ctx.pool, &tenant, session, &policy).await {
                Ok(p) => p.plan,
                Err(_) => None,
            }
        } else {
            // A random run of messages: it may split a pair, reach a running call or a
            // preserved message, and be refused.
            let Ok(messages) =
                list_messages(&ctx.pool, &tenant, session, MessageRange::default()).await
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let ids: Vec<Uuid> = messages
                .iter()
                .filter(|m| !m.is_preserved)
                .map(|m| m.id)
                .collect();
            if ids.len() < 4 {
                None
            } else {
                let take = rng.usize(1..=ids.len() / 2);
                let start = rng.usize(..=ids.len() - take);
                Some(CompactionPlan {
                    session_id: session,
                    remove: ids[start..start + take].to_vec(),
                    summary: None,
                    strategy: "soak".into(),
                    model_used: None,
                    duration_ms: Some(1),
                    pending_tool_calls: PendingToolCalls::Keep,
                })
            }
        };
        let Some(mut plan) = plan else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        plan.summary = summary(&mut rng);
        let result = compact(&ctx.pool, &tenant, &plan).await;
        if let Ok(event) = &result {
            if let Some(id) = event.summary_message_id {
                ctx.ledger
                    .lock()
                    .unwrap()
                    .summaries
                    .push((event.id, id, tenant.clone()));
            }
        }
        ctx.stats.compactions.record(&result);
        tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
    }
}

pub(crate) async fn reverter(ctx: &Ctx, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while ctx.running() {
        let (tenant, session) = ctx.pick(&mut rng).clone();
        if let Ok(events) = list_compactions(&ctx.pool, &tenant, session).await {
            if let Some(latest) = events.iter().find(|e| e.reverted_at.is_none()) {
                let result = revert_compaction(&ctx.pool, &tenant, latest.id).await;
                ctx.stats.reverts.record(&result);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..120))).await;
    }
}

pub(crate) async fn forker(ctx: &Ctx, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0u64;
    while ctx.running() {
        let (tenant, session) = ctx.pick(&mut rng).clone();
        if let Ok(tail) = list_messages(&ctx.pool, &tenant, session, MessageRange::last(5)).await {
            if !tail.is_empty() {
                n += 1;
                let at = tail[rng.usize(..tail.len())].id;
                let result = fork_session(
                    &ctx.pool,
                    &tenant,
                    session,
                    at,
                    NewSession::new(tenant.clone(), format!("fork-{seed}-{n}")),
                )
                .await;
                ctx.stats.forks.record(&result);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
    }
}

pub(crate) async fn preserver(ctx: &Ctx, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while ctx.running() {
        let (tenant, session) = ctx.pick(&mut rng).clone();
        if let Ok(tail) = list_messages(&ctx.pool, &tenant, session, MessageRange::last(10)).await {
            if let Some(m) = tail.iter().filter(|m| !m.is_preserved).nth(rng.usize(..4)) {
                let result = set_preserved(&ctx.pool, &tenant, session, m.id, true).await;
                if let Ok(stored) = &result {
                    ctx.ledger
                        .lock()
                        .unwrap()
                        .preserved
                        .insert(stored.id, tenant.clone());
                }
                ctx.stats.preserves.record(&result);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(20..80))).await;
    }
}

/// Retention on its own tenant: old compactions give up their archive, idle sessions go.
pub(crate) async fn retention(ctx: &Ctx) {
    while ctx.running() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let result =
            finalize_compactions(&ctx.pool, RETENTION_TENANT, Duration::from_secs(2), 50).await;
        ctx.stats.retention.record(&result);
        let result =
            delete_idle_sessions(&ctx.pool, RETENTION_TENANT, Duration::from_secs(4), 50).await;
        ctx.stats.retention.record(&result);
    }
}

/// A connection of one tenant (logged in as its role, under row-level security) that runs
/// what it can to reach the other tenants' rows, and counts what it sees of them.
pub(crate) async fn attacker(ctx: &Ctx, options: sqlx::postgres::PgConnectOptions, tenant: &str) {
    let attempts = [
        "SELECT set_config('agentpg.tenant', 'tenant-1', false)".to_string(),
        "SET agentpg.tenant = 'tenant-2'".to_string(),
        "SET ROLE agentpg_app".to_string(),
        "RESET ROLE".to_string(),
        format!(
            "SET ROLE {}",
            agentpg_repo::rls::tenant_role("tenant-1").unwrap()
        ),
        "ALTER ROLE CURRENT_USER SET agentpg.tenant = 'tenant-3'".to_string(),
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    while ctx.running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut conn) = options.connect().await else {
            continue;
        };
        let attempt = &attempts[rng.usize(..attempts.len())];
        ctx.stats.attacks.fetch_add(1, Ordering::Relaxed);
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(attempt.clone()))
            .execute(&mut conn)
            .await;
        for table in [
            "sessions",
            "messages",
            "compaction_events",
            "message_archive",
        ] {
            let seen: Result<i64, sqlx::Error> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id <> $1"
            )))
            .bind(tenant)
            .fetch_one(&mut conn)
            .await;
            if let Ok(n) = seen {
                if n > 0 {
                    ctx.stats.violation(&format!(
                        "after {attempt:?}, tenant {tenant}'s connection saw {n} rows of other tenants in {table}"
                    ));
                }
            }
        }
        let _ = sqlx::Connection::close(conn).await;
    }
}

/// What calls did while a worker was down, by which worker holds the tenant.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcomes {
    pub(crate) ok: u64,
    pub(crate) retryable: u64,
    pub(crate) other: u64,
}

/// Reads a session of every tenant every 250 ms between `from` and `until`, sorting the
/// outcomes by whether the tenant's worker is the one that goes down.
pub(crate) async fn probe(
    ctx: &Ctx,
    down_tenants: Vec<String>,
    from: Instant,
    until: Instant,
) -> (Outcomes, Outcomes) {
    let (mut down, mut up) = (Outcomes::default(), Outcomes::default());
    tokio::time::sleep_until(from.into()).await;
    let firsts: Vec<(String, Uuid)> = {
        let mut seen = std::collections::HashSet::new();
        ctx.sessions
            .iter()
            .filter(|(t, _)| seen.insert(t.clone()))
            .cloned()
            .collect()
    };
    while Instant::now() < until {
        for (tenant, session) in &firsts {
            let result = get_session(&ctx.pool, tenant, *session).await;
            let bucket = if down_tenants.contains(tenant) {
                &mut down
            } else {
                &mut up
            };
            match result {
                Ok(Some(_)) => bucket.ok += 1,
                // A session retention deleted.
                Ok(None) if tenant == RETENTION_TENANT => bucket.ok += 1,
                Ok(None) => {
                    ctx.stats.violation(&format!(
                        "while a worker was down, session {session} of {tenant} read as missing"
                    ));
                    bucket.other += 1
                }
                Err(e) if e.is_retryable() => bucket.retryable += 1,
                Err(e) => {
                    eprintln!("probe: {e:?}");
                    bucket.other += 1
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (down, up)
}
