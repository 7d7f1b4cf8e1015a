//! The partitioned-layout proof, step one: the project's migrations, unchanged on disk, applied
//! with every table declared `PARTITION BY HASH (tenant_id)` with four partitions, into
//! `template1` of a throwaway server, recorded in `_sqlx_migrations` as the real migrations (so
//! the migrator of every `#[sqlx::test]` database created from it finds nothing to do). Step
//! two, `cargo xtask test`, then runs the whole agentpg-repo suite on that server.
//!
//! Each partition lives in a schema of its own (`agentpg_p0` … `agentpg_p3`) under its
//! table's name, with its primary key and unique constraints created under the parent's names
//! before it is attached, so that a violation reports the constraint name the code knows
//! (PostgreSQL reports the partition's index, which would otherwise get a generated name).
//!
//! The test touches a database only when `AGENTPG_PARTITIONED_TEMPLATE` names one: it rewrites
//! that server's `template1`, which no shared server should see.

use std::path::{Path, PathBuf};

use regex::Regex;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

const PARTITIONS: u32 = 4;

/// `sql` with every `CREATE TABLE name (…);` followed by its partitioning: the table becomes
/// `PARTITION BY HASH (tenant_id)`, and a block creates and attaches its partitions.
fn partitioned(sql: &str) -> String {
    let create = Regex::new(r"(?ms)^CREATE TABLE (\w+) \(.*?^\)").expect("a valid regex");
    let mut out = String::with_capacity(sql.len() * 2);
    let mut last = 0;
    for m in create.captures_iter(sql) {
        let whole = m.get(0).expect("the match");
        let table = &m[1];
        out.push_str(&sql[last..whole.end()]);
        out.push_str(" PARTITION BY HASH (tenant_id);\n");
        out.push_str(&format!(
            "DO $partition$
DECLARE
    r int;
    c record;
BEGIN
    FOR r IN 0..{last_partition} LOOP
        EXECUTE format('CREATE TABLE %I.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)', 'agentpg_p' || r, '{table}', '{table}');
        FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                 WHERE conrelid = 'public.{table}'::regclass AND contype IN ('p', 'u') ORDER BY conname LOOP
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', 'agentpg_p' || r, '{table}', c.conname, c.def);
        END LOOP;
        EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION %I.%I FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER %s)', '{table}', 'agentpg_p' || r, '{table}', r);
    END LOOP;
END
$partition$",
            last_partition = PARTITIONS - 1
        ));
        // The statement's own semicolon follows the match.
        last = whole.end();
    }
    out.push_str(&sql[last..]);
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

#[test]
fn the_transformation_partitions_every_table_and_keeps_everything_else() {
    let sql = "-- c\nCREATE TABLE a (\n    tenant_id text\n);\nCREATE INDEX i ON a (tenant_id);\n";
    let out = partitioned(sql);
    assert!(out.starts_with("-- c\nCREATE TABLE a (\n    tenant_id text\n) PARTITION BY HASH (tenant_id);\nDO $partition$"));
    assert!(
        out.ends_with("$partition$;\nCREATE INDEX i ON a (tenant_id);\n"),
        "{out}"
    );
    let dir = workspace_root().join("migrations");
    let mut tables = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".up.sql") {
            let sql = std::fs::read_to_string(&path).unwrap();
            let creates = sql.matches("\nCREATE TABLE ").count()
                + usize::from(sql.starts_with("CREATE TABLE "));
            let out = partitioned(&sql);
            assert_eq!(
                out.matches("PARTITION BY HASH (tenant_id)").count(),
                creates,
                "{}",
                path.display()
            );
            tables += creates;
        }
    }
    assert_eq!(tables, 5, "the five tables of the schema");
}

#[tokio::test]
#[ignore = "rewrites template1 of the server AGENTPG_PARTITIONED_TEMPLATE names; cargo xtask test runs it on a throwaway server"]
async fn build_partitioned_template() {
    let Ok(url) = std::env::var("AGENTPG_PARTITIONED_TEMPLATE") else {
        println!("AGENTPG_PARTITIONED_TEMPLATE is not set: nothing to do");
        return;
    };
    // The migrations as they are, transformed into a folder of their own (same file names, so
    // the same versions and descriptions).
    let source = workspace_root().join("migrations");
    let folder = std::env::temp_dir().join(format!("agentpg-partitioned-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".sql") {
            let sql = std::fs::read_to_string(&path).unwrap();
            let sql = if name.ends_with(".up.sql") {
                partitioned(&sql)
            } else {
                sql
            };
            std::fs::write(folder.join(&name), sql).unwrap();
        }
    }
    let transformed = Migrator::new(folder.as_path()).await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for r in 0..PARTITIONS {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS agentpg_p{r}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    transformed.run(&mut conn).await.unwrap();
    // Recorded as the real migrations.
    for migration in agentpg_repo::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        let updated = sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(migration.checksum.as_ref())
            .bind(migration.version)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            updated.rows_affected(),
            1,
            "migration {}",
            migration.version
        );
    }
    // Every table partitioned, each with its partitions.
    let layout: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text,
                (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(layout.len() >= 4, "{layout:?}");
    for (table, kind, partitions) in &layout {
        assert_eq!(
            (kind.as_str(), *partitions),
            ("p", i64::from(PARTITIONS)),
            "{table} is not hash-partitioned in {PARTITIONS}"
        );
    }
    conn.close().await.unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    println!("template1 holds the partitioned layout: {layout:?}");
}
