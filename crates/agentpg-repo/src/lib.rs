//! Storage for stateful AI agents on PostgreSQL: sessions, messages, compactions and their
//! archive.
//!
//! Apply the schema with the embedded migrator:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
//! agentpg_repo::migrate(&pool).await?;
//! # Ok(())
//! # }
//! ```

mod migrate;

pub use migrate::{migrate, MIGRATOR};
