//! The end of a soak: every invariant of the data, and the ledger of acknowledged writes, held
//! against the database.

use sqlx::PgPool;
use uuid::Uuid;

use super::ledger::Ledger;

/// The tenant retention works on (it may delete its sessions and drop its archives, so its
/// acknowledged messages may legitimately be gone).
pub(crate) const RETENTION_TENANT: &str = "tenant-r";

/// Every invariant, as (description, violations).
pub(crate) async fn check(
    pool: &PgPool,
    ledger: &Ledger,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut out = Vec::new();
    let queries: [(&str, &str); 10] = [
        (
            "sessions whose total_tokens differs from the recomputed sum",
            "SELECT count(*) FROM sessions s WHERE s.total_tokens <> (
                 SELECT coalesce(sum(coalesce((m.usage ->> 'input_tokens')::bigint, 0)
                                   + coalesce((m.usage ->> 'output_tokens')::bigint, 0)), 0)
                   FROM messages m WHERE m.tenant_id = s.tenant_id AND m.session_id = s.id)",
        ),
        (
            "duplicate positions within a session",
            "SELECT count(*) - count(DISTINCT (tenant_id, session_id, position)) FROM messages",
        ),
        (
            "messages whose position is past their session's last_position",
            "SELECT count(*) FROM messages m JOIN sessions s ON s.tenant_id = m.tenant_id AND s.id = m.session_id
              WHERE m.position > coalesce(s.last_position, 0)",
        ),
        (
            "messages that are both live and archived",
            "SELECT count(*) FROM messages m JOIN message_archive a USING (tenant_id, id)",
        ),
        (
            "archived messages of reverted or missing events",
            "SELECT count(*) FROM message_archive a LEFT JOIN compaction_events e
                 ON e.tenant_id = a.tenant_id AND e.id = a.compaction_event_id
              WHERE e.id IS NULL OR e.reverted_at IS NOT NULL",
        ),
        (
            "standing events whose archive size differs from messages_removed",
            "SELECT count(*) FROM compaction_events e WHERE e.reverted_at IS NULL AND e.finalized_at IS NULL
                AND e.messages_removed <> (SELECT count(*) FROM message_archive a
                                           WHERE a.tenant_id = e.tenant_id AND a.compaction_event_id = e.id)",
        ),
        (
            "sessions whose compaction_count differs from their standing events",
            "SELECT count(*) FROM sessions s WHERE s.compaction_count <> (
                 SELECT count(*) FROM compaction_events e
                  WHERE e.tenant_id = s.tenant_id AND e.session_id = s.id AND e.reverted_at IS NULL)",
        ),
        (
            "archived messages whose row disagrees with the archive's id or session",
            "SELECT count(*) FROM message_archive a
              WHERE a.original_message ->> 'id' <> a.id::text OR a.original_message ->> 'session_id' <> a.session_id::text",
        ),
        (
            "messages stored twice (the same text, live or archived, outside forks)",
            "SELECT count(*) - count(DISTINCT (tenant_id, c)) FROM (
                 SELECT m.tenant_id, m.content::text AS c FROM messages m
                   JOIN sessions s ON s.tenant_id = m.tenant_id AND s.id = m.session_id
                  WHERE NOT m.is_summary AND s.forked_from_session_id IS NULL
                 UNION ALL
                 SELECT a.tenant_id, (a.original_message -> 'content')::text FROM message_archive a
                   JOIN sessions s ON s.tenant_id = a.tenant_id AND s.id = a.session_id
                  WHERE NOT (a.original_message ->> 'is_summary')::bool AND s.forked_from_session_id IS NULL
             ) AS texts",
        ),
        (
            "tool results without their call in a session, or calls without a result outside forks",
            "SELECT (SELECT count(*) FROM messages r, jsonb_array_elements_text(r.tool_result_ids) AS t(id)
                      WHERE NOT EXISTS (SELECT 1 FROM messages u WHERE u.tenant_id = r.tenant_id
                                          AND u.session_id = r.session_id AND u.tool_use_ids ? t.id))
                  + (SELECT count(*) FROM messages u
                       JOIN sessions s ON s.tenant_id = u.tenant_id AND s.id = u.session_id,
                       jsonb_array_elements_text(u.tool_use_ids) AS t(id)
                      WHERE s.forked_from_session_id IS NULL
                        AND NOT EXISTS (SELECT 1 FROM messages r WHERE r.tenant_id = u.tenant_id
                                          AND r.session_id = u.session_id AND r.tool_result_ids ? t.id))",
        ),
    ];
    for (name, sql) in queries {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        out.push((name.to_string(), n));
    }
    // The ledger against what is stored (read whole and compared here: simple reads, which a
    // distributed database answers from every shard).
    let live: std::collections::HashMap<Uuid, bool> =
        sqlx::query_as::<_, (Uuid, bool)>("SELECT id, is_preserved FROM messages")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let archived: std::collections::HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM message_archive")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let standing: std::collections::HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM compaction_events WHERE reverted_at IS NULL")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    // Outside the retention tenant (whose sessions retention deletes and whose archives it
    // drops), every acknowledged message is live or archived, and every acknowledged preserve
    // live and preserved.
    let kept = |tenant: &String| tenant.as_str() != RETENTION_TENANT;
    let missing = ledger
        .appended
        .iter()
        .filter(|(id, tenant)| kept(tenant) && !live.contains_key(*id) && !archived.contains(*id))
        .count();
    out.push(("acknowledged appends missing".into(), missing as i64));
    // (Retention may delete a session of its tenant once it is idle, preserved messages and
    // all: that tenant's preserves are not held to it.)
    let not_live: Vec<(&Uuid, &String)> = ledger
        .preserved
        .iter()
        .filter(|(id, tenant)| kept(tenant) && live.get(*id) != Some(&true))
        .collect();
    for (id, tenant) in &not_live {
        eprintln!(
            "preserved message {id} of {tenant} is {}",
            if live.contains_key(*id) {
                "live, not preserved"
            } else if archived.contains(*id) {
                "archived"
            } else {
                "gone"
            }
        );
    }
    let not_live = not_live.len();
    out.push((
        "acknowledged preserved messages not live".into(),
        not_live as i64,
    ));
    let missing_summaries = ledger
        .summaries
        .iter()
        .filter(|(event, id, tenant)| {
            kept(tenant)
                && standing.contains(event)
                && !live.contains_key(id)
                && !archived.contains(id)
        })
        .count();
    out.push((
        "acknowledged summaries of standing compactions missing".into(),
        missing_summaries as i64,
    ));
    Ok(out)
}
