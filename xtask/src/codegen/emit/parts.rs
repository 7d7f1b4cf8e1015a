//! The pieces every generated statement is built from: the statement under construction
//! ([`Statement`]: its text and the bindings of its placeholders, in order), the table it is
//! for ([`Ctx`]), typed argument structs, the per-column arrays of a batch, foreign keys and
//! the view of an archive. [`statements`](super::statements) and [`append`](super::append)
//! both build on them; neither imports the other's helpers.

use anyhow::{bail, Context, Result};
use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::docs::doc;
use super::names::TableNames;
use super::sql::{self, Params};
use super::types::{Field, InsertShape};
use crate::codegen::config::{Append, Archive};
use crate::codegen::model::{ForeignKey, Schema, SqlType, Table};

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
        sql::idents(self.fields.iter().map(|f| f.column.name.as_str()))
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
