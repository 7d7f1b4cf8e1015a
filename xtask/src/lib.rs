//! Project automation for agentpg: the code generator and the gate its writes go through, and
//! the test runner.

pub mod bench;
pub mod citus;
pub mod codegen;
pub mod drill;
pub mod files;
pub mod test;

use std::path::PathBuf;

/// The workspace root (the folder above `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask sits one level below the workspace root")
        .to_path_buf()
}
