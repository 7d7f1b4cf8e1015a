//! Helpers the operations share to build and run sea-query statements: the one place run-time
//! SQL text is asserted safe, inserts from (column, value) pairs, common table expressions,
//! set membership, sums and counts, and reading one session's rows.

use crate::error::{Entity, Error, Result};
use crate::sessions;
use sea_query::{
    Alias, Asterisk, CommonTableExpression, Expr, ExprTrait, Func, IntoColumnRef, IntoIden, Query,
};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::{Acquire, AssertSqlSafe, Postgres};
use uuid::Uuid;

/// A sea-query statement as sqlx takes it. The one place this crate asserts run-time SQL text
/// safe: the text is rendered by sea-query from generated identifiers, and every value is a bind
/// parameter in the returned [`SqlxValues`], never part of the text.
pub(crate) fn built(query: &impl SqlxBinder) -> (AssertSqlSafe<String>, SqlxValues) {
    let (sql, values) = query.build_sqlx(sea_query::PostgresQueryBuilder);
    (AssertSqlSafe(sql), values)
}

/// `INSERT INTO table (c…) VALUES (v…)` from (column, value) pairs: each value is written
/// beside its column, so the two cannot fall out of order.
pub(crate) fn insert_values<C: IntoIden>(
    table: impl IntoIden,
    pairs: impl IntoIterator<Item = (C, Expr)>,
) -> sea_query::InsertStatement {
    let (columns, values): (Vec<C>, Vec<Expr>) = pairs.into_iter().unzip();
    Query::insert()
        .into_table(table)
        .columns(columns)
        .values(values)
        .expect("unzipped pairs: as many values as columns")
        .to_owned()
}

/// A common table expression `name AS (query)`.
pub(crate) fn cte(
    name: &Alias,
    query: impl Into<sea_query::SubQueryStatement>,
) -> CommonTableExpression {
    CommonTableExpression::new()
        .table_name(name.clone())
        .query(query)
        .to_owned()
}

/// `column IN (SELECT unnest($ids))`: membership in a set the database hashes, whatever its
/// size (`column = ANY($ids)` compares against every element, row after row).
pub(crate) fn in_set(column: impl IntoColumnRef, ids: &[Uuid]) -> Expr {
    Expr::col(column).in_subquery(
        Query::select()
            .expr(Func::cust("unnest").arg(Expr::val(ids.to_vec())))
            .to_owned(),
    )
}

/// `(SELECT count(*) FROM name)`.
pub(crate) fn count_of(name: &Alias) -> Expr {
    Expr::from(
        Query::select()
            .expr(Expr::col(Asterisk).count())
            .from(name.clone())
            .to_owned(),
    )
}

/// `coalesce(sum(column), 0)::int8`: the total of a column, 0 over no rows.
pub(crate) fn total(column: impl IntoIden) -> Expr {
    Func::coalesce([
        Func::sum(Expr::col(column.into_iden())).into(),
        Expr::val(0),
    ])
    .cast_as(Alias::new("int8"))
}

/// `(SELECT coalesce(sum(column), 0)::int8 FROM name)`.
pub(crate) fn sum_of(column: impl IntoIden, name: &Alias) -> Expr {
    Expr::from(
        Query::select()
            .expr(total(column))
            .from(name.clone())
            .to_owned(),
    )
}

/// Runs `query` (rows of one session) on one connection and returns its rows; when there are
/// none, tells an empty result from a session that is not the tenant's ([`Error::NotFound`]).
/// Records the row count on the current span.
pub(crate) async fn rows_of_session<'c, T>(
    conn: impl Acquire<'c, Database = Postgres>,
    query: &impl SqlxBinder,
    tenant: &str,
    session_id: Uuid,
) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let (sql, values) = built(query);
    let mut conn = conn.acquire().await?;
    let rows: Vec<T> = sqlx::query_as_with(sql, values)
        .fetch_all(&mut *conn)
        .await?;
    tracing::Span::current().record("count", rows.len());
    if rows.is_empty()
        && sessions::get_session(&mut *conn, tenant, session_id)
            .await?
            .is_none()
    {
        return Err(Error::NotFound(Entity::Session));
    }
    Ok(rows)
}

/// `to_jsonb(table) - 'c' …`: a row of `table` as JSON, without the columns `leave_out` (its
/// search documents: derived from the row, and large).
pub(crate) fn row_json(table: impl IntoIden, leave_out: &[&str]) -> Expr {
    leave_out.iter().fold(
        Expr::from(Func::cust("to_jsonb").arg(Expr::col(table.into_iden()))),
        |row, column| row.sub(Expr::val(*column)),
    )
}

/// A row read as JSON (`to_jsonb`, or an array of them) as its Rust type; one that does not
/// decode is a [`sqlx::Error::ColumnDecode`] of column `column`, naming `what` it is.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    column: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::Database(sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: format!("a {what} row that does not decode: {e}").into(),
        })
    })
}
