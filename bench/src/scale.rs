//! How cost grows: with a session's length (1k … 1M messages), with the number of tenants, and
//! how much memory reading a whole session takes (streamed or collected).

use std::time::{Duration, Instant};

use agentpg_repo::{
    append_messages, compact, get_message, list_messages, list_sessions, revert_compaction,
    CompactionPlan, MessageRange, SessionFilter, SessionOrder,
};
use agentpg_schema::{Message, NewMessage, Session};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

use crate::{median, message, new_session, Row, TENANT};

/// Builds a session of `n` messages with the repo's own append, 1,000 per batch; returns the
/// session and a sample of its message ids (spread over the whole session).
async fn long_session(pool: &PgPool, n: usize) -> (Session, Vec<Uuid>) {
    let s = new_session(pool, format!("long-{n}")).await;
    let mut sample = Vec::new();
    let mut i = 0;
    while i < n {
        let size = 1_000.min(n - i);
        let batch: Vec<NewMessage> = (i..i + size).map(|k| message(s.id, k)).collect();
        let stored = append_messages(pool, TENANT, s.id, &batch).await.unwrap();
        sample.push(stored.messages[size / 2].message().id);
        i += size;
    }
    (s, sample)
}

/// An operation's name and how to read its time from [`Costs`].
type Op = (&'static str, fn(&Costs) -> Duration);

/// The times of the five operations on one session, medians over `reps`.
struct Costs {
    append_one: Duration,
    last_50: Duration,
    get: Duration,
    compact_100: Duration,
    revert: Duration,
}

/// A plan removing the session's oldest 100 messages (no summary).
async fn oldest_100(pool: &PgPool, session: &Session) -> CompactionPlan {
    let oldest = list_messages(
        pool,
        TENANT,
        session.id,
        MessageRange {
            limit: Some(100),
            ..MessageRange::default()
        },
    )
    .await
    .unwrap();
    CompactionPlan {
        session_id: session.id,
        remove: oldest.iter().map(|m: &Message| m.id).collect(),
        summary: None,
        strategy: "scale".into(),
        model_used: None,
        duration_ms: None,
        // The bench's transcripts call tools and never answer them (the cost of the pair
        // check is what is measured): such calls count as still running, and are removed.
        pending_tool_calls: agentpg_repo::PendingToolCalls::Remove,
    }
}

/// One round of the five operations on one session: their times, in the order of [`Costs`].
async fn one_round(pool: &PgPool, session: &Session, sample: &[Uuid], rep: usize) -> [Duration; 5] {
    let start = Instant::now();
    append_messages(
        pool,
        TENANT,
        session.id,
        &[message(session.id, 1_000_000 + rep)],
    )
    .await
    .unwrap();
    let append = start.elapsed();

    let start = Instant::now();
    let tail = list_messages(pool, TENANT, session.id, MessageRange::last(50))
        .await
        .unwrap();
    let last_50 = start.elapsed();
    assert_eq!(tail.len(), 50);

    let id = sample[rep % sample.len()];
    let start = Instant::now();
    get_message(pool, TENANT, session.id, id)
        .await
        .unwrap()
        .unwrap();
    let get = start.elapsed();

    // The oldest 100 messages (read untimed), compacted, then the compaction reverted.
    let plan = oldest_100(pool, session).await;
    let start = Instant::now();
    let event = compact(pool, TENANT, &plan).await.unwrap();
    let compact_100 = start.elapsed();
    let start = Instant::now();
    revert_compaction(pool, TENANT, event.id).await.unwrap();
    let revert = start.elapsed();
    [append, last_50, get, compact_100, revert]
}

/// The five operations' medians on each session, measured round by round: each round runs them
/// on every session in turn (which size goes first rotates), so a drift of the machine during the
/// run lands on all sizes alike instead of on whichever size was measured then.
async fn costs(pool: &PgPool, sessions: &[(Session, Vec<Uuid>)], reps: usize) -> Vec<Costs> {
    let mut times: Vec<[Vec<Duration>; 5]> = sessions.iter().map(|_| Default::default()).collect();
    for rep in 0..reps {
        for k in 0..sessions.len() {
            let at = (k + rep) % sessions.len();
            let (session, sample) = &sessions[at];
            let round = one_round(pool, session, sample, rep).await;
            for (op, d) in round.into_iter().enumerate() {
                times[at][op].push(d);
            }
        }
    }
    times
        .into_iter()
        .map(|[a, b, c, d, e]| Costs {
            append_one: median(a),
            last_50: median(b),
            get: median(c),
            compact_100: median(d),
            revert: median(e),
        })
        .collect()
}

/// The plans PostgreSQL chose for each operation on `session`, from auto_explain (sent back as
/// notices on a connection of its own), shortened to their node lines.
async fn plans(options: &PgConnectOptions, session: &Session, sample: &[Uuid]) -> Vec<String> {
    let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(
                    "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
                     SET auto_explain.log_level = notice; SET auto_explain.log_analyze = on; SET auto_explain.log_timing = on",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
    else {
        return vec!["(auto_explain is not available: no plans)".into()];
    };
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    let on_notice = move |event: &tracing::Event<'_>| {
        if let Some(text) = crate::watch::field(event, "message") {
            sink.lock().unwrap().push(text);
        }
    };
    let mut out = Vec::new();
    let steps: [(&str, usize); 5] = [
        ("append one", 0),
        ("list last 50", 1),
        ("get message", 2),
        ("compact oldest 100", 3),
        ("revert", 4),
    ];
    let watched = async {
        let mut event = None;
        for (name, step) in steps {
            notices.lock().unwrap().clear();
            match step {
                0 => {
                    append_messages(&pool, TENANT, session.id, &[message(session.id, 7)])
                        .await
                        .unwrap();
                }
                1 => {
                    list_messages(&pool, TENANT, session.id, MessageRange::last(50))
                        .await
                        .unwrap();
                }
                2 => {
                    get_message(&pool, TENANT, session.id, sample[0])
                        .await
                        .unwrap();
                }
                3 => {
                    let plan = oldest_100(&pool, session).await;
                    notices.lock().unwrap().clear();
                    event = Some(compact(&pool, TENANT, &plan).await.unwrap());
                }
                _ => {
                    if let Some(e) = event.take() {
                        revert_compaction(&pool, TENANT, e.id).await.unwrap();
                    }
                }
            }
            out.push(format!("-- {name}:"));
            for notice in notices.lock().unwrap().iter() {
                for line in notice.lines() {
                    let node = line.trim_start();
                    // Keep the plan's node lines and their index conditions.
                    if node.starts_with("->")
                        || node.starts_with("Index Cond")
                        || node.starts_with("Filter")
                        || node.starts_with("Rows Removed")
                        || (!line.starts_with(' ')
                            && !node.starts_with("duration")
                            && !node.starts_with("Query Text")
                            && !node.is_empty())
                    {
                        // Long literals (the plan's id arrays) are cut.
                        let line = line.trim_end();
                        let cut: String = line.chars().take(140).collect();
                        let more = if cut.len() < line.len() { " …" } else { "" };
                        out.push(format!("   {cut}{more}"));
                    }
                }
            }
        }
    };
    crate::watch::watching("sqlx::postgres::notice", on_notice, watched).await;
    pool.close().await;
    out
}

/// Session length: each operation at 1k, 10k, 100k and 1M messages; the 1M ÷ 1k ratio of each
/// against its target (≤ 1.5), and the plans at the largest size.
pub(crate) async fn session_length(
    pool: &PgPool,
    options: &PgConnectOptions,
    quick: bool,
) -> (Vec<Row>, Vec<String>, Uuid) {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000, 100_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000]
    };
    let reps = if quick { 7 } else { 25 };
    let mut sessions = Vec::new();
    for &n in sizes {
        let built = Instant::now();
        sessions.push(long_session(pool, n).await);
        println!(
            "  built a session of {n} messages in {:.1} s",
            built.elapsed().as_secs_f64()
        );
    }
    sqlx::raw_sql("VACUUM ANALYZE messages")
        .execute(pool)
        .await
        .unwrap();
    let all: Vec<(usize, Costs)> = sizes
        .iter()
        .copied()
        .zip(costs(pool, &sessions, reps).await)
        .collect();
    let (session, sample) = sessions.pop().expect("at least one size");
    let plans = plans(options, &session, &sample).await;
    let largest_id = session.id;

    println!();
    println!(
        "{:<22} {}",
        "messages in session",
        sizes.iter().map(|n| format!("{n:>11}")).collect::<String>()
    );
    let ops: [Op; 5] = [
        ("append one", |c| c.append_one),
        ("list last 50", |c| c.last_50),
        ("get message", |c| c.get),
        ("compact oldest 100", |c| c.compact_100),
        ("revert that", |c| c.revert),
    ];
    for (name, f) in ops {
        println!(
            "{:<22} {}",
            name,
            all.iter()
                .map(|(_, c)| format!("{:>11}", crate::fmt(f(c))))
                .collect::<String>()
        );
    }
    let (small_n, small) = &all[0];
    let (big_n, big) = all.last().expect("sizes");
    let rows = ops
        .iter()
        .map(|(name, f)| {
            Row::ratio(
                format!("{name}: {big_n} vs {small_n} messages"),
                f(big),
                f(small),
                ("-".into(), "-".into()),
                1.5,
            )
        })
        .collect();
    (rows, plans, largest_id)
}

/// Tenants: a page of one tenant's sessions when the table holds 1k sessions, then 100k sessions
/// across 1k tenants (100 each, in both): the page's cost should not follow the table's size.
pub(crate) async fn tenants(pool: &PgPool, quick: bool) -> Row {
    let reps = if quick { 51 } else { 201 };
    let page = |tenant: &'static str| async move {
        let mut t = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            let page = list_sessions(
                pool,
                tenant,
                &SessionFilter::default(),
                SessionOrder::RecentlyUpdated,
                None,
                50,
            )
            .await
            .unwrap();
            t.push(start.elapsed());
            assert_eq!(page.items.len(), 50);
        }
        median(t)
    };
    let add = |prefix: &'static str, tenants: i64, count: i64| {
        sqlx::query(
            "INSERT INTO sessions (tenant_id, identifier, updated_at)
             SELECT $1 || (i % $2), $1 || 's-' || i, now() - make_interval(secs => i)
             FROM generate_series(0, $3 - 1) AS i",
        )
        .bind(prefix)
        .bind(tenants)
        .bind(count)
        .execute(pool)
    };
    // 1,000 sessions over 10 tenants (100 each).
    add("small-", 10, 1_000).await.unwrap();
    sqlx::raw_sql("ANALYZE sessions")
        .execute(pool)
        .await
        .unwrap();
    let small = page("small-3").await;
    // 99,000 more over 990 more tenants (100 each): 100k sessions over 1k tenants.
    add("tenant-", 990, 99_000).await.unwrap();
    sqlx::raw_sql("ANALYZE sessions")
        .execute(pool)
        .await
        .unwrap();
    let big = page("small-3").await.max(page("tenant-500").await);
    Row::ratio(
        "a tenant's page of 50: 100k sessions/1k tenants vs 1k".into(),
        big,
        small,
        ("1".into(), "1".into()),
        1.5,
    )
}

/// Peak resident memory of a child process that reads session `session` whole: streamed with
/// `stream_messages` or collected with `list_messages`. Returns (peak after connecting, peak
/// after reading), in bytes, from the kernel's own accounting (`VmHWM`).
pub(crate) fn memory_of_reading(session: Uuid, how: &str) -> Option<(u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    let output = std::process::Command::new(exe)
        .args(["--read-session", how, &session.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .lines()
        .find(|l| l.starts_with("rss "))?
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// `VmHWM` (peak resident set) of this process, in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The child side of [`memory_of_reading`]: read the session, print `rss <connected> <read>`
/// and the message count.
pub(crate) async fn read_session_child(
    options: PgConnectOptions,
    how: &str,
    session: Uuid,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = options.connect().await?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    let connected = peak_rss();
    let count = match how {
        "stream" => {
            use futures_util::StreamExt;
            let mut stream = agentpg_repo::stream_messages(&mut conn, TENANT, session);
            let mut count = 0u64;
            let mut tokens = 0i64;
            while let Some(m) = stream.next().await {
                let m = m?;
                tokens += m.tokens;
                count += 1;
            }
            std::hint::black_box(tokens);
            count
        }
        _ => {
            let all = list_messages(&mut conn, TENANT, session, MessageRange::default()).await?;
            std::hint::black_box(&all);
            all.len() as u64
        }
    };
    println!("rss {connected} {}", peak_rss());
    println!("messages {count}");
    conn.close().await?;
    Ok(())
}

/// A search page as a tenant's messages grow: 10,000 messages over 100 sessions, then
/// 1,000,000 over 10,000 sessions (the tenant's; other tenants' rows are in the same table).
/// Two searches: a rare word (the same 20 messages say it at both sizes: the page reads the
/// same hits), and a common one (1% of the messages: its hits grow with the tenant, and every
/// one is ranked before the best 20 are known).
pub(crate) async fn search(pool: &PgPool, quick: bool) -> Vec<Row> {
    use agentpg_repo::{search_messages, MessageSearch};
    let reps = if quick { 21 } else { 101 };
    let tenant = "search-tenant";
    let page = |text: &'static str| async move {
        let mut t = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = Instant::now();
            let page = search_messages(pool, tenant, &MessageSearch::new(text), None, 20)
                .await
                .unwrap();
            t.push(start.elapsed());
            assert_eq!(page.items.len(), 20, "{text}");
        }
        median(t)
    };
    // Sessions `from..to` of the tenant, 100 messages each; message `i` (over the whole tenant)
    // says "kumquat" if it is one of the first 20, and "invoice" if `i % 100 == 7`.
    let add = |from: i64, to: i64| {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO sessions (tenant_id, id, identifier)
             SELECT '{tenant}', md5('search-s' || s)::uuid, 'search-' || s FROM generate_series({from}, {to} - 1) AS s;
             INSERT INTO messages (tenant_id, session_id, role, content)
             SELECT '{tenant}', md5('search-s' || (i / 100))::uuid, 'user',
                    jsonb_build_array(jsonb_build_object('type', 'text', 'text',
                        'order ' || i || ' shipped on time, thanks for the update'
                        || CASE WHEN i < 20 THEN ' kumquat' ELSE '' END
                        || CASE WHEN i % 100 = 7 THEN ' invoice attached' ELSE '' END))
             FROM generate_series({from} * 100, {to} * 100 - 1) AS i;
             ANALYZE messages;"
        )))
        .execute(pool)
    };
    let (small_sessions, big_sessions) = if quick { (100, 1_000) } else { (100, 10_000) };
    add(0, small_sessions).await.unwrap();
    // Both sizes measured as autovacuum leaves an index: its GIN pending list merged.
    sqlx::raw_sql("VACUUM ANALYZE messages")
        .execute(pool)
        .await
        .unwrap();
    let rare_small = page("kumquat").await;
    let common_small = page("invoice").await;
    add(small_sessions, big_sessions).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE messages")
        .execute(pool)
        .await
        .unwrap();
    let rare_big = page("kumquat").await;
    let common_big = page("invoice").await;
    let size = |sessions: i64| format!("{}k", sessions * 100 / 1_000);
    vec![
        Row::ratio(
            format!(
                "search page of 20, a rare word: {} vs {} messages",
                size(big_sessions),
                size(small_sessions)
            ),
            rare_big,
            rare_small,
            ("1".into(), "1".into()),
            2.0,
        ),
        Row::ratio(
            format!(
                "search page of 20, a word in 1%: {} vs {} messages",
                size(big_sessions),
                size(small_sessions)
            ),
            common_big,
            common_small,
            ("1".into(), "1".into()),
            2.0,
        ),
    ]
}
