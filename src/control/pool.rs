//! Several jobs at once, in order. [`Pool`] takes up to its size of jobs
//! from the store and runs each in a task of its own ([`Worker::intake`]
//! or [`Worker::execute`], the same steps as one at a time), so that plans
//! run beside applies. It never runs two jobs on one target system
//! together: a system's jobs go one at a time, in the order they came
//! ([`crate::store::JobStore::takeable`]). What the jobs share, the audit
//! log's relay, the hourly budgets and the version floor, the worker
//! keeps in step itself.
//!
//! The trust store, policy and config are read again between takes
//! ([`Pool::reload`]): a job taken after counts what was read, one running
//! keeps what it started with, as when one job ran at a time.

use super::ControlError;
use super::worker::{Step, Worker, settled};
use crate::job::JobState;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::{Id, JoinSet};

/// The job a task holds, and the system it acts on.
struct Taken {
    job: String,
    system: String,
}

/// How a job's step ended, and how long it took.
type Ended = Result<(Step, Duration), ControlError>;

/// A worker's jobs in flight.
pub struct Pool {
    worker: Arc<Worker>,
    size: usize,
    running: JoinSet<Ended>,
    taken: HashMap<Id, Taken>,
    /// When jobs waiting for approval were last looked at for expiry.
    swept: Option<Instant>,
    /// Set at the shutdown deadline: the worker's runner stops `apply` and
    /// `verify` when it is, and rolls the job back.
    cut: Arc<AtomicBool>,
}

/// How often jobs waiting for approval are looked at for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Pool {
    /// Runs up to `size` (at least one) of `worker`'s jobs at once.
    pub fn new(mut worker: Worker, size: usize) -> Pool {
        let cut = Arc::new(AtomicBool::new(false));
        worker.runner = worker.runner.clone().with_stop(Arc::clone(&cut));
        let worker = Arc::new(worker);
        Pool { worker, size: size.max(1), running: JoinSet::new(), taken: HashMap::new(), swept: None, cut }
    }

    /// The worker jobs are taken with now.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// How many jobs run now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Reads the trust store, policy and config again, for the jobs taken
    /// from now on. On an error, nothing changes.
    pub fn reload(&mut self) -> Result<(), ControlError> {
        self.worker = Arc::new(self.worker.reloaded()?);
        Ok(())
    }

    /// Ends the jobs that expired waiting for approval (at most once a
    /// second), then takes what can start now: for each free system, the
    /// job that has waited longest, while there is room. Returns the
    /// expired jobs' steps and how many jobs it started.
    pub async fn fill(&mut self) -> Result<(Vec<Step>, usize), ControlError> {
        // Votes and rejections reach the audit log even when nothing is
        // taken, and before a job waiting for them can expire.
        self.worker.relay().await?;
        let mut ended = Vec::new();
        if self.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            self.swept = Some(Instant::now());
            ended = self.worker.expire_waiting(SystemTime::now())?;
        }
        let free = self.size - self.running.len().min(self.size);
        if free == 0 {
            return Ok((ended, 0));
        }
        let busy: Vec<&str> = self.taken.values().map(|t| t.system.as_str()).collect();
        let jobs =
            self.worker.control.store.takeable(&[JobState::Submitted, JobState::Approved], &busy, free as u32)?;
        if jobs.is_empty() {
            return Ok((ended, 0));
        }
        // Submissions and votes recorded since the relay above reach the
        // audit log before their jobs are acted on.
        self.worker.relay().await?;
        let started = jobs.len();
        for job in jobs {
            let worker = Arc::clone(&self.worker);
            let taken = Taken { job: job.id.clone(), system: job.system.clone() };
            let handle = self.running.spawn(async move {
                let began = Instant::now();
                let step = match job.state {
                    JobState::Submitted => worker.intake(&job).await,
                    _ => worker.execute(&job).await,
                };
                settled(step).map(|step| (step, began.elapsed()))
            });
            self.taken.insert(handle.id(), taken);
        }
        Ok((ended, started))
    }

    /// The next job to finish its step, and how long the step took; `None`
    /// when none runs. Safe to cancel (in `select!`): no step is lost. A
    /// job whose task panicked is an error (its state is left for recovery
    /// at the next start), so that the caller stops the rest in order.
    pub async fn next(&mut self) -> Option<Ended> {
        let joined = self.running.join_next_with_id().await?;
        Some(self.joined(joined))
    }

    /// [`Pool::next`] when a job has finished its step already; `None`
    /// when none has.
    pub fn finished(&mut self) -> Option<Ended> {
        let joined = self.running.try_join_next_with_id()?;
        Some(self.joined(joined))
    }

    fn joined(&mut self, joined: Result<(Id, Ended), tokio::task::JoinError>) -> Ended {
        match joined {
            Ok((id, result)) => {
                self.taken.remove(&id);
                result
            }
            Err(e) => {
                let job = self.taken.remove(&e.id()).map_or_else(|| "?".into(), |taken| taken.job);
                tracing::error!(job, "the task running the job ended abnormally: {e}");
                Err(ControlError::Crashed { id: job, reason: e.to_string() })
            }
        }
    }

    /// Takes no more jobs and lets those running finish their step within
    /// `deadline`; then cuts short the rest: an `apply` or `verify` stops
    /// and its job is rolled back, a plan stops and its job is left as it
    /// was for the next start. Returns the steps that ended meanwhile, and
    /// the first error.
    pub async fn stop(&mut self, deadline: Duration) -> (Vec<Step>, Option<ControlError>) {
        let mut steps = Vec::new();
        let mut failed = None;
        let until = tokio::time::Instant::now() + deadline;
        let mut cut = false;
        loop {
            let next = if cut {
                self.next().await
            } else {
                match tokio::time::timeout_at(until, self.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::warn!(
                            jobs = self.running.len(),
                            "jobs still running {deadline:?} after salve was asked to stop are cut short and rolled back"
                        );
                        self.cut.store(true, Ordering::SeqCst);
                        cut = true;
                        continue;
                    }
                }
            };
            match next {
                Some(Ok((step, _))) => steps.push(step),
                Some(Err(e)) => failed = failed.or(Some(e)),
                None => break,
            }
        }
        (steps, failed)
    }
}

impl Worker {
    /// Ends the jobs whose time ran out while they waited for approvals.
    pub(super) fn expire_waiting(&self, now: SystemTime) -> Result<Vec<Step>, ControlError> {
        let waiting = self.control.store.all_in(&[JobState::WaitingApproval], 1000)?;
        let mut steps = Vec::new();
        for job in waiting.iter().filter(|job| job.expires_at.reached(Timestamp::from(now))) {
            steps.push(settled(self.end(job, JobState::Expired, "expired waiting for approvals"))?);
        }
        Ok(steps)
    }
}
