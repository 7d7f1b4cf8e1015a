//! One table's module: its enums, row, insert and patch structs, names, constraint names,
//! sea-query builders and fixed-shape statements, each from its own emitter.

use anyhow::{Context, Result};
use proc_macro2::TokenStream;
use quote::quote;

use super::builders::builders;
use super::docs::table_doc;
use super::enums::check_enums;
use super::iden::{constraints, iden};
use super::insert::insert_struct;
use super::names::Names;
use super::parts::Ctx;
use super::patch::patch_struct;
use super::row::row_struct;
use super::statements::statements;
use super::types::fields;
use crate::codegen::config::Declarations;
use crate::codegen::model::{Schema, Table};

pub(crate) fn table_rs(
    schema: &Schema,
    table: &Table,
    declarations: &Declarations,
    names: &Names,
) -> Result<TokenStream> {
    let n = names.table(&table.name);
    let fields = fields(schema, table, declarations.json_types, names)?;
    let enums = check_enums(table, n)?;
    let row = row_struct(table, n, &fields);
    let insert = insert_struct(table, n, &fields);
    let patch = patch_struct(table, n, &fields);
    let iden = iden(table, n, &fields);
    let constraints = constraints(table);
    let builders = builders(schema, table, n, &fields)?;
    let ctx = Ctx {
        schema,
        table,
        names: n,
        fields: &fields,
        appends: declarations
            .appends
            .iter()
            .filter(|a| a.table == table.name)
            .collect(),
        archives: declarations
            .archives
            .iter()
            .filter(|a| a.table == table.name)
            .collect(),
    };
    let statements = statements(&ctx).context("writing the statements")?;
    let module_doc = format!(" {}", table_doc("Table", table));
    Ok(quote! {
        #![doc = #module_doc]

        #(#enums)*
        #row
        #insert
        #patch
        #iden
        #constraints
        #builders
        #statements
    })
}
