//! Renaming a column everywhere the model mentions it (keys, checks, generated expressions).

use super::*;

/// The first word of `expr` that names a column of `table` (PostgreSQL names an unnamed table
/// CHECK after it).
pub(super) fn first_column_in(expr: &str, table: &Table) -> Option<String> {
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    words(expr).into_iter().find(|w| names.contains(w))
}

pub(super) fn expr_mentions(expr: &str, column: &str, _remaining: &[String]) -> bool {
    words(expr).iter().any(|w| w == column)
}

pub(super) fn words(expr: &str) -> Vec<String> {
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
pub(super) fn rename_in_expr(expr: &str, old: &str, new: &str) -> String {
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

pub(super) fn rename_column(schema: &mut Schema, table: &str, old: &str, new: &str) {
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
