//! What the soak's clients know: the counts of what they attempted, and the ledger of what the
//! database acknowledged, which the final check holds the database to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use agentpg_repo::Error;
use uuid::Uuid;

/// Attempted / committed / failed counts of one kind of operation.
#[derive(Default)]
pub(crate) struct Counts {
    attempted: AtomicU64,
    committed: AtomicU64,
    failed_clean: AtomicU64,
    /// Of the clean failures, those `Error::is_retryable` accepts.
    retryable: AtomicU64,
    failed_unexpected: AtomicU64,
}

impl Counts {
    /// Counts `result`: an error is clean when it is retryable or says the state moved on
    /// (conflicts between compactions and reverts, a plan made stale, a session retention
    /// deleted).
    pub(crate) fn record<T>(&self, result: &Result<T, Error>) {
        self.attempted.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => self.committed.fetch_add(1, Ordering::Relaxed),
            Err(e)
                if e.is_retryable()
                    || matches!(
                        e,
                        Error::Conflict { .. } | Error::InvalidInput { .. } | Error::NotFound(_)
                    ) =>
            {
                if e.is_retryable() {
                    self.retryable.fetch_add(1, Ordering::Relaxed);
                }
                self.failed_clean.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                eprintln!("unexpected error: {e:?}");
                self.failed_unexpected.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    pub(crate) fn unexpected(&self) -> u64 {
        self.failed_unexpected.load(Ordering::Relaxed)
    }

    pub(crate) fn line(&self, name: &str) -> String {
        format!(
            "{name:<10} attempted {:>7}  committed {:>7}  failed cleanly {:>6} (retryable {:>5})  failed otherwise {:>3}",
            self.attempted.load(Ordering::Relaxed),
            self.committed.load(Ordering::Relaxed),
            self.failed_clean.load(Ordering::Relaxed),
            self.retryable.load(Ordering::Relaxed),
            self.failed_unexpected.load(Ordering::Relaxed),
        )
    }
}

/// Every count of the run.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) appends: Counts,
    pub(crate) compactions: Counts,
    pub(crate) reverts: Counts,
    pub(crate) forks: Counts,
    pub(crate) preserves: Counts,
    pub(crate) retention: Counts,
    /// Appends sent again after an unknown outcome.
    pub(crate) retries: AtomicU64,
    /// Batches answered after at least one retry.
    pub(crate) retried_then_acked: AtomicU64,
    /// Acknowledged batches sent again later (after compactions may have removed them).
    pub(crate) late_retries: AtomicU64,
    /// Of those, messages that came back archived.
    pub(crate) late_retries_archived: AtomicU64,
    /// Batches sent twice at once.
    pub(crate) concurrent_duplicates: AtomicU64,
    /// Tool calls appended without their result, answered in a later batch.
    pub(crate) pending_calls: AtomicU64,
    /// Attempts of a tenant's connection to reach another tenant.
    pub(crate) attacks: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// Violations the clients saw themselves (a retry answered otherwise than the first
    /// call, a duplicate that conflicted, another tenant's rows seen, a wrong answer while a
    /// worker was down).
    pub(crate) client_violations: AtomicU64,
}

impl Stats {
    pub(crate) fn violation(&self, what: &str) {
        eprintln!("violation: {what}");
        self.client_violations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unexpected(&self) -> u64 {
        [
            &self.appends,
            &self.compactions,
            &self.reverts,
            &self.forks,
            &self.preserves,
            &self.retention,
        ]
        .iter()
        .map(|c| c.unexpected())
        .sum()
    }
}

/// The client-side record of acknowledged writes.
#[derive(Default)]
pub(crate) struct Ledger {
    /// Every acknowledged message id, with its tenant.
    pub(crate) appended: HashMap<Uuid, String>,
    /// Messages acknowledged preserved (appended so, or marked since), with their tenant (a
    /// summary the preserver marks is not among `appended`).
    pub(crate) preserved: HashMap<Uuid, String>,
    /// Acknowledged summaries: (event, summary message, tenant). A summary goes again when
    /// its compaction is reverted, so it must be present only while its event stands.
    pub(crate) summaries: Vec<(Uuid, Uuid, String)>,
}
