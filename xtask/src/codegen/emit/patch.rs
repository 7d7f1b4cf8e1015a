//! The patch struct (`…Patch`): changes to one row, every column outside the primary key that
//! an UPDATE may set.

use proc_macro2::TokenStream;
use quote::quote;

use super::docs::doc;
use super::names::TableNames;
use super::types::Field;
use crate::codegen::model::Table;

/// The fields a patch may set: writable columns outside the primary key.
pub(crate) fn patchable<'f, 'a>(table: &Table, fields: &'f [Field<'a>]) -> Vec<&'f Field<'a>> {
    let pk = table.primary_key_columns();
    fields
        .iter()
        .filter(|f| !pk.contains(&f.column.name) && f.is_writable())
        .collect()
}

pub(crate) fn patch_struct(table: &Table, names: &TableNames, fields: &[Field]) -> TokenStream {
    let patch = names.patch();
    let patchable = patchable(table, fields);
    let docs = doc(&format!(
        "Changes to one `{}` row; `Default` changes nothing.",
        table.name
    ));
    let struct_fields = patchable.iter().map(|f| {
        let (ident, base, docs, rename) = (&f.ident, &f.base, &f.doc, &f.serde_rename);
        let (ty, note) = if f.column.nullable {
            (
                quote! { Option<Option<#base>> },
                "`None` leaves the column as it is; `Some(None)` sets NULL.",
            )
        } else {
            (
                quote! { Option<#base> },
                "`None` leaves the column as it is.",
            )
        };
        let note = doc(note);
        quote! { #docs #[doc = ""] #note #rename pub #ident: #ty, }
    });
    let idents: Vec<_> = patchable.iter().map(|f| &f.ident).collect();
    let is_empty = if idents.is_empty() {
        quote! { true }
    } else {
        quote! { #(self.#idents.is_none())&&* }
    };
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq, Default, ::serde::Serialize, ::serde::Deserialize)]
        pub struct #patch {
            #(#struct_fields)*
        }

        impl #patch {
            /// True if the patch changes nothing.
            pub fn is_empty(&self) -> bool {
                #is_empty
            }
        }
    }
}
