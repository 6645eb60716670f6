//! The control plane: it keeps apart the identity that proposes (an agent),
//! the one that approves (a person) and the one that executes (the
//! runner).
//!
//! ```text
//! submit: SignedJob ─verify─▶ VerifiedJob ─resolve─▶ installed, trusted artifact
//!         ─policy(apply)─▶ Decision ─▶ store: submitted | denied
//! worker: submitted ─policy(plan)─▶ plan (read-only grant) ─▶ waiting-approval | approved
//! vote:   approval signed over (job, job hash, plan hash, vote) ─▶ approved | rejected
//! worker: approved ─▶ policy(apply) again, re-plan, budgets ─▶ applying ─▶ verifying
//!         ─▶ succeeded | rolling-back ─▶ rolled-back | rollback-failed
//! start:  applying | verifying | rolling-back ─▶ rollback from the journal
//! ```
//!
//! [`ControlPlane`] holds what every command needs (the store, the trust
//! store, the policy, the runner's config). [`Worker`] adds the runner and
//! is the only writer of the audit log: steps taken by other processes
//! (submissions, votes) wait in the store's outbox until the worker relays
//! them into the log, before it acts on their job.
//!
//! # Errors
//! [`ControlError`] says which check refused a job or a vote, and what to
//! do.

use crate::approval::{Approval, ApprovalError, Subject, Vote};
use crate::artifact::manifest::{Manifest, ParamError};
use crate::artifact::{ArtifactError, VerifiedArtifact, VersionFloor};
use crate::audit::{Event, Phase};
use crate::credentials::Lease;
use crate::grant::{Grant, GrantError, GrantSpec};
use crate::job::{JobError, JobRequest, SignedJob, VerifiedJob};
use crate::keys::PrivateKey;
use crate::policy::{Decision, Facts, Policy, PolicyError, RunnerConfig, Verdict};
use crate::run::{Cause, CauseKind, JobContext, Lifecycle, Outcome, RunError, Runner};
use crate::sandbox::Catalog;
use crate::sandbox::Playbook;
use crate::scope::Access;
use crate::scope::http::mutating_method;
use crate::store::{
    Changes, InstalledArtifact, JobRecord, JobState, NewJob, OutboxEvent, Store, StoreError, StoredLease,
};
use crate::trust::TrustStore;
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// File name of the policy in the data directory.
pub const POLICY_FILE: &str = "policy.cedar";
/// File name of the runner's config in the data directory.
pub const CONFIG_FILE: &str = "salve.toml";
/// Where installed artifacts live in the data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the trust store is not valid: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error(
        "no policy at {path}: every job would be denied. `salve init` writes the default one (see `salve init --help`)"
    )]
    NoPolicy { path: PathBuf },
    #[error("playbook {wanted} is not installed here; install it first with `salve install ARTIFACT.wasm`")]
    NotInstalled { wanted: String },
    #[error("the job asks for {asked}, but digest {digest} is {name} {version}")]
    RefMismatch { asked: String, digest: String, name: String, version: String },
    #[error("installed artifact {path}: {reason}")]
    Installed { path: PathBuf, reason: String },
    #[error("playbook {name} is not trusted for environment {environment:?}: {source}")]
    Artifact { name: String, environment: String, source: Box<ArtifactError> },
    #[error("the job's grant: {0}")]
    Grant(#[from] GrantError),
    #[error("the job's parameters: {0}")]
    Parameters(#[from] ParamError),
    #[error("no job {id}; `salve jobs list` shows the jobs")]
    UnknownJob { id: String },
    #[error("job {id} is {state}; {what}")]
    WrongState { id: String, state: JobState, what: String },
    #[error("job {id} has not been planned yet; approve it once `salve jobs show {id}` shows its plan")]
    NotPlanned { id: String },
    #[error("job {id} needs no approval: the policy allows it ({policies})")]
    NeedsNoApproval { id: String, policies: String },
    #[error(
        "you reviewed plan {reviewed}, but job {id}'s plan is now {current}: review it again with `salve jobs show {id}`"
    )]
    PlanMoved { id: String, reviewed: String, current: String },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Version(#[from] crate::artifact::floor::VersionError),
    #[error(
        "job {id}'s stored record does not match the job its agent signed ({what}): the job store was changed; the job is not run"
    )]
    Tampered { id: String, what: String },
}

/// The result of a submission.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Submitted {
    pub id: String,
    pub state: JobState,
    pub job_hash: String,
    pub decision: Decision,
}

/// A vote as an approver casts it.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    pub vote: Vote,
    pub reason: &'a str,
    /// How long the vote counts.
    pub lifetime: Duration,
    /// The plan hash the approver reviewed, if they name it: a vote for a
    /// plan that has changed since is refused.
    pub reviewed: Option<&'a str>,
}

/// The plan hash a rejection of a job not yet planned is bound to.
pub const NO_PLAN: &str = "none";

/// What every control-plane command shares.
pub struct ControlPlane {
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub trust: TrustStore,
    pub policy: Policy,
    pub config: RunnerConfig,
    trust_path: PathBuf,
}

/// The mutating entries of a grant, per capability: read-write
/// directories, commands not marked read-only, URL prefixes with a method
/// other than GET or HEAD. The policy sees which capabilities mutate
/// (`mutating`) and how many entries do (`scopes`).
fn mutating(spec: &GrantSpec) -> [(&'static str, usize); 3] {
    [
        ("fs", spec.fs.iter().filter(|f| f.access == Access::Rw).count()),
        ("exec", spec.exec.iter().filter(|e| !e.read_only).count()),
        ("http", spec.http.iter().filter(|h| h.methods.iter().any(|m| mutating_method(m))).count()),
    ]
}

/// What an approval of `job`'s plan `plan` is bound to.
fn subject<'a>(job: &'a JobRecord, plan: &'a str, group: Option<&'a str>) -> Subject<'a> {
    Subject {
        job_id: &job.id,
        job_hash: &job.job_hash,
        plan_hash: plan,
        submitter: &job.agent,
        environment: &job.environment,
        group,
    }
}

/// The hash a plan is known by: SHA-256 of its changes as canonical JSON.
pub fn plan_hash(changes: &Value) -> String {
    crate::host::digest(changes.to_string().as_bytes())
}

/// The changes a plan reported, as JSON.
pub fn plan_json(changes: &[crate::bindings::Change]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| json!({ "action": c.action, "target": c.target, "detail": c.detail, "reversible": c.reversible }))
            .collect(),
    )
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn decision_detail(stage: &str, action: &str, decision: &Decision, facts: &Facts) -> Value {
    json!({ "stage": stage, "action": action, "decision": decision, "facts": facts })
}

fn why(decision: &Decision) -> String {
    let mut text = if decision.policies.is_empty() {
        "no policy permits it (default deny)".to_string()
    } else {
        format!("policies: {}", decision.policies.join(", "))
    };
    if !decision.errors.is_empty() {
        text.push_str(&format!("; evaluation errors: {}", decision.errors.join("; ")));
    }
    text
}

impl ControlPlane {
    /// Opens the control plane of a data directory: its store, the trust
    /// store at `trust_path`, its policy and config.
    pub fn open(data_dir: &Path, trust_path: &Path) -> Result<ControlPlane, ControlError> {
        let (trust, policy, config) = ControlPlane::read(data_dir, trust_path)?;
        let store = Arc::new(Store::open(data_dir)?);
        Ok(ControlPlane {
            data_dir: data_dir.to_path_buf(),
            store,
            trust,
            policy,
            config,
            trust_path: trust_path.into(),
        })
    }

    fn read(data_dir: &Path, trust_path: &Path) -> Result<(TrustStore, Policy, RunnerConfig), ControlError> {
        let trust = TrustStore::load(trust_path)?;
        let policy_path = data_dir.join(POLICY_FILE);
        if !policy_path.exists() {
            return Err(ControlError::NoPolicy { path: policy_path });
        }
        let policy = Policy::load(&policy_path)?;
        let config = RunnerConfig::load(&data_dir.join(CONFIG_FILE))?;
        Ok((trust, policy, config))
    }

    /// Reads the trust store, the policy and the config again, so that a
    /// revoked key, a new policy or a new change window count from the next
    /// decision on. On an error, nothing changes.
    pub fn reload(&mut self) -> Result<(), ControlError> {
        let (trust, policy, config) = ControlPlane::read(&self.data_dir, &self.trust_path)?;
        self.trust = trust;
        self.policy = policy;
        self.config = config;
        Ok(())
    }

    /// The installed artifact a job names.
    pub fn resolve(&self, request: &JobRequest) -> Result<InstalledArtifact, ControlError> {
        let reference = &request.playbook;
        let wanted = match (&reference.name, &reference.version, &reference.digest) {
            (Some(n), Some(v), _) => format!("{n} {v}"),
            (_, _, Some(d)) => format!("with digest {d}"),
            _ => "(none named)".into(),
        };
        let name_version = reference.name.as_deref().zip(reference.version.as_deref());
        let found = self.store.artifact(name_version, None)?;
        let found = match (&found, &reference.digest) {
            (Some(found), Some(digest)) if &found.digest != digest => {
                return Err(ControlError::RefMismatch {
                    asked: wanted,
                    digest: digest.clone(),
                    name: found.name.clone(),
                    version: found.version.clone(),
                });
            }
            (Some(_), _) => found,
            (None, Some(digest)) if name_version.is_none() => self.store.artifact(None, Some(digest))?,
            (None, _) => None,
        };
        found.ok_or(ControlError::NotInstalled { wanted })
    }

    /// Reads an installed artifact and verifies it for `environment`: its
    /// bytes must still have the digest it was installed with.
    pub fn verify_installed(
        &self,
        installed: &InstalledArtifact,
        environment: &str,
        now: SystemTime,
    ) -> Result<(Vec<u8>, VerifiedArtifact), ControlError> {
        let bytes = std::fs::read(&installed.path)
            .map_err(|e| ControlError::Installed { path: installed.path.clone(), reason: e.to_string() })?;
        if crate::artifact::digest(&bytes) != installed.digest {
            return Err(ControlError::Installed {
                path: installed.path.clone(),
                reason: format!("its bytes changed since it was installed (digest {})", installed.digest),
            });
        }
        let verified = crate::artifact::verify(&bytes, &self.trust, environment, now).map_err(|source| {
            ControlError::Artifact {
                name: installed.name.clone(),
                environment: environment.into(),
                source: Box::new(source),
            }
        })?;
        Ok((bytes, verified))
    }

    /// Job `job` as its agent signed it, checked again at `at`: the stored
    /// envelope must hash to the job hash and verify under a key that is
    /// still a trusted agent key for the environment, and the columns the
    /// store keeps beside it (id, agent, environment, system, expiry,
    /// playbook and artifact) must say what the envelope says. What runs
    /// and what approvers review is taken from the envelope, never from the
    /// columns.
    pub fn signed_job(&self, job: &JobRecord, at: SystemTime) -> Result<JobRecord, ControlError> {
        let request = job.envelope.reopen(&self.trust, &job.job_hash, at)?;
        let tampered = |what: String| ControlError::Tampered { id: job.id.clone(), what };
        if job.envelope.key_id != job.agent {
            return Err(tampered(format!("agent {} in the store, {} in the envelope", job.agent, job.envelope.key_id)));
        }
        let columns = [
            ("id", &job.id, &request.id),
            ("environment", &job.environment, &request.target.environment),
            ("system", &job.system, &request.target.system),
        ];
        if let Some((what, stored, signed)) = columns.iter().find(|(_, stored, signed)| stored != signed) {
            return Err(tampered(format!("{what} {stored:?} in the store, {signed:?} signed")));
        }
        let signed_expiry =
            humantime::parse_rfc3339_weak(&request.expires_at).map_or(i64::MIN, |t| crate::store::to_ms(t) / 1000);
        if signed_expiry != job.expires_at {
            return Err(tampered(format!("expiry {} in the store, {} signed", job.expires_at, request.expires_at)));
        }
        let installed = self.resolve(&request)?;
        if (&installed.digest, &installed.name, &installed.version)
            != (&job.digest, &job.playbook, &job.playbook_version)
        {
            return Err(tampered(format!(
                "playbook {} {} ({}) in the store, {} {} ({}) named",
                job.playbook, job.playbook_version, job.digest, installed.name, installed.version, installed.digest
            )));
        }
        Ok(JobRecord { request, ..job.clone() })
    }

    /// What the policy is asked about a job.
    pub fn facts(
        &self,
        agent: &str,
        request: &JobRequest,
        manifest: &Manifest,
        action: &'static str,
        now: SystemTime,
    ) -> Facts {
        let mutating = mutating(&request.grant);
        Facts {
            agent: agent.to_string(),
            action,
            playbook: manifest.name.clone(),
            version: manifest.version.to_string(),
            environment: request.target.environment.clone(),
            target: request.target.system.clone(),
            severity: request.evidence.severity.name().to_string(),
            confidence: request.confidence_percent(),
            risk_class: serde_json::to_value(manifest.risk_class)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            reversibility: serde_json::to_value(manifest.reversibility)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            change_window_open: self.config.window_open(&request.target.environment, now),
            targets: 1,
            mutating: mutating.iter().filter(|(_, n)| *n > 0).map(|(cap, _)| cap.to_string()).collect(),
            scopes: i64::try_from(mutating.iter().map(|(_, n)| n).sum::<usize>()).unwrap_or(i64::MAX),
        }
    }

    /// Records a refused submission in the outbox, for the audit log.
    fn refused(&self, envelope: &SignedJob, error: &ControlError) {
        let event = OutboxEvent {
            job: None,
            action: "submission-refused".into(),
            at: crate::store::now_ms(),
            detail: json!({ "key_id": envelope.key_id, "reason": error.to_string() }),
        };
        if let Err(e) = self.store.submit_refusal(&event) {
            tracing::warn!("a refused submission could not be recorded for the audit log: {e}");
        }
    }

    /// Takes a signed job: verifies it, resolves and verifies its
    /// playbook for the job's environment, checks its parameters and grant
    /// against the signed manifest, decides, and stores it (submitted, or
    /// denied). A replayed nonce or a reused id is refused.
    pub fn submit(&self, envelope: &SignedJob, now: SystemTime) -> Result<Submitted, ControlError> {
        self.submit_checked(envelope, now).inspect_err(|e| self.refused(envelope, e))
    }

    fn submit_checked(&self, envelope: &SignedJob, now: SystemTime) -> Result<Submitted, ControlError> {
        let VerifiedJob { request, agent, hash, expires_at, .. } = envelope.verify(&self.trust, now)?;
        let environment = &request.target.environment;
        let installed = self.resolve(&request)?;
        let (_, verified) = self.verify_installed(&installed, environment, now)?;
        let manifest = verified.manifest();
        manifest.check_parameters(&request.parameter_list())?;
        self.config.check_scope(environment, &Grant::open(&request.grant, manifest)?)?;
        VersionFloor::new(&self.data_dir).admit(&manifest.name, &manifest.version, false)?;
        let facts = self.facts(&agent, &request, manifest, "apply", now);
        let decision = self.policy.decide(&facts);
        let (state, reason) = match &decision.verdict {
            Verdict::Deny => (JobState::Denied, format!("denied at submission: {}", why(&decision))),
            _ => (JobState::Submitted, format!("submitted by agent key {agent}")),
        };
        let outbox = [
            OutboxEvent::new(
                &request.id,
                "submitted",
                json!({
                    "agent": agent,
                    "job_hash": hash,
                    "playbook": installed.name,
                    "version": installed.version,
                    "digest": installed.digest,
                    "environment": environment,
                    "target": request.target.system,
                    "evidence": request.evidence,
                    "parameters": request.parameters,
                    "grant": request.grant,
                    "nonce": request.nonce,
                    "expires_at": request.expires_at,
                }),
            ),
            OutboxEvent::new(&request.id, "decision", decision_detail("submission", "apply", &decision, &facts)),
        ];
        let job = NewJob {
            envelope,
            request: &request,
            agent: &agent,
            job_hash: &hash,
            playbook: &installed.name,
            playbook_version: &installed.version,
            digest: &installed.digest,
            expires_at,
        };
        self.store.submit(&job, &decision, state, &reason, &outbox)?;
        Ok(Submitted { id: request.id.clone(), state, job_hash: hash, decision })
    }

    /// The job `id`, or an error that says there is none.
    pub fn job(&self, id: &str) -> Result<JobRecord, ControlError> {
        self.store.job(id)?.ok_or_else(|| ControlError::UnknownJob { id: id.into() })
    }

    /// Signs a vote on job `id` with `key` and records it.
    pub fn vote(
        &self,
        id: &str,
        key: &PrivateKey,
        ballot: &Ballot<'_>,
        now: SystemTime,
    ) -> Result<JobRecord, ControlError> {
        let Ballot { vote, reason, lifetime, reviewed } = *ballot;
        let job = self.job(id)?;
        let plan = match (&job.plan_hash, vote) {
            (Some(plan), _) => plan.clone(),
            // A job may be rejected before it has a plan.
            (None, Vote::Reject) => NO_PLAN.to_string(),
            (None, Vote::Approve) => return Err(ControlError::NotPlanned { id: id.into() }),
        };
        if let Some(reviewed) = reviewed
            && reviewed != plan
        {
            return Err(ControlError::PlanMoved { id: id.into(), reviewed: reviewed.into(), current: plan });
        }
        let approval = Approval::sign(&subject(&job, &plan, None), vote, reason, lifetime, key, now)?;
        self.record_vote(id, &approval, now)
    }

    /// Records a vote on job `id` signed elsewhere, after every check: the job is
    /// waiting for it, the key may vote (an approver in the group the
    /// decision asks for, not the submitter, not twice), and the vote is
    /// bound to this job and its current plan. Enough approvals move the
    /// job to `approved`; a rejection moves it to `rejected`.
    pub fn record_vote(&self, id: &str, approval: &Approval, now: SystemTime) -> Result<JobRecord, ControlError> {
        let event = OutboxEvent::new(id, approval.vote.name(), json!({ "approval": approval }));
        self.store.vote(
            id,
            approval,
            |job, current| {
                let open = match approval.vote {
                    Vote::Approve => &[JobState::WaitingApproval][..],
                    Vote::Reject => &[JobState::Submitted, JobState::WaitingApproval, JobState::Approved][..],
                };
                if !open.contains(&job.state) {
                    let names: Vec<&str> = open.iter().map(|s| s.name()).collect();
                    return Err(ControlError::WrongState {
                        id: job.id.clone(),
                        state: job.state,
                        what: format!("only a job that is {} can be {}d", names.join(" or "), approval.vote.name()),
                    });
                }
                if crate::store::to_ms(now) / 1000 >= job.expires_at {
                    return Err(ControlError::WrongState {
                        id: job.id.clone(),
                        state: job.state,
                        what: "it has expired and takes no more votes; the agent must submit it again".into(),
                    });
                }
                let plan = match (job.plan_hash.as_deref(), approval.vote) {
                    (Some(plan), _) => plan,
                    (None, Vote::Reject) => NO_PLAN,
                    (None, Vote::Approve) => return Err(ControlError::NotPlanned { id: job.id.clone() }),
                };
                let (needed, group) = match job.decision.as_ref().map(|d| &d.verdict) {
                    Some(Verdict::NeedsApprovals { approvals, group }) => (*approvals, Some(group.as_str())),
                    _ if approval.vote == Vote::Reject => (0, None),
                    _ => {
                        return Err(ControlError::NeedsNoApproval {
                            id: job.id.clone(),
                            policies: job.decision.as_ref().map(why).unwrap_or_default(),
                        });
                    }
                };
                // Votes that no longer count (expired, or by a key since
                // revoked) do not stop their approver from voting again.
                let counted = self.counting(job, current.iter().map(|a| &a.approval), group, now);
                // An approver may withdraw by rejecting; a rejection ends
                // the job, so no key can reject twice.
                let earlier: Vec<&str> = match approval.vote {
                    Vote::Approve => counted.iter().map(|a| a.key_id.as_str()).collect(),
                    Vote::Reject => Vec::new(),
                };
                approval.check(&subject(job, plan, group), &self.trust, &earlier, now)?;
                Ok(match approval.vote {
                    Vote::Reject => Some((
                        JobState::Rejected,
                        format!("rejected by approver key {}: {}", approval.key_id, approval.reason),
                    )),
                    Vote::Approve => {
                        let valid = 1 + counted.len();
                        (valid as u32 >= needed)
                            .then(|| (JobState::Approved, format!("approved by {valid} of {needed} approvers")))
                    }
                })
            },
            &[event],
        )
    }

    /// The approvals among `votes` that count for `job` now: approve votes
    /// that pass every check, by distinct keys.
    fn counting<'a>(
        &self,
        job: &JobRecord,
        votes: impl Iterator<Item = &'a Approval>,
        group: Option<&str>,
        now: SystemTime,
    ) -> Vec<&'a Approval> {
        let Some(plan) = job.plan_hash.as_deref() else { return Vec::new() };
        let subject = subject(job, plan, group);
        let mut counted: Vec<&Approval> = Vec::new();
        for vote in votes.filter(|v| v.vote == Vote::Approve) {
            let earlier: Vec<&str> = counted.iter().map(|a| a.key_id.as_str()).collect();
            if vote.check(&subject, &self.trust, &earlier, now).is_ok() {
                counted.push(vote);
            }
        }
        counted
    }
}

/// Keeps the store's state of one job in step with the runner.
struct StoreLifecycle {
    store: Arc<Store>,
}

impl StoreLifecycle {
    fn blocking<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
        if matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) {
            tokio::task::block_in_place(|| f(&self.store))
        } else {
            f(&self.store)
        }
    }
}

impl Lifecycle for StoreLifecycle {
    fn entering(&self, job: &str, phase: Phase) -> Result<(), String> {
        let (expected, to): (&[JobState], JobState) = match phase {
            Phase::Apply => (&[JobState::Approved], JobState::Applying),
            Phase::Verify => (&[JobState::Applying], JobState::Verifying),
            Phase::Rollback => {
                (&[JobState::Applying, JobState::Verifying, JobState::RollingBack], JobState::RollingBack)
            }
            Phase::Plan => return Ok(()),
        };
        let reason = format!("{phase} starts");
        self.blocking(|store| store.transition(job, expected, to, &reason, &Changes::default(), &[]))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn leased(&self, job: &str, lease: &Lease) {
        let stored = StoredLease {
            id: lease.id.clone(),
            credential: lease.name.clone(),
            kind: serde_json::to_value(lease.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            expires_at: lease.expires.map(rfc3339),
            leased_at: crate::store::now_ms(),
            revoked_at: None,
        };
        if let Err(e) = self.blocking(|store| store.lease(job, &stored)) {
            tracing::warn!(job, "lease {} could not be recorded in the job store: {e}", lease.id);
        }
    }

    fn revoked(&self, job: &str, _lease_ids: &[String]) {
        if let Err(e) = self.blocking(|store| store.revoke_leases(job)) {
            tracing::warn!(job, "the revocation of the job's leases could not be recorded: {e}");
        }
    }
}

/// What the worker did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub job: String,
    pub state: JobState,
    pub note: String,
}

/// What loading a job's playbook checks beyond its signers and manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// To plan or apply: the version floor and the environment's scope too.
    ToRun,
    /// To roll back what ran: a floor raised or a scope narrowed since
    /// must not stop the target from being restored.
    ToRollBack,
}

/// A job as signed, with its playbook and grant, checked again.
type Admitted = (JobRecord, Arc<Playbook>, Grant);

/// The runner side of the control plane: plans submitted jobs, applies
/// approved ones, and recovers the jobs a stopped runner left behind.
pub struct Worker {
    pub control: ControlPlane,
    runner: Runner,
    catalog: Catalog,
    lifecycle: StoreLifecycle,
}

impl Worker {
    pub fn new(control: ControlPlane, runner: Runner) -> Worker {
        let catalog = Catalog::new(runner.sandbox().clone());
        let lifecycle = StoreLifecycle { store: Arc::clone(&control.store) };
        Worker { control, runner, catalog, lifecycle }
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    fn audit(&self, job: &str, action: &str, detail: Value) -> Result<(), ControlError> {
        self.runner
            .audit()
            .append(Some(job), &Event::Control { action, at: None, detail: &detail })
            .map_err(RunError::from)?;
        Ok(())
    }

    /// Relays the steps other processes recorded (submissions, votes) into
    /// the audit log, durably, then forgets them. A crash between the two
    /// relays them again: the same step may appear twice in the log, never
    /// not at all.
    pub async fn relay(&self) -> Result<usize, ControlError> {
        let pending = self.control.store.outbox()?;
        let Some((last, _)) = pending.last() else { return Ok(0) };
        let last = *last;
        for (_, event) in &pending {
            let at = humantime::format_rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_millis(event.at.max(0) as u64),
            )
            .to_string();
            self.runner
                .audit()
                .append(
                    event.job.as_deref(),
                    &Event::Control { action: &event.action, at: Some(&at), detail: &event.detail },
                )
                .map_err(RunError::from)?;
        }
        let audit = self.runner.audit();
        audit.sync(audit.head().seq).await.map_err(RunError::from)?;
        self.control.store.outbox_relayed(last)?;
        Ok(pending.len())
    }

    /// Moves a job and audits the move, with `detail`.
    fn settle(
        &self,
        job: &JobRecord,
        to: JobState,
        reason: &str,
        changes: &Changes<'_>,
        detail: Value,
    ) -> Result<Step, ControlError> {
        // The move first: one that loses a race (a rejection came first)
        // must not appear in the audit log as done.
        self.control.store.transition(&job.id, &[job.state], to, reason, changes, &[])?;
        self.audit(&job.id, "state", json!({ "from": job.state, "to": to, "reason": reason, "detail": detail }))?;
        Ok(Step { job: job.id.clone(), state: to, note: reason.to_string() })
    }

    /// The playbook and the grant of a job, checked again now: the artifact
    /// against the trust store, the grant against the signed manifest.
    fn load(&self, job: &JobRecord, now: SystemTime, checks: Checks) -> Result<(Arc<Playbook>, Grant), ControlError> {
        let installed = self.control.store.artifact(None, Some(&job.digest))?.ok_or_else(|| {
            ControlError::NotInstalled { wanted: format!("{} {} ({})", job.playbook, job.playbook_version, job.digest) }
        })?;
        let playbook = match self.catalog.get(&job.digest, &self.control.trust, &job.environment, now) {
            Some(found) => found.map_err(|source| ControlError::Artifact {
                name: job.playbook.clone(),
                environment: job.environment.clone(),
                source: Box::new(source),
            })?,
            None => {
                let (bytes, _) = self.control.verify_installed(&installed, &job.environment, now)?;
                self.catalog.load(&bytes, &self.control.trust, &job.environment, now).map_err(|source| {
                    ControlError::Artifact {
                        name: job.playbook.clone(),
                        environment: job.environment.clone(),
                        source: Box::new(source),
                    }
                })?
            }
        };
        let manifest = playbook.manifest().expect("a verified artifact has a manifest");
        manifest.check_parameters(&job.request.parameter_list())?;
        if checks == Checks::ToRun {
            VersionFloor::new(&self.control.data_dir).admit(&manifest.name, &manifest.version, false)?;
        }
        let grant = Grant::open(&job.request.grant, manifest)?
            .with_mutations_at_most(self.control.config.budgets.mutations_per_job);
        if checks == Checks::ToRun {
            self.control.config.check_scope(&job.environment, &grant)?;
        }
        Ok((playbook, grant))
    }

    fn context(job: &JobRecord) -> JobContext {
        JobContext {
            id: job.id.clone(),
            environment: job.environment.clone(),
            target: job.system.clone(),
            parameters: job.request.parameter_list(),
        }
    }

    fn decide(&self, job: &JobRecord, manifest: &Manifest, action: &'static str, now: SystemTime) -> (Decision, Facts) {
        let facts = self.control.facts(&job.agent, &job.request, manifest, action, now);
        (self.control.policy.decide(&facts), facts)
    }

    /// A job that expired while it waited.
    fn expired(&self, job: &JobRecord, now: SystemTime) -> Option<Result<Step, ControlError>> {
        (crate::store::to_ms(now) / 1000 >= job.expires_at)
            .then(|| self.settle(job, JobState::Expired, "expired before it could run", &Changes::default(), json!({})))
    }

    /// Runs `plan` with a read-only grant; returns the plan's hash and
    /// changes, or why it failed (the plan itself, or a credential or limit
    /// it could not have). Only a failure of the audit log is an error.
    async fn plan(
        &self,
        playbook: &Playbook,
        grant: &Grant,
        job: &JobRecord,
    ) -> Result<Result<(String, Value), String>, ControlError> {
        let report = match self.runner.plan_with(playbook, grant, &Worker::context(job), &self.lifecycle).await {
            Ok(report) => report,
            Err(e @ (RunError::Credential { .. } | RunError::MemoryCeiling { .. })) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        Ok(match report.changes {
            Ok(changes) => {
                let changes = plan_json(&changes);
                Ok((plan_hash(&changes), changes))
            }
            Err(cause) => Err(cause.to_string()),
        })
    }

    /// The job as signed and its playbook and grant, all checked again at
    /// `at`; or the step that ends it when a check refuses.
    fn admit(&self, job: &JobRecord, at: SystemTime) -> Result<Result<Admitted, Step>, ControlError> {
        let job = match self.control.signed_job(job, at) {
            Ok(job) => job,
            // The store failing says nothing about the job: try again later.
            Err(e @ ControlError::Store(_)) => return Err(e),
            Err(e) => {
                let reason = format!("refused: {e}");
                return self.settle(job, JobState::Denied, &reason, &Changes::default(), json!({})).map(Err);
            }
        };
        match self.load(&job, at, Checks::ToRun) {
            Ok((playbook, grant)) => Ok(Ok((job, playbook, grant))),
            Err(e @ ControlError::Store(_)) => Err(e),
            Err(e) => {
                let reason = format!("cannot be run: {e}");
                self.settle(&job, JobState::Failed, &reason, &Changes::default(), json!({})).map(Err)
            }
        }
    }

    /// A submitted job: the policy for `plan`, then the plan, then waiting
    /// for approvals or ready to apply.
    pub async fn intake(&self, job: &JobRecord) -> Result<Step, ControlError> {
        let now = SystemTime::now();
        if let Some(step) = self.expired(job, now) {
            return step;
        }
        let (job, playbook, grant) = match self.admit(job, now)? {
            Ok(admitted) => admitted,
            Err(step) => return Ok(step),
        };
        let job = &job;
        let manifest = playbook.manifest().expect("verified");
        let (decision, facts) = self.decide(job, manifest, "plan", now);
        self.audit(&job.id, "decision", decision_detail("before-plan", "plan", &decision, &facts))?;
        if decision.verdict == Verdict::Deny {
            let reason = format!("the policy denies planning it: {}", why(&decision));
            return self.settle(job, JobState::Denied, &reason, &Changes::default(), json!({}));
        }
        match self.plan(&playbook, &grant, job).await? {
            Err(cause) => {
                let reason = format!("its plan failed: {cause}");
                self.settle(job, JobState::PlanFailed, &reason, &Changes::default(), json!({}))
            }
            Ok((hash, changes)) => {
                let needs = matches!(job.decision.as_ref().map(|d| &d.verdict), Some(Verdict::NeedsApprovals { .. }));
                let (to, reason) = match job.decision.as_ref().map(|d| &d.verdict) {
                    Some(Verdict::NeedsApprovals { approvals, group }) => (
                        JobState::WaitingApproval,
                        format!("planned; needs {approvals} approval(s) from group {group}"),
                    ),
                    _ => (JobState::Approved, "planned; the policy allows it without approval".to_string()),
                };
                let changes_ref = Changes { plan: Some((&hash, &changes)), ..Changes::default() };
                let detail = json!({ "plan_hash": hash, "changes": changes, "needs_approvals": needs });
                self.settle(job, to, &reason, &changes_ref, detail)
            }
        }
    }

    /// An approved job: checked again at the moment of action. The job as
    /// signed, the agent's key and the artifact; a fresh plan, which must
    /// be the one approved; then, last, the policy with the change window
    /// as it is now, the approvals it asks for, and the hourly budget.
    pub async fn execute(&self, job: &JobRecord) -> Result<Step, ControlError> {
        if let Some(step) = self.expired(job, SystemTime::now()) {
            return step;
        }
        let (job, playbook, grant) = match self.admit(job, SystemTime::now())? {
            Ok(admitted) => admitted,
            Err(step) => return Ok(step),
        };
        let job = &job;
        let manifest = playbook.manifest().expect("verified");
        let (plan, changes) = match self.plan(&playbook, &grant, job).await? {
            Ok(planned) => planned,
            Err(cause) => {
                let reason = format!("its plan failed just before apply: {cause}");
                return self.settle(job, JobState::PlanFailed, &reason, &Changes::default(), json!({}));
            }
        };
        // Votes cast meanwhile reach the audit log before they count.
        self.relay().await?;
        let now = SystemTime::now();
        let (decision, facts) = self.decide(job, manifest, "apply", now);
        self.audit(&job.id, "decision", decision_detail("before-apply", "apply", &decision, &facts))?;
        let record_decision = Changes { decision: Some(&decision), ..Changes::default() };
        if let Verdict::Deny = &decision.verdict {
            let reason = format!("denied just before apply: {}", why(&decision));
            return self.settle(job, JobState::Denied, &reason, &record_decision, json!({}));
        }
        if Some(&plan) != job.plan_hash.as_ref() {
            let was = job.plan_hash.as_deref().unwrap_or("none");
            let (to, reason) = match &decision.verdict {
                Verdict::NeedsApprovals { .. } => (
                    JobState::WaitingApproval,
                    format!(
                        "the plan changed before apply (was {was}, now {plan}): the approvals are void; review the new plan"
                    ),
                ),
                _ => (
                    JobState::Approved,
                    format!(
                        "the plan changed before apply (was {was}, now {plan}); the policy allows the new one without approval"
                    ),
                ),
            };
            let changes_ref = Changes {
                decision: Some(&decision),
                plan: Some((&plan, &changes)),
                void_approvals: Some("the plan changed"),
                outcome: None,
            };
            let detail = json!({ "plan_hash": plan, "changes": changes });
            let step = self.settle(job, to, &reason, &changes_ref, detail)?;
            if to != JobState::Approved {
                return Ok(step);
            }
            // Allowed without approval: the new plan is recorded and the job
            // goes on (a plan that changes at every look must not keep it
            // from ever running).
        }
        if let Verdict::NeedsApprovals { approvals, group } = &decision.verdict {
            let votes = self.control.store.approvals(&job.id)?;
            let valid = self.control.counting(
                job,
                votes.iter().filter(|v| v.void.is_none()).map(|v| &v.approval),
                Some(group),
                now,
            );
            if (valid.len() as u32) < *approvals {
                let reason = format!(
                    "needs {approvals} approval(s) from group {group} for plan {plan}; {} count now",
                    valid.len()
                );
                return self.settle(job, JobState::WaitingApproval, &reason, &record_decision, json!({}));
            }
            let keys: Vec<&str> = valid.iter().map(|a| a.key_id.as_str()).collect();
            self.audit(&job.id, "approvals", json!({ "plan_hash": plan, "counted": keys, "needed": approvals }))?;
        }
        let limit = self.control.config.budgets.jobs_per_playbook_per_hour;
        let hour_ago = now.checked_sub(Duration::from_secs(3600)).unwrap_or(SystemTime::UNIX_EPOCH);
        let recent = self.control.store.applied_since(&job.playbook, &job.environment, hour_ago)?;
        if recent >= limit {
            let reason = format!(
                "budget: {recent} jobs of {} already ran in {} in the last hour (at most {limit}); resubmit later",
                job.playbook, job.environment
            );
            return self.settle(job, JobState::Denied, &reason, &record_decision, json!({ "budget": "jobs-per-hour" }));
        }
        self.control.store.record_decision(&job.id, &decision)?;
        let report = match self.runner.run_with(&playbook, &grant, &Worker::context(job), &self.lifecycle).await {
            Ok(report) => report,
            Err(e @ (RunError::State { .. } | RunError::MemoryCeiling { .. } | RunError::Credential { .. })) => {
                // Apply never started: at most leases were taken.
                self.control.store.revoke_leases(&job.id)?;
                let current = self.control.job(&job.id)?;
                if !matches!(current.state, JobState::Approved | JobState::Applying) {
                    // Someone moved it first (a rejection): theirs stands.
                    return Ok(Step { job: job.id.clone(), state: current.state, note: format!("not run: {e}") });
                }
                let reason = format!("could not start: {e}");
                return self.settle(&current, JobState::Failed, &reason, &Changes::default(), json!({}));
            }
            // The audit log or the journal failed: the job's state is left
            // for recovery at the next start.
            Err(e) => return Err(e.into()),
        };
        let step = self.finished(&job.id, &report.outcome)?;
        if let Err(e) = VersionFloor::new(&self.control.data_dir).record(&manifest.name, &manifest.version) {
            tracing::warn!(job = %job.id, "the version floor could not be raised: {e}");
        }
        Ok(step)
    }

    /// Records a job's outcome as its final state.
    fn finished(&self, id: &str, outcome: &Outcome) -> Result<Step, ControlError> {
        let to = match outcome {
            Outcome::Succeeded => JobState::Succeeded,
            Outcome::RolledBack { .. } => JobState::RolledBack,
            Outcome::RollbackFailed { .. } => JobState::RollbackFailed,
        };
        let value = serde_json::to_value(outcome).unwrap_or(Value::Null);
        let reason = match outcome.cause() {
            Some(cause) => format!("{}: {cause}", outcome.name()),
            None => outcome.name().to_string(),
        };
        let changes = Changes { outcome: Some(&value), ..Changes::default() };
        let acting = [JobState::Applying, JobState::Verifying, JobState::RollingBack];
        self.control.store.transition(id, &acting, to, &reason, &changes, &[])?;
        Ok(Step { job: id.to_string(), state: to, note: reason })
    }

    /// Rolls back every job a stopped runner left in `applying`,
    /// `verifying` or `rolling-back`. A job whose outcome already reached
    /// the audit log (the runner stopped after recording it) takes that
    /// outcome instead. A job that cannot be rolled back is recorded as
    /// `rollback-failed` (loudly) and recovery goes on with the next.
    pub async fn recover(&self) -> Result<Vec<Step>, ControlError> {
        let acting = [JobState::Applying, JobState::Verifying, JobState::RollingBack];
        let mut steps = Vec::new();
        for job in self.control.store.all_in(&acting, u32::MAX)? {
            steps.push(self.recover_job(&job).await?);
        }
        Ok(steps)
    }

    async fn recover_job(&self, job: &JobRecord) -> Result<Step, ControlError> {
        tracing::warn!(job = %job.id, state = %job.state, "recovering a job a stopped runner left behind");
        self.control.store.revoke_leases(&job.id)?;
        if let Some(outcome) = recorded_outcome(self.runner.audit().path(), &job.id)? {
            self.audit(&job.id, "recovered", json!({ "found": job.state, "outcome_in_audit_log": outcome }))?;
            let to = match outcome.as_str() {
                "succeeded" => JobState::Succeeded,
                "rolled-back" => JobState::RolledBack,
                _ => JobState::RollbackFailed,
            };
            let reason = format!("the runner stopped after recording the outcome {outcome}");
            let value = json!({ "outcome": outcome, "recovered": true });
            let changes = Changes { outcome: Some(&value), ..Changes::default() };
            self.control.store.transition(&job.id, &[job.state], to, &reason, &changes, &[])?;
            return Ok(Step { job: job.id.clone(), state: to, note: reason });
        }
        let phase = match job.state {
            JobState::Applying => Phase::Apply,
            JobState::Verifying => Phase::Verify,
            _ => Phase::Rollback,
        };
        let cause = Cause::new(
            phase,
            CauseKind::Interrupted,
            format!("the runner stopped while the job was {}; rolled back at the next start", job.state),
        );
        self.audit(&job.id, "recovering", json!({ "found": job.state }))?;
        // The job and its artifact are checked as they were when apply
        // started (a key that expired since still counts, a revoked one
        // never does): code no longer trusted is not run, even to roll back.
        let applying_at = self
            .control
            .store
            .history(&job.id)?
            .iter()
            .rev()
            .find(|t| t.to == JobState::Applying)
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_millis(t.at.max(0) as u64))
            .unwrap_or_else(SystemTime::now);
        let loaded = self.control.signed_job(job, applying_at).and_then(|job| {
            let (playbook, grant) = self.load(&job, applying_at, Checks::ToRollBack)?;
            Ok((job, playbook, grant))
        });
        let failed = |cause: Cause, why: String| Outcome::RollbackFailed {
            cause,
            rollback_cause: Cause::new(Phase::Rollback, CauseKind::Instantiate, why),
        };
        let outcome = match loaded {
            Ok((job, playbook, grant)) => {
                match self
                    .runner
                    .recover(&playbook, &grant, &Worker::context(&job), cause.clone(), &self.lifecycle)
                    .await
                {
                    Ok(report) => return self.finished(&job.id, &report.outcome),
                    Err(e @ (RunError::Audit(_) | RunError::Journal(_))) => return Err(e.into()),
                    Err(e) => failed(cause, format!("cannot start the rollback: {e}")),
                }
            }
            Err(e) => failed(cause, format!("cannot load the job and its playbook to roll back: {e}")),
        };
        // The job is marked as rolling back first, so that it is not taken
        // for one that never started if the next step fails.
        if job.state != JobState::RollingBack {
            let reason = "rollback starts".to_string();
            self.control.store.transition(
                &job.id,
                &[job.state],
                JobState::RollingBack,
                &reason,
                &Changes::default(),
                &[],
            )?;
        }
        self.runner.record_outcome(&job.id, &outcome).await?;
        self.finished(&job.id, &outcome)
    }

    /// Does what can be done now, one job at a time: relays the outbox,
    /// then takes the job that waited longest among those submitted or
    /// approved. `None` when there is nothing to do.
    pub async fn step(&self) -> Result<Option<Step>, ControlError> {
        self.relay().await?;
        let now = SystemTime::now();
        let expired = self
            .control
            .store
            .all_in(&[JobState::WaitingApproval], 100)?
            .into_iter()
            .find(|waiting| crate::store::to_ms(now) / 1000 >= waiting.expires_at);
        let step = if let Some(waiting) = expired {
            self.settle(&waiting, JobState::Expired, "expired waiting for approvals", &Changes::default(), json!({}))
        } else {
            let Some(job) = self.control.store.next(&[JobState::Submitted, JobState::Approved])? else {
                return Ok(None);
            };
            match job.state {
                JobState::Submitted => self.intake(&job).await,
                _ => self.execute(&job).await,
            }
        };
        match step {
            // Someone moved the job meanwhile (a rejection): not an error.
            Err(ControlError::Store(StoreError::Conflict { id, state, .. })) => {
                Ok(Some(Step { job: id, state, note: "moved by someone else meanwhile".into() }))
            }
            other => other.map(Some),
        }
    }
}

/// The outcome recorded in the audit log at `path` for job `id` after its
/// last `run` or `recover` start, if any.
pub fn recorded_outcome(path: &Path, id: &str) -> Result<Option<String>, ControlError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ControlError::Io { path: path.into(), source: e }),
    };
    let needle = format!("\"job\":{}", Value::from(id));
    let mut outcome = None;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| ControlError::Io { path: path.into(), source: e })?;
        if !line.contains(&needle) {
            continue;
        }
        let Ok(record) = serde_json::from_str::<Value>(&line) else { continue };
        match record["kind"].as_str() {
            Some("job") if matches!(record["mode"].as_str(), Some("run" | "recover")) => outcome = None,
            Some("outcome") => {
                if let Some(name) = record["outcome"].as_str()
                    && matches!(name, "succeeded" | "rolled-back" | "rollback-failed")
                {
                    outcome = Some(name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_capabilities_are_read_from_the_grant() {
        let spec = GrantSpec::parse(
            "[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"ro\"\n\
             [[http]]\nmethods = [\"GET\"]\nprefix = \"http://127.0.0.1/\"\n",
        )
        .unwrap();
        assert_eq!(mutating(&spec), [("fs", 0), ("exec", 0), ("http", 0)]);
        let spec = GrantSpec::parse(
            "[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"rw\"\n\
             [[http]]\nmethods = [\"GET\", \"POST\"]\nprefix = \"http://127.0.0.1/\"\n",
        )
        .unwrap();
        assert_eq!(mutating(&spec), [("fs", 1), ("exec", 0), ("http", 1)]);
    }

    #[test]
    fn the_recorded_outcome_is_the_one_after_the_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lines = [
            r#"{"seq":1,"job":"a","kind":"job","mode":"plan"}"#,
            r#"{"seq":2,"job":"a","kind":"outcome","outcome":"planned"}"#,
            r#"{"seq":3,"job":"a","kind":"job","mode":"run"}"#,
            r#"{"seq":4,"job":"b","kind":"outcome","outcome":"succeeded"}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        assert_eq!(recorded_outcome(&path, "a").unwrap(), None);
        std::fs::write(
            &path,
            format!("{}\n{}", lines.join("\n"), r#"{"seq":5,"job":"a","kind":"outcome","outcome":"succeeded"}"#),
        )
        .unwrap();
        assert_eq!(recorded_outcome(&path, "a").unwrap().as_deref(), Some("succeeded"));
        assert_eq!(recorded_outcome(&dir.path().join("none"), "a").unwrap(), None);
    }
}
