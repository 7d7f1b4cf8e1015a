//! Schema lints a target opts into.
//!
//! **Distribution column.** A schema sharded by a column (Citus distributes multi-tenant tables
//! by tenant; PostgreSQL's native partitioning imposes the same rule) needs that column in every
//! table and in every key: each primary key and unique constraint must include it, and each
//! foreign key must carry it to the referenced table's own distribution column, so that a row
//! and every row it points at live on the same shard.

use crate::codegen::model::{ForeignKey, Schema, Table};
use crate::codegen::parse::LocatedError;

/// Every violation of the distribution-column rule in `schema`, in declared order: a table
/// without `column`, a primary key or unique constraint that does not include it, a foreign key
/// that does not map it onto the referenced table's `column`. Each error is located where the
/// table or constraint was declared and names it.
pub fn distribution(schema: &Schema, column: &str) -> Vec<LocatedError> {
    let mut errors = Vec::new();
    for table in &schema.tables {
        if table.column(column).is_none() {
            errors.push(table.origin.error(format!(
                "table {} has no distribution column {column}: every table of this schema must carry it",
                table.name
            )));
            continue;
        }
        for (kind, key) in table
            .primary_key
            .iter()
            .map(|k| ("primary key", k))
            .chain(table.unique.iter().map(|k| ("unique constraint", k)))
        {
            if !key.columns.iter().any(|c| c == column) {
                errors.push(key.origin.error(format!(
                    "{kind} {} of table {} ({}) does not include the distribution column {column}",
                    key.name,
                    table.name,
                    key.columns.join(", ")
                )));
            }
        }
        for fk in &table.foreign_keys {
            if let Some(problem) = foreign_key_problem(schema, table, fk, column) {
                errors.push(fk.origin.error(format!(
                    "foreign key {} of table {} ({}) -> {}: {problem}",
                    fk.name,
                    table.name,
                    fk.columns.join(", "),
                    fk.foreign_table
                )));
            }
        }
    }
    errors
}

/// Why `fk` does not keep a row beside the row it references, if it does not.
fn foreign_key_problem(
    schema: &Schema,
    table: &Table,
    fk: &ForeignKey,
    column: &str,
) -> Option<String> {
    let Some(at) = fk.columns.iter().position(|c| c == column) else {
        return Some(format!("does not include the distribution column {column}"));
    };
    let target = schema.table(&fk.foreign_table)?;
    let referred: &[String] = if fk.referred_columns.is_empty() {
        target.primary_key_columns()
    } else {
        &fk.referred_columns
    };
    match referred.get(at) {
        Some(c) if c == column => None,
        Some(c) => Some(format!(
            "maps {column} of {} onto {}.{c}, not onto {}.{column}",
            table.name, target.name, target.name
        )),
        None => Some(format!("references no {column} of {}", target.name)),
    }
}
