//! The parser proves itself: the fixture migrations (every construct the generator models,
//! with ALTERs across files) are applied to a live PostgreSQL, and the generator's model must
//! equal the catalog — tables, columns in order with type, nullability, has-default, identity
//! and generation, constraints, enum labels and comments.

use std::collections::BTreeSet;

use sqlx::PgPool;
use xtask::codegen::config::TARGETS;
use xtask::codegen::model::{Identity, Schema, SqlType};
use xtask::codegen::{read_migrations, schema_of};

const FIXTURE: &str = "tests/fixture-schema/migrations";

type ColumnRow = (String, String, String, bool, bool, String, String);

fn model_columns(schema: &Schema) -> Vec<ColumnRow> {
    let mut rows = Vec::new();
    for t in &schema.tables {
        for c in &t.columns {
            rows.push((
                t.name.clone(),
                c.name.clone(),
                c.ty.pg_typname(),
                !c.nullable,
                c.default.is_some() || c.generated.is_some(),
                match c.identity {
                    Some(Identity::Always) => "a",
                    Some(Identity::ByDefault) => "d",
                    None => "",
                }
                .to_string(),
                if c.generated.is_some() { "s" } else { "" }.to_string(),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn model_constraints(schema: &Schema) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for t in &schema.tables {
        let mut add = |name: &str, kind: &str| {
            out.insert((t.name.clone(), name.to_string(), kind.to_string()));
        };
        if let Some(pk) = &t.primary_key {
            add(&pk.name, "p");
        }
        t.unique.iter().for_each(|k| add(&k.name, "u"));
        t.foreign_keys.iter().for_each(|k| add(&k.name, "f"));
        t.checks.iter().for_each(|k| add(&k.name, "c"));
    }
    out
}

async fn apply_fixture(pool: &PgPool) -> Schema {
    let root = xtask::workspace_root();
    assert!(TARGETS.iter().any(|t| t.migrations == FIXTURE));
    let migrations = read_migrations(&root.join(FIXTURE), FIXTURE).unwrap();
    assert_eq!(
        migrations.len(),
        4,
        "the fixture spreads ALTERs over several files"
    );
    for m in &migrations {
        // The fixture's own migration script, read from the repository.
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.pair.up.0.clone()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.pair.up.1));
    }
    schema_of(&migrations).unwrap()
}

/// Every way `schema` disagrees with the catalog of `pool`'s database, one line each.
async fn mismatches(schema: &Schema, pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    let catalog_columns: Vec<ColumnRow> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, t.typname::text, a.attnotnull, a.atthasdef,
                a.attidentity::text, a.attgenerated::text
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_type t ON t.oid = a.atttypid
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let model = model_columns(schema);
    if model != catalog_columns {
        out.push(format!(
            "columns: model {model:?}\n      catalog {catalog_columns:?}"
        ));
    }

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY oid",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let model_tables: Vec<String> = schema.tables.iter().map(|t| t.name.clone()).collect();
    if model_tables != tables {
        out.push(format!(
            "tables: model {model_tables:?}, catalog {tables:?}"
        ));
    }

    let constraints: BTreeSet<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, co.conname::text, co.contype::text
         FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
         WHERE c.relnamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let model = model_constraints(schema);
    for c in model.symmetric_difference(&constraints) {
        let side = if model.contains(c) {
            "model"
        } else {
            "catalog"
        };
        out.push(format!("constraint only in {side}: {c:?}"));
    }

    let enums: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
         FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE t.typnamespace = 'public'::regnamespace
         GROUP BY t.typname ORDER BY t.typname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut model_enums: Vec<(String, Vec<String>)> = schema
        .enums
        .iter()
        .map(|e| (e.name.clone(), e.values.clone()))
        .collect();
    model_enums.sort();
    if model_enums != enums {
        out.push(format!("enums: model {model_enums:?}, catalog {enums:?}"));
    }

    let comments: BTreeSet<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, coalesce(a.attname::text, ''), d.description
         FROM pg_description d
         JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
         WHERE c.relnamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut model_comments = BTreeSet::new();
    for t in &schema.tables {
        if let Some(c) = &t.comment {
            model_comments.insert((t.name.clone(), String::new(), c.clone()));
        }
        for col in &t.columns {
            if let Some(c) = &col.comment {
                model_comments.insert((t.name.clone(), col.name.clone(), c.clone()));
            }
        }
    }
    for c in model_comments.symmetric_difference(&comments) {
        let side = if model_comments.contains(c) {
            "model"
        } else {
            "catalog"
        };
        out.push(format!("comment only in {side}: {c:?}"));
    }
    out
}

#[sqlx::test(migrations = false)]
async fn fixture_model_equals_the_live_catalog(pool: PgPool) {
    let schema = apply_fixture(&pool).await;
    let found = mismatches(&schema, &pool).await;
    assert!(
        found.is_empty(),
        "model and catalog differ:\n{}",
        found.join("\n")
    );
}

/// The comparison must see each kind of disagreement.
#[sqlx::test(migrations = false)]
async fn the_comparison_sees_every_kind_of_disagreement(pool: PgPool) {
    let schema = apply_fixture(&pool).await;
    type Mutation = Box<dyn Fn(&mut Schema)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "columns",
            Box::new(|s| s.tables[0].columns[3].nullable ^= true),
        ),
        (
            "columns",
            Box::new(|s| s.tables[0].columns[0].ty = SqlType::Int4),
        ),
        (
            "columns",
            Box::new(|s| s.tables[1].columns[2].identity = None),
        ),
        ("columns", Box::new(|s| s.tables[0].columns.swap(1, 2))),
        ("tables", Box::new(|s| s.tables.swap(0, 1))),
        (
            "constraint only in catalog",
            Box::new(|s| s.tables[0].checks.clear()),
        ),
        ("enums", Box::new(|s| s.enums[0].values.reverse())),
        (
            "comment only in model",
            Box::new(|s| s.tables[1].comment = Some("x".into())),
        ),
    ];
    for (expected, mutate) in cases {
        let mut wrong = schema.clone();
        mutate(&mut wrong);
        let found = mismatches(&wrong, &pool).await;
        assert!(
            found.iter().any(|m| m.starts_with(expected)),
            "expected a {expected} mismatch, found {found:?}"
        );
    }
}
