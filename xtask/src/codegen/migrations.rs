//! Reading a migrations folder: the `NNN_name.up.sql` / `NNN_name.down.sql` pairs, in numeric
//! version order.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One migration version read from disk.
#[derive(Debug, Clone)]
pub struct Pair {
    /// File name stem shared by both files, e.g. `001_create_sessions`.
    pub stem: String,
    /// Up SQL and its display path.
    pub up: (String, String),
    /// Down SQL and its display path.
    pub down: (String, String),
}

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
