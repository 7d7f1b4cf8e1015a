//! Enum types: DROP TYPE and ALTER TYPE (added and renamed values).

use super::*;

impl Ctx<'_> {
    pub(super) fn drop_type(
        &mut self,
        name: &ObjectName,
        if_exists: bool,
        cascade: bool,
    ) -> Result<()> {
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

    pub(super) fn alter_type(&mut self, name: &ObjectName, op: &AlterTypeOperation) -> Result<()> {
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
}
