//! The insert struct (`New…`): what the caller supplies. Columns the database fills (identity,
//! generated) are absent; columns with a default are optional.

use proc_macro2::TokenStream;
use quote::quote;

use super::docs::doc;
use super::names::TableNames;
use super::types::{Field, InsertShape};
use crate::codegen::model::Table;

pub(crate) fn insert_struct(table: &Table, names: &TableNames, fields: &[Field]) -> TokenStream {
    let insert = names.insert();
    let insertable: Vec<&Field> = fields.iter().filter(|f| !f.is_db_filled()).collect();
    let docs = doc(&format!(
        "A new `{}` row: what the caller supplies. Columns the database always fills (generated, identity `ALWAYS`) are absent; a `BY DEFAULT` identity column is optional like a column with a default.",
        table.name
    ));
    let struct_fields = insertable.iter().map(|f| {
        let (ident, base, docs, rename) = (&f.ident, &f.base, &f.doc, &f.serde_rename);
        let (ty, note) = match f.insert_shape() {
            InsertShape::Required => (quote! { #base }, ""),
            InsertShape::Nullable => (quote! { Option<#base> }, "`None` stores NULL."),
            InsertShape::Defaulted => (
                quote! { Option<#base> },
                "`None` leaves the column to its default.",
            ),
            InsertShape::NullableDefaulted => (
                quote! { Option<Option<#base>> },
                "`None` leaves the column to its default; `Some(None)` stores NULL.",
            ),
        };
        let note = if note.is_empty() {
            quote! {}
        } else {
            let note = doc(note);
            quote! { #[doc = ""] #note }
        };
        quote! { #docs #note #rename pub #ident: #ty, }
    });
    let required: Vec<&&Field> = insertable
        .iter()
        .filter(|f| f.insert_shape() == InsertShape::Required)
        .collect();
    let params = required.iter().map(|f| {
        let (ident, base) = (&f.ident, &f.base);
        quote! { #ident: #base }
    });
    let required_idents = required.iter().map(|f| &f.ident);
    let optional_idents = insertable
        .iter()
        .filter(|f| f.insert_shape() != InsertShape::Required)
        .map(|f| &f.ident);
    let row = names.row();
    let compare = insertable.iter().map(|f| {
        let ident = &f.ident;
        match f.insert_shape() {
            InsertShape::Required | InsertShape::Nullable => quote! { self.#ident == row.#ident },
            InsertShape::Defaulted | InsertShape::NullableDefaulted => {
                quote! { self.#ident.as_ref().is_none_or(|v| *v == row.#ident) }
            }
        }
    });
    let matches_body = if insertable.is_empty() {
        quote! { let _ = row; true }
    } else {
        quote! { #(#compare)&&* }
    };
    let derive_default = if required.is_empty() {
        quote! { Default, }
    } else {
        quote! {}
    };
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq, #derive_default ::serde::Serialize, ::serde::Deserialize)]
        pub struct #insert {
            #(#struct_fields)*
        }

        impl #insert {
            /// A new row with the required columns set and every optional one left to the
            /// database (its default, or NULL).
            #[allow(clippy::too_many_arguments)]
            pub fn new(#(#params),*) -> Self {
                Self { #(#required_idents,)* #(#optional_idents: None,)* }
            }

            /// True if `row` holds every value this insert gives (a column left to its
            /// default is not compared): whether `row` is what storing this would store.
            pub fn matches(&self, row: &#row) -> bool {
                #matches_body
            }
        }
    }
}
