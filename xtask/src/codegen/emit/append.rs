//! `APPEND`: a batch of child rows appended under one locked parent row, in one statement,
//! retry-safe and optionally conditional. For a declared [`Append`]:
//!
//! ```text
//! WITH "seen"     AS (the parent row as the statement's snapshot sees it: last value, total,
//!                     whether the last value is the expected one),
//!      "existing" AS (stored child rows with a key the batch gives: a retry),           [1]
//!      "archived" AS (archived child rows with a key the batch gives),                  [1]
//!      "rows"     AS (INSERT INTO child … SELECT … FROM (the parent row, locked, if its
//!                     last value is the expected one [and its version is the snapshot's])
//!                     AS "parent", unnest($…) … [WHERE no key of the batch is stored with
//!                     other values, and this row's key is not stored]
//!                     ORDER BY ord RETURNING every column),
//!      "parent_update" AS (UPDATE parent SET total += sum, touched = now(), last = max …)
//! SELECT new rows UNION ALL a retry's stored and archived rows UNION ALL a marker when the
//! last value was not the expected one UNION ALL the parent's last value and total after
//! ```
//!
//! `[1]`: only in `APPEND_RETRYABLE`, the statement for a batch that gives keys.
//!
//! * Every table is filtered by the parent-key parameters themselves (never through a CTE
//!   column), and no volatile function decides anything: a distributed database (Citus) keeps
//!   the statement on the parent's shard.
//! * The insert reads no CTE. Citus plans an `INSERT … SELECT` in a CTE on its own, and the
//!   results of the CTEs it reads would be sent to every node (a two-phase commit on all of
//!   them, and a node without the parent's shard could fail the append); the `"existing"` and
//!   `"archived"` CTEs only feed the answer, which the coordinator reads itself.
//! * Nothing may depend on the CTEs sharing one snapshot. Citus runs a statement whose CTE is
//!   an `INSERT … SELECT` as a sequence of statements on the worker (each CTE it plans on its
//!   own, then the rest), each on a snapshot of its own: the answer's `"existing"` is read
//!   after `"rows"` inserted, so it leaves out the keys `"rows"` returned.
//! * The parent row is locked first, so appends under one parent serialize; the rows are
//!   numbered after the parent's `last` value in the given order (no sequence is drawn).
//! * What a retry reads of stored rows must not be older than the lock. `APPEND_RETRYABLE`
//!   takes the lock with `SKIP LOCKED` and compares the locked row's version (`ctid`) with the
//!   one its snapshot sees: when the parent was locked by another transaction, or changed after
//!   the snapshot was taken, it writes nothing, and the generated function takes the lock in a
//!   statement of its own (in a transaction, or a savepoint inside the caller's) and runs the
//!   statement again, now on a snapshot taken after the lock.
//! * A row whose key is already stored (or archived) with the same values is not inserted again
//!   and comes back as stored (retrying a batch changes nothing); one stored with other values,
//!   or under another parent, is a clash and nothing is inserted.
//! * With an expected last value, nothing is inserted if the parent's last value differs
//!   (decided on the locked row, so on its current value); the value the answer reports is
//!   the snapshot's, so the generated function reports it only from a run under the lock.
//! * Every row comes back as the database holds it (`RETURNING` every column), never as given.

use anyhow::{bail, Context, Result};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::docs::doc;
use super::parts::{args_struct, batch_arrays, foreign_key, ArchiveView, Arrays, Ctx, Statement};
use super::sql;
use super::types::{Field, InsertShape};
use crate::codegen::config::Append;
use crate::codegen::model::{Column, SqlType, Table};

/// Everything both statements of one declared append are written from. The parameters are
/// handed out once, so `APPEND` and `APPEND_RETRYABLE` bind the same values in the same order.
struct Shape<'c, 'a> {
    ctx: &'c Ctx<'a>,
    append: &'c Append,
    parent: &'a Table,
    last: &'a Column,
    /// `(child column, parent column, placeholder)` of the foreign key.
    keys: Vec<(String, String, String)>,
    /// Whether the append is conditional, and the expected last value.
    check: String,
    expected: String,
    insertable: Vec<&'c Field<'a>>,
    arrays: Arrays,
    /// The child's primary-key columns that the batch gives (not taken from the parent).
    input_key: Vec<String>,
    archive: Option<(ArchiveView<'c, 'a>, &'a Column)>,
    stmt: Statement,
}

impl<'c, 'a> Shape<'c, 'a> {
    fn new(
        ctx: &'c Ctx<'a>,
        append: &'c Append,
        args: &[(String, String, TokenStream)],
    ) -> Result<Self> {
        let (fk, parent, referred) = foreign_key(ctx.schema, ctx.table, append.foreign_key)?;
        let order = ctx.field(append.order_by)?;
        if !matches!(
            order.column.ty,
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8
        ) {
            bail!(
                "{}.{} orders appends, so it must be an integer column",
                ctx.table.name,
                append.order_by
            );
        }
        let last = parent
            .column(append.last)
            .with_context(|| format!("{} has no column {}", parent.name, append.last))?;
        for column in append.changed_later {
            ctx.field(column)?;
        }
        let mut stmt = Statement::new();
        let keys = fk
            .columns
            .iter()
            .zip(&referred)
            .zip(args)
            .map(|((child, parent_column), (_, cast, bind))| {
                (
                    child.clone(),
                    parent_column.clone(),
                    stmt.param(cast, bind.clone()),
                )
            })
            .collect();
        let check = stmt.param("bool", quote! { expected_last.is_some() });
        let expected = stmt.param(
            &sql::cast_type(&last.ty),
            quote! { expected_last.flatten() },
        );
        let insertable = ctx.insertable();
        let from_parent = |name: &str| fk.columns.iter().any(|c| c == name);
        let arrays = batch_arrays(&insertable, &mut stmt, &|f| {
            from_parent(&f.column.name) || f.column.name == append.order_by
        })?;
        let input_key: Vec<String> = ctx
            .table
            .primary_key_columns()
            .iter()
            .filter(|c| !from_parent(c))
            .cloned()
            .collect();
        let archive = match &append.archive {
            None => None,
            Some(declared) => {
                let archive = ctx
                    .archives
                    .iter()
                    .find(|a| a.archive == declared.table)
                    .with_context(|| {
                        format!(
                            "the append of {} looks in archive {}, which is not declared for it",
                            ctx.table.name, declared.table
                        )
                    })?;
                let view = ArchiveView::new(ctx, archive)?;
                for key in ctx.table.primary_key_columns() {
                    view.table.column(key).with_context(|| {
                        format!(
                            "archive {} has no column {key} (a key of {})",
                            declared.table, ctx.table.name
                        )
                    })?;
                }
                let by = view.table.column(declared.archived_by).with_context(|| {
                    format!(
                        "archive {} has no column {}",
                        declared.table, declared.archived_by
                    )
                })?;
                Some((view, by))
            }
        };
        let shape = Shape {
            ctx,
            append,
            parent,
            last,
            keys,
            check,
            expected,
            insertable,
            arrays,
            input_key,
            archive,
            stmt,
        };
        if !shape.input_key.is_empty() {
            for c in &shape.input_key {
                shape.batch_input(c).with_context(|| {
                    format!(
                        "key column {c} of {} is not given by the batch",
                        ctx.table.name
                    )
                })?;
            }
        }
        Ok(shape)
    }

    /// A batch can be a retry when it gives the child's whole key.
    fn retryable(&self) -> bool {
        !self.input_key.is_empty()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.insertable.iter().position(|f| f.column.name == name)
    }

    /// The input value of insertable column `name` (over the unnest alias `"i"`).
    fn batch_input(&self, name: &str) -> Option<&str> {
        let i = self.index_of(name)?;
        self.arrays.columns[i].as_ref().map(|c| c.input.as_str())
    }

    /// The placeholder of the foreign-key column `child`, if it is one.
    fn key_param(&self, child: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(c, _, _)| c == child)
            .map(|(_, _, p)| p.as_str())
    }

    /// `"parent column" = $n AND …`, optionally qualified.
    fn parent_match(&self, prefix: &str) -> String {
        self.keys
            .iter()
            .map(|(_, p, param)| format!("{prefix}{} = {param}", sql::ident(p)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `(…) AS "parent"`: the parent row, locked, in a subquery the insert selects from (a
    /// distributed database plans it with the insert, on the parent's shard). It yields no row
    /// when the parent's last value is not the expected one, judged on the locked row; in the
    /// retryable statement also when the parent is locked by another transaction (`SKIP
    /// LOCKED`) or its version is not the one the statement's snapshot sees.
    fn locked_parent(&self, retry: bool) -> String {
        let last = sql::ident(&self.last.name);
        let parent = sql::ident(&self.parent.name);
        let mut filters = vec![
            self.parent_match(""),
            format!(
                "(NOT {} OR {last} IS NOT DISTINCT FROM {})",
                self.check, self.expected
            ),
        ];
        if retry {
            filters.push(format!(
                "\"ctid\" = (SELECT \"ctid\" FROM {parent} WHERE {})",
                self.parent_match("")
            ));
        }
        format!(
            "(SELECT {last} AS \"last\" FROM {parent} WHERE {} FOR NO KEY UPDATE{}) AS \"parent\"",
            filters.join(" AND "),
            if retry { " SKIP LOCKED" } else { "" }
        )
    }

    /// `"seen": the parent row as this statement's snapshot sees it` (what the answer reports
    /// when nothing is appended).
    fn seen_cte(&self) -> String {
        let last = sql::ident(&self.last.name);
        let total = match self.append.total {
            Some((parent_column, _)) => format!("{} AS \"total\"", sql::ident(parent_column)),
            None => "NULL::int8 AS \"total\"".into(),
        };
        format!(
            "\"seen\" AS (SELECT {last} AS \"last\", {total}, \
             (NOT {} OR {last} IS NOT DISTINCT FROM {}) AS \"ok\" FROM {} WHERE {})",
            self.check,
            self.expected,
            sql::ident(&self.parent.name),
            self.parent_match("")
        )
    }

    /// `CROSS JOIN LATERAL (SELECT * FROM table AS alias WHERE key = the input's key LIMIT 1)`:
    /// one index lookup per input row (the LIMIT keeps the planner from joining a whole tenant).
    fn lookup(&self, table: &str, alias: &str) -> String {
        let conds = self
            .ctx
            .table
            .primary_key_columns()
            .iter()
            .map(|c| {
                let value = match self.key_param(c) {
                    Some(p) => p.to_string(),
                    None => self.batch_input(c).expect("checked in new").to_string(),
                };
                format!("{alias}.{} = {value}", sql::ident(c))
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "CROSS JOIN LATERAL (SELECT * FROM {} AS {alias} WHERE {conds} LIMIT 1) AS {alias}",
            sql::ident(table)
        )
    }

    /// True (SQL) when a stored row, whose columns `stored` gives, holds every value its input
    /// gives and belongs to the same parent.
    fn same(&self, stored: &dyn Fn(&Field) -> String) -> String {
        let mut same = Vec::new();
        for (k, f) in self.insertable.iter().enumerate() {
            let column = stored(f);
            if let Some(param) = self.key_param(&f.column.name) {
                same.push(format!("{column} = {param}"));
                continue;
            }
            let Some(col) = &self.arrays.columns[k] else {
                continue;
            };
            if self.append.changed_later.contains(&f.column.name.as_str()) {
                continue;
            }
            let cmp = if matches!(f.column.ty, SqlType::Json) {
                format!("{column}::jsonb IS NOT DISTINCT FROM {}::jsonb", col.input)
            } else {
                format!("{column} IS NOT DISTINCT FROM {}", col.input)
            };
            same.push(match &col.given {
                None => cmp,
                Some(given) => format!("(NOT ({given}) OR {cmp})"),
            });
        }
        same.join(" AND ")
    }

    /// Stored rows with a key the batch gives, and whether each holds the values given.
    fn existing(&self) -> String {
        let same = self.same(&|f| format!("\"m\".{}", sql::ident(&f.column.name)));
        format!(
            "SELECT \"m\".*, ({same}) AS \"same\" FROM {} {}",
            self.arrays.unnest(),
            self.lookup(&self.ctx.table.name, "\"m\"")
        )
    }

    /// Archived rows with a key the batch gives, read as today's rows, and whether each holds
    /// the values given.
    fn archived(&self) -> Option<String> {
        let (view, by) = self.archive.as_ref()?;
        let same = self.same(&|f| view.restored(f));
        Some(format!(
            "SELECT {}, \"x\".\"archived_by\", \"x\".\"same\" FROM (SELECT {}, \
             \"a\".{} AS \"archived_by\", ({same}) AS \"same\" FROM {} {} {}) AS \"x\"",
            view.outer_columns(),
            view.inner_columns(),
            sql::ident(&by.name),
            self.arrays.unnest(),
            self.lookup(view.archive.archive, "\"a\""),
            view.populate()
        ))
    }

    /// `"rows": the insert`.
    fn insert_cte(&self, retry: bool) -> String {
        let columns: Vec<&str> = self
            .insertable
            .iter()
            .map(|f| f.column.name.as_str())
            .collect();
        let order_cast = sql::cast_type(
            &self
                .ctx
                .field(self.append.order_by)
                .expect("checked")
                .column
                .ty,
        );
        let values: Vec<String> = self
            .insertable
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let name = f.column.name.as_str();
                if let Some(param) = self.key_param(name) {
                    param.to_string()
                } else if name == self.append.order_by {
                    format!("(coalesce(\"parent\".\"last\", 0) + \"i\".\"ord\")::{order_cast}")
                } else {
                    self.arrays.columns[k]
                        .as_ref()
                        .expect("every other column has an array")
                        .value
                        .clone()
                }
            })
            .collect();
        let mut filters = Vec::new();
        if retry {
            // Read directly, not through the answer's CTEs: a distributed database would
            // otherwise send those CTEs' results to every node for the insert to read.
            let key = self
                .ctx
                .table
                .primary_key_columns()
                .iter()
                .map(|c| {
                    let value = match self.key_param(c) {
                        Some(p) => p.to_string(),
                        None => self.batch_input(c).expect("checked in new").to_string(),
                    };
                    format!("\"e\".{} = {value}", sql::ident(c))
                })
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut sources = vec![(self.ctx.table.name.as_str(), self.existing())];
            if let (Some((view, _)), Some(archived)) = (&self.archive, self.archived()) {
                sources.push((view.archive.archive, archived));
            }
            for (table, rows) in sources {
                filters.push(format!(
                    "NOT EXISTS (SELECT 1 FROM ({rows}) AS \"e\" WHERE NOT \"e\".\"same\")"
                ));
                filters.push(format!(
                    "NOT EXISTS (SELECT 1 FROM {} AS \"e\" WHERE {key})",
                    sql::ident(table)
                ));
            }
        }
        let filters = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        format!(
            "\"rows\" AS (INSERT INTO {} ({}) SELECT {} FROM {}, {}{filters} ORDER BY \"i\".\"ord\" RETURNING {})",
            sql::ident(&self.ctx.table.name),
            sql::idents(columns),
            values.join(", "),
            self.locked_parent(retry),
            self.arrays.unnest(),
            self.ctx.all_columns()
        )
    }

    /// `"parent_update": the parent's total, touched and last columns`.
    fn parent_update_cte(&self) -> Result<String> {
        let mut sets = Vec::new();
        let mut returning = vec![format!("\"p\".{}", sql::ident(&self.last.name))];
        if let Some((parent_column, child_column)) = self.append.total {
            let p = self
                .parent
                .column(parent_column)
                .with_context(|| format!("{} has no column {parent_column}", self.parent.name))?;
            self.ctx.field(child_column)?;
            sets.push(format!(
                "{col} = \"p\".{col} + (SELECT coalesce(sum({}), 0) FROM \"rows\")::{}",
                sql::ident(child_column),
                sql::cast_type(&p.ty),
                col = sql::ident(parent_column),
            ));
            returning.push(format!("\"p\".{}", sql::ident(parent_column)));
        }
        if let Some(touched) = self.append.touched {
            self.parent
                .column(touched)
                .with_context(|| format!("{} has no column {touched}", self.parent.name))?;
            sets.push(format!("{} = now()", sql::ident(touched)));
        }
        sets.push(format!(
            "{c} = greatest(\"p\".{c}, (SELECT max({}) FROM \"rows\"))",
            sql::ident(self.append.order_by),
            c = sql::ident(&self.last.name)
        ));
        Ok(format!(
            "\"parent_update\" AS (UPDATE {} AS \"p\" SET {} WHERE {} AND EXISTS (SELECT 1 FROM \"rows\") RETURNING {})",
            sql::ident(&self.parent.name),
            sets.join(", "),
            self.parent_match("\"p\"."),
            returning.join(", ")
        ))
    }

    /// The answer: one row per new, stored or archived row, and markers (see [`Kind`]).
    fn answer(&self, retry: bool) -> String {
        let last_cast = sql::cast_type(&self.last.ty);
        let total_cast = self.total_cast();
        let by_cast = self
            .archive
            .as_ref()
            .map_or("int4".to_string(), |(_, by)| sql::cast_type(&by.ty));
        let fields = |alias: &str| -> String {
            self.ctx
                .fields
                .iter()
                .map(|f| format!("{alias}.{}", sql::ident(&f.column.name)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let nulls = self
            .ctx
            .fields
            .iter()
            .map(|f| format!("NULL::{}", f.cast()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut parts = vec![format!(
            "SELECT {new} AS \"kind\", NULL::{last_cast} AS \"last\", NULL::{total_cast} AS \"total\", NULL::{by_cast} AS \"archived_by\", {} FROM \"rows\"",
            fields("\"rows\""),
            new = Kind::New as i32
        )];
        if retry {
            // A distributed database may run the CTEs one after another, each on a snapshot
            // of its own (Citus does, for an `INSERT … SELECT` in a CTE): "existing" then
            // also sees the rows this statement inserted, which are new, not a retry's.
            let inserted = self
                .input_key
                .iter()
                .map(|c| format!("\"n\".{c} = \"e\".{c}", c = sql::ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            parts.push(format!(
                "SELECT CASE WHEN \"e\".\"same\" THEN {} ELSE {} END, NULL, NULL, NULL, {} FROM \"existing\" AS \"e\" \
                 WHERE NOT EXISTS (SELECT 1 FROM \"rows\" AS \"n\" WHERE {inserted})",
                Kind::Stored as i32,
                Kind::Clash as i32,
                fields("\"e\"")
            ));
            if self.archive.is_some() {
                parts.push(format!(
                    "SELECT CASE WHEN \"x\".\"same\" THEN {} ELSE {} END, NULL, NULL, \"x\".\"archived_by\", {} FROM \"archived\" AS \"x\"",
                    Kind::Archived as i32,
                    Kind::ArchivedClash as i32,
                    fields("\"x\"")
                ));
            }
        }
        parts.push(format!(
            "SELECT {}, \"seen\".\"last\", NULL, NULL, {nulls} FROM \"seen\" WHERE NOT \"seen\".\"ok\"",
            Kind::Moved as i32
        ));
        parts.push(format!(
            "SELECT {}, coalesce((SELECT \"p\".{last} FROM \"parent_update\" AS \"p\"), \"seen\".\"last\"), \
             coalesce((SELECT {total} FROM \"parent_update\" AS \"p\"), \"seen\".\"total\"), NULL, {nulls} FROM \"seen\"",
            Kind::Parent as i32,
            last = sql::ident(&self.last.name),
            total = match self.append.total {
                Some((parent_column, _)) => format!("\"p\".{}", sql::ident(parent_column)),
                None => "NULL::int8".into(),
            }
        ));
        format!(
            "{} ORDER BY {} NULLS LAST",
            parts.join(" UNION ALL "),
            sql::ident(self.append.order_by)
        )
    }

    fn total_cast(&self) -> String {
        self.append
            .total
            .and_then(|(parent_column, _)| self.parent.column(parent_column))
            .map_or("int8".to_string(), |c| sql::cast_type(&c.ty))
    }

    /// One of the two statements.
    fn sql(&self, retry: bool) -> Result<String> {
        let mut ctes = vec![self.seen_cte()];
        if retry {
            ctes.push(format!("\"existing\" AS ({})", self.existing()));
            if let Some(archived) = self.archived() {
                ctes.push(format!("\"archived\" AS ({archived})"));
            }
        }
        ctes.push(self.insert_cte(retry));
        ctes.push(self.parent_update_cte()?);
        Ok(format!("WITH {} {}", ctes.join(", "), self.answer(retry)))
    }

    /// `LOCK_PARENT`: the parent row locked, alone (the slow path of a retry).
    fn lock_sql(&self, args: &[(String, String, TokenStream)]) -> (String, Vec<TokenStream>) {
        let mut stmt = Statement::new();
        let conds = self
            .keys
            .iter()
            .zip(args)
            .map(|((_, p, _), (_, cast, bind))| {
                format!("{} = {}", sql::ident(p), stmt.param(cast, bind.clone()))
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        (
            format!(
                "SELECT 1 FROM {} WHERE {conds} FOR NO KEY UPDATE",
                sql::ident(&self.parent.name)
            ),
            stmt.binds,
        )
    }
}

/// What a row of an append's answer is.
#[derive(Clone, Copy)]
enum Kind {
    /// A row this statement inserted.
    New = 0,
    /// A row a retry found stored with the same values.
    Stored = 1,
    /// A row stored with other values, or under another parent.
    Clash = 2,
    /// The parent's last value, when it was not the expected one.
    Moved = 3,
    /// A row a retry found archived, with the same values.
    Archived = 5,
    /// A row archived with other values, or under another parent.
    ArchivedClash = 6,
    /// The parent exists: its last value and total after the statement.
    Parent = 8,
}

pub(crate) fn append_statement(ctx: &Ctx, append: &Append) -> Result<(TokenStream, TokenStream)> {
    let (fk, parent, _) = foreign_key(ctx.schema, ctx.table, append.foreign_key)?;
    let parent_name = format_ident!("{}Parent", ctx.names.row);
    let args = args_struct(
        ctx,
        &parent_name,
        &fk.columns,
        &format!(
            "The `{}` row that [`stmt::append`] appends under, by the columns of foreign key `{}`.",
            parent.name, fk.name
        ),
    )?;
    let shape = Shape::new(ctx, append, &args.fields)?;
    let sql = shape.sql(false)?;
    let retry_sql = if shape.retryable() {
        Some(shape.sql(true)?)
    } else {
        None
    };
    let function = function(&shape, &args.ty, &args.fields, &sql, retry_sql.as_deref())?;
    Ok((args.item, function))
}

/// The Rust types of the answer's `last`, `total` and `archived_by` columns.
fn answer_types(shape: &Shape) -> Result<(TokenStream, TokenStream, TokenStream)> {
    let schema = shape.ctx.schema;
    let last = super::types::sql_rust_type(schema, &shape.last.ty)?;
    let total = match shape
        .append
        .total
        .and_then(|(parent_column, _)| shape.parent.column(parent_column))
    {
        Some(c) => super::types::sql_rust_type(schema, &c.ty)?,
        None => quote! { i64 },
    };
    let by = match &shape.archive {
        Some((_, by)) => super::types::sql_rust_type(schema, &by.ty)?,
        None => quote! { i32 },
    };
    Ok((last, total, by))
}

/// The async function: binds, runs (twice on the slow path of a retry), puts the answer
/// together.
fn function(
    shape: &Shape,
    parent_ty: &TokenStream,
    parent_args: &[(String, String, TokenStream)],
    sql: &str,
    retry_sql: Option<&str>,
) -> Result<TokenStream> {
    let ctx = shape.ctx;
    let (row, insert) = (ctx.names.row(), ctx.names.insert());
    let binds = &shape.stmt.binds;
    let (last_ty, total_ty, by_ty) = answer_types(shape)?;
    let (lock_sql, lock_binds) = shape.lock_sql(parent_args);
    let answer_fields = ctx.fields.iter().map(|f| {
        let (ident, base, rename) = (&f.ident, &f.base, &f.sqlx_rename);
        quote! { #rename #ident: Option<#base>, }
    });
    let row_fields = ctx.fields.iter().map(|f| {
        let ident = &f.ident;
        let name = &f.column.name;
        if f.column.nullable {
            quote! { #ident: self.#ident, }
        } else {
            quote! { #ident: self.#ident.ok_or_else(|| crate::generated::null_column(#name))?, }
        }
    });
    let matches_key: Vec<TokenStream> = shape
        .input_key
        .iter()
        .map(|c| {
            let f = ctx.field(c).expect("a key column");
            let ident = &f.ident;
            match f.insert_shape() {
                InsertShape::Required => quote! { s.row().#ident == new.#ident },
                _ => quote! { new.#ident.as_ref() == Some(&s.row().#ident) },
            }
        })
        .collect();
    let find_stored = if matches_key.is_empty() {
        quote! { None }
    } else {
        quote! { stored.iter().position(|s| #(#matches_key)&&*).map(|i| stored.swap_remove(i)) }
    };
    let (retry_const, choose) = match retry_sql {
        Some(retry_sql) => {
            let given = shape.input_key.iter().map(|c| {
                let f = ctx.field(c).expect("a key column");
                let ident = &f.ident;
                match f.insert_shape() {
                    InsertShape::Required => quote! { true },
                    _ => quote! { r.#ident.is_some() },
                }
            });
            (
                quote! {
                    /// [`APPEND`] for a batch that gives keys: it also finds the rows a retry
                    /// of the batch stored already (or that were archived since), and takes the
                    /// parent's lock without waiting (see [`append`]).
                    pub const APPEND_RETRYABLE: &str = #retry_sql;
                },
                quote! {
                    if rows.iter().any(|r| #(#given)||*) { APPEND_RETRYABLE } else { APPEND }
                },
            )
        }
        None => (quote! {}, quote! { APPEND }),
    };
    let what = doc(&statement_doc(shape));
    let (parent_kind, new, stored_kind, clash, archived, archived_clash, moved) = (
        Kind::Parent as i32,
        Kind::New as i32,
        Kind::Stored as i32,
        Kind::Clash as i32,
        Kind::Archived as i32,
        Kind::ArchivedClash as i32,
        Kind::Moved as i32,
    );
    let archived_arm = quote! {
        #archived => {
            let by = a.archived_by.ok_or_else(|| crate::generated::null_column("archived_by"))?;
            stored.push(crate::generated::Stored::Archived { row: a.into_row()?, by });
        }
        #archived_clash => {
            let by = a.archived_by.ok_or_else(|| crate::generated::null_column("archived_by"))?;
            return Ok(Some(crate::generated::AppendOutcome::Clash { row: a.into_row()?, archived_by: Some(by) }));
        }
    };
    let query =
        |sql: TokenStream| quote! { ::sqlx::query_as::<_, AppendAnswer>(#sql) #(.bind(#binds))* };
    let first = query(quote! { sql });
    let again = query(quote! { sql });
    Ok(quote! {
        #what
        pub const APPEND: &str = #sql;

        #retry_const

        /// The parent row locked, in a statement of its own: what [`append`] runs before
        /// running a retry's statement again when the parent was busy.
        pub const LOCK_PARENT: &str = #lock_sql;

        /// One row of [`APPEND`]'s answer.
        #[derive(::sqlx::FromRow)]
        struct AppendAnswer {
            kind: i32,
            last: Option<#last_ty>,
            total: Option<#total_ty>,
            archived_by: Option<#by_ty>,
            #(#answer_fields)*
        }

        impl AppendAnswer {
            /// The row it carries; a column the table holds for every row but the answer left
            /// NULL is an error, not a panic.
            fn into_row(self) -> Result<super::#row, ::sqlx::Error> {
                Ok(super::#row { #(#row_fields)* })
            }
        }

        /// What `answer` says about `rows`; `None` when the statement inserted nothing though
        /// rows were to be appended, and did not run under a lock taken before it (`locked`):
        /// its decision was made on a parent row newer than its snapshot (or skipped as locked),
        /// so only a run under the lock can tell what happened and report the current values.
        fn decide(
            answer: Vec<AppendAnswer>,
            rows: &[super::#insert],
            locked: bool,
        ) -> Result<Option<crate::generated::AppendOutcome<super::#row, #last_ty, #total_ty, #by_ty>>, ::sqlx::Error> {
            let mut fresh = Vec::new();
            let mut stored: Vec<crate::generated::Stored<super::#row, #by_ty>> = Vec::new();
            let mut moved = None;
            let mut parent = None;
            for a in answer {
                match a.kind {
                    #new => fresh.push(a.into_row()?),
                    #stored_kind => stored.push(crate::generated::Stored::Live(a.into_row()?)),
                    #clash => {
                        return Ok(Some(crate::generated::AppendOutcome::Clash { row: a.into_row()?, archived_by: None }));
                    }
                    #archived_arm
                    #moved => moved = Some(a.last),
                    #parent_kind => parent = Some((a.last, a.total)),
                    other => {
                        return Err(::sqlx::Error::Protocol(format!("APPEND answered a row of kind {other}")));
                    }
                }
            }
            let Some((last, total)) = parent else {
                return Ok(Some(crate::generated::AppendOutcome::NoParent));
            };
            // Each input is either a retry's stored (or archived) row or the next new row (new
            // rows come back in the order they were numbered, which is the given order).
            let mut slots = Vec::with_capacity(rows.len());
            let mut pending = 0usize;
            for new in rows {
                let found = #find_stored;
                pending += usize::from(found.is_none());
                slots.push(found);
            }
            if pending > 0 && fresh.is_empty() {
                return match (locked, moved) {
                    (false, _) => Ok(None),
                    (true, Some(last)) => Ok(Some(crate::generated::AppendOutcome::Moved { last })),
                    (true, None) => Err(::sqlx::Error::Protocol(
                        "APPEND appended nothing under its parent's lock".into(),
                    )),
                };
            }
            let mut fresh = fresh.into_iter();
            let mut out = Vec::with_capacity(rows.len());
            for slot in slots {
                match slot {
                    Some(found) => out.push(found),
                    None => match fresh.next() {
                        Some(row) => out.push(crate::generated::Stored::Live(row)),
                        None => {
                            return Err(::sqlx::Error::Protocol(
                                "APPEND returned fewer rows than it was given".into(),
                            ))
                        }
                    },
                }
            }
            Ok(Some(crate::generated::AppendOutcome::Appended { rows: out, last, total }))
        }

        /// Runs [`APPEND`] (or [`APPEND_RETRYABLE`]): `rows` appended under `arg` in one
        /// statement. When the statement appends nothing though it had rows to append (the
        /// parent's last value was not the expected one, or a retry's statement found the
        /// parent locked by another transaction or changed after its snapshot was taken), the
        /// parent is locked first ([`LOCK_PARENT`], in a transaction of its own or a savepoint
        /// inside the caller's) and the statement runs again on a snapshot taken after the
        /// lock, which is the parent's current state.
        pub async fn append<'a>(
            conn: &mut ::sqlx::PgConnection,
            arg: &super::#parent_ty,
            expected_last: Option<Option<#last_ty>>,
            rows: &[super::#insert],
        ) -> Result<crate::generated::AppendOutcome<super::#row, #last_ty, #total_ty, #by_ty>, ::sqlx::Error> {
            let sql = #choose;
            let answer: Vec<AppendAnswer> = #first.fetch_all(&mut *conn).await?;
            if let Some(outcome) = decide(answer, rows, false)? {
                return Ok(outcome);
            }
            let mut tx = ::sqlx::Connection::begin(&mut *conn).await?;
            ::sqlx::query(LOCK_PARENT) #(.bind(#lock_binds))* .execute(&mut *tx).await?;
            let answer: Vec<AppendAnswer> = #again.fetch_all(&mut *tx).await?;
            let outcome = decide(answer, rows, true)?.ok_or_else(|| {
                ::sqlx::Error::Protocol("APPEND could not decide under its parent's lock".into())
            })?;
            tx.commit().await?;
            Ok(outcome)
        }
    })
}

/// The doc comment of `APPEND`, in words.
fn statement_doc(shape: &Shape) -> String {
    let append = shape.append;
    format!(
        "Appends any number of `{table}` rows under one `{parent}` row in one statement, in the given order: the parent row is locked (appends under one parent never interleave), the rows' `{order}` values follow the parent's `{last}` in the given order, their foreign-key columns are the parent's (the rows' own values of those columns are not read){total}. Every row comes back as stored. A row whose key is already stored (or archived{archive}) with the same values is not appended again and comes back as stored; one stored with other values, or under another parent, is a clash and nothing is written. With `expected_last`, nothing is appended unless the parent's `{last}` is that value (`Some(None)`: nothing appended yet), except that a full retry of a stored batch still returns it.",
        table = shape.ctx.table.name,
        parent = append.foreign_key,
        order = append.order_by,
        last = append.last,
        total = match (append.total, append.touched) {
            (Some((t, c)), Some(touched)) => format!("; the parent's `{t}` grows by the new rows' `{c}` and its `{touched}` is set"),
            (Some((t, c)), None) => format!("; the parent's `{t}` grows by the new rows' `{c}`"),
            (None, Some(touched)) => format!("; the parent's `{touched}` is set"),
            (None, None) => String::new(),
        },
        archive = append
            .archive
            .as_ref()
            .map_or(String::new(), |a| format!(" in `{}`", a.table)),
    )
}
