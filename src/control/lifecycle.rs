//! Keeps the job store's state of one job in step with the runner's
//! phases, so that a crash at any point leaves a state recovery acts on.

use crate::audit::Phase;
use crate::credentials::Lease;
use crate::job::JobState;
use crate::run::{Lifecycle, StateNotRecorded};
use crate::store::{Changes, JobStore, StoredLease};
use std::sync::Arc;

/// Told the job after each change of its state a phase makes (`salve
/// serve` wakes its event streams).
pub type OnMove = Arc<dyn Fn(&str) + Send + Sync>;

/// The [`Lifecycle`] of jobs the control plane runs.
#[derive(Clone)]
pub(super) struct StoreLifecycle {
    pub(super) store: Arc<dyn JobStore>,
    pub(super) on_move: Option<OnMove>,
}

impl StoreLifecycle {
    fn blocking<T>(&self, f: impl FnOnce(&dyn JobStore) -> T) -> T {
        blocking(|| f(&*self.store))
    }
}

/// Runs a call that may wait (a store write waits for its group's commit)
/// from async code without stalling the runtime: on a multi-threaded one,
/// the other tasks move to another thread meanwhile. A job's task that
/// waited on a runtime thread would hold up the requests and the other
/// jobs on it, and keep the writes of the jobs from sharing commits.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) { tokio::task::block_in_place(f) } else { f() }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl Lifecycle for StoreLifecycle {
    fn entering(&self, job: &str, phase: Phase) -> Result<(), StateNotRecorded> {
        let (expected, to): (&[JobState], JobState) = match phase {
            Phase::Apply => (&[JobState::Approved], JobState::Applying),
            Phase::Verify => (&[JobState::Applying], JobState::Verifying),
            Phase::Rollback => {
                (&[JobState::Applying, JobState::Verifying, JobState::RollingBack], JobState::RollingBack)
            }
            Phase::Plan => return Ok(()),
        };
        let reason = format!("{phase} starts");
        self.blocking(|store| store.transition(job, expected, to, &reason, &Changes::default(), &[]))
            .map_err(|e| StateNotRecorded(Box::new(e)))?;
        if let Some(on_move) = &self.on_move {
            on_move(job);
        }
        Ok(())
    }

    fn leased(&self, job: &str, lease: &Lease) {
        let stored = StoredLease {
            id: lease.id.clone(),
            credential: lease.name.clone(),
            kind: serde_json::to_value(lease.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            expires_at: lease.expires.map(rfc3339),
            leased_at: crate::time::Timestamp::now(),
            revoked_at: None,
        };
        if let Err(e) = self.blocking(|store| store.lease(job, &stored)) {
            tracing::warn!(job, "lease {} could not be recorded in the job store: {e}", lease.id);
        }
    }

    fn revoked(&self, job: &str, _lease_ids: &[String]) {
        if let Err(e) = self.blocking(|store| store.revoke_leases(job)) {
            tracing::warn!(job, "the revocation of the job's leases could not be recorded: {e}");
        }
    }
}
