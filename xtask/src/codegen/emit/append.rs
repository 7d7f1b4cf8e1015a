//! `APPEND`: a batch of child rows appended under one locked parent row, in one statement,
//! retry-safe and optionally conditional. For a declared [`Append`]:
//!
//! ```text
//! WITH "parent"   AS (SELECT key, last, (not checked or last = expected) AS ok FROM parent
//!                     WHERE key = $… FOR NO KEY UPDATE),
//!      "existing" AS (child rows whose key the batch gives: a retry),
//!      "rows"     AS (INSERT INTO child (…) SELECT … FROM "parent", unnest($…) … WHERE "parent".ok
//!                     AND the row is not stored identically already ORDER BY ord RETURNING …),
//!      "parent_update" AS (UPDATE parent SET total += sum, touched = now(), last = max … )
//! SELECT new rows (what the database decided) UNION ALL stored rows of a retry
//! UNION ALL a marker when the parent's last value was not the expected one
//! ```
//!
//! * The parent row is locked first, so appends under one parent serialize and each batch's
//!   `order_by` values (drawn from its identity) increase in the given order, uninterrupted.
//! * A row whose key is already stored with the same values is not inserted again and comes
//!   back as stored: retrying a batch changes nothing. One stored with other values (or under
//!   another parent) is inserted anyway and fails the statement on the key: nothing is written.
//! * With an expected last value, nothing is inserted if the parent's last value differs
//!   (decided on the locked row, so on its current value).
//! * New rows come back with only what the database decided; the generated code puts each row
//!   together from its input and that (large given values, such as content, are not sent back).

use anyhow::{bail, Context, Result};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::docs::doc;
use super::sql;
use super::statements::{args_struct, batch_arrays, foreign_key, Ctx, Statement};
use super::types::{Field, InsertShape};
use crate::codegen::config::Append;
use crate::codegen::model::SqlType;

/// Where a returned row's field comes from, for a newly inserted row.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// The input (the statement does not send it back).
    Input,
    /// The input's value if given, else the value the database chose.
    InputOrReturned,
    /// The database.
    Returned,
}

/// A default the database can be asked "is this the default?" about without evaluating
/// anything volatile: a literal, possibly cast.
fn constant_default(field: &Field) -> Option<String> {
    let default = field.column.default.as_ref()?;
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let expr = sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(default)
        .ok()?
        .parse_expr()
        .ok()?;
    let mut inner = &expr;
    while let sqlparser::ast::Expr::Cast { expr, .. } | sqlparser::ast::Expr::Nested(expr) = inner {
        inner = expr;
    }
    matches!(inner, sqlparser::ast::Expr::Value(_)).then(|| field.default.clone())?
}

pub(crate) fn append_statement(ctx: &Ctx, append: &Append) -> Result<(TokenStream, TokenStream)> {
    let (fk, parent, referred) = foreign_key(ctx.schema, ctx.table, append.foreign_key)?;
    let order = ctx.field(append.order_by)?;
    if order.column.identity.is_none() {
        bail!(
            "{}.{} orders appends, so it must be an identity column",
            ctx.table.name,
            append.order_by
        );
    }
    let last = match append.last {
        Some(name) => Some(
            parent
                .column(name)
                .with_context(|| format!("{} has no column {name}", parent.name))?,
        ),
        None => None,
    };
    let parent_name = format_ident!("{}Parent", ctx.names.row);
    let args = args_struct(
        ctx,
        &parent_name,
        &fk.columns,
        &format!(
            "The `{}` row that [`stmt::append`] appends under, by the columns of foreign key `{}`.",
            parent.name, fk.name
        ),
    )?;
    let mut stmt = Statement::new();
    let from_parent = |name: &str| -> Option<&String> {
        fk.columns
            .iter()
            .position(|c| c == name)
            .map(|i| &referred[i])
    };

    // "parent": locked, with its last value and whether it is the expected one.
    let conds = args
        .fields
        .iter()
        .zip(&referred)
        .map(|((_, cast, bind), parent_column)| {
            format!(
                "{} = {}",
                sql::ident(parent_column),
                stmt.param(cast, bind.clone())
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let (last_select, ok) = match last {
        Some(col) => {
            let check = stmt.param("bool", quote! { expected_last.is_some() });
            let expected = stmt.param(&sql::cast_type(&col.ty), quote! { expected_last.flatten() });
            (
                format!("{} AS \"last\"", sql::ident(&col.name)),
                format!(
                    "(NOT {check} OR {} IS NOT DISTINCT FROM {expected}) AS \"ok\"",
                    sql::ident(&col.name)
                ),
            )
        }
        None => ("NULL::int8 AS \"last\"".into(), "true AS \"ok\"".into()),
    };
    let lock = format!(
        "\"parent\" AS (SELECT {}, {last_select}, {ok} FROM {} WHERE {conds} FOR NO KEY UPDATE)",
        sql::idents(referred.iter().map(String::as_str)),
        sql::ident(&parent.name)
    );

    // The arrays: every insertable column but the foreign key (from the parent) and the order
    // column (always drawn).
    let insertable = ctx.insertable();
    let arrays = batch_arrays(&insertable, &mut stmt, &|f| {
        from_parent(&f.column.name).is_some() || f.column.name == append.order_by
    })?;
    let index_of = |name: &str| insertable.iter().position(|f| f.column.name == name);
    let value_of = |name: &str| -> String {
        if let Some(pc) = from_parent(name) {
            return format!("\"parent\".{}", sql::ident(pc));
        }
        let f = insertable[index_of(name).expect("an insertable column")];
        match &arrays.columns[index_of(name).unwrap()] {
            Some(c) => c.value.clone(),
            None => f.default.clone().expect("the order column has a default"),
        }
    };

    // The key of a stored row, when the batch gives it: a retry's rows are found by it.
    let pk = ctx.table.primary_key_columns();
    let key_from_input: Vec<&String> = pk.iter().filter(|c| from_parent(c).is_none()).collect();
    let retryable = !key_from_input.is_empty()
        && key_from_input
            .iter()
            .all(|c| index_of(c).is_some_and(|i| arrays.columns[i].is_some()));
    let mut existing_cte = None;
    let skip_stored = if retryable {
        // Rows of the child whose key the batch gives, each with whether it holds every value
        // its input gives (and belongs to this parent): a retry's rows are "same", others clash.
        let key_match = pk
            .iter()
            .map(|c| match from_parent(c) {
                Some(pc) => format!("\"m\".{} = \"parent\".{}", sql::ident(c), sql::ident(pc)),
                None => {
                    let col = arrays.columns[index_of(c).unwrap()].as_ref().unwrap();
                    format!("\"m\".{} = {}", sql::ident(c), col.input)
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut same = Vec::new();
        for (k, f) in insertable.iter().enumerate() {
            let column = format!("\"m\".{}", sql::ident(&f.column.name));
            let json = matches!(f.column.ty, SqlType::Json);
            let cmp = |a: &str, b: &str| {
                if json {
                    format!("{a}::jsonb IS NOT DISTINCT FROM {b}::jsonb")
                } else {
                    format!("{a} IS NOT DISTINCT FROM {b}")
                }
            };
            if let Some(pc) = from_parent(&f.column.name) {
                same.push(format!("{column} = \"parent\".{}", sql::ident(pc)));
                continue;
            }
            let Some(col) = &arrays.columns[k] else {
                continue;
            };
            match &col.given {
                None => same.push(cmp(&column, &col.input)),
                Some(given) => {
                    same.push(format!("(NOT ({given}) OR {})", cmp(&column, &col.input)))
                }
            }
        }
        // One index lookup per given key (the LIMIT keeps the planner from joining the
        // whole table).
        let given_keys = key_from_input
            .iter()
            .map(|c| {
                let col = arrays.columns[index_of(c).unwrap()].as_ref().unwrap();
                format!("{} IS NOT NULL", col.input)
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        existing_cte = Some(format!(
            "\"existing\" AS (SELECT \"m\".*, ({}) AS \"same\" FROM \"parent\" CROSS JOIN {} CROSS JOIN LATERAL (SELECT * FROM {} AS \"m\" WHERE {key_match} LIMIT 1) AS \"m\" WHERE {given_keys})",
            same.join(" AND "),
            arrays.unnest(),
            sql::ident(&ctx.table.name)
        ));
        let key = key_from_input
            .iter()
            .map(|c| {
                let col = arrays.columns[index_of(c).unwrap()].as_ref().unwrap();
                format!("\"e\".{} = {}", sql::ident(c), col.input)
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        // Nothing is inserted when any given key is stored with other values; a row stored
        // with the same values is not inserted again.
        Some(format!(
            "NOT EXISTS (SELECT 1 FROM \"existing\" AS \"e\" WHERE NOT \"e\".\"same\") AND NOT EXISTS (SELECT 1 FROM \"existing\" AS \"e\" WHERE {key})"
        ))
    } else {
        None
    };
    // "rows": the insert, returning what the database decides.
    let mut sources = Vec::new();
    let mut returning = Vec::new();
    for f in ctx.fields {
        let name = f.column.name.as_str();
        let source = match index_of(name) {
            None => Source::Returned,
            Some(_) if from_parent(name).is_some() || name == append.order_by => Source::Returned,
            Some(_) => match f.insert_shape() {
                InsertShape::Required | InsertShape::Nullable => Source::Input,
                InsertShape::Defaulted | InsertShape::NullableDefaulted => Source::InputOrReturned,
            },
        };
        let ident = sql::ident(name);
        match source {
            Source::Input => {}
            Source::Returned => returning.push(ident),
            Source::InputOrReturned => match constant_default(f) {
                // Large given values (content) need not come back: the default is sent back
                // only where the stored value is the default.
                Some(default) if f.column.ty.is_text() || matches!(f.column.ty, SqlType::Jsonb) => {
                    returning.push(format!(
                        "CASE WHEN {ident} = {default} THEN {ident} END AS {ident}"
                    ))
                }
                _ => returning.push(ident),
            },
        }
        sources.push(source);
    }
    if let Some((_, child)) = append.total {
        let returned = sources[ctx
            .fields
            .iter()
            .position(|f| f.column.name == child)
            .context("the total's child column")?]
            == Source::Returned;
        if !returned {
            returning.push(sql::ident(child));
        }
    }
    // The statement, with or without looking up the rows a retry may have stored already (a
    // batch that gives no keys cannot be a retry, and skips that work).
    let assemble = |with_existing: bool| -> Result<String> {
        let mut ctes = vec![lock.clone()];
        if with_existing {
            ctes.extend(existing_cte.clone());
        }
        let mut filters = vec![];
        if last.is_some() {
            filters.push("\"parent\".\"ok\"".to_string());
        }
        if let (true, Some(skip)) = (with_existing, &skip_stored) {
            filters.push(skip.clone());
        }
        let columns: Vec<&str> = insertable.iter().map(|f| f.column.name.as_str()).collect();
        let values: Vec<String> = columns.iter().map(|c| value_of(c)).collect();
        ctes.push(format!(
        "\"rows\" AS (INSERT INTO {} ({}) SELECT {} FROM \"parent\", {}{} ORDER BY \"i\".\"ord\" RETURNING {})",
        sql::ident(&ctx.table.name),
        sql::idents(columns.iter().copied()),
        values.join(", "),
        arrays.unnest(),
        if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        },
        returning.join(", ")
    ));

        // "parent_update": the parent's total, touched and last columns.
        let mut sets = Vec::new();
        if let Some((parent_column, child_column)) = append.total {
            let p = parent
                .column(parent_column)
                .with_context(|| format!("{} has no column {parent_column}", parent.name))?;
            ctx.field(child_column)?;
            sets.push(format!(
                "{col} = \"p\".{col} + (SELECT coalesce(sum({}), 0) FROM \"rows\")::{}",
                sql::ident(child_column),
                sql::cast_type(&p.ty),
                col = sql::ident(parent_column),
            ));
        }
        if let Some(touched) = append.touched {
            parent
                .column(touched)
                .with_context(|| format!("{} has no column {touched}", parent.name))?;
            sets.push(format!("{} = now()", sql::ident(touched)));
        }
        if let Some(col) = last {
            sets.push(format!(
                "{c} = greatest(\"p\".{c}, (SELECT max({}) FROM \"rows\"))",
                sql::ident(append.order_by),
                c = sql::ident(&col.name)
            ));
        }
        if !sets.is_empty() {
            let join = referred
                .iter()
                .map(|c| format!("\"p\".{c} = \"parent\".{c}", c = sql::ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            ctes.push(format!(
            "\"parent_update\" AS (UPDATE {} AS \"p\" SET {} FROM \"parent\" WHERE {join} AND EXISTS (SELECT 1 FROM \"rows\"))",
            sql::ident(&parent.name),
            sets.join(", ")
        ));
        }

        // The answer: new rows (what the database decided), a retry's stored rows, and a marker
        // when the parent's last value was not the expected one.
        let last_cast = last.map_or("int8".to_string(), |c| sql::cast_type(&c.ty));
        let null = |f: &Field| format!("NULL::{}", f.cast());
        // The first branch names the answer's columns.
        let new_part: Vec<String> = ctx
            .fields
            .iter()
            .zip(&sources)
            .map(|(f, s)| {
                let name = sql::ident(&f.column.name);
                match s {
                    Source::Input => format!("{} AS {name}", null(f)),
                    _ => format!("\"rows\".{name} AS {name}"),
                }
            })
            .collect();
        // "kind": 0 a new row, 1 a retry's stored row, 2 a stored row with other values (a
        // clash), 3 the parent's last value when it was not the expected one.
        let mut select = format!(
            "SELECT 0 AS \"kind\", NULL::{last_cast} AS \"last\", {} FROM \"rows\"",
            new_part.join(", ")
        );
        if with_existing {
            select.push_str(&format!(
            " UNION ALL SELECT CASE WHEN \"e\".\"same\" THEN 1 ELSE 2 END, NULL::{last_cast}, {} FROM \"existing\" AS \"e\"",
            ctx.fields
                .iter()
                .map(|f| format!("\"e\".{}", sql::ident(&f.column.name)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        }
        if last.is_some() {
            select.push_str(&format!(
            " UNION ALL SELECT 3, \"parent\".\"last\", {} FROM \"parent\" WHERE NOT \"parent\".\"ok\"",
            ctx.fields.iter().map(null).collect::<Vec<_>>().join(", ")
        ));
        }
        Ok(format!(
            "WITH {} {select} ORDER BY {} NULLS LAST",
            ctes.join(", "),
            sql::ident(append.order_by)
        ))
    };
    let sql = assemble(false)?;
    let retry_sql = if retryable {
        Some(assemble(true)?)
    } else {
        None
    };

    Ok((
        args.item,
        function(
            ctx,
            append,
            &args.ty,
            &sql,
            retry_sql.as_deref(),
            stmt,
            &sources,
            last.is_some(),
            retryable,
            &key_from_input,
        ),
    ))
}

/// The async function: binds, runs, and puts the answer together.
#[allow(clippy::too_many_arguments)]
fn function(
    ctx: &Ctx,
    append: &Append,
    parent_ty: &TokenStream,
    sql: &str,
    retry_sql: Option<&str>,
    stmt: Statement,
    sources: &[Source],
    conditional: bool,
    retryable: bool,
    key: &[&String],
) -> TokenStream {
    let (row, insert) = (ctx.names.row(), ctx.names.insert());
    let binds = &stmt.binds;
    let order = ctx.field(append.order_by).expect("checked");
    let order_ty = &order.base;
    let answer_fields = ctx.fields.iter().map(|f| {
        let (ident, base, rename) = (&f.ident, &f.base, &f.sqlx_rename);
        quote! { #rename #ident: Option<#base>, }
    });
    let mut new_fields = Vec::new();
    let mut stored_fields = Vec::new();
    for (f, source) in ctx.fields.iter().zip(sources) {
        let ident = &f.ident;
        let returned = if f.column.nullable {
            quote! { a.#ident }
        } else {
            quote! { a.#ident.expect("the database returns this column") }
        };
        stored_fields.push(quote! { #ident: #returned, });
        new_fields.push(match source {
            Source::Input => quote! { #ident: new.#ident.clone(), },
            Source::Returned => quote! { #ident: #returned, },
            Source::InputOrReturned => quote! {
                #ident: match &new.#ident { Some(v) => v.clone(), None => #returned },
            },
        });
    }
    // A retry's stored row for an input: the one with the input's key.
    let find_stored = if retryable {
        let conds = key.iter().map(|c| {
            let f = ctx.field(c).expect("a key column");
            let ident = &f.ident;
            match f.insert_shape() {
                InsertShape::Required => quote! { s.#ident == new.#ident },
                _ => quote! { new.#ident.as_ref() == Some(&s.#ident) },
            }
        });
        quote! { stored.iter().position(|s| #(#conds)&&*).map(|i| stored.swap_remove(i)) }
    } else {
        quote! { None }
    };
    let (expected_param, expected_doc) = if conditional {
        (
            quote! { expected_last: Option<Option<#order_ty>>, },
            format!(
                " With `expected_last`, nothing is appended unless the parent's `{}` is that value (`Some(None)`: nothing appended yet) — [`crate::generated::AppendOutcome::Moved`] then — except that a full retry of a stored batch still returns it.",
                append.last.unwrap_or_default()
            ),
        )
    } else {
        (quote! {}, String::new())
    };
    let what = doc(&format!(
        "Appends any number of `{table}` rows under one `{parent}` row in one statement, in the given order: the parent row is locked (appends under one parent never interleave), each row's `{order}` is drawn in order, its foreign-key columns are the parent's (the rows' own values of those columns are not read){total}. A row whose key is already stored with the same values is not appended again and comes back as stored (retrying a batch changes nothing); one stored with other values, or under another parent, fails the statement on the key and nothing is written.{expected}",
        table = ctx.table.name,
        parent = append.foreign_key,
        order = append.order_by,
        total = match (append.total, append.touched) {
            (Some((t, c)), Some(touched)) => format!("; the parent's `{t}` grows by the new rows' `{c}` and its `{touched}` is set"),
            (Some((t, c)), None) => format!("; the parent's `{t}` grows by the new rows' `{c}`"),
            (None, Some(touched)) => format!("; the parent's `{touched}` is set"),
            (None, None) => String::new(),
        },
        expected = expected_doc,
    ));
    let last_ty = quote! { #order_ty };
    // A batch that gives a key may be a retry: the statement that looks stored rows up.
    let (retry_const, choose) = match retry_sql {
        Some(retry_sql) => {
            let given = key.iter().map(|c| {
                let f = ctx.field(c).expect("a key column");
                let ident = &f.ident;
                match f.insert_shape() {
                    InsertShape::Required => quote! { true },
                    _ => quote! { r.#ident.is_some() },
                }
            });
            (
                quote! {
                    /// [`APPEND`] for a batch that gives keys: it also finds the rows a retry
                    /// of the batch stored already.
                    pub const APPEND_RETRYABLE: &str = #retry_sql;
                },
                quote! {
                    if rows.iter().any(|r| #(#given)||*) { APPEND_RETRYABLE } else { APPEND }
                },
            )
        }
        None => (quote! {}, quote! { APPEND }),
    };
    let moved = if conditional {
        quote! {
            if let Some(last) = moved {
                if pending > 0 {
                    return Ok(crate::generated::AppendOutcome::Moved { last });
                }
            }
        }
    } else {
        quote! { let _ = moved; }
    };
    quote! {
        #what
        pub const APPEND: &str = #sql;

        #retry_const

        /// One row of [`APPEND`]'s answer.
        #[derive(::sqlx::FromRow)]
        struct AppendAnswer {
            kind: i32,
            last: Option<#last_ty>,
            #(#answer_fields)*
        }

        /// Runs [`APPEND`]: `rows` appended under `arg`, as one statement.
        pub async fn append<'e, 'a>(
            executor: impl ::sqlx::PgExecutor<'e>,
            arg: &super::#parent_ty,
            #expected_param
            rows: &[super::#insert],
        ) -> Result<crate::generated::AppendOutcome<super::#row, #last_ty>, ::sqlx::Error> {
            let answer: Vec<AppendAnswer> = ::sqlx::query_as(#choose)
                #(.bind(#binds))*
                .fetch_all(executor)
                .await?;
            if answer.is_empty() && !rows.is_empty() {
                return Ok(crate::generated::AppendOutcome::NoParent);
            }
            let mut fresh = Vec::new();
            let mut stored = Vec::new();
            let mut moved = None;
            for a in answer {
                match a.kind {
                    0 => fresh.push(a),
                    1 => stored.push(super::#row { #(#stored_fields)* }),
                    2 => {
                        return Ok(crate::generated::AppendOutcome::Clash(
                            super::#row { #(#stored_fields)* },
                        ))
                    }
                    _ => moved = Some(a.last),
                }
            }
            // Each input is either a retry's stored row or the next new row (new rows come back
            // in the order their values were drawn, which is the given order).
            let mut slots: Vec<Option<super::#row>> = Vec::with_capacity(rows.len());
            let mut pending = 0usize;
            for new in rows {
                let found = #find_stored;
                pending += usize::from(found.is_none());
                slots.push(found);
            }
            #moved
            let mut fresh = fresh.into_iter();
            let mut out = Vec::with_capacity(rows.len());
            for (slot, new) in slots.into_iter().zip(rows) {
                match slot {
                    Some(row) => out.push(row),
                    None => {
                        let Some(a) = fresh.next() else {
                            return Err(::sqlx::Error::Protocol(
                                "APPEND returned fewer rows than it was given".into(),
                            ));
                        };
                        out.push(super::#row { #(#new_fields)* });
                    }
                }
            }
            Ok(crate::generated::AppendOutcome::Appended(out))
        }
    }
}
