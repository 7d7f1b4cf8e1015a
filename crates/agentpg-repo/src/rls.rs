//! Running agentpg-repo under row-level security (opt-in), with a tenant that SQL on the
//! connection cannot change.
//!
//! The migrations give each tenant a role, [`tenant_role`]`(tenant)` (`agentpg_t_` and 48 hex
//! digits of the SHA-256 of the tenant id), and give every table two policies: the members of
//! [`APP_ROLE`] see and write only the rows of the tenant whose role is the current role, and
//! every other role (the table owner, superusers, roles without [`APP_ROLE`]'s privileges) is
//! unaffected. Under these policies the database itself keeps tenants apart, whatever SQL runs
//! on a tenant's connection — agentpg-repo's, your own, an analytics tool's: changing a setting
//! changes nothing, `RESET ROLE` or `SET ROLE agentpg_app` leads to a role that sees nothing,
//! and becoming another tenant's role takes being granted it, which takes `CREATEROLE`. The
//! threat model, and what it does not cover, is in RELIABILITY.md.
//!
//! Create a tenant's role once with [`create_tenant_role`] (as a role with `CREATEROLE`), then
//! run as the tenant in one of two ways:
//!
//! * **Per connection** — [`tenant_connect_options`]: the connections of a pool dedicated to
//!   one tenant log in as its role (give the role a password or certificate, as for any login).
//!   No statement and no round trip is added to any call. This is the mode that confines SQL you
//!   do not control: hand such a connection to anyone, and they reach one tenant.
//! * **Per transaction** — [`begin_as_tenant`]: one pool for all tenants, whose login was
//!   granted the tenants' roles ([`create_tenant_role`]'s `grant_to`); each transaction switches
//!   to the tenant's role for itself (`SET LOCAL ROLE`), one round trip per transaction. The
//!   login can become any tenant it was granted, so SQL inside such a transaction is trusted
//!   as the login is: this mode keeps agentpg-repo's calls and your code's to the tenant, not an
//!   adversary who runs SQL in the transaction.
//!
//! Under either, a call naming another tenant finds nothing ([`Error::NotFound`]), and a write of
//! another tenant's row is refused ([`Error::Forbidden`]). On Citus both work, provided the
//! tenant roles may log in on every node (the coordinator connects to the workers as the
//! current role; `CREATE ROLE` is propagated to them): see SCALING.md.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Acquire, PgConnection, PgExecutor, Postgres, Transaction};

use crate::error::{Error, Result};
use crate::validate;

/// The role whose privileges every tenant role holds (created by the migrations); the tenant
/// policies apply to its members.
pub const APP_ROLE: &str = "agentpg_app";

/// The name of the role of `tenant`: what the migrations' `agentpg_tenant_role(tenant)`
/// computes (`agentpg_t_` and the first 48 hex digits of the SHA-256 of the tenant id, so every
/// tenant id fits in a role name).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty tenant or one PostgreSQL cannot hold.
pub fn tenant_role(tenant: &str) -> Result<String> {
    validate::tenant(tenant)?;
    let digest = Sha256::digest(tenant.as_bytes());
    let mut name = String::with_capacity(10 + 48);
    name.push_str("agentpg_t_");
    for byte in &digest[..24] {
        name.push_str(&format!("{byte:02x}"));
    }
    Ok(name)
}

/// Creates the role of `tenant` unless it exists (a login, member of [`APP_ROLE`]), grants it to
/// `grant_to` if given (a login that switches tenants per transaction), and returns its name.
/// Run it as a role with `CREATEROLE`; set the role's password (`ALTER ROLE … PASSWORD`) for
/// connections that log in as it.
///
/// # Errors
/// [`Error::InvalidInput`] for an empty tenant or one PostgreSQL cannot hold;
/// [`Error::Forbidden`] without `CREATEROLE`.
pub async fn create_tenant_role(
    executor: impl PgExecutor<'_>,
    tenant: &str,
    grant_to: Option<&str>,
) -> Result<String> {
    let expected = tenant_role(tenant)?;
    if let Some(login) = grant_to {
        validate::non_empty_text("grant_to", login)?;
    }
    let (role,): (String,) = sqlx::query_as("SELECT agentpg_create_tenant_role($1, $2)::text")
        .bind(tenant)
        .bind(grant_to)
        .fetch_one(executor)
        .await?;
    if role != expected {
        return Err(Error::Database(sqlx::Error::Protocol(format!(
            "the database names the role of this tenant {role}, agentpg-repo {expected}"
        ))));
    }
    Ok(role)
}

/// `options` for connections that log in as the role of `tenant` (user name
/// [`tenant_role`]`(tenant)`; keep the password or certificate `options` carries for it): a pool
/// built from them runs every statement under the tenant policies, at no extra round trip.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
/// let base: PgConnectOptions = std::env::var("ACME_DATABASE_URL")?.parse()?;
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
    Ok(options.username(&tenant_role(tenant)?))
}

/// A transaction (or a savepoint inside yours) that runs as the role of a tenant:
/// [`begin_as_tenant`]'s. Use it as a connection (`&mut *tx`), then [`commit`](Self::commit)
/// it; dropping it rolls it back. The role ends with it.
#[derive(Debug)]
pub struct TenantTransaction<'c> {
    tx: Transaction<'c, Postgres>,
    /// The role before. A role set with `SET LOCAL` inside a savepoint outlives the
    /// savepoint's release, so commit puts it back (whether this is a savepoint or a
    /// transaction of its own cannot be told from here; for the latter it is one statement of
    /// no effect).
    before: String,
}

impl TenantTransaction<'_> {
    /// Commits (releases the savepoint, with the caller's role put back).
    pub async fn commit(mut self) -> Result<()> {
        sqlx::query("SELECT set_config('role', $1, true)")
            .bind(&self.before)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls back (the savepoint, when nested; the role goes with it).
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl std::ops::Deref for TenantTransaction<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for TenantTransaction<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Begins a transaction (a savepoint inside yours) that runs as the role of `tenant`: pass
/// `&mut *tx` to agentpg-repo's functions (and run your own SQL on it), then
/// [`commit`](TenantTransaction::commit). One round trip besides `BEGIN`, and one before the
/// commit, which puts the role before back (a savepoint's `SET LOCAL` would otherwise outlive
/// it, in the caller's transaction).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty tenant; [`Error::Forbidden`] if the login was not granted
/// the tenant's role.
pub async fn begin_as_tenant<'c>(
    conn: impl Acquire<'c, Database = Postgres>,
    tenant: &str,
) -> Result<TenantTransaction<'c>> {
    let role = tenant_role(tenant)?;
    let mut tx = conn.begin().await?;
    let (before,): (String,) = sqlx::query_as(
        "WITH before AS MATERIALIZED (SELECT current_setting('role') AS role)
         SELECT before.role FROM before, LATERAL (SELECT set_config('role', $1, true)) AS now",
    )
    .bind(&role)
    .fetch_one(&mut *tx)
    .await?;
    Ok(TenantTransaction { tx, before })
}
