//! `salve submit`, `salve jobs list|show`, `salve approve`, `salve reject`,
//! `salve install` and `salve schema`: the control plane's commands. None
//! of them writes the audit log (the worker holds it); their steps wait in
//! the job store until the worker relays them.

use super::remote::{Remote, ServerArg, print_json};
use super::{DataDirArg, Exit, classified, refused};
use anyhow::Context as _;
use salve::approval::Vote;
use salve::control::{Ballot, ControlPlane, Review};
use salve::job::JobState;
use salve::job::{JobRequest, SignedJob};
use salve::keys::PrivateKey;
use salve::policy::Verdict;
use salve::store::{Cursor, JobRecord, Listing};
use salve::text::printable;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Where the trust store is, for control-plane commands.
#[derive(clap::Args, Debug, Clone)]
pub struct TrustArg {
    /// The trust store [default: DATA_DIR/trust.toml]
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
}

impl TrustArg {
    /// The trust store's path: --trust, or the data directory's.
    pub fn path(&self, layout: &salve::data_dir::DataDir) -> PathBuf {
        self.trust.clone().unwrap_or_else(|| layout.trust())
    }
}

pub fn open(trust: &TrustArg, data_dir: &DataDirArg) -> anyhow::Result<ControlPlane> {
    let dir = data_dir.layout()?;
    let trust_path = trust.path(&dir);
    if !trust_path.exists() {
        return Err(refused(anyhow::anyhow!(
            "no trust store at {}: run `salve init` or pass --trust FILE",
            trust_path.display()
        )));
    }
    ControlPlane::open_in(&dir, &trust_path).map_err(classified)
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The job: a request (JSON) to sign with --key, or an envelope an agent
    /// signed elsewhere
    file: PathBuf,
    /// The agent key to sign the request with
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    server: ServerArg,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<Exit> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let envelope = match &args.key {
        Some(key) => {
            let key = PrivateKey::load(key).map_err(refused)?;
            let request: JobRequest = serde_json::from_str(&text)
                .map_err(|e| refused(anyhow::anyhow!("{} is not a job request: {e}", args.file.display())))?;
            SignedJob::sign(&request, &key).map_err(refused)?
        }
        None => SignedJob::parse(&text)
            .map_err(|e| refused(anyhow::anyhow!("{}: {e} (to sign a request, pass --key)", args.file.display())))?,
    };
    let submitted: salve::control::Submitted = match Remote::of(&args.server)? {
        Some(server) => serde_json::from_slice(&server.post("/v1/jobs", &envelope)?)?,
        None => open(&args.trust, &args.data_dir)?.submit(&envelope, SystemTime::now()).map_err(classified)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&submitted)?);
    } else {
        let decision = &submitted.decision;
        let verdict = match &decision.verdict {
            Verdict::Allow => "allowed".to_string(),
            Verdict::NeedsApprovals { approvals, group } => format!("needs {approvals} approval(s) from group {group}"),
            Verdict::Deny => "DENIED".to_string(),
        };
        let policies = if decision.policies.is_empty() { "default deny".into() } else { decision.policies.join(", ") };
        println!("job {}: {} ({verdict}; {policies})", submitted.id, submitted.state);
        println!("  job hash: {}", submitted.job_hash);
    }
    Ok(if submitted.state == JobState::Denied { Exit::Denied } else { Exit::Succeeded })
}

#[derive(clap::Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Everything about one job: evidence, decision and why, grant, plan,
    /// approvals, state history, leases, outcome.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only jobs in this state (submitted, waiting-approval, approved, applying, ...)
    #[arg(long)]
    state: Option<JobState>,
    /// At most this many
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// The jobs after this cursor: the `next` a listing gave (the jobs
    /// are newest first)
    #[arg(long, value_name = "CURSOR")]
    after: Option<Cursor>,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    server: ServerArg,
    /// The key that signs the request, with --server (agent, approver or auditor)
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Print JSON instead of text (always, with --server)
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    id: String,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    server: ServerArg,
    /// The key that signs the request, with --server (agent, approver or auditor)
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Print JSON instead of text (always, with --server)
    #[arg(long)]
    json: bool,
}

pub fn jobs(command: JobsCommand) -> anyhow::Result<Exit> {
    match command {
        JobsCommand::List(args) if args.server.server.is_some() => {
            let server = Remote::of(&args.server)?.expect("matched");
            let mut path = format!("/v1/jobs?limit={}", args.limit);
            if let Some(state) = args.state {
                path.push_str(&format!("&state={state}"));
            }
            if let Some(after) = &args.after {
                let after = url::form_urlencoded::byte_serialize(after.to_string().as_bytes()).collect::<String>();
                path.push_str(&format!("&after={after}"));
            }
            print_json(&server.get(&path, args.key.as_deref())?)?;
            Ok(Exit::Succeeded)
        }
        JobsCommand::Show(args) if args.server.server.is_some() => {
            let server = Remote::of(&args.server)?.expect("matched");
            let id = url::form_urlencoded::byte_serialize(args.id.as_bytes()).collect::<String>();
            print_json(&server.get(&format!("/v1/jobs/{id}"), args.key.as_deref())?)?;
            Ok(Exit::Succeeded)
        }
        JobsCommand::List(args) => {
            let control = open(&args.trust, &args.data_dir)?;
            let listing = Listing { state: args.state, after: args.after.clone(), ..Listing::default() };
            let jobs = control.store.list(&listing, args.limit).map_err(classified)?;
            let next = (jobs.len() == args.limit as usize).then(|| jobs.last().map(Cursor::of)).flatten();
            if args.json {
                println!("{}", serde_json::to_string(&jobs)?);
                return Ok(Exit::Succeeded);
            }
            if jobs.is_empty() {
                println!("no jobs");
            }
            for job in jobs {
                println!(
                    "{:<24} {:<17} {} {} on {}/{}  {}",
                    job.id,
                    job.state.name(),
                    job.playbook,
                    job.playbook_version,
                    job.environment,
                    job.system,
                    job.updated_at
                );
            }
            if let Some(next) = next {
                let state = args.state.map(|s| format!(" --state {s}")).unwrap_or_default();
                println!("more: salve jobs list{state} --limit {} --after {next}", args.limit);
            }
            Ok(Exit::Succeeded)
        }
        JobsCommand::Show(args) => {
            let control = open(&args.trust, &args.data_dir)?;
            show(&control, &args.id, args.json)
        }
    }
}

fn show(control: &ControlPlane, id: &str, json: bool) -> anyhow::Result<Exit> {
    let review = control.review(id).map_err(classified)?;
    // Anything that does not verify is said, loudly, and the exit is 2.
    let verdict = |problems: &[String]| match problems.is_empty() {
        true => Ok(Exit::Succeeded),
        false => Err(refused(anyhow::anyhow!("job {id}: {}; do not approve it", problems.join("; ")))),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&review)?);
        return verdict(&review.problems);
    }
    let Review { job, plan, approvals, history, leases, problems, .. } = review;
    for problem in &problems {
        println!("WARNING: {}", printable(problem));
    }
    print_job(&job);
    println!("plan:");
    match &plan {
        None => println!("  (not planned yet)"),
        Some(plan) => {
            println!("  hash: {}", plan.hash);
            let changes = plan.changes.as_array().cloned().unwrap_or_default();
            if changes.is_empty() {
                println!("  nothing to change");
            }
            for change in changes {
                let reversible =
                    if change["reversible"].as_bool() == Some(true) { "reversible" } else { "NOT reversible" };
                println!(
                    "  {} {} ({reversible}): {}",
                    printable(change["action"].as_str().unwrap_or("?")),
                    printable(change["target"].as_str().unwrap_or("?")),
                    printable(change["detail"].as_str().unwrap_or(""))
                );
            }
        }
    }
    println!("approvals:");
    if approvals.is_empty() {
        println!("  none");
    }
    for stored in &approvals {
        let a = &stored.approval;
        let void = stored.void.as_deref().map(|v| format!(" [void: {v}]")).unwrap_or_default();
        let reason = if a.reason.is_empty() { String::new() } else { format!(": {}", printable(&a.reason)) };
        println!(
            "  {} by {} for plan {} (until {}){reason}{void}",
            a.vote.name(),
            a.key_id,
            short(&a.plan_hash),
            a.expires_at
        );
    }
    println!("history:");
    for t in &history {
        let from = t.from.map_or("-".to_string(), |s| s.to_string());
        println!("  {}  {from} -> {}  {}", t.at, t.to, printable(&t.reason));
    }
    if !leases.is_empty() {
        println!("leases:");
        for lease in &leases {
            let revoked = lease.revoked_at.map_or("not revoked".to_string(), |t| format!("revoked {t}"));
            println!("  {} {} ({}), {revoked}", lease.id, printable(&lease.credential), lease.kind);
        }
    }
    if let Some(outcome) = &job.outcome {
        println!("outcome: {outcome}");
    }
    verdict(&problems)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

fn print_job(job: &JobRecord) {
    let r = &job.request;
    println!("job {}: {}", job.id, job.state);
    println!("  playbook:  {} {} ({})", job.playbook, job.playbook_version, job.digest);
    println!("  target:    {} in {}", job.system, job.environment);
    println!("  agent:     {}", job.agent);
    println!("  job hash:  {}", job.job_hash);
    println!("  expires:   {}", printable(&r.expires_at));
    println!("  parameters:");
    for (k, v) in &r.parameters {
        println!("    {} = {v:?}", printable(k));
    }
    let e = &r.evidence;
    println!("evidence:");
    let (alert, detector) = (printable(&e.alert_id), printable(&e.detector));
    println!("  {} alert {alert} from {detector}, confidence {:.2}", e.severity.name(), e.confidence);
    println!("  {}", printable(&e.summary));
    println!("  telemetry sha256: {}", e.telemetry_sha256);
    println!("decision:");
    match &job.decision {
        None => println!("  none"),
        Some(d) => {
            let verdict = match &d.verdict {
                Verdict::Allow => "allow".to_string(),
                Verdict::NeedsApprovals { approvals, group } => format!("needs {approvals} approval(s) from {group}"),
                Verdict::Deny => "deny".to_string(),
            };
            let policies =
                if d.policies.is_empty() { "none permits it: default deny".into() } else { d.policies.join(", ") };
            println!("  {verdict}, by {policies} (policy set {})", short(&d.policy_hash));
            for error in &d.errors {
                println!("  evaluation error: {}", printable(error));
            }
        }
    }
    println!("grant:");
    for line in toml::to_string(&r.grant).unwrap_or_default().lines() {
        println!("  {line}");
    }
}

#[derive(clap::Args, Debug)]
pub struct VoteArgs {
    /// The job
    id: String,
    /// Your approver key
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// How long the vote counts
    #[arg(long = "for", value_name = "DURATION", default_value = "4h", value_parser = humantime::parse_duration)]
    lifetime: Duration,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    vote: VoteArgs,
    /// The plan hash you reviewed (`salve jobs show ID`): your approval is
    /// bound to it, and refused if the plan changed since
    #[arg(long, value_name = "HASH")]
    plan: String,
    /// Why (optional)
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(clap::Args, Debug)]
pub struct RejectArgs {
    #[command(flatten)]
    vote: VoteArgs,
    /// The plan hash you reviewed, if the job has a plan: refused if the plan changed since
    #[arg(long, value_name = "HASH")]
    plan: Option<String>,
    /// Why (required)
    #[arg(long)]
    reason: String,
}

fn cast(args: &VoteArgs, vote: Vote, reason: &str, reviewed: Option<&str>) -> anyhow::Result<Exit> {
    if args.lifetime.is_zero() {
        return Err(refused(anyhow::anyhow!(
            "--for 0 would make the vote count for no time at all; give a duration such as 30m or 4h"
        )));
    }
    let key = PrivateKey::load(&args.key).map_err(refused)?;
    let ballot = Ballot { vote, reason, lifetime: args.lifetime, reviewed };
    let state = match Remote::of(&args.server)? {
        Some(server) => remote_vote(&server, args, &key, &ballot)?,
        None => {
            let control = open(&args.trust, &args.data_dir)?;
            control.vote(&args.id, &key, &ballot, SystemTime::now()).map_err(classified)?.state.to_string()
        }
    };
    println!("job {}: {} recorded by key {}; the job is {state}", args.id, vote.name(), key.id);
    Ok(Exit::Succeeded)
}

/// A vote over the API: the job as the server shows it to this key, the
/// vote signed here over its current plan, posted; the server's state.
fn remote_vote(server: &Remote, args: &VoteArgs, key: &PrivateKey, ballot: &Ballot<'_>) -> anyhow::Result<String> {
    let id = url::form_urlencoded::byte_serialize(args.id.as_bytes()).collect::<String>();
    let review: serde_json::Value = serde_json::from_slice(&server.get(&format!("/v1/jobs/{id}"), Some(&args.key))?)?;
    let job = &review["job"];
    let text =
        |field: &str| job[field].as_str().map(str::to_string).context(format!("the server's job has no {field}"));
    let plan = salve::control::voted_plan(&args.id, job["plan_hash"].as_str(), ballot.vote, ballot.reviewed)
        .map_err(classified)?;
    let (job_hash, agent, environment) = (text("job_hash")?, text("agent")?, text("environment")?);
    let subject = salve::approval::Subject {
        job_id: &args.id,
        job_hash: &job_hash,
        plan_hash: &plan,
        submitter: &agent,
        environment: &environment,
        group: None,
    };
    let approval =
        salve::approval::Approval::sign(&subject, ballot.vote, ballot.reason, ballot.lifetime, key, SystemTime::now())
            .map_err(refused)?;
    let recorded: serde_json::Value =
        serde_json::from_slice(&server.post(&format!("/v1/jobs/{id}/votes"), &approval)?)?;
    Ok(recorded["state"].as_str().unwrap_or("?").to_string())
}

pub fn approve(args: ApproveArgs) -> anyhow::Result<Exit> {
    cast(&args.vote, Vote::Approve, &args.reason, Some(&args.plan))
}

pub fn reject(args: RejectArgs) -> anyhow::Result<Exit> {
    if args.reason.trim().is_empty() {
        return Err(refused(anyhow::anyhow!("--reason must say why the job is rejected")));
    }
    cast(&args.vote, Vote::Reject, &args.reason, args.plan.as_deref())
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The signed artifact (.wasm)
    artifact: PathBuf,
    /// The environment to verify it for (its signers must be trusted there)
    #[arg(long, default_value = "dev")]
    environment: String,
    #[command(flatten)]
    trust: TrustArg,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// Verifies an artifact and copies it into the data directory, where jobs
/// can name it.
pub fn install(args: InstallArgs) -> anyhow::Result<Exit> {
    let control = open(&args.trust, &args.data_dir)?;
    let bytes = std::fs::read(&args.artifact).with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let name = args.artifact.display().to_string();
    let installed = control.install(&name, &bytes, &args.environment, SystemTime::now()).map_err(classified)?;
    println!("installed {} {} ({})", installed.name, installed.version, installed.digest);
    println!("  {}", installed.path.display());
    Ok(Exit::Succeeded)
}

/// Prints the JSON Schema of a job request.
pub fn schema() -> anyhow::Result<Exit> {
    println!("{}", serde_json::to_string_pretty(&salve::job::schema())?);
    Ok(Exit::Succeeded)
}
