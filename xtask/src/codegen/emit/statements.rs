//! Statements of fixed shape, written at codegen time: each is a `&'static str` in the table's
//! `stmt` module with a function beside it that binds a typed argument in the order of the
//! text's placeholders — the two come from one [`Statement`] built here, so they cannot drift.
//!
//! Per table: `INSERT` (one `New…` row), `INSERT_BATCH` (any number of rows from one array per
//! column), `SELECT_BY_PK` / `UPDATE_BY_PK` / `DELETE_BY_PK`, and `SELECT_BY_…` for each unique
//! key. A column left `None` takes its DEFAULT exactly as the migrations declare it (read from
//! the model, never restated). Declared appends add `APPEND`; declared archives add `ARCHIVED`
//! and `RESTORE`, which read archived rows as the table is now.

use anyhow::Result;
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::doc;
use super::names::field_ident;
use super::patch::patchable;
use super::sql;
use super::types::{Field, InsertShape};
use crate::codegen::config::Archive;
use crate::codegen::model::Identity;

use super::parts::{
    args_struct, batch_arrays, bind_ref, foreign_key, option_map, ArchiveView, Args, Ctx, Statement,
};

/// `"c1" = $1::t1 AND "c2" = $2::t2` over `args`, qualified by `prefix` when given.
fn where_args(stmt: &mut Statement, prefix: Option<&str>, args: &Args) -> String {
    args.fields
        .iter()
        .map(|(column, cast, bind)| {
            let column = match prefix {
                Some(p) => format!("{p}.{}", sql::ident(column)),
                None => sql::ident(column),
            };
            format!("{column} = {}", stmt.param(cast, bind.clone()))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A `pub const NAME: &str` with its SQL shown in the docs, and the function binding it.
pub(crate) fn emit(
    name: &str,
    what: &str,
    sql: &str,
    stmt: Statement,
    function: TokenStream,
) -> (TokenStream, TokenStream) {
    let const_ident = format_ident!("{name}");
    let docs = doc(what);
    let binds = &stmt.binds;
    let constant = quote! { #docs pub const #const_ident: &str = #sql; };
    let body = quote! { ::sqlx::query_as(#const_ident) #(.bind(#binds))* };
    (constant, quote! { #function { #body } })
}

/// The statements of one table: argument structs (outside `stmt`) and the `stmt` module.
pub(crate) fn statements(ctx: &Ctx) -> Result<TokenStream> {
    let mut outer = Vec::new();
    let mut inner = Vec::new();
    let row = ctx.names.row();
    let returning = ctx.all_columns();
    let query = |lifetime: TokenStream| quote! { crate::generated::Query<#lifetime, super::#row> };

    // INSERT one row.
    {
        let insert = ctx.names.insert();
        let mut stmt = Statement::new();
        let insertable = ctx.insertable();
        let sql = if insertable.is_empty() {
            format!(
                "INSERT INTO {} DEFAULT VALUES RETURNING {returning}",
                sql::ident(&ctx.table.name)
            )
        } else {
            let mut values = Vec::new();
            for f in &insertable {
                values.push(insert_value(&mut stmt, f));
            }
            format!(
                "INSERT INTO {} ({}) VALUES ({}) RETURNING {returning}",
                sql::ident(&ctx.table.name),
                sql::idents(insertable.iter().map(|f| f.column.name.as_str())),
                values.join(", ")
            )
        };
        let q = query(quote! { 'a });
        let (c, f) = emit(
            "INSERT",
            &format!(
                "Inserts one `{}` row; `RETURNING` every column.",
                ctx.table.name
            ),
            &sql,
            stmt,
            quote! {
                /// Binds `row` to [`INSERT`].
                pub fn insert<'a>(row: &'a super::#insert) -> #q
            },
        );
        inner.push(c);
        inner.push(f);
    }

    // INSERT many rows from arrays.
    {
        let insert = ctx.names.insert();
        let mut stmt = Statement::new();
        let sql = batch_insert(ctx, &mut stmt)?;
        let q = query(quote! { 'a });
        let (c, f) = emit(
            "INSERT_BATCH",
            &format!(
                "Inserts any number of `{}` rows in one statement, from one array per column, in the given order; `RETURNING` every column of each, in that order.",
                ctx.table.name
            ),
            &sql,
            stmt,
            quote! {
                /// Binds `rows` to [`INSERT_BATCH`].
                pub fn insert_batch<'a>(rows: &'a [super::#insert]) -> #q
            },
        );
        inner.push(c);
        inner.push(f);
    }

    // By primary key.
    let pk = ctx.table.primary_key_columns().to_vec();
    if !pk.is_empty() {
        let key_name = ctx.names.key();
        let key = args_struct(
            ctx,
            &key_name,
            &pk,
            &format!(
                "The primary key of a `{}` row ({}).",
                ctx.table.name,
                pk.join(", ")
            ),
        )?;
        outer.push(key.item.clone());
        let key_ty = &key.ty;
        let q = query(quote! { 'a });

        let mut stmt = Statement::new();
        let sql = format!(
            "SELECT {returning} FROM {} WHERE {}",
            sql::ident(&ctx.table.name),
            where_args(&mut stmt, None, &key)
        );
        let (c, f) = emit(
            "SELECT_BY_PK",
            &format!("The `{}` row with a given primary key.", ctx.table.name),
            &sql,
            stmt,
            quote! {
                /// Binds `arg` to [`SELECT_BY_PK`].
                pub fn select_by_pk<'a>(arg: &'a super::#key_ty) -> #q
            },
        );
        inner.push(c);
        inner.push(f);

        let mut stmt = Statement::new();
        let sql = format!(
            "DELETE FROM {} WHERE {} RETURNING {returning}",
            sql::ident(&ctx.table.name),
            where_args(&mut stmt, None, &key)
        );
        let (c, f) = emit(
            "DELETE_BY_PK",
            &format!(
                "Deletes the `{}` row with a given primary key; `RETURNING` it.",
                ctx.table.name
            ),
            &sql,
            stmt,
            quote! {
                /// Binds `arg` to [`DELETE_BY_PK`].
                pub fn delete_by_pk<'a>(arg: &'a super::#key_ty) -> #q
            },
        );
        inner.push(c);
        inner.push(f);

        let patchable = patchable(ctx.table, ctx.fields);
        if !patchable.is_empty() {
            let patch = ctx.names.patch();
            let mut stmt = Statement::new();
            let mut sets = Vec::new();
            for f in &patchable {
                let (ident, column) = (&f.ident, sql::ident(&f.column.name));
                if f.column.nullable {
                    let set = stmt.param("bool", quote! { patch.#ident.is_some() });
                    let value = option_map(
                        f.is_untyped_json(),
                        quote! { patch.#ident.as_ref().and_then(|v| v.as_ref()) },
                    );
                    let value = stmt.param(&f.cast(), value);
                    sets.push(format!(
                        "{column} = CASE WHEN {set} THEN {value} ELSE {column} END"
                    ));
                } else {
                    let value = option_map(f.is_untyped_json(), quote! { patch.#ident.as_ref() });
                    let value = stmt.param(&f.cast(), value);
                    sets.push(format!("{column} = coalesce({value}, {column})"));
                }
            }
            let sql = format!(
                "UPDATE {} SET {} WHERE {} RETURNING {returning}",
                sql::ident(&ctx.table.name),
                sets.join(", "),
                where_args(&mut stmt, None, &key)
            );
            let q = query(quote! { 'a });
            let (c, f) = emit(
                "UPDATE_BY_PK",
                &format!(
                    "Applies a patch to the `{}` row with a given primary key (a field left `None` keeps its column); `RETURNING` the row.",
                    ctx.table.name
                ),
                &sql,
                stmt,
                quote! {
                    /// Binds `arg` and `patch` to [`UPDATE_BY_PK`]; `None` when the patch changes nothing.
                    pub fn update_by_pk<'a>(arg: &'a super::#key_ty, patch: &'a super::#patch) -> Option<#q>
                },
            );
            // The function returns an Option: wrap the body.
            let f = wrap_option(f, quote! { patch.is_empty() });
            inner.push(c);
            inner.push(f);
        }
    }

    // By each unique key.
    for key in &ctx.table.unique {
        let name = ctx.names.by(&key.columns);
        let args = args_struct(
            ctx,
            &name,
            &key.columns,
            &format!(
                "Arguments of a lookup of `{}` by its unique key `{}` ({}).",
                ctx.table.name,
                key.name,
                key.columns.join(", ")
            ),
        )?;
        outer.push(args.item.clone());
        let ty = &args.ty;
        let mut stmt = Statement::new();
        let sql = format!(
            "SELECT {returning} FROM {} WHERE {}",
            sql::ident(&ctx.table.name),
            where_args(&mut stmt, None, &args)
        );
        let words: Vec<String> = key.columns.iter().map(|c| super::names::snake(c)).collect();
        let const_name = format!("SELECT_BY_{}", words.join("_").to_ascii_uppercase());
        let fn_name = format_ident!("select_by_{}", words.join("_"));
        let fn_doc = doc(&format!("Binds `arg` to [`{const_name}`]."));
        let q = query(quote! { 'a });
        let (c, f) = emit(
            &const_name,
            &format!(
                "The `{}` row with given values of unique key `{}`.",
                ctx.table.name, key.name
            ),
            &sql,
            stmt,
            quote! { #fn_doc pub fn #fn_name<'a>(arg: &'a super::#ty) -> #q },
        );
        inner.push(c);
        inner.push(f);
    }

    for append in &ctx.appends {
        let (o, i) = super::append::append_statement(ctx, append)?;
        outer.push(o);
        inner.push(i);
    }
    for archive in &ctx.archives {
        let (o, i) = archive_statements(ctx, archive)?;
        outer.push(o);
        inner.push(i);
    }

    let module_doc = doc(&format!(
        "Statements of fixed shape on `{}`: each SQL text was written by `cargo xtask codegen` from the migrations, and the function beside it binds its typed arguments in the text's placeholder order. Run them with sqlx (`fetch_one`, `fetch_optional`, `fetch_all`) on a pool, a connection or a transaction.",
        ctx.table.name
    ));
    Ok(quote! {
        #(#outer)*

        #module_doc
        // Arguments are bound by reference whatever their type, which is what a generator can
        // write without knowing which types are `Copy`.
        #[allow(clippy::needless_borrows_for_generic_args, clippy::clone_on_copy)]
        pub mod stmt {
            // The table's types (row, enums) by the names its fields use.
            #[allow(unused_imports)]
            use super::*;

            #(#inner)*
        }
    })
}

/// Turns `fn … -> Option<Q> { body }` into `fn … -> Option<Q> { if empty { None } else { Some(body) } }`.
fn wrap_option(function: TokenStream, empty: TokenStream) -> TokenStream {
    let item: syn::ItemFn = syn::parse2(function).expect("a generated function parses");
    let (attrs, vis, sig, block) = (&item.attrs, &item.vis, &item.sig, &item.block);
    quote! {
        #(#attrs)* #vis #sig {
            if #empty {
                return None;
            }
            Some(#block)
        }
    }
}

/// The value placeholder of an insertable column in a one-row INSERT.
fn insert_value(stmt: &mut Statement, f: &Field) -> String {
    let ident = &f.ident;
    let cast = f.cast();
    let optional = option_map(f.is_untyped_json(), quote! { row.#ident.as_ref() });
    match f.insert_shape() {
        InsertShape::Required => stmt.param(&cast, bind_ref(f, quote! { &row.#ident })),
        InsertShape::Nullable => stmt.param(&cast, optional),
        InsertShape::Defaulted => {
            let p = stmt.param(&cast, optional);
            let default = f.default.clone().expect("a defaulted column has a default");
            format!("coalesce({p}, {default})")
        }
        InsertShape::NullableDefaulted => {
            let use_default = stmt.param("bool", quote! { row.#ident.is_none() });
            let inner = option_map(
                f.is_untyped_json(),
                quote! { row.#ident.as_ref().and_then(|v| v.as_ref()) },
            );
            let p = stmt.param(&cast, inner);
            let default = f.default.clone().expect("a defaulted column has a default");
            format!("CASE WHEN {use_default} THEN {default} ELSE {p} END")
        }
    }
}

/// `INSERT INTO t (…) SELECT … FROM unnest($…) WITH ORDINALITY AS i(…) ORDER BY i.ord
/// RETURNING …` (every column, in the input order).
fn batch_insert(ctx: &Ctx, stmt: &mut Statement) -> Result<String> {
    let table = sql::ident(&ctx.table.name);
    let returning = ctx.all_columns();
    let insertable = ctx.insertable();
    if insertable.is_empty() {
        let count = stmt.param("int8", quote! { rows.len() as i64 });
        return Ok(format!(
            "INSERT INTO {table} SELECT FROM generate_series(1, {count}) RETURNING {returning}"
        ));
    }
    let arrays = batch_arrays(&insertable, stmt, &|_| false)?;
    let values: Vec<&str> = arrays
        .columns
        .iter()
        .map(|c| c.as_ref().expect("no column skipped").value.as_str())
        .collect();
    Ok(format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {} ORDER BY \"i\".\"ord\" RETURNING {returning}",
        sql::idents(insertable.iter().map(|f| f.column.name.as_str())),
        values.join(", "),
        arrays.unnest()
    ))
}

/// `ARCHIVED` (read archived rows as the table is now) and `RESTORE` (insert them back), both
/// selecting the archive rows by the columns of the archive's foreign key `archive.by`.
fn archive_statements(ctx: &Ctx, archive: &Archive) -> Result<(TokenStream, TokenStream)> {
    let view = ArchiveView::new(ctx, archive)?;
    let archive_table = view.table;
    let (fk, _, _) = foreign_key(ctx.schema, archive_table, archive.by)?;
    let args_name = format_ident!("{}Archived", ctx.names.row);
    // The argument fields are columns of the archive table.
    let archive_fields: Vec<(Ident, TokenStream, String, bool)> = fk
        .columns
        .iter()
        .map(|c| {
            let column = archive_table.column(c).expect("a key column exists");
            let ident = field_ident(c)?;
            let is_string = column.ty.is_text();
            let base = super::types::sql_rust_type(ctx.schema, &column.ty)?;
            Ok((ident, base, c.clone(), is_string))
        })
        .collect::<Result<_>>()?;
    let borrows = archive_fields.iter().any(|f| f.3);
    let defs = archive_fields
        .iter()
        .map(|(ident, base, column, is_string)| {
            let docs = doc(&format!("`{}.{column}`", archive.archive));
            if *is_string {
                quote! { #docs pub #ident: &'a str, }
            } else {
                quote! { #docs pub #ident: #base, }
            }
        });
    let (generics, ty) = if borrows {
        (quote! { <'a> }, quote! { #args_name<'a> })
    } else {
        (quote! {}, quote! { #args_name })
    };
    let args_doc = doc(&format!(
        "Which archived `{}` rows [`stmt::archived`] and [`stmt::restore`] take: the `{}` rows with these values of foreign key `{}`.",
        ctx.table.name, archive.archive, fk.name
    ));
    let item = quote! {
        #args_doc
        #[derive(Debug, Clone, PartialEq)]
        pub struct #args_name #generics {
            #(#defs)*
        }
    };

    let source = |stmt: &mut Statement| -> String {
        let conds = archive_fields
            .iter()
            .map(|(ident, _, column, is_string)| {
                let cast = sql::cast_type(&archive_table.column(column).expect("exists").ty);
                let bind = if *is_string {
                    quote! { arg.#ident }
                } else {
                    quote! { &arg.#ident }
                };
                format!("\"a\".{} = {}", sql::ident(column), stmt.param(&cast, bind))
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "FROM {} AS \"a\" {} WHERE {conds}",
            sql::ident(archive.archive),
            view.populate(),
        )
    };
    let writable = view.writable();
    let restored = |f: &Field| view.restored(f);
    let order = ctx.field(archive.order_by)?;

    // ARCHIVED: the restored values, and generated columns computed from them as the table
    // would.
    let mut stmt = Statement::new();
    let inner_select = view.inner_columns();
    let outer_select = view.outer_columns();
    let sql = format!(
        "SELECT {outer_select} FROM (SELECT {inner_select} {}) AS \"x\" ORDER BY \"x\".{}",
        source(&mut stmt),
        sql::ident(&order.column.name)
    );
    let row = ctx.names.row();
    let (c1, f1) = emit(
        "ARCHIVED",
        &format!(
            "The `{}` rows archived in `{}` under given values of `{}`, read as `{}` rows of today's shape (a column the archive predates takes its default), in `{}` order.",
            ctx.table.name, archive.archive, fk.name, ctx.table.name, archive.order_by
        ),
        &sql,
        stmt,
        quote! {
            /// Binds `arg` to [`ARCHIVED`].
            pub fn archived<'a>(arg: &'a super::#ty) -> crate::generated::Query<'a, super::#row>
        },
    );

    // RESTORE: insert them back, exactly, with identity values restored too.
    let mut stmt = Statement::new();
    let overriding = if writable
        .iter()
        .any(|f| f.column.identity == Some(Identity::Always))
    {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let select = writable
        .iter()
        .map(|f| restored(f))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        // The target has an alias of its own, which RETURNING names: Citus, pushing the
        // statement down to a shard, names the shard in the INSERT but keeps a bare RETURNING
        // column's table name.
        "INSERT INTO {} AS \"t\" ({}){overriding} SELECT {select} {} ORDER BY {} RETURNING {}",
        sql::ident(&ctx.table.name),
        sql::idents(writable.iter().map(|f| f.column.name.as_str())),
        source(&mut stmt),
        restored(order),
        ctx.fields
            .iter()
            .map(|f| format!("\"t\".{}", sql::ident(&f.column.name)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (c2, f2) = emit(
        "RESTORE",
        &format!(
            "Inserts the `{}` rows archived in `{}` under given values of `{}` back, every column as archived (a column the archive predates takes its default; one that is NOT NULL without a default fails the statement with a NOT NULL violation naming it); `RETURNING` the restored rows. The archive rows stay: delete them in the same transaction.",
            ctx.table.name, archive.archive, fk.name
        ),
        &sql,
        stmt,
        quote! {
            /// Binds `arg` to [`RESTORE`].
            pub fn restore<'a>(arg: &'a super::#ty) -> crate::generated::Query<'a, super::#row>
        },
    );
    Ok((item, quote! { #c1 #f1 #c2 #f2 }))
}
