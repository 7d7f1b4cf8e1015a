//! The generated fixed-shape statements (`stmt::…`) of the fixture schema against a live
//! PostgreSQL: every column type through the one-row insert and the batch insert from arrays
//! (array columns included), defaults taken from the migrations exactly as declared, by-key and
//! by-unique lookups, patches that set, keep and clear, deletes, and quoted identifiers.

use agentpg_fixture_schema::audit_log::{self, AuditLogKey};
use agentpg_fixture_schema::documents::{self, DocumentByUid, DocumentKey};
use agentpg_fixture_schema::labels::{self, LabelKey};
use agentpg_fixture_schema::revisions::{self, RevisionKey};
use agentpg_fixture_schema::{
    Attributes, AuditLog, AuditLogEventKind, AuditLogPatch, DocStatus, Document, DocumentKind,
    DocumentPatch, Label, NewAuditLog, NewDocument, NewLabel, NewRevision, Revision, RevisionPatch,
};
use sqlx::types::Json;
use sqlx::PgPool;

fn full_document(uid: u128) -> NewDocument {
    let mut attributes = Attributes::default();
    attributes.fields.insert("colour".into(), "blue".into());
    NewDocument {
        uid: Some(uuid::Uuid::from_u128(uid)),
        code: Some("AB12".into()),
        status: Some(DocStatus::Retired),
        tags: Some(vec!["a".into(), "b,\"c\"".into(), "{d}".into()]),
        scores: Some(vec![1, -2, 3]),
        attributes: Some(Json(attributes)),
        small: Some(-5),
        medium: Some(11),
        ratio: Some(0.5),
        precise: Some(2.25),
        amount: Some("1234.50".parse().unwrap()),
        flag: Some(true),
        created_at: Some("2026-01-02T03:04:05.123456Z".parse().unwrap()),
        local_at: Some("2026-01-02T03:04:05.5".parse().unwrap()),
        day: Some("2026-02-03".parse().unwrap()),
        at_time: Some("04:05:06.7".parse().unwrap()),
        blob: Some(vec![0, 1, 255]),
        quoted_col: Some("quoted".into()),
        summary: Some(None),
        ..NewDocument::new("Title".into(), "Body".into(), DocumentKind::InProgress)
    }
}

/// What `full_document` stores, given the id the database drew.
fn stored(new: &NewDocument, id: i64) -> Document {
    Document {
        id,
        uid: new.uid.unwrap(),
        title: new.title.clone(),
        code: new.code.clone(),
        content: new.content.clone(),
        status: new.status.unwrap(),
        kind: new.kind,
        tags: new.tags.clone().unwrap(),
        scores: new.scores.clone(),
        attributes: new.attributes.clone().unwrap(),
        small: new.small,
        medium: new.medium.unwrap(),
        ratio: new.ratio,
        precise: new.precise,
        amount: new.amount,
        flag: new.flag.unwrap(),
        created_at: new.created_at.unwrap(),
        local_at: new.local_at,
        day: new.day,
        at_time: new.at_time,
        blob: new.blob.clone(),
        word_count: Some(new.medium.unwrap() * 2),
        quoted_col: new.quoted_col.clone(),
        summary: None,
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn one_row_insert_stores_every_type_and_takes_declared_defaults(pool: PgPool) {
    let new = full_document(7);
    let inserted = documents::stmt::insert(&new)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(inserted, stored(&new, inserted.id));
    let key = DocumentKey { id: inserted.id };
    assert_eq!(
        documents::stmt::select_by_pk(&key)
            .fetch_one(&pool)
            .await
            .unwrap(),
        inserted
    );
    let by_uid = DocumentByUid {
        uid: uuid::Uuid::from_u128(7),
    };
    assert_eq!(
        documents::stmt::select_by_uid(&by_uid)
            .fetch_optional(&pool)
            .await
            .unwrap(),
        Some(inserted.clone())
    );

    // Every optional column left out: each takes its default as the migrations declare it
    // (after the ALTERs of 003), a nullable one without a default takes NULL.
    let minimal = documents::stmt::insert(&NewDocument::new(
        "T2".into(),
        "B2".into(),
        DocumentKind::Note,
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(minimal.id, inserted.id + 1, "bigserial: nextval");
    assert_ne!(minimal.uid, uuid::Uuid::nil(), "gen_random_uuid()");
    assert_eq!(minimal.status, DocStatus::Draft);
    assert_eq!(minimal.tags, Vec::<String>::new());
    assert_eq!(minimal.medium, 7, "default set by ALTER in 003");
    assert_eq!(minimal.word_count, Some(14), "generated column");
    assert_eq!(
        minimal.summary.as_deref(),
        Some("none"),
        "Option<Option<_>>: None is the default"
    );
    assert_eq!(minimal.attributes.0, Attributes::default());
    assert_eq!(
        (minimal.code, minimal.scores, minimal.blob),
        (None, None, None)
    );
    assert!(!minimal.flag);
}

#[sqlx::test(migrations = "./migrations")]
async fn batch_insert_from_arrays_keeps_order_values_and_defaults(pool: PgPool) {
    let mut rows: Vec<NewDocument> = (0..5).map(|i| full_document(100 + i)).collect();
    rows[1] = NewDocument::new("bare".into(), "b".into(), DocumentKind::Report);
    rows[2].tags = Some(Vec::new());
    rows[2].scores = None;
    rows[3].summary = Some(Some("given".into()));
    rows[4].status = None;
    let inserted = documents::stmt::insert_batch(&rows)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(inserted.len(), 5);
    // In input order, ids drawn in that order.
    for pair in inserted.windows(2) {
        assert!(pair[0].id < pair[1].id);
    }
    assert_eq!(inserted[0], stored(&rows[0], inserted[0].id));
    let bare = &inserted[1];
    assert_eq!(
        (
            bare.status,
            bare.medium,
            bare.summary.as_deref(),
            bare.tags.len()
        ),
        (DocStatus::Draft, 7, Some("none"), 0)
    );
    assert_eq!(bare.word_count, Some(14));
    assert_eq!(
        (inserted[2].tags.len(), inserted[2].scores.clone()),
        (0, None)
    );
    assert_eq!(inserted[2].scores, None, "a NULL array stays NULL");
    assert_eq!(inserted[3].summary.as_deref(), Some("given"));
    assert_eq!(inserted[4].status, DocStatus::Draft, "default per row");
    // Read back, the rows are what the batch returned.
    for row in &inserted {
        let key = DocumentKey { id: row.id };
        assert_eq!(
            &documents::stmt::select_by_pk(&key)
                .fetch_one(&pool)
                .await
                .unwrap(),
            row
        );
    }
    // An empty batch inserts nothing.
    assert!(documents::stmt::insert_batch(&[])
        .fetch_all(&pool)
        .await
        .unwrap()
        .is_empty());
}

#[sqlx::test(migrations = "./migrations")]
async fn enum_arrays_and_keyword_columns_go_through_batches(pool: PgPool) {
    let rows = vec![
        NewLabel {
            status: Some(DocStatus::Review),
            statuses: Some(vec![DocStatus::Draft, DocStatus::Retired]),
            ..NewLabel::new("kind".into())
        },
        NewLabel {
            statuses: Some(Vec::new()),
            ..NewLabel::new("type".into())
        },
        NewLabel::new("select".into()),
    ];
    let inserted: Vec<Label> = labels::stmt::insert_batch(&rows)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(inserted[0].r#type, "kind");
    assert_eq!(
        inserted[0].statuses,
        Some(vec![DocStatus::Draft, DocStatus::Retired])
    );
    assert_eq!(inserted[1].statuses, Some(Vec::new()));
    assert_eq!(
        (inserted[2].status, inserted[2].statuses.clone()),
        (None, None)
    );
    let one = labels::stmt::insert(&rows[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (one.status, one.statuses),
        (rows[0].status, rows[0].statuses.clone())
    );
    let key = LabelKey { id: inserted[0].id };
    let deleted = labels::stmt::delete_by_pk(&key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(deleted, inserted[0]);
    assert!(labels::stmt::select_by_pk(&key)
        .fetch_optional(&pool)
        .await
        .unwrap()
        .is_none());
}

#[sqlx::test(migrations = "./migrations")]
async fn patches_set_keep_and_clear(pool: PgPool) {
    let doc = documents::stmt::insert(&full_document(9))
        .fetch_one(&pool)
        .await
        .unwrap();
    let key = DocumentKey { id: doc.id };
    assert!(
        documents::stmt::update_by_pk(&key, &DocumentPatch::default()).is_none(),
        "an empty patch is no statement"
    );
    let patch = DocumentPatch {
        title: Some("New title".into()),
        code: Some(None),
        scores: Some(Some(vec![9])),
        medium: Some(1),
        ..DocumentPatch::default()
    };
    let updated = documents::stmt::update_by_pk(&key, &patch)
        .unwrap()
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        updated,
        Document {
            title: "New title".into(),
            code: None,
            scores: Some(vec![9]),
            medium: 1,
            word_count: Some(2),
            // The fixture's BEFORE UPDATE trigger sets it.
            created_at: updated.created_at,
            ..doc.clone()
        }
    );

    // Composite keys.
    let revision = revisions::stmt::insert(&NewRevision::new(doc.id, 1))
        .fetch_one(&pool)
        .await
        .unwrap();
    let rkey = RevisionKey {
        document_id: doc.id,
        revision: 1,
    };
    let noted: Revision = revisions::stmt::update_by_pk(
        &rkey,
        &RevisionPatch {
            note: Some(Some("hello".into())),
            ..RevisionPatch::default()
        },
    )
    .unwrap()
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(noted.note.as_deref(), Some("hello"));
    assert_eq!(
        noted.seq, revision.seq,
        "an ALWAYS identity is never written"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn quoted_identifiers_work_through_every_statement(pool: PgPool) {
    let new = NewAuditLog {
        points: Some(5),
        http_status: Some(404),
        ..NewAuditLog::new("Ada".into())
    };
    let row: AuditLog = audit_log::stmt::insert(&new)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (
            row.display_name.as_str(),
            row.event_kind,
            row.points,
            row.doubled,
            row.http_status
        ),
        ("Ada", AuditLogEventKind::Note, Some(5), Some(10), Some(404))
    );
    let key = AuditLogKey { id: row.id };
    let patched = audit_log::stmt::update_by_pk(
        &key,
        &AuditLogPatch {
            event_kind: Some(AuditLogEventKind::Alert),
            ..AuditLogPatch::default()
        },
    )
    .unwrap()
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(patched.event_kind, AuditLogEventKind::Alert);
    let batch = audit_log::stmt::insert_batch(&[new.clone(), NewAuditLog::new("Bob".into())])
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(batch[1].display_name, "Bob");
    // A BY DEFAULT identity takes an explicit value.
    let explicit = audit_log::stmt::insert(&NewAuditLog {
        id: Some(1000),
        ..NewAuditLog::new("Eve".into())
    })
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(explicit.id, 1000);
    // The CHECK that followed the rename still holds.
    let err = audit_log::stmt::insert(&NewAuditLog {
        points: Some(-1),
        ..NewAuditLog::new("Neg".into())
    })
    .fetch_one(&pool)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.constraint()),
        Some(audit_log::constraint::SCORE_CHECK)
    );
}
