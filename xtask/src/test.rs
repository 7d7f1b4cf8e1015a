//! `cargo xtask test`: the workspace tests against `DATABASE_URL` when that server lets us in,
//! otherwise against a throwaway PostgreSQL started from the locally installed server binaries
//! in a temporary folder (and stopped afterwards), so that a machine with PostgreSQL installed
//! but no service, role or `pg_hba.conf` set up still runs the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The database the tests use when `DATABASE_URL` is not set (also in `.cargo/config.toml`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/postgres";

/// Runs `cargo test --workspace <args>` against a PostgreSQL that answers, then the
/// partitioned-layout proof (see `partitioned_layout`), then, with `--citus`, the whole
/// agentpg-repo suite on a Citus cluster of its own (see `citus_layout`). `--skip-partitioned`
/// leaves the partitioned proof out; `--partitioned-only` and `--citus-only` run only that one.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let flag = |name: &str| args.iter().any(|a| a == name);
    let citus_only = flag("--citus-only");
    let citus = flag("--citus") || citus_only;
    let partitioned_only = flag("--partitioned-only");
    let skip_partitioned = flag("--skip-partitioned") || citus_only;
    let args: Vec<String> = args
        .iter()
        .filter(|a| {
            !matches!(
                a.as_str(),
                "--skip-partitioned" | "--partitioned-only" | "--citus" | "--citus-only"
            )
        })
        .cloned()
        .collect();
    let (mut passed, mut failed, mut ok) = (0, 0, true);
    if !partitioned_only && !citus_only {
        let database = Database::find_or_start()?;
        // Every feature: agentpg-repo's optional estimator is tested with the rest.
        let mut test_args = vec![
            "--workspace".to_string(),
            "--all-features".to_string(),
            "--no-fail-fast".to_string(),
        ];
        test_args.extend(args.iter().cloned());
        let (p, f, o) = cargo_test(&crate::workspace_root(), &test_args, &database, None, &[])?;
        println!("tests: {p} passed, {f} failed");
        (passed, failed, ok) = (passed + p, failed + f, ok && o);
    }
    if !skip_partitioned {
        let (p, f, o) = partitioned_layout(&args)?;
        println!("partitioned layout: {p} passed, {f} failed");
        (passed, failed, ok) = (passed + p, failed + f, ok && o);
    }
    if citus && !partitioned_only {
        let (p, f, o) = citus_layout(&args)?;
        println!("citus cluster: {p} passed, {f} failed");
        (passed, failed, ok) = (passed + p, failed + f, ok && o);
    }
    println!("all tests: {passed} passed, {failed} failed");
    Ok(if ok && failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The Citus proof: a throwaway cluster (a coordinator and two workers), whose `template1`
/// gets the migrations and the distribution SQL of SCALING.md on every node (the step is
/// `tests/tests/citus_layout.rs`), then the whole agentpg-repo suite there: every
/// `#[sqlx::test]` database is created on the coordinator, and Citus creates it on the workers.
fn citus_layout(args: &[String]) -> Result<(u64, u64, bool)> {
    println!("xtask: citus: a throwaway Citus cluster, the tables distributed as SCALING.md says");
    let cluster = crate::citus::Cluster::start(2)?;
    // The routing test counts the two-phase commits each operation leaves in
    // `pg_dist_transaction`; Citus's periodic recovery would delete them under it.
    cluster.set_on_coordinator("citus.recover_2pc_interval", "-1")?;
    let database = Database {
        url: cluster.url(crate::citus::DATABASE),
        server: None,
    };
    let root = crate::workspace_root();
    let template = format!(
        "postgres://postgres@127.0.0.1:{}/template1",
        cluster.coordinator.port
    );
    let workers = cluster.worker_list();
    let build = [
        "-p",
        "agentpg-tests",
        "--test",
        "citus_layout",
        "--",
        "--ignored",
        "--exact",
        "build_citus_template",
    ]
    .map(String::from);
    let (p, f, ok) = cargo_test(
        &root,
        &build,
        &database,
        None,
        &[
            ("AGENTPG_CITUS_TEMPLATE", template.as_str()),
            ("AGENTPG_CITUS_WORKERS", workers.as_str()),
        ],
    )?;
    if !ok || p != 1 {
        bail!("building the Citus template failed");
    }
    let mut suite = vec![
        "-p".to_string(),
        "agentpg-repo".to_string(),
        "--no-fail-fast".to_string(),
    ];
    suite.extend(args.iter().cloned());
    let (sp, sf, sok) = cargo_test(&root, &suite, &database, None, &[("AGENTPG_CITUS", "1")])?;
    Ok((p + sp, f + sf, ok && sok))
}

/// The partitioned-layout proof: on a throwaway server, `template1` gets the migrations with
/// every table `PARTITION BY HASH (tenant_id)` (four partitions; the transformation is
/// `tests/tests/partitioned_layout.rs`, the migrations stay as they are), and the whole
/// agentpg-repo suite runs there, each test in a database created from that template.
fn partitioned_layout(args: &[String]) -> Result<(u64, u64, bool)> {
    println!("xtask: partitioned layout: a throwaway PostgreSQL whose template1 holds every table hash-partitioned by tenant_id");
    let server = Throwaway::start().context(
        "the partitioned-layout proof needs the PostgreSQL server binaries (initdb, pg_ctl); \
         pass --skip-partitioned to leave it out",
    )?;
    let template = match server.url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/template1"),
        None => bail!("unexpected server URL {}", server.url),
    };
    let database = Database {
        url: server.url.clone(),
        server: Some(server),
    };
    let root = crate::workspace_root();
    let build = [
        "-p",
        "agentpg-tests",
        "--test",
        "partitioned_layout",
        "--",
        "--ignored",
        "--exact",
        "build_partitioned_template",
    ]
    .map(String::from);
    let (p, f, ok) = cargo_test(
        &root,
        &build,
        &database,
        None,
        &[("AGENTPG_PARTITIONED_TEMPLATE", template.as_str())],
    )?;
    if !ok || p != 1 {
        bail!("building the partitioned template failed");
    }
    let mut suite = vec![
        "-p".to_string(),
        "agentpg-repo".to_string(),
        "--no-fail-fast".to_string(),
    ];
    suite.extend(args.iter().cloned());
    let (sp, sf, sok) = cargo_test(&root, &suite, &database, None, &[])?;
    Ok((p + sp, f + sf, ok && sok))
}

/// The PostgreSQL the tests run against: `DATABASE_URL` when it lets its user in, else a
/// throwaway server (stopped and removed on drop).
pub struct Database {
    pub(crate) url: String,
    pub(crate) server: Option<Throwaway>,
}

impl Database {
    /// `DATABASE_URL` if usable, else a throwaway server from the local binaries.
    pub fn find_or_start() -> Result<Self> {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
        match probe(&url) {
            Ok(()) => {
                println!("xtask: using DATABASE_URL ({})", redact(&url));
                Ok(Database { url, server: None })
            }
            Err(why) => {
                println!(
                    "xtask: DATABASE_URL ({}) is not usable: {why:#}",
                    redact(&url)
                );
                println!("xtask: starting a throwaway PostgreSQL from the local server binaries");
                let server = Throwaway::start()?;
                println!(
                    "xtask: throwaway PostgreSQL {} at {} (data in {})",
                    server.version,
                    server.url,
                    server.dir.display()
                );
                Ok(Database {
                    url: server.url.clone(),
                    server: Some(server),
                })
            }
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Runs `cargo test <args>` in `dir` against `database` (with `target_dir` as its target
/// directory, if given), echoing the output; returns the passed and failed counts summed over
/// every test binary and doc-test run, and whether cargo succeeded.
pub fn cargo_test(
    dir: &Path,
    args: &[String],
    database: &Database,
    target_dir: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<(u64, u64, bool)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .arg("test")
        .args(args)
        .env("DATABASE_URL", &database.url)
        .envs(env.iter().copied())
        .stdout(Stdio::piped());
    if let Some(target_dir) = target_dir {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    if let Some(server) = &database.server {
        // The psql-based tests find the same version's client first.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![server.bindir.clone()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs)?);
    }
    let mut child = command.spawn().context("running cargo test")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        if let Some((p, f)) = test_result_counts(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((passed, failed, status.success()))
}

/// `(passed, failed)` from a libtest summary line (`test result: ok. 3 passed; 0 failed; …`).
fn test_result_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |label: &str| -> Option<u64> {
        let words: Vec<&str> = rest
            .split([' ', ';', '.'])
            .filter(|w| !w.is_empty())
            .collect();
        let at = words.iter().position(|w| *w == label)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    Some((count("passed")?, count("failed")?))
}

/// The parts of a `postgres://user:password@host:port/database` URL the probe needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    user: String,
    has_password: bool,
    host: String,
    port: u16,
    database: String,
}

fn parse_url(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("DATABASE_URL must start with postgres:// or postgresql://")?;
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, has_password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, password)) => (user.to_string(), !password.is_empty()),
            None => (u.to_string(), false),
        },
        None => (
            std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
            false,
        ),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => (
            h.to_string(),
            p.parse()
                .with_context(|| format!("port {p:?} in DATABASE_URL"))?,
        ),
        _ => (hostport.to_string(), 5432),
    };
    let host = match host.as_str() {
        "" => "localhost".to_string(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    let database = if database.is_empty() {
        user.clone()
    } else {
        database.to_string()
    };
    Ok(Target {
        user,
        has_password,
        host,
        port,
        database,
    })
}

/// `url` without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Ok if a PostgreSQL at `url` accepts a connection from its user to its database: the server
/// answers the startup message with "authenticated" (trust), or asks for a password that the
/// URL carries. Speaks just enough of the wire protocol to find out; nothing is queried.
fn probe(url: &str) -> Result<()> {
    let target = parse_url(url)?;
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} has no address", target.host))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("nothing answers at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    for (key, value) in [("user", &target.user), ("database", &target.database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message)?;
    // Read until the server is ready for a query or refuses us: with trust authentication
    // "authenticated" comes first and a missing role or database is reported after it.
    let result = loop {
        let (kind, payload) = read_message(&mut stream)?;
        match kind {
            b'R' if payload.len() >= 4 => {
                let code = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                match code {
                    0 => continue,
                    _ if target.has_password => break Ok(()),
                    _ => {
                        break Err(anyhow::anyhow!(
                            "the server wants a password for {} and DATABASE_URL has none",
                            target.user
                        ))
                    }
                }
            }
            b'Z' => break Ok(()),
            b'E' => {
                let message = payload
                    .split(|b| *b == 0)
                    .filter(|f| f.first() == Some(&b'M'))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                    .next()
                    .unwrap_or_default();
                break Err(anyhow::anyhow!(
                    "the server refused the connection: {message}"
                ));
            }
            // Parameter status, backend key data, notices.
            b'S' | b'K' | b'N' => continue,
            other => {
                break Err(anyhow::anyhow!(
                    "unexpected answer {:?} from {addr}",
                    other as char
                ))
            }
        }
    };
    // Terminate, politely.
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
    result
}

/// One backend message: its type byte and body.
fn read_message(stream: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut kind = [0u8; 1];
    stream
        .read_exact(&mut kind)
        .context("the server closed the connection without answering")?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len).clamp(4, 1 << 20) as usize - 4;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((kind[0], payload))
}

/// A PostgreSQL server in a temporary folder, stopped and removed on drop.
pub struct Throwaway {
    /// Its folder (data, socket, log).
    pub dir: PathBuf,
    data: PathBuf,
    bindir: PathBuf,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    version: String,
    /// The account the server runs as when we are root (initdb and postgres refuse root).
    run_as: Option<String>,
    /// Extra `postgres` options (`-c name=value …`) it was started with.
    extra: String,
}

impl Throwaway {
    fn start() -> Result<Self> {
        Self::start_with("")
    }

    /// A throwaway server started with extra `postgres` options (`-c name=value …`).
    pub fn start_with(extra: &str) -> Result<Self> {
        let bindir = server_bindir()?;
        let version = Command::new(bindir.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("agentpg-test-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let run_as = if is_root() {
            let (user, uid, gid) = unprivileged_account()?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to {user}", dir.display()))?;
            Some(user)
        } else {
            None
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = Throwaway {
            data: dir.join("data"),
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            dir,
            bindir,
            version,
            run_as,
            extra: extra.to_string(),
        };
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                server.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    /// The `postgres` options every start uses.
    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off {}",
            self.port,
            self.dir.display(),
            self.extra
        )
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn pg_ctl_start(&self) -> Result<()> {
        let options = self.options();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                self.dir.join("server.log").as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        )
    }

    /// The shell command that runs `pg_ctl <action>` on this server (as its account), for a
    /// program that must stop or start it on its own (the soak's fault injection).
    pub fn pg_ctl_command(&self, action: &str) -> String {
        let pg_ctl = self.bindir.join("pg_ctl");
        let base = match action {
            "start" => format!(
                "{} -D {} -l {} -o '{}' -w -t 60 start",
                pg_ctl.display(),
                self.data.display(),
                self.dir.join("server.log").display(),
                self.options()
            ),
            other => format!(
                "{} -D {} -m fast -w -t 60 {other}",
                pg_ctl.display(),
                self.data.display()
            ),
        };
        match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {base}"),
            None => base,
        }
    }

    /// The folder of the server binaries (`psql` is there too).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Runs a server binary (as the unprivileged account when we are root); fails with its output.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        let binary = self.bindir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        match stopped {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&self.dir);
                println!("xtask: throwaway PostgreSQL stopped and removed");
            }
            Err(e) => eprintln!(
                "xtask: could not stop the throwaway PostgreSQL in {}: {e:#}",
                self.dir.display()
            ),
        }
    }
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`: `PG_BINDIR` if set, else what
/// `pg_config --bindir` says, else the newest of the usual install locations, else `initdb` on
/// `PATH`.
fn server_bindir() -> Result<PathBuf> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!(
            "PG_BINDIR ({}) holds no initdb, pg_ctl and postgres",
            dir.display()
        );
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [
        ("/usr/lib/postgresql", ""),
        ("/usr", "pgsql-"),
        ("/opt/homebrew/opt", "postgresql@"),
        ("/usr/local/opt", "postgresql@"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix(prefix) else {
                continue;
            };
            let major = version.split('.').next().and_then(|v| v.parse().ok());
            let dir = entry.path().join("bin");
            if let (Some(major), true) = (major, has_server(&dir)) {
                candidates.push((major, dir));
            }
        }
    }
    if let Some((_, dir)) = candidates.into_iter().max() {
        return Ok(dir);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_server(&dir) {
            return Ok(dir);
        }
        // Debian links only some binaries onto PATH; follow initdb to its real folder.
        if let Ok(real) = std::fs::canonicalize(dir.join("initdb")) {
            if let Some(real_dir) = real.parent().filter(|d| has_server(d)) {
                return Ok(real_dir.to_path_buf());
            }
        }
    }
    bail!(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres), and DATABASE_URL is not \
         usable. Install the server, then rerun `cargo xtask test`:\n  \
         Debian/Ubuntu: apt-get install postgresql\n  \
         Fedora/RHEL:   dnf install postgresql-server\n  \
         macOS:         brew install postgresql@17\n\
         or point PG_BINDIR at the folder holding initdb, or DATABASE_URL at a server you can use"
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// An account to run the server as when we are root: `postgres` (which the server packages
/// create), from `/etc/passwd`.
fn unprivileged_account() -> Result<(String, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            let uid = fields[2].parse().context("postgres's uid")?;
            let gid = fields[3].parse().context("postgres's gid")?;
            return Ok(("postgres".into(), uid, gid));
        }
    }
    bail!(
        "running as root, and PostgreSQL's server refuses to run as root; create a `postgres` \
         account (the server packages do) or run `cargo xtask test` as another user"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("postgres://postgres@localhost:5432/postgres").unwrap(),
            Target {
                user: "postgres".into(),
                has_password: false,
                host: "localhost".into(),
                port: 5432,
                database: "postgres".into(),
            }
        );
        let t = parse_url("postgresql://app:s3cret@db.internal/agents?sslmode=disable").unwrap();
        assert_eq!(
            (
                t.user.as_str(),
                t.has_password,
                t.host.as_str(),
                t.port,
                t.database.as_str()
            ),
            ("app", true, "db.internal", 5432, "agents")
        );
        let t = parse_url("postgres://u@[::1]:6543").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str()),
            ("::1", 6543, "u")
        );
        assert!(parse_url("mysql://x").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://a:b@h/d"), "postgres://a:***@h/d");
        assert_eq!(redact("postgres://a@h/d"), "postgres://a@h/d");
    }

    #[test]
    fn sums_test_results() {
        assert_eq!(
            test_result_counts(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.28s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            test_result_counts("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(test_result_counts("running 3 tests"), None);
    }

    #[test]
    fn a_closed_port_is_not_usable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).unwrap_err();
        assert!(format!("{err:#}").contains("nothing answers"), "{err:#}");
    }
}
