//! Recovery: at start, every job a stopped runner left in `applying`,
//! `verifying` or `rolling-back` is rolled back from its durable journal,
//! or takes the outcome the audit log already holds for it.

use super::ControlError;
use super::admission::Checks;
use super::worker::{Step, Worker};
use crate::audit::outcome::last_run_outcome;
use crate::audit::{ControlAction, Ending, Phase};
use crate::job::JobState;
use crate::run::{Cause, CauseKind, Outcome, RunError};
use crate::store::{Changes, JobRecord};
use serde_json::json;
use std::time::SystemTime;

impl Worker {
    /// Rolls back every job a stopped runner left in `applying`,
    /// `verifying` or `rolling-back`. A job whose outcome already reached
    /// the audit log (the runner stopped after recording it) takes that
    /// outcome instead. A job that cannot be rolled back is recorded as
    /// `rollback-failed` (loudly) and recovery goes on with the next.
    pub async fn recover(&self) -> Result<Vec<Step>, ControlError> {
        let acting = [JobState::Applying, JobState::Verifying, JobState::RollingBack];
        let mut steps = Vec::new();
        for job in self.control.store.all_in(&acting, u32::MAX)? {
            steps.push(self.recover_job(&job).await?);
        }
        Ok(steps)
    }

    async fn recover_job(&self, job: &JobRecord) -> Result<Step, ControlError> {
        tracing::warn!(job = %job.id, state = %job.state, "recovering a job a stopped runner left behind");
        self.control.store.revoke_leases(&job.id)?;
        let audit_path = self.runner.audit().path();
        if let Some(ending) = last_run_outcome(audit_path, &job.id)? {
            return self.take_recorded(job, ending);
        }
        let phase = match job.state {
            JobState::Applying => Phase::Apply,
            JobState::Verifying => Phase::Verify,
            _ => Phase::Rollback,
        };
        let cause = Cause::new(
            phase,
            CauseKind::Interrupted,
            format!("the runner stopped while the job was {}; rolled back at the next start", job.state),
        );
        self.audit(&job.id, ControlAction::Recovering, json!({ "found": job.state }))?;
        // The job and its artifact are checked as they were when apply
        // started (a key that expired since still counts, a revoked one
        // never does): code no longer trusted is not run, even to roll back.
        let applying_at = self.applying_at(job)?;
        let checks = Checks::to_roll_back(&self.control.config);
        let failed = |cause: Cause, why: String| Outcome::RollbackFailed {
            cause,
            rollback_cause: Cause::new(Phase::Rollback, CauseKind::Instantiate, why),
        };
        let outcome = match self.control.admit_stored(&self.catalog, job, applying_at, checks) {
            Ok((job, admitted)) => {
                let context = Worker::context(&job);
                let playbook = admitted.playbook.playbook();
                match self.runner.recover(playbook, &admitted.grant, &context, cause.clone(), &self.lifecycle).await {
                    Ok(report) => return self.finished(&job.id, &report.outcome),
                    Err(e @ (RunError::Audit(_) | RunError::Journal(_))) => return Err(e.into()),
                    Err(e) => failed(cause, format!("cannot start the rollback: {e}")),
                }
            }
            Err(e) => failed(cause, format!("cannot load the job and its playbook to roll back: {e}")),
        };
        // The job is marked as rolling back first, so that it is not taken
        // for one that never started if the next step fails.
        if job.state != JobState::RollingBack {
            let reason = "rollback starts";
            self.control.store.transition(
                &job.id,
                &[job.state],
                JobState::RollingBack,
                reason,
                &Changes::default(),
                &[],
            )?;
        }
        self.runner.record_outcome(&job.id, &outcome).await?;
        self.finished(&job.id, &outcome)
    }

    /// The runner stopped after the audit log recorded how the job ended:
    /// the store takes that outcome.
    fn take_recorded(&self, job: &JobRecord, ending: Ending) -> Result<Step, ControlError> {
        self.audit(&job.id, ControlAction::Recovered, json!({ "found": job.state, "outcome_in_audit_log": ending }))?;
        let to = match ending {
            Ending::Succeeded => JobState::Succeeded,
            Ending::RolledBack => JobState::RolledBack,
            Ending::RollbackFailed | Ending::Planned | Ending::PlanFailed => JobState::RollbackFailed,
        };
        let reason = format!("the runner stopped after recording the outcome {ending}");
        let value = json!({ "outcome": ending, "recovered": true });
        let changes = Changes { outcome: Some(&value), ..Changes::default() };
        self.control.store.transition(&job.id, &[job.state], to, &reason, &changes, &[])?;
        // A runner stopped between the outcome and the journal's removal.
        if matches!(ending, Ending::Succeeded | Ending::RolledBack) {
            self.runner.remove_journal_of(&job.id);
        }
        Ok(Step { job: job.id.clone(), state: to, note: reason })
    }

    /// When the job last started applying, as its history says.
    fn applying_at(&self, job: &JobRecord) -> Result<SystemTime, ControlError> {
        Ok(self
            .control
            .store
            .history(&job.id)?
            .iter()
            .rev()
            .find(|t| t.to == JobState::Applying)
            .map(|t| t.at.system())
            .unwrap_or_else(SystemTime::now))
    }
}
