//! Rust generated from the code generator's fixture migrations (`migrations/` beside this
//! crate), which use every construct the generator models. The workspace compiles it, and its
//! tests run the generated builders against PostgreSQL. Not part of agentpg's API.

#[rustfmt::skip]
pub mod generated;

pub use generated::*;

/// The declared type of `documents.attributes` (see `xtask/src/codegen/config.rs`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Attributes {
    /// Every attribute, as given.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
