//! `salve run` and `salve plan`.

use super::{DataDir, Exit, refused};
use anyhow::Context as _;
use salve::audit::{AuditLog, Event};
use salve::grant::{Grant, GrantSpec};
use salve::run::{JobContext, Outcome, RunError, Runner};
use salve::sandbox::{LoadError, Sandbox, SandboxConfig};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The playbook component (.wasm)
    component: PathBuf,
    /// The grant: which directories the playbook may use, and its limits
    #[arg(long, value_name = "FILE")]
    grant: PathBuf,
    /// A job parameter, handed to the playbook (repeatable)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The environment the target is in
    #[arg(long, default_value = "dev")]
    environment: String,
    /// The system being remediated
    #[arg(long, default_value = "localhost")]
    target: String,
    #[command(flatten)]
    data_dir: DataDir,
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
            return Err(refused(anyhow::anyhow!(
                "--param {key} is given twice; give each parameter once"
            )));
        }
        parsed.push((key.to_string(), value.to_string()));
    }
    Ok(parsed)
}

/// Everything a job needs, set up in order. A refusal on the way is
/// audited (when the log could be opened) and nothing runs.
struct Prepared {
    runner: Runner,
    playbook: salve::sandbox::Playbook,
    grant: Grant,
    job: JobContext,
}

async fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let params = parse_params(&args.params)?;
    let data_dir = args.data_dir.resolve()?;
    let audit = AuditLog::open(&data_dir).context("the audit log is unavailable, so nothing may run")?;
    let job = JobContext::new(&args.environment, &args.target, params);
    let name = args.component.display().to_string();
    let refuse = |reason: anyhow::Error| -> anyhow::Error {
        let text = format!("{reason:#}");
        let event = Event::Refused {
            playbook: &name,
            reason: &text,
        };
        if let Err(e) = audit.append(Some(&job.id), &event).and_then(|_| audit.sync_blocking()) {
            return anyhow::anyhow!("{text} (and the refusal could not be audited: {e})");
        }
        refused(reason)
    };

    let grant = GrantSpec::load(&args.grant)
        .and_then(|spec| Grant::open(&spec))
        .with_context(|| format!("grant {}", args.grant.display()))
        .map_err(refuse)?;
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read the playbook {}", args.component.display()))
        .map_err(refuse)?;
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let playbook = match sandbox.load(&name, &bytes) {
        Ok(playbook) => playbook,
        Err(e @ LoadError::Engine(_)) => return Err(e.into()),
        Err(e) => return Err(refuse(anyhow::Error::new(e).context(format!("playbook {name}")))),
    };
    let runner = Runner::new(sandbox, audit, &data_dir)?;
    Ok(Prepared {
        runner,
        playbook,
        grant,
        job,
    })
}

fn run_error(error: RunError) -> anyhow::Error {
    match error {
        e @ RunError::MemoryCeiling { .. } => refused(e),
        e => e.into(),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let Prepared {
        runner,
        playbook,
        grant,
        job,
    } = prepare(&args).await?;
    let report = runner.run(&playbook, &grant, &job).await.map_err(run_error)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("job {}: {}", report.job_id, report.outcome.name());
        if let Some(cause) = report.outcome.cause() {
            println!("  cause: {cause}");
        }
        if let Some(cause) = report.outcome.rollback_cause() {
            println!("  rollback cause: {cause}");
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

pub async fn plan(args: RunArgs) -> anyhow::Result<Exit> {
    let Prepared {
        runner,
        playbook,
        grant,
        job,
    } = prepare(&args).await?;
    let report = runner.plan(&playbook, &grant, &job).await.map_err(run_error)?;
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
                    let reversible = if change.reversible {
                        "reversible"
                    } else {
                        "NOT reversible"
                    };
                    println!(
                        "  {} {} ({reversible}): {}",
                        change.action, change.target, change.detail
                    );
                }
            }
            Err(cause) => println!("job {}: plan failed: {cause}", report.job_id),
        }
    }
    Ok(if report.changes.is_ok() {
        Exit::Succeeded
    } else {
        Exit::PlanFailed
    })
}
