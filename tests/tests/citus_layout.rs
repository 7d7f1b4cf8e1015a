//! The Citus proof, step one: on a real Citus cluster (a coordinator and its workers), the
//! project's migrations are applied to the coordinator's `template1` as a user applies them,
//! the tables are distributed with the SQL that SCALING.md gives users (read from SCALING.md
//! itself, so the document and the proof cannot drift apart), and `template1` is closed to
//! connections on every node. Step two, `cargo xtask test --citus`, then runs the whole
//! agentpg-repo suite there: `#[sqlx::test]` creates each test's database on the coordinator,
//! Citus creates it on every worker from their `template1` (the shards), and the migrator
//! finds nothing to do.
//!
//! Why `template1` is closed: Citus keeps a maintenance daemon connected to every database that
//! holds its extension, and PostgreSQL copies a template only while nobody is connected to it.
//! A template that allows no connections is still copied (at file level), daemon or not.
//!
//! The test touches a database only when `AGENTPG_CITUS_TEMPLATE` names the coordinator's
//! `template1`: it rewrites that cluster's templates, which no shared cluster should see.

use std::path::Path;

use sqlx::{Connection, PgConnection};

/// The SQL block of SCALING.md that follows `marker`, as users copy it.
fn scaling_sql(marker: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../SCALING.md");
    let text = std::fs::read_to_string(&path).expect("SCALING.md");
    let after = text
        .split_once(marker)
        .unwrap_or_else(|| panic!("SCALING.md has no {marker}"))
        .1;
    let body = after
        .split_once("```sql\n")
        .expect("a ```sql block after the marker")
        .1;
    body.split_once("```")
        .expect("the end of the sql block")
        .0
        .to_owned()
}

/// `url` with its database replaced by `database` (host, port, user and options kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rsplit_once('/') {
        Some((server, _)) if server.contains("://") && server.len() > "postgres://".len() => server,
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

#[test]
fn scaling_md_holds_the_distribution_sql_for_every_table() {
    let sql = scaling_sql("<!-- citus:distribute -->");
    for table in [
        "sessions",
        "messages",
        "compaction_events",
        "message_archive",
        "session_changes",
    ] {
        assert!(
            sql.contains(&format!("create_distributed_table('{table}', 'tenant_id'")),
            "{table}: {sql}"
        );
    }
    assert_eq!(
        with_database("postgres://u@h:1/x?options=a", "template1"),
        "postgres://u@h:1/template1?options=a"
    );
}

#[tokio::test]
#[ignore = "rewrites template1 of the Citus cluster AGENTPG_CITUS_TEMPLATE names; cargo xtask test --citus runs it on a cluster of its own"]
async fn build_citus_template() {
    let Ok(url) = std::env::var("AGENTPG_CITUS_TEMPLATE") else {
        println!("AGENTPG_CITUS_TEMPLATE is not set: nothing to do");
        return;
    };
    let workers: Vec<String> = std::env::var("AGENTPG_CITUS_WORKERS")
        .expect("AGENTPG_CITUS_WORKERS: the workers as host:port,host:port")
        .split(',')
        .map(str::to_owned)
        .collect();
    let scheme_user = url.split_once('@').expect("a user in the URL").0.to_owned();
    let worker_url = |hostport: &str| format!("{scheme_user}@{hostport}/template1");

    // The extension on every node's template1 (each database is a Citus cluster of its own).
    for node in std::iter::once(url.clone()).chain(workers.iter().map(|w| worker_url(w))) {
        let mut conn = PgConnection::connect(&node).await.unwrap();
        sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS citus")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    let mut conn = PgConnection::connect(&url).await.unwrap();
    let coordinator = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hostport, _)| hostport.to_owned())
        .expect("host:port in the URL");
    let (host, port) = coordinator.rsplit_once(':').expect("host:port");
    sqlx::query("SELECT citus_set_coordinator_host($1, $2)")
        .bind(host)
        .bind(port.parse::<i32>().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    for worker in &workers {
        let (host, port) = worker.rsplit_once(':').expect("host:port");
        sqlx::query("SELECT citus_add_node($1, $2)")
            .bind(host)
            .bind(port.parse::<i32>().unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
    }

    // The migrations as a user applies them, then the distribution from SCALING.md.
    agentpg_repo::MIGRATOR.run(&mut conn).await.unwrap();
    let distribute = scaling_sql("<!-- citus:distribute -->");
    sqlx::raw_sql(sqlx::AssertSqlSafe(distribute))
        .execute(&mut conn)
        .await
        .unwrap();

    // Every table of the schema distributed by tenant_id, all in one co-location group.
    let layout: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT c.relname::text, column_to_column_name(p.logicalrelid, p.partkey),
                p.colocationid
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(layout.len() >= 4, "{layout:?}");
    for (table, column, group) in &layout {
        assert_eq!(
            column, "tenant_id",
            "{table} is not distributed by tenant_id"
        );
        assert_eq!(
            *group, layout[0].2,
            "{table} is not co-located with the others"
        );
    }
    conn.close().await.unwrap();

    // Close template1 on every node, then end the connections Citus keeps to it.
    for node in std::iter::once(url.clone()).chain(workers.iter().map(|w| worker_url(w))) {
        let mut conn = PgConnection::connect(&with_database(&node, "postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(
            "ALTER DATABASE template1 ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'template1' AND pid <> pg_backend_pid();",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    println!("template1 holds the distributed layout: {layout:?}");
}
