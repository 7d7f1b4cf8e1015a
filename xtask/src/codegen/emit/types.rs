//! The Rust side of each column: its field name, value type, docs and renames, and how an
//! insert treats it. Every emitter works from these [`Field`]s.

use anyhow::{bail, Result};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::{column_doc, doc};
use super::names::{field_ident, pascal, Names};
use super::sql;
use crate::codegen::config::JsonType;
use crate::codegen::model::{Column, Identity, Schema, SqlType, Table};

/// How an insert struct carries a column, and so how the insert statements treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertShape {
    /// NOT NULL without a default: `T`, always sent.
    Required,
    /// Nullable without a default: `Option<T>`, `None` stores NULL.
    Nullable,
    /// NOT NULL with a default: `Option<T>`, `None` takes the default.
    Defaulted,
    /// Nullable with a default: `Option<Option<T>>`, `None` takes the default, `Some(None)`
    /// stores NULL.
    NullableDefaulted,
}

/// One column as the generated Rust sees it.
pub(crate) struct Field<'a> {
    /// The column in the model.
    pub(crate) column: &'a Column,
    /// The struct field.
    pub(crate) ident: Ident,
    /// The column's variant of the `…Iden` enum.
    pub(crate) variant: Ident,
    /// The Rust type of the column's values, without `Option` for nullability.
    pub(crate) base: TokenStream,
    /// The declared Rust type of a JSON column, if any.
    pub(crate) json: Option<&'a JsonType>,
    /// Doc attributes (comment, `--` lines, SQL definition).
    pub(crate) doc: TokenStream,
    /// `#[serde(rename = …)]` when the field name is not the SQL name.
    pub(crate) serde_rename: TokenStream,
    /// `#[sqlx(rename = …)]` when the field name is not the SQL name.
    pub(crate) sqlx_rename: TokenStream,
    /// True if the Rust type is `String` (arguments borrow it as `&str`).
    pub(crate) is_string: bool,
    /// What the column takes when an insert leaves it out, as SQL of the column's type: its
    /// DEFAULT as the migrations declare it, or the next value of a `BY DEFAULT` identity.
    pub(crate) default: Option<String>,
}

impl Field<'_> {
    /// True if an INSERT never names the column: identity and generated columns.
    pub(crate) fn is_db_filled(&self) -> bool {
        self.column.is_db_filled()
    }

    /// True if an UPDATE may set the column: neither generated nor identity ALWAYS.
    pub(crate) fn is_writable(&self) -> bool {
        self.column.generated.is_none() && self.column.identity != Some(Identity::Always)
    }

    /// How the insert struct carries the column.
    pub(crate) fn insert_shape(&self) -> InsertShape {
        match (self.default.is_some(), self.column.nullable) {
            (false, false) => InsertShape::Required,
            (false, true) => InsertShape::Nullable,
            (true, false) => InsertShape::Defaulted,
            (true, true) => InsertShape::NullableDefaulted,
        }
    }

    /// True if values are bound as `serde_json::Value` (an untyped JSON column): sqlx binds
    /// those through `sqlx::types::Json`.
    pub(crate) fn is_untyped_json(&self) -> bool {
        self.json.is_none() && matches!(self.column.ty, SqlType::Json | SqlType::Jsonb)
    }

    /// True for SQL array columns.
    pub(crate) fn is_array(&self) -> bool {
        matches!(self.column.ty, SqlType::Array(_))
    }

    /// The SQL type a parameter for this column is cast to.
    pub(crate) fn cast(&self) -> String {
        sql::cast_type(&self.column.ty)
    }

    /// `value` (an expression of type `&T`, `T` the base type) as something sqlx binds.
    pub(crate) fn bindable(&self, value: TokenStream) -> TokenStream {
        if self.is_untyped_json() {
            quote! { ::sqlx::types::Json(#value) }
        } else {
            value
        }
    }
}

/// The fields of `table`, in declared order: every column but the search documents
/// ([`search_columns`]).
pub(crate) fn fields<'a>(
    schema: &Schema,
    table: &'a Table,
    json_types: &'a [JsonType],
    names: &Names,
) -> Result<Vec<Field<'a>>> {
    table
        .columns
        .iter()
        .filter(|c| c.ty != SqlType::Tsvector)
        .map(|c| {
            let json = json_types
                .iter()
                .find(|j| j.table == table.name && j.column == c.name);
            let ident = field_ident(&c.name)?;
            let plain = ident.to_string().trim_start_matches("r#").to_string();
            let name = &c.name;
            let (serde_rename, sqlx_rename) = if plain == c.name {
                (quote! {}, quote! {})
            } else {
                (
                    quote! { #[serde(rename = #name)] },
                    quote! { #[sqlx(rename = #name)] },
                )
            };
            Ok(Field {
                column: c,
                ident,
                variant: format_ident!("{}", pascal(&c.name)),
                base: base_type(schema, table, c, json, names)?,
                json,
                doc: doc(&column_doc(c)),
                serde_rename,
                sqlx_rename,
                is_string: c.ty.is_text()
                    && json.is_none()
                    && table.check_in_values(&c.name).is_none(),
                default: default_sql(&table.name, c),
            })
        })
        .collect()
}

/// The search documents of `table` (`tsvector` columns): derived by the database, read only
/// by searches, so they have no field; the `…Iden` enum names them.
pub(crate) fn search_columns(table: &Table) -> Vec<&Column> {
    table
        .columns
        .iter()
        .filter(|c| c.ty == SqlType::Tsvector)
        .collect()
}

/// What `column` of `table` takes when an insert leaves it out, as SQL cast to its type.
fn default_sql(table: &str, column: &Column) -> Option<String> {
    let cast = sql::cast_type(&column.ty);
    match (&column.default, column.identity) {
        (Some(d), _) => Some(format!("({d})::{cast}")),
        // The sequence is looked up by name where it is used (no subquery: Citus refuses a
        // subquery in an INSERT's values).
        (None, Some(Identity::ByDefault)) => Some(format!(
            "nextval(pg_get_serial_sequence('{}', '{}')::regclass)::{cast}",
            sql::ident(table).replace('\'', "''"),
            column.name.replace('\'', "''")
        )),
        _ => None,
    }
}

/// The Rust type of a column's values (without `Option` for nullability).
fn base_type(
    schema: &Schema,
    table: &Table,
    column: &Column,
    json: Option<&JsonType>,
    names: &Names,
) -> Result<TokenStream> {
    if let Some(json) = json {
        let ty: syn::Type = syn::parse_str(json.rust_type)?;
        return Ok(quote! { ::sqlx::types::Json<#ty> });
    }
    if table.check_in_values(&column.name).is_some() {
        let name = names.table(&table.name).check_enum(&column.name);
        return Ok(quote! { #name });
    }
    sql_rust_type(schema, &column.ty)
}

/// The Rust type of values of a SQL type.
pub(crate) fn sql_rust_type(schema: &Schema, ty: &SqlType) -> Result<TokenStream> {
    Ok(match ty {
        SqlType::Uuid => quote! { ::uuid::Uuid },
        SqlType::Text | SqlType::Varchar | SqlType::Char => quote! { String },
        SqlType::Int2 => quote! { i16 },
        SqlType::Int4 => quote! { i32 },
        SqlType::Int8 => quote! { i64 },
        SqlType::Bool => quote! { bool },
        SqlType::Float4 => quote! { f32 },
        SqlType::Float8 => quote! { f64 },
        SqlType::Numeric => quote! { ::rust_decimal::Decimal },
        SqlType::Json | SqlType::Jsonb => quote! { ::serde_json::Value },
        SqlType::Timestamptz => quote! { ::chrono::DateTime<::chrono::Utc> },
        SqlType::Timestamp => quote! { ::chrono::NaiveDateTime },
        SqlType::Date => quote! { ::chrono::NaiveDate },
        SqlType::Time => quote! { ::chrono::NaiveTime },
        SqlType::Bytea => quote! { Vec<u8> },
        SqlType::Tsvector => bail!(
            "a tsvector column has no Rust type: it is a search document, read by searches only"
        ),
        SqlType::Array(inner) => {
            if matches!(**inner, SqlType::Array(_)) {
                bail!("arrays of arrays are not supported");
            }
            let inner = sql_rust_type(schema, inner)?;
            quote! { Vec<#inner> }
        }
        SqlType::Enum(name) => {
            if schema.enum_type(name).is_none() {
                bail!("enum type {name} is not defined");
            }
            let ident = format_ident!("{}", pascal(name));
            quote! { crate::generated::enums::#ident }
        }
    })
}
