//! The embedded migrator: the migrations compiled into the crate.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

/// Every migration (up and down), embedded at compile time from the crate's own `migrations/`
/// folder: a byte-for-byte copy of the project's `migrations/` that `cargo xtask codegen` writes
/// and `cargo xtask codegen --check` verifies, so the published crate carries its schema and
/// checksums agree whichever folder a database was migrated from.
///
/// Applied migrations are recorded in `_sqlx_migrations`. Use [`MIGRATOR`]`.undo(&pool, target)`
/// to roll back to a version.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration to `pool`, each in its own transaction.
///
/// # Errors
/// Returns [`MigrateError`] if a migration fails or if an applied migration's checksum no
/// longer matches its file.
#[tracing::instrument(skip_all, fields(migrations = MIGRATOR.iter().count()))]
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
