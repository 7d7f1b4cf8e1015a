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
