//! `cargo xtask codegen`: migrations → schema model → Rust (and the goose-format copy).

pub mod config;
pub mod emit;
pub mod goose;
pub mod model;
pub mod parse;
pub mod replay;

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::files::{Files, Mode, Report};
use config::{Target, TARGETS};
use goose::Pair;
use model::Schema;
use replay::SourceFile;

/// One version's files in a migrations folder.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Numeric version.
    pub version: u64,
    /// The up and down SQL.
    pub pair: Pair,
}

/// Reads the `NNN_name.up.sql` / `NNN_name.down.sql` pairs of `dir` (relative display name
/// `display`), in numeric version order (10 after 9).
pub fn read_migrations(dir: &Path, display: &str) -> Result<Vec<Migration>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry
            .file_type()
            .with_context(|| format!("reading {}", entry.path().display()))?
            .is_file()
        {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    let mut migrations: Vec<Migration> = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(".up.sql")) {
        let stem = &name[..name.len() - ".up.sql".len()];
        let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !stem[digits.len()..].starts_with('_') {
            bail!("{display}/{name}: a migration file name must be NNN_name.up.sql");
        }
        let version: u64 = digits
            .parse()
            .with_context(|| format!("{display}/{name}: version {digits} is too large"))?;
        if let Some(other) = migrations.iter().find(|m| m.version == version) {
            bail!(
                "{display}/{name}: version {version} is also used by {display}/{}.up.sql",
                other.pair.stem
            );
        }
        let down_name = format!("{stem}.down.sql");
        if !names.contains(&down_name) {
            bail!("{display}/{name}: has no {down_name}");
        }
        let read = |file: &str| -> Result<(String, String)> {
            let path = dir.join(file);
            let sql = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((sql, format!("{display}/{file}")))
        };
        migrations.push(Migration {
            version,
            pair: Pair {
                stem: stem.to_string(),
                up: read(name)?,
                down: read(&down_name)?,
            },
        });
    }
    for name in names.iter().filter(|n| n.ends_with(".down.sql")) {
        let up = format!("{}.up.sql", &name[..name.len() - ".down.sql".len()]);
        if !names.contains(&up) {
            bail!("{display}/{name}: has no {up}");
        }
    }
    migrations.sort_by_key(|m| m.version);
    Ok(migrations)
}

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
    let generated = emit::generate(&schema, target.json_types, target.migrations)
        .with_context(|| format!("generating Rust for {}", target.migrations))?;
    files.ensure_dir_contents(&root.join(target.out_dir), &generated)?;
    if let Some(goose_dir) = target.goose_dir {
        let goose_files = migrations
            .iter()
            .map(|m| goose::goose_file(&m.pair, target.migrations))
            .collect::<Result<Vec<_>, _>>()?;
        files.ensure_dir_contents(&root.join(goose_dir), &goose_files)?;
    }
    Ok(())
}
