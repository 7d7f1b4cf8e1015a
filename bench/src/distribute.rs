//! Making a fresh database of a Citus coordinator a Citus cluster of its own with agentpg's
//! schema, as SCALING.md tells users to: the extension on every node, the workers registered,
//! the migrations, then the distribution SQL of SCALING.md (read from SCALING.md itself).

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

/// SCALING.md, for its distribution SQL.
const SCALING: &str = include_str!("../../SCALING.md");

/// The SQL block of SCALING.md after its `<!-- citus:distribute -->` marker.
pub(crate) fn distribution_sql() -> Result<&'static str, String> {
    SCALING
        .split_once("<!-- citus:distribute -->")
        .and_then(|(_, rest)| rest.split_once("```sql\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(sql, _)| sql)
        .ok_or_else(|| "SCALING.md lost its distribution SQL".to_string())
}

/// `host:port` as connect options like `base`'s, for database `database`.
pub(crate) fn node(
    base: &PgConnectOptions,
    hostport: &str,
    database: &str,
) -> Result<PgConnectOptions, String> {
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or(format!("{hostport}: host:port"))?;
    Ok(base
        .clone()
        .host(host)
        .port(port.parse().map_err(|_| format!("{hostport}: port"))?)
        .database(database))
}

/// `pool`'s database (created on the coordinator `coordinator`, which Citus created on the
/// workers too) made a distributed agentpg database over `workers`.
pub(crate) async fn make_distributed(
    pool: &PgPool,
    coordinator: &PgConnectOptions,
    workers: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let database = coordinator
        .get_database()
        .ok_or("the coordinator's options name no database")?
        .to_string();
    for w in workers {
        let mut conn = node(coordinator, w, &database)?.connect().await?;
        sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS citus")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
    }
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS citus")
        .execute(pool)
        .await?;
    sqlx::query("SELECT citus_set_coordinator_host($1, $2)")
        .bind(coordinator.get_host())
        .bind(i32::from(coordinator.get_port()))
        .execute(pool)
        .await?;
    for w in workers {
        let (host, port) = w.rsplit_once(':').ok_or("host:port")?;
        sqlx::query("SELECT citus_add_node($1, $2)")
            .bind(host)
            .bind(port.parse::<i32>()?)
            .execute(pool)
            .await?;
    }
    agentpg_repo::migrate(pool).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(distribution_sql()?.to_string()))
        .execute(pool)
        .await?;
    Ok(())
}
