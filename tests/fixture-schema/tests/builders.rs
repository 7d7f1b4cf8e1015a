//! The generated builders and row structs of the fixture schema against a live PostgreSQL:
//! every column type written and read back exactly, defaults left to the database, patches,
//! composite keys, PostgreSQL enums and their arrays, CHECK-IN enums.

use agentpg_fixture_schema::{
    documents, labels, revisions, Attributes, DocStatus, Document, DocumentKind, DocumentPatch,
    Label, LabelPatch, NewDocument, NewLabel, NewRevision, Revision, RevisionMood, RevisionPatch,
};
use sea_query::PostgresQueryBuilder;
// The statements are rendered by sea-query from generated identifiers with every value bound as
// a parameter, which is what `AssertSqlSafe` asserts below.
use sea_query_sqlx::SqlxBinder;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

async fn one<T>(pool: &PgPool, statement: impl SqlxBinder) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let (sql, values) = statement.build_sqlx(PostgresQueryBuilder);
    sqlx::query_as_with::<_, T, _>(AssertSqlSafe(sql.clone()), values)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn full_document() -> NewDocument {
    let mut attributes = Attributes::default();
    attributes.fields.insert("colour".into(), "blue".into());
    NewDocument {
        uid: Some(uuid::Uuid::from_u128(7)),
        code: Some("AB12".into()),
        status: Some(DocStatus::Retired),
        tags: Some(vec!["a".into(), "b".into()]),
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

#[sqlx::test(migrations = "./migrations")]
async fn every_type_round_trips_and_defaults_come_from_the_database(pool: PgPool) {
    let new = full_document();
    let inserted: Document = one(&pool, documents::insert(&new).unwrap()).await;
    let expected = Document {
        id: inserted.id,
        uid: uuid::Uuid::from_u128(7),
        title: "Title".into(),
        code: Some("AB12".into()),
        content: "Body".into(),
        status: DocStatus::Retired,
        kind: DocumentKind::InProgress,
        tags: vec!["a".into(), "b".into()],
        scores: Some(vec![1, -2, 3]),
        attributes: new.attributes.clone().unwrap(),
        small: Some(-5),
        medium: 11,
        ratio: Some(0.5),
        precise: Some(2.25),
        amount: Some("1234.50".parse().unwrap()),
        flag: true,
        created_at: new.created_at.unwrap(),
        local_at: new.local_at,
        day: new.day,
        at_time: new.at_time,
        blob: Some(vec![0, 1, 255]),
        word_count: Some(22),
        quoted_col: Some("quoted".into()),
        summary: None,
    };
    assert_eq!(inserted, expected);
    let selected: Document = one(&pool, documents::select_by_pk(&inserted.id)).await;
    assert_eq!(selected, expected);

    // Only the required columns: the database fills the rest.
    let minimal: Document = one(
        &pool,
        documents::insert(&NewDocument::new(
            "T2".into(),
            "B2".into(),
            DocumentKind::Note,
        ))
        .unwrap(),
    )
    .await;
    assert_eq!(minimal.id, inserted.id + 1, "bigserial");
    assert_eq!(minimal.status, DocStatus::Draft);
    assert_eq!(minimal.tags, Vec::<String>::new());
    assert_eq!(minimal.medium, 7, "default set by ALTER in 003");
    assert_eq!(minimal.word_count, Some(14), "generated column");
    assert_eq!(
        minimal.summary.as_deref(),
        Some("none"),
        "default set by ALTER in 003"
    );
    assert_eq!(minimal.attributes.0, Attributes::default());
    assert_eq!(minimal.code, None);
}

#[sqlx::test(migrations = "./migrations")]
async fn insert_many_patch_and_delete(pool: PgPool) {
    let rows = [
        NewDocument::new("a".into(), "x".into(), DocumentKind::Note),
        NewDocument::new("b".into(), "y".into(), DocumentKind::Report),
    ];
    assert!(documents::insert_many(std::iter::empty())
        .unwrap()
        .is_none());
    let (sql, values) = documents::insert_many(&rows)
        .unwrap()
        .unwrap()
        .build_sqlx(PostgresQueryBuilder);
    let inserted: Vec<Document> = sqlx::query_as_with(AssertSqlSafe(sql), values)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        inserted
            .iter()
            .map(|d| d.title.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );

    assert!(
        documents::update_by_pk(&inserted[0].id, &DocumentPatch::default())
            .unwrap()
            .is_none()
    );
    let patch = DocumentPatch {
        title: Some("renamed".into()),
        code: Some(Some("ZZZZ".into())),
        summary: Some(None),
        status: Some(DocStatus::Published),
        ..DocumentPatch::default()
    };
    assert!(!patch.is_empty());
    let updated: Document = one(
        &pool,
        documents::update_by_pk(&inserted[0].id, &patch)
            .unwrap()
            .unwrap(),
    )
    .await;
    assert_eq!(updated.title, "renamed");
    assert_eq!(updated.code.as_deref(), Some("ZZZZ"));
    assert_eq!(updated.summary, None);
    assert_eq!(updated.status, DocStatus::Published);
    assert_eq!(updated.content, "x", "untouched");

    let (sql, values) = documents::delete_by_pk(&inserted[0].id).build_sqlx(PostgresQueryBuilder);
    let deleted = sqlx::query_with(AssertSqlSafe(sql), values)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    let (sql, values) = documents::select().build_sqlx(PostgresQueryBuilder);
    let left: Vec<Document> = sqlx::query_as_with(AssertSqlSafe(sql), values)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].title, "b");
}

#[sqlx::test(migrations = "./migrations")]
async fn composite_keys_identity_and_check_in_enums(pool: PgPool) {
    let doc: Document = one(
        &pool,
        documents::insert(&NewDocument::new(
            "d".into(),
            "c".into(),
            DocumentKind::Note,
        ))
        .unwrap(),
    )
    .await;
    let rev: Revision = one(
        &pool,
        revisions::insert(&NewRevision {
            mood: Some(RevisionMood::Angry),
            ..NewRevision::new(doc.id, 3)
        })
        .unwrap(),
    )
    .await;
    assert_eq!(
        rev,
        Revision {
            document_id: doc.id,
            revision: 3,
            seq: 1,
            note: None,
            mood: Some(RevisionMood::Angry),
        }
    );
    let patched: Revision = one(
        &pool,
        revisions::update_by_pk(
            &doc.id,
            &3,
            &RevisionPatch {
                mood: Some(Some(RevisionMood::Calm)),
                note: Some(Some("n".into())),
            },
        )
        .unwrap()
        .unwrap(),
    )
    .await;
    assert_eq!(patched.mood, Some(RevisionMood::Calm));
    assert_eq!(patched.note.as_deref(), Some("n"));
    assert_eq!("angry".parse::<RevisionMood>(), Ok(RevisionMood::Angry));
    assert_eq!(
        "furious".parse::<RevisionMood>().unwrap_err().to_string(),
        "\"furious\" is not a value of RevisionMood"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn pg_enums_enum_arrays_and_keyword_columns(pool: PgPool) {
    let label: Label = one(
        &pool,
        labels::insert(&NewLabel {
            status: Some(DocStatus::Review),
            statuses: Some(vec![DocStatus::Draft, DocStatus::Retired]),
            ..NewLabel::new("kind".into())
        })
        .unwrap(),
    )
    .await;
    assert_eq!(label.r#type, "kind");
    assert_eq!(label.status, Some(DocStatus::Review));
    assert_eq!(
        label.statuses,
        Some(vec![DocStatus::Draft, DocStatus::Retired])
    );
    let cleared: Label = one(
        &pool,
        labels::update_by_pk(
            &label.id,
            &LabelPatch {
                status: Some(None),
                statuses: Some(None),
                ..LabelPatch::default()
            },
        )
        .unwrap()
        .unwrap(),
    )
    .await;
    assert_eq!((cleared.status, cleared.statuses), (None, None));

    // Whole rows written back exactly (what a restore does).
    let (sql, values) = labels::delete_by_pk(&label.id).build_sqlx(PostgresQueryBuilder);
    sqlx::query_with(AssertSqlSafe(sql), values)
        .execute(&pool)
        .await
        .unwrap();
    let restored: Label = one(&pool, labels::insert_rows([&label]).unwrap().unwrap()).await;
    assert_eq!(restored, label);
}
