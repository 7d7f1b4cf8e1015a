//! Token accounting against a provider's figures: a tool-using support conversation of five
//! rounds, with a compaction in the middle, whose prompts a simulated provider counts the way
//! OpenAI's Chat Completions does (the `o200k_base` tokenizer, three framing tokens per message
//! and three to prime the reply, the tool definitions as their JSON text).
//!
//! The promise checked: after every response the session's `total_tokens` is exactly the
//! provider's prompt plus its output; before every request after the first response it is
//! within 10% of the prompt the provider then counts (the error of the estimates made since
//! the last response, and after the compaction those of the summary); with the `tiktoken`
//! estimator, within 2%. The figures of each run are printed.

mod common;

use agentpg_repo::formats::{openai_chat, Turn};
use agentpg_repo::tokens::{count_response, Accounting, ApproxEstimator, TokenEstimator};
use agentpg_repo::{
    append_messages, compact, get_session, list_messages, plan_compaction, CompactionPolicy, Error,
    MessageRange,
};
use agentpg_schema::{ContentBlock, ContentBlocks, MessageRole, NewMessage};
use common::{session, TENANT};
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// The provider: counts prompts and outputs with OpenAI's tokenizer and framing.
struct Provider {
    bpe: &'static tiktoken_rs::CoreBPE,
    tools: Value,
}

impl Provider {
    fn new() -> Self {
        Provider {
            bpe: tiktoken_rs::o200k_base_singleton(),
            tools: json!([
                {"type": "function", "function": {"name": "lookup_order",
                    "description": "Look up an order by its id.",
                    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
                {"type": "function", "function": {"name": "refund",
                    "description": "Refund an item of an order. Returns whether the refund is approved.",
                    "parameters": {"type": "object", "properties": {
                        "order_id": {"type": "string"}, "sku": {"type": "string"},
                        "reason": {"type": "string"}, "amount": {"type": "string"}},
                        "required": ["order_id", "sku", "reason", "amount"]}}}
            ]),
        }
    }

    fn tokens(&self, text: &str) -> i64 {
        self.bpe.encode_ordinary(text).len() as i64
    }

    /// The tokens of every string a message holds.
    fn strings(&self, value: &Value) -> i64 {
        match value {
            Value::String(s) => self.tokens(s),
            Value::Array(items) => items.iter().map(|v| self.strings(v)).sum(),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| k.as_str() != "type")
                .map(|(_, v)| self.strings(v))
                .sum(),
            _ => 0,
        }
    }

    fn prompt(&self, messages: &[Value]) -> i64 {
        let framing = 3 * messages.len() as i64 + 3;
        let body: i64 = messages.iter().map(|m| self.strings(m)).sum();
        framing + body + self.tokens(&self.tools.to_string())
    }

    fn output(&self, message: &Value) -> i64 {
        self.strings(message)
    }
}

fn user(text: &str) -> ContentBlocks {
    vec![ContentBlock::text(text)]
}

fn new_message(session: Uuid, role: MessageRole, content: ContentBlocks) -> NewMessage {
    NewMessage {
        id: Some(Uuid::new_v4()),
        content: Some(Json(content)),
        ..NewMessage::new(TENANT.into(), session, role)
    }
}

/// One round: what the user side sends (user words or tool results), then what the model says.
fn rounds() -> Vec<(ContentBlocks, ContentBlocks)> {
    let order = json!({"order_id": "88412", "placed": "2026-11-26", "status": "delivered",
        "items": [
            {"sku": "KT-200-SS", "name": "Electric kettle 1.7 l, stainless", "qty": 1, "price": "49.90"},
            {"sku": "FL-10", "name": "Limescale filter (3 pack)", "qty": 1, "price": "7.50"}],
        "delivery": {"carrier": "PostNord", "delivered": "2026-11-29"},
        "customer": {"name": "Ingrid Solberg", "tier": "regular"}});
    vec![
        (
            user("Hi! I ordered an electric kettle last week (order #88412) and it arrived with a cracked lid. Can I get a refund, or a replacement lid if that's quicker?"),
            vec![
                ContentBlock::text("I'm sorry about the lid. Let me look up your order first."),
                ContentBlock::tool_use("call_1", "lookup_order", json!({"order_id": "88412"})),
            ],
        ),
        (
            vec![ContentBlock::tool_result("call_1", json!(order.to_string()))],
            vec![ContentBlock::tool_use(
                "call_2",
                "refund",
                json!({"order_id": "88412", "sku": "KT-200-SS", "reason": "damaged on arrival: cracked lid", "amount": "49.90"}),
            )],
        ),
        (
            vec![ContentBlock::tool_result(
                "call_2",
                json!(json!({"refund_id": "rf_5521", "status": "approved", "amount": "49.90", "currency": "EUR", "eta_days": 5}).to_string()),
            )],
            user("Your refund of 49.90 EUR for the kettle is approved (reference rf_5521) and should reach you within 5 business days. You can keep or recycle the damaged kettle; there's no need to send it back. Is there anything else I can help with?"),
        ),
        (
            user("Thanks! One more thing: my mother-in-law wrote this on the filter box, can you tell me what it says? 请每三个月更换一次滤网。 Also, do you ship to Tromsø?"),
            user("It says: \"Please replace the filter every three months.\" And yes, we ship to Tromsø; delivery there usually takes 3 to 5 business days."),
        ),
        (
            user("Here's the error my smart plug app shows when I try to schedule the kettle:\n```\nERR 0x3F2 schedule rejected: window 06:30-06:45 overlaps quiet hours (22:00-07:00)\n    at Scheduler.apply (scheduler.js:214:11)\n    at async Plug.sync (plug.js:88:5)\n```\nWhat should I change?"),
            user("The app refuses the schedule because 06:30-06:45 falls inside your quiet hours (22:00-07:00). Either move the schedule to 07:00 or later, or make quiet hours end at 06:30 in the app's settings."),
        ),
    ]
}

/// Runs the conversation with `accounting`; returns the relative error of the session's total
/// against the provider's prompt before each request after the first response.
async fn converse<E: TokenEstimator>(pool: &PgPool, accounting: &Accounting<E>) -> Vec<f64> {
    let provider = Provider::new();
    let s = session(pool, TENANT, "support").await;
    let system = "You are a support agent for Kettle & Co. Be concise. Use the tools to look up orders and issue refunds; never promise a refund before the refund tool approves it.";
    let opening = vec![accounting.count_system(
        new_message(s.id, MessageRole::System, user(system)),
        &provider.tools.to_string(),
    )];
    append_messages(pool, TENANT, s.id, &opening).await.unwrap();
    let mut errors = Vec::new();
    for (round, (sent, said)) in rounds().into_iter().enumerate() {
        let sent = accounting.count(new_message(s.id, MessageRole::User, sent));
        let total = append_messages(pool, TENANT, s.id, &[sent])
            .await
            .unwrap()
            .total_tokens;
        // The agent builds its prompt from what the session holds now.
        let live = list_messages(pool, TENANT, s.id, MessageRange::default())
            .await
            .unwrap();
        let turns: Vec<Turn> = live
            .iter()
            .map(|m| Turn::new(m.role, m.content.0.clone()))
            .collect();
        let prompt = provider.prompt(&openai_chat::to_messages(&turns).unwrap());
        let error = (total - prompt).abs() as f64 / prompt as f64;
        if round > 0 {
            errors.push(error);
        } else {
            println!("relative error before the first request: {error}");
        }
        let reply =
            openai_chat::to_messages(&[Turn::new(MessageRole::Assistant, said.clone())]).unwrap();
        let output = provider.output(&reply[0]);
        let reported = openai_chat::usage(&json!({
            "prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output
        }))
        .unwrap();
        let answer = count_response(
            new_message(s.id, MessageRole::Assistant, said),
            reported.clone(),
            total,
        );
        let appended = append_messages(pool, TENANT, s.id, &[answer])
            .await
            .unwrap();
        assert_eq!(
            appended.total_tokens,
            prompt + output,
            "round {round}: after the response the total is the provider's prompt plus output"
        );
        let stored = appended.rows().next().unwrap();
        assert_eq!(
            stored.provider_usage.as_ref().map(|u| &u.0),
            Some(&reported)
        );
        let total = appended.total_tokens;

        if round == 3 {
            // Compact the refund episode away: plan, read what goes, summarize, compact.
            let policy = CompactionPolicy {
                keep_last_messages: 2,
                ..CompactionPolicy::new(total * 6 / 10, "summarize")
            };
            let proposal = plan_compaction(pool, TENANT, s.id, &policy).await.unwrap();
            let removed = proposal.removed_messages(pool, TENANT).await.unwrap();
            assert!(removed.iter().any(|m| !m.content.0.is_empty()));
            assert_eq!(
                removed.iter().map(|m| m.id).collect::<Vec<_>>(),
                proposal.removed_ids()
            );
            let summary = accounting.summary(
                MessageRole::User,
                user("Summary so far: the customer's kettle (order 88412) arrived with a cracked lid; a refund of 49.90 EUR was approved (rf_5521, within 5 business days), no return needed."),
            );
            let plan = proposal.with_summary(summary).unwrap();
            let event = compact(pool, TENANT, &plan).await.unwrap();
            let now = get_session(pool, TENANT, s.id).await.unwrap().unwrap();
            assert_eq!(
                now.total_tokens,
                total - event.original_tokens + event.compacted_tokens
            );
        }
    }
    println!("relative error before requests 2..: {errors:?}");
    errors
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn the_total_is_the_providers_prompt_after_each_response_and_close_before(pool: PgPool) {
    let errors = converse(&pool, &Accounting::new(ApproxEstimator::default())).await;
    assert_eq!(errors.len(), 4);
    for (i, e) in errors.iter().enumerate() {
        assert!(
            *e <= 0.10,
            "request {}: the total is {:.1}% off the provider's prompt ({errors:?})",
            i + 2,
            e * 100.0
        );
    }
}

#[cfg(feature = "tiktoken")]
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn with_the_tiktoken_estimator_the_total_is_within_two_percent(pool: PgPool) {
    use agentpg_repo::tokens::TiktokenEstimator;
    let errors = converse(&pool, &Accounting::new(TiktokenEstimator::o200k())).await;
    for (i, e) in errors.iter().enumerate() {
        assert!(
            *e <= 0.02,
            "request {}: {:.2}% off ({errors:?})",
            i + 2,
            e * 100.0
        );
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_prompt_below_the_count_takes_nothing_back_and_provider_usage_is_checked(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    let heavy = NewMessage {
        usage: Some(Json(agentpg_schema::Usage {
            input_tokens: 500,
            ..Default::default()
        })),
        ..new_message(s.id, MessageRole::User, user("hi"))
    };
    let before = append_messages(&pool, TENANT, s.id, &[heavy])
        .await
        .unwrap()
        .total_tokens;
    // The estimate ran high: the provider counted 495 for the prompt, and the excess comes off
    // the output.
    let provider = agentpg_schema::Usage {
        input_tokens: 495,
        output_tokens: 7,
        ..Default::default()
    };
    let answer = count_response(
        new_message(s.id, MessageRole::Assistant, user("hello")),
        provider.clone(),
        before,
    );
    let after = append_messages(&pool, TENANT, s.id, &[answer])
        .await
        .unwrap();
    assert_eq!(after.total_tokens, 502, "the provider's prompt plus output");
    let stored = after.rows().next().unwrap();
    assert_eq!(
        stored.provider_usage.as_ref().map(|u| &u.0),
        Some(&provider)
    );
    // Far too high (the provider counted 120): the output is all there is to take back.
    let far = count_response(
        new_message(s.id, MessageRole::Assistant, user("again")),
        agentpg_schema::Usage {
            input_tokens: 120,
            output_tokens: 9,
            ..Default::default()
        },
        after.total_tokens,
    );
    let after = append_messages(&pool, TENANT, s.id, &[far]).await.unwrap();
    assert_eq!(
        after.total_tokens, 502,
        "nothing taken back from earlier messages"
    );

    // A provider usage that would be stored wrong is refused, and nothing is written.
    let mut hostile = agentpg_schema::Usage::default();
    hostile.extra.insert("input_tokens".into(), json!(-5));
    let bad = NewMessage {
        provider_usage: Some(Json(hostile)),
        ..new_message(s.id, MessageRole::Assistant, user("x"))
    };
    let err = append_messages(&pool, TENANT, s.id, &[bad])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { reason, .. } if reason.contains("provider_usage")),
        "{err}"
    );
    let negative = NewMessage {
        provider_usage: Some(Json(agentpg_schema::Usage {
            output_tokens: -1,
            ..Default::default()
        })),
        ..new_message(s.id, MessageRole::Assistant, user("x"))
    };
    assert!(append_messages(&pool, TENANT, s.id, &[negative])
        .await
        .is_err());
    let count = list_messages(&pool, TENANT, s.id, MessageRange::default())
        .await
        .unwrap()
        .len();
    assert_eq!(count, 3);
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn a_schema_behind_the_crate_says_run_the_migrations(pool: PgPool) {
    let s = session(&pool, TENANT, "s").await;
    // As if migration 007 had not run.
    sqlx::query("ALTER TABLE messages DROP COLUMN provider_usage")
        .execute(&pool)
        .await
        .unwrap();
    let err = append_messages(
        &pool,
        TENANT,
        s.id,
        &[new_message(s.id, MessageRole::User, user("hi"))],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err:?}");
    let said = err.to_string();
    assert!(
        said.contains("run the migrations") && said.contains("provider_usage"),
        "{said}"
    );
    sqlx::query("DROP TABLE message_archive")
        .execute(&pool)
        .await
        .unwrap();
    let err = agentpg_repo::archived_messages(&pool, TENANT, Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("run the migrations"), "{err}");
}
