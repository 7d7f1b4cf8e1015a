//! The row struct: every column, as a SELECT returns it.

use proc_macro2::TokenStream;
use quote::quote;

use super::docs::{doc, table_doc};
use super::names::TableNames;
use super::types::Field;
use crate::codegen::model::Table;

pub(crate) fn row_struct(table: &Table, names: &TableNames, fields: &[Field]) -> TokenStream {
    let row = names.row();
    let docs = doc(&table_doc("A row of", table));
    let fields = fields.iter().map(|f| {
        let (ident, base, docs) = (&f.ident, &f.base, &f.doc);
        let (serde_rename, sqlx_rename) = (&f.serde_rename, &f.sqlx_rename);
        let ty = if f.column.nullable {
            quote! { Option<#base> }
        } else {
            quote! { #base }
        };
        quote! { #docs #serde_rename #sqlx_rename pub #ident: #ty, }
    });
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize, ::sqlx::FromRow)]
        pub struct #row {
            #(#fields)*
        }
    }
}
