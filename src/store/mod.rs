//! The job store: where jobs, their state changes, nonces, plans,
//! approvals, credential leases, installed artifacts and the audit outbox
//! live. [`JobStore`] is what the control plane uses; [`SqliteStore`] (the
//! embedded default, `salve.db` in the data directory) implements it.
//!
//! The audit outbox holds control-plane steps taken by processes that do
//! not hold the audit log (`salve submit`, `salve approve`); the runner
//! relays them into the log before it acts on their job.
//!
//! # Guarantees every implementation keeps
//! - Each write is one transaction. A state change reads the job inside it
//!   and checks the state the caller expects (compare and set): two
//!   writers racing on one job cannot both win, and no update is lost.
//! - A move is also checked against the job's life
//!   ([`JobState::may_move_to`]): a final state is final.
//! - A vote is checked and recorded in one transaction with the votes that
//!   count at that moment, so concurrent approvers cannot over-count.
//! - A nonce is used once per agent key; a job id once.
//! - A write is durable when the call returns.
//!
//! # Errors
//! [`StoreError`]: a database that cannot be opened or written, a replayed
//! nonce, a job id used twice, a state that changed under the caller.

mod sqlite;

pub use crate::job::JobState;
pub use sqlite::{BUSY_TIMEOUT, MAX_PENDING_REFUSALS, MIGRATIONS, SqliteStore};

use crate::approval::Approval;
use crate::audit::ControlAction;
use crate::job::{JobRequest, SignedJob};
use crate::policy::Decision;
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the job store {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the job store failed: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the job store stayed locked by another salve process for {}s; nothing was changed. Try again \
         (a worker holds it only for moments; a process stuck holding it must be stopped)",
        BUSY_TIMEOUT.as_secs()
    )]
    Busy,
    #[error(
        "the job store {path} has schema version {found}, but this salve knows versions up to {known}: it was \
         written by a newer salve; run that one"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("nonce {nonce:?} of agent key {agent} was already used (by job {job}): a replayed job is refused")]
    Replay { agent: String, nonce: String, job: String },
    #[error("a job with id {id} already exists; give each job its own id")]
    DuplicateJob { id: String },
    #[error("no job {id} in the store")]
    UnknownJob { id: String },
    #[error("job {id} is {state}, not {expected}: it changed meanwhile; look at `salve jobs show {id}`")]
    Conflict { id: String, state: JobState, expected: String },
    #[error(
        "job {id} cannot move from {from} to {to}: the job's life has no such step (a salve bug; nothing was changed)"
    )]
    IllegalMove { id: String, from: JobState, to: JobState },
    #[error("artifact {name} {version} is already installed with another digest ({digest}); versions are immutable")]
    VersionTaken { name: String, version: String, digest: String },
    #[error("the job store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error(
        "{pending} refused submissions wait to be relayed to the audit log, the most kept; this one is not recorded. \
         Run `salve worker` to relay them"
    )]
    OutboxFull { pending: i64 },
}

/// A job as the store holds it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub agent: String,
    pub job_hash: String,
    #[serde(skip)]
    pub envelope: SignedJob,
    pub request: JobRequest,
    pub playbook: String,
    pub playbook_version: String,
    pub digest: String,
    pub environment: String,
    pub system: String,
    pub decision: Option<Decision>,
    pub plan_hash: Option<String>,
    pub outcome: Option<Value>,
    pub expires_at: Timestamp,
    pub submitted_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A new job, verified and resolved to an installed artifact.
pub struct NewJob<'a> {
    pub envelope: &'a SignedJob,
    pub request: &'a JobRequest,
    pub agent: &'a str,
    pub job_hash: &'a str,
    pub playbook: &'a str,
    pub playbook_version: &'a str,
    pub digest: &'a str,
    pub expires_at: Timestamp,
}

/// One state change.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Transition {
    pub from: Option<JobState>,
    pub to: JobState,
    pub at: Timestamp,
    pub reason: String,
}

/// An approval (or rejection) as stored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StoredApproval {
    pub approval: Approval,
    pub at: Timestamp,
    /// Why it no longer counts (the plan changed), if so.
    pub void: Option<String>,
}

/// A plan as stored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StoredPlan {
    pub hash: String,
    pub changes: Value,
    pub at: Timestamp,
}

/// A credential lease as stored.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StoredLease {
    pub id: String,
    pub credential: String,
    pub kind: String,
    pub expires_at: Option<String>,
    pub leased_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A control-plane step waiting to be relayed into the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub job: Option<String>,
    pub action: ControlAction,
    pub at: Timestamp,
    pub detail: Value,
}

impl OutboxEvent {
    pub fn new(job: &str, action: ControlAction, detail: Value) -> OutboxEvent {
        OutboxEvent { job: Some(job.to_string()), action, at: Timestamp::now(), detail }
    }
}

/// Which jobs [`JobStore::list`] gives: every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub state: Option<JobState>,
    /// Only the jobs this agent key submitted.
    pub agent: Option<String>,
    /// Only the jobs in these environments.
    pub environments: Option<Vec<String>>,
    /// Only the jobs listed after this one (a page's last), newest first.
    pub after: Option<Cursor>,
}

impl Listing {
    /// Jobs in `state` only, if given.
    pub fn in_state(state: Option<JobState>) -> Listing {
        Listing { state, ..Listing::default() }
    }
}

/// Where a listing of jobs, newest first, goes on from: the last job a
/// page held (or looked at). Written `<submitted unix ms>.<job id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub submitted_at: Timestamp,
    pub id: String,
}

impl Cursor {
    pub fn of(job: &JobRecord) -> Cursor {
        Cursor { submitted_at: job.submitted_at, id: job.id.clone() }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.submitted_at.unix_ms(), self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Cursor, String> {
        let wrong = || format!("{text:?} is not a cursor: pass the `next` of the page before, as it was given");
        let (ms, id) = text.split_once('.').ok_or_else(wrong)?;
        let ms: i64 = ms.parse().map_err(|_| wrong())?;
        if id.is_empty() {
            return Err(wrong());
        }
        Ok(Cursor { submitted_at: Timestamp::from_unix_ms(ms), id: id.to_string() })
    }
}

/// What a transition changes besides the state.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub decision: Option<&'a Decision>,
    /// A new plan: its hash and changes.
    pub plan: Option<(&'a str, &'a Value)>,
    pub outcome: Option<&'a Value>,
    /// Void every approval still counting, for this reason.
    pub void_approvals: Option<&'a str>,
}

/// An installed artifact.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledArtifact {
    pub digest: String,
    pub name: String,
    pub version: String,
    pub path: PathBuf,
}

/// What a vote's check, run inside the store's transaction, says.
#[derive(Debug)]
pub enum VoteCheck {
    /// The vote is refused: nothing is written.
    Refuse,
    /// The vote is recorded; the job moves to this state, if any.
    Record(Option<(JobState, String)>),
}

/// The state the control plane keeps about jobs. See the module docs for
/// the guarantees every implementation keeps.
pub trait JobStore: Send + Sync {
    /// Records a new job in `state`, its nonce, its first transition and
    /// the audit events of its submission, at once. Refuses a nonce the
    /// agent used before, and a job id that exists.
    fn submit(
        &self,
        job: &NewJob<'_>,
        decision: &Decision,
        state: JobState,
        reason: &str,
        outbox: &[OutboxEvent],
    ) -> Result<(), StoreError>;

    /// Records a refused submission's audit event (it has no job); refuses
    /// once [`MAX_PENDING_REFUSALS`] wait to be relayed.
    fn submit_refusal(&self, event: &OutboxEvent) -> Result<(), StoreError>;

    /// Records the latest policy decision on job `id`, only while it is
    /// `approved` (a job moved meanwhile keeps the decision it ended with).
    fn record_decision(&self, id: &str, decision: &Decision) -> Result<(), StoreError>;

    /// The job `id`, if the store has it.
    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs, newest first, that `listing` selects; at most `limit`.
    fn list(&self, listing: &Listing, limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// Jobs in one of `states`, longest waiting first.
    fn all_in(&self, states: &[JobState], limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// How many jobs are in one of `states`.
    fn count_in(&self, states: &[JobState]) -> Result<u64, StoreError>;

    /// Up to `limit` jobs in one of `states` that may start now: for each
    /// target system not in `busy`, the one submitted first; those jobs
    /// oldest first. A worker that runs several jobs at once
    /// takes these, so that two jobs never act on one system together and
    /// each system's jobs run in the order they came. It may look only at
    /// the oldest jobs of free systems (16 × `limit` at least): a system
    /// whose jobs crowd those out still gives one, the rest come next time.
    fn takeable(&self, states: &[JobState], busy: &[&str], limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// The job in one of `states` that has waited longest, if any.
    fn next(&self, states: &[JobState]) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.all_in(states, 1)?.into_iter().next())
    }

    /// Moves job `id` from one of `expected` to `to`, with `changes`, in one
    /// transaction; refuses if the job is in another state (someone else
    /// moved it meanwhile) or its life allows no such move.
    fn transition(
        &self,
        id: &str,
        expected: &[JobState],
        to: JobState,
        reason: &str,
        changes: &Changes<'_>,
        outbox: &[OutboxEvent],
    ) -> Result<JobRecord, StoreError>;

    /// Records a vote on job `id` in one transaction: `check` sees the job
    /// and the votes that still count, as they are inside the transaction,
    /// and says whether the vote is recorded and which state the job moves
    /// to. A vote its key cast before gives way to this one. `None` when
    /// `check` refused it (nothing is written).
    fn vote(
        &self,
        id: &str,
        approval: &Approval,
        check: &mut dyn FnMut(&JobRecord, &[StoredApproval]) -> VoteCheck,
        outbox: &[OutboxEvent],
    ) -> Result<Option<JobRecord>, StoreError>;

    /// Every vote on job `id`, in order, including those voided.
    fn approvals(&self, id: &str) -> Result<Vec<StoredApproval>, StoreError>;

    /// Every state change of job `id`, in order.
    fn history(&self, id: &str) -> Result<Vec<Transition>, StoreError>;

    /// The plan with `hash` of job `id`.
    fn plan(&self, id: &str, hash: &str) -> Result<Option<StoredPlan>, StoreError>;

    /// When each job of `playbook` in `environment` that started applying
    /// since `since` did, oldest first (a blast-radius budget).
    fn applied_since(&self, playbook: &str, environment: &str, since: Timestamp) -> Result<Vec<Timestamp>, StoreError>;

    /// Control-plane steps waiting to be relayed into the audit log, in
    /// order, with their sequence numbers: those after `after` (a step's
    /// number is higher than any recorded before it, and never reused).
    fn outbox(&self, after: i64) -> Result<Vec<(i64, OutboxEvent)>, StoreError>;

    /// Forgets relayed outbox steps up to `seq`.
    fn outbox_relayed(&self, seq: i64) -> Result<(), StoreError>;

    /// Records a lease given to job `job`.
    fn lease(&self, job: &str, lease: &StoredLease) -> Result<(), StoreError>;

    /// Marks every lease of `job` not yet revoked as revoked; returns their ids.
    fn revoke_leases(&self, job: &str) -> Result<Vec<String>, StoreError>;

    /// The leases of `job`.
    fn leases(&self, job: &str) -> Result<Vec<StoredLease>, StoreError>;

    /// Whether lease `id` was revoked (false if the store never saw it).
    fn lease_revoked(&self, id: &str) -> Result<bool, StoreError>;

    /// Records an installed artifact. Installing the same bytes again is a
    /// no-op; other bytes under a name and version already installed are
    /// refused.
    fn install(&self, artifact: &InstalledArtifact) -> Result<(), StoreError>;

    /// The installed artifact with this name and version, or this digest.
    fn artifact(
        &self,
        name_version: Option<(&str, &str)>,
        digest: Option<&str>,
    ) -> Result<Option<InstalledArtifact>, StoreError>;
}

#[cfg(test)]
mod tests;
