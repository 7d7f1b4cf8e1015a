//! Soak and fault run: several tenants, many sessions, and every kind of client at once for a
//! fixed time — appenders (a batch whose outcome is unknown sent again with the same ids;
//! acknowledged batches sent again later, after compactions; the same batch sent twice at once;
//! tool calls whose result comes in a later batch), compactors (through the planner and at
//! random), reverters, forkers, a preserver, retention (on a tenant of its own), and a tenant's
//! row-level-security connection that tries to reach the others — while a fault injector
//! terminates random backends, and the server is restarted once (`--restart-server`) or, on a
//! Citus cluster, a worker is stopped for a while and a new worker is added and the shards
//! rebalanced onto it. At the end every invariant is checked against the data and against the
//! ledger of what was acknowledged — exactly once: nothing acknowledged lost, nothing stored
//! twice, tokens exact, no tool pair split, no running call cut off, no preserved message gone —
//! and the figures printed. Exits non-zero on any violation.
//!
//! Loopback only: refuses a `DATABASE_URL` whose host is not this machine. Uses (and drops) its
//! own database `agentpg_soak`.
//!
//! ```sh
//! cargo xtask soak --duration 60s [--restart-server]
//! cargo xtask soak --citus --duration 60s     # a Citus cluster of its own, with the faults above
//! ```

mod check;
#[path = "../distribute.rs"]
mod distribute;
mod faults;
mod ledger;
mod workers;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentpg_schema::NewSession;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use check::RETENTION_TENANT;
use ledger::{Ledger, Stats};
use workers::{Ctx, Outcomes};

const DATABASE: &str = "agentpg_soak";
const TENANTS: usize = 4;
const SESSIONS_PER_TENANT: usize = 8;
const APPENDERS: usize = 8;
const COMPACTORS: usize = 2;

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
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The command line.
#[derive(Default)]
struct Args {
    duration: Duration,
    restart: bool,
    /// The Citus workers (`host:port`), when the server is a Citus coordinator.
    workers: Vec<String>,
    /// The worker to stop and start again, and the commands that do it.
    down: Option<(String, String, String)>,
    /// A node to add as a worker and rebalance onto.
    add: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(60),
        ..Args::default()
    };
    let mut iter = std::env::args().skip(1);
    let next = |name: &str, iter: &mut std::iter::Skip<std::env::Args>| {
        iter.next().ok_or(format!("{name} needs a value"))
    };
    let (mut stop, mut start, mut down) = (None, None, None);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--duration" => args.duration = parse_duration(&next("--duration", &mut iter)?)?,
            "--restart-server" => args.restart = true,
            "--citus-workers" => {
                args.workers = next("--citus-workers", &mut iter)?
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "--down-worker" => down = Some(next("--down-worker", &mut iter)?),
            "--stop-worker" => stop = Some(next("--stop-worker", &mut iter)?),
            "--start-worker" => start = Some(next("--start-worker", &mut iter)?),
            "--add-worker" => args.add = Some(next("--add-worker", &mut iter)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let (Some(d), Some(stop), Some(start)) = (down, stop, start) {
        args.down = Some((d, stop, start));
    }
    Ok(args)
}

/// The tenants whose shards are on the worker at `port`.
async fn tenants_on(
    pool: &PgPool,
    port: u16,
    tenants: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let mut on = Vec::new();
    for t in tenants {
        let p: i32 = sqlx::query_scalar(
            "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n ON n.groupid = p.groupid
              WHERE p.shardid = get_shard_id_for_distribution_column('sessions', $1)",
        )
        .bind(t)
        .fetch_one(pool)
        .await?;
        if p == i32::from(port) {
            on.push(t.clone());
        }
    }
    Ok(on)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL")?;
    let admin: PgConnectOptions = url.parse()?;
    if !is_loopback(admin.get_host()) {
        return Err(format!(
            "refusing to soak a non-loopback server ({})",
            admin.get_host()
        )
        .into());
    }
    let citus = !args.workers.is_empty();
    let mut conn = admin.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let options = admin.clone().database(DATABASE);
    // The clients' connections carry a name of their own: the fault injector terminates those
    // (and not the rebalance's, nor Citus's own).
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_with(options.clone().application_name(faults::CLIENTS))
        .await?;
    if citus {
        distribute::make_distributed(&pool, &options, &args.workers).await?;
    } else {
        agentpg_repo::migrate(&pool).await?;
    }
    agentpg_repo::rls::create_tenant_role(&pool, "tenant-0", None).await?;

    let mut sessions = Vec::new();
    let mut tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t}")).collect();
    tenants.push(RETENTION_TENANT.to_string());
    for tenant in &tenants {
        for s in 0..SESSIONS_PER_TENANT {
            let created = agentpg_repo::create_session(
                &pool,
                &NewSession::new(tenant.clone(), format!("session-{s}")),
            )
            .await?;
            sessions.push((tenant.clone(), created.id));
        }
    }
    let ctx = Arc::new(Ctx {
        pool: pool.clone(),
        sessions,
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        ledger: Mutex::new(Ledger::default()),
        pending: Mutex::new(HashMap::new()),
        recent: Mutex::new(VecDeque::new()),
    });
    let started = Instant::now();
    let duration = args.duration;
    let seed = fastrand::u64(..);
    println!(
        "soak: {} tenants x {SESSIONS_PER_TENANT} sessions (one tenant for retention), {APPENDERS} appenders, {COMPACTORS} compactors, a reverter, a forker, a preserver, retention, an attacker; {}s, seed {seed}{}",
        tenants.len(),
        duration.as_secs(),
        match (citus, args.restart) {
            (true, _) => format!(
                ", Citus: {} workers{}{}",
                args.workers.len(),
                if args.down.is_some() { ", one stopped for a while" } else { "" },
                if args.add.is_some() { ", one added and rebalanced onto" } else { "" }
            ),
            (false, true) => ", one server restart".into(),
            (false, false) => String::new(),
        }
    );

    let mut tasks = Vec::new();
    let spawn = |tasks: &mut Vec<tokio::task::JoinHandle<()>>,
                 f: fn(Arc<Ctx>, u64) -> futures_util::future::BoxFuture<'static, ()>,
                 s: u64| {
        tasks.push(tokio::spawn(f(ctx.clone(), s)));
    };
    for i in 0..APPENDERS {
        spawn(
            &mut tasks,
            |c, s| Box::pin(async move { workers::appender(&c, s).await }),
            seed + i as u64,
        );
    }
    for i in 0..COMPACTORS {
        spawn(
            &mut tasks,
            |c, s| Box::pin(async move { workers::compactor(&c, s).await }),
            seed + 100 + i as u64,
        );
    }
    spawn(
        &mut tasks,
        |c, s| Box::pin(async move { workers::reverter(&c, s).await }),
        seed + 200,
    );
    spawn(
        &mut tasks,
        |c, s| Box::pin(async move { workers::forker(&c, s).await }),
        seed + 300,
    );
    spawn(
        &mut tasks,
        |c, s| Box::pin(async move { workers::preserver(&c, s).await }),
        seed + 400,
    );
    spawn(
        &mut tasks,
        |c, _| Box::pin(async move { workers::retention(&c).await }),
        0,
    );
    {
        let ctx = ctx.clone();
        let attacker = agentpg_repo::rls::tenant_connect_options(options.clone(), "tenant-0")?;
        tasks.push(tokio::spawn(async move {
            workers::attacker(&ctx, attacker, "tenant-0").await
        }));
    }
    {
        let (ctx, admin) = (ctx.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            faults::kill_backends(&ctx, admin, DATABASE, seed + 500).await
        }));
    }
    if args.restart && !citus {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            faults::restart_local(&ctx, started + duration / 2).await
        }));
    }
    // A worker down from a quarter of the run, for an eighth of it (at least 5 s).
    let mut probe = None;
    if let Some((worker, stop, start)) = args.down.clone() {
        let at = started + duration / 4;
        let down = (duration / 8).max(Duration::from_secs(5));
        let port: u16 = worker.rsplit_once(':').ok_or("host:port")?.1.parse()?;
        let down_tenants = tenants_on(&pool, port, &tenants).await?;
        println!(
            "fault plan: worker {worker} (tenants {down_tenants:?}) down from {}s for {}s",
            (at - started).as_secs(),
            down.as_secs()
        );
        let ctx2 = ctx.clone();
        tasks.push(tokio::spawn(async move {
            faults::worker_down(&ctx2, stop, start, at, down).await
        }));
        let ctx2 = ctx.clone();
        // Probe from a second after the stop until a second before the start.
        probe = Some((
            down_tenants.clone(),
            tokio::spawn(async move {
                workers::probe(
                    &ctx2,
                    down_tenants,
                    at + Duration::from_secs(1),
                    at + down - Duration::from_secs(1),
                )
                .await
            }),
        ));
    }
    let rebalance = args.add.clone().map(|hostport| {
        let coordinator = options.clone();
        let new = distribute::node(&admin, &hostport, DATABASE);
        tokio::spawn(async move {
            faults::add_worker_and_rebalance(
                coordinator,
                new?,
                DATABASE,
                started + duration * 3 / 5,
            )
            .await
            .map_err(|e| e.to_string())
        })
    });

    tokio::time::sleep(duration).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let probed: Option<(Vec<String>, (Outcomes, Outcomes))> = match probe {
        Some((tenants, task)) => Some((tenants, task.await?)),
        None => None,
    };
    let rebalanced = match rebalance {
        Some(task) => Some(task.await?),
        None => None,
    };
    workers::answer_pending_calls(&ctx).await;

    // Check with a fresh pool: the old one may hold connections the faults broke.
    pool.close().await;
    let check_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    let ledger = std::mem::take(&mut *ctx.ledger.lock().unwrap());
    let results = check::check(&check_pool, &ledger).await?;
    let (messages, archived, events): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_archive), (SELECT count(*) FROM compaction_events)",
    )
    .fetch_one(&check_pool)
    .await?;
    check_pool.close().await;

    let stats = &ctx.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    println!("\nafter {:.1}s:", started.elapsed().as_secs_f64());
    for (name, counts) in [
        ("appends", &stats.appends),
        ("compacts", &stats.compactions),
        ("reverts", &stats.reverts),
        ("forks", &stats.forks),
        ("preserves", &stats.preserves),
        ("retention", &stats.retention),
    ] {
        println!("{}", counts.line(name));
    }
    println!(
        "faults     backends terminated {}  restarts {}",
        load(&stats.kills),
        load(&stats.restarts)
    );
    println!("database   messages {messages}  archived {archived}  compaction events {events}");
    println!(
        "ledger     acknowledged messages {}  preserved {}  summaries {}",
        ledger.appended.len(),
        ledger.preserved.len(),
        ledger.summaries.len()
    );
    println!(
        "retries    sent again after an unknown outcome {}  answered after a retry {}  \
         late retries {} ({} messages came back archived)  sent twice at once {}  \
         calls answered in a later batch {}  attacks {}",
        load(&stats.retries),
        load(&stats.retried_then_acked),
        load(&stats.late_retries),
        load(&stats.late_retries_archived),
        load(&stats.concurrent_duplicates),
        load(&stats.pending_calls),
        load(&stats.attacks)
    );
    let mut violations = load(&stats.client_violations) as i64;
    if let Some((tenants, (down, up))) = &probed {
        println!(
            "worker down  its tenants {tenants:?}: {} answered, {} retryable errors, {} other; the other tenants: {} answered, {} retryable errors, {} other",
            down.ok, down.retryable, down.other, up.ok, up.retryable, up.other
        );
        // Its tenants fail only with errors a retry may fix; the others keep working.
        let wrong = down.other + up.other;
        let stalled = u64::from(!tenants.is_empty() && down.retryable == 0)
            + u64::from(up.ok == 0)
            + up.retryable;
        violations += (wrong + stalled) as i64;
    }
    if let Some(result) = &rebalanced {
        match result {
            Ok(moved) if *moved > 0 => {
                println!("rebalance  the new worker holds {moved} shard placements")
            }
            other => {
                println!("rebalance  failed: {other:?}");
                violations += 1;
            }
        }
    }
    println!("\ninvariants:");
    for (name, n) in &results {
        println!("  {n:>5}  {name}");
        violations += n;
    }
    println!(
        "  {:>5}  violations the clients saw (see the lines above)",
        load(&stats.client_violations)
    );
    let unexpected = stats.unexpected();
    println!("\nviolations: {violations}; errors that were not clean: {unexpected}");

    let mut conn = admin.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {DATABASE} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    if violations != 0 || unexpected != 0 {
        std::process::exit(1);
    }
    Ok(())
}
