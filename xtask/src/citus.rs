//! A throwaway Citus cluster on this machine: a coordinator and workers, each a throwaway
//! PostgreSQL of [`crate::test`] started with the Citus library, in temporary folders on free
//! ports, stopped and removed on drop. Citus itself comes from the source tarball and
//! `install.sh` beside it (the test dependency in `../shared/citus`), installed into the local
//! PostgreSQL when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::test::Throwaway;

/// The database every node gets at start, holding the extension and the worker registrations
/// (each database is a Citus cluster of its own).
pub const DATABASE: &str = "agentpg";

/// What every node runs with: the Citus library; enough background workers for one Citus
/// maintenance daemon per database (each `#[sqlx::test]` database is one); logical decoding,
/// which moving shards while they are written (rebalancing) needs; room for connections.
///
/// Why so many connections: `#[sqlx::test]` drops a passing test's database, but on Citus the
/// drop fails while other nodes' maintenance daemons are connected to it, so the suite's
/// databases stay until the cluster goes, each with a couple of connections from every other
/// node. At 121 tests the nodes passed 200 connections ("too many clients" on a worker).
const NODE_OPTIONS: &str = "-c shared_preload_libraries=citus -c max_worker_processes=256 \
    -c max_connections=800 -c wal_level=logical -c max_replication_slots=32 \
    -c max_wal_senders=32";

/// A coordinator and its workers.
pub struct Cluster {
    /// The coordinator (clients connect here).
    pub coordinator: Throwaway,
    /// The workers, in the order they were added.
    pub workers: Vec<Throwaway>,
}

impl Cluster {
    /// Installs Citus if needed, starts a coordinator and `workers` workers, creates
    /// [`DATABASE`] with the extension on every node and registers the workers.
    pub fn start(workers: usize) -> Result<Self> {
        ensure_installed()?;
        let coordinator = node().context("starting the Citus coordinator")?;
        let mut cluster = Cluster {
            coordinator,
            workers: Vec::new(),
        };
        cluster.prepare(&cluster.coordinator.url.clone())?;
        cluster.sql(
            &cluster.coordinator.url.clone(),
            DATABASE,
            &format!(
                "SELECT citus_set_coordinator_host('127.0.0.1', {})",
                cluster.coordinator.port
            ),
        )?;
        for _ in 0..workers {
            cluster.add_worker()?;
        }
        println!(
            "xtask: Citus cluster: coordinator 127.0.0.1:{}, workers {}",
            cluster.coordinator.port,
            cluster
                .workers
                .iter()
                .map(|w| format!("127.0.0.1:{}", w.port))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(cluster)
    }

    /// Starts one more node, prepares it and registers it as a worker of [`DATABASE`].
    pub fn add_worker(&mut self) -> Result<&Throwaway> {
        let worker = self.start_node()?;
        self.sql(
            &self.coordinator.url.clone(),
            DATABASE,
            &format!("SELECT citus_add_node('127.0.0.1', {})", worker.port),
        )?;
        self.workers.push(worker);
        Ok(self.workers.last().expect("just added"))
    }

    /// Starts a node with [`DATABASE`] and the extension, not registered anywhere.
    pub fn start_node(&self) -> Result<Throwaway> {
        let worker = node().context("starting a Citus worker")?;
        self.prepare(&worker.url)?;
        Ok(worker)
    }

    /// The coordinator's URL for `database`, with the options the test databases need: Citus
    /// creates (and drops) a database created on the coordinator on every worker too.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?options=-c%20citus.enable_create_database_propagation%3Don",
            self.coordinator.port
        )
    }

    /// Sets `name` to `value` on the coordinator (`ALTER SYSTEM`, then a reload).
    pub fn set_on_coordinator(&self, name: &str, value: &str) -> Result<()> {
        let url = self.coordinator.url.clone();
        self.sql(
            &url,
            "postgres",
            &format!("ALTER SYSTEM SET {name} = '{value}'"),
        )?;
        self.sql(&url, "postgres", "SELECT pg_reload_conf()")
    }

    /// `host:port` of every worker, comma-separated.
    pub fn worker_list(&self) -> String {
        self.workers
            .iter()
            .map(|w| format!("127.0.0.1:{}", w.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`DATABASE`] with the extension on the node at `url`.
    fn prepare(&self, url: &str) -> Result<()> {
        self.sql(url, "postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        self.sql(url, DATABASE, "CREATE EXTENSION citus")
    }

    /// Runs `sql` with psql on `database` of the server at `url` (its base, up to the database).
    fn sql(&self, url: &str, database: &str, sql: &str) -> Result<()> {
        let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
        let psql = self.coordinator.bindir().join("psql");
        let output = Command::new(&psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("{base}/{database}"))
            .args(["-c", sql])
            .output()
            .with_context(|| format!("running {}", psql.display()))?;
        if !output.status.success() {
            bail!(
                "psql -c {sql:?} on {base}/{database} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// One node: a throwaway server with the Citus library loaded.
fn node() -> Result<Throwaway> {
    Throwaway::start_with(NODE_OPTIONS)
}

/// Installs Citus into the local PostgreSQL unless the server already has it, with the
/// `install.sh` of the Citus test dependency (found next to the checkout, see `install_script`).
pub fn ensure_installed() -> Result<()> {
    if installed()? {
        return Ok(());
    }
    let script = install_script()?;
    println!(
        "xtask: Citus is not installed in the local PostgreSQL; running {} (a few minutes)",
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !installed()? {
        bail!("{} did not install Citus ({status})", script.display());
    }
    Ok(())
}

/// True if the server's library folder holds `citus.so` and its control file.
fn installed() -> Result<bool> {
    let config = |arg: &str| -> Result<PathBuf> {
        let output = Command::new("pg_config")
            .arg(arg)
            .output()
            .context("running pg_config (install the PostgreSQL server development files)")?;
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ))
    };
    Ok(config("--pkglibdir")?.join("citus.so").is_file()
        && config("--sharedir")?
            .join("extension/citus.control")
            .is_file())
}

/// The Citus installer: `$AGENTPG_CITUS_DIR/install.sh`, else `shared/citus/install.sh` in a
/// folder above the workspace (where the project's machines keep it), else
/// `/work/shared/citus/install.sh`.
fn install_script() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AGENTPG_CITUS_DIR") {
        let script = Path::new(&dir).join("install.sh");
        if script.is_file() {
            return Ok(script);
        }
        bail!(
            "AGENTPG_CITUS_DIR ({}) holds no install.sh",
            script.display()
        );
    }
    let root = crate::workspace_root();
    let candidates = root
        .ancestors()
        .map(|a| a.join("shared/citus/install.sh"))
        .chain(std::iter::once(PathBuf::from(
            "/work/shared/citus/install.sh",
        )));
    for script in candidates {
        if script.is_file() {
            return Ok(script);
        }
    }
    bail!(
        "Citus is not installed in the local PostgreSQL and no installer was found: set \
         AGENTPG_CITUS_DIR to the folder holding Citus's install.sh and source tarball"
    )
}
