//! Host capabilities: one module per interface of `wit/`, each with its own
//! view of the store and its own `add_to_linker`, plus [`denied`], the stub
//! that stands in for an interface the task was not granted.
//!
//! Every host call goes through [`Calls::perform`], which writes the audit
//! records in one place: refusals and reads as one `call` record, mutating
//! calls as a durable `intent` record before the effect and a `call` record
//! after it.
//!
//! # Errors
//! What the guest sees is a [`CapError`], turned into the WIT `error`. A
//! call whose audit record cannot be written is not made: the guest traps
//! with [`AuditUnavailable`] and the job fails closed. A mutating call that
//! outlives the host-call timeout traps the guest with
//! [`HostCallTimedOut`]: its effect may still land, so the runner waits for
//! it (see [`InFlight`]) before anything else touches the target.

pub mod denied;
pub mod exec;
pub mod fs;
pub mod http;
pub mod journal;
pub mod log;

use crate::audit::{AuditLog, CallOutcome, Event, Phase};
use crate::bindings::Error as GuestError;
use crate::credentials::Lease;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest a single host call may take before the guest gets `failed` (a
/// read) or traps (a mutating call).
pub const DEFAULT_HOST_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a host call did not do what the guest asked, as the guest will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("not found")]
    NotFound,
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl CapError {
    pub fn outcome(&self) -> CallOutcome {
        match self.clone() {
            CapError::Denied(reason) => CallOutcome::Denied(reason),
            CapError::NotFound => CallOutcome::NotFound,
            CapError::Invalid(reason) => CallOutcome::Invalid(reason),
            CapError::Failed(reason) => CallOutcome::Failed(reason),
        }
    }
}

impl From<CapError> for GuestError {
    fn from(error: CapError) -> GuestError {
        match error {
            CapError::Denied(reason) => GuestError::Denied(reason),
            CapError::NotFound => GuestError::NotFound,
            CapError::Invalid(reason) => GuestError::Invalid(reason),
            CapError::Failed(reason) => GuestError::Failed(reason),
        }
    }
}

/// The audit log could not be written, so the call was not made. Traps the
/// guest.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log cannot be written ({0}); the host call was refused")]
pub struct AuditUnavailable(pub String);

/// A mutating host call did not finish within the host-call timeout. Traps
/// the guest; the operation may still complete.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{interface}.{function} did not finish within {}; it may still take effect", humantime::format_duration(*.timeout))]
pub struct HostCallTimedOut {
    pub interface: &'static str,
    pub function: &'static str,
    pub timeout: Duration,
}

/// Whether a call changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Mutate,
}

/// Host operations of one job still running on the blocking pool, including
/// those whose caller gave up waiting (a timeout, a phase stopped at its
/// deadline). Nothing may touch the target again until they are done.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Decrements [`InFlight`] when the operation ends, however it ends.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    /// Waits until no operation is running; `false` if some still are after
    /// `within`.
    pub async fn settled(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count.load(Ordering::Acquire) == 0;
            }
        }
    }
}

/// What one job may still spend: bytes written, and mutating host calls
/// (its blast-radius budget). Shared by the job's phases.
///
/// `apply`'s budget refuses a write past it (the playbook sees `denied`)
/// and stops the job at the mutating call past it. A rollback's budget
/// ([`Budget::for_rollback`]) stops at either: a rollback doing more than
/// it may is not putting back what apply did.
pub struct Budget {
    bytes: AtomicU64,
    total_bytes: u64,
    mutations: AtomicU64,
    total_mutations: u64,
    stop_at_bytes: bool,
    /// A write was refused (kept only when `stop_at_bytes`).
    overrun: AtomicBool,
    /// Bytes of existing files the job's calls replaced, truncated away or
    /// removed: what a rollback may have to write back.
    destroyed: AtomicU64,
}

/// The job's budget is spent: the call past it traps the guest, and the job
/// stops (apply is then rolled back; a rollback fails).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the job's budget of {limit} {what} is spent; the job is stopped")]
pub struct BudgetSpent {
    pub what: &'static str,
    pub limit: u64,
}

/// What a rollback may do beyond what `apply` did: a small allowance for
/// the rollback's own bookkeeping (a removed temporary file, a mode put
/// back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slack {
    pub bytes: u64,
    pub mutations: u64,
}

impl Budget {
    pub fn new(bytes: u64, mutations: u64) -> Budget {
        Budget {
            bytes: AtomicU64::new(bytes),
            total_bytes: bytes,
            mutations: AtomicU64::new(mutations),
            total_mutations: mutations,
            stop_at_bytes: false,
            overrun: AtomicBool::new(false),
            destroyed: AtomicU64::new(0),
        }
    }

    /// A rollback's budget, bounded by what apply did: `applied` (bytes
    /// written or destroyed, see [`Budget::applied`], and mutating calls
    /// made), plus the bytes the journal holds
    /// (what rollback writes back), with one mutating call to undo each of
    /// apply's and one to restore each journal entry (at most one per call
    /// of apply's), plus `slack`. Past it, the rollback stops.
    pub fn for_rollback(applied: (u64, u64), journal: (u64, u64), slack: Slack) -> Budget {
        let (applied_bytes, applied_mutations) = applied;
        let (journal_bytes, journal_entries) = journal;
        let bytes = applied_bytes.saturating_add(journal_bytes).saturating_add(slack.bytes);
        let mutations =
            applied_mutations.saturating_add(journal_entries.min(applied_mutations)).saturating_add(slack.mutations);
        Budget { stop_at_bytes: true, ..Budget::new(bytes, mutations) }
    }

    /// What has been spent so far: bytes written, mutating calls made.
    pub fn spent(&self) -> (u64, u64) {
        let bytes = self.total_bytes - self.bytes.load(Ordering::Acquire);
        let mutations = self.total_mutations - self.mutations.load(Ordering::Acquire);
        (bytes, mutations)
    }

    /// What the job's calls did, for its rollback's bound: bytes written
    /// plus bytes of existing files replaced, truncated away or removed
    /// (rollback writes those back), and mutating calls made.
    pub fn applied(&self) -> (u64, u64) {
        let (written, mutations) = self.spent();
        (written.saturating_add(self.destroyed.load(Ordering::Acquire)), mutations)
    }

    /// Counts `bytes` of existing files a call replaced or removed.
    pub fn destroyed(&self, bytes: u64) {
        self.destroyed.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` from the budget, or refuses without taking any. A
    /// rollback's budget remembers the refusal: see [`Budget::stopped`].
    pub fn spend(&self, bytes: u64) -> Result<(), CapError> {
        self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes)).map(drop).map_err(
            |left| {
                if self.stop_at_bytes {
                    self.overrun.store(true, Ordering::Release);
                }
                CapError::Denied(format!(
                    "the job's write budget is spent: {bytes} more bytes asked, {left} of {} left",
                    self.total_bytes
                ))
            },
        )
    }

    /// Takes one mutating call from the budget, or says it is spent.
    pub fn mutate(&self) -> Result<(), BudgetSpent> {
        self.mutations
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
            .map(drop)
            .map_err(|_| BudgetSpent { what: "mutating host calls", limit: self.total_mutations })
    }

    /// For a budget that stops at bytes: whether a write was refused, as
    /// the trap that stops the guest.
    pub fn stopped(&self) -> Option<BudgetSpent> {
        self.overrun.load(Ordering::Acquire).then_some(BudgetSpent { what: "bytes written", limit: self.total_bytes })
    }
}

/// Refused calls recorded one by one in each phase; past it they are
/// counted, and the phase's end records how many (like log suppression).
pub const MAX_RECORDED_REFUSALS: u64 = 100;

/// The refused calls of one phase: how many were recorded, and how many of
/// each function were only counted. The first refusal of each function is
/// always recorded, so a playbook cannot spend the bound on harmless
/// refusals to hide the one it cares about.
#[derive(Default)]
pub struct Refusals {
    recorded: AtomicU64,
    /// Per `interface.function`: whether one was recorded, and how many
    /// were counted only.
    functions: std::sync::Mutex<std::collections::BTreeMap<String, (bool, u64)>>,
}

impl Refusals {
    /// Whether the next refusal of `interface.function` is recorded (else
    /// it is counted).
    fn admit(&self, interface: &str, function: &str) -> bool {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let entry = functions.entry(format!("{interface}.{function}")).or_default();
        let under_bound = self
            .recorded
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_RECORDED_REFUSALS).then_some(n + 1))
            .is_ok();
        let admitted = under_bound || !entry.0;
        if admitted {
            entry.0 = true;
        } else {
            entry.1 += 1;
        }
        admitted
    }

    /// Refusals past the bound, counted and not recorded, by function.
    pub fn suppressed(&self) -> Vec<(String, u64)> {
        let functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        functions.iter().filter(|(_, (_, n))| *n > 0).map(|(f, (_, n))| (f.clone(), *n)).collect()
    }
}

/// The audit bytes one job may still write through its host calls. Past
/// it, the job stops (and is rolled back): a playbook cannot fill the disk
/// through the log.
pub struct AuditBytes {
    left: AtomicU64,
    total: u64,
}

/// The job's audit byte budget is spent: traps the guest.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the job's audit budget of {limit} bytes is spent (set limits.audit_bytes to allow more); the job is stopped")]
pub struct AuditBudgetSpent {
    pub limit: u64,
}

impl AuditBytes {
    pub fn new(total: u64) -> AuditBytes {
        AuditBytes { left: AtomicU64::new(total), total }
    }

    /// Takes `bytes`; once they are more than is left, says it is spent
    /// (and stays spent).
    fn charge(&self, bytes: u64) -> Result<(), AuditBudgetSpent> {
        match self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| Some(left.saturating_sub(bytes))) {
            Ok(left) if left >= bytes => Ok(()),
            _ => Err(AuditBudgetSpent { limit: self.total }),
        }
    }
}

/// A store's data that holds its phase's [`Calls`]: how [`denied`] audits a
/// refused call without naming the sandbox's store type.
pub trait HasCalls {
    fn calls(&self) -> &Calls;
}

/// What every host call of one phase shares: the job, the phase, the audit
/// log, the per-call timeout, and the job's in-flight operations and write
/// budget.
///
/// Built with [`Calls::new`] and the `with_` methods; its fields are the
/// host modules' own.
#[derive(Clone)]
pub struct Calls {
    audit: AuditLog,
    job: Arc<str>,
    phase: Phase,
    timeout: Duration,
    inflight: Arc<InFlight>,
    budget: Arc<Budget>,
    /// Run reads on the calling thread instead of the blocking pool (see
    /// [`crate::sandbox::SandboxConfig::inline_reads`]).
    inline_reads: bool,
    /// The credentials leased to the job.
    leases: Arc<[Lease]>,
    /// Removes their values from what the guest gets back.
    redactor: Arc<crate::redact::Redactor>,
    /// When the phase's deadline passes: no host operation is given longer.
    deadline: Instant,
    /// What `exec` commands run under (see [`crate::reaper`]), if anything.
    reaper: Option<Arc<std::path::Path>>,
    /// This phase's refused calls.
    refusals: Arc<Refusals>,
    /// The job's audit byte budget.
    audit_bytes: Arc<AuditBytes>,
}

impl Calls {
    /// The calls of `job`'s `phase`, audited to `audit`, until `deadline`.
    /// Until told otherwise: the default host-call timeout, reads on the
    /// blocking pool, a budget of nothing (no bytes written, no mutating
    /// call), no credentials, and in-flight operations of its own.
    pub fn new(audit: AuditLog, job: Arc<str>, phase: Phase, deadline: Instant) -> Calls {
        Calls {
            audit,
            job,
            phase,
            timeout: DEFAULT_HOST_CALL_TIMEOUT,
            inflight: Arc::default(),
            budget: Arc::new(Budget::new(0, 0)),
            inline_reads: false,
            leases: Vec::new().into(),
            redactor: Arc::new(crate::redact::Redactor::none()),
            deadline,
            reaper: None,
            refusals: Arc::default(),
            audit_bytes: Arc::new(AuditBytes::new(crate::scope::limits::DEFAULT_AUDIT_BYTES)),
        }
    }

    /// Longest one host call may take.
    pub fn with_timeout(self, timeout: Duration) -> Calls {
        Calls { timeout, ..self }
    }

    /// The job's in-flight operations, shared by its phases.
    pub fn with_inflight(self, inflight: Arc<InFlight>) -> Calls {
        Calls { inflight, ..self }
    }

    /// The job's budget, shared by its phases.
    pub fn with_budget(self, budget: Arc<Budget>) -> Calls {
        Calls { budget, ..self }
    }

    /// Run reads on the calling thread (see
    /// [`crate::sandbox::SandboxConfig::inline_reads`]).
    pub fn with_inline_reads(self, inline_reads: bool) -> Calls {
        Calls { inline_reads, ..self }
    }

    /// The credentials leased to the job.
    pub fn with_leases(self, leases: Arc<[Lease]>) -> Calls {
        let redactor = Arc::new(crate::credentials::redactor(&leases));
        Calls { leases, redactor, ..self }
    }

    /// The job's audit byte budget, shared by its phases.
    pub fn with_audit_bytes(self, audit_bytes: Arc<AuditBytes>) -> Calls {
        Calls { audit_bytes, ..self }
    }

    /// Runs `exec` commands under the reaper at `reaper` (the `salve`
    /// binary), so nothing they start outlives them.
    pub fn with_reaper(self, reaper: Option<Arc<std::path::Path>>) -> Calls {
        Calls { reaper, ..self }
    }

    /// The reaper `exec` commands run under, if any.
    pub fn reaper(&self) -> Option<&std::path::Path> {
        self.reaper.as_deref()
    }

    /// This phase's refused calls.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Longest one host call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Appends a record for this job (buffered).
    /// Past the job's audit byte budget, the record is still written, and
    /// the guest traps.
    pub fn record(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        let (seq, bytes) =
            self.audit.append_sized(Some(&self.job), event).map_err(|e| AuditUnavailable(e.to_string()))?;
        self.audit_bytes.charge(bytes)?;
        Ok(seq)
    }

    /// Appends a record for this job and waits until it is durable.
    pub async fn record_durable(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        let seq = self.record(event)?;
        self.audit.sync(seq).await.map_err(|e| AuditUnavailable(e.to_string()))?;
        Ok(seq)
    }

    /// Performs one host call and audits it.
    ///
    /// `prepared` is the call after its checks: a refusal, or the blocking
    /// operation to run (on the blocking pool, under the host-call timeout).
    /// `summarize` turns a result into what the audit record says of it.
    pub async fn perform<T, Op>(
        &self,
        interface: &'static str,
        function: &'static str,
        args: Value,
        effect: Effect,
        prepared: Result<Op, CapError>,
        summarize: impl FnOnce(&T) -> Value,
    ) -> wasmtime::Result<Result<T, GuestError>>
    where
        T: Send + 'static,
        Op: FnOnce() -> Result<T, CapError> + Send + 'static,
    {
        let started = Instant::now();
        let op = match prepared {
            Ok(op) => op,
            Err(refusal) => return self.refuse(interface, function, &args, refusal),
        };
        let intent = self.intend(interface, function, &args, effect).await?;
        let ran = if effect == Effect::Read && self.inline_reads { Some(op()) } else { self.blocking(op).await };
        self.conclude(interface, function, &args, (effect, self.timeout), started, intent, ran, summarize)
    }

    /// Like [`Calls::perform`], for an operation that is a future (a child
    /// process, a request): it runs as its own task, counted in
    /// [`InFlight`], and may take up to `limit`.
    #[allow(clippy::too_many_arguments)] // perform's arguments, and the time limit
    pub async fn perform_task<T, F>(
        &self,
        interface: &'static str,
        function: &'static str,
        args: Value,
        effect: Effect,
        prepared: Result<F, CapError>,
        limit: Duration,
        summarize: impl FnOnce(&T) -> Value,
    ) -> wasmtime::Result<Result<T, GuestError>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, CapError>> + Send + 'static,
    {
        let started = Instant::now();
        let task = match prepared {
            Ok(task) => task,
            Err(refusal) => return self.refuse(interface, function, &args, refusal),
        };
        let intent = self.intend(interface, function, &args, effect).await?;
        let limit = limit.min(self.remaining() + Duration::from_secs(1));
        let guard = self.inflight.begin();
        let handle = tokio::spawn(async move {
            let result = task.await;
            drop(guard);
            result
        });
        let ran = match tokio::time::timeout(limit, handle).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(_)) => Some(Err(CapError::Failed("the host operation panicked".into()))),
            Err(_) => None,
        };
        self.conclude(interface, function, &args, (effect, limit), started, intent, ran, summarize)
    }

    /// Before a mutating call: its intent, durable.
    async fn intend(
        &self,
        interface: &str,
        function: &str,
        args: &Value,
        effect: Effect,
    ) -> wasmtime::Result<Option<u64>> {
        match effect {
            Effect::Read => Ok(None),
            Effect::Mutate => {
                // apply stops while there is room to audit its rollback.
                if self.phase == Phase::Apply
                    && let Some(reason) = self.audit.short_of_room()
                {
                    let outcome = CallOutcome::Denied(reason.clone());
                    self.record_call(interface, function, args, &outcome, &Value::Null, Instant::now(), None)?;
                    return Err(AuditUnavailable(reason).into());
                }
                if let Err(spent) = self.budget.mutate() {
                    let outcome = CallOutcome::Denied(spent.to_string());
                    self.record_call(interface, function, args, &outcome, &Value::Null, Instant::now(), None)?;
                    return Err(spent.into());
                }
                Ok(Some(self.record_durable(&Event::Intent { interface, function, args }).await?))
            }
        }
    }

    /// After a call: its record, and what the guest gets. `None` means the
    /// operation outlived its time: a mutating call then traps.
    #[allow(clippy::too_many_arguments)] // one field of the record each
    fn conclude<T>(
        &self,
        interface: &'static str,
        function: &'static str,
        args: &Value,
        (effect, limit): (Effect, Duration),
        started: Instant,
        intent: Option<u64>,
        ran: Option<Result<T, CapError>>,
        summarize: impl FnOnce(&T) -> Value,
    ) -> wasmtime::Result<Result<T, GuestError>> {
        let Some(result) = ran else {
            let timed_out = HostCallTimedOut { interface, function, timeout: limit };
            let outcome = CallOutcome::Failed(timed_out.to_string());
            self.record_call(interface, function, args, &outcome, &Value::Null, started, intent)?;
            return match effect {
                Effect::Mutate => Err(timed_out.into()),
                Effect::Read => Ok(Err(GuestError::Failed(timed_out.to_string()))),
            };
        };
        let (outcome, summary) = match &result {
            Ok(value) => (CallOutcome::Ok, summarize(value)),
            Err(error) => (error.outcome(), Value::Null),
        };
        self.record_call(interface, function, args, &outcome, &summary, started, intent)?;
        if let (Err(_), Some(spent)) = (&result, self.budget.stopped()) {
            return Err(spent.into());
        }
        Ok(result.map_err(GuestError::from))
    }

    /// The time left before the phase's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The lease of credential `name` for this job, or why not.
    pub fn lease(&self, name: &str) -> Result<&Lease, CapError> {
        self.leases
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| CapError::Failed(format!("credential {name} was not leased to this job")))
    }

    /// Removes every form of every credential leased to the job from
    /// `bytes` (output that may change length), before the guest sees
    /// them.
    pub fn redact(&self, bytes: &mut Vec<u8>) {
        self.redactor.redact(bytes);
    }

    /// Whether any credential is leased to the job.
    pub fn holds_leases(&self) -> bool {
        !self.leases.is_empty()
    }

    /// The job's redactor, shared: for reads that must keep their length.
    pub fn redactor_shared(&self) -> &Arc<crate::redact::Redactor> {
        &self.redactor
    }

    /// How many bytes past a cut must be kept so that a credential spanning
    /// the cut is still redacted whole: redact, then cut.
    pub fn redaction_slack(&self) -> usize {
        self.redactor.slack() + 1
    }

    /// Audits a call refused before it started and hands the guest the
    /// refusal.
    pub fn refuse<T>(
        &self,
        interface: &str,
        function: &str,
        args: &Value,
        refusal: CapError,
    ) -> wasmtime::Result<Result<T, GuestError>> {
        if self.refusals.admit(interface, function) {
            self.record_call(interface, function, args, &refusal.outcome(), &Value::Null, Instant::now(), None)?;
        }
        if let Some(spent) = self.budget.stopped() {
            return Err(spent.into());
        }
        Ok(Err(refusal.into()))
    }

    #[allow(clippy::too_many_arguments)] // one field of the record each
    fn record_call(
        &self,
        interface: &str,
        function: &str,
        args: &Value,
        outcome: &CallOutcome,
        result: &Value,
        started: Instant,
        intent: Option<u64>,
    ) -> wasmtime::Result<()> {
        let duration_us = started.elapsed().as_micros() as u64;
        self.record(&Event::Call { interface, function, args, outcome, result, duration_us, intent }).map(drop)
    }

    /// Runs a blocking operation on the blocking pool, counted in
    /// [`InFlight`] until it ends. `None` when it outlives the host-call
    /// timeout (it keeps running, and stays counted).
    pub async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> Result<T, CapError> + Send + 'static,
    ) -> Option<Result<T, CapError>> {
        let guard = self.inflight.begin();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op))
                .unwrap_or_else(|_| Err(CapError::Failed("the host operation panicked".into())));
            let _ = sender.send(result);
            drop(guard);
        });
        match tokio::time::timeout(self.timeout, receiver).await {
            Ok(Ok(result)) => Some(result),
            Ok(Err(_)) => Some(Err(CapError::Failed("the host operation was lost".into()))),
            Err(_) => None,
        }
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; says whether
/// it cut.
pub fn bounded(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// How an audit record holds a string from the guest: in full when it is at
/// most `max` bytes, else by its SHA-256 and length, with its first `max`
/// bytes and a `truncated` mark. Two different values are never recorded
/// the same.
pub fn audited(text: &str, max: usize) -> Value {
    match bounded(text, max) {
        (whole, false) => Value::String(whole.to_string()),
        (prefix, true) => serde_json::json!({
            "truncated": true,
            "bytes": text.len(),
            "sha256": digest(text.as_bytes()),
            "prefix": prefix,
        }),
    }
}

/// SHA-256 of `bytes`, hex: how the audit log names data it does not hold.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_operations_are_waited_for_even_when_their_caller_gave_up() {
        let inflight = Arc::new(InFlight::default());
        let guard = inflight.begin();
        assert!(!inflight.settled(Duration::from_millis(20)).await);
        let waiter = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.settled(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn a_long_value_is_recorded_by_its_digest_never_cut_silently() {
        assert_eq!(audited("logs/a.txt", 16), serde_json::json!("logs/a.txt"));
        let (a, b) = (format!("{}a", "x".repeat(20)), format!("{}b", "x".repeat(20)));
        let (ra, rb) = (audited(&a, 16), audited(&b, 16));
        assert_eq!(ra["truncated"], true);
        assert_eq!(ra["bytes"], 21);
        assert_eq!(ra["prefix"], "x".repeat(16));
        assert_eq!(ra["sha256"], digest(a.as_bytes()));
        assert_ne!(ra, rb, "values that share a prefix are told apart");
    }

    #[test]
    fn the_budget_refuses_without_spending() {
        let budget = Budget::new(100, 2);
        budget.mutate().unwrap();
        budget.mutate().unwrap();
        assert_eq!(budget.mutate().unwrap_err().limit, 2);
        budget.spend(60).unwrap();
        assert!(matches!(budget.spend(50), Err(CapError::Denied(m)) if m.contains("40 of 100 left")));
        budget.spend(40).unwrap();
        assert!(budget.spend(1).is_err());
        assert!(budget.stopped().is_none(), "apply's budget refuses the write and goes on");
        assert_eq!(budget.spent(), (100, 2));
    }

    #[test]
    fn a_rollback_budget_is_what_apply_did_and_stops_past_it() {
        let slack = Slack { bytes: 10, mutations: 1 };
        // apply wrote 100 bytes in 3 calls; the journal holds 50 bytes in 5 entries.
        let budget = Budget::for_rollback((100, 3), (50, 5), slack);
        for _ in 0..7 {
            budget.mutate().unwrap();
        }
        let spent = budget.mutate().unwrap_err();
        assert_eq!((spent.what, spent.limit), ("mutating host calls", 7), "3 + min(5, 3) + 1");
        budget.spend(160).unwrap();
        assert!(budget.stopped().is_none());
        assert!(budget.spend(1).is_err());
        let stopped = budget.stopped().expect("a refused write stops a rollback");
        assert_eq!((stopped.what, stopped.limit), ("bytes written", 160));
    }
}
