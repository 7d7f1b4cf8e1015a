//! `cargo xtask bench --citus`: agentpg through a Citus coordinator against one plain server,
//! measured in the same run — the core operations one call at a time (the two sides alternate
//! call by call), a tenant's first page among 100k sessions, and 64 agents taking turns over a
//! pool of 16 connections. Each row is Citus's time over the plain server's: what the extra hop
//! (client → coordinator → worker) and Citus's planning cost.

use std::time::Duration;

use agentpg_repo::{
    append_messages, compact, fork_session, get_session, list_messages, list_sessions,
    revert_compaction, MessageRange, SessionFilter, SessionOrder,
};
use agentpg_schema::{Message, NewMessage, NewSession, Session};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

use crate::{interleave, message, new_session, plan, Row, TENANT};

const DATABASE: &str = "agentpg_bench_citus";

/// A session of `n` messages on `pool`.
async fn long_session(pool: &PgPool, name: String, n: usize) -> (Session, Vec<Message>) {
    let s = new_session(pool, name).await;
    let batch: Vec<NewMessage> = (0..n).map(|i| message(s.id, i)).collect();
    let stored = append_messages(pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    (s, stored)
}

/// The same database on both: created, migrated, and on Citus distributed.
async fn database(
    admin: &PgConnectOptions,
    workers: Option<&[String]>,
) -> Result<(PgPool, PgConnectOptions), Box<dyn std::error::Error>> {
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
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await?;
    match workers {
        Some(workers) => crate::distribute::make_distributed(&pool, &options, workers).await?,
        None => agentpg_repo::migrate(&pool).await?,
    }
    Ok((pool, options))
}

/// `tenants` tenants of `per_tenant` sessions each, in one statement per tenant.
async fn many_sessions(pool: &PgPool, tenants: usize, per_tenant: usize) {
    for t in 0..tenants {
        sqlx::query(
            "INSERT INTO sessions (tenant_id, identifier, metadata)
             SELECT $1, 's' || i, jsonb_build_object('n', i) FROM generate_series(1, $2) AS i",
        )
        .bind(format!("page-tenant-{t}"))
        .bind(per_tenant as i32)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::raw_sql("VACUUM ANALYZE sessions")
        .execute(pool)
        .await
        .unwrap();
}

/// One row: Citus's median over the plain server's.
fn row(case: &str, citus: Duration, plain: Duration) -> Row {
    Row {
        case: case.into(),
        ours: citus,
        base: Some(plain),
        ours_statements: "-".into(),
        base_statements: "-".into(),
        target: "(Citus / one server)".into(),
        met: None,
    }
}

pub(crate) async fn run(
    plain_admin: PgConnectOptions,
    citus_admin: PgConnectOptions,
    workers: Vec<String>,
    quick: bool,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let (plain, plain_options) = database(&plain_admin, None).await?;
    let (citus, citus_options) = database(&citus_admin, Some(&workers)).await?;
    let pools = [&citus, &plain];
    let rounds = if quick { 5 } else { 21 };
    let per_round = if quick { 10 } else { 40 };
    let mut rows = Vec::new();

    let (c, p) = interleave(
        rounds,
        per_round,
        |i| async move {
            new_session(pools[0], format!("c{i}")).await;
        },
        |i| async move {
            new_session(pools[1], format!("p{i}")).await;
        },
    )
    .await;
    rows.push(row("create session", c, p));

    let mut sessions = Vec::new();
    for pool in pools {
        sessions.push(long_session(pool, "long".into(), 1_000).await);
    }
    let ids = [sessions[0].0.id, sessions[1].0.id];
    let (c, p) = interleave(
        rounds,
        per_round,
        |_| async move {
            get_session(pools[0], TENANT, ids[0]).await.unwrap();
        },
        |_| async move {
            get_session(pools[1], TENANT, ids[1]).await.unwrap();
        },
    )
    .await;
    rows.push(row("get session", c, p));

    let (c, p) = interleave(
        rounds,
        per_round,
        |i| async move {
            append_messages(pools[0], TENANT, ids[0], &[message(ids[0], i)])
                .await
                .unwrap();
        },
        |i| async move {
            append_messages(pools[1], TENANT, ids[1], &[message(ids[1], i)])
                .await
                .unwrap();
        },
    )
    .await;
    rows.push(row("append one message", c, p));

    let hundred = |session: Uuid, i: usize| -> Vec<NewMessage> {
        (0..100)
            .map(|k| NewMessage {
                id: Some(Uuid::new_v4()),
                ..message(session, i * 100 + k)
            })
            .collect()
    };
    let (c, p) = interleave(
        rounds,
        per_round / 4,
        |i| async move {
            append_messages(pools[0], TENANT, ids[0], &hundred(ids[0], i))
                .await
                .unwrap();
        },
        |i| async move {
            append_messages(pools[1], TENANT, ids[1], &hundred(ids[1], i))
                .await
                .unwrap();
        },
    )
    .await;
    rows.push(row("append 100 messages with ids (retry-safe)", c, p));

    let (c, p) = interleave(
        rounds,
        per_round,
        |_| async move {
            list_messages(pools[0], TENANT, ids[0], MessageRange::last(50))
                .await
                .unwrap();
        },
        |_| async move {
            list_messages(pools[1], TENANT, ids[1], MessageRange::last(50))
                .await
                .unwrap();
        },
    )
    .await;
    rows.push(row("list the last 50 messages", c, p));

    // Compaction and revert: sessions of 1,000 messages made up front, one per call.
    let calls = rounds * (per_round / 8).max(1);
    let mut fresh: [Vec<(Session, Vec<Message>)>; 2] = [Vec::new(), Vec::new()];
    for (side, pool) in pools.iter().enumerate() {
        for k in 0..calls {
            fresh[side].push(long_session(pool, format!("compact-{k}"), 1_000).await);
        }
    }
    let fresh = &fresh;
    let events = std::sync::Mutex::new([Vec::new(), Vec::new()]);
    let events = &events;
    let (c, p) = interleave(
        rounds,
        (per_round / 8).max(1),
        |i| async move {
            let (s, m) = &fresh[0][(i - 1) / 2];
            let plan = plan(s.id, m[..100].iter().map(|m| m.id).collect());
            let e = compact(pools[0], TENANT, &plan).await.unwrap();
            events.lock().unwrap()[0].push(e.id);
        },
        |i| async move {
            let (s, m) = &fresh[1][(i - 1) / 2];
            let plan = plan(s.id, m[..100].iter().map(|m| m.id).collect());
            let e = compact(pools[1], TENANT, &plan).await.unwrap();
            events.lock().unwrap()[1].push(e.id);
        },
    )
    .await;
    rows.push(row("compact the oldest 100 of 1,000 messages", c, p));
    let done = std::mem::take(&mut *events.lock().unwrap());
    let done = &done;
    let (c, p) = interleave(
        rounds,
        (per_round / 8).max(1),
        |i| async move {
            revert_compaction(pools[0], TENANT, done[0][(i - 1) / 2])
                .await
                .unwrap();
        },
        |i| async move {
            revert_compaction(pools[1], TENANT, done[1][(i - 1) / 2])
                .await
                .unwrap();
        },
    )
    .await;
    rows.push(row("revert that compaction", c, p));

    let at = [sessions[0].1[499].id, sessions[1].1[499].id];
    let (c, p) = interleave(
        rounds,
        (per_round / 8).max(1),
        |i| async move {
            fork_session(
                pools[0],
                TENANT,
                ids[0],
                at[0],
                NewSession::new(TENANT.into(), format!("fork-c{i}")),
            )
            .await
            .unwrap();
        },
        |i| async move {
            fork_session(
                pools[1],
                TENANT,
                ids[1],
                at[1],
                NewSession::new(TENANT.into(), format!("fork-p{i}")),
            )
            .await
            .unwrap();
        },
    )
    .await;
    rows.push(row("fork at message 500 of 1,000", c, p));

    // A tenant's first page among 100k sessions of 1,000 tenants.
    let (tenants, per_tenant) = if quick { (100, 100) } else { (1_000, 100) };
    for pool in pools {
        many_sessions(pool, tenants, per_tenant).await;
    }
    let (c, p) = interleave(
        rounds,
        per_round,
        |_| async move {
            list_sessions(
                pools[0],
                "page-tenant-7",
                &SessionFilter::default(),
                SessionOrder::NewestFirst,
                None,
                50,
            )
            .await
            .unwrap();
        },
        |_| async move {
            list_sessions(
                pools[1],
                "page-tenant-7",
                &SessionFilter::default(),
                SessionOrder::NewestFirst,
                None,
                50,
            )
            .await
            .unwrap();
        },
    )
    .await;
    rows.push(row(
        &format!(
            "a tenant's page of 50 among {}k sessions",
            tenants * per_tenant / 1000
        ),
        c,
        p,
    ));

    // A search page over the tenant's messages (every one says "paragraph"; one in three calls
    // the search tool with "keyset pagination"), live and archived.
    let search = agentpg_repo::MessageSearch {
        archived: agentpg_repo::Archived::Include,
        ..agentpg_repo::MessageSearch::new("keyset pagination")
    };
    let search = &search;
    let (c, p) = interleave(
        rounds,
        per_round,
        |_| async move {
            agentpg_repo::search_messages(pools[0], TENANT, search, None, 20)
                .await
                .unwrap();
        },
        |_| async move {
            agentpg_repo::search_messages(pools[1], TENANT, search, None, 20)
                .await
                .unwrap();
        },
    )
    .await;
    rows.push(row("search page of 20, live and archived", c, p));

    // 64 agents taking turns over a pool of 16 connections.
    for pool in pools {
        crate::throughput::agents(pool).await;
    }
    let secs = if quick { 3 } else { 8 };
    let mut turns = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for side in [round % 2, 1 - round % 2] {
            let options = if side == 0 {
                &citus_options
            } else {
                &plain_options
            };
            turns[side].push(crate::throughput::ours(options, 16, secs, false));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, p) = (median(turns[0].clone()), median(turns[1].clone()));
    println!("agent turns/s over a pool of 16: Citus {c:.0}, one server {p:.0}");
    rows.push(row(
        "64 agents' turns, pool of 16 (time per turn)",
        Duration::from_secs_f64(1.0 / c),
        Duration::from_secs_f64(1.0 / p),
    ));

    plain.close().await;
    citus.close().await;
    for admin in [&plain_admin, &citus_admin] {
        let mut conn = admin.connect().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {DATABASE} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
    }
    Ok(rows)
}
