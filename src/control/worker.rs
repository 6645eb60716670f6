//! The worker: the runner side of the control plane. It plans submitted
//! jobs, applies approved ones after checking them again at the moment of
//! action, and is the only writer of the audit log: steps other processes
//! took (submissions, votes) are relayed from the store's outbox first.
//!
//! One [`Worker::step`] takes one job: a submitted one goes through
//! [`Worker::intake`] (policy for `plan`, the plan, then waiting for
//! approvals or ready), an approved one through [`Worker::execute`] (the
//! job as signed, a fresh plan that must be the one approved, the policy
//! with the change window as it is now, the approvals it asks for, the
//! hourly budget, then apply). Recovery is in `recovery.rs`; several
//! jobs at once, in `pool.rs`.

use super::admission::{Admitted, Checks, Signed, SignedPlaybook};
use super::facts::{decision_detail, why};
use super::lifecycle::{OnMove, StoreLifecycle, blocking};
use super::plan::{plan_hash, plan_json};
use super::{ControlError, ControlPlane};
use crate::artifact::floor::VersionFloor;
use crate::audit::{AuditLog, Phase};
use crate::audit::{ControlAction, Event};
use crate::credentials::Lease;
use crate::fault::Classify;
use crate::job::JobState;
use crate::policy::{Decision, Verdict};
use crate::run::{JobContext, Lifecycle, Outcome, RunError, Runner, StateNotRecorded};
use crate::sandbox::Catalog;
use crate::store::{Changes, JobRecord, JobStore, OutboxEvent, StoreError, StoredApproval};
use crate::time::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What the worker did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub job: String,
    pub state: JobState,
    pub note: String,
}

/// The runner side of the control plane: plans submitted jobs, applies
/// approved ones, and recovers the jobs a stopped runner left behind.
pub struct Worker {
    pub control: ControlPlane,
    pub(super) runner: Runner,
    pub(super) catalog: Arc<Catalog>,
    pub(super) lifecycle: StoreLifecycle,
    together: Arc<Together>,
}

/// What the jobs one worker runs at once share, so that running them
/// together keeps the guarantees of running them one after another.
#[derive(Default)]
struct Together {
    /// One relay of the outbox at a time: two would log the same steps
    /// twice. It holds the number of the last step relayed.
    relay: tokio::sync::Mutex<i64>,
    forget: Arc<Forget>,
    budgets: Arc<Budgets>,
    /// One check-and-raise of the version floor at a time: a file,
    /// rewritten, that an older version must not slip past.
    floor: Mutex<()>,
}

/// Relayed outbox steps, forgotten by the store once the audit log holds
/// them durably: by one task at a time, off the path of the jobs.
#[derive(Default)]
struct Forget(Mutex<Forgetting>);

#[derive(Default)]
struct Forgetting {
    /// The last step relayed, and the audit record that holds it; `None`
    /// when the store has forgotten every step relayed.
    due: Option<(i64, u64)>,
    /// Whether a task forgets now (it takes `due` before it ends).
    running: bool,
}

impl Forget {
    /// Whether steps relayed may not be forgotten yet.
    fn outstanding(&self) -> bool {
        let forgetting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        forgetting.running || forgetting.due.is_some()
    }

    /// Has the store forget the steps up to `step` once the audit log holds
    /// record `record` durably.
    fn after_sync(self: &Arc<Forget>, step: i64, record: u64, audit: &AuditLog, store: &Arc<dyn JobStore>) {
        let mut forgetting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        forgetting.due = Some((step, record));
        if std::mem::replace(&mut forgetting.running, true) {
            return;
        }
        let (forget, audit, store) = (Arc::clone(self), audit.clone(), Arc::clone(store));
        tokio::spawn(async move {
            // However the task ends (a panic, its runtime stopping), the
            // next relay starts another.
            let mut running = Running(Some(Arc::clone(&forget)));
            loop {
                let due = {
                    let mut forgetting = forget.0.lock().unwrap_or_else(|e| e.into_inner());
                    let due = forgetting.due.take();
                    if due.is_none() {
                        // Cleared in the same turn as the look: a step
                        // relayed from now on starts another task.
                        forgetting.running = false;
                        running.0 = None;
                    }
                    due
                };
                let Some((step, record)) = due else { return };
                // A failure leaves the steps in the store: the next start
                // relays them again (twice in the log, never not at all).
                let forgotten = match audit.sync(record).await {
                    Ok(()) => tokio::task::spawn_blocking({
                        let store = Arc::clone(&store);
                        move || store.outbox_relayed(step)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = forgotten {
                    // Left due, for the next relay (or the run's end) to
                    // try again; no retry here, so that a store that keeps
                    // failing is not hammered.
                    tracing::warn!("relayed outbox steps up to {step} stay in the store for now: {e}");
                    let mut forgetting = forget.0.lock().unwrap_or_else(|e| e.into_inner());
                    forgetting.due.get_or_insert((step, record));
                    forgetting.running = false;
                    running.0 = None;
                    return;
                }
            }
        });
    }
}

/// Clears [`Forgetting::running`] when the task that forgets ends
/// before it could (a panic, its runtime stopping), so that the next relay
/// starts another.
struct Running(Option<Arc<Forget>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(forget) = self.0.take() {
            forget.0.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        }
    }
}

/// The hourly budgets of the jobs this worker applies, by (playbook,
/// environment): when each job counted entered `applying` in the last
/// hour, read from the store at the first check of a key and kept here
/// from then on (this worker is the only one that moves jobs into
/// `applying`), and the places held by jobs let past the check that have
/// not entered it yet. A check costs no store read, and no lock is held
/// across a store write.
#[derive(Default)]
struct Budgets(Mutex<HashMap<(String, String), Window>>);

struct Window {
    /// When each job counted entered `applying`, oldest first.
    applied: std::collections::VecDeque<Timestamp>,
    /// Jobs let past the check that have not entered `applying` yet.
    held: u32,
    /// The latest time a check looked at the window.
    looked: Timestamp,
}

/// The time a budget counts back from `now`.
const BUDGET_HOUR: Duration = Duration::from_secs(3600);

impl Budgets {
    /// A place for one more job of `key` at `now` when the jobs counted in
    /// the hour before and the places held leave one under `limit`; else
    /// how many that makes. `applied` reads the store's count, once per
    /// key.
    fn reserve<E>(
        self: &Arc<Budgets>,
        key: (String, String),
        limit: u32,
        now: Timestamp,
        applied: impl FnOnce(Timestamp) -> Result<Vec<Timestamp>, E>,
    ) -> Result<Result<Reservation, u32>, E> {
        let hour_ago = hour_before(now);
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let window = match windows.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => {
                let window = entry.into_mut();
                if now < window.looked {
                    // The clock went back past a look that may have let go
                    // of jobs that count again now: the store says which.
                    window.applied = applied(hour_ago)?.into();
                }
                window
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Window { applied: applied(hour_ago)?.into(), held: 0, looked: now })
            }
        };
        window.looked = window.looked.max(now);
        while window.applied.front().is_some_and(|at| *at < hour_ago) {
            window.applied.pop_front();
        }
        let recent = window.applied.len() as u32 + window.held;
        if recent >= limit {
            return Ok(Err(recent));
        }
        window.held += 1;
        Ok(Ok(Reservation { budgets: Arc::clone(self), key, held: AtomicBool::new(true) }))
    }
}

fn hour_before(now: Timestamp) -> Timestamp {
    Timestamp::from(now.system().checked_sub(BUDGET_HOUR).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// A place under a playbook's hourly budget in one environment, held from
/// the budget check until the job enters `applying` (then counted as
/// applied) or its step ends (then given back).
struct Reservation {
    budgets: Arc<Budgets>,
    key: (String, String),
    held: AtomicBool,
}

impl Reservation {
    /// The place, held or spent on a job that entered `applying` at `at`,
    /// is no longer held (once).
    fn release(&self, applied_at: Option<Timestamp>) {
        if !self.held.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut windows = self.budgets.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = windows.get_mut(&self.key) {
            window.held = window.held.saturating_sub(1);
            if let Some(at) = applied_at {
                window.applied.push_back(at);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release(None);
    }
}

/// The store's lifecycle for one job that holds a [`Reservation`]: the
/// move into `applying` spends it.
struct Reserved<'a> {
    inner: &'a StoreLifecycle,
    reservation: &'a Reservation,
}

impl Lifecycle for Reserved<'_> {
    fn entering(&self, job: &str, phase: Phase) -> Result<(), StateNotRecorded> {
        self.inner.entering(job, phase)?;
        if phase == Phase::Apply {
            // Held until now, so that the job counts once throughout.
            self.reservation.release(Some(Timestamp::now()));
        }
        Ok(())
    }

    fn leased(&self, job: &str, lease: &Lease) {
        self.inner.leased(job, lease);
    }

    fn revoked(&self, job: &str, lease_ids: &[String]) {
        self.inner.revoked(job, lease_ids);
    }
}

/// A plan as the worker took it: its hash and changes, or why it failed.
type Planned = Result<(String, Value), String>;

impl Worker {
    pub fn new(control: ControlPlane, runner: Runner) -> Worker {
        let catalog = Arc::new(Catalog::new(runner.sandbox().clone()));
        let lifecycle = StoreLifecycle { store: Arc::clone(&control.store), on_move: None };
        Worker { control, runner, catalog, lifecycle, together: Arc::default() }
    }

    /// This worker, telling `on_move` after each change of a job's state a
    /// phase makes (into applying, verifying, rolling back); the state a
    /// step ends in comes with the step itself.
    pub fn on_move(mut self, on_move: OnMove) -> Worker {
        self.lifecycle.on_move = Some(on_move);
        self
    }

    /// This worker with the trust store, policy and config read again: for
    /// the jobs taken from now on, while those running keep theirs. It
    /// shares this one's runner, compiled playbooks, budgets and relay.
    pub fn reloaded(&self) -> Result<Worker, ControlError> {
        let loaded = self.control.load_again()?;
        Ok(Worker {
            control: self.control.with(loaded),
            runner: self.runner.clone(),
            catalog: Arc::clone(&self.catalog),
            lifecycle: self.lifecycle.clone(),
            together: Arc::clone(&self.together),
        })
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    pub(super) fn audit(&self, job: &str, action: ControlAction, detail: Value) -> Result<(), ControlError> {
        self.runner
            .audit()
            .append(Some(job), &Event::Control { action, at: None, detail: &detail })
            .map_err(RunError::from)?;
        Ok(())
    }

    /// Relays the steps other processes recorded (submissions, votes) into
    /// the audit log, before anything this worker appends next; the store
    /// forgets them once the log holds them durably (a task of its own
    /// waits for that, so that jobs do not). A crash before that relays
    /// them again: the same step may appear twice in the log, never not at
    /// all.
    pub async fn relay(&self) -> Result<usize, ControlError> {
        self.relay_then(false).await
    }

    /// [`Worker::relay`], returning once the log holds every step relayed
    /// durably and the store has forgotten them: for the start and the end
    /// of a run.
    pub async fn relay_durably(&self) -> Result<usize, ControlError> {
        self.relay_then(true).await
    }

    async fn relay_then(&self, durably: bool) -> Result<usize, ControlError> {
        let mut relayed = self.together.relay.lock().await;
        let pending = self.control.store.outbox(*relayed)?;
        for (_, event) in &pending {
            self.relay_one(event)?;
        }
        if let Some((last, _)) = pending.last() {
            *relayed = *last;
        }
        let audit = self.runner.audit();
        if durably {
            if pending.is_empty() && !self.together.forget.outstanding() {
                return Ok(0);
            }
            audit.sync(audit.head().seq).await.map_err(RunError::from)?;
            blocking(|| self.control.store.outbox_relayed(*relayed))?;
        } else if !pending.is_empty() {
            self.together.forget.after_sync(*relayed, audit.head().seq, audit, &self.control.store);
        }
        Ok(pending.len())
    }

    fn relay_one(&self, event: &OutboxEvent) -> Result<(), ControlError> {
        let at = event.at.rfc3339_millis();
        let control = Event::Control { action: event.action, at: Some(&at), detail: &event.detail };
        self.runner.audit().append(event.job.as_deref(), &control).map_err(RunError::from)?;
        Ok(())
    }

    /// Moves a job and audits the move, with `detail`.
    pub(super) fn settle(
        &self,
        job: &JobRecord,
        to: JobState,
        reason: &str,
        changes: &Changes<'_>,
        detail: Value,
    ) -> Result<Step, ControlError> {
        // The move first: one that loses a race (a rejection came first)
        // must not appear in the audit log as done.
        blocking(|| self.control.store.transition(&job.id, &[job.state], to, reason, changes, &[]))?;
        self.audit(
            &job.id,
            ControlAction::State,
            json!({ "from": job.state, "to": to, "reason": reason, "detail": detail }),
        )?;
        Ok(Step { job: job.id.clone(), state: to, note: reason.to_string() })
    }

    /// [`Worker::settle`] with nothing changed but the state.
    pub(super) fn end(&self, job: &JobRecord, to: JobState, reason: &str) -> Result<Step, ControlError> {
        self.settle(job, to, reason, &Changes::default(), json!({}))
    }

    pub(super) fn context(job: &JobRecord) -> JobContext {
        JobContext {
            id: job.id.clone(),
            environment: job.environment.clone(),
            target: job.system.clone(),
            parameters: job.request.parameter_list(),
        }
    }

    /// A job that expired while it waited.
    fn expired(&self, job: &JobRecord, now: SystemTime) -> Option<Result<Step, ControlError>> {
        job.expires_at
            .reached(Timestamp::from(now))
            .then(|| self.end(job, JobState::Expired, "expired before it could run"))
    }

    /// Runs `plan` with a read-only grant; returns the plan's hash and
    /// changes, or why it failed (the plan itself, or a credential or limit
    /// it could not have). Only a failure of the audit log is an error.
    async fn plan(&self, admitted: &Admitted<SignedPlaybook>, job: &JobRecord) -> Result<Planned, ControlError> {
        if self.runner.stopping() {
            return Err(ControlError::Stopping { id: job.id.clone(), state: job.state });
        }
        let playbook = admitted.playbook.playbook();
        let report =
            match self.runner.plan_with(playbook, &admitted.grant, &Worker::context(job), &self.lifecycle).await {
                Ok(report) => report,
                Err(e @ (RunError::Credential { .. } | RunError::MemoryCeiling { .. })) => {
                    return Ok(Err(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            };
        Ok(match report.changes {
            Ok(changes) => {
                let changes = plan_json(&changes);
                Ok((plan_hash(&changes), changes))
            }
            // Cut short because salve stops: not the plan's failure.
            Err(_) if self.runner.stopping() => {
                return Err(ControlError::Stopping { id: job.id.clone(), state: job.state });
            }
            Err(cause) => Err(cause.to_string()),
        })
    }

    /// The job as signed and its playbook and grant, all checked again at
    /// `at`; or the step that ends it when a check refuses. A failure that
    /// is not the job's (the store) leaves it for the next step.
    async fn admit(
        &self,
        job: &JobRecord,
        at: SystemTime,
    ) -> Result<Result<(JobRecord, Admitted<SignedPlaybook>), Step>, ControlError> {
        let job = match self.control.signed_job(job, at) {
            Ok(job) => job,
            Err(e) if e.fault().retry_later() => return Err(e),
            Err(e) => return self.end(job, JobState::Denied, &format!("refused: {e}")).map(Err),
        };
        match self.control.admit_job(&self.catalog, &job, at, Checks::to_run(&self.control.config)) {
            Ok(admitted) => Ok(Ok((job, admitted))),
            Err(e) if e.fault().retry_later() => Err(e),
            Err(e) => self.end(&job, JobState::Failed, &format!("cannot be run: {e}")).map(Err),
        }
    }

    /// A submitted job: the policy for `plan`, then the plan, then waiting
    /// for approvals or ready to apply.
    pub async fn intake(&self, job: &JobRecord) -> Result<Step, ControlError> {
        let now = SystemTime::now();
        if let Some(step) = self.expired(job, now) {
            return step;
        }
        let (job, admitted) = match self.admit(job, now).await? {
            Ok(admitted) => admitted,
            Err(step) => return Ok(step),
        };
        let job = &job;
        let manifest = admitted.playbook.manifest();
        let (decision, facts) = self.control.decide(&job.agent, &job.request, manifest, "plan", now);
        self.audit(&job.id, ControlAction::Decision, decision_detail("before-plan", "plan", &decision, &facts))?;
        if decision.verdict == Verdict::Deny {
            return self.end(job, JobState::Denied, &format!("the policy denies planning it: {}", why(&decision)));
        }
        let (hash, changes) = match self.plan(&admitted, job).await? {
            Ok(planned) => planned,
            Err(cause) => return self.end(job, JobState::PlanFailed, &format!("its plan failed: {cause}")),
        };
        let submitted_verdict = job.decision.as_ref().map(|d| &d.verdict);
        let (to, reason) = match submitted_verdict {
            Some(Verdict::NeedsApprovals { approvals, group }) => {
                (JobState::WaitingApproval, format!("planned; needs {approvals} approval(s) from group {group}"))
            }
            _ => (JobState::Approved, "planned; the policy allows it without approval".to_string()),
        };
        let needs = matches!(submitted_verdict, Some(Verdict::NeedsApprovals { .. }));
        let plan = Changes { plan: Some((&hash, &changes)), ..Changes::default() };
        let detail = json!({ "plan_hash": hash, "changes": changes, "needs_approvals": needs });
        self.settle(job, to, &reason, &plan, detail)
    }

    /// An approved job: checked again at the moment of action. The job as
    /// signed, the agent's key and the artifact; a fresh plan, which must
    /// be the one approved; then, last, the policy with the change window
    /// as it is now, the approvals it asks for, and the hourly budget.
    pub async fn execute(&self, job: &JobRecord) -> Result<Step, ControlError> {
        if let Some(step) = self.expired(job, SystemTime::now()) {
            return step;
        }
        let (job, admitted) = match self.admit(job, SystemTime::now()).await? {
            Ok(admitted) => admitted,
            Err(step) => return Ok(step),
        };
        let job = &job;
        let (plan, changes) = match self.plan(&admitted, job).await? {
            Ok(planned) => planned,
            Err(cause) => {
                return self.end(job, JobState::PlanFailed, &format!("its plan failed just before apply: {cause}"));
            }
        };
        // The votes that may count, read before the relay: each is in the
        // audit log before it counts.
        let votes = self.control.store.approvals(&job.id)?;
        self.relay().await?;
        let now = SystemTime::now();
        let (decision, facts) =
            self.control.decide(&job.agent, &job.request, admitted.playbook.manifest(), "apply", now);
        self.audit(&job.id, ControlAction::Decision, decision_detail("before-apply", "apply", &decision, &facts))?;
        let record_decision = Changes { decision: Some(&decision), ..Changes::default() };
        if let Verdict::Deny = &decision.verdict {
            let reason = format!("denied just before apply: {}", why(&decision));
            return self.settle(job, JobState::Denied, &reason, &record_decision, json!({}));
        }
        if Some(&plan) != job.plan_hash.as_ref()
            && let Some(step) = self.plan_changed(job, &decision, &plan, &changes)?
        {
            return Ok(step);
        }
        if let Some(step) = self.approvals_missing(job, &decision, &plan, &votes, now)? {
            return Ok(step);
        }
        let reservation = match self.over_budget(job, &decision, now)? {
            Ok(reservation) => reservation,
            Err(step) => return Ok(step),
        };
        blocking(|| self.control.store.record_decision(&job.id, &decision))?;
        if self.runner.stopping() {
            return Err(ControlError::Stopping { id: job.id.clone(), state: job.state });
        }
        if let Some(step) = self.raise_floor(job, &admitted)? {
            return Ok(step);
        }
        self.apply(job, &admitted, &reservation).await
    }

    /// The plan changed since it was approved: the approvals are void and
    /// the job waits for votes on the new plan (`Some`), unless the policy
    /// allows it without approval: then the new plan is recorded and the
    /// job goes on (`None`; a plan that changes at every look must not keep
    /// it from ever running).
    fn plan_changed(
        &self,
        job: &JobRecord,
        decision: &Decision,
        plan: &str,
        changes: &Value,
    ) -> Result<Option<Step>, ControlError> {
        let was = job.plan_hash.as_deref().unwrap_or("none");
        let (to, reason) = match &decision.verdict {
            Verdict::NeedsApprovals { .. } => (
                JobState::WaitingApproval,
                format!(
                    "the plan changed before apply (was {was}, now {plan}): the approvals are void; review the new plan"
                ),
            ),
            _ => (
                JobState::Approved,
                format!(
                    "the plan changed before apply (was {was}, now {plan}); the policy allows the new one without approval"
                ),
            ),
        };
        let recorded = Changes {
            decision: Some(decision),
            plan: Some((plan, changes)),
            void_approvals: Some("the plan changed"),
            outcome: None,
        };
        let step = self.settle(job, to, &reason, &recorded, json!({ "plan_hash": plan, "changes": changes }))?;
        Ok((to != JobState::Approved).then_some(step))
    }

    /// The step that sends the job back to wait when the approvals the
    /// decision asks for do not all count now; `None` when they do (and
    /// which counted is audited).
    fn approvals_missing(
        &self,
        job: &JobRecord,
        decision: &Decision,
        plan: &str,
        votes: &[StoredApproval],
        now: SystemTime,
    ) -> Result<Option<Step>, ControlError> {
        let Verdict::NeedsApprovals { approvals, group } = &decision.verdict else { return Ok(None) };
        let valid = self.control.counting(
            job,
            votes.iter().filter(|v| v.void.is_none()).map(|v| &v.approval),
            Some(group),
            now,
        );
        if (valid.len() as u32) < *approvals {
            let reason =
                format!("needs {approvals} approval(s) from group {group} for plan {plan}; {} count now", valid.len());
            let record_decision = Changes { decision: Some(decision), ..Changes::default() };
            return self.settle(job, JobState::WaitingApproval, &reason, &record_decision, json!({})).map(Some);
        }
        let keys: Vec<&str> = valid.iter().map(|a| a.key_id.as_str()).collect();
        self.audit(
            &job.id,
            ControlAction::Approvals,
            json!({ "plan_hash": plan, "counted": keys, "needed": approvals }),
        )?;
        Ok(None)
    }

    /// The step that denies the job when its playbook already ran (or is
    /// about to, in another of this worker's jobs) as often in its
    /// environment in the last hour as the budget allows; else its place
    /// under the budget.
    fn over_budget(
        &self,
        job: &JobRecord,
        decision: &Decision,
        now: SystemTime,
    ) -> Result<Result<Reservation, Step>, ControlError> {
        let limit = self.control.config.budgets.jobs_per_playbook_per_hour;
        let key = (job.playbook.clone(), job.environment.clone());
        let applied = |since| self.control.store.applied_since(&job.playbook, &job.environment, since);
        let recent = match self.together.budgets.reserve(key, limit, Timestamp::from(now), applied)? {
            Ok(reservation) => return Ok(Ok(reservation)),
            Err(recent) => recent,
        };
        let reason = format!(
            "budget: {recent} jobs of {} already ran in {} in the last hour (at most {limit}); resubmit later",
            job.playbook, job.environment
        );
        let record_decision = Changes { decision: Some(decision), ..Changes::default() };
        self.settle(job, JobState::Denied, &reason, &record_decision, json!({ "budget": "jobs-per-hour" })).map(Err)
    }

    /// Applies, verifies, and rolls back if either fails; records the
    /// outcome.
    async fn apply(
        &self,
        job: &JobRecord,
        admitted: &Admitted<SignedPlaybook>,
        reservation: &Reservation,
    ) -> Result<Step, ControlError> {
        let playbook = admitted.playbook.playbook();
        let lifecycle = Reserved { inner: &self.lifecycle, reservation };
        let report = match self.runner.run_with(playbook, &admitted.grant, &Worker::context(job), &lifecycle).await {
            Ok(report) => report,
            Err(e @ (RunError::State { .. } | RunError::MemoryCeiling { .. } | RunError::Credential { .. })) => {
                return self.not_started(job, e);
            }
            // The audit log or the journal failed: the job's state is left
            // for recovery at the next start.
            Err(e) => return Err(e.into()),
        };
        self.finished(&job.id, &report.outcome)
    }

    /// Checks the version floor again and raises it to this job's version,
    /// in one turn, just before apply: a job of an older version admitted
    /// while this one was on its way (another task's) is refused here, as
    /// it would have been one job at a time. The step that ends the job
    /// when it is refused; `None` when it may apply.
    fn raise_floor(&self, job: &JobRecord, admitted: &Admitted<SignedPlaybook>) -> Result<Option<Step>, ControlError> {
        let manifest = admitted.playbook.manifest();
        let floor = VersionFloor::new(&self.control.data_dir);
        let _turn = self.together.floor.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = floor.admit(&manifest.name, &manifest.version, false) {
            let refused = ControlError::from(e);
            if refused.fault().retry_later() {
                return Err(refused);
            }
            return self.end(job, JobState::Failed, &format!("cannot be run: {refused}")).map(Some);
        }
        if let Err(e) = floor.record(&manifest.name, &manifest.version) {
            tracing::warn!(job = %job.id, "the version floor could not be raised: {e}");
        }
        Ok(None)
    }

    /// Apply never started: at most leases were taken.
    fn not_started(&self, job: &JobRecord, error: RunError) -> Result<Step, ControlError> {
        blocking(|| self.control.store.revoke_leases(&job.id))?;
        let current = self.control.job(&job.id)?;
        if !matches!(current.state, JobState::Approved | JobState::Applying) {
            // Someone moved it first (a rejection): theirs stands.
            return Ok(Step { job: job.id.clone(), state: current.state, note: format!("not run: {error}") });
        }
        self.end(&current, JobState::Failed, &format!("could not start: {error}"))
    }

    /// Records a job's outcome as its final state.
    pub(super) fn finished(&self, id: &str, outcome: &Outcome) -> Result<Step, ControlError> {
        let to = match outcome {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::RolledBack { .. } => JobState::RolledBack,
            Outcome::RollbackFailed { .. } => JobState::RollbackFailed,
        };
        let value = serde_json::to_value(outcome).unwrap_or(Value::Null);
        let reason = match outcome.cause() {
            Some(cause) => format!("{}: {cause}", outcome.name()),
            None => outcome.name().to_string(),
        };
        let changes = Changes { outcome: Some(&value), ..Changes::default() };
        let acting = [JobState::Applying, JobState::Verifying, JobState::RollingBack];
        blocking(|| self.control.store.transition(id, &acting, to, &reason, &changes, &[]))?;
        Ok(Step { job: id.to_string(), state: to, note: reason })
    }

    /// Does what can be done now, one job at a time: relays the outbox,
    /// then takes the job that waited longest among those submitted or
    /// approved. `None` when there is nothing to do.
    pub async fn step(&self) -> Result<Option<Step>, ControlError> {
        self.relay_durably().await?;
        let now = SystemTime::now();
        let expired = self
            .control
            .store
            .all_in(&[JobState::WaitingApproval], 100)?
            .into_iter()
            .find(|waiting| waiting.expires_at.reached(Timestamp::from(now)));
        let step = if let Some(waiting) = expired {
            self.end(&waiting, JobState::Expired, "expired waiting for approvals")
        } else {
            let Some(job) = self.control.store.next(&[JobState::Submitted, JobState::Approved])? else {
                return Ok(None);
            };
            match job.state {
                JobState::Submitted => self.intake(&job).await,
                _ => self.execute(&job).await,
            }
        };
        settled(step).map(Some)
    }
}

/// A step's result, with a move someone else made first (a rejection) and
/// a job left as it was because salve stops taken for steps, not errors.
pub(super) fn settled(step: Result<Step, ControlError>) -> Result<Step, ControlError> {
    match step {
        Err(ControlError::Store(StoreError::Conflict { id, state, .. })) => {
            Ok(Step { job: id, state, note: "moved by someone else meanwhile".into() })
        }
        Err(ControlError::Stopping { id, state }) => {
            Ok(Step { job: id, state, note: "left as it was for the next start: salve is stopping".into() })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (String, String) {
        ("rotate-logs".into(), "prod".into())
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_place_under_the_budget_is_held_until_the_job_applies_and_counts_for_an_hour() {
        let budgets = Arc::<Budgets>::default();
        let none = |_| Ok::<_, ()>(Vec::new());
        // Two checks before either job applies: the second sees the first.
        let first = budgets.reserve(key(), 2, at(0), none).unwrap().unwrap();
        let second = budgets.reserve(key(), 2, at(0), none).unwrap().unwrap();
        assert_eq!(budgets.reserve(key(), 2, at(0), none).unwrap().err(), Some(2), "the budget is full");
        // The first applies: it counts as applied, once, no longer as held.
        first.release(Some(at(1)));
        first.release(None);
        drop(first);
        assert_eq!(budgets.reserve(key(), 2, at(2), none).unwrap().err(), Some(2));
        // The second never applies (denied later, say): its place comes back.
        drop(second);
        let third = budgets.reserve(key(), 2, at(3), none).unwrap();
        assert!(third.is_ok(), "the place of a job that did not apply is given back");
        drop(third);
        // An hour after the first applied, it no longer counts.
        let fourth = budgets.reserve(key(), 1, at(3600), none).unwrap().err();
        assert_eq!(fourth, Some(1), "applied 3599 s before: still counted");
        assert!(budgets.reserve(key(), 1, at(3602), none).unwrap().is_ok(), "an hour later: not counted");
        // Another playbook or environment has its own budget, read from
        // the store once: what ran before this worker started counts.
        let mut reads = 0;
        let earlier = |since: Timestamp| {
            reads += 1;
            assert_eq!(since, at(0));
            Ok::<_, ()>(vec![at(10)])
        };
        let other = ("noop".into(), "prod".into());
        assert_eq!(budgets.reserve(other.clone(), 1, at(3600), earlier).unwrap().err(), Some(1));
        assert_eq!(reads, 1);
        let unread = |_| -> Result<Vec<Timestamp>, ()> { panic!("read once per key") };
        let later = budgets.reserve(other.clone(), 1, at(3611), unread).unwrap();
        assert!(later.is_ok());
        drop(later);
        // The clock steps forward a day, then back: what the store holds of
        // the last hour counts again.
        assert!(budgets.reserve(other.clone(), 1, at(90_000), unread).unwrap().is_ok());
        let again = budgets.reserve(other, 1, at(3612), |since: Timestamp| {
            assert_eq!(since, at(12));
            Ok::<_, ()>(vec![at(3000)])
        });
        assert_eq!(again.unwrap().err(), Some(1), "read again from the store");
    }
}
