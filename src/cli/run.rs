//! `salve run` and `salve plan`.

use super::artifact::load_trust;
use super::recover::RunRecord;
use super::{DataDirArg, Exit, classified, refused};
use anyhow::Context as _;
use salve::artifact::VersionFloor;
use salve::audit::{AuditLog, Event, Witness};
use salve::control::{Checks, Floor, SignedPlaybook, admit};
use salve::credentials::Broker;
use salve::data_dir::DataDir;
use salve::grant::{Grant, GrantSpec};
use salve::keys::PrivateKey;
use salve::run::{JobContext, Outcome, Runner};
use salve::sandbox::{Catalog, LoadError, Playbook, Sandbox};
use salve::text::printable;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// The only environment an unsigned component may ever run in.
pub const UNSIGNED_ENVIRONMENT: &str = "dev";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The signed playbook artifact (.wasm)
    artifact: PathBuf,
    /// The grant: which directories the playbook may use, and its limits
    #[arg(long, value_name = "FILE")]
    grant: PathBuf,
    /// A job parameter, checked against the manifest's schema (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The environment the target is in
    #[arg(long, default_value = "dev")]
    environment: String,
    /// The system being remediated
    #[arg(long, default_value = "localhost")]
    target: String,
    /// The trust store [default: DATA_DIR/trust.toml]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// The key that seals each job in the audit log [default:
    /// DATA_DIR/keys/runner.key, if present]
    #[arg(long, value_name = "KEY")]
    runner_key: Option<PathBuf>,
    /// Run a version older than one that already ran here (audited)
    #[arg(long)]
    allow_downgrade: bool,
    /// Run an UNSIGNED component, with no manifest to bound its grant.
    /// Only in environment dev; audited
    #[arg(long)]
    dangerous_unsigned: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

fn parse_params(params: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(params.len());
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            return Err(refused(anyhow::anyhow!("--param {param:?} is not KEY=VALUE")));
        };
        if key.is_empty() {
            return Err(refused(anyhow::anyhow!("--param {param:?} has an empty key")));
        }
        if parsed.iter().any(|(k, _)| k == key) {
            return Err(refused(anyhow::anyhow!("--param {key} is given twice; give each parameter once")));
        }
        parsed.push((key.to_string(), value.to_string()));
    }
    Ok(parsed)
}

/// Everything a job needs, set up in order. A refusal on the way is
/// audited (when the log could be opened) and nothing runs.
struct Prepared {
    runner: Runner,
    playbook: Arc<Playbook>,
    grant: Grant,
    job: JobContext,
    /// Where `run` records that this version ran (rollback protection).
    floor: VersionFloor,
    /// The artifact's bytes and the grant's text, kept for a rollback after
    /// a crash.
    bytes: Vec<u8>,
    grant_text: String,
    /// The runner key, which tags what a rollback after a crash needs.
    key: Option<Arc<PrivateKey>>,
}

async fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let params = parse_params(&args.params)?;
    let layout = args.data_dir.layout()?;
    let data_dir = layout.root().to_path_buf();
    let key = runner_key(&layout, args.runner_key.as_deref())?;
    let audit = open_audit(&data_dir, key.as_ref())?;
    let job = JobContext::new(&args.environment, &args.target, params);
    let name = args.artifact.display().to_string();
    let refuse = |reason: anyhow::Error| -> anyhow::Error {
        let text = format!("{reason:#}");
        let event = Event::Refused { playbook: &name, reason: &text };
        if let Err(e) = audit.append(Some(&job.id), &event).and_then(|_| audit.sync_blocking()) {
            return anyhow::anyhow!("{text} (and the refusal could not be audited: {e})");
        }
        refused(reason)
    };

    let grant_text = std::fs::read_to_string(&args.grant)
        .with_context(|| format!("cannot read the grant {}", args.grant.display()))
        .map_err(refuse)?;
    let spec =
        GrantSpec::parse(&grant_text).with_context(|| format!("grant {}", args.grant.display())).map_err(refuse)?;
    let bytes = std::fs::read(&args.artifact)
        .with_context(|| format!("cannot read the playbook {}", args.artifact.display()))
        .map_err(refuse)?;
    // One job, a few instances one after the other: a small pool (setting up
    // the default thousand slots costs a process more than the job itself).
    let sandbox = super::job_sandbox(&layout, 8)?;

    let (playbook, grant) = if args.dangerous_unsigned {
        if args.environment != UNSIGNED_ENVIRONMENT {
            return Err(refuse(anyhow::anyhow!(
                "--dangerous-unsigned is refused for environment {:?}: unsigned components run in {UNSIGNED_ENVIRONMENT} only",
                args.environment
            )));
        }
        let playbook = match sandbox.load_unverified(&name, &bytes) {
            Ok(playbook) => playbook,
            Err(e @ LoadError::Engine(_)) => return Err(e.into()),
            Err(e) => return Err(refuse(anyhow::Error::new(e).context(format!("playbook {name}")))),
        };
        audit.append(Some(&job.id), &Event::DangerousUnsigned { playbook: &name, digest: playbook.digest() })?;
        tracing::warn!(playbook = %name, "running an UNSIGNED component (--dangerous-unsigned)");
        let grant =
            Grant::open_unbounded(&spec).with_context(|| format!("grant {}", args.grant.display())).map_err(refuse)?;
        (Arc::new(playbook), grant)
    } else {
        let trust = load_trust(args.trust.as_deref(), &args.data_dir).map_err(refuse)?;
        let catalog = Catalog::new(sandbox.clone());
        let playbook = SignedPlaybook::load(&catalog, &name, &bytes, &trust, &args.environment, SystemTime::now())
            .map_err(|e| refuse(e.into()))?;
        let checks = Checks {
            floor: if args.allow_downgrade { Floor::AllowDowngrade } else { Floor::Enforce },
            // `salve run` runs what its operator hands it, on this host:
            // no runner config, so no environment scopes and no budget.
            scopes: None,
            mutations_at_most: None,
        };
        let admitted =
            admit(playbook, &job.parameters, &spec, &args.environment, &VersionFloor::new(&data_dir), checks)
                .map_err(|e| refuse(e.into()))?;
        if let Some(highest) = &admitted.downgrade {
            let (playbook, highest) = (admitted.playbook.playbook().name(), highest.to_string());
            audit.append(Some(&job.id), &Event::DowngradeAllowed { playbook, highest: &highest })?;
        }
        (admitted.playbook.shared(), admitted.grant)
    };

    let runner = runner(sandbox, audit, &layout, key.clone())?;
    Ok(Prepared { runner, playbook, grant, job, floor: VersionFloor::new(&data_dir), bytes, grant_text, key })
}

/// The runner key: `runner_key`, or DATA_DIR/keys/runner.key if present.
pub fn runner_key(layout: &DataDir, runner_key: Option<&Path>) -> anyhow::Result<Option<Arc<PrivateKey>>> {
    let path = match runner_key {
        Some(path) => Some(path.to_path_buf()),
        // A key salve may not read is an error, not a key that is not there:
        // the log would go unsealed without a word.
        None => {
            let path = layout.runner_key();
            let there = path.try_exists().map_err(|e| {
                refused(anyhow::anyhow!("cannot tell whether the runner key {} is there: {e}", path.display()))
            })?;
            there.then_some(path)
        }
    };
    path.map(|path| PrivateKey::load(&path).map(Arc::new).map_err(refused)).transpose()
}

/// The audit log of `data_dir`, kept by the runner `key` when there is one
/// (opening is then strict: see [`AuditLog::open_keyed`]).
pub fn open_audit(data_dir: &Path, key: Option<&Arc<PrivateKey>>) -> anyhow::Result<AuditLog> {
    let audit = match key {
        Some(key) => AuditLog::open_keyed(data_dir, Arc::clone(key)),
        None => AuditLog::open(data_dir),
    };
    let audit = audit.map_err(classified)?;
    // The room kept for rollbacks and outcomes: SALVE_AUDIT_RESERVE (a size
    // such as 16MiB), else the library's default.
    if let Some(text) = std::env::var_os("SALVE_AUDIT_RESERVE").filter(|v| !v.is_empty()) {
        let text = text.to_string_lossy();
        let bytes = salve::scope::limits::parse_size(&text).ok_or_else(|| {
            refused(anyhow::anyhow!("SALVE_AUDIT_RESERVE={text:?} is not a size; write it as 4MiB or 65536"))
        })?;
        audit.set_reserve(bytes);
    }
    // Witnesses keep every checkpoint where the data directory's owner
    // cannot rewrite it: a file on another path, the system log, a URL.
    for witness in witnesses()? {
        audit.add_witness(witness);
    }
    Ok(audit)
}

/// The witnesses the environment names: `SALVE_WITNESS_FILE` (a path),
/// `SALVE_WITNESS_SYSLOG` (a syslog socket; `default` is /dev/log) and
/// `SALVE_WITNESS_URL` (http or https).
fn witnesses() -> anyhow::Result<Vec<Witness>> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut witnesses = Vec::new();
    if let Some(path) = var("SALVE_WITNESS_FILE") {
        witnesses.push(Witness::File(PathBuf::from(path)));
    }
    if let Some(socket) = var("SALVE_WITNESS_SYSLOG") {
        let socket = if socket == "default" { PathBuf::from("/dev/log") } else { PathBuf::from(socket) };
        witnesses.push(Witness::Syslog(socket));
    }
    if let Some(url) = var("SALVE_WITNESS_URL") {
        let url = url.to_str().ok_or_else(|| refused(anyhow::anyhow!("SALVE_WITNESS_URL is not UTF-8")))?;
        witnesses.push(Witness::http(url).map_err(|e| refused(anyhow::anyhow!("SALVE_WITNESS_URL: {e}")))?);
    }
    Ok(witnesses)
}

/// A runner for `data_dir`: sealing with the runner `key`, leasing from the
/// data directory's secrets.
pub fn runner(
    sandbox: Sandbox,
    audit: AuditLog,
    layout: &DataDir,
    key: Option<Arc<PrivateKey>>,
) -> anyhow::Result<Runner> {
    let mut runner = Runner::new(sandbox, audit, layout.root())?;
    if let Some(key) = &key {
        runner = runner.with_seal_key(Arc::clone(key)).map_err(refused)?;
    }
    let broker = Broker::for_layout(layout, key).map_err(refused)?;
    Ok(runner.with_broker(Arc::new(broker)))
}

pub async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let Prepared { runner, playbook, grant, job, floor, bytes, grant_text, key } = prepare(&args).await?;
    let layout = args.data_dir.layout()?;
    // A job an earlier run left half-done is rolled back first.
    super::recover::recover_runs(&runner, key.as_deref(), &layout, &args.data_dir).await?;
    if let Some(manifest) = playbook.manifest() {
        floor.record(&manifest.name, &manifest.version)?;
    }
    let record = RunRecord {
        job: job.id.clone(),
        environment: job.environment.clone(),
        target: job.target.clone(),
        parameters: job.parameters.clone(),
        artifact: args.artifact.display().to_string(),
        grant: grant_text,
        // Absolute: a recovery may run from another directory.
        trust: args.trust.as_deref().map(std::path::absolute).transpose()?,
        unsigned: args.dangerous_unsigned,
        started_at: salve::time::Timestamp::now(),
        artifact_sha256: String::new(),
        mac: None,
    };
    // Before the run's own files take any of the room its rollback needs.
    if let Some(reason) = runner.audit().short_of_room() {
        return Err(classified(salve::run::RunError::NoRoom(reason)));
    }
    record.write(&layout, &bytes, key.as_deref())?;
    // SIGINT or SIGTERM stops apply or verify, and the job is rolled back.
    let runner = runner.with_stop(stop_on_signals("the job is stopped and rolled back")?);
    let report = runner.run(&playbook, &grant, &job).await.map_err(|e| {
        use salve::run::RunError;
        if matches!(
            e,
            RunError::NoRoom(_) | RunError::MemoryCeiling { .. } | RunError::Credential { .. } | RunError::State { .. }
        ) {
            // Refused before apply: nothing to roll back.
            RunRecord::remove(&layout, &job.id);
        }
        let audit_failed = matches!(e, RunError::Audit(_));
        let error = classified(e);
        if !audit_failed {
            return error;
        }
        // No change is made unaudited, the rollback's included: it is the
        // next start's, once the log can be written.
        error.context(format!(
            "job {} stopped where it was; the next `salve run` or `salve recover` in {} rolls back whatever it \
             changed, once the audit log can be written again (free space, or raise the file size limit)",
            job.id,
            layout.root().display()
        ))
    })?;
    RunRecord::remove(&layout, &job.id);
    // Everything durable and checkpointed before the command says how it ended.
    runner.audit().sync_blocking()?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("job {}: {}", report.job_id, report.outcome.name());
        if let Some(cause) = report.outcome.cause() {
            println!("  cause: {}", printable(&cause.to_string()));
        }
        if let Some(cause) = report.outcome.rollback_cause() {
            println!("  rollback cause: {}", printable(&cause.to_string()));
        }
        println!("  audit: record {} ({})", report.audit_head.seq, report.audit_head.hash);
    }
    Ok(match report.outcome {
        Outcome::Succeeded => Exit::Succeeded,
        Outcome::RolledBack { .. } => Exit::RolledBack,
        Outcome::RollbackFailed { .. } => {
            eprintln!(
                "salve: ROLLBACK FAILED for job {}: the target may be half-changed. A person must restore it; \
                 the journal is kept in the data directory's journal/ and every step is in the audit log",
                report.job_id
            );
            Exit::RollbackFailed
        }
    })
}

/// A flag set at the first SIGINT or SIGTERM; `then` says (in the log)
/// what happens next. A second signal exits at once: a `salve run` job
/// left half-done is rolled back at the next start (`salve recover`), a
/// worker's job by the next worker.
pub fn stop_on_signals(then: &'static str) -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("asked to stop: {then}; a second signal exits at once");
        flag.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // What is left half-done is rolled back at the next start.
        eprintln!("salve: stopped at once (second signal); the next start in this data directory rolls back");
        std::process::exit(130);
    });
    Ok(stop)
}

pub async fn plan(args: RunArgs) -> anyhow::Result<Exit> {
    let Prepared { runner, playbook, grant, job, .. } = prepare(&args).await?;
    let report = runner.plan(&playbook, &grant, &job).await.map_err(classified)?;
    runner.audit().sync_blocking()?;
    if args.json {
        let value = match &report.changes {
            Ok(changes) => serde_json::json!({
                "job_id": report.job_id,
                "changes": changes.iter().map(|c| serde_json::json!({
                    "action": c.action, "target": c.target, "detail": c.detail, "reversible": c.reversible,
                })).collect::<Vec<_>>(),
                "audit_head": report.audit_head,
            }),
            Err(cause) => {
                serde_json::json!({ "job_id": report.job_id, "cause": cause, "audit_head": report.audit_head })
            }
        };
        println!("{value}");
    } else {
        match &report.changes {
            Ok(changes) if changes.is_empty() => println!("job {}: nothing to change", report.job_id),
            Ok(changes) => {
                println!("job {}: {} change(s)", report.job_id, changes.len());
                for change in changes {
                    let reversible = if change.reversible { "reversible" } else { "NOT reversible" };
                    let (action, target) = (printable(&change.action), printable(&change.target));
                    println!("  {action} {target} ({reversible}): {}", printable(&change.detail));
                }
            }
            Err(cause) => println!("job {}: plan failed: {}", report.job_id, printable(&cause.to_string())),
        }
    }
    Ok(if report.changes.is_ok() { Exit::Succeeded } else { Exit::PlanFailed })
}
