//! Many agents at once: an agent turn loop over a pool against pgbench (C, libpq, prepared
//! statements) running the same statement texts, at the same number of connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, compact, create_session, list_messages, plan_compaction, CompactionPolicy,
    MessageRange, Summary,
};
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession, Usage};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Row, TENANT};

/// The number of agents (sessions), each taking turns on its own session.
const AGENTS: u64 = 64;
/// Messages each session starts with.
const HISTORY: usize = 40;

fn session_id(k: u64) -> Uuid {
    Uuid::from_u128(0x7e57_0000_0000_4000_8000_0000_0000_0000 | u128::from(k))
}

const USER_TEXT: &str = "Please look up the order status for order 7 and tell me when it ships.";
const ASSISTANT_TEXT: &str =
    "Order 7 shipped yesterday by express courier; it should arrive within two working days.";

fn user_message(session: Uuid) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![ContentBlock::text(USER_TEXT)])),
        ..NewMessage::new(TENANT.into(), session, MessageRole::User)
    }
}

fn assistant_usage() -> Usage {
    Usage {
        input_tokens: 350,
        output_tokens: 40,
        ..Usage::default()
    }
}

fn assistant_message(session: Uuid) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![ContentBlock::text(ASSISTANT_TEXT)])),
        usage: Some(Json(assistant_usage())),
        ..NewMessage::new(TENANT.into(), session, MessageRole::Assistant)
    }
}

/// One turn: the user's message, the assistant's message with its usage, the last 20 messages,
/// on one connection taken from the pool for the turn (as each pgbench client keeps its own).
async fn turn(pool: &PgPool, session: Uuid) {
    let mut conn = pool.acquire().await.unwrap();
    append_messages(&mut *conn, TENANT, session, &[user_message(session)])
        .await
        .unwrap();
    append_messages(&mut *conn, TENANT, session, &[assistant_message(session)])
        .await
        .unwrap();
    let last = list_messages(&mut *conn, TENANT, session, MessageRange::last(20))
        .await
        .unwrap();
    assert_eq!(last.len(), 20);
}

/// A compaction as an agent would run one: plan to keep the newest 20 messages, summarize
/// (a stand-in), compact.
async fn compaction(pool: &PgPool, session: Uuid) {
    let policy = CompactionPolicy {
        keep_last_messages: 20,
        summary_tokens: 100,
        ..CompactionPolicy::new(100, "summarization")
    };
    let proposal = plan_compaction(pool, TENANT, session, &policy)
        .await
        .unwrap();
    if let Some(mut plan) = proposal.plan {
        plan.summary = Some(Summary {
            id: None,
            role: MessageRole::User,
            content: vec![ContentBlock::text("summary of the conversation so far")],
            usage: Some(Usage {
                input_tokens: 100,
                ..Usage::default()
            }),
            metadata: None,
        });
        compact(pool, TENANT, &plan).await.unwrap();
    }
}

/// Turns per second of our loop: `AGENTS` agents over a pool of `connections`, for `secs`
/// (after every connection is open); with a compaction every 50th turn of each agent if
/// `compacting`.
pub(crate) fn ours(
    options: &PgConnectOptions,
    connections: u32,
    secs: u64,
    compacting: bool,
) -> f64 {
    let options = options.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            // No health check on every acquire (sqlx's default pings each connection it hands
            // out, a round trip per acquire): the setting for throughput.
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .min_connections(connections)
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .unwrap();
            // Open every connection and prepare the statements before the clock starts.
            futures_util::future::join_all(
                (0..connections).map(|k| turn(&pool, session_id(u64::from(k)))),
            )
            .await;
            let done = AtomicU64::new(0);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            // The agents run as futures of one task on this thread (as pgbench's clients run
            // on its threads), each taking its turns on its own session.
            futures_util::future::join_all((0..AGENTS).map(|k| {
                let (pool, done) = (&pool, &done);
                async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        turn(pool, session_id(k)).await;
                        n += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                        if compacting && n.is_multiple_of(50) {
                            compaction(pool, session_id(k)).await;
                        }
                    }
                }
            }))
            .await;
            let elapsed = start.elapsed().as_secs_f64();
            pool.close().await;
            done.load(Ordering::Relaxed) as f64 / elapsed
        })
    })
    .join()
    .expect("the loop thread")
}

/// The SQL texts one turn sends, as sqlx logs them.
async fn turn_statements(pool: &PgPool) -> Vec<String> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    crate::watch::watching(
        "sqlx::query",
        move |event| {
            if let Some(text) = crate::watch::field(event, "db.statement") {
                sink.lock().unwrap().push(text.trim().to_owned());
            }
        },
        turn(pool, session_id(0)),
    )
    .await;
    let texts = seen.lock().unwrap().clone();
    texts
}

/// `text` as one element of a PostgreSQL array literal.
fn array_element(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `sql` with `$n` replaced by the pgbench variable `names[n - 1]` (highest numbers first, so
/// `$1` does not eat the start of `$12`).
fn with_variables(sql: &str, names: &[&str]) -> String {
    let mut out = sql.to_owned();
    for (i, name) in names.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), &format!(":{name}"));
    }
    out
}

/// The pgbench script of a turn, and its `-D` variables: the same statement texts as our
/// loop, each parameter a pgbench variable (sent as a parameter in prepared mode). Client `c`
/// of `clients` takes its turns on sessions `c`, `c + clients`, … (as our agents, each session
/// has one writer at a time); a session id is a `-D` variable, chosen by a branch per session.
fn pgbench_script(
    append: &str,
    notify: &str,
    last_20: &str,
    clients: u64,
) -> (String, Vec<(String, String)>) {
    let user = serde_json::to_string(&vec![ContentBlock::text(USER_TEXT)]).unwrap();
    let assistant = serde_json::to_string(&vec![ContentBlock::text(ASSISTANT_TEXT)]).unwrap();
    let usage = serde_json::to_string(&assistant_usage()).unwrap();
    let mut vars: Vec<(String, String)> = vec![
        ("tenant".into(), TENANT.into()),
        ("f".into(), "f".into()),
        ("zero".into(), "0".into()),
        ("nulls".into(), "{NULL}".into()),
        ("twenty".into(), "20".into()),
        ("role_user".into(), "{user}".into()),
        ("role_assistant".into(), "{assistant}".into()),
        (
            "content_user".into(),
            format!("{{{}}}", array_element(&user)),
        ),
        (
            "content_assistant".into(),
            format!("{{{}}}", array_element(&assistant)),
        ),
        (
            "usage_assistant".into(),
            format!("{{{}}}", array_element(&usage)),
        ),
        ("clients".into(), clients.to_string()),
        ("per".into(), (AGENTS / clients).to_string()),
    ];
    for k in 0..AGENTS {
        vars.push((format!("s{k}"), session_id(k).to_string()));
    }
    // APPEND's parameters: tenant, session, conditional?, expected last, then one array per
    // column: ids, role, content, usage, metadata, is_preserved, is_summary, created_at,
    // updated_at, provider_usage (see agentpg_schema::messages::stmt::APPEND); then the
    // notification's: tenant, session.
    let append_as = |session: &str, role: &str, content: &str, usage: &str| {
        let mut sql = with_variables(
            append,
            &[
                "tenant", session, "f", "zero", "nulls", role, content, usage, "nulls", "nulls",
                "nulls", "nulls", "nulls", "nulls",
            ],
        );
        sql.push_str(";\n");
        sql.push_str(&with_variables(notify, &["tenant", session]));
        sql
    };
    let mut script = String::from("\\set k :client_id + :clients * random(0, :per - 1)\n");
    for k in 0..AGENTS {
        let session = format!("s{k}");
        script.push_str(&format!(
            "{} :k = {k}\n",
            if k == 0 { "\\if" } else { "\\elif" }
        ));
        script.push_str(&append_as(&session, "role_user", "content_user", "nulls"));
        script.push_str(";\n");
        script.push_str(&append_as(
            &session,
            "role_assistant",
            "content_assistant",
            "usage_assistant",
        ));
        script.push_str(";\n");
        script.push_str(&with_variables(last_20, &["tenant", &session, "twenty"]));
        script.push_str(";\n");
    }
    script.push_str("\\endif\n");
    (script, vars)
}

/// Where pgbench is: `PG_BINDIR`, `pg_config --bindir`, the usual Debian folders, `PATH`.
fn pgbench_binary() -> Option<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        candidates.push(std::path::PathBuf::from(dir).join("pgbench"));
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !dir.is_empty() {
            candidates.push(std::path::PathBuf::from(dir).join("pgbench"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs.into_iter().rev() {
            candidates.push(dir.join("bin/pgbench"));
        }
    }
    candidates.push("/usr/bin/pgbench".into());
    candidates.into_iter().find(|p| p.exists())
}

/// pgbench's transactions (turns) per second for `script`, `clients` connections, `secs`.
fn pgbench(
    binary: &std::path::Path,
    options: &PgConnectOptions,
    script: &std::path::Path,
    vars: &[(String, String)],
    clients: u64,
    secs: u64,
) -> Result<f64, String> {
    let mut command = std::process::Command::new(binary);
    command
        .args(["-n", "-M", "prepared", "-T", &secs.to_string()])
        .args(["-c", &clients.to_string(), "-j", "1"])
        .args(["-h", options.get_host()])
        .args(["-p", &options.get_port().to_string()])
        .args(["-U", options.get_username()])
        .arg("-f")
        .arg(script);
    for (name, value) in vars {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    command.arg(options.get_database().unwrap_or("postgres"));
    let out = command.output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench's output: {text}"))
}

/// The median of some rates.
fn median_of(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// The agents' sessions, each with some history, and fresh planner statistics.
pub(crate) async fn agents(pool: &PgPool) {
    for k in 0..AGENTS {
        let s = create_session(
            pool,
            NewSession {
                id: Some(session_id(k)),
                ..NewSession::new(TENANT.into(), format!("agent-{k}"))
            },
        )
        .await
        .unwrap();
        let history: Vec<NewMessage> = (0..HISTORY / 2)
            .flat_map(|_| [user_message(s.id), assistant_message(s.id)])
            .collect();
        append_messages(pool, TENANT, s.id, &history).await.unwrap();
    }
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await.unwrap();
}

/// The concurrency case: for each pool size, our loop's turns/s against pgbench's with the same
/// statements and as many connections, then our loop with a compaction every 50 turns.
pub(crate) async fn concurrency(
    pool: &PgPool,
    options: &PgConnectOptions,
    quick: bool,
) -> (Vec<Row>, Vec<String>) {
    let secs = if quick { 3 } else { 5 };
    let rounds = if quick { 1 } else { 3 };
    agents(pool).await;

    // The statement texts our turn sends: two appends (the generated APPEND), one read.
    let texts = turn_statements(pool).await;
    let append = agentpg_schema::messages::stmt::APPEND;
    let mut notes = Vec::new();
    // After each append, the notification that wakes the session's followers (sqlx logs its
    // text as empty: the script sends the statement agentpg-repo builds, written out below).
    let is_notify = |t: &str| t.contains("pg_notify") || t.is_empty();
    let reads: Vec<&String> = texts
        .iter()
        .filter(|t| t.as_str() != append && !is_notify(t))
        .collect();
    let appends = texts.iter().filter(|t| t.as_str() == append).count();
    let notifies: Vec<&String> = texts.iter().filter(|t| is_notify(t)).collect();
    if appends != 2 || reads.len() != 1 || notifies.len() != 2 {
        notes.push(format!(
            "unexpected statements in a turn ({appends} appends, {} notifications, {} others): no pgbench comparison",
            notifies.len(),
            reads.len()
        ));
        return (Vec::new(), notes);
    }
    let last_20 = reads[0].clone();
    // (pgbench takes no empty variable: the empty payload is a literal there.)
    let notify = "SELECT pg_notify(agentpg_follow_channel($1, $2), '')".to_string();
    // Check the parameter order assumed for the read: the same rows as the repo returns.
    let by_hand: Vec<agentpg_schema::Message> =
        sqlx::query_as(sqlx::AssertSqlSafe(last_20.clone()))
            .bind(TENANT)
            .bind(session_id(1))
            .bind(20i64)
            .fetch_all(pool)
            .await
            .unwrap();
    let mut repo = list_messages(pool, TENANT, session_id(1), MessageRange::last(20))
        .await
        .unwrap();
    repo.reverse();
    assert_eq!(
        by_hand, repo,
        "the read's parameters are (tenant, session, limit)"
    );

    let Some(binary) = pgbench_binary() else {
        notes.push(
            "pgbench not found (it ships with the PostgreSQL server packages: apt-get install \
             postgresql, or set PG_BINDIR): no pgbench comparison"
                .into(),
        );
        return (Vec::new(), notes);
    };
    let dir = std::env::temp_dir().join(format!("agentpg-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = Vec::new();
    let mut table = vec![format!(
        "{:>5} {:>16} {:>16} {:>8} {:>22}",
        "pool", "ours turns/s", "pgbench turns/s", "ratio", "ours, compacting"
    )];
    for connections in [4u64, 8, 16] {
        let (script, vars) = pgbench_script(append, &notify, &last_20, connections);
        let path = dir.join(format!("turn-{connections}.sql"));
        std::fs::write(&path, script).unwrap();
        // Rounds of both sides, which one goes first alternating, and the median of each: on
        // this machine one run of either side can be off by a quarter.
        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for round in 0..rounds {
            if round % 2 == 1 {
                theirs.push(pgbench(&binary, options, &path, &vars, connections, secs));
                mine.push(ours(options, connections as u32, secs, false));
            } else {
                mine.push(ours(options, connections as u32, secs, false));
                theirs.push(pgbench(&binary, options, &path, &vars, connections, secs));
            }
        }
        let mine = median_of(mine);
        let theirs: Result<Vec<f64>, String> = theirs.into_iter().collect();
        let theirs = theirs.map(median_of);
        let compacting = ours(options, connections as u32, secs, true);
        match theirs {
            Ok(theirs) => {
                table.push(format!(
                    "{connections:>5} {mine:>16.0} {theirs:>16.0} {:>8.3} {compacting:>22.0}",
                    mine / theirs
                ));
                rows.push(Row {
                    case: format!("agent turns, pool of {connections}: ours vs pgbench"),
                    ours: Duration::from_secs_f64(1.0 / mine),
                    base: Some(Duration::from_secs_f64(1.0 / theirs)),
                    ours_statements: "5".into(),
                    base_statements: "5".into(),
                    target: "ratio <= 1.111 (>= 0.90x pgbench turns/s)".into(),
                    met: Some(mine / theirs >= 0.9),
                });
            }
            Err(e) => notes.push(e),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    notes.splice(0..0, table);
    (rows, notes)
}
