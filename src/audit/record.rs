//! What one audit record says: the events the runner writes to the chain.
//!
//! # Security
//! Records hold arguments and outcomes, never file contents (only their
//! size and SHA-256) and never credential values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A phase of a job's life, as named in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Plan,
    Apply,
    Verify,
    Rollback,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Apply => "apply",
            Phase::Verify => "verify",
            Phase::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a job record says the runner does with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `plan` only, read-only.
    Plan,
    /// `apply`, `verify`, and `rollback` if either fails.
    Run,
    /// `rollback` of a job a stopped runner left behind.
    Recover,
}

/// How a job ended, as its outcome record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    Planned,
    PlanFailed,
    Succeeded,
    RolledBack,
    RollbackFailed,
}

impl Ending {
    pub fn name(self) -> &'static str {
        match self {
            Ending::Planned => "planned",
            Ending::PlanFailed => "plan-failed",
            Ending::Succeeded => "succeeded",
            Ending::RolledBack => "rolled-back",
            Ending::RollbackFailed => "rollback-failed",
        }
    }

    /// Whether this ends a `run` or `recover` (not a `plan`).
    pub fn ends_a_run(self) -> bool {
        matches!(self, Ending::Succeeded | Ending::RolledBack | Ending::RollbackFailed)
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A step of the control plane, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlAction {
    /// A job was submitted and stored.
    Submitted,
    /// A submission was refused before it was stored.
    SubmissionRefused,
    /// The policy decided on a job.
    Decision,
    /// An approver approved a job's plan.
    Approve,
    /// An approver rejected a job.
    Reject,
    /// The job moved from one state to another.
    State,
    /// The approvals that counted just before apply.
    Approvals,
    /// Recovery starts rolling back a job a stopped runner left.
    Recovering,
    /// Recovery took the outcome the audit log already held.
    Recovered,
}

impl ControlAction {
    pub const ALL: [ControlAction; 9] = [
        ControlAction::Submitted,
        ControlAction::SubmissionRefused,
        ControlAction::Decision,
        ControlAction::Approve,
        ControlAction::Reject,
        ControlAction::State,
        ControlAction::Approvals,
        ControlAction::Recovering,
        ControlAction::Recovered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ControlAction::Submitted => "submitted",
            ControlAction::SubmissionRefused => "submission-refused",
            ControlAction::Decision => "decision",
            ControlAction::Approve => "approve",
            ControlAction::Reject => "reject",
            ControlAction::State => "state",
            ControlAction::Approvals => "approvals",
            ControlAction::Recovering => "recovering",
            ControlAction::Recovered => "recovered",
        }
    }
}

impl std::fmt::Display for ControlAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ControlAction {
    type Err = String;

    fn from_str(text: &str) -> Result<ControlAction, String> {
        ControlAction::ALL
            .into_iter()
            .find(|a| a.name() == text)
            .ok_or_else(|| format!("{text:?} is not a control step"))
    }
}

/// How a host call ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallOutcome {
    Ok,
    Denied(String),
    NotFound,
    Invalid(String),
    Failed(String),
}

impl CallOutcome {
    /// The outcome's kind, as the metrics name it.
    pub fn name(&self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Denied(_) => "denied",
            CallOutcome::NotFound => "not-found",
            CallOutcome::Invalid(_) => "invalid",
            CallOutcome::Failed(_) => "failed",
        }
    }

    pub fn is_denied(&self) -> bool {
        matches!(self, CallOutcome::Denied(_))
    }
}

/// One event in the audit log. The envelope (`seq`, `prev`, `ts`, `job`,
/// `hash`) is added by the writer.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event<'a> {
    /// A runner process opened the log.
    Opened {
        pid: u32,
        version: &'a str,
        /// Bytes of a torn, never-acknowledged record removed from the end
        /// of the log when it was opened (a crash in the middle of a write).
        #[serde(skip_serializing_if = "Option::is_none")]
        dropped_torn_bytes: Option<u64>,
        /// The log carried no tags (written without a runner key, or by an
        /// older salve): opened with a key, it was taken as it is and
        /// checkpointed.
        #[serde(skip_serializing_if = "Option::is_none")]
        adopted_untagged: Option<bool>,
    },
    /// A job starts: what runs, where, under which grant.
    Job {
        mode: Mode,
        playbook: &'a str,
        digest: &'a str,
        environment: &'a str,
        target: &'a str,
        parameters: &'a [(String, String)],
        grant: &'a Value,
        /// Key ids of the artifact's signers; empty when unsigned.
        signers: &'a [String],
    },
    /// A job was refused before anything ran (a bad grant, a component that
    /// failed its load-time checks).
    Refused { playbook: &'a str, reason: &'a str },
    /// A phase starts or ends.
    Phase {
        phase: Phase,
        status: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_us: Option<u64>,
    },
    /// A mutating host call is about to take effect. Durable before it does.
    Intent { interface: &'a str, function: &'a str, args: &'a Value },
    /// A host call ended (or was refused before it started).
    Call {
        interface: &'a str,
        function: &'a str,
        args: &'a Value,
        outcome: &'a CallOutcome,
        #[serde(skip_serializing_if = "Value::is_null")]
        result: &'a Value,
        duration_us: u64,
        /// The `seq` of this call's intent record, for mutating calls.
        #[serde(skip_serializing_if = "Option::is_none")]
        intent: Option<u64>,
    },
    /// A rollback journal entry was recorded (durably).
    Journal { index: u32, bytes: u64, sha256: &'a str },
    /// The playbook logged a message.
    Log {
        phase: Phase,
        level: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// What the playbook wrote to stdout or stderr in a phase (a bounded
    /// prefix; `bytes` is the total).
    Output { phase: Phase, stream: &'a str, bytes: u64, truncated: bool, text: &'a str },
    /// The runner key's signature over the job id and the hash of the record
    /// before this one (see [`crate::audit::seal_message`]).
    Seal { key_id: &'a str, signature: &'a str },
    /// A signed artifact older than one that already ran was allowed to run
    /// by an explicit override.
    DowngradeAllowed { playbook: &'a str, highest: &'a str },
    /// An unsigned component ran, by an explicit, dangerous override.
    DangerousUnsigned { playbook: &'a str, digest: &'a str },
    /// A credential was leased to the job (its value is never recorded).
    Lease {
        lease_id: &'a str,
        credential: &'a str,
        lease_kind: crate::credentials::LeaseKind,
        expires: Option<&'a str>,
    },
    /// The job's leases were revoked at its end.
    LeasesRevoked { lease_ids: &'a [String] },
    /// A step of the control plane: a job submitted, a policy decision, an
    /// approval or rejection, a change of the job's state, a recovery.
    /// Steps taken by other processes (`salve submit`, `salve approve`)
    /// are relayed by the runner, with the time they were taken (`at`).
    Control {
        action: ControlAction,
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<&'a str>,
        detail: &'a Value,
    },
    /// How the job ended.
    Outcome {
        outcome: Ending,
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rollback_cause: Option<&'a str>,
    },
}
