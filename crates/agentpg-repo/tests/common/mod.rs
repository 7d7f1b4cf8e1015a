//! Helpers shared by the repo tests.
#![allow(dead_code, unreachable_pub)]

use agentpg_repo::{append_messages, create_session, CompactionPlan};
use agentpg_schema::{ContentBlock, Message, MessageRole, NewMessage, NewSession, Session, Usage};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

pub const TENANT: &str = "acme";
pub const OTHER: &str = "globex";

pub async fn session(pool: &PgPool, tenant: &str, identifier: &str) -> Session {
    create_session(pool, &NewSession::new(tenant.into(), identifier.into()))
        .await
        .unwrap()
}

pub fn usage(input: i64, output: i64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

/// A text message of tenant [`TENANT`] with usage `input`/`output`.
pub fn text(
    session_id: Uuid,
    role: MessageRole,
    body: &str,
    input: i64,
    output: i64,
) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![ContentBlock::text(body)])),
        usage: Some(Json(usage(input, output))),
        ..NewMessage::new(TENANT.into(), session_id, role)
    }
}

/// Appends `n` messages `m0…` alternating user/assistant, each with usage (1, 2).
pub async fn conversation(pool: &PgPool, session_id: Uuid, n: usize) -> Vec<Message> {
    let batch: Vec<NewMessage> = (0..n)
        .map(|i| {
            let role = if i % 2 == 0 {
                MessageRole::User
            } else {
                MessageRole::Assistant
            };
            text(session_id, role, &format!("m{i}"), 1, 2)
        })
        .collect();
    append_messages(pool, TENANT, session_id, &batch)
        .await
        .unwrap()
        .into_rows()
}

pub async fn all_messages(pool: &PgPool, session_id: Uuid) -> Vec<Message> {
    sqlx::query_as("SELECT * FROM messages WHERE session_id = $1 ORDER BY position")
        .bind(session_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

pub async fn session_row(pool: &PgPool, id: Uuid) -> Session {
    sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The tables of the schema, each with its name, its row count and its rows as JSON text.
macro_rules! tables {
    ($($table:literal),*) => {
        [$((
            $table,
            concat!("SELECT count(*) FROM ", $table),
            concat!("SELECT to_jsonb(t)::text FROM ", $table, " t ORDER BY to_jsonb(t)::text"),
        )),*]
    };
}
const TABLES: [(&str, &str, &str); 4] = tables!(
    "sessions",
    "messages",
    "compaction_events",
    "message_archive"
);

/// Row counts of every table, to show that nothing changed.
pub async fn counts(pool: &PgPool) -> [i64; 4] {
    let mut out = [0; 4];
    for (i, (_, count, _)) in TABLES.iter().enumerate() {
        out[i] = sqlx::query_scalar(*count).fetch_one(pool).await.unwrap();
    }
    out
}

/// A full dump of the database's rows as JSON text, to show that nothing changed at all.
pub async fn dump(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for (table, _, rows) in TABLES {
        let rows: Vec<String> = sqlx::query_scalar(rows).fetch_all(pool).await.unwrap();
        out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    out
}

/// A compaction plan removing `remove` from session `session_id`, without a summary.
pub fn plan(session_id: Uuid, remove: Vec<Uuid>) -> CompactionPlan {
    CompactionPlan {
        session_id,
        remove,
        summary: None,
        strategy: "test".into(),
        model_used: None,
        duration_ms: None,
        pending_tool_calls: Default::default(),
    }
}

/// True if the database runs Citus (the suite runs there too: `cargo xtask test --citus`).
pub async fn is_citus(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until some backend of this database waits on a lock (the other side is blocked). On
/// Citus the wait happens where the rows are, on a worker: `citus_stat_activity` shows every
/// node's backends.
pub async fn until_someone_waits(pool: &PgPool) {
    let activity = if is_citus(pool).await {
        "citus_stat_activity"
    } else {
        "pg_stat_activity"
    };
    let query = format!(
        "SELECT count(*) FROM {activity}
          WHERE datname = current_database() AND wait_event_type = 'Lock'"
    );
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.clone()))
            .fetch_one(pool)
            .await
            .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nobody started waiting on a lock");
}
