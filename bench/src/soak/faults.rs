//! The soak's faults: backends terminated at random, the server restarted, a Citus worker
//! stopped and started again, a worker added and the shards rebalanced onto it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::workers::Ctx;

/// The `application_name` of the clients' connections, the ones the fault injector terminates.
pub(crate) const CLIENTS: &str = "agentpg-soak";

/// Terminates 1–3 random backends of the soak database (on the server `admin` reaches) every
/// 0.5–2 s.
pub(crate) async fn kill_backends(ctx: &Ctx, admin: PgConnectOptions, database: &str, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while ctx_running(ctx) {
        tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
        let Ok(mut conn) = admin.connect().await else {
            continue;
        };
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = $1 AND application_name = $3 AND pid <> pg_backend_pid()
              ORDER BY random() LIMIT $2",
        )
        .bind(database)
        .bind(rng.i64(1..=3))
        .bind(CLIENTS)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        ctx.stats.kills.fetch_add(
            killed.iter().filter(|k| **k).count() as u64,
            Ordering::Relaxed,
        );
        let _ = conn.close().await;
    }
}

fn ctx_running(ctx: &Ctx) -> bool {
    !ctx.stop.load(Ordering::Relaxed)
}

/// Runs `command` in a shell; true if it succeeded.
async fn shell(command: String) -> bool {
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
    })
    .await
    .expect("the shell thread");
    matches!(status, Ok(s) if s.success())
}

/// Restarts the local PostgreSQL (Debian's cluster) at `at`.
pub(crate) async fn restart_local(ctx: &Ctx, at: Instant) {
    tokio::time::sleep_until(at.into()).await;
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
        })
        .unwrap_or_else(|| "15".into());
    if shell(format!(
        "pg_ctlcluster --skip-systemctl-redirect {version} main restart -m fast"
    ))
    .await
    {
        ctx.stats.restarts.fetch_add(1, Ordering::Relaxed);
        println!("fault: restarted PostgreSQL {version}");
    } else {
        eprintln!("fault: the restart failed");
    }
}

/// Stops a worker at `at` (`stop`), keeps it down for `down`, starts it again (`start`).
pub(crate) async fn worker_down(
    ctx: &Ctx,
    stop: String,
    start: String,
    at: Instant,
    down: Duration,
) {
    tokio::time::sleep_until(at.into()).await;
    if !shell(stop).await {
        eprintln!("fault: stopping the worker failed");
        return;
    }
    println!("fault: worker stopped");
    tokio::time::sleep(down).await;
    if shell(start).await {
        ctx.stats.restarts.fetch_add(1, Ordering::Relaxed);
        println!("fault: worker started again after {}s", down.as_secs());
    } else {
        eprintln!("fault: starting the worker failed");
    }
}

/// At `at`, registers the node at `host:port` as a worker of the soak database (creating the
/// database and the extension on it first) and rebalances the shards onto it, while the load
/// runs. Returns how many shard placements the new worker holds afterwards.
pub(crate) async fn add_worker_and_rebalance(
    coordinator: PgConnectOptions,
    node: PgConnectOptions,
    database: &str,
    at: Instant,
) -> Result<i64, sqlx::Error> {
    tokio::time::sleep_until(at.into()).await;
    let mut on_node = node.clone().database("postgres").connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut on_node)
        .await?;
    on_node.close().await?;
    let mut on_node = node.clone().database(database).connect().await?;
    sqlx::raw_sql("CREATE EXTENSION citus")
        .execute(&mut on_node)
        .await?;
    on_node.close().await?;
    let mut conn = coordinator.connect().await?;
    let port = i32::from(node.get_port());
    sqlx::query("SELECT citus_add_node($1, $2)")
        .bind(node.get_host())
        .bind(port)
        .execute(&mut conn)
        .await?;
    println!("fault: worker 127.0.0.1:{port} added; rebalancing");
    let started = Instant::now();
    sqlx::query("SELECT citus_rebalance_start()")
        .execute(&mut conn)
        .await?;
    // The moves run in Citus's background jobs; watch them, and give up after five minutes.
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (state, done, all): (String, i64, i64) = sqlx::query_as(
            "SELECT j.state::text,
                    count(*) FILTER (WHERE t.status = 'done'), count(*)
               FROM pg_dist_background_job j JOIN pg_dist_background_task t USING (job_id)
              WHERE j.job_id = (SELECT max(job_id) FROM pg_dist_background_job)
              GROUP BY j.state",
        )
        .fetch_one(&mut conn)
        .await?;
        if state == "finished" {
            break;
        }
        if matches!(state.as_str(), "failed" | "cancelled")
            || started.elapsed() > Duration::from_secs(300)
        {
            return Err(sqlx::Error::Protocol(format!(
                "the rebalance is {state} after {:.0}s ({done} of {all} moves done)",
                started.elapsed().as_secs_f64()
            )));
        }
    }
    let moved: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_node n ON n.groupid = p.groupid
          WHERE n.nodeport = $1",
    )
    .bind(port)
    .fetch_one(&mut conn)
    .await?;
    println!(
        "fault: rebalanced in {:.1}s; the new worker holds {moved} shard placements",
        started.elapsed().as_secs_f64()
    );
    conn.close().await?;
    Ok(moved)
}
