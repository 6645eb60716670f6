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

fn print(step: &Step) {
    println!("job {}: {} ({})", step.job, step.state, salve::text::printable(&step.note));
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<Exit> {
    let layout = args.data_dir.layout()?;
    let data_dir = layout.root();
    let control = open(&args.trust, &args.data_dir)?;
    let key = super::run::runner_key(data_dir, args.runner_key.as_deref())?;
    let audit = super::run::open_audit(data_dir, key.as_ref())?;
    let sandbox = super::job_sandbox(&layout, 32)?;
    let runner = super::run::runner(sandbox, audit, data_dir, key)?;
    let mut worker = Worker::new(control, runner);
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
