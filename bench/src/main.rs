//! agentpg against the baselines a user would otherwise write, measured in one run: hand-written
//! sqlx running the same SQL, one INSERT per message in a transaction, `COPY … FROM STDIN`, raw
//! decoding into `serde_json::Value`, and the same compaction written by hand.
//!
//! Creates (and drops) its own database `agentpg_bench` on the `DATABASE_URL` server. The two
//! sides are interleaved (alternating which goes first) and repeated; the table shows medians.
//! Statements are counted from sqlx's own per-statement events (target `sqlx::query`), in a
//! separate untimed pass so that counting costs nothing in the timed runs. Two kinds of
//! statement sqlx sends without such an event are added by hand: `BEGIN` (which sqlx pipelines
//! in front of the transaction's first statement, so it costs no round trip of its own) and
//! `COPY`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, append_messages_after, compact, create_session, fork_session, get_session,
    list_messages, plan_compaction, CompactionPlan, CompactionPolicy, LastSeen, MessageRange,
    Summary,
};
use agentpg_schema::messages::{self, MessageParent};
use agentpg_schema::{
    AppendOutcome, ContentBlock, Message, MessageRole, NewMessage, NewSession, Session, Usage,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

mod citus;
mod distribute;
mod follow;
mod scale;
mod throughput;
mod watch;

const TENANT: &str = "bench";

/// Runs `f` once and returns how many statements it sent, given how many transactions it opens
/// (their `BEGIN`s are not logged by sqlx).
async fn count_statements<F: std::future::Future<Output = ()>>(begins: u64, f: F) -> u64 {
    let counter = Arc::new(AtomicU64::new(0));
    let seen = counter.clone();
    watch::watching(
        "sqlx::query",
        move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        },
        f,
    )
    .await;
    counter.load(Ordering::Relaxed) + begins
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

struct Row {
    case: String,
    ours: Duration,
    base: Option<Duration>,
    ours_statements: String,
    base_statements: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    /// A row whose target is `ours / base <= limit`; the target text and the verdict come from
    /// the same number.
    fn ratio(
        case: String,
        ours: Duration,
        base: Duration,
        statements: (String, String),
        limit: f64,
    ) -> Row {
        Row {
            case,
            ours,
            base: Some(base),
            ours_statements: statements.0,
            base_statements: statements.1,
            target: format!("ratio <= {limit}"),
            met: Some(ours.as_secs_f64() / base.as_secs_f64() <= limit),
        }
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<52} {:>11} {:>11} {:>7} {:>9} {:>9}  target",
        "case", "ours", "baseline", "ratio", "stmts", "base stmts"
    );
    for r in rows {
        let (base, ratio) = match r.base {
            Some(b) => (
                fmt(b),
                format!("{:.3}", r.ours.as_secs_f64() / b.as_secs_f64()),
            ),
            None => ("-".into(), "-".into()),
        };
        let verdict = match r.met {
            Some(true) => " (met)",
            Some(false) => " (MISSED)",
            None => "",
        };
        println!(
            "{:<52} {:>11} {:>11} {:>7} {:>9} {:>9}  {}{}",
            r.case,
            fmt(r.ours),
            base,
            ratio,
            r.ours_statements,
            r.base_statements,
            r.target,
            verdict
        );
    }
}

/// Times `rounds` rounds of `per_round` calls of each side. Calls alternate one by one (which
/// side goes first alternates too), so drift in the machine hits both sides alike. Returns the
/// median over rounds of each side's mean time per call.
async fn interleave<A, B, FA, FB>(
    rounds: usize,
    per_round: usize,
    mut ours: A,
    mut base: B,
) -> (Duration, Duration)
where
    A: FnMut(usize) -> FA,
    B: FnMut(usize) -> FB,
    FA: std::future::Future<Output = ()>,
    FB: std::future::Future<Output = ()>,
{
    let mut o = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    let mut i = 0;
    for _ in 0..rounds {
        let (mut ours_total, mut base_total) = (Duration::ZERO, Duration::ZERO);
        for k in 0..per_round {
            for side in [k % 2, 1 - k % 2] {
                i += 1;
                let start = Instant::now();
                if side == 0 {
                    ours(i).await;
                    ours_total += start.elapsed();
                } else {
                    base(i).await;
                    base_total += start.elapsed();
                }
            }
        }
        o.push(ours_total / per_round as u32);
        b.push(base_total / per_round as u32);
    }
    (median(o), median(b))
}

fn message(session_id: Uuid, i: usize) -> NewMessage {
    let role = if i.is_multiple_of(2) {
        MessageRole::User
    } else {
        MessageRole::Assistant
    };
    let mut blocks = vec![ContentBlock::text(format!(
        "Message {i}: a realistic paragraph of agent conversation text that goes on for a while, \
         describing a plan, a tool call and its result, so that each row carries a few hundred \
         bytes of JSON like a real transcript would."
    ))];
    if i.is_multiple_of(3) {
        blocks.push(
            serde_json::from_value(serde_json::json!({
                "type": "tool_use", "id": format!("call_{i}"), "name": "search",
                "input": {"query": "postgres keyset pagination", "limit": 10}
            }))
            .expect("a tool_use block"),
        );
    }
    NewMessage {
        content: Some(Json(blocks)),
        usage: Some(Json(Usage {
            input_tokens: 120 + (i % 50) as i64,
            output_tokens: 40 + (i % 13) as i64,
            ..Usage::default()
        })),
        ..NewMessage::new(TENANT.into(), session_id, role)
    }
}

async fn new_session(pool: &PgPool, name: String) -> Session {
    create_session(pool, &NewSession::new(TENANT.into(), name))
        .await
        .expect("create session")
}

/// Same row shape as [`Message`], with the JSON columns decoded into `serde_json::Value`.
#[derive(sqlx::FromRow)]
#[allow(dead_code)]
struct RawMessage {
    id: Uuid,
    tenant_id: String,
    session_id: Uuid,
    position: i64,
    role: String,
    content: serde_json::Value,
    usage: Option<serde_json::Value>,
    tokens: i64,
    tool_use_ids: serde_json::Value,
    tool_result_ids: serde_json::Value,
    metadata: serde_json::Value,
    is_preserved: bool,
    is_summary: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Input + output tokens of a batch: the hand-written baselines keep the session's total
/// themselves, as an application without agentpg would (agentpg's rule is the generated
/// `messages.tokens` column).
fn batch_tokens(batch: &[NewMessage]) -> i64 {
    batch
        .iter()
        .map(|m| {
            m.usage
                .as_ref()
                .map_or(0, |u| u.input_tokens + u.output_tokens)
        })
        .sum()
}

/// The baselines' bookkeeping: add the batch's tokens to the session.
async fn add_session_tokens(conn: &mut sqlx::PgConnection, session_id: Uuid, tokens: i64) {
    sqlx::query(
        "UPDATE sessions SET total_tokens = total_tokens + $3, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(TENANT)
    .bind(session_id)
    .bind(tokens)
    .execute(conn)
    .await
    .unwrap();
}

/// The per-row baseline: how a hand-written (or Go AgentPG-style) store writes a batch.
async fn append_per_row(pool: &PgPool, session_id: Uuid, batch: &[NewMessage]) {
    let mut tx = pool.begin().await.unwrap();
    let tokens = batch_tokens(batch);
    for m in batch {
        sqlx::query(
            "INSERT INTO messages (tenant_id, session_id, role, content, usage) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(TENANT)
        .bind(session_id)
        .bind(m.role)
        .bind(&m.content)
        .bind(&m.usage)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    add_session_tokens(&mut tx, session_id, tokens).await;
    tx.commit().await.unwrap();
}

/// The same append statement agentpg sends, bound by its generated binder and nothing else (no
/// validation): what agentpg's own code costs on top of its SQL.
async fn append_same_sql(pool: &PgPool, session_id: Uuid, batch: &[NewMessage]) {
    let parent = MessageParent {
        tenant_id: TENANT,
        session_id,
    };
    let mut conn = pool.acquire().await.unwrap();
    let appended = messages::stmt::append(&mut conn, &parent, None, batch)
        .await
        .unwrap();
    assert!(
        matches!(appended, AppendOutcome::Appended { rows, .. } if rows.len() == batch.len()),
        "the same statement appends"
    );
}

/// COPY text format: escape backslash, tab, newline, carriage return.
fn copy_field(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// The COPY baseline: the same rows through `COPY … FROM STDIN`, and the session's total.
async fn append_copy(pool: &PgPool, session_id: Uuid, batch: &[NewMessage]) {
    let mut data = String::with_capacity(batch.len() * 512);
    for m in batch {
        data.push_str(TENANT);
        data.push('\t');
        data.push_str(&session_id.to_string());
        data.push('\t');
        data.push_str(m.role.as_str());
        data.push('\t');
        copy_field(&mut data, &serde_json::to_string(&m.content).unwrap());
        data.push('\t');
        copy_field(&mut data, &serde_json::to_string(&m.usage).unwrap());
        data.push('\n');
    }
    let tokens = batch_tokens(batch);
    let mut tx = pool.begin().await.unwrap();
    let mut copy = tx
        .copy_in_raw("COPY messages (tenant_id, session_id, role, content, usage) FROM STDIN")
        .await
        .unwrap();
    copy.send(data.into_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    add_session_tokens(&mut tx, session_id, tokens).await;
    tx.commit().await.unwrap();
}

/// The compaction baseline: the same work in hand-written SQL, one statement per step.
async fn compact_by_hand(pool: &PgPool, session_id: Uuid, remove: &[Uuid]) {
    let mut tx = pool.begin().await.unwrap();
    let (total,): (i64,) = sqlx::query_as(
        "SELECT total_tokens FROM sessions WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(TENANT)
    .bind(session_id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let (removed_tokens, first_position): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(tokens), 0)::bigint, min(position) FROM messages \
         WHERE tenant_id = $1 AND session_id = $2 AND id = ANY($3)",
    )
    .bind(TENANT)
    .bind(session_id)
    .bind(remove)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let compacted = total - removed_tokens + 10;
    let event_id: Uuid = sqlx::query_scalar(
        "INSERT INTO compaction_events (tenant_id, session_id, strategy, original_tokens, compacted_tokens, messages_removed)
         VALUES ($1, $2, 'hand', $3, $4, $5) RETURNING id",
    )
    .bind(TENANT)
    .bind(session_id)
    .bind(total)
    .bind(compacted)
    .bind(remove.len() as i64)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "WITH removed AS (DELETE FROM messages WHERE tenant_id = $1 AND session_id = $2 AND id = ANY($3) RETURNING *)
         INSERT INTO message_archive (id, tenant_id, compaction_event_id, session_id, original_message)
         SELECT id, tenant_id, $4, session_id, to_jsonb(removed) FROM removed",
    )
    .bind(TENANT)
    .bind(session_id)
    .bind(remove)
    .bind(event_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO messages (tenant_id, session_id, position, role, content, usage, is_summary)
           VALUES ($1, $2, $3, 'user', '[{"type": "text", "text": "summary"}]', '{"input_tokens": 10}', true)"#,
    )
    .bind(TENANT)
    .bind(session_id)
    .bind(first_position)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE sessions SET total_tokens = $3, compaction_count = compaction_count + 1, updated_at = now() WHERE tenant_id = $1 AND id = $2")
        .bind(TENANT)
        .bind(session_id)
        .bind(compacted)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A fork as a careful user would write it by hand: one transaction, the session row, then one
/// statement that copies the messages up to the fork point and sets the fork's counters.
async fn fork_by_hand(pool: &PgPool, source: Uuid, at: Uuid, identifier: String) {
    let mut tx = pool.begin().await.unwrap();
    let fork: Uuid = sqlx::query_scalar(
        "INSERT INTO sessions (tenant_id, identifier, forked_from_session_id, forked_from_message_id) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(TENANT)
    .bind(identifier)
    .bind(source)
    .bind(at)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let updated = sqlx::query(
        "WITH copied AS ( \
           INSERT INTO messages (tenant_id, session_id, position, role, content, usage, metadata, \
                                 is_preserved, is_summary, created_at, updated_at) \
           SELECT tenant_id, $3, position, role, content, usage, metadata, is_preserved, \
                  is_summary, created_at, updated_at \
           FROM messages WHERE tenant_id = $1 AND session_id = $2 AND position <= \
             (SELECT position FROM messages WHERE tenant_id = $1 AND session_id = $2 AND id = $4) \
           RETURNING tokens, position) \
         UPDATE sessions SET total_tokens = (SELECT coalesce(sum(tokens), 0) FROM copied), \
                             last_position = (SELECT max(position) FROM copied) \
         WHERE tenant_id = $1 AND id = $3",
    )
    .bind(TENANT)
    .bind(source)
    .bind(fork)
    .bind(at)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    tx.commit().await.unwrap();
}

fn plan(session_id: Uuid, remove: Vec<Uuid>) -> CompactionPlan {
    CompactionPlan {
        session_id,
        remove,
        summary: Some(Summary {
            id: None,
            role: MessageRole::User,
            content: vec![ContentBlock::text("summary")],
            usage: Some(Usage {
                input_tokens: 10,
                ..Usage::default()
            }),
            metadata: None,
        }),
        strategy: "bench".into(),
        model_used: None,
        duration_ms: None,
        // The bench's transcripts call tools and never answer them (the cost of the pair
        // check is what is measured): such calls count as still running, and are removed.
        pending_tool_calls: agentpg_repo::PendingToolCalls::Remove,
    }
}

/// A session holding `n` messages.
/// Message `i` of a conversation made only of tool calls and their results: an assistant
/// message calling tool `call_{i/2}`, then a user message with its result.
fn pair_message(session_id: Uuid, i: usize) -> NewMessage {
    let call = format!("call_{}", i / 2);
    let (role, block) = if i.is_multiple_of(2) {
        (
            MessageRole::Assistant,
            ContentBlock::tool_use(call, "search", serde_json::json!({"q": "pairs", "n": i})),
        )
    } else {
        (
            MessageRole::User,
            ContentBlock::tool_result(call, serde_json::json!(format!("result {i}: a few words"))),
        )
    };
    NewMessage {
        role,
        content: Some(Json(vec![block])),
        ..message(session_id, i)
    }
}

/// A compaction of `n`-message sessions made by `make`, removing the oldest nine tenths (rounded
/// down to whole pairs if `whole_pairs`), against [`compact_by_hand`]: the medians of `rounds` alternating runs on fresh
/// sessions, and the statements ours sends at 10 and at `n` messages.
async fn compaction_case(
    pool: &PgPool,
    rounds: usize,
    n: usize,
    name: &str,
    make: fn(Uuid, usize) -> NewMessage,
    whole_pairs: bool,
) -> (Duration, Duration, [u64; 2]) {
    let removed = |size: usize| {
        let k = size * 9 / 10;
        if whole_pairs {
            k & !1
        } else {
            k
        }
    };
    let mut ours_t = Vec::new();
    let mut base_t = Vec::new();
    for round in 0..rounds {
        let (a, am) = filled_with(pool, format!("{name}-a{round}"), n, make).await;
        let (b, bm) = filled_with(pool, format!("{name}-b{round}"), n, make).await;
        let ra: Vec<Uuid> = am[..removed(n)].iter().map(|m| m.id).collect();
        let rb: Vec<Uuid> = bm[..removed(n)].iter().map(|m| m.id).collect();
        for side in [round % 2, 1 - round % 2] {
            let start = Instant::now();
            if side == 0 {
                compact(pool, TENANT, &plan(a.id, ra.clone()))
                    .await
                    .unwrap();
                ours_t.push(start.elapsed());
            } else {
                compact_by_hand(pool, b.id, &rb).await;
                base_t.push(start.elapsed());
            }
        }
    }
    let mut counts = [0; 2];
    for (count, size) in counts.iter_mut().zip([10, n]) {
        let (s, m) = filled_with(pool, format!("{name}-count-{size}"), size, make).await;
        let remove: Vec<Uuid> = m[..removed(size)].iter().map(|m| m.id).collect();
        *count = count_statements(1, async {
            compact(pool, TENANT, &plan(s.id, remove)).await.unwrap();
        })
        .await;
    }
    (median(ours_t), median(base_t), counts)
}

async fn filled_session(pool: &PgPool, name: String, n: usize) -> (Session, Vec<Message>) {
    filled_with(pool, name, n, message).await
}

async fn filled_with(
    pool: &PgPool,
    name: String,
    n: usize,
    make: fn(Uuid, usize) -> NewMessage,
) -> (Session, Vec<Message>) {
    let s = new_session(pool, name).await;
    let batch: Vec<NewMessage> = (0..n).map(|i| make(s.id, i)).collect();
    let mut stored = Vec::with_capacity(n);
    for chunk in batch.chunks(5_000) {
        stored.extend(
            append_messages(pool, TENANT, s.id, chunk)
                .await
                .unwrap()
                .into_rows(),
        );
    }
    (s, stored)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--read-session") {
        // The child of the memory case: read one session of agentpg_bench, report its RSS.
        let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
        let options: PgConnectOptions = url.parse()?;
        let how = args
            .get(at + 1)
            .ok_or("--read-session stream|vec <session>")?;
        let session: Uuid = args.get(at + 2).ok_or("a session id")?.parse()?;
        return scale::read_session_child(options.database("agentpg_bench"), how, session).await;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `--citus-coordinator URL --citus-workers host:port,…`: only the comparison of a Citus
    // cluster with the DATABASE_URL server.
    if let Some(at) = args.iter().position(|a| a == "--citus-coordinator") {
        let coordinator: PgConnectOptions = args.get(at + 1).ok_or("a coordinator URL")?.parse()?;
        let workers: Vec<String> = args
            .iter()
            .position(|a| a == "--citus-workers")
            .and_then(|w| args.get(w + 1))
            .ok_or("--citus-workers host:port,…")?
            .split(',')
            .map(str::to_owned)
            .collect();
        let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
        let plain: PgConnectOptions = url.parse()?;
        println!(
            "agentpg on Citus against one server: coordinator {}:{} with {} workers, one server {}:{}",
            coordinator.get_host(),
            coordinator.get_port(),
            workers.len(),
            plain.get_host(),
            plain.get_port()
        );
        let rows = citus::run(plain, coordinator, workers, quick).await?;
        print_table(&rows);
        return Ok(());
    }
    // `--only-scale`: skip the single-call and batch cases (for working on the scale cases).
    let only_scale = std::env::args().any(|a| a == "--only-scale");
    // `--only-concurrency`: only the agent turn loop against pgbench.
    let only_concurrency = std::env::args().any(|a| a == "--only-concurrency");
    let scale = if quick { 4 } else { 1 };
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let admin: PgConnectOptions = url.parse()?;
    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE IF EXISTS agentpg_bench WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE DATABASE agentpg_bench")
        .execute(&mut conn)
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin.clone().database("agentpg_bench"))
        .await?;
    agentpg_repo::migrate(&pool).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    println!(
        "agentpg benchmark: PostgreSQL {version} on {}, {} build, {} cores",
        admin.get_host(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // `--only-follow`: only the follow cases (`cargo xtask bench follow` runs them on a
    // throwaway server with room for their connections).
    if std::env::args().any(|a| a == "--only-follow") {
        let followers_pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(admin.clone().database("agentpg_bench"))
            .await?;
        follow::run(&followers_pool, quick).await;
        return Ok(());
    }
    let mut rows = Vec::new();
    if !only_scale && !only_concurrency {
        // --- single-row calls against hand-written sqlx running the same SQL ---
        // The hand-written baselines: the statements an application would write itself.
        let create_sql = "INSERT INTO sessions (tenant_id, identifier) VALUES ($1, $2) RETURNING *";
        let rounds = 21;
        let per_round = 200 / scale;
        let (ours, base) = interleave(
            rounds,
            per_round,
            |i| {
                let pool = &pool;
                async move {
                    new_session(pool, format!("o{i}")).await;
                }
            },
            |i| {
                let (pool, sql) = (&pool, create_sql);
                async move {
                    let _: Session = sqlx::query_as(sql)
                        .bind(TENANT)
                        .bind(format!("b{i}"))
                        .fetch_one(pool)
                        .await
                        .unwrap();
                }
            },
        )
        .await;
        let so = count_statements(0, async {
            new_session(&pool, "count-o".into()).await;
        })
        .await;
        let sb = count_statements(0, async {
            let _: Session = sqlx::query_as(create_sql)
                .bind(TENANT)
                .bind("count-b")
                .fetch_one(&pool)
                .await
                .unwrap();
        })
        .await;
        rows.push(Row::ratio(
            "create session".into(),
            ours,
            base,
            (so.to_string(), sb.to_string()),
            1.05,
        ));

        // The noise floor: the hand-written side against itself, measured the same way.
        let hand_create = |i: usize, prefix: &'static str| {
            let (pool, sql) = (&pool, create_sql);
            async move {
                let _: Session = sqlx::query_as(sql)
                    .bind(TENANT)
                    .bind(format!("{prefix}{i}"))
                    .fetch_one(pool)
                    .await
                    .unwrap();
            }
        };
        let (a, b) = interleave(
            rounds,
            per_round,
            |i| hand_create(i, "aa"),
            |i| hand_create(i, "ab"),
        )
        .await;
        rows.push(Row {
            case: "noise floor: create session, hand-written vs itself".into(),
            ours: a,
            base: Some(b),
            ours_statements: "1".into(),
            base_statements: "1".into(),
            target: "(shows the run's noise)".into(),
            met: None,
        });

        let target_session = new_session(&pool, "target".into()).await;
        let get_sql = "SELECT * FROM sessions WHERE tenant_id = $1 AND id = $2";
        let (ours, base) = interleave(
            rounds,
            per_round * 2,
            |_| {
                let pool = &pool;
                async move {
                    get_session(pool, TENANT, target_session.id)
                        .await
                        .unwrap()
                        .unwrap();
                }
            },
            |_| {
                let (pool, sql) = (&pool, get_sql);
                async move {
                    let _: Session = sqlx::query_as(sql)
                        .bind(TENANT)
                        .bind(target_session.id)
                        .fetch_one(pool)
                        .await
                        .unwrap();
                }
            },
        )
        .await;
        rows.push(Row::ratio(
            "get session".into(),
            ours,
            base,
            ("1".into(), "1".into()),
            1.05,
        ));

        let one_a = new_session(&pool, "one-a".into()).await;
        let one_b = new_session(&pool, "one-b".into()).await;
        let (ours, base) = interleave(
            rounds,
            per_round,
            |i| {
                let pool = &pool;
                async move {
                    append_messages(pool, TENANT, one_a.id, &[message(one_a.id, i)])
                        .await
                        .unwrap();
                }
            },
            |i| {
                let pool = &pool;
                async move {
                    append_same_sql(pool, one_b.id, &[message(one_b.id, i)]).await;
                }
            },
        )
        .await;
        let so = count_statements(0, async {
            append_messages(&pool, TENANT, one_a.id, &[message(one_a.id, 0)])
                .await
                .unwrap();
        })
        .await;
        rows.push(Row::ratio(
            "append one message".into(),
            ours,
            base,
            (so.to_string(), "1".into()),
            1.05,
        ));

        // Row-level security (opt-in), on one connection so that both sides run on the same
        // backend (on this machine two connections can differ by half in single-call latency,
        // whichever is which). Per connection: blocks of calls as the tenant's role (the role a
        // connection of `rls::tenant_connect_options` logs in as) against blocks as the owner;
        // per transaction: `rls::begin_as_tenant` (BEGIN, the role switched, the call, the role
        // put back, COMMIT) against the plain call.
        let one = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(admin.clone().database("agentpg_bench"))
            .await?;
        agentpg_repo::rls::create_tenant_role(&one, TENANT, None).await?;
        let as_tenant = format!("SET ROLE {}", agentpg_repo::rls::tenant_role(TENANT)?);
        let as_tenant = as_tenant.as_str();
        let as_owner = "RESET ROLE";
        async fn rls_blocks<F, Fut>(
            pool: &PgPool,
            rounds: usize,
            per_round: usize,
            modes: [Option<&str>; 2],
            mut call: F,
        ) -> (Duration, Duration)
        where
            F: FnMut(usize, bool) -> Fut,
            Fut: std::future::Future<Output = ()>,
        {
            let mut sides = [Vec::new(), Vec::new()];
            let mut i = 0;
            for round in 0..rounds {
                for side in [round % 2, 1 - round % 2] {
                    if let Some(sql) = modes[side] {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                            .execute(pool)
                            .await
                            .unwrap();
                    }
                    let start = Instant::now();
                    for _ in 0..per_round {
                        i += 1;
                        call(i, side == 0).await;
                    }
                    sides[side].push(start.elapsed() / per_round as u32);
                }
            }
            let [a, b] = sides;
            (median(a), median(b))
        }
        for _ in 0..500 {
            get_session(&one, TENANT, target_session.id).await?;
        }
        let (a, b) = rls_blocks(&one, rounds, per_round * 2, [None, None], |_, _| {
            let pool = &one;
            async move {
                get_session(pool, TENANT, target_session.id)
                    .await
                    .unwrap()
                    .unwrap();
            }
        })
        .await;
        rows.push(Row {
            case: "  floor: get session, blocks on one connection".into(),
            ours: a,
            base: Some(b),
            ours_statements: "1".into(),
            base_statements: "1".into(),
            target: "(the comparison's own noise)".into(),
            met: None,
        });
        let (ours, base) = rls_blocks(
            &one,
            rounds,
            per_round * 2,
            [Some(as_tenant), Some(as_owner)],
            |_, _| {
                let pool = &one;
                async move {
                    get_session(pool, TENANT, target_session.id)
                        .await
                        .unwrap()
                        .unwrap();
                }
            },
        )
        .await;
        rows.push(Row::ratio(
            "get session, row-level security per connection".into(),
            ours,
            base,
            ("1".into(), "1".into()),
            1.1,
        ));
        let (ours, base) = rls_blocks(
            &one,
            rounds,
            per_round,
            [Some(as_tenant), Some(as_owner)],
            |i, ours| {
                let pool = &one;
                let s = if ours { one_a.id } else { one_b.id };
                async move {
                    append_messages(pool, TENANT, s, &[message(s, i)])
                        .await
                        .unwrap();
                }
            },
        )
        .await;
        rows.push(Row::ratio(
            "append one message, row-level security per connection".into(),
            ours,
            base,
            ("1".into(), "1".into()),
            1.1,
        ));
        sqlx::raw_sql(as_owner).execute(&one).await?;
        /// A session read in a transaction as the tenant's role (`rls::begin_as_tenant`).
        async fn get_as_tenant(pool: &PgPool, id: Uuid) {
            let mut tx = agentpg_repo::rls::begin_as_tenant(pool, TENANT)
                .await
                .unwrap();
            get_session(&mut *tx, TENANT, id).await.unwrap().unwrap();
            tx.commit().await.unwrap();
        }
        let (ours, base) = rls_blocks(&one, rounds, per_round * 2, [None, None], |_, ours| {
            let pool = &one;
            async move {
                if ours {
                    get_as_tenant(pool, target_session.id).await;
                } else {
                    get_session(pool, TENANT, target_session.id)
                        .await
                        .unwrap()
                        .unwrap();
                }
            }
        })
        .await;
        let per_transaction = count_statements(1, get_as_tenant(&one, target_session.id)).await;
        rows.push(Row {
            case: "get session, row-level security per transaction".into(),
            ours,
            base: Some(base),
            ours_statements: per_transaction.to_string(),
            base_statements: "1".into(),
            target: "(what per-transaction costs: 3 more round trips)".into(),
            met: None,
        });
        one.close().await;

        // Conditional (one writer per conversation) against plain: the same statement, with the
        // check decided on the locked session row.
        let cond = new_session(&pool, "cond".into()).await;
        let plain = new_session(&pool, "plain".into()).await;
        let last = std::cell::Cell::new(LastSeen::Nothing);
        let (ours, base) = interleave(
            rounds,
            per_round,
            |i| {
                let (pool, last) = (&pool, &last);
                async move {
                    let stored = append_messages_after(
                        pool,
                        TENANT,
                        cond.id,
                        last.get(),
                        &[message(cond.id, i)],
                    )
                    .await
                    .unwrap();
                    last.set(LastSeen::Position(stored.messages[0].message().position));
                }
            },
            |i| {
                let pool = &pool;
                async move {
                    append_messages(pool, TENANT, plain.id, &[message(plain.id, i)])
                        .await
                        .unwrap();
                }
            },
        )
        .await;
        let so = count_statements(0, async {
            append_messages_after(&pool, TENANT, cond.id, last.get(), &[message(cond.id, 0)])
                .await
                .unwrap();
        })
        .await;
        rows.push(Row::ratio(
            "conditional append of one message vs plain".into(),
            ours,
            base,
            (so.to_string(), "1".into()),
            1.05,
        ));

        // Each large case starts with current planner statistics, as autovacuum keeps them in a
        // running database; without this the tables have grown from empty since their last
        // ANALYZE and the 1,000-message append measured 0.72-0.74x COPY (see BENCHMARKS.md).
        sqlx::raw_sql("ANALYZE").execute(&pool).await?;

        // --- append 1,000 messages: one call vs one INSERT per message vs COPY ---
        let mut idempotent_rows;
        let n = 1000;
        let big_rounds = 15 / scale.min(3);
        let mut ours_t = Vec::new();
        let mut row_t = Vec::new();
        let mut copy_t = Vec::new();
        let mut same_t = Vec::new();
        for round in 0..big_rounds {
            let ss = new_session(&pool, format!("bs{round}")).await;
            let bs: Vec<NewMessage> = (0..n).map(|i| message(ss.id, i)).collect();
            let so = new_session(&pool, format!("bo{round}")).await;
            let sr = new_session(&pool, format!("br{round}")).await;
            let sc = new_session(&pool, format!("bc{round}")).await;
            let bo: Vec<NewMessage> = (0..n).map(|i| message(so.id, i)).collect();
            let br: Vec<NewMessage> = (0..n).map(|i| message(sr.id, i)).collect();
            let bc: Vec<NewMessage> = (0..n).map(|i| message(sc.id, i)).collect();
            let mut order = [0, 1, 2, 3];
            order.rotate_left(round % 4);
            for side in order {
                let start = Instant::now();
                match side {
                    0 => {
                        append_messages(&pool, TENANT, so.id, &bo).await.unwrap();
                        ours_t.push(start.elapsed());
                    }
                    1 => {
                        append_per_row(&pool, sr.id, &br).await;
                        row_t.push(start.elapsed());
                    }
                    2 => {
                        append_copy(&pool, sc.id, &bc).await;
                        copy_t.push(start.elapsed());
                    }
                    _ => {
                        append_same_sql(&pool, ss.id, &bs).await;
                        same_t.push(start.elapsed());
                    }
                }
            }
        }
        // Retry-safe appends: the same 1,000 messages with the ids the client chose (looked up to
        // find a retry), first time against plain (no ids), and the full retry.
        let mut first_t = Vec::new();
        let mut plain_t = Vec::new();
        let mut retry_t = Vec::new();
        for round in 0..big_rounds {
            let si = new_session(&pool, format!("idem{round}")).await;
            let sp = new_session(&pool, format!("plain{round}")).await;
            let with_ids: Vec<NewMessage> = (0..n)
                .map(|i| NewMessage {
                    id: Some(Uuid::new_v4()),
                    ..message(si.id, i)
                })
                .collect();
            let plain: Vec<NewMessage> = (0..n).map(|i| message(sp.id, i)).collect();
            for side in [round % 2, 1 - round % 2] {
                let start = Instant::now();
                if side == 0 {
                    append_messages(&pool, TENANT, si.id, &with_ids)
                        .await
                        .unwrap();
                    first_t.push(start.elapsed());
                } else {
                    append_messages(&pool, TENANT, sp.id, &plain).await.unwrap();
                    plain_t.push(start.elapsed());
                }
            }
            let start = Instant::now();
            let again = append_messages(&pool, TENANT, si.id, &with_ids)
                .await
                .unwrap();
            retry_t.push(start.elapsed());
            assert_eq!(again.messages.len(), n);
        }
        let (first, plain, retry) = (median(first_t), median(plain_t), median(retry_t));
        idempotent_rows = vec![
            Row::ratio(
                format!("append {n} with client ids (retry-safe) vs plain"),
                first,
                plain,
                ("1".into(), "1".into()),
                1.10,
            ),
            Row {
                case: format!("  full retry of those {n}: returns them, writes nothing"),
                ours: retry,
                base: Some(first),
                ours_statements: "1".into(),
                base_statements: "1".into(),
                target: "(vs the first time)".into(),
                met: None,
            },
        ];

        // The floor of any one-statement append: the server must receive the whole parameter
        // message before it starts, where COPY parses and inserts while the data still streams in.
        let payload: usize = {
            let probe: Vec<NewMessage> = (0..n).map(|i| message(Uuid::nil(), i)).collect();
            probe
                .iter()
                .map(|m| {
                    serde_json::to_vec(&m.content).unwrap().len()
                        + serde_json::to_vec(&m.usage).unwrap().len()
                })
                .sum()
        };
        let blob = vec![b'x'; payload];
        let mut upload = Vec::new();
        for _ in 0..big_rounds {
            let start = Instant::now();
            let _: i32 = sqlx::query_scalar("SELECT octet_length($1::bytea)")
                .bind(&blob)
                .fetch_one(&pool)
                .await
                .unwrap();
            upload.push(start.elapsed());
        }
        let upload = median(upload);
        let counted = new_session(&pool, "count-big".into()).await;
        let batch: Vec<NewMessage> = (0..n).map(|i| message(counted.id, i)).collect();
        let so = count_statements(0, async {
            append_messages(&pool, TENANT, counted.id, &batch)
                .await
                .unwrap();
        })
        .await;
        let sr = count_statements(1, append_per_row(&pool, counted.id, &batch)).await;
        // BEGIN and COPY are not logged by sqlx; UPDATE and COMMIT are.
        let sc = count_statements(1, append_copy(&pool, counted.id, &batch)).await + 1;
        let (ours, per_row, copy, same) = (
            median(ours_t),
            median(row_t),
            median(copy_t),
            median(same_t),
        );
        rows.push(Row {
            case: format!("append {n} messages vs hand-written sqlx, same SQL"),
            ours,
            base: Some(same),
            ours_statements: so.to_string(),
            base_statements: "1".into(),
            target: "(what agentpg's own code costs)".into(),
            met: None,
        });
        rows.push(Row {
            case: format!("append {n} messages vs one INSERT each (1 tx)"),
            ours,
            base: Some(per_row),
            ours_statements: so.to_string(),
            base_statements: sr.to_string(),
            target: "1 statement, >= 5x faster".into(),
            met: Some(so == 1 && per_row.as_secs_f64() / ours.as_secs_f64() >= 5.0),
        });
        rows.push(Row {
            case: format!("append {n} messages vs COPY FROM STDIN"),
            ours,
            base: Some(copy),
            ours_statements: so.to_string(),
            base_statements: sc.to_string(),
            target: ">= 0.8x COPY throughput (ratio <= 1.25)".into(),
            met: Some(copy.as_secs_f64() / ours.as_secs_f64() >= 0.8),
        });

        rows.append(&mut idempotent_rows);
        rows.push(Row {
            case: format!(
                "  floor: send the batch's {} kB as one parameter",
                payload / 1000
            ),
            ours: upload,
            base: None,
            ours_statements: "1".into(),
            base_statements: "-".into(),
            target: "(what one statement pays before it starts)".into(),
            met: None,
        });

        sqlx::raw_sql("ANALYZE").execute(&pool).await?;

        // --- load a 10,000-message history: typed decode vs serde_json::Value ---
        let history_n = 10_000 / scale;
        let (history, _) = filled_session(&pool, "history".into(), history_n).await;
        let raw_sql =
            "SELECT * FROM messages WHERE tenant_id = $1 AND session_id = $2 ORDER BY position";
        let (ours, base) = interleave(
            if quick { 5 } else { 11 },
            1,
            |_| {
                let pool = &pool;
                async move {
                    let rows = list_messages(pool, TENANT, history.id, MessageRange::default())
                        .await
                        .unwrap();
                    assert_eq!(rows.len(), history_n);
                }
            },
            |_| {
                let pool = &pool;
                async move {
                    let rows: Vec<RawMessage> = sqlx::query_as(raw_sql)
                        .bind(TENANT)
                        .bind(history.id)
                        .fetch_all(pool)
                        .await
                        .unwrap();
                    assert_eq!(rows.len(), history_n);
                }
            },
        )
        .await;
        let so = count_statements(0, async {
            list_messages(&pool, TENANT, history.id, MessageRange::default())
                .await
                .unwrap();
        })
        .await;
        rows.push(Row::ratio(
            format!("load {history_n} messages, typed vs Value decode"),
            ours,
            base,
            (so.to_string(), "1".into()),
            1.1,
        ));

        // --- plan a compaction of the same 10,000-message session: ids, tokens, flags and tool
        // ids only, never the content; against loading the history the planner avoids ---
        let policy = CompactionPolicy {
            keep_last_messages: 20,
            summary_tokens: 500,
            ..CompactionPolicy::new(20_000, "summarization")
        };
        let (ours, base) = interleave(
            if quick { 5 } else { 11 },
            1,
            |_| {
                let (pool, policy) = (&pool, &policy);
                async move {
                    let proposal = plan_compaction(pool, TENANT, history.id, policy)
                        .await
                        .unwrap();
                    assert!(proposal.plan.is_some());
                }
            },
            |_| {
                let pool = &pool;
                async move {
                    let rows = list_messages(pool, TENANT, history.id, MessageRange::default())
                        .await
                        .unwrap();
                    assert_eq!(rows.len(), history_n);
                }
            },
        )
        .await;
        let so = count_statements(0, async {
            plan_compaction(&pool, TENANT, history.id, &policy)
                .await
                .unwrap();
        })
        .await;
        rows.push(Row::ratio(
            format!("plan a compaction of {history_n} messages vs loading them"),
            ours,
            base,
            (so.to_string(), "1".into()),
            0.5,
        ));

        // --- fork 10,000 messages: ours vs the same INSERT ... SELECT written by hand ---
        let last = list_messages(&pool, TENANT, history.id, MessageRange::last(1))
            .await?
            .pop()
            .expect("a filled history");
        let (ours, base) =
            interleave(
                if quick { 3 } else { 7 },
                1,
                |i| {
                    let (pool, last) = (&pool, &last);
                    async move {
                        let fork = fork_session(
                            pool,
                            TENANT,
                            history.id,
                            last.id,
                            &NewSession::new(TENANT.into(), format!("fork-ours-{i}")),
                        )
                        .await
                        .unwrap();
                        assert_eq!(fork.last_position, Some(last.position));
                    }
                },
                |i| {
                    let (pool, last) = (&pool, &last);
                    async move {
                        fork_by_hand(pool, history.id, last.id, format!("fork-hand-{i}")).await
                    }
                },
            )
            .await;
        let so = count_statements(1, async {
            fork_session(
                &pool,
                TENANT,
                history.id,
                last.id,
                &NewSession::new(TENANT.into(), "fork-count-ours".into()),
            )
            .await
            .unwrap();
        })
        .await;
        let sb = count_statements(
            1,
            fork_by_hand(&pool, history.id, last.id, "fork-count-hand".into()),
        )
        .await;
        rows.push(Row::ratio(
            format!("fork {history_n} messages vs hand-written INSERT ... SELECT"),
            ours,
            base,
            (so.to_string(), sb.to_string()),
            1.1,
        ));

        sqlx::raw_sql("ANALYZE").execute(&pool).await?;

        // --- compact a 10,000-message session removing 9,000 ---
        let compact_n = 10_000 / scale;
        let remove_n = compact_n * 9 / 10;
        let rounds = if quick { 3 } else { 7 };
        let (ours, base, counts) =
            compaction_case(&pool, rounds, compact_n, "compact", message, false).await;
        let (s, m) = filled_session(&pool, "count-hand".into(), 100).await;
        let remove: Vec<Uuid> = m[..90].iter().map(|m| m.id).collect();
        let sb = count_statements(1, compact_by_hand(&pool, s.id, &remove)).await;
        rows.push(Row {
            case: format!("compact {compact_n} messages removing {remove_n}"),
            ours,
            base: Some(base),
            ours_statements: format!("{}/{}", counts[0], counts[1]),
            base_statements: sb.to_string(),
            target: "<= 6 statements at any size (10/10k)".into(),
            met: Some(counts[0] == counts[1] && counts[1] <= 6),
        });

        // --- the same compaction on a session made only of tool pairs: a cut this large (over
        // 256 messages) has its pairs checked in one pass over the session's generated tool-id
        // columns, in the query the compaction already makes ---
        sqlx::raw_sql("ANALYZE").execute(&pool).await?;
        let (ours, base, counts) =
            compaction_case(&pool, rounds, compact_n, "pairs", pair_message, true).await;
        rows.push(Row {
            case: format!("compact {compact_n} tool-pair messages (pair check)"),
            ours,
            base: Some(base),
            ours_statements: format!("{}/{}", counts[0], counts[1]),
            base_statements: sb.to_string(),
            target: "statements constant (10/10k), <= 6".into(),
            met: Some(counts[0] == counts[1] && counts[1] <= 6),
        });

        print_table(&rows);
    }

    let bench_options = admin.clone().database("agentpg_bench");
    if !only_concurrency {
        // --- scale: session length, tenants, memory ---
        println!();
        println!("scale: the same operations as a session grows (medians), and a tenant's page as tenants grow");
        let (mut scale_rows, plans, largest) =
            scale::session_length(&pool, &bench_options, quick).await;
        scale_rows.push(scale::tenants(&pool, quick).await);
        scale_rows.extend(scale::search(&pool, quick).await);
        print_table(&scale_rows);
        println!();
        println!("plans at the largest size (auto_explain):");
        for line in &plans {
            println!("{line}");
        }
        println!();
        println!(
            "memory: peak resident set of a process reading the largest session whole (VmHWM)"
        );
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        for how in ["stream", "vec"] {
            match scale::memory_of_reading(largest, how) {
                Some((connected, read)) => {
                    let verdict = if how == "stream" {
                        if read < 64 * 1024 * 1024 {
                            "  target < 64 MiB (met)"
                        } else {
                            "  target < 64 MiB (MISSED)"
                        }
                    } else {
                        ""
                    };
                    println!(
                        "{:<44} {:>9.1} MiB (connected: {:.1} MiB){verdict}",
                        if how == "stream" {
                            "stream_messages, row by row"
                        } else {
                            "list_messages into a Vec"
                        },
                        mib(read),
                        mib(connected)
                    );
                }
                None => println!("{how}: the child process failed"),
            }
        }
    }

    // --- concurrency: the agent turn loop against pgbench ---
    println!();
    println!("concurrency: 64 agents taking turns (append user, append assistant with usage, read the last 20) over a pool, against pgbench with the same statements and connections");
    let (concurrency_rows, notes) = throughput::concurrency(&pool, &bench_options, quick).await;
    for line in &notes {
        println!("{line}");
    }
    print_table(&concurrency_rows);

    pool.close().await;
    sqlx::query("DROP DATABASE agentpg_bench WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
