//! Row-level security: as a tenant's role, raw SQL sees and changes only that tenant's rows,
//! whatever it sets or whichever role it switches to; as agentpg_app alone, nothing; the
//! policies are what enforce it; agentpg-repo runs under them, per connection and per
//! transaction (nested too).

mod common;

use agentpg_repo::rls::{
    begin_as_tenant, create_tenant_role, tenant_connect_options, tenant_role, APP_ROLE,
};
use agentpg_repo::*;
use agentpg_schema::{MessageRole, NewSession};
use common::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

const TABLES: [&str; 4] = [
    "sessions",
    "messages",
    "compaction_events",
    "message_archive",
];

/// Both tenants with a session, messages, a compaction (so every table holds rows of each), and
/// both tenants' roles.
async fn two_tenants(pool: &PgPool) {
    for tenant in [TENANT, OTHER] {
        create_tenant_role(pool, tenant, None).await.unwrap();
        let s = create_session(pool, NewSession::new(tenant.into(), "s".into()))
            .await
            .unwrap();
        let batch: Vec<_> = (0..3)
            .map(|i| agentpg_schema::NewMessage {
                tenant_id: tenant.into(),
                ..text(s.id, MessageRole::User, &format!("m{i}"), 1, 1)
            })
            .collect();
        let stored = append_messages(pool, tenant, s.id, &batch)
            .await
            .unwrap()
            .into_rows();
        compact(pool, tenant, &plan(s.id, vec![stored[0].id]))
            .await
            .unwrap();
    }
}

fn options(pool: &PgPool) -> PgConnectOptions {
    (*pool.connect_options()).clone()
}

/// A connection that logs in as the role of `tenant`, or (`None`) as a login that is only a
/// member of agentpg_app.
async fn app_connection(pool: &PgPool, tenant: Option<&str>) -> PgConnection {
    let (options, expected) = match tenant {
        Some(t) => (
            tenant_connect_options(options(pool), t).unwrap(),
            tenant_role(t).unwrap(),
        ),
        None => {
            sqlx::raw_sql(
                "DO $$ BEGIN
                   CREATE ROLE agentpg_test_member LOGIN IN ROLE agentpg_app;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
            )
            .execute(pool)
            .await
            .unwrap();
            (
                options(pool).username("agentpg_test_member"),
                "agentpg_test_member".to_string(),
            )
        }
    };
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(role, expected);
    conn
}

async fn count(conn: &mut PgConnection, table: &str, tenant: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    )))
    .bind(tenant)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn as_a_tenants_role_raw_sql_reaches_only_that_tenant(pool: PgPool) {
    two_tenants(&pool).await;
    let before = dump(&pool).await;
    let mut conn = app_connection(&pool, Some(TENANT)).await;
    for table in TABLES {
        assert!(
            count(&mut conn, table, TENANT).await > 0,
            "{table}: own rows"
        );
        assert_eq!(
            count(&mut conn, table, OTHER).await,
            0,
            "{table}: other's rows"
        );
        let all: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE tenant_id <> $1"
        )))
        .bind(TENANT)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(all, 0, "{table}: nothing but the tenant's rows");
        for write in [
            format!("UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1"),
            format!("DELETE FROM {table} WHERE tenant_id = $1"),
        ] {
            let done = sqlx::query(sqlx::AssertSqlSafe(write.clone()))
                .bind(OTHER)
                .execute(&mut conn)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 0, "{write}");
        }
    }
    // Moving an own row to the other tenant, or writing one for it, is refused.
    let moved = sqlx::query("UPDATE sessions SET tenant_id = $1 WHERE tenant_id = $2")
        .bind(OTHER)
        .bind(TENANT)
        .execute(&mut conn)
        .await
        .unwrap_err();
    // (Citus refuses it before the policies are asked: a row's distribution value never
    // changes there.)
    let moved = Error::from(moved);
    assert!(
        matches!(moved, Error::Forbidden { .. } | Error::Unsupported { .. }),
        "moving a row across tenants: {moved:?}"
    );
    let inserted = sqlx::query("INSERT INTO sessions (tenant_id, identifier) VALUES ($1, 'x')")
        .bind(OTHER)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(matches!(Error::from(inserted), Error::Forbidden { .. }));
    conn.close().await.unwrap();
    assert_eq!(
        dump(&pool).await,
        before,
        "nothing of either tenant changed"
    );

    // As agentpg_app without a tenant's role, nothing is visible and nothing can be written.
    let mut conn = app_connection(&pool, None).await;
    for table in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} with no tenant set");
    }
    let inserted = sqlx::query("INSERT INTO sessions (tenant_id, identifier) VALUES ($1, 'x')")
        .bind(TENANT)
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(matches!(Error::from(inserted), Error::Forbidden { .. }));
}

/// The policies are what keeps the tenants apart: without row-level security the same
/// connection sees the other tenant's rows, and with it back they are gone again. (So the
/// assertions above cannot pass by accident.)
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn without_the_policies_the_same_sql_would_see_the_other_tenant(pool: PgPool) {
    two_tenants(&pool).await;
    let mut conn = app_connection(&pool, Some(TENANT)).await;
    for table in TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"
        )))
        .execute(&pool)
        .await
        .unwrap();
        assert!(
            count(&mut conn, table, OTHER).await > 0,
            "{table}: visible without RLS"
        );
        // With RLS back on and the tenant policy's condition replaced by one that admits every
        // row, the table is open as well: the condition is what keeps the tenant out. (One
        // statement each: Citus propagates DDL by its text.)
        for ddl in [
            format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
            format!("DROP POLICY {table}_tenant ON {table}"),
            format!("CREATE POLICY {table}_tenant ON {table} TO agentpg_app USING (true)"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&pool)
                .await
                .unwrap();
        }
        assert!(
            count(&mut conn, table, OTHER).await > 0,
            "{table}: visible without the tenant condition"
        );
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn the_repo_runs_under_the_policies_per_connection_and_per_transaction(pool: PgPool) {
    two_tenants(&pool).await;
    let theirs = find_session(&pool, OTHER, "s").await.unwrap().unwrap();

    // Per connection: a pool for tenant acme.
    let acme = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(tenant_connect_options(options(&pool), TENANT).unwrap())
        .await
        .unwrap();
    let s = create_session(&acme, NewSession::new(TENANT.into(), "under-rls".into()))
        .await
        .unwrap();
    let stored = conversation(&acme, s.id, 6).await;
    let proposal = plan_compaction(&acme, TENANT, s.id, &CompactionPolicy::new(9, "p"))
        .await
        .unwrap();
    let event = compact(&acme, TENANT, &proposal.plan.unwrap())
        .await
        .unwrap();
    revert_compaction(&acme, TENANT, event.id).await.unwrap();
    let fork = fork_session(
        &acme,
        TENANT,
        s.id,
        stored[2].id,
        NewSession::new(TENANT.into(), "fork".into()),
    )
    .await
    .unwrap();
    assert_eq!(fork.total_tokens, 9);
    let page = list_sessions(
        &acme,
        TENANT,
        &SessionFilter::default(),
        SessionOrder::OldestFirst,
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(page.items.len(), 3);
    finalize_compactions(&acme, TENANT, std::time::Duration::ZERO, 10)
        .await
        .unwrap();

    // Naming the other tenant through acme's pool: nothing found, nothing written.
    assert_eq!(get_session(&acme, OTHER, theirs.id).await.unwrap(), None);
    assert!(list_sessions(
        &acme,
        OTHER,
        &SessionFilter::default(),
        SessionOrder::OldestFirst,
        None,
        10
    )
    .await
    .unwrap()
    .items
    .is_empty());
    let err = create_session(&acme, NewSession::new(OTHER.into(), "sneaky".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    let err = append_messages(
        &acme,
        OTHER,
        theirs.id,
        &[agentpg_schema::NewMessage {
            tenant_id: OTHER.into(),
            ..text(theirs.id, MessageRole::User, "x", 1, 1)
        }],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound(Entity::Session)), "{err}");
    acme.close().await;

    // Per transaction, on the shared pool.
    let mut tx = begin_as_tenant(&pool, TENANT).await.unwrap();
    let mine = list_sessions(
        &mut *tx,
        TENANT,
        &SessionFilter::default(),
        SessionOrder::OldestFirst,
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(mine.items.len(), 3);
    assert_eq!(get_session(&mut *tx, OTHER, theirs.id).await.unwrap(), None);
    append_messages(
        &mut *tx,
        TENANT,
        s.id,
        &[text(s.id, MessageRole::User, "tx", 1, 1)],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The connection went back to the pool as it was.
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(role, tenant_role(TENANT).unwrap());
    assert_ne!(role, APP_ROLE);
    assert!(get_session(&pool, OTHER, theirs.id)
        .await
        .unwrap()
        .is_some());
    for tenant in ["", "a\0b"] {
        assert!(matches!(
            begin_as_tenant(&pool, tenant).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            tenant_connect_options(options(&pool), tenant),
            Err(Error::InvalidInput { .. })
        ));
    }
}

/// The attacks a connection of one tenant can try: change the setting 005 trusted, switch to
/// agentpg_app or back to its login, become the other tenant's role, rename its own settings.
/// None of them reaches the other tenant's rows.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_tenants_connection_cannot_switch_to_another_tenant(pool: PgPool) {
    two_tenants(&pool).await;
    let mut conn = app_connection(&pool, Some(TENANT)).await;
    let other_role = tenant_role(OTHER).unwrap();
    let attempts = [
        "SELECT set_config('agentpg.tenant', 'globex', false)".to_string(),
        "SET agentpg.tenant = 'globex'".to_string(),
        "SET ROLE agentpg_app".to_string(),
        "RESET ROLE".to_string(),
        format!("SET ROLE {other_role}"),
        format!("SET SESSION AUTHORIZATION {other_role}"),
        "ALTER ROLE CURRENT_USER SET agentpg.tenant = 'globex'".to_string(),
    ];
    for attempt in attempts {
        // Whether the database refuses it or takes it, the other tenant stays out of reach: a
        // count of 0, or no answer at all (on Citus, a role that cannot log in cannot read:
        // the coordinator reaches the workers as the current role).
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(attempt.clone()))
            .execute(&mut conn)
            .await;
        for table in TABLES {
            let seen: Result<i64, sqlx::Error> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE tenant_id = $1"
            )))
            .bind(OTHER)
            .fetch_one(&mut conn)
            .await;
            assert!(
                matches!(seen, Ok(0) | Err(sqlx::Error::Database(_))),
                "after {attempt:?}: {table} shows the other tenant: {seen:?}"
            );
        }
    }
    // And a fresh connection after the attempts is still only this tenant's.
    conn.close().await.unwrap();
    let mut conn = app_connection(&pool, Some(TENANT)).await;
    assert!(count(&mut conn, "sessions", TENANT).await > 0);
    assert_eq!(count(&mut conn, "sessions", OTHER).await, 0);
}

/// Inside the caller's transaction, `begin_as_tenant` is a savepoint: once it commits, the
/// caller's transaction runs as the caller again (a role set in a savepoint would otherwise last
/// until the outer transaction ends).
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_nested_tenant_transaction_gives_the_callers_role_back(pool: PgPool) {
    two_tenants(&pool).await;
    let mut outer = pool.begin().await.unwrap();
    let caller: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *outer)
        .await
        .unwrap();
    let mut inner = begin_as_tenant(&mut *outer, TENANT).await.unwrap();
    let inside: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *inner)
        .await
        .unwrap();
    assert_eq!(inside, tenant_role(TENANT).unwrap());
    inner.commit().await.unwrap();
    let after: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *outer)
        .await
        .unwrap();
    assert_eq!(after, caller, "the savepoint's role ended with it");
    let theirs: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE tenant_id = $1")
        .bind(OTHER)
        .fetch_one(&mut *outer)
        .await
        .unwrap();
    assert_eq!(theirs, 1, "the caller sees what it saw before");
    outer.commit().await.unwrap();
}

/// The role name agentpg-repo computes is the one the migrations compute, for any tenant id.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn the_tenant_role_name_is_the_one_the_database_computes(pool: PgPool) {
    for tenant in [
        "acme",
        "Globex Corporation",
        "ünïcödé-テナント",
        &"x".repeat(255),
        "a'b\\c\"d",
    ] {
        let theirs: String = sqlx::query_scalar("SELECT agentpg_tenant_role($1)::text")
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(tenant_role(tenant).unwrap(), theirs, "{tenant:?}");
        assert!(theirs.len() <= 63);
    }
}
