//! What the control plane refuses, and whose fault each refusal is.

use crate::approval::ApprovalError;
use crate::artifact::ArtifactError;
use crate::artifact::floor::VersionError;
use crate::artifact::manifest::ParamError;
use crate::fault::{Classify, Fault};
use crate::grant::GrantError;
use crate::job::{JobError, JobState};
use crate::policy::PolicyError;
use crate::run::RunError;
use crate::store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the trust store is not valid: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error(
        "no policy at {path}: every job would be denied. `salve init` writes the default one (see `salve init --help`)"
    )]
    NoPolicy { path: PathBuf },
    #[error("playbook {wanted} is not installed here; install it first with `salve install ARTIFACT.wasm`")]
    NotInstalled { wanted: String },
    #[error("the job asks for {asked}, but digest {digest} is {name} {version}")]
    RefMismatch { asked: String, digest: String, name: String, version: String },
    #[error("installed artifact {path}: {reason}")]
    Installed { path: PathBuf, reason: String },
    #[error("playbook {name} is not trusted for environment {environment:?}: {source}")]
    Artifact { name: String, environment: String, source: Box<ArtifactError> },
    #[error("the job's grant: {0}")]
    Grant(#[from] GrantError),
    #[error("the job's parameters: {0}")]
    Parameters(#[from] ParamError),
    #[error("no job {id}; `salve jobs list` shows the jobs")]
    UnknownJob { id: String },
    #[error("job {id} is {state}; {what}")]
    WrongState { id: String, state: JobState, what: String },
    #[error("job {id} has not been planned yet; approve it once `salve jobs show {id}` shows its plan")]
    NotPlanned { id: String },
    #[error("job {id} needs no approval: the policy allows it ({policies})")]
    NeedsNoApproval { id: String, policies: String },
    #[error(
        "you reviewed plan {reviewed}, but job {id}'s plan is now {current}: review it again with `salve jobs show {id}`"
    )]
    PlanMoved { id: String, reviewed: String, current: String },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    AuditRead(#[from] crate::audit::outcome::ReadError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(
        "job {id}'s stored record does not match the job its agent signed ({what}): the job store was changed; the job is not run"
    )]
    Tampered { id: String, what: String },
    #[error("job {id} is left {state} for the next start: salve is stopping")]
    Stopping { id: String, state: JobState },
    #[error(
        "the worker's task for job {id} crashed ({reason}); salve stops, and its next start recovers the job. Please report this"
    )]
    Crashed { id: String, reason: String },
}

impl Classify for StoreError {
    fn fault(&self) -> Fault {
        match self {
            StoreError::Open { .. } | StoreError::Sqlite(_) | StoreError::Busy => Fault::Infrastructure,
            // Written by a newer salve, or too many refusals waiting: this
            // salve refuses to go on until an operator acts.
            StoreError::TooNew { .. } | StoreError::OutboxFull { .. } => Fault::Refused,
            StoreError::Replay { .. } | StoreError::DuplicateJob { .. } | StoreError::UnknownJob { .. } => Fault::Input,
            StoreError::VersionTaken { .. } => Fault::Input,
            StoreError::Conflict { .. } => Fault::Conflict,
            StoreError::Corrupt(_) => Fault::Tampered,
            // A move the job's life does not allow is salve's own bug.
            StoreError::IllegalMove { .. } => Fault::Infrastructure,
        }
    }
}

impl Classify for RunError {
    fn fault(&self) -> Fault {
        match self {
            // What the job asked for cannot be given: a credential, memory.
            RunError::Credential { .. } | RunError::MemoryCeiling { .. } => Fault::Refused,
            RunError::State { .. } => Fault::Conflict,
            _ => Fault::Infrastructure,
        }
    }
}

impl Classify for ControlError {
    fn fault(&self) -> Fault {
        match self {
            ControlError::Store(e) => e.fault(),
            ControlError::Run(e) => e.fault(),
            ControlError::AuditRead(_) | ControlError::Write { .. } | ControlError::Crashed { .. } => {
                Fault::Infrastructure
            }
            ControlError::Tampered { .. } | ControlError::Installed { .. } => Fault::Tampered,
            ControlError::NoPolicy { .. } | ControlError::Policy(PolicyError::Read { .. }) => Fault::Input,
            ControlError::Policy(PolicyError::Scope(_)) => Fault::Refused,
            ControlError::Policy(_) | ControlError::Trust(_) => Fault::Input,
            ControlError::Job(JobError::Envelope(_) | JobError::Payload(_) | JobError::Invalid { .. }) => Fault::Input,
            ControlError::Job(_) | ControlError::Approval(_) | ControlError::Artifact { .. } => Fault::Refused,
            ControlError::Version(_) | ControlError::NeedsNoApproval { .. } => Fault::Refused,
            ControlError::WrongState { .. }
            | ControlError::NotPlanned { .. }
            | ControlError::PlanMoved { .. }
            | ControlError::Stopping { .. } => Fault::Conflict,
            ControlError::NotInstalled { .. }
            | ControlError::RefMismatch { .. }
            | ControlError::Grant(_)
            | ControlError::Parameters(_)
            | ControlError::UnknownJob { .. } => Fault::Input,
        }
    }
}

impl ControlError {
    /// A stable name of the check that refused, or of what failed: the
    /// `check` of the API's errors, for clients to act on.
    pub fn check(&self) -> &'static str {
        match self {
            ControlError::Job(e) => match e {
                JobError::Envelope(_) => "job-envelope",
                JobError::BadSignature { .. } => "job-signature",
                JobError::Untrusted(_) => "job-key-trust",
                JobError::Payload(_) => "job-payload",
                JobError::Invalid { .. } => "job-field",
                JobError::Expired { .. } => "job-expired",
                JobError::NotAnAgentKey { .. } => "job-key-role",
            },
            ControlError::Store(e) => match e {
                StoreError::Replay { .. } => "job-nonce-replayed",
                StoreError::DuplicateJob { .. } => "job-id-taken",
                StoreError::UnknownJob { .. } => "job-unknown",
                StoreError::Conflict { .. } => "job-state-moved",
                StoreError::VersionTaken { .. } => "version-taken",
                StoreError::TooNew { .. } => "store-too-new",
                StoreError::OutboxFull { .. } => "store-outbox-full",
                StoreError::Corrupt(_) => "store-tampered",
                StoreError::Open { .. } | StoreError::Sqlite(_) | StoreError::Busy | StoreError::IllegalMove { .. } => {
                    "store"
                }
            },
            ControlError::Approval(e) => match e {
                ApprovalError::Submitter { .. } => "vote-by-submitter",
                ApprovalError::Untrusted(_) => "vote-key-trust",
                ApprovalError::NotInGroup { .. } => "vote-group",
                ApprovalError::BadSignature { .. } => "vote-signature",
                ApprovalError::OtherJob { .. } | ApprovalError::OtherJobHash { .. } => "vote-other-job",
                ApprovalError::StalePlan { .. } => "vote-stale-plan",
                ApprovalError::Expired { .. } => "vote-expired",
                ApprovalError::Duplicate { .. } => "vote-duplicate",
                ApprovalError::Invalid(_) => "vote-invalid",
            },
            ControlError::Policy(_) => "policy",
            ControlError::Trust(_) => "trust-store",
            ControlError::NoPolicy { .. } => "policy-missing",
            ControlError::NotInstalled { .. } => "playbook-not-installed",
            ControlError::RefMismatch { .. } => "playbook-ref",
            ControlError::Installed { .. } => "playbook-installed-artifact",
            ControlError::Artifact { .. } => "playbook-trust",
            ControlError::Grant(_) => "grant",
            ControlError::Parameters(_) => "parameters",
            ControlError::UnknownJob { .. } => "job-unknown",
            ControlError::WrongState { .. } => "job-state",
            ControlError::NotPlanned { .. } => "job-not-planned",
            ControlError::NeedsNoApproval { .. } => "job-needs-no-approval",
            ControlError::PlanMoved { .. } => "plan-moved",
            ControlError::Run(_) => "run",
            ControlError::AuditRead(_) => "audit-read",
            ControlError::Write { .. } => "write",
            ControlError::Version(_) => "version-floor",
            ControlError::Tampered { .. } => "job-tampered",
            ControlError::Stopping { .. } => "stopping",
            ControlError::Crashed { .. } => "crashed",
        }
    }
}
