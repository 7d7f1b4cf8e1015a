//! Statements of fixed shape, written at codegen time: each is a `&'static str` in the table's
//! `stmt` module with a function beside it that binds a typed argument in the order of the
//! text's placeholders — the two come from one [`Statement`] built here, so they cannot drift.
//!
//! Per table: `INSERT` (one `New…` row), `INSERT_BATCH` (any number of rows from one array per
//! column), `SELECT_BY_PK` / `UPDATE_BY_PK` / `DELETE_BY_PK`, and `SELECT_BY_…` for each unique
//! key. A column left `None` takes its DEFAULT exactly as the migrations declare it (read from
//! the model, never restated). Declared appends add `APPEND`; declared archives add `ARCHIVED`
//! and `RESTORE`, which read archived rows as the table is now.

use anyhow::{bail, Context, Result};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::doc;
use super::names::{field_ident, TableNames};
use super::patch::patchable;
use super::sql::{self, Params};
use super::types::{Field, InsertShape};
use crate::codegen::config::{Append, Archive};
use crate::codegen::model::{ForeignKey, Identity, Schema, SqlType, Table};

/// One statement being generated: its text and, in placeholder order, the bind expressions.
pub(crate) struct Statement {
    params: Params,
    pub(crate) binds: Vec<TokenStream>,
}

impl Statement {
    pub(crate) fn new() -> Self {
        Statement {
            params: Params::default(),
            binds: Vec::new(),
        }
    }

    /// A placeholder cast to `cast`, bound to `bind`.
    pub(crate) fn param(&mut self, cast: &str, bind: TokenStream) -> String {
        self.binds.push(bind);
        self.params.next(cast)
    }
}

/// What the generator knows about one table while writing its statements.
pub(crate) struct Ctx<'a> {
    pub(crate) schema: &'a Schema,
    pub(crate) table: &'a Table,
    pub(crate) names: &'a TableNames,
    pub(crate) fields: &'a [Field<'a>],
    pub(crate) appends: Vec<&'a Append>,
    pub(crate) archives: Vec<&'a Archive>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn field(&self, column: &str) -> Result<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.column.name == column)
            .with_context(|| format!("{} has no column {column}", self.table.name))
    }

    pub(crate) fn all_columns(&self) -> String {
        sql::idents(self.table.columns.iter().map(|c| c.name.as_str()))
    }

    pub(crate) fn insertable(&self) -> Vec<&Field<'a>> {
        self.fields.iter().filter(|f| !f.is_db_filled()).collect()
    }
}

/// `value` (a JSON array, or NULL) as the SQL array column's type, elements in order.
pub(crate) fn array_from_json(value: &str, ty: &SqlType) -> Result<String> {
    let SqlType::Array(inner) = ty else {
        unreachable!("only array columns")
    };
    let elements = match **inner {
        SqlType::Json | SqlType::Jsonb => "jsonb_array_elements",
        SqlType::Bytea => bail!("bytea[] columns cannot be inserted in batches"),
        _ => "jsonb_array_elements_text",
    };
    Ok(format!(
        "CASE WHEN {value} IS NULL THEN NULL ELSE ARRAY(SELECT \"e\" FROM {elements}({value}) \
         WITH ORDINALITY AS \"a\"(\"e\", \"o\") ORDER BY \"o\")::{} END",
        sql::cast_type(ty)
    ))
}

/// The value of an argument field as sqlx binds it (`Json` around untyped JSON).
pub(crate) fn bind_ref(f: &Field, value: TokenStream) -> TokenStream {
    f.bindable(value)
}

/// `option.map(sqlx::types::Json)`, or `option` itself when nothing needs wrapping. (Every
/// wrapping is `Json`: untyped JSON values, and array columns sent as JSON.)
pub(crate) fn option_map(wraps: bool, option: TokenStream) -> TokenStream {
    if wraps {
        quote! { #option.map(::sqlx::types::Json) }
    } else {
        option
    }
}

/// A struct of typed arguments for the columns `columns` (text borrowed as `&str`), and how to
/// bind each field of a value `arg` of it.
pub(crate) struct Args {
    pub(crate) item: TokenStream,
    pub(crate) ty: TokenStream,
    /// `(column, cast, bind expression over `arg`)` in column order.
    pub(crate) fields: Vec<(String, String, TokenStream)>,
}

pub(crate) fn args_struct(ctx: &Ctx, name: &Ident, columns: &[String], docs: &str) -> Result<Args> {
    let mut defs = Vec::new();
    let mut binds = Vec::new();
    let mut borrows = false;
    for column in columns {
        let f = ctx.field(column)?;
        let (ident, docs) = (&f.ident, &f.doc);
        if f.is_string {
            borrows = true;
            defs.push(quote! { #docs pub #ident: &'a str, });
            binds.push((column.clone(), f.cast(), quote! { arg.#ident }));
        } else {
            let base = &f.base;
            defs.push(quote! { #docs pub #ident: #base, });
            binds.push((
                column.clone(),
                f.cast(),
                bind_ref(f, quote! { &arg.#ident }),
            ));
        }
    }
    let docs = doc(docs);
    let (generics, ty) = if borrows {
        (quote! { <'a> }, quote! { #name<'a> })
    } else {
        (quote! {}, quote! { #name })
    };
    Ok(Args {
        item: quote! {
            #docs
            #[derive(Debug, Clone, PartialEq)]
            pub struct #name #generics {
                #(#defs)*
            }
        },
        ty,
        fields: binds,
    })
}

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

/// One insertable column of a batch: its value over the unnest alias `"i"` (its default applied
/// where the input left it out), the input value as sent, and when the input gave one.
pub(crate) struct BatchColumn {
    /// The value stored: the input's, or the default.
    pub(crate) value: String,
    /// The input's value (converted to the column's type).
    pub(crate) input: String,
    /// SQL true when the input gave a value; `None` when it always does.
    pub(crate) given: Option<String>,
}

/// The arrays of a batch insert: one placeholder per array (bound in the same order), the
/// unnest column aliases, and per insertable column its [`BatchColumn`] (`None` for a column
/// `skip` takes elsewhere).
pub(crate) struct Arrays {
    pub(crate) placeholders: Vec<String>,
    pub(crate) aliases: Vec<String>,
    pub(crate) columns: Vec<Option<BatchColumn>>,
}

impl Arrays {
    /// `unnest(…) WITH ORDINALITY AS "i"(…, "ord")`.
    pub(crate) fn unnest(&self) -> String {
        format!(
            "unnest({}) WITH ORDINALITY AS \"i\"({}, \"ord\")",
            self.placeholders.join(", "),
            self.aliases.join(", ")
        )
    }
}

/// The arrays for `insertable` (a table's insertable fields), one array per column (two for a
/// nullable column with a default: whether to take it, and the value); array columns travel as
/// one JSON array per row, since unnest would flatten them.
pub(crate) fn batch_arrays(
    insertable: &[&Field],
    stmt: &mut Statement,
    skip: &dyn Fn(&Field) -> bool,
) -> Result<Arrays> {
    let mut arrays = Arrays {
        placeholders: Vec::new(),
        aliases: Vec::new(),
        columns: Vec::new(),
    };
    let alias = |arrays: &mut Arrays, placeholder: String| -> String {
        arrays.placeholders.push(placeholder);
        let a = format!("v{}", arrays.placeholders.len());
        arrays.aliases.push(sql::ident(&a));
        format!("\"i\".{}", sql::ident(&a))
    };
    for f in insertable {
        if skip(f) {
            arrays.columns.push(None);
            continue;
        }
        let ident = &f.ident;
        let wraps = f.is_array() || f.is_untyped_json();
        let cast = if f.is_array() {
            "jsonb[]".to_string()
        } else {
            format!("{}[]", f.cast())
        };
        let value = if wraps {
            quote! { ::sqlx::types::Json(&r.#ident) }
        } else {
            quote! { &r.#ident }
        };
        let convert = |v: String| -> Result<String> {
            if f.is_array() {
                array_from_json(&v, &f.column.ty)
            } else {
                Ok(v)
            }
        };
        let optional = option_map(wraps, quote! { r.#ident.as_ref() });
        let column = match f.insert_shape() {
            InsertShape::Required => {
                let p = stmt.param(&cast, quote! { crate::generated::column(rows, |r| #value) });
                let v = convert(alias(&mut arrays, p))?;
                BatchColumn {
                    value: v.clone(),
                    input: v,
                    given: None,
                }
            }
            InsertShape::Nullable => {
                let p = stmt.param(
                    &cast,
                    quote! { crate::generated::column(rows, |r| #optional) },
                );
                let v = convert(alias(&mut arrays, p))?;
                BatchColumn {
                    value: v.clone(),
                    input: v,
                    given: None,
                }
            }
            InsertShape::Defaulted => {
                let p = stmt.param(
                    &cast,
                    quote! { crate::generated::column(rows, |r| #optional) },
                );
                let raw = alias(&mut arrays, p);
                let v = convert(raw.clone())?;
                let default = f.default.clone().expect("a defaulted column has a default");
                BatchColumn {
                    value: format!("coalesce({v}, {default})"),
                    input: v,
                    given: Some(format!("{raw} IS NOT NULL")),
                }
            }
            InsertShape::NullableDefaulted => {
                let d = stmt.param(
                    "bool[]",
                    quote! { crate::generated::column(rows, |r| r.#ident.is_none()) },
                );
                let d = alias(&mut arrays, d);
                let inner =
                    option_map(wraps, quote! { r.#ident.as_ref().and_then(|v| v.as_ref()) });
                let p = stmt.param(&cast, quote! { crate::generated::column(rows, |r| #inner) });
                let v = convert(alias(&mut arrays, p))?;
                let default = f.default.clone().expect("a defaulted column has a default");
                BatchColumn {
                    value: format!("CASE WHEN {d} THEN {default} ELSE {v} END"),
                    input: v,
                    given: Some(format!("NOT {d}")),
                }
            }
        };
        arrays.columns.push(Some(column));
    }
    Ok(arrays)
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

/// The foreign key named `name` of `table`, and the columns it refers to (the referenced
/// table's primary key when the SQL names none).
pub(crate) fn foreign_key<'s>(
    schema: &'s Schema,
    table: &'s Table,
    name: &str,
) -> Result<(&'s ForeignKey, &'s Table, Vec<String>)> {
    let fk = table
        .foreign_keys
        .iter()
        .find(|f| f.name == name)
        .with_context(|| format!("{} has no foreign key {name}", table.name))?;
    let parent = schema
        .table(&fk.foreign_table)
        .with_context(|| format!("{name} refers to a missing table {}", fk.foreign_table))?;
    let referred = if fk.referred_columns.is_empty() {
        parent.primary_key_columns().to_vec()
    } else {
        fk.referred_columns.clone()
    };
    if referred.len() != fk.columns.len() {
        bail!(
            "{name}: {} columns refer to {}",
            fk.columns.len(),
            referred.len()
        );
    }
    Ok((fk, parent, referred))
}

/// How the rows a declared [`Archive`] holds read as the table's rows of today: over the
/// archive row `"a"` and the record `"r"` populated from its JSON, each column from its key in
/// the JSON, or its default when the row was archived before the column existed.
pub(crate) struct ArchiveView<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// The declaration.
    pub(crate) archive: &'c Archive,
    /// The archive table.
    pub(crate) table: &'a Table,
    json_ref: String,
}

impl<'c, 'a> ArchiveView<'c, 'a> {
    pub(crate) fn new(ctx: &'c Ctx<'a>, archive: &'c Archive) -> Result<Self> {
        let table = ctx.schema.table(archive.archive).with_context(|| {
            format!("archive table {} is not in the migrations", archive.archive)
        })?;
        let json = table.column(archive.json_column).with_context(|| {
            format!("{} has no column {}", archive.archive, archive.json_column)
        })?;
        if !matches!(json.ty, SqlType::Json | SqlType::Jsonb) {
            bail!(
                "{}.{} holds archived rows, so it must be json or jsonb",
                archive.archive,
                archive.json_column
            );
        }
        ctx.field(archive.order_by)?;
        Ok(ArchiveView {
            ctx,
            archive,
            table,
            json_ref: format!("\"a\".{}", sql::ident(archive.json_column)),
        })
    }

    /// `CROSS JOIN LATERAL jsonb_populate_record(NULL::table, "a".json) AS "r"`.
    pub(crate) fn populate(&self) -> String {
        format!(
            "CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, {}) AS \"r\"",
            sql::ident(&self.ctx.table.name),
            self.json_ref
        )
    }

    /// Every column an INSERT may write: all but generated ones (recomputed on insert),
    /// identity columns included.
    pub(crate) fn writable(&self) -> Vec<&'c Field<'a>> {
        self.ctx
            .fields
            .iter()
            .filter(|f| f.column.generated.is_none())
            .collect()
    }

    /// The value of writable column `f` of an archived row.
    pub(crate) fn restored(&self, f: &Field) -> String {
        let column = f.column;
        // A column the archive row holds itself (same name and type: its key, its parent)
        // is read from there: the archive's own constraints tie it to the JSON, and a statement
        // that takes its key and its distribution column from the archive row is one a
        // distributed database can run where that row is.
        if self
            .table
            .column(&column.name)
            .is_some_and(|own| own.ty == column.ty)
        {
            return format!("\"a\".{}", sql::ident(&column.name));
        }
        let value = format!("\"r\".{}", sql::ident(&column.name));
        let fallback = match column.identity {
            // The order of restored rows is theirs as archived: no value is drawn for it (an
            // archive without it cannot be restored, and says so).
            Some(_) if column.name == self.archive.order_by => None,
            // An identity column the archive predates: its next value.
            Some(_) => Some(format!(
                "nextval(pg_get_serial_sequence('{}', '{}')::regclass)",
                sql::ident(&self.ctx.table.name).replace('\'', "''"),
                column.name.replace('\'', "''")
            )),
            None => f.default.clone(),
        };
        match fallback {
            Some(fallback) => format!(
                "CASE WHEN {} ? '{}' THEN {value} ELSE {fallback} END",
                self.json_ref,
                column.name.replace('\'', "''")
            ),
            None => value,
        }
    }

    /// `restored AS "column", …` for every writable column (the inner select of a read).
    pub(crate) fn inner_columns(&self) -> String {
        self.writable()
            .iter()
            .map(|f| format!("{} AS {}", self.restored(f), sql::ident(&f.column.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every column of the table over the inner select `"x"`: writable ones as restored,
    /// generated ones computed from them as the table would.
    pub(crate) fn outer_columns(&self) -> String {
        self.ctx
            .fields
            .iter()
            .map(|f| match &f.column.generated {
                Some(expr) => format!("({expr})::{} AS {}", f.cast(), sql::ident(&f.column.name)),
                None => format!("\"x\".{}", sql::ident(&f.column.name)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
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
