//! Where a job is in its life, and which moves its life allows: the job
//! state machine. Every store checks a move against [`JobState::may_move_to`]
//! inside the transaction that makes it, so no backend (and no caller) can
//! take a job along a path this table does not draw.
//!
//! ```text
//! submitted ─▶ waiting-approval ─▶ approved ─▶ applying ─▶ verifying ─▶ succeeded
//!     │               │                │           │            └──────▶ rolling-back ─▶ rolled-back
//!     └───────────────┴────────────────┴─▶ denied | rejected | expired      └──────▶ rollback-failed
//!                                          | plan-failed | failed
//! ```

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Verified and decided; waiting for the runner to plan it.
    Submitted,
    /// Planned; needs approvals it does not have yet.
    WaitingApproval,
    /// Allowed, or approved: the runner will apply it.
    Approved,
    Applying,
    Verifying,
    RollingBack,
    Succeeded,
    RolledBack,
    /// Rollback failed: a person is needed.
    RollbackFailed,
    /// The policy (or a budget) refused it.
    Denied,
    /// An approver rejected it.
    Rejected,
    /// It expired before it could run.
    Expired,
    /// Its plan failed; nothing was changed.
    PlanFailed,
    /// The runner could not start it (its playbook or grant no longer
    /// loads); nothing was changed.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 14] = [
        JobState::Submitted,
        JobState::WaitingApproval,
        JobState::Approved,
        JobState::Applying,
        JobState::Verifying,
        JobState::RollingBack,
        JobState::Succeeded,
        JobState::RolledBack,
        JobState::RollbackFailed,
        JobState::Denied,
        JobState::Rejected,
        JobState::Expired,
        JobState::PlanFailed,
        JobState::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::WaitingApproval => "waiting-approval",
            JobState::Approved => "approved",
            JobState::Applying => "applying",
            JobState::Verifying => "verifying",
            JobState::RollingBack => "rolling-back",
            JobState::Succeeded => "succeeded",
            JobState::RolledBack => "rolled-back",
            JobState::RollbackFailed => "rollback-failed",
            JobState::Denied => "denied",
            JobState::Rejected => "rejected",
            JobState::Expired => "expired",
            JobState::PlanFailed => "plan-failed",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job's life is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::RolledBack
                | JobState::RollbackFailed
                | JobState::Denied
                | JobState::Rejected
                | JobState::Expired
                | JobState::PlanFailed
                | JobState::Failed
        )
    }

    /// Whether the job's life allows a move from `self` to `to`. A final
    /// state allows none; a job may stay where it is only where a step can
    /// repeat (an approved job re-planned, a rollback started again).
    pub fn may_move_to(self, to: JobState) -> bool {
        use JobState::*;
        let allowed: &[JobState] = match self {
            Submitted => &[WaitingApproval, Approved, Denied, Rejected, Expired, PlanFailed, Failed],
            WaitingApproval => &[Approved, Rejected, Expired, Denied, PlanFailed, Failed],
            Approved => &[WaitingApproval, Approved, Applying, Denied, Rejected, Expired, PlanFailed, Failed],
            Applying => &[Verifying, RollingBack, Succeeded, RolledBack, RollbackFailed, Failed],
            Verifying => &[RollingBack, Succeeded, RolledBack, RollbackFailed],
            RollingBack => &[RollingBack, Succeeded, RolledBack, RollbackFailed],
            Succeeded | RolledBack | RollbackFailed | Denied | Rejected | Expired | PlanFailed | Failed => &[],
        };
        allowed.contains(&to)
    }

    /// Whether the job may be changing its target right now (or was, when
    /// a runner stopped).
    pub fn is_acting(self) -> bool {
        matches!(self, JobState::Applying | JobState::Verifying | JobState::RollingBack)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(text: &str) -> Result<JobState, String> {
        JobState::ALL.into_iter().find(|s| s.name() == text).ok_or_else(|| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.name()).collect();
            format!("{text:?} is not a job state; use one of {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::JobState;

    #[test]
    fn a_final_state_allows_no_move_and_every_other_state_has_a_way_out() {
        for from in JobState::ALL {
            let moves = JobState::ALL.iter().filter(|to| from.may_move_to(**to)).count();
            assert_eq!(from.is_final(), moves == 0, "{from}");
        }
    }

    #[test]
    fn nothing_reaches_apply_without_approval_and_nothing_leaves_it_but_through_an_outcome() {
        let into_applying: Vec<JobState> =
            JobState::ALL.into_iter().filter(|s| s.may_move_to(JobState::Applying)).collect();
        assert_eq!(into_applying, [JobState::Approved]);
        for to in [JobState::Submitted, JobState::WaitingApproval, JobState::Approved, JobState::Denied] {
            assert!(!JobState::Applying.may_move_to(to), "applying -> {to}");
        }
    }

    #[test]
    fn states_read_back_from_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.name().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
