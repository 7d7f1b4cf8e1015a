//! Replaying parsed migration statements into the [`Schema`] model.

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

    fn create_table(&mut self, create: &sqlparser::ast::CreateTable) -> Result<()> {
        let (name, pos) = self.object_name(&create.name)?;
        if self.schema.table(&name).is_some() {
            if create.if_not_exists {
                return Ok(());
            }
            return Err(self.err(pos, format!("table {name} already exists")));
        }
        if create.query.is_some() || create.like.is_some() || create.clone.is_some() {
            return Err(self.err(
                pos,
                "CREATE TABLE … AS / LIKE / CLONE is not modelled by the generator",
            ));
        }
        if create.temporary {
            return Err(self.err(pos, "temporary tables are not modelled by the generator"));
        }
        let origin = self.origin(pos);
        self.schema.tables.push(Table {
            name: name.clone(),
            origin,
            comment: None,
            columns: Vec::new(),
            primary_key: None,
            unique: Vec::new(),
            foreign_keys: Vec::new(),
            checks: Vec::new(),
        });
        let index = self.schema.tables.len() - 1;
        for def in &create.columns {
            self.add_column(index, def, false)?;
        }
        for constraint in &create.constraints {
            self.add_constraint(index, constraint, None)?;
        }
        Ok(())
    }

    /// The `--` lines directly above the column's name token in this statement.
    fn doc_lines_for(&self, name: &Ident) -> Vec<String> {
        let start = name.span.start;
        self.raw
            .tokens
            .iter()
            .position(|t| t.span.start == start && matches!(t.token, Token::Word(_)))
            .map(|mut i| {
                // In `ADD [COLUMN] [IF NOT EXISTS] name`, the comment sits above `ADD`.
                let mut j = i;
                while j > 0 {
                    j -= 1;
                    match &self.raw.tokens[j].token {
                        Token::Whitespace(Whitespace::Space | Whitespace::Tab) => {}
                        Token::Word(w)
                            if w.quote_style.is_none()
                                && ["ADD", "COLUMN", "IF", "NOT", "EXISTS"]
                                    .contains(&w.value.to_ascii_uppercase().as_str()) =>
                        {
                            i = j;
                        }
                        _ => break,
                    }
                }
                self.raw.comment_lines_before(i)
            })
            .unwrap_or_default()
    }

    fn add_column(&mut self, table: usize, def: &ColumnDef, if_not_exists: bool) -> Result<()> {
        let name = ident(&def.name);
        let pos = self.at(&def.name);
        let table_name = self.schema.tables[table].name.clone();
        if self.schema.tables[table].column(&name).is_some() {
            if if_not_exists {
                return Ok(());
            }
            return Err(self.err(
                pos,
                format!("column {name} of table {table_name} already exists"),
            ));
        }
        let (ty, serial) = self.sql_type(&def.data_type, pos)?;
        let mut column = Column {
            name: name.clone(),
            ty,
            nullable: serial.is_none(),
            default: serial.map(|_| format!("nextval('{table_name}_{name}_seq'::regclass)")),
            identity: None,
            generated: None,
            comment: None,
            doc_lines: self.doc_lines_for(&def.name),
        };
        let mut constraints: Vec<(Option<Ident>, TableConstraint)> = Vec::new();
        for option in &def.options {
            match &option.option {
                ColumnOption::Null => column.nullable = true,
                ColumnOption::NotNull => column.nullable = false,
                ColumnOption::Default(expr) => column.default = Some(expr.to_string()),
                ColumnOption::Collation(_) => {}
                ColumnOption::Comment(text) => column.comment = Some(text.clone()),
                ColumnOption::Generated {
                    generated_as,
                    generation_expr,
                    ..
                } => match (generated_as, generation_expr) {
                    (_, Some(expr)) => column.generated = Some(expr.to_string()),
                    (GeneratedAs::Always, None) => {
                        column.identity = Some(Identity::Always);
                        column.nullable = false;
                    }
                    (GeneratedAs::ByDefault, None) => {
                        column.identity = Some(Identity::ByDefault);
                        column.nullable = false;
                    }
                    (GeneratedAs::ExpStored, None) => {
                        return Err(self.err(pos, "GENERATED … STORED without an expression"))
                    }
                },
                ColumnOption::PrimaryKey(pk) => {
                    column.nullable = false;
                    let mut pk = pk.clone();
                    pk.columns = vec![index_column(&def.name)];
                    constraints.push((option.name.clone(), TableConstraint::PrimaryKey(pk)));
                }
                ColumnOption::Unique(unique) => {
                    let mut unique = unique.clone();
                    unique.columns = vec![index_column(&def.name)];
                    constraints.push((option.name.clone(), TableConstraint::Unique(unique)));
                }
                ColumnOption::ForeignKey(fk) => {
                    let mut fk = fk.clone();
                    fk.columns = vec![def.name.clone()];
                    constraints.push((option.name.clone(), TableConstraint::ForeignKey(fk)));
                }
                ColumnOption::Check(check) => {
                    constraints.push((option.name.clone(), TableConstraint::Check(check.clone())));
                }
                other => {
                    return Err(self.err(
                        pos,
                        format!("column option `{other}` of {table_name}.{name} is not modelled by the generator"),
                    ))
                }
            }
        }
        if column.identity.is_some() && column.default.is_some() {
            return Err(self.err(
                pos,
                format!("column {table_name}.{name} has both a default and an identity"),
            ));
        }
        self.schema.tables[table].columns.push(column);
        for (constraint_name, constraint) in constraints {
            self.add_constraint(table, &constraint, constraint_name.as_ref())?;
            // A column-level CHECK is named after its column.
            if let TableConstraint::Check(_) = constraint {
                if constraint_name.is_none() {
                    let t = &mut self.schema.tables[table];
                    let wanted = format!("{}_{name}_check", t.name);
                    let last = t.checks.len() - 1;
                    if t.checks[last].name != wanted && !t.constraint_names().any(|n| n == wanted) {
                        t.checks[last].name = wanted;
                    }
                }
            }
        }
        Ok(())
    }

    fn sql_type(&self, ty: &DataType, pos: Pos) -> Result<(SqlType, Option<()>)> {
        let plain = |t: SqlType| Ok((t, None));
        match ty {
            DataType::Uuid => plain(SqlType::Uuid),
            DataType::Text | DataType::String(None) => plain(SqlType::Text),
            DataType::Varchar(_) | DataType::CharacterVarying(_) | DataType::CharVarying(_) => {
                plain(SqlType::Varchar)
            }
            DataType::Char(_) | DataType::Character(_) => plain(SqlType::Char),
            DataType::SmallInt(_) | DataType::Int2(_) => plain(SqlType::Int2),
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => plain(SqlType::Int4),
            DataType::BigInt(_) | DataType::Int8(_) => plain(SqlType::Int8),
            DataType::Bool | DataType::Boolean => plain(SqlType::Bool),
            DataType::Real | DataType::Float4 => plain(SqlType::Float4),
            DataType::DoublePrecision | DataType::Float8 => plain(SqlType::Float8),
            DataType::Float(info) => match info {
                sqlparser::ast::ExactNumberInfo::Precision(p)
                | sqlparser::ast::ExactNumberInfo::PrecisionAndScale(p, _)
                    if *p <= 24 =>
                {
                    plain(SqlType::Float4)
                }
                _ => plain(SqlType::Float8),
            },
            DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => {
                plain(SqlType::Numeric)
            }
            DataType::JSON => plain(SqlType::Json),
            DataType::JSONB => plain(SqlType::Jsonb),
            DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
                plain(SqlType::Timestamptz)
            }
            DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                plain(SqlType::Timestamp)
            }
            DataType::Date => plain(SqlType::Date),
            DataType::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                plain(SqlType::Time)
            }
            DataType::Bytea => plain(SqlType::Bytea),
            DataType::Array(
                ArrayElemTypeDef::SquareBracket(inner, _) | ArrayElemTypeDef::AngleBracket(inner),
            ) => {
                let (inner, serial) = self.sql_type(inner, pos)?;
                if serial.is_some() || matches!(inner, SqlType::Array(_)) {
                    return Err(self.err(pos, format!("unsupported array type {ty}")));
                }
                plain(SqlType::Array(Box::new(inner)))
            }
            DataType::Custom(name, modifiers) => {
                let (name, _) = self.object_name(name)?;
                let simple = match name.as_str() {
                    "timestamptz" => Some(SqlType::Timestamptz),
                    "int2" => Some(SqlType::Int2),
                    "int4" => Some(SqlType::Int4),
                    "int8" => Some(SqlType::Int8),
                    "float4" => Some(SqlType::Float4),
                    "float8" => Some(SqlType::Float8),
                    "bool" => Some(SqlType::Bool),
                    "varchar" => Some(SqlType::Varchar),
                    "bpchar" => Some(SqlType::Char),
                    _ => None,
                };
                if let Some(t) = simple {
                    return plain(t);
                }
                let serial = match name.as_str() {
                    "smallserial" | "serial2" => Some(SqlType::Int2),
                    "serial" | "serial4" => Some(SqlType::Int4),
                    "bigserial" | "serial8" => Some(SqlType::Int8),
                    _ => None,
                };
                if let Some(t) = serial {
                    return Ok((t, Some(())));
                }
                if modifiers.is_empty() && self.schema.enum_type(&name).is_some() {
                    return plain(SqlType::Enum(name));
                }
                Err(self.err(pos, format!("unknown column type {ty}")))
            }
            other => Err(self.err(pos, format!("unknown column type {other}"))),
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

    fn key_columns(
        &self,
        table: usize,
        columns: &[sqlparser::ast::IndexColumn],
    ) -> Result<Vec<String>> {
        let idents = columns
            .iter()
            .map(|c| match &c.column.expr {
                Expr::Identifier(i) => Ok(i.clone()),
                other => Err(self.err(
                    self.start(),
                    format!("key column `{other}` is not a plain column"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        self.column_names(table, &idents)
    }

    fn add_constraint(
        &mut self,
        table: usize,
        constraint: &TableConstraint,
        name_override: Option<&Ident>,
    ) -> Result<()> {
        let tname = self.schema.tables[table].name.clone();
        let given = |own: &Option<Ident>| name_override.or(own.as_ref()).map(ident);
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                let columns = self.key_columns(table, &pk.columns)?;
                if self.schema.tables[table].primary_key.is_some() {
                    return Err(self.err(
                        self.start(),
                        format!("multiple primary keys for table {tname} are not allowed"),
                    ));
                }
                let name = given(&pk.name)
                    .unwrap_or_else(|| self.fresh_name(table, format!("{tname}_pkey")));
                let origin = self.origin(self.constraint_pos(
                    name_override.or(pk.name.as_ref()),
                    first_key_ident(&pk.columns),
                ));
                let t = &mut self.schema.tables[table];
                for c in &columns {
                    if let Some(col) = t.columns.iter_mut().find(|x| &x.name == c) {
                        col.nullable = false;
                    }
                }
                t.primary_key = Some(Key {
                    name,
                    origin,
                    columns,
                });
            }
            TableConstraint::Unique(unique) => {
                let columns = self.key_columns(table, &unique.columns)?;
                let name = given(&unique.name).unwrap_or_else(|| {
                    self.fresh_name(table, format!("{tname}_{}_key", columns.join("_")))
                });
                let origin = self.origin(self.constraint_pos(
                    name_override.or(unique.name.as_ref()),
                    first_key_ident(&unique.columns),
                ));
                self.schema.tables[table].unique.push(Key {
                    name,
                    origin,
                    columns,
                });
            }
            TableConstraint::ForeignKey(fk) => {
                let columns = self.column_names(table, &fk.columns)?;
                let (foreign_table, pos) = self.object_name(&fk.foreign_table)?;
                let target = self.table_index(&foreign_table, pos)?;
                let referred_columns = self.column_names(target, &fk.referred_columns)?;
                if !referred_columns.is_empty() && referred_columns.len() != columns.len() {
                    return Err(self.err(
                        pos,
                        "number of referencing and referenced columns for foreign key disagree",
                    ));
                }
                let name = given(&fk.name).unwrap_or_else(|| {
                    self.fresh_name(table, format!("{tname}_{}_fkey", columns.join("_")))
                });
                let origin = self.origin(
                    self.constraint_pos(name_override.or(fk.name.as_ref()), fk.columns.first()),
                );
                self.schema.tables[table].foreign_keys.push(ForeignKey {
                    name,
                    origin,
                    columns,
                    foreign_table,
                    referred_columns,
                    on_delete: fk.on_delete.map(|a| a.to_string()),
                });
            }
            TableConstraint::Check(check) => {
                let t = &self.schema.tables[table];
                let expr = check.expr.to_string();
                let first_column = first_column_in(&expr, t);
                let in_list = in_list(&check.expr)
                    .filter(|l| t.column(&l.column).is_some_and(|c| c.ty.is_text()));
                let name = given(&check.name).unwrap_or_else(|| {
                    let base = match &first_column {
                        Some(c) => format!("{tname}_{c}_check"),
                        None => format!("{tname}_check"),
                    };
                    self.fresh_name(table, base)
                });
                self.schema.tables[table].checks.push(Check {
                    name,
                    expr,
                    in_list,
                });
            }
            other => {
                return Err(self.err(
                    self.start(),
                    format!("constraint `{other}` is not modelled by the generator"),
                ))
            }
        }
        Ok(())
    }

    fn alter_table(&mut self, table: usize, op: &AlterTableOperation) -> Result<()> {
        if alter_table_op_is_skipped(op) {
            return Ok(());
        }
        let tname = self.schema.tables[table].name.clone();
        match op {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                column_position: None,
                ..
            } => self.add_column(table, column_def, *if_not_exists),
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                drop_behavior,
                ..
            } => {
                let cascade = matches!(drop_behavior, Some(sqlparser::ast::DropBehavior::Cascade));
                for column in column_names {
                    self.drop_column(table, column, *if_exists, cascade)?;
                }
                Ok(())
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = self.column_names(table, std::slice::from_ref(old_column_name))?;
                let old = &old[0];
                let new = ident(new_column_name);
                if self.schema.tables[table].column(&new).is_some() {
                    return Err(self.err(
                        self.at(new_column_name),
                        format!("column {new} of table {tname} already exists"),
                    ));
                }
                rename_column(self.schema, &tname, old, &new);
                Ok(())
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (RenameTableNameKind::To(new) | RenameTableNameKind::As(new)) = table_name;
                let (new, pos) = self.object_name(new)?;
                if self.schema.table(&new).is_some() {
                    return Err(self.err(pos, format!("table {new} already exists")));
                }
                for t in &mut self.schema.tables {
                    for fk in &mut t.foreign_keys {
                        if fk.foreign_table == tname {
                            fk.foreign_table = new.clone();
                        }
                    }
                }
                self.schema.tables[table].name = new;
                Ok(())
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let name = &self.column_names(table, std::slice::from_ref(column_name))?[0];
                let pos = self.at(column_name);
                let in_pk = self.schema.tables[table]
                    .primary_key_columns()
                    .contains(name);
                let (new_type, serial) = match op {
                    AlterColumnOperation::SetDataType { data_type, .. } => {
                        let (ty, serial) = self.sql_type(data_type, pos)?;
                        (Some(ty), serial)
                    }
                    _ => (None, None),
                };
                if serial.is_some() {
                    return Err(self.err(
                        pos,
                        "type serial does not exist (only CREATE TABLE and ADD COLUMN take serial)",
                    ));
                }
                let column = self.schema.tables[table]
                    .columns
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .expect("checked above");
                match op {
                    AlterColumnOperation::SetNotNull => column.nullable = false,
                    AlterColumnOperation::DropNotNull => {
                        if in_pk || column.identity.is_some() {
                            return Err(self.raw.error(
                                self.file,
                                pos,
                                format!(
                                    "column {name} is in a primary key or is an identity column"
                                ),
                            ));
                        }
                        column.nullable = true;
                    }
                    AlterColumnOperation::SetDefault { value } => {
                        if column.identity.is_some() || column.generated.is_some() {
                            return Err(self.raw.error(
                                self.file,
                                pos,
                                format!("column {name} is an identity or generated column"),
                            ));
                        }
                        column.default = Some(value.to_string());
                    }
                    AlterColumnOperation::DropDefault => column.default = None,
                    AlterColumnOperation::SetDataType { .. } => {
                        column.ty = new_type.expect("set above");
                    }
                    AlterColumnOperation::AddGenerated { generated_as, .. } => {
                        if column.nullable || column.default.is_some() || column.identity.is_some()
                        {
                            return Err(self.raw.error(
                                self.file,
                                pos,
                                format!("column {name} must be NOT NULL without a default to become an identity column"),
                            ));
                        }
                        column.identity = Some(match generated_as {
                            Some(GeneratedAs::Always) => Identity::Always,
                            _ => Identity::ByDefault,
                        });
                    }
                    other => {
                        return Err(self.raw.error(
                            self.file,
                            pos,
                            format!("ALTER COLUMN … {other} is not modelled by the generator"),
                        ))
                    }
                }
                Ok(())
            }
            AlterTableOperation::AddConstraint { constraint, .. } => {
                self.add_constraint(table, constraint, None)
            }
            AlterTableOperation::DropConstraint {
                if_exists, name, ..
            } => {
                let cname = ident(name);
                let t = &mut self.schema.tables[table];
                let before = t.constraint_names().count();
                if t.primary_key.as_ref().is_some_and(|k| k.name == cname) {
                    t.primary_key = None;
                }
                t.unique.retain(|k| k.name != cname);
                t.foreign_keys.retain(|k| k.name != cname);
                t.checks.retain(|k| k.name != cname);
                if t.constraint_names().count() == before && !if_exists {
                    return Err(self.err(
                        self.at(name),
                        format!("constraint {cname} of relation {tname} does not exist"),
                    ));
                }
                Ok(())
            }
            AlterTableOperation::RenameConstraint { old_name, new_name } => {
                let (old, new) = (ident(old_name), ident(new_name));
                if self.schema.tables[table]
                    .constraint_names()
                    .any(|n| n == new)
                {
                    return Err(self.err(
                        self.at(new_name),
                        format!("constraint {new} of relation {tname} already exists"),
                    ));
                }
                let t = &mut self.schema.tables[table];
                let mut found = false;
                let mut rename = |n: &mut String| {
                    if *n == old {
                        *n = new.clone();
                        found = true;
                    }
                };
                t.primary_key.iter_mut().for_each(|k| rename(&mut k.name));
                t.unique.iter_mut().for_each(|k| rename(&mut k.name));
                t.foreign_keys.iter_mut().for_each(|k| rename(&mut k.name));
                t.checks.iter_mut().for_each(|k| rename(&mut k.name));
                if !found {
                    return Err(self.err(
                        self.at(old_name),
                        format!("constraint {old} of relation {tname} does not exist"),
                    ));
                }
                Ok(())
            }
            other => Err(self.err(
                self.start(),
                format!("ALTER TABLE … {other} is not modelled by the generator"),
            )),
        }
    }

    fn drop_column(
        &mut self,
        table: usize,
        column: &Ident,
        if_exists: bool,
        cascade: bool,
    ) -> Result<()> {
        let name = ident(column);
        let tname = self.schema.tables[table].name.clone();
        if self.schema.tables[table].column(&name).is_none() {
            if if_exists {
                return Ok(());
            }
            return Err(self.err(
                self.at(column),
                format!("column {name} of table {tname} does not exist"),
            ));
        }
        // Foreign keys of other tables that point at this column.
        let referenced_by: Vec<(usize, String)> = self
            .schema
            .tables
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.foreign_keys
                    .iter()
                    .filter(|fk| {
                        fk.foreign_table == tname
                            && (fk.referred_columns.contains(&name)
                                || (fk.referred_columns.is_empty()
                                    && self.schema.tables[table]
                                        .primary_key_columns()
                                        .contains(&name)))
                    })
                    .map(move |fk| (i, fk.name.clone()))
            })
            .filter(|(i, _)| *i != table)
            .collect();
        // Generated columns computed from this one.
        let generated_from: Vec<String> = self.schema.tables[table]
            .columns
            .iter()
            .filter(|c| {
                c.name != name
                    && c.generated
                        .as_deref()
                        .is_some_and(|g| expr_mentions(g, &name, &[]))
            })
            .map(|c| c.name.clone())
            .collect();
        if (!referenced_by.is_empty() || !generated_from.is_empty()) && !cascade {
            let dependents: Vec<String> = referenced_by
                .iter()
                .map(|(_, n)| n.clone())
                .chain(
                    generated_from
                        .iter()
                        .map(|c| format!("generated column {c}")),
                )
                .collect();
            return Err(self.err(
                self.at(column),
                format!(
                    "cannot drop column {name} of table {tname} because other objects depend on it ({}); use CASCADE",
                    dependents.join(", ")
                ),
            ));
        }
        self.schema.tables[table]
            .columns
            .retain(|c| !generated_from.contains(&c.name));
        for (i, fk_name) in referenced_by {
            self.schema.tables[i]
                .foreign_keys
                .retain(|fk| fk.name != fk_name);
        }
        let t = &mut self.schema.tables[table];
        t.columns.retain(|c| c.name != name);
        if t.primary_key
            .as_ref()
            .is_some_and(|k| k.columns.contains(&name))
        {
            t.primary_key = None;
        }
        t.unique.retain(|k| !k.columns.contains(&name));
        t.foreign_keys.retain(|k| !k.columns.contains(&name));
        let remaining: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        t.checks.retain(|c| {
            c.in_list.as_ref().is_none_or(|l| l.column != name)
                && !expr_mentions(&c.expr, &name, &remaining)
        });
        Ok(())
    }

    fn drop_table(&mut self, name: &ObjectName, if_exists: bool, cascade: bool) -> Result<()> {
        let (name, pos) = self.object_name(name)?;
        let Some(index) = self.schema.tables.iter().position(|t| t.name == name) else {
            if if_exists {
                return Ok(());
            }
            return Err(self.err(pos, format!("table {name} does not exist")));
        };
        let dependents: Vec<String> = self
            .schema
            .tables
            .iter()
            .filter(|t| t.name != name)
            .flat_map(|t| t.foreign_keys.iter().filter(|fk| fk.foreign_table == name))
            .map(|fk| fk.name.clone())
            .collect();
        if !dependents.is_empty() && !cascade {
            return Err(self.err(
                pos,
                format!(
                    "cannot drop table {name} because other objects depend on it ({}); use CASCADE",
                    dependents.join(", ")
                ),
            ));
        }
        self.schema.tables.remove(index);
        for t in &mut self.schema.tables {
            t.foreign_keys.retain(|fk| fk.foreign_table != name);
        }
        Ok(())
    }

    fn drop_type(&mut self, name: &ObjectName, if_exists: bool, cascade: bool) -> Result<()> {
        let (name, pos) = self.object_name(name)?;
        let Some(index) = self.schema.enums.iter().position(|e| e.name == name) else {
            if if_exists {
                return Ok(());
            }
            return Err(self.err(pos, format!("type {name} does not exist")));
        };
        let uses = |ty: &SqlType| match ty {
            SqlType::Enum(n) => *n == name,
            SqlType::Array(inner) => matches!(&**inner, SqlType::Enum(n) if *n == name),
            _ => false,
        };
        let users: Vec<String> = self
            .schema
            .tables
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .filter(|c| uses(&c.ty))
                    .map(move |c| format!("{}.{}", t.name, c.name))
            })
            .collect();
        if !users.is_empty() && !cascade {
            return Err(self.err(
                pos,
                format!(
                    "cannot drop type {name} because columns use it ({}); use CASCADE",
                    users.join(", ")
                ),
            ));
        }
        for t in &mut self.schema.tables {
            t.columns.retain(|c| !uses(&c.ty));
        }
        self.schema.enums.remove(index);
        Ok(())
    }

    fn alter_type(&mut self, name: &ObjectName, op: &AlterTypeOperation) -> Result<()> {
        let (name, pos) = self.object_name(name)?;
        let Some(index) = self.schema.enums.iter().position(|e| e.name == name) else {
            return Err(self.err(pos, format!("type {name} does not exist")));
        };
        match op {
            AlterTypeOperation::AddValue(add) => {
                let values = &self.schema.enums[index].values;
                if values.contains(&add.value.value) {
                    if add.if_not_exists {
                        return Ok(());
                    }
                    return Err(self.err(
                        self.at(&add.value),
                        format!("enum label {:?} already exists", add.value.value),
                    ));
                }
                let at = match &add.position {
                    None => values.len(),
                    Some(
                        AlterTypeAddValuePosition::Before(n) | AlterTypeAddValuePosition::After(n),
                    ) => {
                        let Some(i) = values.iter().position(|v| *v == n.value) else {
                            return Err(self.err(
                                self.at(n),
                                format!("{:?} is not an existing enum label", n.value),
                            ));
                        };
                        if matches!(add.position, Some(AlterTypeAddValuePosition::After(_))) {
                            i + 1
                        } else {
                            i
                        }
                    }
                };
                self.schema.enums[index]
                    .values
                    .insert(at, add.value.value.clone());
            }
            AlterTypeOperation::RenameValue(rename) => {
                let values = &mut self.schema.enums[index].values;
                if values.contains(&rename.to.value) {
                    return Err(self.raw.error(
                        self.file,
                        rename.to.span.start.into(),
                        format!("enum label {:?} already exists", rename.to.value),
                    ));
                }
                let Some(v) = values.iter_mut().find(|v| **v == rename.from.value) else {
                    return Err(self.raw.error(
                        self.file,
                        rename.from.span.start.into(),
                        format!("{:?} is not an existing enum label", rename.from.value),
                    ));
                };
                *v = rename.to.value.clone();
            }
            AlterTypeOperation::Rename(rename) => {
                let new = ident(&rename.new_name);
                if self.schema.enum_type(&new).is_some() {
                    return Err(self.err(
                        self.at(&rename.new_name),
                        format!("type {new} already exists"),
                    ));
                }
                for t in &mut self.schema.tables {
                    for c in &mut t.columns {
                        match &mut c.ty {
                            SqlType::Enum(n) if *n == name => *n = new.clone(),
                            SqlType::Array(inner) => {
                                if let SqlType::Enum(n) = &mut **inner {
                                    if *n == name {
                                        *n = new.clone();
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                self.schema.enums[index].name = new;
            }
        }
        Ok(())
    }

    fn comment(
        &mut self,
        object_type: &CommentObject,
        object_name: &ObjectName,
        comment: Option<String>,
        if_exists: bool,
    ) -> Result<()> {
        match object_type {
            CommentObject::Table => {
                let (name, pos) = self.object_name(object_name)?;
                match self.schema.tables.iter_mut().find(|t| t.name == name) {
                    Some(t) => t.comment = comment,
                    None if if_exists => {}
                    None => return Err(self.err(pos, format!("table {name} does not exist"))),
                }
            }
            CommentObject::Type => {
                let (name, pos) = self.object_name(object_name)?;
                match self.schema.enums.iter_mut().find(|t| t.name == name) {
                    Some(t) => t.comment = comment,
                    None if if_exists => {}
                    None => return Err(self.err(pos, format!("type {name} does not exist"))),
                }
            }
            CommentObject::Column => {
                let mut parts = object_name.0.clone();
                let Some(column) = parts.pop().and_then(|p| p.as_ident().cloned()) else {
                    return Err(self.err(self.start(), format!("bad column name {object_name}")));
                };
                if parts.is_empty() {
                    return Err(self.err(self.at(&column), "COMMENT ON COLUMN needs table.column"));
                }
                let (table, pos) = self.object_name(&ObjectName(parts))?;
                let table = match self.schema.tables.iter().position(|t| t.name == table) {
                    Some(i) => i,
                    None if if_exists => return Ok(()),
                    None => return Err(self.err(pos, format!("table {table} does not exist"))),
                };
                let name = &self.column_names(table, std::slice::from_ref(&column))?[0];
                let c = self.schema.tables[table]
                    .columns
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .expect("checked above");
                c.comment = comment;
            }
            // Comments on indexes, functions, constraints, … do not describe a table's shape.
            _ => {}
        }
        Ok(())
    }
}

fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first column of a key, when it is a plain column.
fn first_key_ident(columns: &[sqlparser::ast::IndexColumn]) -> Option<&Ident> {
    columns.first().and_then(|c| match &c.column.expr {
        Expr::Identifier(i) => Some(i),
        _ => None,
    })
}

fn index_column(name: &Ident) -> sqlparser::ast::IndexColumn {
    sqlparser::ast::IndexColumn {
        column: sqlparser::ast::OrderByExpr {
            expr: Expr::Identifier(name.clone()),
            options: sqlparser::ast::OrderByOptions {
                sort: None,
                nulls_first: None,
            },
            with_fill: None,
        },
        operator_class: None,
    }
}

/// `column IN ('a', 'b', …)` (also `column = ANY (ARRAY['a', …])`, as PostgreSQL prints it).
fn in_list(expr: &Expr) -> Option<InList> {
    let strings = |items: &[Expr]| -> Option<Vec<String>> {
        items
            .iter()
            .map(|e| match e {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => Some(s.clone()),
                    _ => None,
                },
                Expr::Cast { expr, .. } => match &**expr {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => Some(s.clone()),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    match expr {
        Expr::Nested(inner) => in_list(inner),
        Expr::In {
            expr,
            target: sqlparser::ast::InTarget::List(list),
            negated: false,
            ..
        } => match &**expr {
            Expr::Identifier(column) => Some(InList {
                column: ident(column),
                values: dedup(strings(list)?),
            }),
            _ => None,
        },
        _ => None,
    }
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

/// The first word of `expr` that names a column of `table` (PostgreSQL names an unnamed table
/// CHECK after it).
fn first_column_in(expr: &str, table: &Table) -> Option<String> {
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    words(expr).into_iter().find(|w| names.contains(w))
}

fn expr_mentions(expr: &str, column: &str, _remaining: &[String]) -> bool {
    words(expr).iter().any(|w| w == column)
}

fn words(expr: &str) -> Vec<String> {
    let dialect = PostgreSqlDialect {};
    Tokenizer::new(&dialect, expr)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(if w.quote_style.is_some() {
                w.value
            } else {
                w.value.to_lowercase()
            }),
            _ => None,
        })
        .collect()
}

/// `expr` with every reference to column `old` made a reference to `new`, as PostgreSQL keeps
/// expressions by column and so follows a rename. A word directly followed by `(` is a function
/// name and stays.
fn rename_in_expr(expr: &str, old: &str, new: &str) -> String {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, expr).tokenize() else {
        return expr.to_string();
    };
    let plain = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let replacement = if plain(new) {
        new.to_string()
    } else {
        format!("\"{}\"", new.replace('"', "\"\""))
    };
    let mut out = String::with_capacity(expr.len());
    for (i, t) in tokens.iter().enumerate() {
        let is_call = tokens[i + 1..]
            .iter()
            .find(|t| !matches!(t, Token::Whitespace(_)))
            .is_some_and(|t| matches!(t, Token::LParen));
        match t {
            Token::Word(w) if !is_call => {
                let name = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                if name == old {
                    out.push_str(&replacement);
                } else {
                    out.push_str(&t.to_string());
                }
            }
            _ => out.push_str(&t.to_string()),
        }
    }
    out
}

fn rename_column(schema: &mut Schema, table: &str, old: &str, new: &str) {
    let swap = |n: &mut String| {
        if n == old {
            *n = new.to_string();
        }
    };
    for t in &mut schema.tables {
        if t.name == table {
            t.columns.iter_mut().for_each(|c| swap(&mut c.name));
            // Expressions that mention the column follow it.
            for c in &mut t.columns {
                if let Some(g) = &mut c.generated {
                    *g = rename_in_expr(g, old, new);
                }
            }
            for c in &mut t.checks {
                c.expr = rename_in_expr(&c.expr, old, new);
            }
            if let Some(k) = &mut t.primary_key {
                k.columns.iter_mut().for_each(swap);
            }
            t.unique
                .iter_mut()
                .for_each(|k| k.columns.iter_mut().for_each(swap));
            t.foreign_keys
                .iter_mut()
                .for_each(|k| k.columns.iter_mut().for_each(swap));
            for c in &mut t.checks {
                if let Some(l) = &mut c.in_list {
                    swap(&mut l.column);
                }
            }
        }
        for fk in &mut t.foreign_keys {
            if fk.foreign_table == table {
                fk.referred_columns.iter_mut().for_each(swap);
            }
        }
    }
}
