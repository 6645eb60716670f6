//! The phase machine: `apply` → `verify` → succeeded; an `apply` error,
//! trap, timeout or memory exhaustion, or a failed `verify` →
//! `rollback(journal)` → rolled back, or rollback failed (which needs a
//! person, and says so loudly).
//!
//! Every phase runs in a fresh instance: `verify` sees only what `apply`
//! left on disk, never its memory, and `rollback` runs even after `apply`
//! trapped. `rollback` always gets the journal as read back from disk.
//!
//! # Size
//! Over 600 lines on purpose: this is one phase machine, and its order
//! (plan; apply, verify, rollback; recover) is easiest to check read top
//! to bottom in one file. What each phase calls lives elsewhere
//! (`sandbox`, `host`, `audit`).
//!
//! # Errors
//! [`RunError`] is for what stops a job from being run or recorded at all;
//! everything the playbook does wrong is an [`Outcome`] with a [`Cause`].

use crate::audit::{AuditError, AuditLog, Ending, Event, Head, Mode, Phase};
use crate::bindings::{Change, Context, Error as GuestError};
use crate::credentials::{Broker, CredentialError, Lease};
use crate::grant::Grant;
use crate::host::journal::{Journal, JournalError};
use crate::host::{
    AuditBudgetSpent, AuditBytes, AuditUnavailable, Budget, BudgetSpent, Calls, HostCallTimedOut, InFlight, Slack,
};
use crate::keys::{PrivateKey, Role};
use crate::sandbox::{
    MemoryLimitExceeded, PhaseSetup, PhaseStopped, PhaseTimeout, Playbook, Sandbox, TableLimitExceeded,
};
use crate::scope::limits::Limits;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest cause message kept.
const MAX_CAUSE_BYTES: usize = 1024;
/// How long the runner waits for host operations still running (their
/// caller timed out) before it gives up on rolling back.
pub const SETTLE_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(
        "the grant asks for {asked} bytes of memory, but this runner allows at most {ceiling}; lower limits.memory"
    )]
    MemoryCeiling { asked: u64, ceiling: u64 },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot create the journal directory {path}: {source}")]
    JournalDir { path: PathBuf, source: std::io::Error },
    #[error("key {id} has role {role}; audit seals need a runner key")]
    NotARunnerKey { id: String, role: Role },
    #[error("the grant names credential {name:?}: {source}")]
    Credential { name: String, source: CredentialError },
    #[error("the job's state could not be recorded before {phase}, so it did not start: {source}")]
    State { phase: Phase, source: StateNotRecorded },
    /// The audit log has less room than its reserve: a job that started
    /// could not be sure of auditing its rollback.
    #[error("the job did not start: {0}")]
    NoRoom(String),
}

/// Why whoever keeps the job's state could not record a phase's start
/// (their own error, e.g. the job store's).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StateNotRecorded(pub Box<dyn std::error::Error + Send + Sync>);

/// What the runner tells whoever keeps the job's state (the job store),
/// so that a crash at any point leaves a state that recovery can act on.
pub trait Lifecycle: Send + Sync {
    /// Called before `phase` starts, and must be durable when it returns.
    /// An error before `apply` stops the job with nothing run; before
    /// `verify` it fails the job (which is rolled back); before `rollback`
    /// it is logged and the rollback goes ahead.
    fn entering(&self, _job: &str, _phase: Phase) -> Result<(), StateNotRecorded> {
        Ok(())
    }

    /// A credential was leased to the job.
    fn leased(&self, _job: &str, _lease: &Lease) {}

    /// The job's leases were revoked.
    fn revoked(&self, _job: &str, _lease_ids: &[String]) {}
}

/// No one keeps the job's state beyond the audit log (`salve run`).
pub struct Untracked;

impl Lifecycle for Untracked {}

/// What a job is asked to act on.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: String,
    pub environment: String,
    pub target: String,
    pub parameters: Vec<(String, String)>,
}

impl JobContext {
    /// A context with a fresh, time-ordered job id.
    pub fn new(environment: &str, target: &str, parameters: Vec<(String, String)>) -> JobContext {
        JobContext {
            id: uuid::Uuid::now_v7().to_string(),
            environment: environment.to_string(),
            target: target.to_string(),
            parameters,
        }
    }

    fn wit(&self) -> Context {
        Context {
            job_id: self.id.clone(),
            environment: self.environment.clone(),
            target: self.target.clone(),
            parameters: self.parameters.clone(),
        }
    }
}

/// What went wrong in a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CauseKind {
    /// The playbook returned an error.
    Error,
    /// The playbook trapped (a panic, an `unreachable`, a host refusal to go on).
    Trap,
    /// The phase ran past its deadline.
    Timeout,
    /// A mutating host call did not finish within the host-call timeout.
    HostCallTimeout,
    MemoryLimit,
    StackOverflow,
    /// A host call could not be audited, so it was refused.
    AuditUnavailable,
    /// The journal could not be read back for rollback.
    Journal,
    /// A host operation was still running, so rollback was not attempted.
    Unsettled,
    /// The playbook could not be instantiated.
    Instantiate,
    /// A blast-radius budget was spent.
    Budget,
    /// The runner stopped (a crash, a kill) while the phase ran.
    Interrupted,
    /// The job's state could not be recorded.
    State,
}

impl CauseKind {
    pub fn name(&self) -> &'static str {
        match self {
            CauseKind::Error => "error",
            CauseKind::Trap => "trap",
            CauseKind::Timeout => "timeout",
            CauseKind::HostCallTimeout => "host-call-timeout",
            CauseKind::MemoryLimit => "memory-limit",
            CauseKind::StackOverflow => "stack-overflow",
            CauseKind::AuditUnavailable => "audit-unavailable",
            CauseKind::Journal => "journal",
            CauseKind::Unsettled => "unsettled",
            CauseKind::Instantiate => "instantiate",
            CauseKind::Budget => "budget",
            CauseKind::Interrupted => "interrupted",
            CauseKind::State => "state",
        }
    }
}

impl Serialize for CauseKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why a phase failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub phase: Phase,
    pub kind: CauseKind,
    pub message: String,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.phase, self.message)
    }
}

impl Cause {
    pub fn new(phase: Phase, kind: CauseKind, message: impl Into<String>) -> Cause {
        let message = message.into();
        let message = crate::host::bounded(&message, MAX_CAUSE_BYTES).0.to_string();
        Cause { phase, kind, message }
    }

    /// Names what stopped the guest.
    fn from_trap(phase: Phase, error: &wasmtime::Error) -> Cause {
        if let Some(stopped) = error.downcast_ref::<PhaseStopped>() {
            return Cause::new(phase, CauseKind::Interrupted, stopped.to_string());
        }
        if let Some(timeout) = error.downcast_ref::<PhaseTimeout>() {
            return Cause::new(phase, CauseKind::Timeout, timeout.to_string());
        }
        if let Some(memory) = error.downcast_ref::<MemoryLimitExceeded>() {
            return Cause::new(phase, CauseKind::MemoryLimit, memory.to_string());
        }
        if let Some(table) = error.downcast_ref::<TableLimitExceeded>() {
            return Cause::new(phase, CauseKind::MemoryLimit, table.to_string());
        }
        if let Some(timed_out) = error.downcast_ref::<HostCallTimedOut>() {
            return Cause::new(phase, CauseKind::HostCallTimeout, timed_out.to_string());
        }
        if let Some(spent) = error.downcast_ref::<BudgetSpent>() {
            return Cause::new(phase, CauseKind::Budget, spent.to_string());
        }
        if let Some(spent) = error.downcast_ref::<AuditBudgetSpent>() {
            return Cause::new(phase, CauseKind::Budget, spent.to_string());
        }
        if let Some(audit) = error.downcast_ref::<AuditUnavailable>() {
            return Cause::new(phase, CauseKind::AuditUnavailable, audit.to_string());
        }
        if let Some(wasmtime::Trap::StackOverflow) = error.downcast_ref::<wasmtime::Trap>() {
            return Cause::new(phase, CauseKind::StackOverflow, "exhausted the wasm stack");
        }
        let message = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => format!("trapped: {trap}"),
            None => format!("trapped: {error:#}"),
        };
        Cause::new(phase, CauseKind::Trap, message)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    RolledBack {
        cause: Cause,
    },
    /// Rollback failed too: the target may be half-changed. A person is
    /// needed; the journal is kept.
    RollbackFailed {
        cause: Cause,
        rollback_cause: Cause,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        self.ending().name()
    }

    /// The outcome as the audit log names it.
    pub fn ending(&self) -> Ending {
        match self {
            Outcome::Succeeded => Ending::Succeeded,
            Outcome::RolledBack { .. } => Ending::RolledBack,
            Outcome::RollbackFailed { .. } => Ending::RollbackFailed,
        }
    }

    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Outcome::Succeeded => None,
            Outcome::RolledBack { cause } | Outcome::RollbackFailed { cause, .. } => Some(cause),
        }
    }

    pub fn rollback_cause(&self) -> Option<&Cause> {
        match self {
            Outcome::RollbackFailed { rollback_cause, .. } => Some(rollback_cause),
            _ => None,
        }
    }
}

/// The result of `run`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job_id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub audit_head: Head,
}

/// The result of `plan`.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub job_id: String,
    pub changes: Result<Vec<Change>, Cause>,
    pub audit_head: Head,
}

/// Which export a phase calls.
enum Call {
    Plan,
    Apply,
    Verify,
    Rollback(Vec<Vec<u8>>),
}

impl Call {
    fn phase(&self) -> Phase {
        match self {
            Call::Plan => Phase::Plan,
            Call::Apply => Phase::Apply,
            Call::Verify => Phase::Verify,
            Call::Rollback(_) => Phase::Rollback,
        }
    }
}

/// Runs playbooks: the sandbox, the audit log and the journal directory of
/// one data directory.
#[derive(Clone)]
pub struct Runner {
    sandbox: Sandbox,
    audit: AuditLog,
    journal_dir: PathBuf,
    seal_key: Option<Arc<PrivateKey>>,
    broker: Option<Arc<Broker>>,
    /// Once set, `apply` and `verify` stop at the next tick and the job is
    /// rolled back (rollback itself is never stopped this way).
    stop: Option<Arc<AtomicBool>>,
}

/// What the phases of one job share.
struct JobShared {
    job: Arc<str>,
    inflight: Arc<InFlight>,
    budget: Arc<Budget>,
    audit_bytes: Arc<AuditBytes>,
    leases: Arc<[Lease]>,
}

impl JobShared {
    fn new(job: &JobContext, budget: Budget, limits: &Limits, leases: Vec<Lease>) -> JobShared {
        JobShared {
            job: Arc::from(job.id.as_str()),
            inflight: Arc::default(),
            budget: Arc::new(budget),
            audit_bytes: Arc::new(AuditBytes::new(limits.audit_bytes)),
            leases: leases.into(),
        }
    }

    fn budget(limits: &Limits) -> Budget {
        Budget::new(limits.writes, limits.mutations)
    }

    /// The same job for rollback, which puts back what apply changed. Its
    /// budget is bounded by what apply did (or, after a crash, the most it
    /// could have done: `applied`), what the journal holds, and the grant's
    /// slack; a rollback past it stops, and fails.
    fn for_rollback(&self, applied: (u64, u64), journal: &[Vec<u8>], limits: &Limits) -> JobShared {
        let journal = (journal.iter().map(|e| e.len() as u64).sum(), journal.len() as u64);
        let slack = Slack { bytes: limits.rollback_slack_writes, mutations: limits.rollback_slack_mutations };
        JobShared {
            job: Arc::clone(&self.job),
            inflight: Arc::clone(&self.inflight),
            budget: Arc::new(Budget::for_rollback(applied, journal, slack)),
            // Rollback's records are what an auditor most needs: its own budget.
            audit_bytes: Arc::new(AuditBytes::new(limits.audit_bytes)),
            leases: Arc::clone(&self.leases),
        }
    }
}

impl Runner {
    /// A runner writing to `audit` and keeping journals in
    /// `data_dir/journal`.
    pub fn new(sandbox: Sandbox, audit: AuditLog, data_dir: &Path) -> Result<Runner, RunError> {
        let journal_dir = crate::data_dir::DataDir::new(data_dir).journal();
        std::fs::create_dir_all(&journal_dir)
            .map_err(|source| RunError::JournalDir { path: journal_dir.clone(), source })?;
        Ok(Runner { sandbox, audit, journal_dir, seal_key: None, broker: None, stop: None })
    }

    /// Stops `apply` and `verify` once `stop` is set (by SIGINT or SIGTERM),
    /// and rolls the job back. A host call in flight finishes first (within
    /// its timeout).
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Runner {
        self.stop = Some(stop);
        self
    }

    /// Whether the stop given to [`Runner::with_stop`] is set.
    pub fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Acquire))
    }

    /// Leases credentials from `broker` to the jobs whose grants name them.
    pub fn with_broker(mut self, broker: Arc<Broker>) -> Runner {
        self.broker = Some(broker);
        self
    }

    /// Leases every credential the grant names to the job, and audits each
    /// lease (never its value).
    fn lease(
        &self,
        grant: &Grant,
        job: &JobContext,
        action: &str,
        hooks: &dyn Lifecycle,
    ) -> Result<Vec<Lease>, RunError> {
        let mut leases = Vec::new();
        for name in grant.credentials() {
            let broker = self.broker.as_ref().ok_or_else(|| RunError::Credential {
                name: name.clone(),
                source: CredentialError::Unknown(name.clone()),
            })?;
            let lease = broker
                .lease(&job.id, &name, action, &job.target)
                .map_err(|source| RunError::Credential { name, source })?;
            let expires = lease.expires.map(|t| humantime::format_rfc3339_seconds(t).to_string());
            self.audit.append(
                Some(&job.id),
                &Event::Lease {
                    lease_id: &lease.id,
                    credential: &lease.name,
                    lease_kind: lease.kind,
                    expires: expires.as_deref(),
                },
            )?;
            hooks.leased(&job.id, &lease);
            leases.push(lease);
        }
        Ok(leases)
    }

    /// Revokes the job's leases, whatever its outcome.
    fn revoke(&self, job: &JobContext, hooks: &dyn Lifecycle) -> Result<(), RunError> {
        if let Some(broker) = &self.broker {
            let ids = broker.revoke_job(&job.id);
            if !ids.is_empty() {
                self.audit.append(Some(&job.id), &Event::LeasesRevoked { lease_ids: &ids })?;
                hooks.revoked(&job.id, &ids);
            }
        }
        Ok(())
    }

    /// Seals every job with `key` (role runner): a signed record over the
    /// chain at the job's end.
    pub fn with_seal_key(mut self, key: Arc<PrivateKey>) -> Result<Runner, RunError> {
        if key.role != Role::Runner {
            return Err(RunError::NotARunnerKey { id: key.id.clone(), role: key.role });
        }
        self.audit.sign_checkpoints(Arc::clone(&key));
        self.seal_key = Some(key);
        Ok(self)
    }

    /// Records the job's outcome and seals it; returns once both are
    /// durable (one `fdatasync` for the two).
    async fn finish(&self, job: &str, event: &Event<'_>) -> Result<(), RunError> {
        match &self.seal_key {
            Some(key) => {
                self.audit.append(Some(job), event)?;
                self.audit.seal(job, key).await?;
            }
            None => {
                self.audit.append_durable(Some(job), event).await?;
            }
        }
        Ok(())
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn check_limits(&self, grant: &Grant) -> Result<(), RunError> {
        let ceiling = self.sandbox.config().memory_ceiling;
        if grant.limits().memory > ceiling {
            return Err(RunError::MemoryCeiling { asked: grant.limits().memory, ceiling });
        }
        Ok(())
    }

    fn record_job(&self, mode: Mode, playbook: &Playbook, grant: &Grant, job: &JobContext) -> Result<(), RunError> {
        self.audit.append(
            Some(&job.id),
            &Event::Job {
                mode,
                playbook: playbook.name(),
                digest: playbook.digest(),
                environment: &job.environment,
                target: &job.target,
                parameters: &job.parameters,
                grant: &grant.summary(),
                signers: playbook.signers(),
            },
        )?;
        Ok(())
    }

    /// Runs `apply` and `verify` (read-only), and `rollback` if either
    /// fails.
    pub async fn run(&self, playbook: &Playbook, grant: &Grant, job: &JobContext) -> Result<Report, RunError> {
        self.run_with(playbook, grant, job, &Untracked).await
    }

    /// [`Runner::run`], telling `hooks` each phase before it starts.
    pub async fn run_with(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobContext,
        hooks: &dyn Lifecycle,
    ) -> Result<Report, RunError> {
        self.check_limits(grant)?;
        if let Some(reason) = self.audit.short_of_room() {
            return Err(RunError::NoRoom(reason));
        }
        hooks.entering(&job.id, Phase::Apply).map_err(|source| RunError::State { phase: Phase::Apply, source })?;
        self.record_job(Mode::Run, playbook, grant, job)?;
        // Revokes the job's leases however this function ends.
        let _leases_revoked_at_the_end = self.broker.as_ref().map(|b| b.guard(&job.id));
        let leases = self.lease(grant, job, "apply", hooks)?;
        let journal = Journal::new(&self.journal_dir, &job.id);
        let journal_path = journal.path().to_path_buf();
        let shared = JobShared::new(job, JobShared::budget(grant.limits()), grant.limits(), leases);

        let failure = match self.phase(playbook, grant, job, &shared, Call::Apply, Some(journal)).await {
            Ok(_) if self.stopping() => {
                Some(Cause::new(Phase::Verify, CauseKind::Interrupted, PhaseStopped.to_string()))
            }
            Ok(_) => match hooks.entering(&job.id, Phase::Verify) {
                // verify checks; it must not change anything rollback could not undo.
                Ok(()) => self.phase(playbook, &grant.read_only(), job, &shared, Call::Verify, None).await.err(),
                Err(reason) => Some(Cause::new(
                    Phase::Verify,
                    CauseKind::State,
                    format!("the job's state could not be recorded: {reason}"),
                )),
            },
            Err(cause) => Some(cause),
        };
        let outcome = match failure {
            None => Outcome::Succeeded,
            Some(cause) => {
                let applied = shared.budget.applied();
                self.roll_back(playbook, grant, job, (&shared, applied), &journal_path, cause, hooks).await
            }
        };
        self.conclude(job, outcome, &journal_path, hooks).await
    }

    /// Rolls back a job that a runner process left behind in `apply`,
    /// `verify` or `rollback` (it crashed or was killed): calls `rollback`
    /// with the journal as it is on disk. `rollback` must be idempotent:
    /// it may already have run, in part.
    pub async fn recover(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobContext,
        cause: Cause,
        hooks: &dyn Lifecycle,
    ) -> Result<Report, RunError> {
        self.check_limits(grant)?;
        self.record_job(Mode::Recover, playbook, grant, job)?;
        let _leases_revoked_at_the_end = self.broker.as_ref().map(|b| b.guard(&job.id));
        let leases = self.lease(grant, job, "rollback", hooks)?;
        let journal_path = Journal::new(&self.journal_dir, &job.id).path().to_path_buf();
        let shared = JobShared::new(job, Budget::new(0, 0), grant.limits(), leases);
        // What apply did before the crash is not known here: it may have
        // spent its whole budget.
        let applied = (grant.limits().writes, grant.limits().mutations);
        let outcome = self.roll_back(playbook, grant, job, (&shared, applied), &journal_path, cause, hooks).await;
        self.conclude(job, outcome, &journal_path, hooks).await
    }

    /// Revokes the job's leases, records its outcome and seals it; removes
    /// the journal once the outcome is durable, unless rollback failed.
    async fn conclude(
        &self,
        job: &JobContext,
        outcome: Outcome,
        journal_path: &Path,
        hooks: &dyn Lifecycle,
    ) -> Result<Report, RunError> {
        self.revoke(job, hooks)?;
        self.record_outcome(&job.id, &outcome).await?;
        match &outcome {
            Outcome::RollbackFailed { .. } => {
                tracing::error!(job = %job.id, journal = %journal_path.display(), "the journal to restore from");
            }
            _ => remove_journal(journal_path),
        }
        Ok(Report { job_id: job.id.clone(), outcome, audit_head: self.audit.head() })
    }

    /// Removes job `id`'s journal, for a job whose outcome (not a failed
    /// rollback) the audit log durably holds: recovery found the outcome
    /// of a runner stopped before it removed the journal itself.
    pub fn remove_journal_of(&self, id: &str) {
        remove_journal(&Journal::path_for(&self.journal_dir, id));
    }

    /// Waits for host operations still running, then calls `rollback` with
    /// the journal as it is on disk.
    #[allow(clippy::too_many_arguments)] // the job, its phase state, and who tracks it
    async fn roll_back(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobContext,
        (shared, applied): (&JobShared, (u64, u64)),
        journal_path: &Path,
        cause: Cause,
        hooks: &dyn Lifecycle,
    ) -> Outcome {
        if let Err(reason) = hooks.entering(&job.id, Phase::Rollback) {
            tracing::error!(job = %job.id, "rolling back, but the job's state could not be recorded: {reason}");
        }
        if !shared.inflight.settled(SETTLE_GRACE).await {
            let message = format!(
                "a host operation was still running {} after it timed out; the target's state is unknown, so \
                 rollback was not attempted",
                humantime::format_duration(SETTLE_GRACE)
            );
            return Outcome::RollbackFailed {
                cause,
                rollback_cause: Cause::new(Phase::Rollback, CauseKind::Unsettled, message),
            };
        }
        match Journal::read(journal_path) {
            Err(e) => Outcome::RollbackFailed {
                cause,
                rollback_cause: Cause::new(Phase::Rollback, CauseKind::Journal, e.to_string()),
            },
            // Rollback writes back what apply changed: it gets a budget of
            // its own, bounded by what apply did, not what apply left.
            Ok(entries) => {
                let rollback = shared.for_rollback(applied, &entries, grant.limits());
                match self.phase(playbook, grant, job, &rollback, Call::Rollback(entries), None).await {
                    Ok(_) => Outcome::RolledBack { cause },
                    Err(rollback_cause) => Outcome::RollbackFailed { cause, rollback_cause },
                }
            }
        }
    }

    /// Records the outcome of a job that could not be run or rolled back
    /// at all (its playbook could not even be loaded), and seals the log
    /// as [`Runner::run_with`] does. A `RollbackFailed` outcome is logged
    /// as an error: it needs a person.
    pub async fn record_outcome(&self, job: &str, outcome: &Outcome) -> Result<(), RunError> {
        let cause = outcome.cause().map(ToString::to_string);
        let rollback_cause = outcome.rollback_cause().map(ToString::to_string);
        let event = Event::Outcome {
            outcome: outcome.ending(),
            cause: cause.as_deref(),
            rollback_cause: rollback_cause.as_deref(),
        };
        self.finish(job, &event).await?;
        if let Outcome::RollbackFailed { cause, rollback_cause } = outcome {
            tracing::error!(
                job,
                %cause,
                %rollback_cause,
                "ROLLBACK FAILED: the target may be half-changed; a person must restore it from the journal"
            );
        }
        Ok(())
    }

    /// Runs `plan` only, with every directory downgraded to read-only.
    pub async fn plan(&self, playbook: &Playbook, grant: &Grant, job: &JobContext) -> Result<PlanReport, RunError> {
        self.plan_with(playbook, grant, job, &Untracked).await
    }

    /// [`Runner::plan`], telling `hooks` about the leases it takes.
    pub async fn plan_with(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobContext,
        hooks: &dyn Lifecycle,
    ) -> Result<PlanReport, RunError> {
        self.check_limits(grant)?;
        let grant = grant.read_only();
        self.record_job(Mode::Plan, playbook, &grant, job)?;
        let _leases_revoked_at_the_end = self.broker.as_ref().map(|b| b.guard(&job.id));
        let leases = self.lease(&grant, job, "plan", hooks)?;
        let shared = JobShared::new(job, Budget::new(0, 0), grant.limits(), leases);
        let changes = self.phase(playbook, &grant, job, &shared, Call::Plan, None).await.map(|c| c.unwrap_or_default());
        self.revoke(job, hooks)?;
        let cause = changes.as_ref().err().map(ToString::to_string);
        let outcome = if changes.is_ok() { Ending::Planned } else { Ending::PlanFailed };
        self.finish(&job.id, &Event::Outcome { outcome, cause: cause.as_deref(), rollback_cause: None }).await?;
        Ok(PlanReport { job_id: job.id.clone(), changes, audit_head: self.audit.head() })
    }

    /// Runs one phase in a fresh instance and audits it. Returns the changes
    /// for `plan`, nothing for the other phases.
    async fn phase(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobContext,
        shared: &JobShared,
        call: Call,
        journal: Option<Journal>,
    ) -> Result<Option<Vec<Change>>, Cause> {
        let phase = call.phase();
        let started = Instant::now();
        let deadline = crate::sandbox::phase_deadline(grant, phase);
        let calls = Calls::new(self.audit.clone(), Arc::clone(&shared.job), phase, started + deadline)
            .with_timeout(self.sandbox.config().host_call_timeout)
            .with_inflight(Arc::clone(&shared.inflight))
            .with_budget(Arc::clone(&shared.budget))
            .with_audit_bytes(Arc::clone(&shared.audit_bytes))
            .with_reaper(self.sandbox.config().reaper.clone())
            .with_inline_reads(self.sandbox.config().inline_reads)
            .with_leases(Arc::clone(&shared.leases));
        let audit_failed = |e: AuditError| Cause::new(phase, CauseKind::AuditUnavailable, e.to_string());
        self.audit
            .append(Some(&job.id), &Event::Phase { phase, status: "started", detail: None, duration_us: None })
            .map_err(audit_failed)?;

        let stop = if phase == Phase::Rollback { None } else { self.stop.clone() };
        let setup = PhaseSetup { grant, calls: calls.clone(), journal, deadline, stop };
        let result = match self.sandbox.instantiate(playbook, setup).await {
            Err(e) => {
                let mut cause = Cause::from_trap(phase, &e);
                if cause.kind == CauseKind::Trap {
                    cause = Cause::new(phase, CauseKind::Instantiate, format!("cannot instantiate: {e:#}"));
                }
                Err(cause)
            }
            Ok(mut instance) => {
                let ctx = job.wit();
                let guest = instance.exports.salve_playbook_playbook();
                let store = &mut instance.store;
                // Epochs stop wasm code; host calls have their own timeout.
                // This outer bound only catches what slips between the two.
                let backstop = deadline + calls.timeout() + Duration::from_secs(1);
                let returned = tokio::time::timeout(backstop, async {
                    match &call {
                        Call::Plan => guest.call_plan(&mut *store, &ctx).await.map(|r| r.map(Some)),
                        Call::Apply => guest.call_apply(&mut *store, &ctx).await.map(|r| r.map(|()| None)),
                        Call::Verify => guest.call_verify(&mut *store, &ctx).await.map(|r| r.map(|()| None)),
                        Call::Rollback(entries) => {
                            guest.call_rollback(&mut *store, &ctx, entries).await.map(|r| r.map(|()| None))
                        }
                    }
                })
                .await;
                let result = match returned {
                    Err(_) => Err(Cause::new(
                        phase,
                        CauseKind::Timeout,
                        format!(
                            "did not return within {} (its deadline, plus a host call's timeout)",
                            humantime::format_duration(backstop)
                        ),
                    )),
                    Ok(Err(trap)) => Err(Cause::from_trap(phase, &trap)),
                    Ok(Ok(Err(error))) => Err(Cause::new(phase, CauseKind::Error, describe(&error))),
                    Ok(Ok(Ok(value))) => Ok(value),
                };
                self.record_output(&job.id, phase, &instance).map_err(audit_failed)?;
                let suppressed = instance.store.data().log.suppressed;
                if suppressed > 0 {
                    let detail = format!("{suppressed} log messages past the per-phase bound were not recorded");
                    self.audit
                        .append(
                            Some(&job.id),
                            &Event::Phase { phase, status: "log-suppressed", detail: Some(&detail), duration_us: None },
                        )
                        .map_err(audit_failed)?;
                }
                let refused = calls.refusals().suppressed();
                if !refused.is_empty() {
                    let total: u64 = refused.iter().map(|(_, n)| n).sum();
                    let by_function: Vec<String> = refused.iter().map(|(f, n)| format!("{f}: {n}")).collect();
                    let detail = format!(
                        "{total} more refused host calls past the per-phase bound of {} were counted, not recorded \
                         ({})",
                        crate::host::MAX_RECORDED_REFUSALS,
                        by_function.join(", ")
                    );
                    let event =
                        Event::Phase { phase, status: "refusals-suppressed", detail: Some(&detail), duration_us: None };
                    self.audit.append(Some(&job.id), &event).map_err(audit_failed)?;
                    for (function, n) in &refused {
                        let interface = function.split_once('.').map_or(function.as_str(), |(i, _)| i);
                        self.audit.count_unrecorded_calls(interface, "denied", *n);
                    }
                }
                result
            }
        };

        let (status, detail) = match &result {
            Ok(_) => ("ok", None),
            Err(cause) => (cause.kind.name(), Some(cause.message.as_str())),
        };
        let duration_us = Some(started.elapsed().as_micros() as u64);
        self.audit.append(Some(&job.id), &Event::Phase { phase, status, detail, duration_us }).map_err(audit_failed)?;
        result
    }

    fn record_output(&self, job: &str, phase: Phase, instance: &crate::sandbox::Instance) -> Result<(), AuditError> {
        for (stream, capture) in [("stdout", &instance.stdout), ("stderr", &instance.stderr)] {
            let captured = capture.captured();
            if captured.total == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&captured.kept);
            self.audit.append(
                Some(job),
                &Event::Output { phase, stream, bytes: captured.total, truncated: captured.truncated(), text: &text },
            )?;
        }
        Ok(())
    }
}

/// A guest error as a sentence.
pub fn describe(error: &GuestError) -> String {
    match error {
        GuestError::Denied(reason) => format!("denied: {reason}"),
        GuestError::NotFound => "not found".into(),
        GuestError::Invalid(reason) => format!("invalid: {reason}"),
        GuestError::Failed(reason) => format!("failed: {reason}"),
    }
}

/// The journal served its purpose once the outcome is durable; the audit
/// log keeps the digest of every entry.
fn remove_journal(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(journal = %path.display(), "could not remove the journal: {e}");
    }
}
