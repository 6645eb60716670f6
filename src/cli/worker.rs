//! `salve worker`: plans submitted jobs and runs approved ones until
//! stopped; at start, rolls back the jobs a stopped runner left behind.

use super::jobs::{TrustArg, open};
use super::{DataDirArg, Exit, classified};
use salve::control::{Step, Worker};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Stop once there is nothing left to do (for scripts and tests)
    #[arg(long)]
    until_idle: bool,
    /// How often to look for work when there is none
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// The key that seals each job in the audit log [default:
    /// DATA_DIR/keys/runner.key, if present]
    #[arg(long, value_name = "KEY")]
    runner_key: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
}

pub fn print(step: &Step) {
    println!("job {}: {} ({})", step.job, step.state, salve::text::printable(&step.note));
}

/// The worker of a data directory: its control plane, and a runner that
/// holds the audit log (one process at a time).
pub fn start(trust: &TrustArg, data_dir: &DataDirArg, runner_key: Option<&std::path::Path>) -> anyhow::Result<Worker> {
    let layout = data_dir.layout()?;
    let root = layout.root();
    let control = open(trust, data_dir)?;
    let key = super::run::runner_key(root, runner_key)?;
    let audit = super::run::open_audit(root, key.as_ref())?;
    let sandbox = super::job_sandbox(&layout, 32)?;
    let runner = super::run::runner(sandbox, audit, root, key)?;
    Ok(Worker::new(control, runner))
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<Exit> {
    let mut worker = start(&args.trust, &args.data_dir, args.runner_key.as_deref())?;
    // The worker finishes the job in hand (stopping in the middle of
    // `apply` would leave it for recovery) and exits.
    let stop = super::run::stop_on_signals("the worker finishes the job in hand and exits")?;

    worker.relay().await.map_err(classified)?;
    for step in worker.recover().await.map_err(classified)? {
        print(&step);
    }
    while !stop.load(Ordering::SeqCst) {
        // A revoked key, a new policy or change window counts from the next
        // job on. A file that no longer parses keeps the last good one.
        if let Err(e) = worker.control.reload() {
            tracing::error!("the trust store, policy or config no longer loads; keeping the last good ones: {e}");
        }
        match worker.step().await.map_err(classified)? {
            Some(step) => print(&step),
            None if args.until_idle => break,
            None => tokio::time::sleep(args.poll).await,
        }
    }
    worker.runner().audit().sync_blocking()?;
    Ok(Exit::Succeeded)
}
