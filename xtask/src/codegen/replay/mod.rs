//! Replaying parsed migration statements into the [`Schema`] model. This file reads the files
//! and dispatches each statement (`Ctx::apply`); one file per family of statements applies
//! them.

mod alter;
mod comments;
mod constraints;
mod renames;
mod tables;
mod types;

use constraints::index_column;
use renames::{expr_mentions, first_column_in, rename_column};

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, AlterTypeAddValuePosition, AlterTypeOperation,
    ArrayElemTypeDef, ColumnDef, ColumnOption, CommentObject, DataType, Expr, GeneratedAs, Ident,
    ObjectName, ObjectType, RenameTableNameKind, Statement, TableConstraint, TimezoneInfo,
    UserDefinedTypeRepresentation, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use super::model::{
    Check, Column, EnumType, ForeignKey, Identity, InList, Key, Origin, Schema, SqlType, Table,
};
use super::parse::{split_statements, LocatedError, Pos, RawStatement};

/// One migration file to replay.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The file's path as shown in errors (relative to the workspace root).
    pub display: String,
    /// Its SQL.
    pub sql: String,
}

/// Replays `files` (already in version order) into a fresh schema.
pub fn replay(files: &[SourceFile]) -> std::result::Result<Schema, LocatedError> {
    let mut schema = Schema::default();
    for file in files {
        replay_file(&mut schema, &file.display, &file.sql)?;
    }
    Ok(schema)
}

/// Replays one file's statements into `schema`.
pub fn replay_file(
    schema: &mut Schema,
    file: &str,
    sql: &str,
) -> std::result::Result<(), LocatedError> {
    for raw in split_statements(file, sql)? {
        if raw.is_skipped() {
            continue;
        }
        let statement = raw.parse(file)?;
        let mut ctx = Ctx {
            file,
            raw: &raw,
            schema,
        };
        ctx.apply(&statement)?;
    }
    Ok(())
}

/// ALTER TABLE actions that cannot change a table's columns or constraints, skipped on purpose.
fn alter_table_op_is_skipped(op: &AlterTableOperation) -> bool {
    use AlterTableOperation as Op;
    matches!(
        op,
        Op::OwnerTo { .. }
            | Op::EnableRowLevelSecurity
            | Op::DisableRowLevelSecurity
            | Op::ForceRowLevelSecurity
            | Op::NoForceRowLevelSecurity
            | Op::EnableTrigger { .. }
            | Op::DisableTrigger { .. }
            | Op::EnableAlwaysTrigger { .. }
            | Op::EnableReplicaTrigger { .. }
            | Op::EnableRule { .. }
            | Op::DisableRule { .. }
            | Op::EnableAlwaysRule { .. }
            | Op::EnableReplicaRule { .. }
            | Op::ReplicaIdentity { .. }
            | Op::SetLogged
            | Op::SetUnlogged
            | Op::SetOptionsParens { .. }
    )
}

struct Ctx<'a> {
    file: &'a str,
    raw: &'a RawStatement,
    schema: &'a mut Schema,
}

type Result<T> = std::result::Result<T, LocatedError>;

/// The name PostgreSQL gives an unquoted identifier (folded to lower case) or a quoted one (as is).
fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

impl Ctx<'_> {
    fn err(&self, pos: Pos, message: impl std::fmt::Display) -> LocatedError {
        self.raw.error(self.file, pos, message)
    }

    /// Where `i` is, or the statement start when sqlparser did not record it.
    fn at(&self, i: &Ident) -> Pos {
        if i.span.start.line == 0 {
            self.raw.pos
        } else {
            i.span.start.into()
        }
    }

    fn start(&self) -> Pos {
        self.raw.pos
    }

    /// An origin at `pos` of this statement.
    fn origin(&self, pos: Pos) -> Origin {
        Origin {
            file: self.file.to_owned(),
            pos,
            statement: self.raw.text.clone(),
        }
    }

    /// Where a constraint is: its name when it has one, else its first column.
    fn constraint_pos(&self, name: Option<&Ident>, first: Option<&Ident>) -> Pos {
        name.or(first).map_or(self.start(), |i| self.at(i))
    }

    /// An object name in the `public` schema: `name` or `public.name`.
    fn object_name(&self, name: &ObjectName) -> Result<(String, Pos)> {
        let parts: Vec<&Ident> = name.0.iter().filter_map(|p| p.as_ident()).collect();
        if parts.len() != name.0.len() {
            return Err(self.err(self.start(), format!("unsupported name {name}")));
        }
        match parts.as_slice() {
            [one] => Ok((ident(one), self.at(one))),
            [schema, one] if ident(schema) == "public" => Ok((ident(one), self.at(one))),
            _ => Err(self.err(
                parts.first().map_or(self.start(), |p| self.at(p)),
                format!("only the public schema is modelled: {name}"),
            )),
        }
    }

    fn table_index(&self, name: &str, pos: Pos) -> Result<usize> {
        self.schema
            .tables
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| self.err(pos, format!("table {name} does not exist")))
    }

    fn apply(&mut self, statement: &Statement) -> Result<()> {
        match statement {
            Statement::CreateTable(create) => self.create_table(create),
            Statement::AlterTable(alter) => {
                let (name, pos) = self.object_name(&alter.name)?;
                let Some(index) = self.schema.tables.iter().position(|t| t.name == name) else {
                    if alter.if_exists {
                        return Ok(());
                    }
                    return Err(self.err(pos, format!("table {name} does not exist")));
                };
                for op in &alter.operations {
                    self.alter_table(index, op)?;
                }
                Ok(())
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => match object_type {
                ObjectType::Table => {
                    for name in names {
                        self.drop_table(name, *if_exists, *cascade)?;
                    }
                    Ok(())
                }
                ObjectType::Type => {
                    for name in names {
                        self.drop_type(name, *if_exists, *cascade)?;
                    }
                    Ok(())
                }
                ObjectType::View
                | ObjectType::MaterializedView
                | ObjectType::Index
                | ObjectType::Sequence => Ok(()),
                other => Err(self.err(
                    self.start(),
                    format!("DROP {other} is not modelled by the generator"),
                )),
            },
            Statement::CreateType {
                name,
                representation,
            } => {
                let (name, pos) = self.object_name(name)?;
                let Some(UserDefinedTypeRepresentation::Enum { labels }) = representation else {
                    return Err(self.err(
                        pos,
                        format!("only enum types are modelled (CREATE TYPE {name} AS ENUM)"),
                    ));
                };
                if self.schema.enum_type(&name).is_some() {
                    return Err(self.err(pos, format!("type {name} already exists")));
                }
                let mut values: Vec<String> = Vec::new();
                for label in labels {
                    if values.contains(&label.value) {
                        return Err(self.err(
                            self.at(label),
                            format!("enum label {:?} is repeated", label.value),
                        ));
                    }
                    values.push(label.value.clone());
                }
                self.schema.enums.push(EnumType {
                    name,
                    values,
                    comment: None,
                });
                Ok(())
            }
            Statement::AlterType(alter) => self.alter_type(&alter.name, &alter.operation),
            Statement::Comment {
                object_type,
                object_name,
                comment,
                if_exists,
            } => self.comment(object_type, object_name, comment.clone(), *if_exists),
            other => Err(self.err(
                self.start(),
                format!(
                    "statement not modelled by the generator ({}); if it cannot change a table, add its leading keywords to SKIPPED_STATEMENTS in xtask/src/codegen/parse.rs",
                    self.raw.leading_words().join(" ")
                )
                .replace(" ()", &format!(" ({})", statement_kind(other))),
            )),
        }
    }

    /// A unique constraint name: `base`, or `base1`, `base2`, … as PostgreSQL picks them.
    fn fresh_name(&self, table: usize, base: String) -> String {
        let t = &self.schema.tables[table];
        if !t.constraint_names().any(|n| n == base) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}{i}"))
            .find(|candidate| !t.constraint_names().any(|n| n == candidate))
            .expect("an unused name exists")
    }

    fn column_names(&self, table: usize, idents: &[Ident]) -> Result<Vec<String>> {
        let t = &self.schema.tables[table];
        idents
            .iter()
            .map(|i| {
                let name = ident(i);
                if t.column(&name).is_none() {
                    return Err(self.err(
                        self.at(i),
                        format!("column {name} of table {} does not exist", t.name),
                    ));
                }
                Ok(name)
            })
            .collect()
    }
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn dedup(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}
