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
    /// Run the benchmarks and print their table (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        case: Option<BenchCase>,
        /// Fewer rounds and smaller sizes, for a quick look.
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Subcommand)]
enum BenchCase {
    /// Only code generation: the real migrations and 250, 500 and 1,000 synthetic ones.
    Codegen,
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
        Command::Bench { case: None, quick } => {
            // The database benchmarks live in their own crate so xtask stays light; they run
            // in a release build.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = std::process::Command::new(cargo);
            command.current_dir(xtask::workspace_root()).args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "agentpg-bench",
                "--",
            ]);
            if quick {
                command.arg("--quick");
            }
            match command.status() {
                Ok(status) if status.success() => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("error: the benchmark failed ({status})");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: running cargo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
