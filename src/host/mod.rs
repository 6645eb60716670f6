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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
pub struct Budget {
    bytes: AtomicU64,
    total_bytes: u64,
    mutations: AtomicU64,
    total_mutations: u64,
}

/// The job made more mutating host calls than its budget allows. Traps the
/// guest: the job stops, and is rolled back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the job's budget of {limit} mutating host calls is spent; the job is stopped")]
pub struct MutationBudgetSpent {
    pub limit: u64,
}

impl Budget {
    pub fn new(bytes: u64, mutations: u64) -> Budget {
        Budget {
            bytes: AtomicU64::new(bytes),
            total_bytes: bytes,
            mutations: AtomicU64::new(mutations),
            total_mutations: mutations,
        }
    }

    /// No limit: for rollback, which must not stop halfway.
    pub fn unlimited() -> Budget {
        Budget::new(u64::MAX, u64::MAX)
    }

    /// Takes `bytes` from the budget, or refuses without taking any.
    pub fn spend(&self, bytes: u64) -> Result<(), CapError> {
        self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes)).map(drop).map_err(
            |left| {
                CapError::Denied(format!(
                    "the job's write budget is spent: {bytes} more bytes asked, {left} of {} left",
                    self.total_bytes
                ))
            },
        )
    }

    /// Takes one mutating call from the budget, or says it is spent.
    pub fn mutate(&self) -> Result<(), MutationBudgetSpent> {
        self.mutations
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
            .map(drop)
            .map_err(|_| MutationBudgetSpent { limit: self.total_mutations })
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
    /// When the phase's deadline passes: no host operation is given longer.
    deadline: Instant,
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
            deadline,
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
        Calls { leases, ..self }
    }

    /// Longest one host call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Appends a record for this job (buffered).
    pub fn record(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        self.audit.append(Some(&self.job), event).map_err(|e| AuditUnavailable(e.to_string()).into())
    }

    /// Appends a record for this job and waits until it is durable.
    pub async fn record_durable(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        self.audit.append_durable(Some(&self.job), event).await.map_err(|e| AuditUnavailable(e.to_string()).into())
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

    /// Removes the value of every credential leased to the job from
    /// `bytes`, before the guest sees them.
    pub fn redact(&self, bytes: &mut Vec<u8>) {
        for lease in self.leases.iter() {
            lease.redact(bytes);
        }
    }

    /// How many bytes past a cut must be kept so that a credential spanning
    /// the cut is still redacted whole: redact, then cut.
    pub fn redaction_slack(&self) -> usize {
        self.leases.iter().map(|l| l.len()).max().unwrap_or(0)
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
        self.record_call(interface, function, args, &refusal.outcome(), &Value::Null, Instant::now(), None)?;
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
    fn the_budget_refuses_without_spending() {
        let budget = Budget::new(100, 2);
        budget.mutate().unwrap();
        budget.mutate().unwrap();
        assert_eq!(budget.mutate().unwrap_err().limit, 2);
        budget.spend(60).unwrap();
        assert!(matches!(budget.spend(50), Err(CapError::Denied(m)) if m.contains("40 of 100 left")));
        budget.spend(40).unwrap();
        assert!(budget.spend(1).is_err());
    }
}
