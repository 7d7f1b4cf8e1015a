//! Tables and their columns: CREATE TABLE, ADD COLUMN, column types, DROP TABLE.

use super::*;

impl Ctx<'_> {
    pub(super) fn create_table(&mut self, create: &sqlparser::ast::CreateTable) -> Result<()> {
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

    pub(super) fn add_column(
        &mut self,
        table: usize,
        def: &ColumnDef,
        if_not_exists: bool,
    ) -> Result<()> {
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

    pub(super) fn sql_type(&self, ty: &DataType, pos: Pos) -> Result<(SqlType, Option<()>)> {
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
            DataType::TsVector => plain(SqlType::Tsvector),
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
                    "tsvector" => Some(SqlType::Tsvector),
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

    pub(super) fn drop_table(
        &mut self,
        name: &ObjectName,
        if_exists: bool,
        cascade: bool,
    ) -> Result<()> {
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
}
