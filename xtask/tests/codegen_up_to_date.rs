//! `cargo test` alone catches generated code that has drifted from the migrations.

use xtask::files::Mode;

#[test]
fn generated_files_match_the_migrations() {
    let root = xtask::workspace_root();
    let report = xtask::codegen::run(&root, Mode::Check).expect("codegen runs");
    assert!(report.is_clean(), "{}", report.render(Mode::Check, &root));
}
