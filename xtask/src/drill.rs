//! `cargo xtask drill`: the promise that a migration flows through with zero hand edits, tried
//! as a user would. A copy of the workspace gets one more migration making routine additive
//! changes to `messages` and `sessions` (`xtask/drill/additive.up.sql`), `cargo xtask codegen`
//! runs there, and agentpg-repo's whole test suite runs there — plus `xtask/drill/drill_test.rs`,
//! which sets the new columns through the generated insert structs, compacts and reverts, and
//! reverts an archive written before the migration. Nothing else in the copy is touched.
//!
//! The copy lives in `target/drill/workspace` and builds into `target/drill/target`: its own
//! target directory, so the checkout's artifacts are never mixed with the copy's (cargo names
//! a workspace crate's artifacts by its workspace-relative path), and a second run reuses the
//! first one's dependencies.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::codegen::read_migrations;
use crate::files::Mode;
use crate::test::{cargo_test, Database};

const UP: &str = include_str!("../drill/additive.up.sql");
const DOWN: &str = include_str!("../drill/additive.down.sql");
const TEST: &str = include_str!("../drill/drill_test.rs");

/// Copies `from` into `to`, leaving out `target/` and `.git/`.
fn copy_workspace(from: &Path, to: &Path) -> Result<usize> {
    let mut files = 0;
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let (source, dest) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            files += copy_workspace(&source, &dest)?;
        } else {
            std::fs::copy(&source, &dest)
                .with_context(|| format!("copying {}", source.display()))?;
            files += 1;
        }
    }
    Ok(files)
}

/// Runs the drill; fails if codegen or any test fails in the copy.
pub fn run() -> Result<ExitCode> {
    let root = crate::workspace_root();
    let base = root.join("target/drill");
    let copy = base.join("workspace");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("clearing {}", copy.display()))?;
    }
    let files = copy_workspace(&root, &copy)?;
    println!(
        "drill: copied the workspace ({files} files) to {}",
        copy.display()
    );

    let migrations = read_migrations(&copy.join("migrations"), "migrations")?;
    let version = migrations.last().map_or(1, |m| m.version + 1);
    let stem = format!("{version:03}_drill_additive");
    for (suffix, sql) in [("up", UP), ("down", DOWN)] {
        let path = copy.join(format!("migrations/{stem}.{suffix}.sql"));
        std::fs::write(&path, sql).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("drill: added migrations/{stem}.{{up,down}}.sql:");
    for line in UP.lines().filter(|l| !l.starts_with("--")) {
        println!("         {line}");
    }

    let report = crate::codegen::run(&copy, Mode::Write)?;
    println!(
        "drill: cargo xtask codegen wrote {} files ({} changed, {} new)",
        report.stale.len() + report.missing.len(),
        report.stale.len(),
        report.missing.len()
    );
    let check = crate::codegen::run(&copy, Mode::Check)?;
    anyhow::ensure!(
        check.is_clean(),
        "codegen --check is not clean in the copy:\n{}",
        check.render(Mode::Check, &copy)
    );

    let test = copy.join("crates/agentpg-repo/tests/drill.rs");
    std::fs::write(&test, TEST).with_context(|| format!("writing {}", test.display()))?;
    println!("drill: added crates/agentpg-repo/tests/drill.rs (from xtask/drill/drill_test.rs); no other file edited");

    let database = Database::find_or_start()?;
    println!("drill: running agentpg-repo's whole test suite in the copy");
    let args = [
        "--no-fail-fast".to_string(),
        "-p".to_string(),
        "agentpg-repo".to_string(),
    ];
    let (passed, failed, ok) =
        cargo_test(&copy, &args, &database, Some(&base.join("target")), &[])?;
    let verdict = if ok && failed == 0 && passed > 0 {
        "passed"
    } else {
        "FAILED"
    };
    println!(
        "drill {verdict}: migration {stem} (3 columns on messages, 2 on sessions) with zero hand edits; agentpg-repo tests on the copy: {passed} passed, {failed} failed"
    );
    Ok(if verdict == "passed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
