//! `salve serve`: the control plane over HTTP, and the worker in the same
//! process (the audit log's one writer). SIGINT or SIGTERM: stop taking
//! requests, let open ones finish, finish the job in hand, sync the audit
//! log, exit 0.

use super::jobs::{TrustArg, open};
use super::worker::{print, start};
use super::{DataDirArg, Exit, classified};
use salve::serve::webhooks::{Retry, Webhooks};
use salve::serve::{Limits, Shared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen: loopback only (plain HTTP); port 0 picks a free one
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8750", env = "SALVE_LISTEN")]
    listen: SocketAddr,
    /// Serve TLS with this certificate chain (PEM); needed to listen beyond loopback
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM, mode 0600)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The URL clients use to reach this server (behind a proxy, say):
    /// signatures must name it, so one signed for another server with the
    /// same trust store does not verify here [default: from each request's
    /// Host header]
    #[arg(long, value_name = "URL")]
    public_url: Option<url::Url>,
    /// How often the worker looks for work when nothing woke it
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// The largest request body taken, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// How many jobs may wait (submitted, for approval, approved) before a submission gets 429
    #[arg(long, value_name = "JOBS", default_value_t = 10_000)]
    max_queue: u64,
    /// Post a signed notification here when a job waits for approval,
    /// succeeds, is rolled back or its rollback fails (repeatable)
    #[arg(long, value_name = "URL")]
    webhook: Vec<url::Url>,
    /// The key that seals each job in the audit log [default:
    /// DATA_DIR/keys/runner.key, if present]
    #[arg(long, value_name = "KEY")]
    runner_key: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<Exit> {
    let layout = args.data_dir.layout()?;
    let trust = args.trust.path(&layout);
    salve::serve::check_config_modes(&[&trust, &layout.policy(), &layout.config(), &layout.secrets()])
        .map_err(classified)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(salve::serve::tls_config(cert, key).map_err(classified)?),
        _ => None,
    };
    let listener = salve::serve::bind(args.listen, tls.is_some()).await.map_err(classified)?;
    let mut worker = start(&args.trust, &args.data_dir, args.runner_key.as_deref())?;
    let webhooks = if args.webhook.is_empty() {
        None
    } else {
        let key = super::run::runner_key(layout.root(), args.runner_key.as_deref())?.ok_or_else(|| {
            super::refused(anyhow::anyhow!(
                "--webhook needs a runner key to sign notifications: pass --runner-key or run `salve init`"
            ))
        })?;
        Some(Webhooks::start(&args.webhook, key, layout.webhooks(), Retry::default()))
    };
    let limits = Limits { body: args.max_body, queue: args.max_queue, ..Limits::default() };
    let audit = worker.runner().audit().clone();
    let control = open(&args.trust, &args.data_dir)?;
    let shared = Shared::with_origin(control, audit, limits, tls.is_some(), args.public_url.as_ref());
    let stop = super::run::stop_on_signals("salve serve stops taking requests and finishes the job in hand")?;
    // The address, once bound, for whoever started this (port 0).
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("salve serve: listening on {scheme}://{}", listener.local_addr()?);

    // The API reads the trust store, policy and config again every second,
    // whatever the worker is doing: a revoked key is refused from then on.
    let reloading = Arc::clone(&shared);
    let reloads = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let shared = Arc::clone(&reloading);
            let _ = tokio::task::spawn_blocking(move || {
                let loaded = shared.control.read().unwrap_or_else(|e| e.into_inner()).load_again();
                match loaded {
                    Ok(loaded) => shared.control.write().unwrap_or_else(|e| e.into_inner()).take(loaded),
                    Err(e) => tracing::error!(
                        "the trust store, policy or config no longer loads; the API keeps the last good ones: {e}"
                    ),
                }
            })
            .await;
        }
    });
    let stopped = Arc::clone(&stop);
    let server = tokio::spawn(salve::serve::serve(listener, Arc::clone(&shared), tls, async move {
        while !stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
    let worked = work(&mut worker, &shared, webhooks.as_ref(), &stop, args.poll).await;
    // A worker that failed stops the server too: nothing acts on what it takes.
    stop.store(true, Ordering::SeqCst);
    shared.set_ready(false);
    server.await?;
    reloads.abort();
    worker.runner().audit().sync_blocking()?;
    if let Some(webhooks) = webhooks {
        webhooks.stop(Duration::from_secs(5)).await;
    }
    worked?;
    Ok(Exit::Succeeded)
}

/// How often the API reads the trust store, policy and config again.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The worker's loop: relay, recover, then plan and run until stopped.
async fn work(
    worker: &mut salve::control::Worker,
    shared: &Shared,
    webhooks: Option<&Webhooks>,
    stop: &AtomicBool,
    poll: Duration,
) -> anyhow::Result<()> {
    worker.relay().await.map_err(classified)?;
    let told = |step: &salve::control::Step| {
        print(step);
        if let Some(webhooks) = webhooks {
            webhooks.notify(step);
        }
    };
    for step in worker.recover().await.map_err(classified)? {
        told(&step);
    }
    shared.set_ready(true);
    while !stop.load(Ordering::SeqCst) {
        // A revoked key, a new policy or change window counts from the next
        // job and the next request on. A file that no longer parses keeps
        // the last good one.
        if let Err(e) = worker.control.reload() {
            tracing::error!("the trust store, policy or config no longer loads; keeping the last good ones: {e}");
        }
        let started = std::time::Instant::now();
        match worker.step().await.map_err(classified)? {
            Some(step) => {
                shared.metrics.step(step.state, started.elapsed());
                told(&step);
            }
            None => {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = shared.work.notified() => {}
                }
            }
        }
    }
    Ok(())
}
