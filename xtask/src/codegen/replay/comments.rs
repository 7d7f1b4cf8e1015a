//! COMMENT ON, and the `--` lines that document tables and columns.

use super::*;

impl Ctx<'_> {
    /// The `--` lines directly above the column's name token in this statement.
    pub(super) fn doc_lines_for(&self, name: &Ident) -> Vec<String> {
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

    pub(super) fn comment(
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
