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
//! with [`AuditUnavailable`] and the job fails closed.

pub mod denied;
pub mod fs;
pub mod journal;
pub mod log;

use crate::audit::{AuditLog, CallOutcome, Event, Phase};
use crate::sandbox::bindings::Error as GuestError;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a single host call may take before the guest gets `failed`.
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

/// Whether a call changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Read,
    Mutate,
}

/// What every host call of one phase shares: the job, the phase, the audit
/// log and the per-call timeout.
#[derive(Clone)]
pub struct Calls {
    pub audit: AuditLog,
    pub job: Arc<str>,
    pub phase: Phase,
    pub timeout: Duration,
}

impl Calls {
    /// Appends a record for this job (buffered).
    pub fn record(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        self.audit
            .append(Some(&self.job), event)
            .map_err(|e| AuditUnavailable(e.to_string()).into())
    }

    /// Appends a record for this job and waits until it is durable.
    pub async fn record_durable(&self, event: &Event<'_>) -> wasmtime::Result<u64> {
        self.audit
            .append_durable(Some(&self.job), event)
            .await
            .map_err(|e| AuditUnavailable(e.to_string()).into())
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
        let intent = match effect {
            Effect::Read => None,
            Effect::Mutate => Some(
                self.record_durable(&Event::Intent {
                    interface,
                    function,
                    args: &args,
                })
                .await?,
            ),
        };
        let result = self.blocking(op).await;
        let (outcome, summary) = match &result {
            Ok(value) => (CallOutcome::Ok, summarize(value)),
            Err(error) => (error.outcome(), Value::Null),
        };
        self.record_call(interface, function, &args, &outcome, &summary, started, intent)?;
        Ok(result.map_err(GuestError::from))
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
        self.record_call(
            interface,
            function,
            args,
            &refusal.outcome(),
            &Value::Null,
            Instant::now(),
            None,
        )?;
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
        self.record(&Event::Call {
            interface,
            function,
            args,
            outcome,
            result,
            duration_us,
            intent,
        })
        .map(drop)
    }

    /// Runs a blocking operation on the blocking pool, under the host-call
    /// timeout. On timeout the guest gets `failed`; the operation may still
    /// finish later, which is why a mutating call's intent is recorded first.
    pub async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> Result<T, CapError> + Send + 'static,
    ) -> Result<T, CapError> {
        match tokio::time::timeout(self.timeout, tokio::task::spawn_blocking(op)).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(CapError::Failed(format!("the host operation panicked: {join}"))),
            Err(_) => Err(CapError::Failed(format!(
                "the host operation did not finish within {}",
                humantime::format_duration(self.timeout)
            ))),
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
