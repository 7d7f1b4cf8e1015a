//! `codegen --check` on a copy of the workspace: editing a migration makes it fail naming the
//! generated files that went stale; missing and orphaned files are named too; nothing is written.

use std::path::{Path, PathBuf};

use xtask::codegen::config::TARGETS;
use xtask::files::Mode;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A scratch copy of everything the generator reads and writes.
fn scratch_workspace(name: &str) -> PathBuf {
    let root = xtask::workspace_root();
    let scratch = std::env::temp_dir().join(format!("agentpg-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    for target in TARGETS {
        copy_dir(
            &root.join(target.migrations),
            &scratch.join(target.migrations),
        );
        copy_dir(&root.join(target.out_dir), &scratch.join(target.out_dir));
        if let Some(copy) = target.embedded_copy {
            copy_dir(&root.join(copy), &scratch.join(copy));
        }
    }
    scratch
}

fn names(paths: &[PathBuf], root: &Path) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[test]
fn a_copy_of_the_workspace_checks_clean() {
    let scratch = scratch_workspace("clean");
    let report = xtask::codegen::run(&scratch, Mode::Check).unwrap();
    assert!(
        report.is_clean(),
        "{}",
        report.render(Mode::Check, &scratch)
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn editing_a_migration_makes_check_fail_naming_the_files() {
    let scratch = scratch_workspace("edit");
    let up = scratch.join("migrations/002_create_messages.up.sql");
    let sql = std::fs::read_to_string(&up).unwrap();
    std::fs::write(
        &up,
        format!("{sql}\nALTER TABLE messages ADD COLUMN model TEXT;\n"),
    )
    .unwrap();
    let before =
        std::fs::read_to_string(scratch.join("crates/agentpg-schema/src/generated/messages.rs"))
            .unwrap();

    let report = xtask::codegen::run(&scratch, Mode::Check).unwrap();
    let stale: Vec<PathBuf> = report.stale.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        names(&stale, &scratch),
        [
            "crates/agentpg-schema/src/generated/messages.rs",
            "migrations/goose/002_create_messages.sql",
            "crates/agentpg-repo/migrations/002_create_messages.up.sql",
        ]
    );
    assert!(
        report.stale[0]
            .1
            .contains("+     pub model: Option<String>,"),
        "{}",
        report.stale[0].1
    );
    let text = report.render(Mode::Check, &scratch);
    assert!(text.contains("run `cargo xtask codegen`"), "{text}");
    // Check mode wrote nothing.
    assert_eq!(
        std::fs::read_to_string(scratch.join("crates/agentpg-schema/src/generated/messages.rs"))
            .unwrap(),
        before
    );

    // Write mode fixes it; check is clean again.
    let written = xtask::codegen::run(&scratch, Mode::Write).unwrap();
    assert_eq!(written.stale.len(), 3);
    assert!(xtask::codegen::run(&scratch, Mode::Check)
        .unwrap()
        .is_clean());
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn missing_and_orphaned_files_are_named() {
    let scratch = scratch_workspace("orphans");
    let generated = scratch.join("crates/agentpg-schema/src/generated");
    std::fs::remove_file(generated.join("sessions.rs")).unwrap();
    std::fs::write(generated.join("old_table.rs"), "// left over\n").unwrap();
    std::fs::write(
        scratch.join("migrations/goose/009_gone.sql"),
        "-- +goose Up\n",
    )
    .unwrap();

    let report = xtask::codegen::run(&scratch, Mode::Check).unwrap();
    assert!(report.stale.is_empty());
    assert_eq!(
        names(&report.missing, &scratch),
        ["crates/agentpg-schema/src/generated/sessions.rs"]
    );
    assert_eq!(
        names(&report.orphaned, &scratch),
        [
            "crates/agentpg-schema/src/generated/old_table.rs",
            "migrations/goose/009_gone.sql"
        ]
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn broken_sql_fails_with_its_location() {
    let scratch = scratch_workspace("broken");
    std::fs::write(
        scratch.join("migrations/900_broken.up.sql"),
        "-- a broken migration\nALTER TABLE sessions\n  ADD COLUMN oops;\n",
    )
    .unwrap();
    std::fs::write(
        scratch.join("migrations/900_broken.down.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let err = xtask::codegen::run(&scratch, Mode::Check).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with("migrations/900_broken.up.sql:3:18: "),
        "{text}"
    );
    assert!(text.contains("| ALTER TABLE sessions"), "{text}");
    std::fs::remove_dir_all(&scratch).unwrap();
}

#[test]
fn the_embedded_copy_must_match_the_migrations_byte_for_byte() {
    let scratch = scratch_workspace("copy");
    let copy = scratch.join("crates/agentpg-repo/migrations/001_create_sessions.down.sql");
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes.push(b' ');
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::write(
        scratch.join("crates/agentpg-repo/migrations/099_stray.up.sql"),
        "SELECT 1;\n",
    )
    .unwrap();

    let report = xtask::codegen::run(&scratch, Mode::Check).unwrap();
    let stale: Vec<PathBuf> = report.stale.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(
        names(&stale, &scratch),
        ["crates/agentpg-repo/migrations/001_create_sessions.down.sql"]
    );
    assert_eq!(
        names(&report.orphaned, &scratch),
        ["crates/agentpg-repo/migrations/099_stray.up.sql"]
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
