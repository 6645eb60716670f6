//! `salve serve`: the control plane over HTTP, and the worker in the same
//! process (the audit log's one writer). SIGINT or SIGTERM: stop taking
//! requests, let open ones finish, let running jobs finish within the stop
//! deadline and roll back those that do not, sync the audit log, exit 0.

use super::jobs::open;
use super::worker::{Drive, RELOAD_EVERY, RunnerArgs, drive, print};
use super::{Exit, classified};
use salve::serve::webhooks::{Retry, Webhooks};
use salve::serve::{Limits, Shared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    /// Mutual TLS: every client must present a certificate issued by one of
    /// these CA certificates (PEM), or the connection is refused; requests
    /// are still signed and checked as without it
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The URL clients use to reach this server (behind a proxy, say):
    /// signatures must name it, so one signed for another server with the
    /// same trust store does not verify here [default: from each request's
    /// Host header]
    #[arg(long, value_name = "URL")]
    public_url: Option<url::Url>,
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
    #[command(flatten)]
    runner: RunnerArgs,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<Exit> {
    let layout = args.runner.data_dir.layout()?;
    let trust = args.runner.trust.path(&layout);
    let runner_key = args.runner.runner_key.clone().unwrap_or_else(|| layout.runner_key());
    let mut config = vec![trust, layout.policy(), layout.config(), layout.secrets(), runner_key];
    // Whoever could write the client CAs could let any client in.
    config.extend(args.tls_client_ca.clone());
    salve::serve::check_config_modes(&config.iter().map(PathBuf::as_path).collect::<Vec<_>>()).map_err(classified)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(salve::serve::tls_config(cert, key, args.tls_client_ca.as_deref()).map_err(classified)?)
        }
        _ => None,
    };
    let listener = salve::serve::bind(args.listen, tls.is_some()).await.map_err(classified)?;
    let worker = args.runner.worker()?;
    let webhooks = if args.webhook.is_empty() {
        None
    } else {
        let key = super::run::runner_key(&layout, args.runner.runner_key.as_deref())?.ok_or_else(|| {
            super::refused(anyhow::anyhow!(
                "--webhook needs a runner key to sign notifications: pass --runner-key or run `salve init`"
            ))
        })?;
        Some(Webhooks::start(&args.webhook, key, layout.webhooks(), Retry::default()))
    };
    let limits = Limits { body: args.max_body, queue: args.max_queue, ..Limits::default() };
    let audit = worker.runner().audit().clone();
    let control = open(&args.runner.trust, &args.runner.data_dir)?;
    let shared = Shared::with_origin(control, audit, limits, tls.is_some(), args.public_url.as_ref());
    // Event streams wake at each change of state inside a step too.
    let moved = Arc::clone(&shared);
    let worker = worker.on_move(Arc::new(move |job| moved.moved(job)));
    let stop = super::run::stop_on_signals("salve serve stops taking requests; running jobs get the stop deadline")?;
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
    let told = |step: &salve::control::Step, took: Option<Duration>| {
        print(step);
        shared.moved(&step.job);
        if let Some(took) = took {
            shared.metrics.step(step.state, took);
        }
        if let Some(webhooks) = &webhooks {
            webhooks.notify(step);
        }
    };
    let wake = Drive { stop: &stop, wake: Some(&shared.work), until_idle: false };
    let worked = drive(worker, &args.runner, wake, || shared.set_ready(true), told).await;
    // A worker that failed stops the server too: nothing acts on what it takes.
    stop.store(true, Ordering::SeqCst);
    shared.set_ready(false);
    server.await?;
    reloads.abort();
    if let Some(webhooks) = webhooks {
        webhooks.stop(Duration::from_secs(5)).await;
    }
    worked?;
    Ok(Exit::Succeeded)
}
