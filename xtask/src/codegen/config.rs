//! What the generator runs on: each migrations folder, where its Rust goes, and the JSONB
//! columns that get a declared Rust type. This is the one place such types are declared.

use super::emit::JsonType;

/// One generator run: a migrations folder and its outputs.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Migrations folder, relative to the workspace root.
    pub migrations: &'static str,
    /// Folder of the generated Rust module, relative to the workspace root.
    pub out_dir: &'static str,
    /// JSONB columns with a declared Rust type.
    pub json_types: &'static [JsonType],
    /// Where the goose-format copy of the migrations goes, if anywhere.
    pub goose_dir: Option<&'static str>,
    /// Where a byte-for-byte copy of the migrations goes, if anywhere: the folder a crate's
    /// embedded migrator compiles in, inside that crate so that its package holds it.
    pub embedded_copy: Option<&'static str>,
}

/// Typed JSONB columns of the agentpg schema. The types live in `agentpg-schema` beside the
/// generated code.
pub const AGENTPG_JSON_TYPES: &[JsonType] = &[
    JsonType {
        table: "messages",
        column: "content",
        rust_type: "crate::ContentBlocks",
    },
    JsonType {
        table: "messages",
        column: "usage",
        rust_type: "crate::Usage",
    },
    JsonType {
        table: "compaction_events",
        column: "summary_content",
        rust_type: "crate::ContentBlocks",
    },
    JsonType {
        table: "message_archive",
        column: "original_message",
        rust_type: "crate::Message",
    },
];

/// Typed JSONB columns of the fixture schema (tests/fixture-schema).
pub const FIXTURE_JSON_TYPES: &[JsonType] = &[JsonType {
    table: "documents",
    column: "attributes",
    rust_type: "crate::Attributes",
}];

/// Every generator run, in order.
pub const TARGETS: &[Target] = &[
    Target {
        migrations: "migrations",
        out_dir: "crates/agentpg-schema/src/generated",
        json_types: AGENTPG_JSON_TYPES,
        goose_dir: Some("migrations/goose"),
        embedded_copy: Some("crates/agentpg-repo/migrations"),
    },
    Target {
        migrations: "tests/fixture-schema/migrations",
        out_dir: "tests/fixture-schema/src/generated",
        json_types: FIXTURE_JSON_TYPES,
        goose_dir: None,
        embedded_copy: None,
    },
];
