//! Project automation for agentpg, run as `cargo xtask <command>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::files::Mode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "agentpg project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate agentpg-schema (and migrations/goose) from the migrations.
    Codegen {
        /// Write nothing; fail if any generated file is stale, missing or orphaned.
        #[arg(long)]
        check: bool,
    },
    /// Run every workspace test against DATABASE_URL, or against a throwaway PostgreSQL started
    /// from the local server binaries when that server is not usable; then the agentpg-repo
    /// suite on the partitioned layout and, with `--citus`, on a throwaway Citus cluster.
    Test {
        /// Passed on to `cargo test --workspace` (e.g. a test name filter, or `-- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Add a migration with routine additive changes to a copy of the workspace, regenerate
    /// there, and run agentpg-repo's whole test suite there (zero hand edits).
    Drill,
    /// Run the benchmarks and print their table (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        case: Option<BenchCase>,
        /// Fewer rounds and smaller sizes, for a quick look.
        #[arg(long)]
        quick: bool,
        /// Only agentpg through a throwaway Citus cluster against the DATABASE_URL server.
        #[arg(long)]
        citus: bool,
    },
    /// Soak and fault run against a loopback DATABASE_URL; checks every invariant at the end.
    Soak {
        /// How long to run, e.g. 60s or 5m.
        #[arg(long, default_value = "60s")]
        duration: String,
        /// Also restart the local PostgreSQL once, at half time (pg_ctlcluster).
        #[arg(long)]
        restart_server: bool,
        /// On a throwaway Citus cluster of its own (installed when missing): a worker stopped
        /// for a while, and a worker added and the shards rebalanced onto it, under the load.
        #[arg(long)]
        citus: bool,
    },
}

/// Runs a binary of the agentpg-bench crate in a release build with `args`.
fn run_bench_binary(binary: &str, args: &[String]) -> ExitCode {
    run_bench_binary_with(binary, args, &[])
}

/// [`run_bench_binary`] with extra environment variables.
fn run_bench_binary_with(binary: &str, args: &[String], env: &[(&str, &str)]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .envs(env.iter().copied())
        .current_dir(xtask::workspace_root())
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "agentpg-bench",
            "--bin",
            binary,
            "--",
        ])
        .args(args);
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("error: {binary} failed ({status})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: running cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Citus bench: a throwaway cluster of two workers against the DATABASE_URL server.
fn bench_on_citus(quick: bool) -> anyhow::Result<ExitCode> {
    let cluster = xtask::citus::Cluster::start(2)?;
    let mut args = vec![
        "--citus-coordinator".to_string(),
        cluster.url(xtask::citus::DATABASE),
        "--citus-workers".to_string(),
        cluster.worker_list(),
    ];
    if quick {
        args.push("--quick".into());
    }
    Ok(run_bench_binary("agentpg-bench", &args))
}

/// The soak on a throwaway Citus cluster: two workers, the first stopped for a while, and a
/// third node (started, not registered) that the soak adds and rebalances onto.
fn soak_on_citus(mut args: Vec<String>) -> anyhow::Result<ExitCode> {
    let cluster = xtask::citus::Cluster::start(2)?;
    let spare = cluster.start_node()?;
    let down = &cluster.workers[0];
    args.extend([
        "--citus-workers".to_string(),
        cluster.worker_list(),
        "--down-worker".to_string(),
        format!("127.0.0.1:{}", down.port),
        "--stop-worker".to_string(),
        down.pg_ctl_command("stop"),
        "--start-worker".to_string(),
        down.pg_ctl_command("start"),
        "--add-worker".to_string(),
        format!("127.0.0.1:{}", spare.port),
    ]);
    let url = cluster.url(xtask::citus::DATABASE);
    Ok(run_bench_binary_with(
        "agentpg-soak",
        &args,
        &[("DATABASE_URL", url.as_str())],
    ))
}

#[derive(Subcommand)]
enum BenchCase {
    /// Only code generation: the real migrations and 250, 500 and 1,000 synthetic ones.
    Codegen,
    /// Only following sessions (latency with 1, 10 and 100 followers, what they cost a
    /// writer), on a throwaway server: each follower keeps a connection of its own.
    Follow,
}

/// The follow bench on a throwaway server (room for 100 followers' connections).
fn bench_follow(quick: bool) -> anyhow::Result<ExitCode> {
    let server = xtask::test::Throwaway::start_with("-c max_connections=250")?;
    let mut args = vec!["--only-follow".to_string()];
    if quick {
        args.push("--quick".into());
    }
    Ok(run_bench_binary_with(
        "agentpg-bench",
        &args,
        &[("DATABASE_URL", server.url.as_str())],
    ))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Codegen { check } => {
            let mode = if check { Mode::Check } else { Mode::Write };
            let root = xtask::workspace_root();
            match xtask::codegen::run(&root, mode) {
                Ok(report) => {
                    print!("{}", report.render(mode, &root));
                    if mode == Mode::Check && !report.is_clean() {
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Drill => match xtask::drill::run() {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Test { args } => match xtask::test::run(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            case: Some(BenchCase::Codegen),
            ..
        } => match xtask::bench::codegen() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            case: Some(BenchCase::Follow),
            quick,
            ..
        } => match bench_follow(quick) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        // The database benchmark and the soak live in their own crate so xtask stays light;
        // they run in a release build. The generator's own figures follow, from this process.
        Command::Bench {
            case: None,
            quick,
            citus: true,
        } => match bench_on_citus(quick) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            case: None, quick, ..
        } => {
            let args: Vec<String> = quick.then(|| "--quick".to_string()).into_iter().collect();
            let code = run_bench_binary("agentpg-bench", &args);
            if code != ExitCode::SUCCESS {
                return code;
            }
            println!();
            match xtask::bench::codegen() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Soak {
            duration,
            restart_server,
            citus,
        } => {
            let mut args = vec!["--duration".to_string(), duration];
            if citus {
                return match soak_on_citus(args) {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                };
            }
            if restart_server {
                args.push("--restart-server".into());
            }
            run_bench_binary("agentpg-soak", &args)
        }
    }
}
