//! What an approver or an auditor reviews about one job: the job as its
//! agent signed it, its plan, votes, history and leases, and everything
//! that does not verify, said rather than hidden.

use super::plan::plan_hash;
use super::{ControlError, ControlPlane};
use crate::store::{JobRecord, StoredApproval, StoredLease, StoredPlan, Transition};
use serde::Serialize;

/// One job, reviewed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Review {
    /// As its agent signed it, when that verifies; else as the store holds it.
    pub job: JobRecord,
    pub plan: Option<StoredPlan>,
    pub approvals: Vec<StoredApproval>,
    pub history: Vec<Transition>,
    pub leases: Vec<StoredLease>,
    /// Whether everything below verified.
    pub verified: bool,
    /// What does not verify: a job that is not what its agent signed, a
    /// stored plan that does not hash to its name. Do not approve such a
    /// job.
    pub problems: Vec<String>,
}

impl ControlPlane {
    /// Job `id` for review. What approvers review is what the agent
    /// signed (checked as of its submission), not the store's copy.
    pub fn review(&self, id: &str) -> Result<Review, ControlError> {
        let stored = self.job(id)?;
        let mut problems = Vec::new();
        let job = match self.signed_job(&stored, stored.submitted_at.system()) {
            Ok(job) => job,
            Err(e) => {
                problems.push(format!("the job does not verify against what its agent signed: {e}"));
                stored
            }
        };
        let plan = match &job.plan_hash {
            Some(hash) => self.store.plan(id, hash)?,
            None => None,
        };
        if let Some(plan) = &plan
            && plan_hash(&plan.changes) != plan.hash
        {
            problems.push(format!("the stored plan's changes do not hash to {}: the store was changed", plan.hash));
        }
        Ok(Review {
            approvals: self.store.approvals(id)?,
            history: self.store.history(id)?,
            leases: self.store.leases(id)?,
            verified: problems.is_empty(),
            job,
            plan,
            problems,
        })
    }
}
