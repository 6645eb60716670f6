//! Votes: approvals and rejections, signed by approver keys over the job
//! and the plan they reviewed, checked and counted inside one store
//! transaction.

use super::facts::why;
use super::{ControlError, ControlPlane};
use crate::approval::{Approval, Subject, Vote};
use crate::audit::ControlAction;
use crate::job::JobState;
use crate::keys::PrivateKey;
use crate::policy::Verdict;
use crate::store::{JobRecord, OutboxEvent, StoredApproval, VoteCheck};
use crate::time::Timestamp;
use serde_json::json;
use std::time::{Duration, SystemTime};

/// A vote as an approver casts it.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    pub vote: Vote,
    pub reason: &'a str,
    /// How long the vote counts.
    pub lifetime: Duration,
    /// The plan hash the approver reviewed, if they name it: a vote for a
    /// plan that has changed since is refused.
    pub reviewed: Option<&'a str>,
}

/// The plan hash a rejection of a job not yet planned is bound to.
pub const NO_PLAN: &str = "none";

/// What an approval of `job`'s plan `plan` is bound to.
pub(super) fn subject<'a>(job: &'a JobRecord, plan: &'a str, group: Option<&'a str>) -> Subject<'a> {
    Subject {
        job_id: &job.id,
        job_hash: &job.job_hash,
        plan_hash: plan,
        submitter: &job.agent,
        environment: &job.environment,
        group,
    }
}

/// The plan hash a vote on job `id`, whose plan is now `current`, is bound
/// to; refused when the voter reviewed another one.
pub fn voted_plan(id: &str, current: Option<&str>, vote: Vote, reviewed: Option<&str>) -> Result<String, ControlError> {
    let plan = match (current, vote) {
        (Some(plan), _) => plan.to_string(),
        // A job may be rejected before it has a plan.
        (None, Vote::Reject) => NO_PLAN.to_string(),
        (None, Vote::Approve) => return Err(ControlError::NotPlanned { id: id.into() }),
    };
    if let Some(reviewed) = reviewed
        && reviewed != plan
    {
        return Err(ControlError::PlanMoved { id: id.into(), reviewed: reviewed.into(), current: plan });
    }
    Ok(plan)
}

impl ControlPlane {
    /// Signs a vote on job `id` with `key` and records it.
    pub fn vote(
        &self,
        id: &str,
        key: &PrivateKey,
        ballot: &Ballot<'_>,
        now: SystemTime,
    ) -> Result<JobRecord, ControlError> {
        let Ballot { vote, reason, lifetime, reviewed } = *ballot;
        let job = self.job(id)?;
        let plan = voted_plan(id, job.plan_hash.as_deref(), vote, reviewed)?;
        let approval = Approval::sign(&subject(&job, &plan, None), vote, reason, lifetime, key, now)?;
        self.record_vote(id, &approval, now)
    }

    /// Records a vote on job `id` signed elsewhere, after every check: the
    /// job is waiting for it, the key may vote (an approver in the group
    /// the decision asks for, not the submitter, not twice), and the vote
    /// is bound to this job and its current plan. Enough approvals move the
    /// job to `approved`; a rejection moves it to `rejected`.
    pub fn record_vote(&self, id: &str, approval: &Approval, now: SystemTime) -> Result<JobRecord, ControlError> {
        let action = match approval.vote {
            Vote::Approve => ControlAction::Approve,
            Vote::Reject => ControlAction::Reject,
        };
        let event = OutboxEvent::new(id, action, json!({ "approval": approval }));
        let mut refusal = None;
        let recorded = self.store.vote(
            id,
            approval,
            &mut |job, current| match self.check_vote(job, current, approval, now) {
                Ok(next) => VoteCheck::Record(next),
                Err(e) => {
                    refusal = Some(e);
                    VoteCheck::Refuse
                }
            },
            &[event],
        )?;
        match (recorded, refusal) {
            (Some(job), _) => Ok(job),
            (None, Some(refusal)) => Err(refusal),
            (None, None) => unreachable!("the store refuses a vote only when its check does"),
        }
    }

    /// Whether `approval` may be recorded on `job` given the votes that
    /// count now, and which state the job moves to.
    fn check_vote(
        &self,
        job: &JobRecord,
        current: &[StoredApproval],
        approval: &Approval,
        now: SystemTime,
    ) -> Result<Option<(JobState, String)>, ControlError> {
        let open = match approval.vote {
            Vote::Approve => &[JobState::WaitingApproval][..],
            Vote::Reject => &[JobState::Submitted, JobState::WaitingApproval, JobState::Approved][..],
        };
        if !open.contains(&job.state) {
            let names: Vec<&str> = open.iter().map(|s| s.name()).collect();
            return Err(ControlError::WrongState {
                id: job.id.clone(),
                state: job.state,
                what: format!("only a job that is {} can be {}d", names.join(" or "), approval.vote.name()),
            });
        }
        if job.expires_at.reached(Timestamp::from(now)) {
            return Err(ControlError::WrongState {
                id: job.id.clone(),
                state: job.state,
                what: "it has expired and takes no more votes; the agent must submit it again".into(),
            });
        }
        let plan = match (job.plan_hash.as_deref(), approval.vote) {
            (Some(plan), _) => plan,
            (None, Vote::Reject) => NO_PLAN,
            (None, Vote::Approve) => return Err(ControlError::NotPlanned { id: job.id.clone() }),
        };
        let (needed, group) = match job.decision.as_ref().map(|d| &d.verdict) {
            Some(Verdict::NeedsApprovals { approvals, group }) => (*approvals, Some(group.as_str())),
            _ if approval.vote == Vote::Reject => (0, None),
            _ => {
                return Err(ControlError::NeedsNoApproval {
                    id: job.id.clone(),
                    policies: job.decision.as_ref().map(why).unwrap_or_default(),
                });
            }
        };
        // Votes that no longer count (expired, or by a key since revoked)
        // do not stop their approver from voting again.
        let counted = self.counting(job, current.iter().map(|a| &a.approval), group, now);
        // An approver may withdraw by rejecting; a rejection ends the job,
        // so no key can reject twice.
        let earlier: Vec<&str> = match approval.vote {
            Vote::Approve => counted.iter().map(|a| a.key_id.as_str()).collect(),
            Vote::Reject => Vec::new(),
        };
        approval.check(&subject(job, plan, group), &self.trust, &earlier, now)?;
        Ok(match approval.vote {
            Vote::Reject => {
                Some((JobState::Rejected, format!("rejected by approver key {}: {}", approval.key_id, approval.reason)))
            }
            Vote::Approve => {
                let valid = 1 + counted.len();
                (valid as u32 >= needed)
                    .then(|| (JobState::Approved, format!("approved by {valid} of {needed} approvers")))
            }
        })
    }

    /// The approvals among `votes` that count for `job` now: approve votes
    /// that pass every check, by distinct keys.
    pub(super) fn counting<'a>(
        &self,
        job: &JobRecord,
        votes: impl Iterator<Item = &'a Approval>,
        group: Option<&str>,
        now: SystemTime,
    ) -> Vec<&'a Approval> {
        let Some(plan) = job.plan_hash.as_deref() else { return Vec::new() };
        let subject = subject(job, plan, group);
        let mut counted: Vec<&Approval> = Vec::new();
        for vote in votes.filter(|v| v.vote == Vote::Approve) {
            let earlier: Vec<&str> = counted.iter().map(|a| a.key_id.as_str()).collect();
            if vote.check(&subject, &self.trust, &earlier, now).is_ok() {
                counted.push(vote);
            }
        }
        counted
    }
}
