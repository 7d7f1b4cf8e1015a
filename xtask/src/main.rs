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
    /// Run a benchmark and print its table.
    Bench {
        #[command(subcommand)]
        case: BenchCase,
    },
}

#[derive(Subcommand)]
enum BenchCase {
    /// Code generation on the real migrations and on 250, 500 and 1,000 synthetic ones.
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
            case: BenchCase::Codegen,
        } => match xtask::bench::codegen() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
