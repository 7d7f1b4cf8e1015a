//! `cargo xtask codegen`: migrations → schema model → Rust (and the goose-format copy).

pub mod config;
pub mod emit;
pub mod goose;
pub mod lint;
pub mod migrations;
pub mod model;
pub mod parse;
pub mod replay;

use std::path::Path;

use anyhow::{Context, Result};

use crate::files::{Files, Mode, Report};
use config::{Target, TARGETS};
pub use migrations::{read_migrations, Migration, Pair};
use model::Schema;
use replay::SourceFile;

/// Replays the up files of `migrations` into a schema.
pub fn schema_of(migrations: &[Migration]) -> Result<Schema> {
    let files: Vec<SourceFile> = migrations
        .iter()
        .map(|m| SourceFile {
            display: m.pair.up.1.clone(),
            sql: m.pair.up.0.clone(),
        })
        .collect();
    Ok(replay::replay(&files)?)
}

/// The schema model of `target`'s migrations under `root`.
pub fn target_schema(root: &Path, target: &Target) -> Result<Schema> {
    schema_of(&read_migrations(
        &root.join(target.migrations),
        target.migrations,
    )?)
}

/// Runs every target under the workspace `root` in `mode`.
pub fn run(root: &Path, mode: Mode) -> Result<Report> {
    let mut files = Files::new(mode);
    for target in TARGETS {
        run_target(root, target, &mut files)?;
    }
    Ok(files.finish())
}

fn run_target(root: &Path, target: &Target, files: &mut Files) -> Result<()> {
    let migrations = read_migrations(&root.join(target.migrations), target.migrations)?;
    let schema = schema_of(&migrations)?;
    if let Some(column) = target.distribution_column {
        let errors = lint::distribution(&schema, column);
        if !errors.is_empty() {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "{} breaks the distribution-column rule ({column} in every table and key):\n{}",
                target.migrations,
                all.join("\n")
            );
        }
    }
    let generated = emit::generate(&schema, &target.declarations, target.migrations)
        .with_context(|| format!("generating Rust for {}", target.migrations))?;
    files.ensure_dir_contents(&root.join(target.out_dir), &generated)?;
    if let Some(goose_dir) = target.goose_dir {
        let goose_files = migrations
            .iter()
            .map(|m| goose::goose_file(&m.pair, target.migrations))
            .collect::<Result<Vec<_>, _>>()?;
        files.ensure_dir_contents(&root.join(goose_dir), &goose_files)?;
    }
    if let Some(copy_dir) = target.embedded_copy {
        // Byte for byte: sqlx records a checksum of each file, and a database migrated from
        // either folder must accept the other.
        let copies: Vec<(String, String)> = migrations
            .iter()
            .flat_map(|m| {
                [
                    (format!("{}.up.sql", m.pair.stem), m.pair.up.0.clone()),
                    (format!("{}.down.sql", m.pair.stem), m.pair.down.0.clone()),
                ]
            })
            .collect();
        files.ensure_dir_contents(&root.join(copy_dir), &copies)?;
    }
    Ok(())
}
