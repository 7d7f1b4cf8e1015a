//! Helpers for the unit tests that check PostgreSQL's plans.

/// What autovacuum does after a bulk load, done now: `VACUUM ANALYZE table`. ANALYZE alone is
/// not enough for a plan that may use a GIN index: GIN's cost estimate reads the index's own
/// statistics (entries, pages, pending list), which only VACUUM records, so a freshly loaded GIN
/// index that was never vacuumed looks far more expensive than it is, and the plan would depend
/// on whether autovacuum had happened to run first. (VACUUM cannot run inside a multi-statement
/// batch, hence a statement of its own.)
pub(crate) async fn vacuum_analyze(pool: &sqlx::PgPool, table: &'static str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
        .execute(pool)
        .await
        .expect("VACUUM ANALYZE");
}

/// The indexes a statement read, by the names the migrations declare: `sql` runs with
/// `values` in a transaction (unprepared, so planned for its values, as the repo runs the
/// statements whose plans matter), whose own index statistics then say which indexes of
/// `table` were scanned. The same on every layout: a partition's index counts for the index it
/// is attached to, and on Citus the counts are read where the statement ran, on the worker
/// holding `tenant`'s shard (in the same transaction, so on the same connection), for the
/// shard's indexes (named by the declared index and the shard's number). (A plan is no
/// evidence there: Citus's `EXPLAIN ANALYZE` shows the worker's generic plan, while the worker
/// runs the statement with its values.)
pub(crate) async fn indexes_read(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    table: &str,
    sql: &str,
    values: sea_query_sqlx::SqlxValues,
) -> Vec<String> {
    use sqlx::Connection;
    let mut tx = conn.begin().await.expect("BEGIN");
    sqlx::query_with(sqlx::AssertSqlSafe(sql.to_string()), values)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .expect("the statement");
    let citus: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
            .fetch_one(&mut *tx)
            .await
            .expect("extensions");
    let mut read = Vec::new();
    if citus {
        let shard: i64 =
            sqlx::query_scalar("SELECT get_shard_id_for_distribution_column($1::regclass, $2)")
                .bind(table)
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await
                .expect("the tenant's shard");
        let declared: Vec<String> = sqlx::query_scalar(
            "SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
              WHERE x.indrelid = $1::regclass ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .expect("the table's indexes");
        // A router query to the tenant's shard; the column reference keeps Citus from
        // evaluating the function on the coordinator.
        let on_shard = format!(
            "SELECT pg_stat_get_xact_numscans(to_regclass($1 || left(tenant_id, 0)))
               FROM {table} WHERE tenant_id = $2 LIMIT 1"
        );
        for index in declared {
            let scans: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(on_shard.clone()))
                .bind(format!("{index}_{shard}"))
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await
                .expect("the shard's index statistics");
            if scans.unwrap_or(0) > 0 {
                read.push(index);
            }
        }
    } else {
        read = sqlx::query_scalar(
            // By the name of the index as declared (the partitioned layout's partitions have
            // indexes of their own, attached to the declared one).
            "SELECT r.relname::text
             FROM (SELECT $1::regclass AS relid
                   UNION SELECT relid FROM pg_partition_tree($1::regclass)) AS t
             JOIN pg_index x ON x.indrelid = t.relid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class r ON r.oid = coalesce(pg_partition_root(i.oid), i.oid)
             GROUP BY 1 HAVING sum(pg_stat_get_xact_numscans(i.oid)) > 0
             ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await
        .expect("index statistics");
    }
    tx.rollback().await.expect("ROLLBACK");
    read
}
