//! create → append → compact → revert, then plan → summarize → compact → fork → search →
//! finalize, against a fresh database `agentpg_example` on the server `DATABASE_URL` points at
//! (created at the start, dropped at the end). The summary is a stand-in for the one a model
//! would write.
//!
//! ```sh
//! cargo run -p agentpg-repo --example walkthrough
//! ```

use agentpg_repo::{
    append_messages, compact, create_session, finalize_compactions, fork_session, list_messages,
    list_sessions, plan_compaction, revert_compaction, CompactionPlan, CompactionPolicy,
    MessageRange, SessionFilter, SessionOrder, Summary,
};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage, NewSession, Usage};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};

const TENANT: &str = "acme";

fn usage(input: i64, output: i64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

fn show(messages: &[Message]) {
    for m in messages {
        let text: Vec<&str> = m.content.iter().filter_map(ContentBlock::as_text).collect();
        println!(
            "    #{:<3} {:<9} {}{}",
            m.position,
            m.role.as_str(),
            text.join(" "),
            if m.is_summary { "  [summary]" } else { "" }
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL (cargo sets it from .cargo/config.toml)")?;
    let admin: PgConnectOptions = url.parse()?;
    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE IF EXISTS agentpg_example WITH (FORCE)")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE DATABASE agentpg_example")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let pool = PgPool::connect_with(admin.clone().database("agentpg_example")).await?;

    agentpg_repo::migrate(&pool).await?;
    println!("1. migrated a fresh database agentpg_example");

    let session = create_session(
        &pool,
        &NewSession {
            metadata: Some(serde_json::json!({"project": "support", "channel": "chat"})),
            ..NewSession::new(TENANT.into(), "support-chat".into())
        },
    )
    .await?;
    println!("2. created session {} ({})", session.id, session.identifier);

    let turns: Vec<NewMessage> = (1..=6)
        .map(|i| {
            let role = if i % 2 == 1 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            NewMessage {
                content: Some(Json(vec![ContentBlock::text(format!("turn {i}"))])),
                usage: Some(Json(Usage {
                    input_tokens: 100,
                    output_tokens: 20,
                    ..Usage::default()
                })),
                is_preserved: Some(i == 1),
                ..NewMessage::new(TENANT.into(), session.id, role)
            }
        })
        .collect();
    let stored = append_messages(&pool, TENANT, session.id, &turns)
        .await?
        .into_rows();
    println!(
        "3. appended {} messages in one statement (turn 1 preserved):",
        stored.len()
    );
    show(&stored);

    let event = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            session_id: session.id,
            remove: stored[1..4].iter().map(|m| m.id).collect(),
            summary: Some(Summary {
                id: None,
                role: MessageRole::User,
                content: vec![ContentBlock::text("summary of turns 2-4")],
                usage: Some(Usage {
                    input_tokens: 30,
                    output_tokens: 0,
                    ..Usage::default()
                }),
                metadata: None,
            }),
            strategy: "summarization".into(),
            model_used: Some("example-model".into()),
            duration_ms: Some(42),
            pending_tool_calls: Default::default(),
        },
    )
    .await?;
    println!(
        "4. compacted: {} messages archived, tokens {} -> {} (saved {})",
        event.messages_removed,
        event.original_tokens,
        event.compacted_tokens,
        event.tokens_saved.unwrap_or_default()
    );
    show(&list_messages(&pool, TENANT, session.id, MessageRange::default()).await?);

    let reverted = revert_compaction(&pool, TENANT, event.id).await?;
    let restored = list_messages(&pool, TENANT, session.id, MessageRange::default()).await?;
    println!(
        "5. reverted compaction {} at {}; messages identical to before: {}",
        reverted.id,
        reverted.reverted_at.expect("set by the revert"),
        restored == stored
    );
    show(&restored);

    // The agent keeps talking: a tool call and its result, then an answer.
    let more = vec![
        NewMessage {
            content: Some(Json(vec![
                ContentBlock::text("let me check the order"),
                ContentBlock::tool_use("call_1", "lookup_order", serde_json::json!({"id": 7})),
            ])),
            usage: Some(Json(usage(400, 40))),
            ..NewMessage::new(TENANT.into(), session.id, MessageRole::Assistant)
        },
        NewMessage {
            content: Some(Json(vec![ContentBlock::tool_result(
                "call_1",
                serde_json::json!("shipped"),
            )])),
            ..NewMessage::new(TENANT.into(), session.id, MessageRole::User)
        },
        NewMessage {
            content: Some(Json(vec![ContentBlock::text("it shipped yesterday")])),
            usage: Some(Json(usage(500, 30))),
            ..NewMessage::new(TENANT.into(), session.id, MessageRole::Assistant)
        },
    ];
    let tail = append_messages(&pool, TENANT, session.id, &more)
        .await?
        .into_rows();

    // Plan: fit 700 tokens, keep the newest message and the preserved one, expect a
    // 50-token summary. The planner keeps the tool call with its result.
    let policy = CompactionPolicy {
        summary_tokens: 50,
        keep_last_messages: 1,
        ..CompactionPolicy::new(700, "summarization")
    };
    let proposal = plan_compaction(&pool, TENANT, session.id, &policy).await?;
    println!(
        "6. planned ({:?}): remove {} messages, tokens {} -> {} expected",
        proposal.outcome,
        proposal.plan.as_ref().map_or(0, |p| p.remove.len()),
        proposal.tokens_before,
        proposal.tokens_after
    );
    let mut plan = proposal.plan.expect("the session is over the target");
    // A stand-in for the model's summary: the removed messages' text, joined.
    let removed = list_messages(&pool, TENANT, session.id, MessageRange::default())
        .await?
        .into_iter()
        .filter(|m| plan.remove.contains(&m.id))
        .flat_map(|m| {
            m.content
                .iter()
                .filter_map(ContentBlock::as_text)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    plan.summary = Some(Summary {
        id: None,
        role: MessageRole::User,
        content: vec![ContentBlock::text(format!(
            "earlier: {}",
            removed.join("; ")
        ))],
        usage: Some(usage(policy.summary_tokens, 0)),
        metadata: None,
    });
    let event = compact(&pool, TENANT, &plan).await?;
    println!(
        "7. compacted by the plan: tokens {} -> {}",
        event.original_tokens, event.compacted_tokens
    );
    show(&list_messages(&pool, TENANT, session.id, MessageRange::default()).await?);

    // Fork at the answer: a branch where the customer asks something else.
    let fork = fork_session(
        &pool,
        TENANT,
        session.id,
        tail[2].id,
        &NewSession {
            metadata: Some(serde_json::json!({"project": "support", "branch": "what-if"})),
            ..NewSession::new(TENANT.into(), "support-chat/what-if".into())
        },
    )
    .await?;
    append_messages(
        &pool,
        TENANT,
        fork.id,
        &[NewMessage {
            content: Some(Json(vec![ContentBlock::text(
                "what if I want a refund instead?",
            )])),
            ..NewMessage::new(TENANT.into(), fork.id, MessageRole::User)
        }],
    )
    .await?;
    println!(
        "8. forked {} at message #{} into {} ({} tokens copied):",
        session.identifier, tail[2].position, fork.identifier, fork.total_tokens
    );
    show(&list_messages(&pool, TENANT, fork.id, MessageRange::default()).await?);

    // Search: the project's sessions, and the forks of the first one.
    let object = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let project = list_sessions(
        &pool,
        TENANT,
        &SessionFilter::default().metadata(object(serde_json::json!({"project": "support"}))),
        SessionOrder::OldestFirst,
        None,
        10,
    )
    .await?;
    let forks = list_sessions(
        &pool,
        TENANT,
        &SessionFilter::default().forked_from(session.id),
        SessionOrder::NewestFirst,
        None,
        10,
    )
    .await?;
    println!(
        "9. sessions of project \"support\": {:?}; forks of {}: {:?}",
        project
            .items
            .iter()
            .map(|s| &s.identifier)
            .collect::<Vec<_>>(),
        session.identifier,
        forks
            .items
            .iter()
            .map(|s| &s.identifier)
            .collect::<Vec<_>>()
    );

    // Retention: finalize every standing compaction (a real deployment would keep, say, 30
    // days of them revertible).
    let report = finalize_compactions(&pool, TENANT, std::time::Duration::ZERO, 100).await?;
    println!(
        "10. finalized {} compaction(s), dropping {} archived message(s); they stay as history",
        report.compactions_finalized, report.archived_messages_dropped
    );
    pool.close().await;
    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE agentpg_example")
        .execute(&mut conn)
        .await?;
    println!("11. dropped agentpg_example");
    Ok(())
}
