//! The embedded migrator: the workspace `migrations/` folder compiled into the crate.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

/// Every migration in the workspace `migrations/` folder (up and down), embedded at compile time.
///
/// Applied migrations are recorded in `_sqlx_migrations`. Use [`MIGRATOR`]`.undo(&pool, target)`
/// to roll back to a version.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies every pending migration to `pool`, each in its own transaction.
///
/// # Errors
/// Returns [`MigrateError`] if a migration fails or if an applied migration's checksum no
/// longer matches its file.
#[tracing::instrument(skip_all, fields(migrations = MIGRATOR.iter().count()))]
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
