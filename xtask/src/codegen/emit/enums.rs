//! Rust enums: PostgreSQL enum types (`enums.rs`) and `CHECK (col IN (…))` text columns, with
//! their sqlx and sea-query conversions.

use anyhow::{bail, Result};
use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::doc;
use super::names::pascal;
use super::names::TableNames;
use crate::codegen::model::{Schema, Table};

/// How a Rust enum is stored: as text checked by `CHECK (… IN …)`, or as a PostgreSQL enum.
pub(crate) enum EnumStorage<'a> {
    Text,
    PgEnum(&'a str),
}

pub(crate) fn rust_enum(
    name: &Ident,
    values: &[String],
    docs: &str,
    storage: EnumStorage,
) -> Result<TokenStream> {
    let mut variants: Vec<Ident> = Vec::new();
    for v in values {
        let ident = format_ident!("{}", pascal(v));
        if variants.contains(&ident) {
            bail!("values of {name} collide as the variant {ident}");
        }
        variants.push(ident);
    }
    let enum_name = name.to_string();
    let docs = doc(docs);
    let variant_docs: Vec<String> = values.iter().map(|v| format!(" `{v}`")).collect();
    let count = values.len();
    let (type_info, compatible) = match storage {
        EnumStorage::Text => (
            quote! { <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info() },
            quote! { <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty) },
        ),
        EnumStorage::PgEnum(pg) => (
            quote! { ::sqlx::postgres::PgTypeInfo::with_name(#pg) },
            quote! { *ty == Self::type_info() },
        ),
    };
    let array_name = match storage {
        EnumStorage::Text => {
            quote! { <&str as ::sqlx::postgres::PgHasArrayType>::array_type_info() }
        }
        EnumStorage::PgEnum(pg) => {
            let arr = format!("_{pg}");
            quote! { ::sqlx::postgres::PgTypeInfo::with_name(#arr) }
        }
    };
    Ok(quote! {
        #docs
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        pub enum #name {
            #( #[doc = #variant_docs] #[serde(rename = #values)] #variants, )*
        }

        impl #name {
            /// Every value, in declared order.
            pub const ALL: [Self; #count] = [#(Self::#variants),*];

            /// The value as stored in the database.
            pub const fn as_str(self) -> &'static str {
                match self { #(Self::#variants => #values,)* }
            }
        }

        impl ::std::fmt::Display for #name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for #name {
            type Err = crate::generated::UnknownEnumValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    #(#values => Ok(Self::#variants),)*
                    _ => Err(crate::generated::UnknownEnumValue { enum_name: #enum_name, value: s.to_owned() }),
                }
            }
        }

        impl ::sqlx::Type<::sqlx::Postgres> for #name {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo { #type_info }
            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool { #compatible }
        }

        impl ::sqlx::postgres::PgHasArrayType for #name {
            fn array_type_info() -> ::sqlx::postgres::PgTypeInfo { #array_name }
        }

        impl<'q> ::sqlx::Encode<'q, ::sqlx::Postgres> for #name {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<'q, ::sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> ::sqlx::Decode<'r, ::sqlx::Postgres> for #name {
            fn decode(value: ::sqlx::postgres::PgValueRef<'r>) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<'r, ::sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<Self>()?)
            }
        }

        impl From<#name> for ::sea_query::Value {
            fn from(value: #name) -> Self {
                ::sea_query::Value::String(Some(value.as_str().to_owned()))
            }
        }
    })
}

pub(crate) fn enums_rs(schema: &Schema) -> Result<TokenStream> {
    let mut items = Vec::new();
    for e in &schema.enums {
        let name = format_ident!("{}", pascal(&e.name));
        let docs = format!(
            "PostgreSQL enum type `{}`{}",
            e.name,
            e.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
        items.push(rust_enum(
            &name,
            &e.values,
            &docs,
            EnumStorage::PgEnum(&e.name),
        )?);
    }
    Ok(quote! { #(#items)* })
}

/// The Rust enums of `table`'s `CHECK (col IN (…))` columns.
pub(crate) fn check_enums(table: &Table, names: &TableNames) -> Result<Vec<TokenStream>> {
    let mut enums = Vec::new();
    for c in &table.columns {
        if let Some(values) = table.check_in_values(&c.name) {
            let docs = format!(
                "Values of `{}.{}`, from its `CHECK ({} IN (…))`.",
                table.name, c.name, c.name
            );
            enums.push(rust_enum(
                &names.check_enum(&c.name),
                values,
                &docs,
                EnumStorage::Text,
            )?);
        }
    }
    Ok(enums)
}
