//! Keys, foreign keys and checks: table constraints, and the enums a `CHECK (col IN (…))` makes.

use super::*;

impl Ctx<'_> {
    pub(super) fn key_columns(
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

    pub(super) fn add_constraint(
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
}

/// The first column of a key, when it is a plain column.
pub(super) fn first_key_ident(columns: &[sqlparser::ast::IndexColumn]) -> Option<&Ident> {
    columns.first().and_then(|c| match &c.column.expr {
        Expr::Identifier(i) => Some(i),
        _ => None,
    })
}

pub(super) fn index_column(name: &Ident) -> sqlparser::ast::IndexColumn {
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
pub(super) fn in_list(expr: &Expr) -> Option<InList> {
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
