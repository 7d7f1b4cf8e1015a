//! create → append → compact → revert, then an agent loop over model responses (provider usage
//! kept, each message counting its own size) → plan → summarize → compact → fork → search
//! (sessions, and what messages said) → follow (replay, then live) → finalize, against a fresh database `agentpg_example` on the server `DATABASE_URL` points at
//! (created at the start, dropped at the end). The summary is a stand-in for the one a model
//! would write.
//!
//! ```sh
//! cargo run -p agentpg-repo --example walkthrough
//! ```

use agentpg_repo::formats::{openai_chat, Turn};
use agentpg_repo::tokens::{count_response, Accounting, ApproxEstimator};
use agentpg_repo::{
    append_messages, compact, create_session, finalize_compactions, follow_cursor_now,
    follow_session, fork_session, list_messages, list_sessions, plan_compaction, revert_compaction,
    search_messages, Archived, CompactionPlan, CompactionPolicy, FollowCursor, Found, MessageRange,
    MessageSearch, SessionEvent, SessionFilter, SessionOrder, Summary,
};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage, NewSession, Usage};
use futures_util::StreamExt;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgPool};

const TENANT: &str = "acme";

/// The tool definitions the agent sends with every request.
const TOOLS: &str = r#"[{"type":"function","function":{"name":"lookup_order","description":"Look up an order by its id.","parameters":{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}}}]"#;

/// A stand-in for the summary a model would write: the removed messages' text, joined.
fn stand_in_summary(removed: &[Message]) -> Vec<ContentBlock> {
    let text: Vec<&str> = removed
        .iter()
        .flat_map(|m| m.content.iter().filter_map(ContentBlock::as_text))
        .collect();
    vec![ContentBlock::text(format!("earlier: {}", text.join("; ")))]
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

    // The conversation opens with its system prompt, counted with the tool definitions the
    // prompt carries beside it, and preserved (agentpg_repo::tokens explains why).
    let accounting = Accounting::<ApproxEstimator>::default();
    let system = Turn::new(
        MessageRole::System,
        vec![ContentBlock::text(
            "You are the support agent of an online shop. Be brief.",
        )],
    );
    let mut turns =
        vec![accounting.count_system(system.into_new_message(TENANT, session.id), TOOLS)];
    turns.extend((2..=6).map(|i| {
        let role = if i % 2 == 0 {
            MessageRole::User
        } else {
            MessageRole::Assistant
        };
        accounting.count(
            Turn::new(role, vec![ContentBlock::text(format!("turn {i}"))])
                .into_new_message(TENANT, session.id),
        )
    }));
    let stored = append_messages(&pool, TENANT, session.id, &turns)
        .await?
        .into_rows();
    println!(
        "3. appended {} messages in one statement (the system prompt preserved):",
        stored.len()
    );
    show(&stored);

    let event = compact(
        &pool,
        TENANT,
        &CompactionPlan {
            session_id: session.id,
            remove: stored[1..4].iter().map(|m| m.id).collect(),
            summary: Some(
                Summary::text(MessageRole::User, "summary of turns 2-4").with_usage(Usage {
                    input_tokens: 7,
                    ..Usage::default()
                }),
            ),
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

    // The agent keeps talking, as an agent loop does with a model API. Each response's usage is
    // kept as the provider reported it (`provider_usage`); each message counts its own size
    // toward the session (agentpg_repo::tokens): the user's words and tool results by estimate,
    // a response by its output corrected to the provider's prompt, so after every response the
    // session's total is the provider's own prompt plus output.
    let question = accounting.count(
        Turn::new(
            MessageRole::User,
            vec![ContentBlock::text("where is my order 7?")],
        )
        .into_new_message(TENANT, session.id),
    );
    let mut counted = append_messages(&pool, TENANT, session.id, &[question])
        .await?
        .total_tokens;
    // Two Chat Completions responses in the shape they come over the wire.
    let responses = [
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check the order.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "lookup_order", "arguments": "{\"id\":7}"}}]}}],
            "usage": {"prompt_tokens": 131, "completion_tokens": 24, "total_tokens": 155,
                "prompt_tokens_details": {"cached_tokens": 0}}}),
        json!({"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "It shipped yesterday; the tracking number is PN123."}}],
            "usage": {"prompt_tokens": 176, "completion_tokens": 14, "total_tokens": 190,
                "prompt_tokens_details": {"cached_tokens": 128}}}),
    ];
    let tool_output = [Some("shipped 2026-12-02, tracking PN123"), None];
    let mut last_answer = None;
    println!("6. an agent loop over two model responses:");
    for (response, output) in responses.iter().zip(tool_output) {
        // The request would be `openai_chat::to_messages` of the session's messages.
        let history = list_messages(&pool, TENANT, session.id, MessageRange::default()).await?;
        let request =
            openai_chat::to_messages(&history.iter().map(Turn::from).collect::<Vec<_>>())?;
        let said =
            openai_chat::from_messages(&[response["choices"][0]["message"].clone()])?.remove(0);
        let usage = openai_chat::usage(&response["usage"])?;
        let prompt = usage.prompt_tokens();
        let answer = count_response(said.into_new_message(TENANT, session.id), usage, counted);
        let appended = append_messages(&pool, TENANT, session.id, &[answer]).await?;
        last_answer = appended.rows().next().map(|m| (m.id, m.position));
        println!(
            "    request of {} messages; the provider counted {prompt} + {} tokens; the session counts {} (it had {counted})",
            request.len(),
            response["usage"]["completion_tokens"],
            appended.total_tokens
        );
        counted = appended.total_tokens;
        if let Some(output) = output {
            let result = accounting.count(
                Turn::new(
                    MessageRole::User,
                    vec![ContentBlock::tool_result("call_1", json!(output))],
                )
                .into_new_message(TENANT, session.id),
            );
            counted = append_messages(&pool, TENANT, session.id, &[result])
                .await?
                .total_tokens;
        }
    }

    // Over budget: plan, read what the plan removes, summarize it, compact. The planner keeps
    // the tool call with its result, the preserved first turn and the newest message.
    let policy = CompactionPolicy {
        summary_tokens: 20,
        keep_last_messages: 1,
        ..CompactionPolicy::new(counted / 2, "summarization")
    };
    let proposal = plan_compaction(&pool, TENANT, session.id, &policy).await?;
    let removed = proposal.removed_messages(&pool, TENANT).await?;
    let summary = accounting.summary(MessageRole::User, stand_in_summary(&removed));
    let plan = proposal
        .with_summary(summary)
        .ok_or("the session is over the target")?;
    let event = compact(&pool, TENANT, &plan).await?;
    println!(
        "7. planned, summarized and compacted: {} messages removed, tokens {} -> {}",
        event.messages_removed, event.original_tokens, event.compacted_tokens
    );
    show(&list_messages(&pool, TENANT, session.id, MessageRange::default()).await?);

    // Fork at the answer: a branch where the customer asks something else.
    let (answer_id, answer_position) = last_answer.ok_or("the answer was appended")?;
    let fork = fork_session(
        &pool,
        TENANT,
        session.id,
        answer_id,
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
        session.identifier, answer_position, fork.identifier, fork.total_tokens
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

    // Search what was said, also in what the compaction archived.
    let search = MessageSearch {
        archived: Archived::Include,
        ..MessageSearch::new("order")
    };
    let hits = search_messages(&pool, TENANT, &search, None, 10).await?;
    println!("9b. messages that say \"order\" (live and archived):");
    for hit in &hits.items {
        let place = match &hit.found {
            Found::Live(m) => format!("#{} live", m.position),
            Found::Archived(a) => format!("archived by {}", a.compaction_event_id),
            _ => "elsewhere".into(),
        };
        println!("    {:.3}  {place}: {}", hit.rank, hit.snippet);
    }

    // Follow the session: replay its history from the start, then see an append arrive live,
    // as a UI or a supervisor would. The cursor each event carries is what to keep.
    let now = follow_cursor_now(&pool, TENANT, session.id).await?;
    let mut events = follow_session(&pool, TENANT, session.id, FollowCursor::START);
    let (mut appended, mut changes) = (0, Vec::new());
    let mut cursor = FollowCursor::START;
    while cursor.position() < now.position() || cursor.change_seq() < now.change_seq() {
        let Some(item) = events.next().await else {
            break;
        };
        let followed = item?;
        match &followed.event {
            SessionEvent::Appended(_) => appended += 1,
            SessionEvent::Compacted { removed, .. } => {
                changes.push(format!("compacted {}", removed.len()))
            }
            SessionEvent::Reverted { restored, .. } => {
                changes.push(format!("reverted ({} back)", restored.len()))
            }
            other => changes.push(format!("{other:?}")),
        }
        cursor = followed.cursor;
    }
    let writer = {
        let pool = pool.clone();
        let id = session.id;
        tokio::spawn(async move {
            let message = NewMessage {
                content: Some(Json(vec![ContentBlock::text("Is anyone watching?")])),
                ..NewMessage::new(TENANT.into(), id, MessageRole::User)
            };
            append_messages(&pool, TENANT, id, &[message]).await
        })
    };
    let live = match events.next().await {
        Some(Ok(followed)) => match followed.event {
            SessionEvent::Appended(m) => format!("#{} {}", m.position, m.role.as_str()),
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    };
    writer.await??;
    // The process's followers share one listening connection; it closes once the last of
    // them is dropped.
    drop(events);
    println!(
        "9c. followed the session: {appended} appended, then {}; live: appended {live}; resume from {}",
        changes.join(", "),
        serde_json::to_string(&cursor)?
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
