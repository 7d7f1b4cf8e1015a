//! The migrations on a live PostgreSQL: they apply with psql and with the embedded migrator,
//! every down reverts its up exactly, and the schema keeps the seed's promises.

use std::collections::BTreeSet;

use agentpg_tests::{
    apply_sql, assert_same_catalog, catalog, current_database, database_url_for,
    migration_file_names, migrations, migrations_dir, psql_apply, Catalog,
    GOLANG_MIGRATE_FILE_RULE,
};
use sqlx::{PgConnection, PgPool};

const TABLES: [&str; 5] = [
    "sessions",
    "messages",
    "compaction_events",
    "message_archive",
    "session_changes",
];

async fn tables(conn: &mut PgConnection) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables \
         WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
    )
    .fetch_all(conn)
    .await
    .expect("list tables")
    .into_iter()
    .collect()
}

fn all_tables() -> BTreeSet<String> {
    TABLES.iter().map(|t| t.to_string()).collect()
}

#[test]
fn file_names_follow_golang_migrate_rule_and_pair_up() {
    let rule = regex::Regex::new(GOLANG_MIGRATE_FILE_RULE).unwrap();
    let names = migration_file_names(&migrations_dir());
    assert_eq!(names.len(), 18, "nine migrations, up and down: {names:?}");
    for name in &names {
        assert!(
            rule.is_match(name),
            "{name} breaks {GOLANG_MIGRATE_FILE_RULE}"
        );
    }
    // migrations() panics on a repeated version, a second name for a version, or a missing pair.
    let found: Vec<(u64, String)> = migrations()
        .into_iter()
        .map(|m| (m.version, m.name))
        .collect();
    assert_eq!(
        found,
        vec![
            (1, "create_sessions".to_string()),
            (2, "create_messages".to_string()),
            (3, "create_compaction_events".to_string()),
            (4, "create_message_archive".to_string()),
            (5, "row_level_security".to_string()),
            (6, "tenant_roles".to_string()),
            (7, "provider_usage".to_string()),
            (8, "message_search".to_string()),
            (9, "session_changes".to_string()),
        ]
    );
}

#[test]
fn pairing_rejects_a_lone_up_file() {
    let dir = std::env::temp_dir().join(format!("agentpg-lone-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("7_orphan.up.sql"), "SELECT 1;").unwrap();
    let result = std::panic::catch_unwind(|| agentpg_tests::migrations_in(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    let message = *result
        .expect_err("a lone up file must be refused")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("has no .down.sql"), "{message}");
}

#[sqlx::test(migrations = false)]
async fn psql_applies_the_ups_in_order_like_the_embedded_migrator(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let url = database_url_for(&current_database(&mut conn).await);

    for m in migrations() {
        psql_apply(&url, &m.up);
    }
    assert_eq!(tables(&mut conn).await, all_tables());
    let by_psql = catalog(&mut conn).await;

    for m in migrations().iter().rev() {
        psql_apply(&url, &m.down);
    }
    assert!(
        catalog(&mut conn).await.is_empty(),
        "psql downs leave nothing"
    );

    agentpg_repo::migrate(&pool)
        .await
        .expect("embedded migrator");
    let by_migrator = catalog(&mut conn).await;
    assert_same_catalog(&by_psql, &by_migrator, "psql vs embedded migrator");
}

#[sqlx::test(migrations = false)]
async fn embedded_migrator_applies_all_and_undoes_all(pool: PgPool) {
    let migrator = &agentpg_repo::MIGRATOR;
    assert_eq!(
        migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count(),
        migrations().len()
    );
    agentpg_repo::migrate(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(tables(&mut conn).await, all_tables());
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(applied, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // Running again is a no-op.
    agentpg_repo::migrate(&pool).await.unwrap();

    migrator.undo(&pool, 0).await.unwrap();
    assert!(
        catalog(&mut conn).await.is_empty(),
        "undo to 0 leaves nothing"
    );
}

/// For every N: ups 1..N then down N gives the catalog of ups 1..N-1, and up N again gives the
/// catalog of ups 1..N. Then the downs in reverse order walk back through every earlier catalog
/// to an empty schema.
#[sqlx::test(migrations = false)]
async fn every_down_reverts_exactly_its_up(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let migrations = migrations();
    let empty = catalog(&mut conn).await;
    assert!(empty.is_empty(), "fresh database is empty:\n{empty}");

    let mut after: Vec<Catalog> = vec![empty];
    for m in &migrations {
        let label = format!("{:03}_{}", m.version, m.name);
        let before = after.last().unwrap().clone();

        apply_sql(&mut conn, &format!("{label} up"), &m.up_sql()).await;
        let applied = catalog(&mut conn).await;
        assert_ne!(applied, before, "{label} up changes nothing");

        apply_sql(&mut conn, &format!("{label} down"), &m.down_sql()).await;
        assert_same_catalog(
            &before,
            &catalog(&mut conn).await,
            &format!("{label}: up then down"),
        );

        apply_sql(&mut conn, &format!("{label} up again"), &m.up_sql()).await;
        assert_same_catalog(
            &applied,
            &catalog(&mut conn).await,
            &format!("{label}: up, down, up"),
        );
        after.push(applied);
    }

    for (i, m) in migrations.iter().enumerate().rev() {
        let label = format!("{:03}_{} down", m.version, m.name);
        apply_sql(&mut conn, &label, &m.down_sql()).await;
        assert_same_catalog(&after[i], &catalog(&mut conn).await, &label);
    }
    assert!(catalog(&mut conn).await.is_empty());
}

/// The catalog comparison itself must see a broken down: a down that forgets an index.
#[sqlx::test(migrations = false)]
async fn catalog_comparison_sees_a_down_that_leaves_something_behind(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let empty = catalog(&mut conn).await;
    let first = &migrations()[0];
    apply_sql(&mut conn, "up", &first.up_sql()).await;
    apply_sql(
        &mut conn,
        "extra",
        "CREATE TABLE leftover (id uuid PRIMARY KEY); COMMENT ON TABLE leftover IS 'x';",
    )
    .await;
    apply_sql(&mut conn, "down", &first.down_sql()).await;
    let after = catalog(&mut conn).await;
    let leftovers: Vec<&str> = after.missing_from(&empty).map(String::as_str).collect();
    assert_eq!(
        leftovers,
        [
            "column leftover.id #1 uuid not null",
            "comment leftover = 'x'",
            "constraint leftover.leftover_pkey PRIMARY KEY (id)",
            "index CREATE UNIQUE INDEX leftover_pkey ON public.leftover USING btree (id)",
            "relation leftover kind=r",
            "relation leftover_pkey kind=i",
            "row security leftover enabled=f forced=f",
        ]
    );
}

#[sqlx::test(migrations = false)]
async fn schema_keeps_the_seed_promises(pool: PgPool) {
    agentpg_repo::migrate(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();

    let primary_keys: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_constraint co
         JOIN pg_class c ON c.oid = co.conrelid
         JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = ANY (co.conkey)
         WHERE co.contype = 'p' AND c.relnamespace = 'public'::regnamespace
           AND c.relname <> '_sqlx_migrations'
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        primary_keys
            .iter()
            .map(|(t, ..)| t.as_str())
            .collect::<BTreeSet<_>>(),
        TABLES.into_iter().collect::<BTreeSet<_>>(),
        "every table has a primary key"
    );
    // Every primary key is (tenant_id text, id uuid): the tenant leads every key.
    for table in TABLES {
        let key: Vec<(&str, &str)> = primary_keys
            .iter()
            .filter(|(t, ..)| t == table)
            .map(|(_, c, ty)| (c.as_str(), ty.as_str()))
            .collect();
        assert_eq!(
            key,
            [("id", "uuid"), ("tenant_id", "text")],
            "primary key of {table}"
        );
    }

    let foreign_keys: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, co.conname::text, co.confdeltype::text,
                EXISTS (SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = co.conrelid AND a.attnum = co.conkey[1]
                           AND a.attname = 'tenant_id')
         FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
         WHERE co.contype = 'f' AND c.relnamespace = 'public'::regnamespace
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        foreign_keys
            .iter()
            .map(|(t, n, ..)| format!("{t}.{n}"))
            .collect::<Vec<_>>(),
        vec![
            "compaction_events.compaction_events_session_fkey",
            "message_archive.message_archive_compaction_event_fkey",
            "message_archive.message_archive_session_fkey",
            "messages.messages_session_fkey",
            "session_changes.session_changes_compaction_event_fkey",
            "session_changes.session_changes_session_fkey",
            "sessions.sessions_parent_session_fkey",
        ]
    );
    for (table, name, action, tenant_first) in &foreign_keys {
        assert_eq!(action, "c", "{table}.{name} must be ON DELETE CASCADE");
        assert!(tenant_first, "{table}.{name} must lead with tenant_id");
    }

    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND c.relname <> '_sqlx_migrations' AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut timestamps = 0;
    let mut jsons = 0;
    for (table, column, ty) in &columns {
        if ty.starts_with("timestamp") || ty.starts_with("time ") || ty == "date" {
            assert_eq!(ty, "timestamp with time zone", "{table}.{column}");
            timestamps += 1;
        }
        if ty.starts_with("json") {
            assert_eq!(ty, "jsonb", "{table}.{column}");
            jsons += 1;
        }
    }
    assert_eq!(
        (timestamps, jsons),
        (9, 9),
        "timestamp and JSON column counts"
    );

    let uncommented: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname || coalesce('.' || a.attname, '')
         FROM pg_class c
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND c.relname <> '_sqlx_migrations'
           AND (obj_description(c.oid, 'pg_class') IS NULL
                OR (a.attnum IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL))",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        uncommented.is_empty(),
        "tables or columns without a comment: {uncommented:?}"
    );
}

/// The generated goose folder: one file per version holding both directions verbatim; its up
/// sections build the same catalog as the up files, and its down sections empty it again.
#[sqlx::test(migrations = false)]
async fn goose_files_hold_both_directions_of_every_version(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let goose_dir = migrations_dir().join("goose");
    let mut sections = Vec::new();
    for m in migrations() {
        let path = goose_dir.join(format!("{:03}_{}.sql", m.version, m.name));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (head, rest) = text.split_once("-- +goose Up\n").expect("an Up section");
        assert!(head.starts_with("-- @generated"), "{}", path.display());
        let (up, down) = rest
            .split_once("\n-- +goose Down\n")
            .expect("a Down section");
        // A section holding a dollar-quoted body is sent whole, between goose's markers.
        let unwrapped = |section: &str| -> String {
            section
                .trim()
                .strip_prefix("-- +goose StatementBegin\n")
                .and_then(|s| s.strip_suffix("\n-- +goose StatementEnd"))
                .unwrap_or(section.trim())
                .trim()
                .to_string()
        };
        assert_eq!(unwrapped(up), m.up_sql().trim(), "{}", path.display());
        assert_eq!(unwrapped(down), m.down_sql().trim(), "{}", path.display());
        sections.push((up.to_string(), down.to_string()));
    }
    assert_eq!(
        std::fs::read_dir(&goose_dir).unwrap().count(),
        sections.len(),
        "nothing else in the goose folder"
    );
    for (i, (up, _)) in sections.iter().enumerate() {
        apply_sql(&mut conn, &format!("goose up {i}"), up).await;
    }
    let by_goose = catalog(&mut conn).await;
    for (i, (_, down)) in sections.iter().enumerate().rev() {
        apply_sql(&mut conn, &format!("goose down {i}"), down).await;
    }
    assert!(catalog(&mut conn).await.is_empty());
    agentpg_repo::migrate(&pool).await.unwrap();
    assert_same_catalog(
        &catalog(&mut conn).await,
        &by_goose,
        "goose vs embedded migrator",
    );
}
