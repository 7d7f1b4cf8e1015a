//! create → append → compact → revert, against a fresh database `agentpg_example` on the
//! server `DATABASE_URL` points at (created at the start, dropped at the end).
//!
//! ```sh
//! cargo run -p agentpg-repo --example walkthrough
//! ```

use agentpg_repo::{
    append_messages, compact, create_session, list_messages, revert_compaction, CompactionPlan,
    MessageRange, Summary,
};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage, NewSession, Usage};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};

const TENANT: &str = "acme";

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
        &NewSession::new(TENANT.into(), "support-chat".into()),
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
    let stored = append_messages(&pool, TENANT, session.id, &turns).await?;
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
    pool.close().await;

    let mut conn = admin.connect().await?;
    sqlx::query("DROP DATABASE agentpg_example")
        .execute(&mut conn)
        .await?;
    println!("6. dropped agentpg_example");
    Ok(())
}
