//! sea-query builders for composing statements at run time: `select`, `insert`, `insert_many`,
//! `insert_rows`, and `select_by_pk` / `update_by_pk` / `delete_by_pk`. Values go in as
//! sea-query values (bound as parameters by sea-query-sqlx), never into the text.

use anyhow::Result;
use proc_macro2::TokenStream;
use quote::quote;

use super::docs::doc;
use super::names::TableNames;
use super::patch::patchable;
use super::types::{sql_rust_type, Field, InsertShape};
use crate::codegen::model::{Column, Schema, SqlType, Table};

/// An expression turning `value` (a reference to the column's base Rust type) into a
/// `sea_query::SimpleExpr`. A declared JSON type is serialized with `?`: a value that does not
/// serialize (a content block that would not be stored as itself) is the builder's error, never
/// a panic, so the expression belongs in a function returning `Result<_, serde_json::Error>`.
fn value_expr(field: &Field, value: TokenStream) -> TokenStream {
    if field.json.is_some() {
        // JSON columns are never of an enum type: nothing to cast.
        return quote! { crate::generated::json_val(#value)? };
    }
    let to_value = match &field.column.ty {
        SqlType::Array(inner) if matches!(**inner, SqlType::Enum(_)) => quote! {
            ::sea_query::Value::Array(
                ::sea_query::ArrayType::String,
                Some(Box::new(
                    ::std::iter::IntoIterator::into_iter(#value)
                        .map(|v| ::sea_query::Value::from(*v))
                        .collect(),
                )),
            )
        },
        _ => return cast(field.column, quote! { crate::generated::val(#value) }),
    };
    cast(
        field.column,
        quote! { ::sea_query::SimpleExpr::from(#to_value) },
    )
}

/// The SQL NULL of the column's type, as a `SimpleExpr`.
fn null_expr(schema: &Schema, table: &Table, field: &Field) -> Result<TokenStream> {
    let column = field.column;
    let base = if field.json.is_some() {
        quote! { ::serde_json::Value }
    } else if table.check_in_values(&column.name).is_some() {
        quote! { String }
    } else {
        match &column.ty {
            SqlType::Enum(_) => quote! { String },
            SqlType::Array(inner) if matches!(**inner, SqlType::Enum(_)) => quote! { Vec<String> },
            ty => sql_rust_type(schema, ty)?,
        }
    };
    Ok(cast(
        column,
        quote! { ::sea_query::SimpleExpr::from(::sea_query::Value::from(None::<#base>)) },
    ))
}

/// Enum values (and arrays of them) are sent as text and cast to the enum type.
fn cast(column: &Column, expr: TokenStream) -> TokenStream {
    let cast = match &column.ty {
        SqlType::Enum(name) => Some(name.clone()),
        SqlType::Array(inner) => match &**inner {
            SqlType::Enum(name) => Some(format!("{name}[]")),
            _ => None,
        },
        _ => None,
    };
    match cast {
        Some(cast) => quote! {
            ::sea_query::ExprTrait::cast_as(#expr, ::sea_query::Alias::new(#cast))
        },
        None => expr,
    }
}

pub(crate) fn builders(
    schema: &Schema,
    table: &Table,
    names: &TableNames,
    fields: &[Field],
) -> Result<TokenStream> {
    let (row, insert, patch, iden) = (names.row(), names.insert(), names.patch(), names.iden());
    let table_name = table.name.as_str();

    // Insert: DB-filled columns absent; `DEFAULT` where an optional column is `None`.
    let insertable: Vec<&Field> = fields.iter().filter(|f| !f.is_db_filled()).collect();
    let insert_columns: Vec<_> = insertable.iter().map(|f| &f.variant).collect();
    let mut insert_values = Vec::new();
    for f in &insertable {
        let ident = &f.ident;
        let some = value_expr(f, quote! { v });
        let null = null_expr(schema, table, f)?;
        let default = quote! { ::sea_query::Expr::cust("DEFAULT") };
        insert_values.push(match f.insert_shape() {
            InsertShape::Required => value_expr(f, quote! { &row.#ident }),
            InsertShape::Nullable => {
                quote! { match &row.#ident { Some(v) => #some, None => #null } }
            }
            InsertShape::Defaulted => {
                quote! { match &row.#ident { Some(v) => #some, None => #default } }
            }
            InsertShape::NullableDefaulted => quote! {
                match &row.#ident { Some(Some(v)) => #some, Some(None) => #null, None => #default }
            },
        });
    }
    let insert_count = insertable.len();

    // Whole rows (restoring rows exactly): every column an INSERT may name.
    let restorable: Vec<&Field> = fields.iter().filter(|f| f.is_writable()).collect();
    let restore_columns: Vec<_> = restorable.iter().map(|f| &f.variant).collect();
    let mut restore_values = Vec::new();
    for f in &restorable {
        let ident = &f.ident;
        let some = value_expr(f, quote! { v });
        restore_values.push(if f.column.nullable {
            let null = null_expr(schema, table, f)?;
            quote! { match &row.#ident { Some(v) => #some, None => #null } }
        } else {
            value_expr(f, quote! { &row.#ident })
        });
    }
    let restore_count = restorable.len();

    // Patch: each field that is `Some` sets its column.
    let mut patch_sets = Vec::new();
    for f in patchable(table, fields) {
        let (ident, variant) = (&f.ident, &f.variant);
        let some = value_expr(f, quote! { v });
        patch_sets.push(if f.column.nullable {
            let null = null_expr(schema, table, f)?;
            quote! {
                match &patch.#ident {
                    Some(Some(v)) => values.push((#iden::#variant, #some)),
                    Some(None) => values.push((#iden::#variant, #null)),
                    None => {}
                }
            }
        } else {
            quote! { if let Some(v) = &patch.#ident { values.push((#iden::#variant, #some)); } }
        });
    }

    let select_doc = doc(&format!("`SELECT` every column of `{table_name}`."));
    let insert_doc = doc(&format!(
        "`INSERT` one `{table_name}` row, `RETURNING` every column.\n\nAn error if a value of a declared JSON type does not serialize (see its `storage_conflict`)."
    ));
    let insert_many_doc = doc(&format!(
        "`INSERT` many `{table_name}` rows in one statement, `RETURNING` every column in input order.\n\nReturns `None` for no rows; an error if a value of a declared JSON type does not serialize."
    ));
    let insert_rows_doc = doc(&format!(
        "`INSERT` whole `{table_name}` rows as they were, every column but generated ones (used to restore rows exactly), `RETURNING` every column.\n\nReturns `None` for no rows; an error if a value of a declared JSON type does not serialize."
    ));

    let insert_body = if insertable.is_empty() {
        quote! {
            let _ = row;
            let mut query = ::sea_query::Query::insert();
            query.into_table(#iden::Table).or_default_values();
        }
    } else {
        quote! {
            let mut query = ::sea_query::Query::insert();
            query
                .into_table(#iden::Table)
                .columns([#(#iden::#insert_columns),*])
                // As many values as columns, by construction: not a panic on data.
                .values_panic(insert_values(row)?);
        }
    };
    let insert_many_body = if insertable.is_empty() {
        quote! {
            let count = rows.into_iter().count();
            if count == 0 { return Ok(None); }
            let mut query = ::sea_query::Query::insert();
            query.into_table(#iden::Table).or_default_values_many(count as u32);
        }
    } else {
        quote! {
            let mut query = ::sea_query::Query::insert();
            query
                .into_table(#iden::Table)
                .columns([#(#iden::#insert_columns),*]);
            let mut any = false;
            for row in rows {
                any = true;
                query.values_panic(insert_values(row)?);
            }
            if !any { return Ok(None); }
        }
    };
    let insert_values_fn = if insertable.is_empty() {
        quote! {}
    } else {
        quote! {
            /// The values of every insertable column of `row` (`DEFAULT` where it is `None`).
            fn insert_values(row: &#insert) -> Result<[::sea_query::SimpleExpr; #insert_count], ::serde_json::Error> {
                Ok([#(#insert_values),*])
            }
        }
    };
    let insert_rows = if restorable.is_empty() {
        quote! {}
    } else {
        quote! {
            #insert_rows_doc
            pub fn insert_rows<'a>(rows: impl IntoIterator<Item = &'a #row>) -> Result<Option<::sea_query::InsertStatement>, ::serde_json::Error> {
                let mut query = ::sea_query::Query::insert();
                query
                    .into_table(#iden::Table)
                    .columns([#(#iden::#restore_columns),*])
                    .returning(::sea_query::Query::returning().columns(#iden::COLUMNS));
                let mut any = false;
                for row in rows {
                    any = true;
                    query.values_panic(row_values(row)?);
                }
                Ok(any.then_some(query))
            }

            /// The values of every restorable column of `row`, in `insert_rows` column order.
            fn row_values(row: &#row) -> Result<[::sea_query::SimpleExpr; #restore_count], ::serde_json::Error> {
                Ok([#(#restore_values),*])
            }
        }
    };

    // Key builders.
    let pk = table.primary_key_columns();
    let key_builders = if pk.is_empty() {
        quote! {}
    } else {
        let mut params = Vec::new();
        let mut conds = Vec::new();
        for name in pk {
            let f = fields
                .iter()
                .find(|f| &f.column.name == name)
                .expect("key column exists");
            let (ident, base, variant) = (&f.ident, &f.base, &f.variant);
            if f.json.is_some() {
                anyhow::bail!(
                    "{table_name}.{name}: a primary key column of a declared JSON type is not supported"
                );
            }
            params.push(quote! { #ident: &#base });
            let value = value_expr(f, quote! { #ident });
            conds.push(quote! {
                .and_where(::sea_query::ExprTrait::eq(::sea_query::Expr::col(#iden::#variant), #value))
            });
        }
        let key_doc = format!("`{}`", pk.join("`, `"));
        let select_doc = doc(&format!(
            "`SELECT` every column of the `{table_name}` row with primary key {key_doc}."
        ));
        let update_doc = doc(&format!(
            "`UPDATE` the `{table_name}` row with primary key {key_doc} from `patch`, `RETURNING` every column.\n\nReturns `None` when the patch sets nothing; an error if a value of a declared JSON type does not serialize."
        ));
        let delete_doc = doc(&format!(
            "`DELETE` the `{table_name}` row with primary key {key_doc}."
        ));
        quote! {
            #select_doc
            pub fn select_by_pk(#(#params),*) -> ::sea_query::SelectStatement {
                let mut query = select();
                query #(#conds)*;
                query
            }

            #update_doc
            pub fn update_by_pk(#(#params,)* patch: &#patch) -> Result<Option<::sea_query::UpdateStatement>, ::serde_json::Error> {
                let mut values: Vec<(#iden, ::sea_query::SimpleExpr)> = Vec::new();
                #(#patch_sets)*
                if values.is_empty() {
                    return Ok(None);
                }
                let mut query = ::sea_query::Query::update();
                query
                    .table(#iden::Table)
                    .values(values)
                    #(#conds)*
                    .returning(::sea_query::Query::returning().columns(#iden::COLUMNS));
                Ok(Some(query))
            }

            #delete_doc
            pub fn delete_by_pk(#(#params),*) -> ::sea_query::DeleteStatement {
                let mut query = ::sea_query::Query::delete();
                query.from_table(#iden::Table) #(#conds)*;
                query
            }
        }
    };

    Ok(quote! {
        #select_doc
        pub fn select() -> ::sea_query::SelectStatement {
            let mut query = ::sea_query::Query::select();
            query.columns(#iden::COLUMNS).from(#iden::Table);
            query
        }

        #insert_doc
        pub fn insert(row: &#insert) -> Result<::sea_query::InsertStatement, ::serde_json::Error> {
            #insert_body
            query.returning(::sea_query::Query::returning().columns(#iden::COLUMNS));
            Ok(query)
        }

        #insert_many_doc
        pub fn insert_many<'a>(rows: impl IntoIterator<Item = &'a #insert>) -> Result<Option<::sea_query::InsertStatement>, ::serde_json::Error> {
            #insert_many_body
            query.returning(::sea_query::Query::returning().columns(#iden::COLUMNS));
            Ok(Some(query))
        }

        #insert_values_fn

        #insert_rows

        #key_builders
    })
}
