//! Every statement agentpg-repo sends, with realistic parameters, and the plan PostgreSQL (or
//! Citus) made for it: on a Citus cluster, each one is routed to one shard — every task of it,
//! its subplans' included, has `Task Count: 1`, and all of them run on the one worker that holds
//! the tenant (or on the coordinator, combining what that worker returned). Nothing fans out.
//!
//! The plans come from `auto_explain`, loaded into each connection of the test's pool and sent
//! back as notices: every statement's own plan, with the values it ran with, whatever built it.
//! A scenario calls every public operation (a test below checks that the scenario and the
//! crate's public functions agree, so a new operation cannot go unrouted).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use agentpg_repo::rls::{begin_as_tenant, create_tenant_role};
use agentpg_repo::*;
use agentpg_schema::{ContentBlock, MessageRole, NewMessage, NewSession};
use common::{text, TENANT};
use futures_util::StreamExt;
use serde_json::{json, Map};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// What one statement sent, and the plan of it (`None` for utility statements).
#[derive(Debug, Clone)]
struct Sent {
    sql: String,
    plan: Option<String>,
}

/// Collects statements and the auto_explain notices that precede each one's log event.
#[derive(Default)]
struct Recorder {
    sent: Vec<Sent>,
    pending: Vec<String>,
}

/// The test binary's one subscriber: it hands each event to the recorder of the thread it
/// happens on (a `#[sqlx::test]` runs on a current-thread runtime, so its spawned tasks too).
/// It is global and installed before any statement: a subscriber set per thread can lose
/// sqlx's call sites to a test on another thread that registers them at the same moment, and
/// then records nothing.
struct Subscriber;

thread_local! {
    static RECORDER: std::cell::RefCell<Option<Arc<Mutex<Recorder>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs [`Subscriber`] once; every test of this file calls it first.
fn install_subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::dispatcher::set_global_default(tracing::Dispatch::new(Subscriber))
            .expect("no other subscriber in this test binary");
    });
}

/// Records what this thread sends while `f` runs.
async fn recording<T>(
    recorder: &Arc<Mutex<Recorder>>,
    f: impl std::future::Future<Output = T>,
) -> T {
    RECORDER.with(|r| *r.borrow_mut() = Some(recorder.clone()));
    // A call site registered while the subscriber was being installed may have cached the
    // interest of the no-op one before it: ask every call site again.
    tracing::callsite::rebuild_interest_cache();
    let out = f.await;
    RECORDER.with(|r| *r.borrow_mut() = None);
    out
}

fn field(event: &tracing::Event<'_>, name: &str) -> Option<String> {
    struct Visit<'a>(&'a str, Option<String>);
    impl tracing::field::Visit for Visit<'_> {
        fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
            if f.name() == self.0 {
                self.1 = Some(v.to_owned());
            }
        }
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            if f.name() == self.0 {
                self.1 = Some(format!("{v:?}"));
            }
        }
    }
    let mut visit = Visit(name, None);
    event.record(&mut visit);
    visit.1
}

impl tracing::Subscriber for Subscriber {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        matches!(metadata.target(), "sqlx::query" | "sqlx::postgres::notice")
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let Some(recorder) = RECORDER.with(|r| r.borrow().clone()) else {
            return;
        };
        let mut r = recorder.lock().expect("the recorder");
        match event.metadata().target() {
            "sqlx::postgres::notice" => {
                if let Some(m) = field(event, "message") {
                    if m.contains("plan:") {
                        r.pending.push(m);
                    }
                }
            }
            "sqlx::query" => {
                let summary = field(event, "summary").unwrap_or_default();
                let statement = field(event, "db.statement").unwrap_or_default();
                let sql = if statement.trim().is_empty() {
                    summary
                } else {
                    statement.trim().to_string()
                };
                let notices = std::mem::take(&mut r.pending);
                // The statement's own plan is the notice that names a query text (those of a
                // distributed statement's subplans name none, and are inside it anyway).
                let plan = notices.into_iter().rfind(|n| {
                    n.lines()
                        .any(|l| l.starts_with("Query Text: ") && l.len() > "Query Text: ".len())
                });
                r.sent.push(Sent { sql, plan });
            }
            _ => {}
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Statements with no plan: transaction control.
fn is_utility(sql: &str) -> bool {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "BEGIN"
            | "COMMIT"
            | "ROLLBACK"
            | "SAVEPOINT"
            | "RELEASE"
            | "START"
            | "END"
            | "LISTEN"
            | "UNLISTEN"
    )
}

/// The numbers after `label` in `plan`, one per line that has it.
fn numbers_after(plan: &str, label: &str) -> Vec<u64> {
    plan.lines()
        .filter_map(|l| l.trim().strip_prefix(label))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The ports of the nodes a plan's tasks run on.
fn task_ports(plan: &str) -> BTreeSet<u16> {
    plan.lines()
        .filter_map(|l| l.trim().strip_prefix("Node: "))
        .filter_map(|rest| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix("port="))?
                .parse()
                .ok()
        })
        .collect()
}

fn message(session_id: Uuid, role: MessageRole, block: ContentBlock) -> NewMessage {
    NewMessage {
        content: Some(Json(vec![block])),
        usage: Some(Json(common::usage(3, 2))),
        ..NewMessage::new(TENANT.into(), session_id, role)
    }
}

/// The operations the scenario called, and on Citus the nodes each one committed on in two
/// phases: a transaction that writes through more than one connection commits in two phases
/// and leaves one record per node in `pg_dist_transaction` (the test cluster never cleans them
/// up). An operation of one tenant must leave none on a node that does not hold the tenant's
/// shards: that node's failure would stop it.
struct Calls<'p> {
    pool: &'p PgPool,
    citus: bool,
    /// The node group holding the tenant's shards.
    home: i32,
    seen: BTreeSet<String>,
    called: BTreeSet<&'static str>,
    /// Operations that committed in two phases: on which groups, how many records.
    two_phase: Vec<(&'static str, BTreeSet<i32>, usize)>,
}

impl<'p> Calls<'p> {
    async fn new(pool: &'p PgPool) -> Calls<'p> {
        let citus = common::is_citus(pool).await;
        let home = if citus {
            sqlx::query_scalar(
                "SELECT groupid FROM pg_dist_placement \
                 WHERE shardid = get_shard_id_for_distribution_column('sessions', $1)",
            )
            .bind(TENANT)
            .fetch_one(pool)
            .await
            .unwrap()
        } else {
            0
        };
        let mut calls = Calls {
            pool,
            citus,
            home,
            seen: BTreeSet::new(),
            called: BTreeSet::new(),
            two_phase: Vec::new(),
        };
        calls.records().await;
        calls
    }

    /// The records of `pg_dist_transaction` not seen before, by group.
    async fn records(&mut self) -> Vec<i32> {
        if !self.citus {
            return Vec::new();
        }
        let all: Vec<(i32, String)> =
            sqlx::query_as("SELECT groupid, gid FROM pg_dist_transaction")
                .fetch_all(self.pool)
                .await
                .unwrap();
        all.into_iter()
            .filter(|(_, gid)| self.seen.insert(gid.clone()))
            .map(|(group, _)| group)
            .collect()
    }

    /// Marks operation `name` called (since the previous mark).
    async fn call(&mut self, name: &'static str) {
        self.called.insert(name);
        let new = self.records().await;
        if !new.is_empty() {
            self.two_phase
                .push((name, new.iter().copied().collect(), new.len()));
        }
    }

    /// The operations that committed on a node other than the tenant's.
    fn elsewhere(&self) -> Vec<&(&'static str, BTreeSet<i32>, usize)> {
        self.two_phase
            .iter()
            .filter(|(_, groups, _)| groups.iter().any(|g| *g != self.home))
            .collect()
    }
}

/// Calls every public operation of agentpg-repo on `pool`, with realistic data.
async fn scenario<'p>(pool: &'p PgPool) -> Calls<'p> {
    let mut calls = Calls::new(pool).await;

    create_tenant_role(pool, TENANT, None).await.unwrap();
    calls.call("create_tenant_role").await;
    let parent = create_session(pool, NewSession::new(TENANT.into(), "parent".into()))
        .await
        .unwrap();
    let mut meta = Map::new();
    meta.insert("project".into(), json!("routing"));
    let s = create_session(
        pool,
        NewSession {
            parent_session_id: Some(parent.id),
            metadata: Some(serde_json::Value::Object(meta.clone())),
            ..NewSession::new(TENANT.into(), "agent-1".into())
        },
    )
    .await
    .unwrap();
    calls.call("create_session").await;
    assert!(get_session(pool, TENANT, s.id).await.unwrap().is_some());
    calls.call("get_session").await;
    assert!(find_session(pool, TENANT, "agent-1")
        .await
        .unwrap()
        .is_some());
    calls.call("find_session").await;

    // A conversation with tool pairs, appended plain and retry-safe.
    let mut batch = Vec::new();
    for i in 0..300 {
        batch.push(message(
            s.id,
            MessageRole::User,
            ContentBlock::text(format!("q{i}")),
        ));
        batch.push(message(
            s.id,
            MessageRole::Assistant,
            ContentBlock::tool_use(format!("call_{i}"), "search", json!({"q": i})),
        ));
        batch.push(message(
            s.id,
            MessageRole::User,
            ContentBlock::tool_result(format!("call_{i}"), json!("found")),
        ));
    }
    let plain = append_messages(pool, TENANT, s.id, &batch).await.unwrap();
    calls.call("append_messages").await;
    let with_ids: Vec<NewMessage> = (0..5)
        .map(|i| NewMessage {
            id: Some(Uuid::new_v4()),
            ..text(s.id, MessageRole::User, &format!("r{i}"), 1, 1)
        })
        .collect();
    append_messages(pool, TENANT, s.id, &with_ids)
        .await
        .unwrap();
    append_messages(pool, TENANT, s.id, &with_ids)
        .await
        .unwrap();
    // A retry with one message more, which finds the session busy: it takes the lock first,
    // then runs again.
    let mut again = with_ids.clone();
    again.push(NewMessage {
        id: Some(Uuid::new_v4()),
        ..text(s.id, MessageRole::User, "r5", 1, 1)
    });
    let mut holder = pool.begin().await.unwrap();
    set_preserved(
        &mut *holder,
        TENANT,
        s.id,
        plain.rows().next().unwrap().id,
        false,
    )
    .await
    .unwrap();
    let retry = tokio::spawn({
        let pool = pool.clone();
        async move { append_messages(&pool, TENANT, s.id, &again).await }
    });
    common::until_someone_waits(pool).await;
    holder.commit().await.unwrap();
    retry.await.unwrap().unwrap();
    let last = get_session(pool, TENANT, s.id)
        .await
        .unwrap()
        .unwrap()
        .last_position
        .unwrap();
    append_messages_after(
        pool,
        TENANT,
        s.id,
        LastSeen::Position(last),
        &[text(s.id, MessageRole::User, "next", 1, 1)],
    )
    .await
    .unwrap();
    calls.call("append_messages_after").await;

    let rows = plain.clone().into_rows();
    get_message(pool, TENANT, s.id, rows[0].id).await.unwrap();
    calls.call("get_message").await;
    let some = get_messages(pool, TENANT, s.id, &[rows[1].id, rows[0].id])
        .await
        .unwrap();
    assert_eq!(some.len(), 2);
    calls.call("get_messages").await;
    for range in [
        MessageRange::default(),
        MessageRange::last(20),
        MessageRange {
            after_position: Some(rows[10].position),
            limit: Some(5),
            last: None,
        },
    ] {
        list_messages(pool, TENANT, s.id, range).await.unwrap();
    }
    calls.call("list_messages").await;
    let streamed = stream_messages(pool, TENANT, s.id).count().await;
    assert!(streamed > 900);
    calls.call("stream_messages").await;
    set_preserved(pool, TENANT, s.id, rows[1].id, true)
        .await
        .unwrap();
    calls.call("set_preserved").await;
    recompute_total_tokens(pool, TENANT, s.id).await.unwrap();
    calls.call("recompute_total_tokens").await;
    update_metadata(pool, TENANT, s.id, &MetadataUpdate::Merge(meta.clone()))
        .await
        .unwrap();
    update_metadata(pool, TENANT, s.id, &MetadataUpdate::Replace(meta.clone()))
        .await
        .unwrap();
    calls.call("update_metadata").await;
    list_children(pool, TENANT, parent.id).await.unwrap();
    calls.call("list_children").await;
    for (filter, order) in [
        (SessionFilter::default(), SessionOrder::RecentlyUpdated),
        (
            SessionFilter::default().metadata(meta.clone()),
            SessionOrder::NewestFirst,
        ),
        (
            SessionFilter::default().parent(parent.id),
            SessionOrder::OldestFirst,
        ),
        (
            SessionFilter::default().identifier_prefix("agent"),
            SessionOrder::NewestFirst,
        ),
        (
            SessionFilter::default().forked_from(s.id),
            SessionOrder::OldestFirst,
        ),
    ] {
        let page = list_sessions(pool, TENANT, &filter, order, None, 1)
            .await
            .unwrap();
        if let Some(next) = page.next {
            list_sessions(pool, TENANT, &filter, order, Some(next), 1)
                .await
                .unwrap();
        }
    }
    calls.call("list_sessions").await;

    // Deletes: a few and many (the two ways of checking tool pairs), and one that splits.
    delete_messages(
        pool,
        TENANT,
        s.id,
        &[rows[3].id, rows[4].id, rows[5].id],
        ToolPairs::Keep,
    )
    .await
    .unwrap();
    delete_messages(pool, TENANT, s.id, &[rows[8].id], ToolPairs::AllowSplit)
        .await
        .unwrap();
    let many: Vec<Uuid> = rows[600..900].iter().map(|m| m.id).collect();
    delete_messages(pool, TENANT, s.id, &many, ToolPairs::Keep)
        .await
        .unwrap();
    calls.call("delete_messages").await;

    // Plan, compact (a few with a summary whose id the caller gives; many), read, revert.
    plan_compaction(pool, TENANT, s.id, &CompactionPolicy::new(200, "routing"))
        .await
        .unwrap();
    calls.call("plan_compaction").await;
    // A few messages (one whole question, call and result) with a summary whose id the caller
    // gives; then many (whole triples: the pair check's pass over the session).
    let mut small = common::plan(s.id, rows[9..12].iter().map(|m| m.id).collect());
    small.summary = Some(Summary {
        id: Some(Uuid::new_v4()),
        role: MessageRole::User,
        content: vec![ContentBlock::text("summary")],
        usage: Some(common::usage(5, 0)),
        metadata: None,
    });
    let first = compact(pool, TENANT, &small).await.unwrap();
    let big = common::plan(s.id, rows[12..600].iter().map(|m| m.id).collect());
    let second = compact(pool, TENANT, &big).await.unwrap();
    calls.call("compact").await;
    list_compactions(pool, TENANT, s.id).await.unwrap();
    calls.call("list_compactions").await;
    archived_messages(pool, TENANT, first.id).await.unwrap();
    calls.call("archived_messages").await;
    // Search, live and archived, with every filter, and a second page.
    let search = MessageSearch {
        sessions: Some(vec![s.id]),
        session_metadata: json!({"k": 1}).as_object().cloned(),
        roles: Some(vec![MessageRole::User, MessageRole::Assistant]),
        created_from: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        created_before: Some(chrono::Utc::now() + chrono::Duration::days(1)),
        archived: Archived::Include,
        ..MessageSearch::new("summary or question")
    };
    let page = search_messages(pool, TENANT, &search, None, 2)
        .await
        .unwrap();
    search_messages(pool, TENANT, &search, page.next.as_ref(), 2)
        .await
        .unwrap();
    search_messages(pool, TENANT, &MessageSearch::new("summary"), None, 10)
        .await
        .unwrap();
    calls.call("search_messages").await;
    revert_compaction(pool, TENANT, second.id).await.unwrap();
    calls.call("revert_compaction").await;

    // Follow: a replay of the history (appends, compactions, the revert, deletes), a read of
    // the session's cursor.
    let mut follow = follow_session(pool, TENANT, s.id, FollowCursor::START);
    let mut changes = 0;
    while changes < 4 {
        let followed = follow.next().await.unwrap().unwrap();
        if !matches!(followed.event, SessionEvent::Appended(_)) {
            changes += 1;
        }
    }
    drop(follow);
    calls.call("follow_session").await;
    follow_cursor_now(pool, TENANT, s.id).await.unwrap();
    calls.call("follow_cursor_now").await;

    let fork = fork_session(
        pool,
        TENANT,
        s.id,
        rows[590].id,
        NewSession::new(TENANT.into(), "fork".into()),
    )
    .await
    .unwrap();
    calls.call("fork_session").await;

    let mut tx = begin_as_tenant(pool, TENANT).await.unwrap();
    get_session(&mut *tx, TENANT, s.id).await.unwrap();
    tx.commit().await.unwrap();
    calls.call("begin_as_tenant").await;

    finalize_compactions(pool, TENANT, std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    finalize_compactions(
        pool,
        TENANT,
        chrono::Utc::now() - chrono::TimeDelta::days(1),
        10,
    )
    .await
    .unwrap();
    calls.call("finalize_compactions").await;
    delete_idle_sessions(pool, TENANT, std::time::Duration::from_secs(3600), 10)
        .await
        .unwrap();
    calls.call("delete_idle_sessions").await;
    delete_session(pool, TENANT, fork.id).await.unwrap();
    calls.call("delete_session").await;
    calls
}

/// The public operations of the crate that send SQL: every function re-exported by `lib.rs`,
/// and those of `rls`, less the ones that send none (`tenant_role`, `tenant_connect_options`)
/// and `migrate`, the one operation that is not tenant traffic (it applies the schema, on
/// Citus before the tables are distributed).
fn public_operations() -> BTreeSet<String> {
    let lib = include_str!("../src/lib.rs");
    let mut names = BTreeSet::new();
    for statement in lib.split(';') {
        let Some((_, path)) = statement.split_once("pub use ") else {
            continue;
        };
        let items = match path.split_once('{') {
            Some((_, list)) => list.trim_end_matches(|c: char| c == '}' || c.is_whitespace()),
            None => path.rsplit("::").next().unwrap_or(""),
        };
        for item in items.split(',').map(str::trim) {
            if item.starts_with(|c: char| c.is_ascii_lowercase())
                && item
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(item.to_string());
            }
        }
    }
    for module_fn in ["create_tenant_role", "begin_as_tenant"] {
        names.insert(module_fn.to_string());
    }
    names.remove("migrate");
    names
}

#[test]
fn the_scenario_covers_every_public_operation() {
    let ops = public_operations();
    assert!(
        ops.contains("append_messages") && ops.contains("fork_session"),
        "{ops:?}"
    );
    let source = include_str!("routing.rs");
    for op in &ops {
        assert!(
            source.contains(&format!("calls.call(\"{op}\")")),
            "the routing scenario does not call {op}"
        );
    }
}

#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn every_statement_is_routed_to_one_shard(_: PgPoolOptions, options: PgConnectOptions) {
    install_subscriber();
    let options = options.options([
        ("session_preload_libraries", "auto_explain"),
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_level", "notice"),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let citus = common::is_citus(&pool).await;
    let coordinator: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let called = recording(&recorder, scenario(&pool)).await.called;
    assert!(called.len() >= 25, "{called:?}");
    let sent = recorder.lock().unwrap().sent.clone();
    // The helper that waits for a lock queries activity views: not agentpg-repo's statement.
    let sent: Vec<Sent> = sent
        .into_iter()
        .filter(|s| !s.sql.contains("stat_activity") && !s.sql.contains("inet_server_port"))
        .collect();
    let planned: Vec<&Sent> = sent.iter().filter(|s| !is_utility(&s.sql)).collect();
    for statement in [
        agentpg_schema::messages::stmt::APPEND,
        agentpg_schema::messages::stmt::APPEND_RETRYABLE,
        agentpg_schema::messages::stmt::LOCK_PARENT,
        agentpg_schema::messages::stmt::RESTORE,
        agentpg_schema::messages::stmt::ARCHIVED,
    ] {
        assert!(
            sent.iter().any(|s| s.sql == statement),
            "the scenario never sent {statement}"
        );
    }
    assert!(planned.len() > 40, "{} statements", planned.len());
    for s in &planned {
        let plan = s
            .plan
            .as_deref()
            .unwrap_or_else(|| panic!("no plan came back for {}", s.sql));
        if !citus {
            continue;
        }
        let tasks = numbers_after(plan, "Task Count: ");
        assert!(
            tasks.iter().all(|&n| n == 1),
            "a task of this statement fans out ({tasks:?}):\n{}\n{plan}",
            s.sql
        );
        assert!(
            !plan.contains("repartition"),
            "this statement repartitions:\n{}\n{plan}",
            s.sql
        );
        let workers: BTreeSet<u16> = task_ports(plan)
            .into_iter()
            .filter(|p| i32::from(*p) != coordinator)
            .collect();
        assert!(
            workers.len() <= 1,
            "this statement runs on several workers ({workers:?}):\n{}\n{plan}",
            s.sql
        );
        // A statement on the distributed tables is a Citus plan: routed, not run locally.
        if [
            "sessions",
            "messages",
            "compaction_events",
            "message_archive",
            "session_changes",
        ]
        .iter()
        .any(|t| s.sql.contains(&format!("\"{t}\"")) || s.sql.contains(&format!(" {t} ")))
        {
            assert!(
                plan.contains("Citus") && !tasks.is_empty(),
                "not a routed Citus plan:\n{}\n{plan}",
                s.sql
            );
        }
    }
    if std::env::var_os("AGENTPG_SHOW_PLANS").is_some() {
        for s in &planned {
            println!("{}\n{}\n", s.sql, s.plan.as_deref().unwrap_or(""));
        }
    }
    pool.close().await;
    println!(
        "{} statements, {} planned, every one single-shard{}",
        sent.len(),
        planned.len(),
        if citus {
            " on Citus"
        } else {
            " (plain PostgreSQL: plans captured, no routing to check)"
        }
    );
}

/// On Citus, no operation of a tenant commits on a worker that does not hold the tenant's
/// shards (that worker's failure would fail it), except the creation of its role, which is a
/// role of the whole cluster. The scenario runs without `auto_explain` here: explaining a plan
/// whose last step runs on the coordinator makes Citus connect to the coordinator itself.
#[sqlx::test(migrator = "agentpg_repo::MIGRATOR")]
async fn no_operation_commits_on_another_worker(pool: PgPool) {
    install_subscriber();
    let calls = scenario(&pool).await;
    if !calls.citus {
        return;
    }
    println!(
        "two-phase commits (operation, node groups, records): {:?}",
        calls.two_phase
    );
    let elsewhere: Vec<_> = calls
        .elsewhere()
        .into_iter()
        .filter(|(name, _, _)| *name != "create_tenant_role")
        .collect();
    assert!(
        elsewhere.is_empty(),
        "operations that committed on nodes without the tenant's shards (its group is {}): \
         {elsewhere:?}",
        calls.home
    );
}
