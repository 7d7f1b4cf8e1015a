//! Tenant isolation: another tenant's ids behave exactly like missing ones on every function,
//! and nothing is written or revealed.

mod common;

use agentpg_repo::*;
use agentpg_schema::{MessageRole, NewMessage, NewSession};
use common::{conversation, plan, session, text, OTHER, TENANT};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn another_tenants_ids_look_missing_everywhere(pool: PgPool) {
    let s = session(&pool, TENANT, "mine").await;
    let all = conversation(&pool, s.id, 4).await;
    let event = compact(&pool, TENANT, &plan(s.id, vec![all[0].id]))
        .await
        .unwrap();
    let child = create_session(
        &pool,
        &NewSession {
            parent_session_id: Some(s.id),
            metadata: None,
            ..NewSession::new(TENANT.into(), "child".into())
        },
    )
    .await
    .unwrap();
    session(&pool, OTHER, "theirs").await;
    let before = common::dump(&pool).await;

    // For each function: the result for OTHER on TENANT's ids equals the result for OTHER on
    // ids that do not exist at all.
    let missing_session = Uuid::new_v4();
    let missing_event = Uuid::new_v4();
    for (sid, eid, mid) in [
        (s.id, event.id, all[1].id),
        (missing_session, missing_event, Uuid::new_v4()),
    ] {
        assert_eq!(get_session(&pool, OTHER, sid).await.unwrap(), None);
        assert!(matches!(
            list_children(&pool, OTHER, sid).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            update_metadata(
                &pool,
                OTHER,
                sid,
                &MetadataUpdate::Replace(Default::default())
            )
            .await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            delete_session(&pool, OTHER, sid).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            append_messages(
                &pool,
                OTHER,
                sid,
                &[NewMessage {
                    tenant_id: OTHER.into(),
                    ..text(sid, MessageRole::User, "x", 5, 5)
                }]
            )
            .await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            list_messages(&pool, OTHER, sid, MessageRange::default()).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert_eq!(get_message(&pool, OTHER, sid, mid).await.unwrap(), None);
        assert!(matches!(
            set_preserved(&pool, OTHER, sid, mid, true).await,
            Err(Error::NotFound(Entity::Message))
        ));
        assert!(matches!(
            delete_messages(&pool, OTHER, sid, &[mid], ToolPairs::Keep).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            recompute_total_tokens(&pool, OTHER, sid).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            compact(&pool, OTHER, &plan(sid, vec![mid]),).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            revert_compaction(&pool, OTHER, eid).await,
            Err(Error::NotFound(Entity::CompactionEvent))
        ));
        assert!(matches!(
            list_compactions(&pool, OTHER, sid).await,
            Err(Error::NotFound(Entity::Session))
        ));
        assert!(matches!(
            archived_messages(&pool, OTHER, eid).await,
            Err(Error::NotFound(Entity::CompactionEvent))
        ));
        // A child in another tenant cannot hang under this session.
        assert!(matches!(
            create_session(
                &pool,
                &NewSession {
                    parent_session_id: Some(sid),
                    metadata: None,
                    ..NewSession::new(OTHER.into(), format!("spy-{sid}"))
                },
            )
            .await,
            Err(Error::NotFound(Entity::ParentSession))
        ));
    }
    assert_eq!(find_session(&pool, OTHER, "mine").await.unwrap(), None);
    let page = list_sessions(
        &pool,
        OTHER,
        &SessionFilter::default(),
        SessionOrder::RecentlyUpdated,
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|s| s.identifier.as_str())
            .collect::<Vec<_>>(),
        ["theirs"]
    );
    assert_eq!(common::dump(&pool).await, before, "nothing written");
    assert_eq!(
        get_session(&pool, TENANT, child.id).await.unwrap(),
        Some(child)
    );
}
