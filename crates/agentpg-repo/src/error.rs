//! The one error type of agentpg-repo.

use std::fmt;

use agentpg_schema::sessions;

/// What a [`Error::NotFound`] could not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entity {
    /// A session (missing, or owned by another tenant).
    Session,
    /// The parent session named when creating a session.
    ParentSession,
    /// A message.
    Message,
    /// A compaction event.
    CompactionEvent,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Session => "session",
            Entity::ParentSession => "parent session",
            Entity::Message => "message",
            Entity::CompactionEvent => "compaction event",
        })
    }
}

/// Everything that can go wrong in agentpg-repo. Database errors are classified by SQLSTATE and
/// constraint name, never by message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The addressed row does not exist, or belongs to another tenant (the two are
    /// indistinguishable by design).
    #[error("{0} not found")]
    NotFound(Entity),
    /// The write conflicts with existing data or state: a unique key is taken, or the operation
    /// is not allowed in the current state (e.g. reverting a compaction that is not the latest).
    #[error("conflict: {reason}")]
    Conflict {
        /// What conflicts.
        reason: String,
        /// The database error behind it, if any.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The input was refused before or by the database; nothing was written.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong with the input.
        reason: String,
        /// The database error behind it, if any.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// A foreign key was violated.
    #[error("foreign key violation ({constraint})")]
    ForeignKey {
        /// The constraint's name; where the database does not report it (Citus relays a
        /// worker's error without it), what the database's message says, which names the
        /// constraint of the shard.
        constraint: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The database refused the statement for the role it runs as (SQLSTATE 42501): under
    /// row-level security ([`rls`](crate::rls)), a row written for a tenant other than the
    /// connection's, or a table the role is not granted.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// What was refused.
        reason: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The database cannot run the statement in this setup (SQLSTATE 0A000, feature not
    /// supported). On Citus: an insert under row-level security (Citus writes rows to its
    /// shards with `COPY`, which PostgreSQL refuses under row-level security; see SCALING.md),
    /// or SQL of your own that Citus cannot distribute. Nothing was written.
    #[error("not supported here: {reason}")]
    Unsupported {
        /// What the database said, with its hint.
        reason: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The database lacks a table, column or function agentpg uses (SQLSTATE 42P01, 42703 or
    /// 42883): its schema is missing or older than this crate. Run the migrations
    /// ([`migrate`](crate::migrate)). Nothing was written.
    #[error("the database schema is missing or out of date ({reason}): run the migrations (agentpg_repo::migrate)")]
    Schema {
        /// What the database lacks, as it said.
        reason: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Any other database or connection error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

/// `column c` for the column a NOT NULL violation names; where the database does not say
/// (Citus relays a worker's error without it), what its message says.
pub(crate) fn column_of(db: &dyn sqlx::error::DatabaseError) -> String {
    match db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.column())
    {
        Some(column) => format!("column {column}"),
        None => format!("the column ({})", db.message()),
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn conflict(reason: impl Into<String>) -> Self {
        Error::Conflict {
            reason: reason.into(),
            source: None,
        }
    }

    /// True if retrying the whole operation may succeed (serialization failure, deadlock, lost
    /// connection, a server or a Citus worker shutting down or restarting, pool timeout).
    ///
    /// On Citus, an intermediate result lost while a statement ran (SQLSTATE `CIINF`: a part of
    /// it failed on a worker, or a shard moved) fails the statement whole and is retryable. A
    /// worker that shuts down in the middle of a statement ends the coordinator's
    /// connection to it, and the coordinator reports the worker's last words (its own
    /// connection's end, "terminating connection due to administrator command") as an internal
    /// error, SQLSTATE `XX000`, from the routines that relay a worker's errors or mark its
    /// connection failed: such an error is retryable too (a genuine error of the worker keeps
    /// its own SQLSTATE when relayed).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(e) => match e {
                sqlx::Error::Database(db) => {
                    let relayed_by_citus = db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .and_then(|pg| pg.routine())
                        .is_some_and(|r| {
                            matches!(
                                r,
                                "ReportCopyError"
                                    | "ReportResultError"
                                    | "ReportConnectionError"
                                    | "MarkRemoteTransactionFailed"
                            )
                        });
                    // CIINF: Citus lost an intermediate result of the statement (a worker's
                    // part failed, or a shard moved, while it ran); the statement failed whole.
                    matches!(db.code().as_deref(), Some("40001" | "40P01" | "CIINF"))
                        || db
                            .code()
                            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
                        || (db.code().as_deref() == Some("XX000") && relayed_by_citus)
                }
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                _ => false,
            },
            _ => false,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let Some(db) = e.as_database_error() else {
            return Error::Database(e);
        };
        let constraint = db.constraint().map(str::to_owned);
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        // What the database said, for the reason when it names no constraint: a distributed
        // database (Citus) relays a worker's error without its constraint field, and its message
        // names the constraint of the shard (the constraint's name and the shard's number).
        let said = db.message().to_owned();
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => Error::Conflict {
                reason: match &constraint {
                    Some(c) => format!("unique constraint {c} violated"),
                    None => said,
                },
                source: Some(e),
            },
            sqlx::error::ErrorKind::ForeignKeyViolation => match constraint.as_deref() {
                // The parent must exist in the same tenant: missing and foreign look alike.
                Some(sessions::constraint::PARENT_SESSION_FKEY) => {
                    Error::NotFound(Entity::ParentSession)
                }
                _ => Error::ForeignKey {
                    constraint: constraint.unwrap_or(said),
                    source: e,
                },
            },
            sqlx::error::ErrorKind::NotNullViolation => {
                let column = column_of(db);
                Error::InvalidInput {
                    reason: format!("{column} must not be NULL"),
                    source: Some(e),
                }
            }
            sqlx::error::ErrorKind::CheckViolation => Error::InvalidInput {
                reason: match &constraint {
                    Some(c) => format!("constraint {c} violated"),
                    None => said,
                },
                source: Some(e),
            },
            _ if code == "42501" => Error::Forbidden {
                reason: db.message().to_owned(),
                source: e,
            },
            _ if code == "0A000" => {
                let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
                let reason = match pg.and_then(|pg| pg.hint()) {
                    Some(hint) => format!("{said} ({hint})"),
                    None => said,
                };
                Error::Unsupported { reason, source: e }
            }
            _ if matches!(code.as_str(), "42P01" | "42703" | "42883") => Error::Schema {
                reason: said,
                source: e,
            },
            // Class 54: a program limit (an index entry or a value too large for PostgreSQL).
            _ if code.starts_with("54") => Error::InvalidInput {
                reason: format!("the value exceeds a PostgreSQL limit (SQLSTATE {code})"),
                source: Some(e),
            },
            // Class 22: data exceptions (bad JSON, NUL in text, out-of-range numbers, …).
            _ if code.starts_with("22") => Error::InvalidInput {
                reason: format!("the database refused the data (SQLSTATE {code}: {said})"),
                source: Some(e),
            },
            _ => Error::Database(e),
        }
    }
}
