//! Sessions: each function's normal path and its not-found / invalid-input path.

mod common;

use agentpg_repo::{
    create_session, delete_session, find_session, get_session, list_children, list_sessions,
    update_metadata, Entity, Error, MetadataUpdate, SessionFilter, SessionOrder, MAX_PAGE,
};
use agentpg_schema::NewSession;
use common::{plan, session, TENANT};
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
        let page = list_sessions(
            &pool,
            TENANT,
            &SessionFilter::default(),
            SessionOrder::RecentlyUpdated,
            cursor,
            3,
        )
        .await
        .unwrap();
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
            list_sessions(
                &pool,
                TENANT,
                &SessionFilter::default(),
                SessionOrder::RecentlyUpdated,
                None,
                limit
            )
            .await,
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
    agentpg_repo::compact(&pool, TENANT, &plan(parent.id, vec![messages[0].id]))
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

/// Reads every page of `filter` in `order`, `limit` at a time. With `write_between`, after each
/// page a session is created and every session of the tenant is updated.
async fn all_pages(
    pool: &PgPool,
    filter: &SessionFilter,
    order: SessionOrder,
    limit: u64,
    write_between: bool,
) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut cursor = None;
    for page_number in 0.. {
        let page = list_sessions(pool, TENANT, filter, order, cursor, limit)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|s| s.id));
        if write_between {
            session(pool, TENANT, &format!("new-{order:?}-{page_number}")).await;
            // (A bound instant: Citus refuses a volatile function in an UPDATE's values.)
            sqlx::query("UPDATE sessions SET updated_at = $2 WHERE tenant_id = $1")
                .bind(TENANT)
                .bind(chrono::Utc::now())
                .execute(pool)
                .await
                .unwrap();
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn created_orders_page_every_session_once_while_sessions_are_written(pool: PgPool) {
    let mut existing = Vec::new();
    for i in 0..10 {
        existing.push(session(&pool, TENANT, &format!("s{i}")).await.id);
    }
    for order in [SessionOrder::NewestFirst, SessionOrder::OldestFirst] {
        let seen = all_pages(&pool, &SessionFilter::default(), order, 3, true).await;
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{order:?}: a session came twice");
        for id in &existing {
            assert!(
                seen.contains(id),
                "{order:?}: an existing session was skipped"
            );
        }
    }
    // Oldest first reaches the sessions created while paging; both orders agree at rest.
    let oldest = all_pages(
        &pool,
        &SessionFilter::default(),
        SessionOrder::OldestFirst,
        4,
        false,
    )
    .await;
    let newest = all_pages(
        &pool,
        &SessionFilter::default(),
        SessionOrder::NewestFirst,
        4,
        false,
    )
    .await;
    assert!(oldest.len() > existing.len());
    assert_eq!(oldest.iter().rev().copied().collect::<Vec<_>>(), newest);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn recently_updated_paging_never_repeats_a_session_that_moves(pool: PgPool) {
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(session(&pool, TENANT, &format!("s{i}")).await.id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list_sessions(
            &pool,
            TENANT,
            &SessionFilter::default(),
            SessionOrder::RecentlyUpdated,
            cursor,
            2,
        )
        .await
        .unwrap();
        // Every session already returned is written again: it moves to the front.
        for s in &page.items {
            update_metadata(
                &pool,
                TENANT,
                s.id,
                &MetadataUpdate::Merge(serde_json::Map::new()),
            )
            .await
            .unwrap();
        }
        seen.extend(page.items.iter().map(|s| s.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert_eq!(seen.len(), ids.len());
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn filters_match_metadata_parent_prefix_and_forks(pool: PgPool) {
    let make = |identifier: &str, metadata: serde_json::Value, parent: Option<Uuid>| NewSession {
        metadata: Some(metadata),
        parent_session_id: parent,
        ..NewSession::new(TENANT.into(), identifier.into())
    };
    let root = create_session(
        &pool,
        &make(
            "root",
            json!({"project": "a", "tags": ["x", "y"], "env": {"region": "eu"}}),
            None,
        ),
    )
    .await
    .unwrap();
    let child = create_session(
        &pool,
        &make("root/child_1", json!({"project": "a"}), Some(root.id)),
    )
    .await
    .unwrap();
    let other = create_session(
        &pool,
        &make("root%2", json!({"project": "b", "tags": ["x"]}), None),
    )
    .await
    .unwrap();
    // The same metadata in another tenant is never listed.
    create_session(
        &pool,
        &NewSession {
            metadata: Some(json!({"project": "a"})),
            ..NewSession::new("other".into(), "root".into())
        },
    )
    .await
    .unwrap();
    let ids = |filter: SessionFilter| {
        let pool = pool.clone();
        async move {
            let mut ids = all_pages(&pool, &filter, SessionOrder::OldestFirst, 2, false).await;
            ids.sort();
            ids
        }
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort();
        v
    };
    let object = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(
        ids(SessionFilter::default().metadata(object(json!({"project": "a"})))).await,
        sorted(vec![root.id, child.id])
    );
    assert_eq!(
        ids(SessionFilter::default().metadata(object(json!({"tags": ["x"]})))).await,
        sorted(vec![root.id, other.id])
    );
    assert_eq!(
        ids(SessionFilter::default().metadata(object(json!({"env": {"region": "eu"}})))).await,
        vec![root.id]
    );
    assert_eq!(
        ids(SessionFilter::default().metadata(object(json!({"project": "c"})))).await,
        Vec::<Uuid>::new()
    );
    assert_eq!(
        ids(SessionFilter::default().parent(root.id)).await,
        vec![child.id]
    );
    // The prefix is literal: `%` and `_` match only themselves.
    assert_eq!(
        ids(SessionFilter::default().identifier_prefix("root")).await,
        sorted(vec![root.id, child.id, other.id])
    );
    assert_eq!(
        ids(SessionFilter::default().identifier_prefix("root%")).await,
        vec![other.id]
    );
    assert_eq!(
        ids(SessionFilter::default().identifier_prefix("root/child_")).await,
        vec![child.id]
    );
    assert_eq!(
        ids(SessionFilter::default().identifier_prefix("root/child%")).await,
        Vec::<Uuid>::new()
    );
    assert_eq!(
        ids(SessionFilter::default().identifier_prefix(""))
            .await
            .len(),
        3
    );
    // Conditions combine.
    assert_eq!(
        ids(SessionFilter::default()
            .metadata(object(json!({"project": "a"})))
            .identifier_prefix("root/"))
        .await,
        vec![child.id]
    );

    // Bad input: a cursor of another order, a prefix with NUL or over the limit.
    let page = list_sessions(
        &pool,
        TENANT,
        &SessionFilter::default(),
        SessionOrder::NewestFirst,
        None,
        1,
    )
    .await
    .unwrap();
    let err = list_sessions(
        &pool,
        TENANT,
        &SessionFilter::default(),
        SessionOrder::OldestFirst,
        page.next,
        1,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    for prefix in [
        "a\0".to_string(),
        "x".repeat(agentpg_repo::limits::IDENTIFIER + 1),
    ] {
        let err = list_sessions(
            &pool,
            TENANT,
            &SessionFilter::default().identifier_prefix(prefix),
            SessionOrder::NewestFirst,
            None,
            1,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
}
