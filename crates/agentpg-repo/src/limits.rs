//! The longest texts agentpg-repo accepts, in bytes (UTF-8), for the texts that go into an
//! index or a key. PostgreSQL refuses a B-tree entry over 2,704 bytes (a third of a page),
//! whatever the column's type allows, and an incompressible value of that size fails an insert
//! with a program-limit error; these limits keep every indexed tuple well under it (the widest,
//! tenant plus identifier, is 1,279 bytes), and are checked before any SQL with an
//! [`Error::InvalidInput`](crate::Error::InvalidInput) naming the field and the limit.

/// `tenant_id`: leads every key and index.
pub const TENANT: usize = 255;
/// A session's `identifier` (unique per tenant, indexed for prefix search).
pub const IDENTIFIER: usize = 1024;
/// A compaction's `strategy` (indexed for reporting).
pub const STRATEGY: usize = 255;
/// A compaction's `model_used`.
pub const MODEL: usize = 255;
/// A tool-use id, in a `tool_use` block or the `tool_result` that answers it.
pub const TOOL_ID: usize = 255;
