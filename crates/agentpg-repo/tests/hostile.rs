//! Hostile input: each case gets a typed error (or is stored exactly) and changes nothing else.

mod common;

use agentpg_repo::*;
use agentpg_schema::{messages, ContentBlock, MessageRole, NewMessage, NewSession, Usage};
use common::{dump, session, session_row, text, usage, OTHER, TENANT};
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;

const INJECTIONS: [&str; 5] = [
    "x'; DROP TABLE sessions; --",
    "\"); DELETE FROM messages; --",
    "' OR '1'='1",
    "$$; TRUNCATE message_archive; $$",
    "\\'; SELECT pg_sleep(10); --",
];

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn injection_strings_are_stored_verbatim_and_do_nothing(pool: PgPool) {
    for (i, evil) in INJECTIONS.iter().enumerate() {
        let tenant = format!("{evil}{i}");
        let metadata = json!({ *evil: evil, "nested": { *evil: [evil] } });
        let s = create_session(
            &pool,
            &NewSession {
                parent_session_id: None,
                metadata: Some(metadata.clone()),
                ..NewSession::new(tenant.clone(), evil.to_string())
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (s.tenant_id.as_str(), s.identifier.as_str()),
            (tenant.as_str(), *evil)
        );
        assert_eq!(s.metadata, metadata);
        assert_eq!(
            find_session(&pool, &tenant, evil).await.unwrap(),
            Some(s.clone())
        );
        let stored = append_messages(
            &pool,
            &tenant,
            s.id,
            &[NewMessage {
                tenant_id: tenant.clone(),
                ..text(s.id, MessageRole::User, evil, 1, 1)
            }],
        )
        .await
        .unwrap()
        .into_rows();
        let listed = list_messages(&pool, &tenant, s.id, MessageRange::default())
            .await
            .unwrap();
        assert_eq!(listed, stored);
        assert_eq!(listed[0].content[0].as_text(), Some(*evil));
        let merged = update_metadata(
            &pool,
            &tenant,
            s.id,
            &MetadataUpdate::Merge(json!({ *evil: 1 }).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
        assert_eq!(merged.metadata[*evil], json!(1));
    }
    assert_eq!(
        common::counts(&pool).await,
        [5, 5, 0, 0],
        "every table intact"
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn nul_characters_are_refused_everywhere(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let before = dump(&pool).await;
    let nul_key = NewMessage {
        metadata: Some(json!({"k\u{0}": 1})),
        ..text(s.id, MessageRole::User, "x", 0, 0)
    };
    let nul_usage_extra = NewMessage {
        usage: Some(Json(Usage {
            extra: json!({"tier": "a\u{0}"}).as_object().unwrap().clone(),
            ..usage(1, 1)
        })),
        ..text(s.id, MessageRole::User, "x", 0, 0)
    };
    for m in [
        text(s.id, MessageRole::User, "\u{0}", 0, 0),
        nul_key,
        nul_usage_extra,
    ] {
        assert!(matches!(
            append_messages(&pool, TENANT, s.id, &[m]).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    assert!(matches!(
        get_session(&pool, "a\u{0}", s.id).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        find_session(&pool, TENANT, "a\u{0}").await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(dump(&pool).await, before);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn fifty_megabytes_of_content_round_trip(pool: PgPool) {
    let s = session(&pool, TENANT, "big").await;
    let big = "ab\"\\é\n".repeat(50 * 1024 * 1024 / 8);
    let stored = append_messages(
        &pool,
        TENANT,
        s.id,
        &[NewMessage {
            content: Some(Json(vec![ContentBlock::text(big.clone())])),
            ..NewMessage::new(TENANT.into(), s.id, MessageRole::User)
        }],
    )
    .await
    .unwrap()
    .into_rows();
    let listed = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap();
    let back = listed[0].content[0].as_text().unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "50 MB came back changed");
    assert_eq!(listed[0].id, stored[0].id);
}

/// `levels` nested containers: an object holding arrays holding … a string.
fn nested(levels: usize) -> serde_json::Value {
    let inner = (1..levels).fold(json!("leaf"), |v, _| json!([v]));
    json!({ "deep": inner })
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn deep_json_up_to_the_limit_round_trips_and_beyond_is_refused(pool: PgPool) {
    let s = session(&pool, TENANT, "deep").await;
    let with = |metadata| NewMessage {
        metadata: Some(metadata),
        ..text(s.id, MessageRole::User, "x", 0, 0)
    };
    let stored = append_messages(&pool, TENANT, s.id, &[with(nested(126))])
        .await
        .unwrap()
        .into_rows();
    let listed = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap();
    assert_eq!(listed, stored, "126 levels: stored and read back");
    // Also from the archive, where the row wraps it in one more object.
    let plan = CompactionPlan {
        session_id: s.id,
        remove: vec![stored[0].id],
        summary: None,
        strategy: "deep".into(),
        model_used: None,
        duration_ms: None,
        pending_tool_calls: Default::default(),
    };
    let event = compact(&pool, TENANT, &plan).await.unwrap();
    assert_eq!(
        archived_messages(&pool, TENANT, event.id).await.unwrap(),
        stored
    );
    revert_compaction(&pool, TENANT, event.id).await.unwrap();
    let before = dump(&pool).await;
    let err = append_messages(&pool, TENANT, s.id, &[with(nested(127))])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(dump(&pool).await, before);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn what_the_types_cannot_stop_the_database_does(pool: PgPool) {
    // Content that is not an array can only come from outside agentpg's types; the CHECK
    // refuses it and the error maps to InvalidInput by constraint.
    let s = session(&pool, TENANT, "raw").await;
    let err: Error = sqlx::query(
        "INSERT INTO messages (tenant_id, session_id, role, content) VALUES ($1, $2, 'user', '{}')",
    )
    .bind(TENANT)
    .bind(s.id)
    .execute(&pool)
    .await
    .unwrap_err()
    .into();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("messages_content_check")),
        "{err:?}"
    );
    let err: Error =
        sqlx::query("INSERT INTO messages (tenant_id, session_id, role) VALUES ($1, $2, 'robot')")
            .bind(TENANT)
            .bind(s.id)
            .execute(&pool)
            .await
            .unwrap_err()
            .into();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("messages_role_check")),
        "{err:?}"
    );
    let err: Error =
        sqlx::query("INSERT INTO messages (tenant_id, session_id, role) VALUES ($1, $2, 'user')")
            .bind(OTHER)
            .bind(s.id)
            .execute(&pool)
            .await
            .unwrap_err()
            .into();
    // The session exists, but in another tenant: the tenant-leading foreign key refuses it.
    assert!(
        matches!(&err, Error::ForeignKey { constraint, .. } if constraint.contains(messages::constraint::SESSION_FKEY)),
        "{err:?}"
    );
    let err: Error = sqlx::query("INSERT INTO messages (session_id, role) VALUES ($1, 'user')")
        .bind(s.id)
        .execute(&pool)
        .await
        .unwrap_err()
        .into();
    // (Citus needs the distribution column before the NOT NULL constraint is reached, and says
    // so in its own words.)
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. }
            if reason.contains("tenant_id") || reason.contains("partition column")),
        "{err:?}"
    );
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn absurd_token_counts_are_refused_and_change_nothing(pool: PgPool) {
    let s = session(&pool, TENANT, "tokens").await;
    append_messages(
        &pool,
        TENANT,
        s.id,
        &[text(s.id, MessageRole::User, "x", i64::MAX - 10, 0)],
    )
    .await
    .unwrap();
    let before = dump(&pool).await;
    // The session total would overflow bigint: the database refuses, nothing is written.
    let err = append_messages(
        &pool,
        TENANT,
        s.id,
        &[text(s.id, MessageRole::User, "y", 100, 0)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    for (input, output) in [(-1, 0), (0, -5), (i64::MAX, 1)] {
        let err = append_messages(
            &pool,
            TENANT,
            s.id,
            &[text(s.id, MessageRole::User, "z", input, output)],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{input}/{output}: {err:?}"
        );
    }
    assert_eq!(dump(&pool).await, before);
    assert_eq!(session_row(&pool, s.id).await.total_tokens, i64::MAX - 10);
}

/// Text PostgreSQL cannot compress: random letters and digits.
fn incompressible(bytes: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes);
    while out.len() < bytes {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < bytes {
                out.push(ALPHABET[(*b % 64) as usize] as char);
            }
        }
    }
    out
}

fn refused_naming(result: Result<impl std::fmt::Debug, Error>, field: &str, limit: usize) {
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, source: None }
            if reason.contains(field) && reason.contains(&limit.to_string())),
        "{field}: {err:?}"
    );
}

/// Every text that goes into an index has a documented limit, checked before any SQL: at the
/// limit it is stored, one byte over it is refused naming the field and the limit.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn texts_that_go_into_an_index_have_limits(pool: PgPool) {
    use agentpg_repo::limits;

    // tenant and identifier.
    let tenant = incompressible(limits::TENANT);
    let identifier = incompressible(limits::IDENTIFIER);
    let s = create_session(&pool, &NewSession::new(tenant.clone(), identifier.clone()))
        .await
        .unwrap();
    assert_eq!(
        find_session(&pool, &tenant, &identifier).await.unwrap(),
        Some(s.clone())
    );
    let before = dump(&pool).await;
    refused_naming(
        create_session(
            &pool,
            &NewSession::new(incompressible(limits::TENANT + 1), "x".into()),
        )
        .await,
        "tenant",
        limits::TENANT,
    );
    refused_naming(
        create_session(
            &pool,
            &NewSession::new("t".into(), incompressible(limits::IDENTIFIER + 1)),
        )
        .await,
        "identifier",
        limits::IDENTIFIER,
    );
    refused_naming(
        get_session(&pool, &incompressible(limits::TENANT + 1), s.id).await,
        "tenant",
        limits::TENANT,
    );

    // Tool-use ids in content.
    let tool = |id: String| NewMessage {
        tenant_id: tenant.clone(),
        content: Some(Json(vec![
            ContentBlock::tool_use(id.clone(), "run", json!({})),
            ContentBlock::tool_result(id, json!("ok")),
        ])),
        ..NewMessage::new(tenant.clone(), s.id, MessageRole::Assistant)
    };
    let stored = append_messages(
        &pool,
        &tenant,
        s.id,
        &[tool(incompressible(limits::TOOL_ID))],
    )
    .await
    .unwrap()
    .into_rows();
    let after_append = dump(&pool).await;
    refused_naming(
        append_messages(
            &pool,
            &tenant,
            s.id,
            &[tool(incompressible(limits::TOOL_ID + 1))],
        )
        .await,
        "tool_use id",
        limits::TOOL_ID,
    );

    // Strategy and model of a compaction.
    let plan = |strategy: String, model: String| CompactionPlan {
        session_id: s.id,
        remove: vec![stored[0].id],
        summary: None,
        strategy,
        model_used: Some(model),
        duration_ms: None,
        pending_tool_calls: Default::default(),
    };
    refused_naming(
        compact(
            &pool,
            &tenant,
            &plan(incompressible(limits::STRATEGY + 1), "m".into()),
        )
        .await,
        "strategy",
        limits::STRATEGY,
    );
    refused_naming(
        compact(
            &pool,
            &tenant,
            &plan("s".into(), incompressible(limits::MODEL + 1)),
        )
        .await,
        "model_used",
        limits::MODEL,
    );
    assert_eq!(
        dump(&pool).await,
        after_append,
        "nothing written by a refused call"
    );
    assert_ne!(before, after_append);
    compact(
        &pool,
        &tenant,
        &plan(
            incompressible(limits::STRATEGY),
            incompressible(limits::MODEL),
        ),
    )
    .await
    .unwrap();
}

/// A limit PostgreSQL still enforces (SQLSTATE class 54, here an index entry too large) is the
/// caller's invalid input, not an opaque database error.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn program_limit_errors_are_invalid_input(pool: PgPool) {
    let err: Error = sqlx::query("INSERT INTO sessions (tenant_id, identifier) VALUES ($1, $2)")
        .bind("t")
        .bind(incompressible(3000))
        .execute(&pool)
        .await
        .unwrap_err()
        .into();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("SQLSTATE 54000")),
        "{err:?}"
    );
}

/// Data written around agentpg (by hand, by another program) that the row types cannot read:
/// every read that meets it is a typed error, never a panic, and nothing is written.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn rows_that_do_not_decode_are_errors_not_panics(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let id = uuid::Uuid::new_v4();
    let fine = NewMessage {
        id: Some(id),
        ..text(s.id, MessageRole::User, "hi", 1, 0)
    };
    append_messages(&pool, TENANT, s.id, std::slice::from_ref(&fine))
        .await
        .unwrap();
    // A text block whose text is a number, and a usage count that is a string: the database's
    // checks take both (an array, an object).
    sqlx::query(
        "UPDATE messages SET content = '[{\"type\": \"text\", \"text\": 5}]',
                             usage = '{\"cache_read_input_tokens\": \"many\"}' WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let before = dump(&pool).await;
    let decode_error = |e: &Error| {
        matches!(e, Error::Database(sqlx::Error::ColumnDecode { .. }))
            || e.to_string().contains("text block")
    };
    let err = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap_err();
    assert!(decode_error(&err), "{err:?}");
    let err = get_message(&pool, TENANT, s.id, id).await.unwrap_err();
    assert!(decode_error(&err), "{err:?}");
    let err = get_messages(&pool, TENANT, s.id, &[id]).await.unwrap_err();
    assert!(decode_error(&err), "{err:?}");
    // A retry of the corrupted message reads it back to compare: an error, nothing stored.
    let err = append_messages(&pool, TENANT, s.id, &[fine])
        .await
        .unwrap_err();
    assert!(decode_error(&err), "{err:?}");
    assert_eq!(dump(&pool).await, before);
}

/// The generated builders serialize declared JSON types: a value that would not be stored as
/// itself is the builder's error.
#[test]
fn builders_refuse_what_would_not_be_stored_as_itself() {
    let mut block = ContentBlock::text("x");
    if let ContentBlock::Text(t) = &mut block {
        t.extra.insert("type".into(), json!("tool_use"));
    }
    let row = NewMessage {
        content: Some(Json(vec![block])),
        ..NewMessage::new(TENANT.into(), uuid::Uuid::nil(), MessageRole::User)
    };
    assert!(messages::insert(&row).is_err());
    assert!(messages::insert_many([&row]).is_err());
    let fine = NewMessage::new(TENANT.into(), uuid::Uuid::nil(), MessageRole::User);
    assert!(messages::insert(&fine).is_ok());
}
