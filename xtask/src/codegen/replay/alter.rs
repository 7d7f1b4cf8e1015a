//! ALTER TABLE: every operation on an existing table, and DROP COLUMN.

use super::*;

impl Ctx<'_> {
    pub(super) fn alter_table(&mut self, table: usize, op: &AlterTableOperation) -> Result<()> {
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

    pub(super) fn drop_column(
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
}
