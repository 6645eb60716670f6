//! `salve worker`: plans submitted jobs and runs approved ones, several at
//! once, until stopped; at start, rolls back the jobs a stopped runner left
//! behind. [`drive`] is the loop `salve serve` runs too.

use super::jobs::{TrustArg, open};
use super::{DataDirArg, Exit, classified};
use salve::control::{Pool, Step, Worker};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What `salve worker` and `salve serve` run jobs with.
#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// How many jobs run at once (never two on one target system)
    /// [default: four per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// After SIGINT or SIGTERM, how long running jobs get to finish;
    /// then `apply` and `verify` are cut short and rolled back
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    stop_deadline: Duration,
    /// How often to look for work when nothing woke the worker
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// The key that seals each job in the audit log [default:
    /// DATA_DIR/keys/runner.key, if present]
    #[arg(long, value_name = "KEY")]
    pub runner_key: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArg,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Stop once there is nothing left to do (for scripts and tests)
    #[arg(long)]
    until_idle: bool,
    #[command(flatten)]
    runner: RunnerArgs,
}

pub fn print(step: &Step) {
    println!("job {}: {} ({})", step.job, step.state, salve::text::printable(&step.note));
}

impl RunnerArgs {
    /// The worker of a data directory: its control plane, and a runner that
    /// holds the audit log (one process at a time).
    pub fn worker(&self) -> anyhow::Result<Worker> {
        let layout = self.data_dir.layout()?;
        let root = layout.root();
        let control = open(&self.trust, &self.data_dir)?;
        let key = super::run::runner_key(&layout, self.runner_key.as_deref())?;
        let audit = super::run::open_audit(root, key.as_ref())?;
        let sandbox = super::job_sandbox(&layout, 32)?;
        let runner = super::run::runner(sandbox, audit, &layout, key)?;
        Ok(Worker::new(control, runner))
    }

    /// How many jobs run at once.
    pub fn jobs(&self) -> usize {
        match self.jobs {
            Some(n) => usize::from(n),
            None => 4 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// How often the worker reads the trust store, policy and config again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where the worker's loop stops, and what wakes it.
pub struct Drive<'a> {
    pub stop: &'a AtomicBool,
    /// Rung when a job or a vote arrives.
    pub wake: Option<&'a Notify>,
    /// Stop once nothing runs and nothing can be taken.
    pub until_idle: bool,
}

/// The worker's loop: relay, recover, then take and run jobs until
/// stopped; then let running jobs finish within the stop deadline. `told`
/// hears every step, with how long it took when it was a job's.
pub async fn drive(
    worker: Worker,
    args: &RunnerArgs,
    drive: Drive<'_>,
    ready: impl FnOnce(),
    mut told: impl FnMut(&Step, Option<Duration>),
) -> anyhow::Result<()> {
    worker.relay_durably().await.map_err(classified)?;
    for step in worker.recover().await.map_err(classified)? {
        told(&step, None);
    }
    ready();
    let mut pool = Pool::new(worker, args.jobs());
    let mut reloaded = Instant::now();
    let wake = async || match drive.wake {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    };
    let ran = 'run: loop {
        if drive.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        // A revoked key, a new policy or change window counts for the jobs
        // taken from then on. A file that no longer parses keeps the last
        // good one.
        if reloaded.elapsed() >= RELOAD_EVERY {
            reloaded = Instant::now();
            if let Err(e) = pool.reload() {
                tracing::error!("the trust store, policy or config no longer loads; keeping the last good ones: {e}");
            }
        }
        let started = match pool.fill().await {
            Ok((ended, started)) => {
                ended.iter().for_each(|step| told(step, None));
                started
            }
            Err(e) => break Err(e),
        };
        if pool.running() == 0 && started == 0 && drive.until_idle {
            break Ok(());
        }
        tokio::select! {
            next = pool.next(), if pool.running() > 0 => {
                // Every step finished by now, then one look for more work.
                let mut next = next;
                while let Some(finished) = next {
                    match finished {
                        Ok((step, took)) => told(&step, Some(took)),
                        Err(e) => break 'run Err(e),
                    }
                    next = pool.finished();
                }
            }
            () = wake(), if pool.running() < args.jobs() => {}
            () = tokio::time::sleep(args.poll) => {}
        }
    };
    let (steps, failed) = pool.stop(args.stop_deadline).await;
    for step in &steps {
        told(step, None);
    }
    // What arrived meanwhile (a rejection, a vote) reaches the log too.
    let relayed = pool.worker().relay_durably().await.map_err(classified);
    pool.worker().runner().audit().sync_blocking()?;
    relayed?;
    ran.map_err(classified)?;
    failed.map_or(Ok(()), |e| Err(classified(e)))
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<Exit> {
    let worker = args.runner.worker()?;
    let stop = super::run::stop_on_signals("running jobs get the stop deadline to finish")?;
    let drive_until = Drive { stop: &stop, wake: None, until_idle: args.until_idle };
    drive(worker, &args.runner, drive_until, || {}, |step, _| print(step)).await?;
    Ok(Exit::Succeeded)
}
