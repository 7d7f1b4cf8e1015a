//! Rust names for SQL names: words, `snake_case`, `PascalCase`, singulars, identifiers, and the
//! one table of every name a schema's generated code uses, checked for collisions.

use std::collections::HashMap;

use anyhow::{bail, Result};
use proc_macro2::{Ident, Span};
use quote::format_ident;

use crate::codegen::model::{Schema, Table};

/// The words of a SQL name: split at any character that is not a letter or digit, and where
/// case changes (`displayName` → display, name; `HTTPServer` → http, server). Lower-cased.
pub(crate) fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_ascii_uppercase()
            && match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `snake_case` of a SQL name (`"Audit Log"` → `audit_log`, `displayName` → `display_name`).
pub fn snake(name: &str) -> String {
    words(name).join("_")
}

/// `PascalCase` of a SQL name; `V` in front if it would not start with a letter.
pub fn pascal(name: &str) -> String {
    let mut out = String::new();
    for word in words(name) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}

/// English singular of a `snake_case` table name, enough for table names: `sessions` →
/// `session`, `categories` → `category`, `addresses` → `address`; `message_archive` stays.
pub fn singular(name: &str) -> String {
    if let Some(stem) = name.strip_suffix("ies") {
        format!("{stem}y")
    } else if name.ends_with("sses") || name.ends_with("xes") || name.ends_with("ches") {
        name[..name.len() - 2].to_string()
    } else if name.ends_with('s') && !name.ends_with("ss") && !name.ends_with("us") {
        name[..name.len() - 1].to_string()
    } else {
        name.to_string()
    }
}

/// A Rust identifier for a SQL name: its `snake_case`, `_` in front if it would start with a
/// digit, raw (`r#type`) when it is a keyword, `self_` and the like for the keywords that cannot
/// be raw.
pub(crate) fn field_ident(name: &str) -> Result<Ident> {
    let mut s = snake(name);
    if s.is_empty() {
        bail!("the SQL name {name:?} has no letters or digits to make a Rust name of");
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    if syn::parse_str::<syn::Ident>(&s).is_ok() {
        Ok(Ident::new(&s, Span::call_site()))
    } else if ["self", "Self", "super", "crate", "extern"].contains(&s.as_str()) {
        Ok(Ident::new(&format!("{s}_"), Span::call_site()))
    } else {
        Ok(Ident::new_raw(&s, Span::call_site()))
    }
}

/// The name of the Rust enum for a `CHECK (column IN (…))` text column of a table whose row
/// struct is `row`: the one place this rule is written.
pub(crate) fn check_enum_name(row: &str, column: &str) -> String {
    format!("{row}{}", pascal(column))
}

/// The Rust names of one table's generated items.
#[derive(Debug, Clone)]
pub(crate) struct TableNames {
    /// Module (and file stem): the table name in `snake_case`.
    pub(crate) module: String,
    /// Row struct: the singular in `PascalCase`.
    pub(crate) row: String,
}

impl TableNames {
    /// The module's identifier.
    pub(crate) fn module_ident(&self) -> Ident {
        field_ident(&self.module).expect("checked when the names were claimed")
    }
    /// The row struct.
    pub(crate) fn row(&self) -> Ident {
        format_ident!("{}", self.row)
    }
    /// The insert struct: `New{Row}`.
    pub(crate) fn insert(&self) -> Ident {
        format_ident!("New{}", self.row)
    }
    /// The patch struct: `{Row}Patch`.
    pub(crate) fn patch(&self) -> Ident {
        format_ident!("{}Patch", self.row)
    }
    /// The sea-query names enum: `{Row}Iden`.
    pub(crate) fn iden(&self) -> Ident {
        format_ident!("{}Iden", self.row)
    }
    /// The primary key struct: `{Row}Key`.
    pub(crate) fn key(&self) -> Ident {
        format_ident!("{}Key", self.row)
    }
    /// The arguments of a lookup by the columns `columns`: `{Row}By{Columns}`.
    pub(crate) fn by(&self, columns: &[String]) -> Ident {
        let cols: String = columns.iter().map(|c| pascal(c)).collect();
        format_ident!("{}By{}", self.row, cols)
    }
    /// The Rust enum of a `CHECK (column IN (…))` column.
    pub(crate) fn check_enum(&self, column: &str) -> Ident {
        format_ident!("{}", check_enum_name(&self.row, column))
    }
}

/// Rust names chosen for each table, checked for collisions. Plain strings, so the tables can
/// be generated on several threads.
pub(crate) struct Names {
    tables: HashMap<String, TableNames>,
}

impl Names {
    /// Chooses every name; fails naming both claimants when two items would share one.
    pub(crate) fn new(schema: &Schema) -> Result<Self> {
        let mut used: HashMap<String, String> = HashMap::new();
        let mut claim = |name: String, owner: String| -> Result<()> {
            if let Some(other) = used.get(&name) {
                bail!("the Rust name {name} is wanted by both {other} and {owner}");
            }
            used.insert(name, owner);
            Ok(())
        };
        for e in &schema.enums {
            claim(pascal(&e.name), format!("enum type {}", e.name))?;
        }
        let mut tables = HashMap::new();
        for t in &schema.tables {
            let module = snake(&t.name);
            let row = pascal(&singular(&module));
            let names = TableNames {
                module: module.clone(),
                row: row.clone(),
            };
            let owner = format!("table {}", t.name);
            for name in [
                names.row(),
                names.insert(),
                names.patch(),
                names.iden(),
                names.key(),
            ] {
                claim(name.to_string(), owner.clone())?;
            }
            for key in &t.unique {
                claim(
                    names.by(&key.columns).to_string(),
                    format!("unique key {} of {}", key.name, t.name),
                )?;
            }
            claim(
                format!("mod {}", field_ident(&t.name)?),
                format!("module of table {}", t.name),
            )?;
            for c in &t.columns {
                if t.check_in_values(&c.name).is_some() {
                    claim(
                        check_enum_name(&row, &c.name),
                        format!("CHECK IN on {}.{}", t.name, c.name),
                    )?;
                }
            }
            check_fields(t)?;
            tables.insert(t.name.clone(), names);
        }
        Ok(Names { tables })
    }

    /// The names of table `name`.
    pub(crate) fn table(&self, name: &str) -> &TableNames {
        &self.tables[name]
    }
}

/// Two columns of one table must not map to the same Rust field.
fn check_fields(table: &Table) -> Result<()> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for c in &table.columns {
        let ident = field_ident(&c.name)?.to_string();
        if let Some(other) = seen.insert(ident.clone(), &c.name) {
            bail!(
                "columns {other:?} and {:?} of {} both become the Rust field {ident}",
                c.name,
                table.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_quoted_identifiers_are_idiomatic() {
        assert_eq!(snake("displayName"), "display_name");
        assert_eq!(snake("Audit Log"), "audit_log");
        assert_eq!(snake("HTTPServer"), "http_server");
        assert_eq!(snake("created_at"), "created_at");
        assert_eq!(snake("Quoted Col"), "quoted_col");
        assert_eq!(snake("v2Name"), "v2_name");
        assert_eq!(pascal("Audit Log"), "AuditLog");
        assert_eq!(pascal("in-progress"), "InProgress");
        assert_eq!(pascal("2fa"), "V2fa");
        assert_eq!(pascal(&singular(&snake("Audit Log"))), "AuditLog");
        assert_eq!(field_ident("type").unwrap().to_string(), "r#type");
        assert_eq!(field_ident("self").unwrap().to_string(), "self_");
        assert_eq!(field_ident("1st").unwrap().to_string(), "_1st");
        assert!(field_ident("???").is_err());
    }
}
