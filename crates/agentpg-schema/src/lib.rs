//! Typed Rust for the agentpg schema, generated from the migrations by `cargo xtask codegen`.
