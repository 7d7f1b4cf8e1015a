//! Full-text search: what is found, the filters, paging under concurrent writes, hostile
//! searches, tenants.

mod common;

use std::collections::BTreeSet;

use agentpg_repo::*;
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession};
use common::{session, OTHER, TENANT};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

fn message(session: Uuid, role: MessageRole, content: Vec<ContentBlock>) -> NewMessage {
    NewMessage {
        id: Some(Uuid::new_v4()),
        content: Some(Json(content)),
        ..NewMessage::new(TENANT.into(), session, role)
    }
}

fn said(session: Uuid, role: MessageRole, text: &str) -> NewMessage {
    message(session, role, vec![ContentBlock::text(text)])
}

/// Every hit of `search`, page after page of `limit`.
async fn all_pages(
    pool: &PgPool,
    tenant: &str,
    search: &MessageSearch,
    limit: u64,
) -> Vec<SearchHit> {
    let mut hits = Vec::new();
    let mut after = None;
    loop {
        let page = search_messages(pool, tenant, search, after.as_ref(), limit)
            .await
            .unwrap();
        hits.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return hits,
        }
    }
}

fn ids(hits: &[SearchHit]) -> Vec<Uuid> {
    hits.iter().map(|h| h.message_id).collect()
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn finds_what_messages_say_in_text_tool_inputs_and_tool_results(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let batch = vec![
        said(
            s.id,
            MessageRole::User,
            "My kettle arrived with a cracked lid; I want a refund.",
        ),
        message(
            s.id,
            MessageRole::Assistant,
            vec![
                ContentBlock::text("Looking it up."),
                ContentBlock::tool_use(
                    "call_refund",
                    "issue_refund",
                    json!({"reason": "damaged lid", "order": 88412}),
                ),
            ],
        ),
        message(
            s.id,
            MessageRole::User,
            vec![ContentBlock::tool_result(
                "call_refund",
                json!([{"type": "text", "text": "refund approved: rf_5521"}]),
            )],
        ),
        said(
            s.id,
            MessageRole::Assistant,
            "Anything else about the toaster?",
        ),
    ];
    let stored = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();

    let found = |text: &str| {
        let pool = pool.clone();
        let text = text.to_owned();
        async move { ids(&all_pages(&pool, TENANT, &MessageSearch::new(text), 10).await) }
    };
    // Stemmed: "refunds" finds "refund"; the tool result's text is searched.
    let refunds = found("refunds").await;
    assert_eq!(refunds.len(), 2, "the user's words and the tool result");
    assert!(refunds.contains(&stored[0].id) && refunds.contains(&stored[2].id));
    // A tool input's string values are searched; its keys, ids, names and block types are not.
    assert_eq!(found("damaged").await, vec![stored[1].id]);
    for word in ["reason", "call_refund", "issue_refund", "tool_use", "text"] {
        assert!(
            found(word).await.is_empty(),
            "{word} is not something a message says"
        );
    }
    // Web search syntax: phrases, OR, exclusion.
    assert_eq!(found("\"cracked lid\"").await, vec![stored[0].id]);
    assert_eq!(found("toaster or kettle").await.len(), 2);
    assert_eq!(found("lid -refund").await, vec![stored[1].id]);

    let hits = all_pages(&pool, TENANT, &MessageSearch::new("cracked lid"), 10).await;
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!((hit.session_id, hit.message_id), (s.id, stored[0].id));
    assert!(hit.rank > 0.0);
    assert!(
        hit.snippet.contains("<<cracked>> <<lid>>"),
        "{}",
        hit.snippet
    );
    // The row is read back whole, as stored.
    assert_eq!(hit.found, Found::Live(stored[0].clone()));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn filters_compose_and_tenants_stay_apart(pool: PgPool) {
    let support = create_session(
        &pool,
        &NewSession {
            metadata: Some(json!({"team": "support", "lang": "en"})),
            ..NewSession::new(TENANT.into(), "support".into())
        },
    )
    .await
    .unwrap();
    let sales = create_session(
        &pool,
        &NewSession {
            metadata: Some(json!({"team": "sales"})),
            ..NewSession::new(TENANT.into(), "sales".into())
        },
    )
    .await
    .unwrap();
    let early: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let late: chrono::DateTime<chrono::Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    let with_time = |m: NewMessage, at| NewMessage {
        created_at: Some(at),
        ..m
    };
    let a = append_messages(
        &pool,
        TENANT,
        support.id,
        &[
            with_time(
                said(support.id, MessageRole::User, "invoice overdue"),
                early,
            ),
            with_time(
                said(support.id, MessageRole::Assistant, "the invoice is paid"),
                late,
            ),
        ],
    )
    .await
    .unwrap()
    .into_rows();
    let b = append_messages(
        &pool,
        TENANT,
        sales.id,
        &[said(sales.id, MessageRole::User, "invoice please")],
    )
    .await
    .unwrap()
    .into_rows();
    let other = session(&pool, OTHER, "other").await;
    append_messages(
        &pool,
        OTHER,
        other.id,
        &[NewMessage {
            tenant_id: OTHER.into(),
            ..said(other.id, MessageRole::User, "invoice from another tenant")
        }],
    )
    .await
    .unwrap();

    let search = |f: &dyn Fn(&mut MessageSearch)| {
        let mut s = MessageSearch::new("invoice");
        f(&mut s);
        s
    };
    let set = |hits: Vec<SearchHit>| ids(&hits).into_iter().collect::<BTreeSet<_>>();
    let all = set(all_pages(&pool, TENANT, &search(&|_| {}), 10).await);
    assert_eq!(
        all,
        BTreeSet::from([a[0].id, a[1].id, b[0].id]),
        "never another tenant's"
    );
    let only_support = set(all_pages(
        &pool,
        TENANT,
        &search(&|s| s.sessions = Some(vec![support.id])),
        10,
    )
    .await);
    assert_eq!(only_support, BTreeSet::from([a[0].id, a[1].id]));
    let by_metadata = set(all_pages(
        &pool,
        TENANT,
        &search(&|s| s.session_metadata = json!({"team": "support"}).as_object().cloned()),
        10,
    )
    .await);
    assert_eq!(by_metadata, only_support);
    let users = set(all_pages(
        &pool,
        TENANT,
        &search(&|s| s.roles = Some(vec![MessageRole::User])),
        10,
    )
    .await);
    assert_eq!(users, BTreeSet::from([a[0].id, b[0].id]));
    let range = set(all_pages(
        &pool,
        TENANT,
        &search(&|s| {
            s.sessions = Some(vec![support.id]);
            s.created_from = Some(late);
            s.created_before = Some(late + chrono::Duration::days(1));
        }),
        10,
    )
    .await);
    assert_eq!(range, BTreeSet::from([a[1].id]));
    let none = all_pages(
        &pool,
        TENANT,
        &search(&|s| {
            s.roles = Some(vec![MessageRole::System]);
        }),
        10,
    )
    .await;
    assert!(none.is_empty());
    // Another tenant's session id finds nothing, like a missing one.
    let foreign = all_pages(
        &pool,
        TENANT,
        &search(&|s| s.sessions = Some(vec![other.id])),
        10,
    )
    .await;
    assert!(foreign.is_empty());
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn archived_messages_are_found_when_asked_and_keep_their_compaction(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let rows = append_messages(
        &pool,
        TENANT,
        s.id,
        &[
            said(
                s.id,
                MessageRole::User,
                "the warranty covers the heating element",
            ),
            said(s.id, MessageRole::Assistant, "noted"),
            said(
                s.id,
                MessageRole::User,
                "what about the warranty on the lid?",
            ),
        ],
    )
    .await
    .unwrap()
    .into_rows();
    let event = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            session_id: s.id,
            remove: vec![rows[0].id, rows[1].id],
            summary: Some(Summary::text(MessageRole::User, "earlier: warranty talk")),
            strategy: "test".into(),
            model_used: None,
            duration_ms: None,
            pending_tool_calls: PendingToolCalls::Keep,
        },
    )
    .await
    .unwrap();
    let live = all_pages(&pool, TENANT, &MessageSearch::new("heating element"), 10).await;
    assert!(live.is_empty(), "compacted away");
    let with_archive = MessageSearch {
        archived: Archived::Include,
        ..MessageSearch::new("heating element")
    };
    let hits = all_pages(&pool, TENANT, &with_archive, 10).await;
    assert_eq!(hits.len(), 1);
    let Found::Archived(archived) = &hits[0].found else {
        panic!("{:?}", hits[0].found)
    };
    assert_eq!(archived.compaction_event_id, event.id);
    assert_eq!(archived.id, rows[0].id);
    assert!(
        hits[0].snippet.contains("<<heating>> <<element>>"),
        "{}",
        hits[0].snippet
    );
    // The archive keeps the row whole, without its search document.
    assert!(archived.original_message.get("search_document").is_none());
    assert_eq!(
        archived.original_message["content"],
        json!([{"type": "text", "text": "the warranty covers the heating element"}])
    );
    // "warranty": the live message, the summary and the archived one, each once.
    let warranty = all_pages(
        &pool,
        TENANT,
        &MessageSearch {
            archived: Archived::Include,
            ..MessageSearch::new("warranty")
        },
        1,
    )
    .await;
    assert_eq!(warranty.len(), 3, "{warranty:?}");
    // The filters hold for archived messages too.
    let filtered = |f: &dyn Fn(&mut MessageSearch)| {
        let mut search = MessageSearch {
            archived: Archived::Include,
            ..MessageSearch::new("heating element")
        };
        f(&mut search);
        search
    };
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    for (search, expected) in [
        (filtered(&|s| s.roles = Some(vec![MessageRole::User])), 1),
        (
            filtered(&|s| s.roles = Some(vec![MessageRole::Assistant])),
            0,
        ),
        (filtered(&|s| s.created_from = Some(yesterday)), 1),
        (filtered(&|s| s.created_from = Some(tomorrow)), 0),
        (filtered(&|s| s.created_before = Some(yesterday)), 0),
        (filtered(&|q| q.sessions = Some(vec![s.id])), 1),
        (filtered(&|s| s.sessions = Some(vec![Uuid::new_v4()])), 0),
        (
            filtered(&|s| s.session_metadata = json!({"x": 1}).as_object().cloned()),
            0,
        ),
    ] {
        let hits = all_pages(&pool, TENANT, &search, 10).await;
        assert_eq!(hits.len(), expected, "{search:?}");
    }
    // Reverted: found live again, and not in the archive.
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let hits = all_pages(&pool, TENANT, &with_archive, 10).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].found, Found::Live(rows[0].clone()));
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn pages_never_repeat_or_skip_a_hit_while_messages_are_appended_and_compacted(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    // Hits of many ranks, and many of one rank (same content, ties broken by id).
    let mut batch = Vec::new();
    for i in 0..40 {
        let text = match i % 4 {
            0 => "parcel".to_string(),
            1 => "parcel parcel tracking".to_string(),
            2 => format!("where is my parcel number {i}"),
            _ => "a parcel, a parcel, another parcel".to_string(),
        };
        batch.push(said(s.id, MessageRole::User, &text));
    }
    let stored = append_messages(&pool, TENANT, s.id, &batch)
        .await
        .unwrap()
        .into_rows();
    let search = MessageSearch {
        archived: Archived::Include,
        ..MessageSearch::new("parcel")
    };
    let everything = ids(&all_pages(&pool, TENANT, &search, 100).await);
    assert_eq!(everything.len(), 40);

    // Page by 3, appending and compacting between pages.
    let mut seen = Vec::new();
    let mut after = None;
    let mut round = 0;
    loop {
        let page = search_messages(&pool, TENANT, &search, after.as_ref(), 3)
            .await
            .unwrap();
        seen.extend(ids(&page.items));
        round += 1;
        append_messages(
            &pool,
            TENANT,
            s.id,
            &[said(
                s.id,
                MessageRole::User,
                &format!("parcel parcel {round}"),
            )],
        )
        .await
        .unwrap();
        if round == 4 {
            // Live messages become archived ones mid-paging.
            compact(
                &pool,
                TENANT,
                &CompactionPlan {
                    session_id: s.id,
                    remove: stored[..20].iter().map(|m| m.id).collect(),
                    summary: None,
                    strategy: "test".into(),
                    model_used: None,
                    duration_ms: None,
                    pending_tool_calls: PendingToolCalls::Keep,
                },
            )
            .await
            .unwrap();
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no hit twice");
    for id in &everything {
        assert!(
            unique.contains(id),
            "every hit that existed when paging started"
        );
    }
    // The cursor serializes.
    let page = search_messages(&pool, TENANT, &search, None, 2)
        .await
        .unwrap();
    let cursor = page.next.unwrap();
    let text = serde_json::to_string(&cursor).unwrap();
    let back: SearchCursor = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cursor);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn hostile_searches_find_nothing_or_are_refused(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    append_messages(
        &pool,
        TENANT,
        s.id,
        &[said(s.id, MessageRole::User, "plain words here")],
    )
    .await
    .unwrap();
    for text in [
        "",
        "the and of",
        "!!! ((( ::: &&& |||",
        "'; DROP TABLE messages; --",
        "\"unterminated",
        "<-> <2> !x & (y | z",
        "ß 漢字 🎉",
    ] {
        let page = search_messages(&pool, TENANT, &MessageSearch::new(text), None, 10).await;
        assert!(page.is_ok(), "{text:?}: {page:?}");
    }
    let err = search_messages(&pool, TENANT, &MessageSearch::new("a\0b"), None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let long = "word ".repeat(2_000);
    let err = search_messages(&pool, TENANT, &MessageSearch::new(long), None, 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
    for limit in [0, MAX_PAGE + 1, u64::MAX] {
        assert!(
            search_messages(&pool, TENANT, &MessageSearch::new("words"), None, limit)
                .await
                .is_err()
        );
    }
    let now = chrono::Utc::now();
    let empty_range = MessageSearch {
        created_from: Some(now),
        created_before: Some(now),
        ..MessageSearch::new("words")
    };
    assert!(search_messages(&pool, TENANT, &empty_range, None, 10)
        .await
        .is_err());
    let found = search_messages(&pool, TENANT, &MessageSearch::new("plain words"), None, 10)
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
}
