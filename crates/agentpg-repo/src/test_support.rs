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

/// The indexes a statement read, by the names the migrations declare: `EXPLAIN (ANALYZE)` of
/// `sql` run with `values` (unprepared, so planned for its values, as the repo runs the
/// statements whose plans matter), every index of a plan node that ran at least once. The
/// same on every layout: a partition's index is named by the index it is attached to, and on
/// Citus the plan is the worker's (its indexes are the shard's, named with the shard's number).
pub(crate) async fn indexes_read(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    values: sea_query_sqlx::SqlxValues,
) -> Vec<String> {
    let explain = sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"));
    let (plan,): (serde_json::Value,) = sqlx::query_as_with(explain, values)
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .expect("EXPLAIN");
    let mut found = Vec::new();
    collect_indexes(&plan, &mut found);
    let mut names = Vec::new();
    for name in found {
        let declared: String = sqlx::query_scalar(
            "SELECT coalesce(
                 (SELECT pg_partition_root(c.oid)::regclass::text FROM pg_class c
                   WHERE c.relname = $1 AND c.relkind IN ('i', 'I') LIMIT 1),
                 (SELECT c.relname::text FROM pg_class c
                   WHERE c.relname = regexp_replace($1, '_[0-9]+$', '') AND c.relkind IN ('i', 'I')
                   LIMIT 1),
                 $1)",
        )
        .bind(&name)
        .fetch_one(&mut *conn)
        .await
        .expect("the declared index");
        if !names.contains(&declared) {
            names.push(declared);
        }
    }
    names.sort();
    names
}

/// Every `Index Name` of a plan node in `plan` (JSON) that ran (`Actual Loops` above 0).
fn collect_indexes(plan: &serde_json::Value, out: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(node) => {
            let ran = node
                .get("Actual Loops")
                .and_then(serde_json::Value::as_f64)
                .is_none_or(|loops| loops > 0.0);
            if let (Some(name), true) = (node.get("Index Name").and_then(|n| n.as_str()), ran) {
                out.push(name.to_string());
            }
            node.values().for_each(|v| collect_indexes(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_indexes(v, out)),
        _ => {}
    }
}
