//! Names for sea-query: the `…Iden` enum, the table name, the column list.

use proc_macro2::TokenStream;
use quote::quote;

use super::docs::doc;
use super::names::TableNames;
use super::types::Field;
use crate::codegen::model::Table;

pub(crate) fn iden(table: &Table, names: &TableNames, fields: &[Field]) -> TokenStream {
    let iden = names.iden();
    let table_name = table.name.as_str();
    let search: Vec<&str> = super::types::search_columns(table)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let search_variants: Vec<_> = search
        .iter()
        .map(|c| quote::format_ident!("{}", super::names::pascal(c)))
        .collect();
    let search_count = search.len();
    let search_variant_docs: Vec<String> = search
        .iter()
        .map(|c| format!(" Column `{c}`: a search document (not in `COLUMNS`)."))
        .collect();
    let search_doc = doc(&format!(
        "The search documents of `{table_name}` (`tsvector` columns the database derives): read by searches only, so in no row type and no column list."
    ));
    let variants: Vec<_> = fields.iter().map(|f| &f.variant).collect();
    let column_names: Vec<&str> = fields.iter().map(|f| f.column.name.as_str()).collect();
    let count = column_names.len();
    let writable: Vec<_> = fields
        .iter()
        .filter(|f| f.column.generated.is_none())
        .map(|f| &f.variant)
        .collect();
    let writable_count = writable.len();
    let writable_doc = doc(&format!(
        "The columns of `{table_name}` an INSERT may write (all but generated ones; a `GENERATED ALWAYS` identity column needs `OVERRIDING SYSTEM VALUE`), in declared order: what copying a row takes."
    ));
    let variant_docs: Vec<String> = column_names
        .iter()
        .map(|c| format!(" Column `{c}`."))
        .collect();
    let table_variant_doc = format!(" The table `{table_name}`.");
    let iden_doc = doc(&format!(
        "Names of `{table_name}` and its columns for sea-query."
    ));
    let columns_doc = doc(&format!(
        "The columns of `{table_name}`, in declared order."
    ));
    quote! {
        #iden_doc
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum #iden {
            #[doc = #table_variant_doc]
            Table,
            #( #[doc = #variant_docs] #variants, )*
            #( #[doc = #search_variant_docs] #search_variants, )*
        }

        impl #iden {
            #columns_doc
            pub const COLUMNS: [Self; #count] = [#(Self::#variants),*];

            #writable_doc
            pub const WRITABLE: [Self; #writable_count] = [#(Self::#writable),*];

            #search_doc
            pub const SEARCH: [Self; #search_count] = [#(Self::#search_variants),*];

            /// The SQL name.
            pub const fn name(self) -> &'static str {
                match self {
                    Self::Table => #table_name,
                    #(Self::#variants => #column_names,)*
                    #(Self::#search_variants => #search,)*
                }
            }
        }

        impl ::sea_query::Iden for #iden {
            fn quoted(&self) -> ::std::borrow::Cow<'static, str> {
                // A name holding `"` is escaped by the query builder; an owned value says so.
                let name = self.name();
                if name.contains('"') {
                    ::std::borrow::Cow::Owned(name.to_owned())
                } else {
                    ::std::borrow::Cow::Borrowed(name)
                }
            }

            fn unquoted(&self) -> &str {
                self.name()
            }
        }

        /// The table's name.
        pub const TABLE: &str = #table_name;

        #columns_doc
        pub const COLUMNS: [&str; #count] = [#(#column_names),*];
    }
}

/// `pub mod constraint { pub const PKEY: &str = "…_pkey"; … }`: every constraint name of the
/// table, for matching database errors (their constraint) without writing names by hand.
pub(crate) fn constraints(table: &Table) -> TokenStream {
    let prefix = format!("{}_", table.name);
    let mut consts = Vec::new();
    for name in table.constraint_names() {
        let short = name.strip_prefix(&prefix).unwrap_or(name);
        let ident = quote::format_ident!("{}", super::names::snake(short).to_ascii_uppercase());
        let docs = doc(&format!("`{name}`"));
        consts.push(quote! { #docs pub const #ident: &str = #name; });
    }
    let docs = doc(&format!(
        "The names of the constraints of `{}` (primary key, unique keys, foreign keys, checks).",
        table.name
    ));
    quote! {
        #docs
        pub mod constraint {
            #(#consts)*
        }
    }
}
