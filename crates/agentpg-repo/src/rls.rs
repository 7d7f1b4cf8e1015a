//! Running agentpg-repo under row-level security (opt-in).
//!
//! The migrations give every table a policy for the role [`APP_ROLE`]: its statements see and
//! write only the rows whose `tenant_id` equals the setting [`TENANT_SETTING`]; with no tenant
//! set they see nothing and write nothing. Every other role, the table owner included, is
//! unaffected. Under these policies the database itself keeps tenants apart, whatever SQL runs
//! on the connection — agentpg-repo's, your own, or an analytics tool's.
//!
//! Two ways to run as a tenant, with different costs:
//!
//! * **Per connection** — [`tenant_connect_options`]: the role and the tenant are startup
//!   options of every connection of a pool dedicated to one tenant. No statement and no round
//!   trip is added to any call; what remains is the policy's condition, which the tenant-leading
//!   keys already satisfy.
//! * **Per transaction** — [`begin_as_tenant`]: one pool for all tenants; each transaction sets
//!   the role and the tenant for itself (`SET LOCAL`), which costs one round trip per
//!   transaction (plus `BEGIN` and `COMMIT` for calls that would not otherwise need a
//!   transaction). The connection returns to the pool as it was.
//!
//! Under either, a call naming another tenant finds nothing ([`Error::NotFound`]), and a write
//! of another tenant's row is refused ([`Error::Forbidden`]).
//!
//! The login role must be allowed to become [`APP_ROLE`]: `GRANT agentpg_app TO your_login`
//! (superusers may always).

use sqlx::postgres::PgConnectOptions;
use sqlx::{Acquire, Postgres, Transaction};

use crate::error::{Error, Result};
use crate::validate;

/// The role the tenant policies restrict (created by the migrations).
pub const APP_ROLE: &str = "agentpg_app";

/// The setting the tenant policies compare `tenant_id` with.
pub const TENANT_SETTING: &str = "agentpg.tenant";

/// `options` for connections that run as [`APP_ROLE`] for `tenant`: both are startup options,
/// so a pool built from them runs every call under the tenant policies at no extra round trip.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
/// let base: PgConnectOptions = std::env::var("DATABASE_URL")?.parse()?;
/// let acme = PgPoolOptions::new()
///     .max_connections(4)
///     .connect_with(agentpg_repo::rls::tenant_connect_options(base, "acme")?)
///     .await?;
/// // Every statement on `acme` sees only tenant acme's rows.
/// let page = agentpg_repo::list_sessions(
///     &acme, "acme", &Default::default(), Default::default(), None, 20,
/// ).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::InvalidInput`] for an empty tenant or one PostgreSQL cannot hold.
pub fn tenant_connect_options(options: PgConnectOptions, tenant: &str) -> Result<PgConnectOptions> {
    validate::tenant(tenant)?;
    Ok(options.options([("role", APP_ROLE), (TENANT_SETTING, tenant)]))
}

/// Begins a transaction (a savepoint inside yours) that runs as [`APP_ROLE`] for `tenant`:
/// pass `&mut *tx` to agentpg-repo's functions (and run your own SQL on it), then commit. One
/// round trip besides `BEGIN`; the role and the tenant end with the transaction.
///
/// # Errors
/// [`Error::InvalidInput`] for an empty tenant; [`Error::Forbidden`] if the login role may
/// not become [`APP_ROLE`].
pub async fn begin_as_tenant<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
) -> Result<Transaction<'c, Postgres>> {
    validate::tenant(tenant)?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('role', $1, true), set_config($2, $3, true)")
        .bind(APP_ROLE)
        .bind(TENANT_SETTING)
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
    Ok(tx)
}
