//! What the generator runs on: each migrations folder, where its outputs go, and what the
//! migrations cannot say by themselves: the JSON columns that get a declared Rust type, the
//! tables appended to in batches under a parent row, and the tables whose rows are archived as
//! JSON and restored. This is the one place such declarations live; everything they name is
//! checked against the migrations when the generator runs.

/// One generator run: a migrations folder and its outputs.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Migrations folder, relative to the workspace root.
    pub migrations: &'static str,
    /// Folder of the generated Rust module, relative to the workspace root.
    pub out_dir: &'static str,
    /// What the generated code needs beyond the migrations.
    pub declarations: Declarations,
    /// Where the goose-format copy of the migrations goes, if anywhere.
    pub goose_dir: Option<&'static str>,
    /// Where a byte-for-byte copy of the migrations goes, if anywhere: the folder a crate's
    /// embedded migrator compiles in, inside that crate so that its package holds it.
    pub embedded_copy: Option<&'static str>,
    /// The column the schema is sharded by, if any: every table must have it, and every primary
    /// key, unique constraint and foreign key must include it (see
    /// [`lint::distribution`](crate::codegen::lint::distribution)).
    pub distribution_column: Option<&'static str>,
}

/// Declarations about a schema that its migrations do not carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Declarations {
    /// JSON columns with a declared Rust type.
    pub json_types: &'static [JsonType],
    /// Batch appends of child rows under a locked parent row.
    pub appends: &'static [Append],
    /// Tables whose rows are archived whole as JSON in another table, and restored from it.
    pub archives: &'static [Archive],
}

/// A JSON column whose values have a declared Rust type instead of `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonType {
    /// Table name.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// Rust path of the type, e.g. `crate::ContentBlocks`.
    pub rust_type: &'static str,
}

/// Rows of `table` appended in batches under one parent row, in one statement: lock the parent
/// (the row `foreign_key` points at), insert the rows from arrays in the given order (their
/// foreign-key columns taken from the parent), add up `total` and set `touched` on the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The child table.
    pub table: &'static str,
    /// The constraint name of the child's foreign key to the parent.
    pub foreign_key: &'static str,
    /// `(parent column, child column)`: the parent column grows by the sum of the child column
    /// over the appended rows.
    pub total: Option<(&'static str, &'static str)>,
    /// A parent column set to `now()` by every append.
    pub touched: Option<&'static str>,
    /// The child column that orders a parent's rows, an integer: an append numbers its rows
    /// after the parent's `last` value, in the given order (no sequence is drawn, so the
    /// statement calls no volatile function for it and the order is the parent's own).
    pub order_by: &'static str,
    /// The parent column holding the `order_by` value of the last row appended: every append
    /// sets it, numbers its rows after it, and may be made conditional on it (nothing appended
    /// since the caller looked).
    pub last: &'static str,
    /// Where rows of `table` go when they are archived: a retry of a row archived since it was
    /// appended finds it there, and nothing is appended again.
    pub archive: Option<AppendArchive>,
    /// Columns that other operations change after a row is appended: a retry of the append is
    /// not compared on them (a retry of a message that was preserved since is still a retry).
    pub changed_later: &'static [&'static str],
}

/// The archive a retried append looks in: a declared [`Archive`] of the appended table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendArchive {
    /// The archive table (an [`Archive::archive`] declared for the appended table).
    pub table: &'static str,
    /// The archive's column naming what archived a row (reported with the archived row).
    pub archived_by: &'static str,
}

/// Rows of `table` archived whole (`to_jsonb` of the row) in column `json_column` of `archive`,
/// and restored from there: each column of the table as it is now is read from its key in the
/// JSON, and takes its default (NULL where it has none) when the archived row predates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The table whose rows are archived.
    pub table: &'static str,
    /// The archive table.
    pub archive: &'static str,
    /// The archive's JSON column holding the whole row.
    pub json_column: &'static str,
    /// The archive's foreign key whose columns select the rows to read or restore together.
    pub by: &'static str,
    /// The table's column that orders restored rows.
    pub order_by: &'static str,
}

/// Typed JSONB columns of the agentpg schema. The types live in `agentpg-schema` beside the
/// generated code. (`message_archive.original_message` stays untyped on purpose: it holds rows
/// of whatever shape `messages` had when they were archived; read them as today's rows through
/// the archive statements.)
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
        table: "messages",
        column: "provider_usage",
        rust_type: "crate::Usage",
    },
    JsonType {
        table: "compaction_events",
        column: "summary_content",
        rust_type: "crate::ContentBlocks",
    },
];

/// Messages are appended under their session: the session row is locked (so concurrent batches
/// never interleave their positions), the messages are numbered after its `last_position`, its
/// `total_tokens` grows by the messages' `tokens`, its `updated_at` is set, and `last_position`
/// records the last position appended. A retried message that a compaction has archived since
/// is found in `message_archive`.
pub const AGENTPG_APPENDS: &[Append] = &[Append {
    table: "messages",
    foreign_key: "messages_session_fkey",
    total: Some(("total_tokens", "tokens")),
    touched: Some("updated_at"),
    order_by: "position",
    last: "last_position",
    archive: Some(AppendArchive {
        table: "message_archive",
        archived_by: "compaction_event_id",
    }),
    changed_later: &["is_preserved", "updated_at"],
}];

/// Compactions archive the messages they remove in `message_archive`, and a revert restores the
/// messages of one compaction event.
pub const AGENTPG_ARCHIVES: &[Archive] = &[Archive {
    table: "messages",
    archive: "message_archive",
    json_column: "original_message",
    by: "message_archive_compaction_event_fkey",
    order_by: "position",
}];

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
        declarations: Declarations {
            json_types: AGENTPG_JSON_TYPES,
            appends: AGENTPG_APPENDS,
            archives: AGENTPG_ARCHIVES,
        },
        goose_dir: Some("migrations/goose"),
        embedded_copy: Some("crates/agentpg-repo/migrations"),
        distribution_column: Some("tenant_id"),
    },
    Target {
        migrations: "tests/fixture-schema/migrations",
        out_dir: "tests/fixture-schema/src/generated",
        declarations: Declarations {
            json_types: FIXTURE_JSON_TYPES,
            appends: &[],
            archives: &[],
        },
        goose_dir: None,
        embedded_copy: None,
        distribution_column: None,
    },
];
