//! Sessions: each function's normal path and its not-found / invalid-input path.

mod common;

use agentpg_repo::{
    create_session, delete_session, find_session, get_session, list_children, list_sessions,
    update_metadata, Entity, Error, MetadataUpdate, MAX_PAGE,
};
use agentpg_schema::NewSession;
use common::{session, TENANT};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn create_returns_the_stored_row(pool: PgPool) {
    let parent = session(&pool, TENANT, "parent").await;
    let created = create_session(
        &pool,
        &NewSession {
            parent_session_id: Some(parent.id),
            metadata: Some(json!({"project": "x"})),
            ..NewSession::new(TENANT.into(), "child".into())
        },
    )
    .await
    .unwrap();
    assert_eq!(created.tenant_id, TENANT);
    assert_eq!(created.identifier, "child");
    assert_eq!(created.parent_session_id, Some(parent.id));
    assert_eq!(created.metadata, json!({"project": "x"}));
    assert_eq!((created.total_tokens, created.compaction_count), (0, 0));
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        get_session(&pool, TENANT, created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        find_session(&pool, TENANT, "child").await.unwrap(),
        Some(created)
    );
    assert_eq!(parent.metadata, json!({}));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn create_refuses_bad_input_and_duplicates(pool: PgPool) {
    let bad = |tenant: &str, identifier: &str, metadata| NewSession {
        metadata,
        ..NewSession::new(tenant.into(), identifier.into())
    };
    for input in [
        bad("", "x", None),
        bad("t", "", None),
        bad("t\0", "x", None),
        bad("t", "x\0", None),
        bad("t", "x", Some(json!([1]))),
        bad("t", "x", Some(json!({"k": "v\u{0}"}))),
    ] {
        let err = create_session(&pool, &input).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{input:?}: {err:?}"
        );
    }
    session(&pool, TENANT, "taken").await;
    let err = create_session(&pool, &bad(TENANT, "taken", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { reason, .. } if reason.contains("sessions_tenant_id_identifier_key")),
        "{err:?}"
    );
    // The same identifier in another tenant is fine.
    session(&pool, "other", "taken").await;
    let err = create_session(
        &pool,
        &NewSession {
            parent_session_id: Some(Uuid::new_v4()),
            ..bad(TENANT, "orphan", None)
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(Entity::ParentSession)),
        "{err:?}"
    );
    assert_eq!(common::counts(&pool).await, [2, 0, 0, 0]);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn lookups_of_missing_sessions_are_none(pool: PgPool) {
    assert_eq!(
        get_session(&pool, TENANT, Uuid::new_v4()).await.unwrap(),
        None
    );
    assert_eq!(find_session(&pool, TENANT, "nope").await.unwrap(), None);
    assert!(matches!(
        get_session(&pool, "", Uuid::new_v4()).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn list_pages_newest_updated_first(pool: PgPool) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let s = session(&pool, TENANT, &format!("s{i}")).await;
        // Distinct, known update times; two share one to exercise the id tie-break.
        sqlx::query("UPDATE sessions SET updated_at = '2026-01-01'::timestamptz + $2 * interval '1 minute' WHERE id = $1")
            .bind(s.id)
            .bind(if i == 4 { 3 } else { i })
            .execute(&pool)
            .await
            .unwrap();
        ids.push(s.id);
    }
    session(&pool, "other", "hidden").await;
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = list_sessions(&pool, TENANT, cursor, 3).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|s| s.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<(i32, uuid::Uuid)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (if i == 4 { 3 } else { i as i32 }, *id))
        .collect();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        seen,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    for limit in [0, MAX_PAGE + 1] {
        assert!(matches!(
            list_sessions(&pool, TENANT, None, limit).await,
            Err(Error::InvalidInput { .. })
        ));
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn children_are_listed_oldest_first(pool: PgPool) {
    let parent = session(&pool, TENANT, "parent").await;
    assert_eq!(
        list_children(&pool, TENANT, parent.id).await.unwrap(),
        vec![]
    );
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(
            create_session(
                &pool,
                &NewSession {
                    parent_session_id: Some(parent.id),
                    metadata: None,
                    ..NewSession::new(TENANT.into(), format!("child{i}"))
                },
            )
            .await
            .unwrap(),
        );
    }
    let mut expected = children.clone();
    expected.sort_by_key(|c| (c.created_at, c.id));
    assert_eq!(
        list_children(&pool, TENANT, parent.id).await.unwrap(),
        expected
    );
    assert!(matches!(
        list_children(&pool, TENANT, Uuid::new_v4()).await,
        Err(Error::NotFound(Entity::Session))
    ));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn metadata_is_replaced_or_merged(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    let replaced = update_metadata(
        &pool,
        TENANT,
        s.id,
        &MetadataUpdate::Replace(obj(json!({"a": 1, "b": 2}))),
    )
    .await
    .unwrap();
    assert_eq!(replaced.metadata, json!({"a": 1, "b": 2}));
    assert!(replaced.updated_at >= s.updated_at);
    let merged = update_metadata(
        &pool,
        TENANT,
        s.id,
        &MetadataUpdate::Merge(obj(json!({"b": 3, "c": {"d": 4}}))),
    )
    .await
    .unwrap();
    assert_eq!(merged.metadata, json!({"a": 1, "b": 3, "c": {"d": 4}}));
    let err = update_metadata(
        &pool,
        TENANT,
        Uuid::new_v4(),
        &MetadataUpdate::Replace(obj(json!({}))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotFound(Entity::Session)), "{err:?}");
    let err = update_metadata(
        &pool,
        TENANT,
        s.id,
        &MetadataUpdate::Merge(obj(json!({"x\u{0}": 1}))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(
        common::session_row(&pool, s.id).await.metadata,
        merged.metadata
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn delete_cascades_to_everything_below(pool: PgPool) {
    let parent = session(&pool, TENANT, "parent").await;
    let child = create_session(
        &pool,
        &NewSession {
            parent_session_id: Some(parent.id),
            metadata: None,
            ..NewSession::new(TENANT.into(), "child".into())
        },
    )
    .await
    .unwrap();
    let messages = common::conversation(&pool, parent.id, 4).await;
    common::conversation(&pool, child.id, 2).await;
    agentpg_repo::compact(
        &pool,
        TENANT,
        &agentpg_repo::CompactionPlan {
            session_id: parent.id,
            remove: vec![messages[0].id],
            summary: None,
            strategy: "drop".into(),
            model_used: None,
            duration_ms: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(common::counts(&pool).await, [2, 5, 1, 1]);
    delete_session(&pool, TENANT, parent.id).await.unwrap();
    assert_eq!(common::counts(&pool).await, [0, 0, 0, 0]);
    assert!(matches!(
        delete_session(&pool, TENANT, parent.id).await,
        Err(Error::NotFound(Entity::Session))
    ));
}
