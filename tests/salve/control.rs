//! The control plane: signed jobs, policy at submission and at the moment
//! of action, plan-bound approvals, budgets, and every way around them
//! refused.

use crate::common::{Site, artifact, author_key, runner_key, sandbox, trusted};
use crate::rotate_logs::log_text;
use salve::approval::{Approval, ApprovalError, DEFAULT_LIFETIME, Vote};
use salve::audit::AuditLog;
use salve::audit::verify::{Anchor, verify_log};
use salve::control::{Ballot, ControlError, ControlPlane, Worker};
use salve::job::{Evidence, JobError, JobRequest, PlaybookRef, Severity, SignedJob, Target};
use salve::keys::{PrivateKey, Role};
use salve::policy::{DEFAULT_POLICY, Verdict};
use salve::run::Runner;
use salve::store::{InstalledArtifact, JobState, StoreError};
use salve::trust::{KeyEntry, TrustError, TrustFile};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A data directory with a trust store, a policy, a config, installed
/// playbooks, and the keys of an agent and three approvers.
pub struct Plane {
    pub site: Site,
    pub agent: PrivateKey,
    pub alice: PrivateKey,
    pub bob: PrivateKey,
    /// An approver in group `dba`, not `sre`.
    pub carol: PrivateKey,
}

pub fn entry(key: &PrivateKey, environments: &[&str], groups: &[&str]) -> KeyEntry {
    KeyEntry { groups: groups.iter().map(|g| g.to_string()).collect(), ..trusted(key, environments) }
}

/// Grants rotate-logs the site's `logs` directory.
pub const ROTATE_GRANT: &str = "[[fs]]\nname = \"logs\"\npath = \"{root}/logs\"\naccess = \"rw\"\n";

impl Plane {
    pub fn new(policy: &str, config: &str) -> Plane {
        let plane = Plane {
            site: Site::new(),
            agent: PrivateKey::from_seed("agent", Role::Agent, [21; 32]),
            alice: PrivateKey::from_seed("alice", Role::Approver, [22; 32]),
            bob: PrivateKey::from_seed("bob", Role::Approver, [23; 32]),
            carol: PrivateKey::from_seed("carol", Role::Approver, [24; 32]),
        };
        let data = plane.site.init_data_dir();
        let trust = TrustFile {
            keys: vec![
                trusted(author_key(), &["dev", "prod"]),
                trusted(&runner_key(), &["*"]),
                entry(&plane.agent, &["dev", "prod", "staging"], &[]),
                entry(&plane.alice, &["dev", "prod"], &["sre"]),
                entry(&plane.bob, &["dev", "prod"], &["sre"]),
                entry(&plane.carol, &["prod"], &["dba"]),
            ],
            revoked: vec![],
            signatures: vec![],
        };
        std::fs::write(data.join("trust.toml"), toml::to_string(&trust).unwrap()).unwrap();
        std::fs::write(data.join("policy.cedar"), policy).unwrap();
        std::fs::write(data.join("salve.toml"), config).unwrap();
        for name in ["rotate-logs", "noop"] {
            plane.install(name);
        }
        plane
    }

    /// Installs the test suite's signed artifact `name`.
    pub fn install(&self, name: &str) {
        let bytes = artifact(name);
        let digest = salve::artifact::digest(&bytes);
        let path = self.site.write(&format!("data/artifacts/{digest}.wasm"), &bytes);
        let manifest = salve::artifact::Artifact::parse(&bytes).unwrap().manifest_text.to_string();
        let manifest = salve::artifact::manifest::Manifest::parse(&manifest).unwrap();
        self.control()
            .store
            .install(&InstalledArtifact { digest, name: name.into(), version: manifest.version.to_string(), path })
            .unwrap();
    }

    pub fn data(&self) -> PathBuf {
        self.site.data()
    }

    pub fn control(&self) -> ControlPlane {
        ControlPlane::open(&self.data(), &self.data().join("trust.toml")).unwrap()
    }

    /// A worker holding the data directory's audit log (one at a time).
    pub fn worker(&self) -> Worker {
        let audit = AuditLog::open_keyed(&self.data(), runner_key()).unwrap();
        let runner = Runner::new(sandbox().clone(), audit, &self.data()).unwrap().with_seal_key(runner_key()).unwrap();
        Worker::new(self.control(), runner)
    }

    /// A request to rotate the site's logs.
    pub fn rotate(&self, id: &str, environment: &str, confidence: f64) -> JobRequest {
        let grant = ROTATE_GRANT.replace("{root}", &self.site.root.path().display().to_string());
        request(id, "rotate-logs", "1.0.0", environment, confidence, &grant, &[("dir", "logs"), ("max_bytes", "1000")])
    }

    pub fn sign(&self, request: &JobRequest) -> SignedJob {
        SignedJob::sign(request, &self.agent).unwrap()
    }

    pub fn submit(
        &self,
        control: &ControlPlane,
        request: &JobRequest,
    ) -> Result<salve::control::Submitted, ControlError> {
        control.submit(&self.sign(request), SystemTime::now())
    }

    pub fn approve(&self, control: &ControlPlane, id: &str, key: &PrivateKey) -> Result<JobState, ControlError> {
        let ballot = Ballot { vote: Vote::Approve, reason: "", lifetime: DEFAULT_LIFETIME, reviewed: None };
        control.vote(id, key, &ballot, SystemTime::now()).map(|job| job.state)
    }

    /// A plane whose site holds two logs to rotate and one to keep.
    pub fn with_logs(policy: &str, config: &str) -> Plane {
        let plane = Plane::new(policy, config);
        plane.write_logs(2, 5000);
        plane
    }

    /// Logs to rotate (above 1000 bytes) and one to keep.
    pub fn write_logs(&self, count: usize, bytes: usize) {
        for i in 0..count {
            self.site.write(&format!("logs/app{i}.log"), log_text(bytes, i as u64));
        }
        self.site.write("logs/tiny.log", "tiny\n");
    }

    /// Every audit record, from the file.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.data().join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn control_records(&self, job: &str, action: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["job"] == job && r["kind"] == "control" && r["action"] == action)
            .collect()
    }

    /// The audit log verifies, seals included.
    pub fn audit_verifies(&self) {
        let trust = salve::trust::TrustStore::load(&self.data().join("trust.toml")).unwrap();
        let log = self.data().join("audit.jsonl");
        verify_log(&log, Anchor::Required(self.data().join("audit.head")), Some(&trust)).unwrap();
    }
}

pub fn request(
    id: &str,
    playbook: &str,
    version: &str,
    environment: &str,
    confidence: f64,
    grant: &str,
    params: &[(&str, &str)],
) -> JobRequest {
    JobRequest {
        id: id.into(),
        playbook: PlaybookRef { name: Some(playbook.into()), version: Some(version.into()), digest: None },
        target: Target { environment: environment.into(), system: "web-3".into() },
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        grant: salve::grant::GrantSpec::parse(grant).unwrap(),
        evidence: Evidence {
            detector: "latency-slo".into(),
            alert_id: "8812".into(),
            severity: Severity::High,
            confidence,
            summary: "p99 latency above 2s on web-3 for 10 minutes".into(),
            telemetry_sha256: "ab".repeat(32),
        },
        nonce: format!("nonce-{id}-0123456789"),
        expires_at: humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string(),
    }
}

pub async fn step(worker: &Worker) -> salve::control::Step {
    worker.step().await.unwrap().expect("the worker had something to do")
}

/// A config whose prod change window is closed now (it opens in two hours).
pub fn closed_window_config() -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let minute = |offset: u64| {
        let m = ((now / 60) + offset) % (24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("[windows]\nprod = [{{ from = \"{}\", to = \"{}\" }}]\n", minute(120), minute(180))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prod_job_needs_two_approvals_outside_the_window_and_then_runs() {
    let plane = Plane::new(DEFAULT_POLICY, &closed_window_config());
    plane.write_logs(3, 5000);
    let control = plane.control();
    let submitted = plane.submit(&control, &plane.rotate("job-1", "prod", 0.92)).unwrap();
    assert_eq!(submitted.state, JobState::Submitted);
    assert_eq!(submitted.decision.verdict, Verdict::NeedsApprovals { approvals: 2, group: "sre".into() });
    assert_eq!(submitted.decision.policies, ["prod-execution-outside-window"]);

    // Nothing to approve before the plan exists.
    assert!(matches!(plane.approve(&control, "job-1", &plane.alice), Err(ControlError::NotPlanned { .. })));
    let worker = plane.worker();
    let planned = step(&worker).await;
    assert_eq!(planned.state, JobState::WaitingApproval, "{planned:?}");
    let job = control.job("job-1").unwrap();
    let plan = control.store.plan("job-1", job.plan_hash.as_deref().unwrap()).unwrap().unwrap();
    assert_eq!(plan.changes.as_array().unwrap().len(), 3, "{}", plan.changes);
    assert!(worker.step().await.unwrap().is_none(), "nothing runs before the approvals");

    assert_eq!(plane.approve(&control, "job-1", &plane.alice).unwrap(), JobState::WaitingApproval);
    assert_eq!(plane.approve(&control, "job-1", &plane.bob).unwrap(), JobState::Approved);
    let ran = step(&worker).await;
    assert_eq!(ran.state, JobState::Succeeded, "{ran:?}");
    assert!(plane.site.root.path().join("logs/app0.log.1.gz").exists());

    let history: Vec<JobState> = control.store.history("job-1").unwrap().iter().map(|t| t.to).collect();
    assert_eq!(
        history,
        [
            JobState::Submitted,
            JobState::WaitingApproval,
            JobState::Approved,
            JobState::Applying,
            JobState::Verifying,
            JobState::Succeeded
        ]
    );
    // Every step is in the audit log: the submission and its decision
    // (relayed), both votes, the decisions before plan and before apply,
    // the approvals that counted.
    worker.runner().audit().sync_blocking().unwrap();
    assert_eq!(plane.control_records("job-1", "submitted").len(), 1);
    let decisions = plane.control_records("job-1", "decision");
    let stages: Vec<&str> = decisions.iter().map(|d| d["detail"]["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["submission", "before-plan", "before-apply"]);
    assert_eq!(decisions[2]["detail"]["decision"]["policy_hash"], salve::host::digest(DEFAULT_POLICY.as_bytes()));
    assert_eq!(decisions[2]["detail"]["facts"]["change_window_open"], false);
    assert_eq!(plane.control_records("job-1", "approve").len(), 2);
    let counted = plane.control_records("job-1", "approvals");
    assert_eq!(counted[0]["detail"]["counted"].as_array().unwrap().len(), 2);
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_approval_bypass_is_refused() {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-a", "prod", 0.95)).unwrap();
    plane.submit(&control, &plane.rotate("job-b", "prod", 0.95)).unwrap();
    let worker = plane.worker();
    step(&worker).await;
    step(&worker).await;
    let job = control.job("job-a").unwrap();
    let plan = job.plan_hash.clone().unwrap();
    let now = SystemTime::now();
    let subject = salve::approval::Subject {
        job_id: "job-a",
        job_hash: &job.job_hash,
        plan_hash: &plan,
        submitter: &job.agent,
        environment: "prod",
        group: None,
    };
    let sign = |key: &PrivateKey| Approval::sign(&subject, Vote::Approve, "", DEFAULT_LIFETIME, key, now).unwrap();
    let refused = |result: Result<salve::store::JobRecord, ControlError>| match result {
        Err(ControlError::Approval(e)) => e,
        other => panic!("not refused as an approval: {other:?}"),
    };

    // The submitter's own key, whatever it signs.
    let mut by_agent = sign(&plane.alice);
    by_agent.key_id = plane.agent.id.clone();
    by_agent.signature = base64_sig(&plane.agent, &by_agent);
    assert!(matches!(refused(control.record_vote("job-a", &by_agent, now)), ApprovalError::Submitter { .. }));
    // A key without the approver role.
    let mut by_author = sign(&plane.alice);
    by_author.key_id = author_key().id.clone();
    by_author.signature = base64_sig(author_key(), &by_author);
    assert!(matches!(
        refused(control.record_vote("job-a", &by_author, now)),
        ApprovalError::Untrusted(TrustError::WrongRole { .. })
    ));
    // An approver outside the group the policy asks for.
    assert!(matches!(
        refused(control.record_vote("job-a", &sign(&plane.carol), now)),
        ApprovalError::NotInGroup { .. }
    ));
    // An approval of job-a replayed against job-b.
    assert!(matches!(refused(control.record_vote("job-b", &sign(&plane.alice), now)), ApprovalError::OtherJob { .. }));
    // An approval of an older plan.
    let old = salve::approval::Subject { plan_hash: "0000", ..subject };
    let stale = Approval::sign(&old, Vote::Approve, "", DEFAULT_LIFETIME, &plane.alice, now).unwrap();
    assert!(matches!(refused(control.record_vote("job-a", &stale, now)), ApprovalError::StalePlan { .. }));
    // An approver who reviewed another plan than the current one.
    let ballot = Ballot { vote: Vote::Approve, reason: "", lifetime: DEFAULT_LIFETIME, reviewed: Some("0000") };
    assert!(matches!(control.vote("job-a", &plane.alice, &ballot, now), Err(ControlError::PlanMoved { .. })));
    // An expired approval.
    let short = Approval::sign(&subject, Vote::Approve, "", Duration::from_secs(1), &plane.alice, now).unwrap();
    assert!(matches!(
        refused(control.record_vote("job-a", &short, now + Duration::from_secs(2))),
        ApprovalError::Expired { .. }
    ));
    // A changed approval (the vote flipped after signing).
    let mut forged = sign(&plane.alice);
    forged.vote = Vote::Reject;
    assert!(matches!(refused(control.record_vote("job-a", &forged, now)), ApprovalError::BadSignature { .. }));
    // The same key twice.
    control.record_vote("job-a", &sign(&plane.alice), now).unwrap();
    assert!(matches!(refused(control.record_vote("job-a", &sign(&plane.alice), now)), ApprovalError::Duplicate { .. }));
    // None of it counted: one approval of two.
    assert_eq!(control.job("job-a").unwrap().state, JobState::WaitingApproval);
    assert_eq!(control.store.approvals("job-a").unwrap().len(), 1);
    assert!(worker.step().await.unwrap().is_none());

    // A rejection ends the job; no vote is taken after it.
    let ballot =
        Ballot { vote: Vote::Reject, reason: "not during the sale", lifetime: DEFAULT_LIFETIME, reviewed: None };
    assert_eq!(control.vote("job-b", &plane.bob, &ballot, now).unwrap().state, JobState::Rejected);
    assert!(matches!(plane.approve(&control, "job-b", &plane.alice), Err(ControlError::WrongState { .. })));

    // A job the policy allows takes no approval.
    plane.submit(&control, &plane.rotate("job-dev", "dev", 0.5)).unwrap();
    step(&worker).await;
    let dev = control.job("job-dev").unwrap();
    assert!(matches!(dev.state, JobState::Approved | JobState::Succeeded));
}

fn base64_sig(key: &PrivateKey, approval: &Approval) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    base64::engine::general_purpose::STANDARD.encode(key.signing.sign(&approval.message()).to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_and_replays_are_refused_and_audited() {
    let plane = Plane::new(DEFAULT_POLICY, "");
    plane.write_logs(1, 5000);
    let control = plane.control();
    let now = SystemTime::now();
    let request = plane.rotate("job-1", "dev", 0.9);
    let signed = plane.sign(&request);
    control.submit(&signed, now).unwrap();

    // The same envelope again, and the same nonce under a new id.
    assert!(matches!(control.submit(&signed, now), Err(ControlError::Store(StoreError::Replay { .. }))));
    let again = JobRequest { id: "job-2".into(), ..request.clone() };
    assert!(matches!(plane.submit(&control, &again), Err(ControlError::Store(StoreError::Replay { .. }))));
    // A reused id with a fresh nonce.
    let reused = JobRequest { nonce: "another-nonce-0123456789".into(), ..request.clone() };
    assert!(matches!(plane.submit(&control, &reused), Err(ControlError::Store(StoreError::DuplicateJob { .. }))));
    // Changed after signing.
    let mut tampered =
        plane.sign(&JobRequest { id: "job-3".into(), nonce: "nonce-3-0123456789".into(), ..request.clone() });
    let other = plane.sign(&JobRequest {
        id: "job-3".into(),
        nonce: "nonce-3-0123456789".into(),
        target: Target { environment: "dev".into(), system: "db-1".into() },
        ..request.clone()
    });
    tampered.payload = other.payload;
    tampered.signature = plane.sign(&request).signature;
    assert!(matches!(control.submit(&tampered, now), Err(ControlError::Job(JobError::BadSignature { .. }))));
    // Signed by an approver key.
    let mut by_approver =
        plane.sign(&JobRequest { id: "job-4".into(), nonce: "nonce-4-0123456789".into(), ..request.clone() });
    by_approver.key_id = plane.alice.id.clone();
    assert!(matches!(
        control.submit(&by_approver, now),
        Err(ControlError::Job(JobError::Untrusted(TrustError::WrongRole { .. })))
    ));
    // Expired.
    let expired = JobRequest {
        id: "job-5".into(),
        nonce: "nonce-5-0123456789".into(),
        expires_at: humantime::format_rfc3339_seconds(now - Duration::from_secs(1)).to_string(),
        ..request.clone()
    };
    assert!(matches!(plane.submit(&control, &expired), Err(ControlError::Job(JobError::Expired { .. }))));
    // A playbook whose author is not trusted for the environment.
    let staging = plane.rotate("job-6", "staging", 0.9);
    assert!(matches!(plane.submit(&control, &staging), Err(ControlError::Artifact { .. })));
    // A playbook that is not installed, and a grant beyond its declaration.
    let unknown = JobRequest {
        id: "job-7".into(),
        nonce: "nonce-7-0123456789".into(),
        playbook: PlaybookRef { name: Some("rotate-logs".into()), version: Some("9.9.9".into()), digest: None },
        ..request.clone()
    };
    assert!(matches!(plane.submit(&control, &unknown), Err(ControlError::NotInstalled { .. })));
    let mut wide = JobRequest { id: "job-8".into(), nonce: "nonce-8-0123456789".into(), ..request.clone() };
    wide.grant = salve::grant::GrantSpec::parse("[[fs]]\nname = \"logs\"\npath = \"/etc\"\naccess = \"rw\"\n").unwrap();
    assert!(matches!(plane.submit(&control, &wide), Err(ControlError::Grant(_))));
    // Parameters outside the schema.
    let mut bad_param = JobRequest { id: "job-9".into(), nonce: "nonce-9-0123456789".into(), ..request.clone() };
    bad_param.parameters.insert("keep".into(), "1000".into());
    assert!(matches!(plane.submit(&control, &bad_param), Err(ControlError::Parameters(_))));
    // Unknown fields.
    let mut value = serde_json::to_value(&request).unwrap();
    value["priority"] = "urgent".into();
    assert!(serde_json::from_value::<JobRequest>(value).is_err());

    assert_eq!(
        control.store.list(&salve::store::Listing::default(), 100).unwrap().len(),
        1,
        "only the good job is stored"
    );
    // The refusals reach the audit log once a worker relays them, once
    // each however often it relays, and the store forgets them once the
    // log holds them durably.
    let worker = plane.worker();
    assert_eq!(worker.relay().await.unwrap(), 12, "ten refusals, the submission and its decision");
    assert_eq!(worker.relay().await.unwrap(), 0, "nothing is relayed twice");
    // Forgotten by a task of the worker's, once the log holds them (read
    // here without a sync of ours).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !control.store.outbox(0).unwrap().is_empty() {
        assert!(std::time::Instant::now() < until, "relayed steps are forgotten");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let written = plane.records().into_iter().filter(|r| r["action"] == "submission-refused").count();
    assert_eq!(written, 10, "forgotten only once the log holds them");
    assert_eq!(worker.relay_durably().await.unwrap(), 0);
    let refusals: Vec<Value> =
        plane.records().into_iter().filter(|r| r["kind"] == "control" && r["action"] == "submission-refused").collect();
    assert_eq!(refusals.len(), 10, "{refusals:#?}");
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_matrix_decides_through_the_whole_pipeline() {
    // environment × risk class × change window × severity × confidence →
    // outcome, with the default policy; risk class comes from the signed
    // manifest.
    let open = "";
    let closed = closed_window_config();
    let two = Verdict::NeedsApprovals { approvals: 2, group: "sre".into() };
    let one = Verdict::NeedsApprovals { approvals: 1, group: "sre".into() };
    let (low, high, critical) = (Severity::Low, Severity::High, Severity::Critical);
    let cases: Vec<(&str, &str, &str, Severity, f64, Verdict, JobState)> = vec![
        ("dev", "rotate-logs", &closed, low, 0.10, Verdict::Allow, JobState::Submitted),
        ("prod", "rotate-logs", &closed, high, 0.92, two.clone(), JobState::Submitted),
        ("prod", "rotate-logs", &closed, critical, 0.99, two.clone(), JobState::Submitted),
        ("prod", "rotate-logs", open, high, 0.92, one.clone(), JobState::Submitted),
        ("prod", "rotate-logs", open, low, 0.92, one.clone(), JobState::Submitted),
        ("prod", "rotate-logs", &closed, low, 0.92, Verdict::Deny, JobState::Denied),
        ("prod", "rotate-logs", open, high, 0.50, Verdict::Deny, JobState::Denied),
        ("prod", "noop", &closed, high, 0.92, Verdict::Allow, JobState::Submitted),
        ("prod", "noop", &closed, low, 0.92, Verdict::Deny, JobState::Denied),
        ("prod", "noop", open, low, 0.92, Verdict::Allow, JobState::Submitted),
        ("prod", "noop", open, high, 0.79, Verdict::Deny, JobState::Denied),
        ("staging", "noop", open, high, 0.99, Verdict::Deny, JobState::Denied),
    ];
    for (i, (environment, playbook, config, severity, confidence, verdict, state)) in cases.into_iter().enumerate() {
        let plane = Plane::new(DEFAULT_POLICY, config);
        plane.write_logs(1, 5000);
        let control = plane.control();
        let mut request = match playbook {
            "noop" => request(&format!("m{i}"), "noop", "0.1.0", environment, confidence, "", &[]),
            _ => plane.rotate(&format!("m{i}"), environment, confidence),
        };
        if environment == "staging" {
            // The author is not trusted for staging; stop at the policy by
            // trusting it there too.
            let mut trust: TrustFile =
                toml::from_str(&std::fs::read_to_string(plane.data().join("trust.toml")).unwrap()).unwrap();
            trust.keys[0].environments.push("staging".into());
            std::fs::write(plane.data().join("trust.toml"), toml::to_string(&trust).unwrap()).unwrap();
        }
        request.nonce = format!("matrix-nonce-{i}-0123456789");
        request.evidence.severity = severity;
        let control = if environment == "staging" { plane.control() } else { control };
        let submitted = plane.submit(&control, &request).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(
            (&submitted.decision.verdict, submitted.state),
            (&verdict, state),
            "case {i}: {environment} {playbook} {severity:?} confidence {confidence}: {:?}",
            submitted.decision
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_changes_after_approval_voids_the_approvals() {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "prod", 0.95)).unwrap();
    let worker = plane.worker();
    step(&worker).await;
    let first_plan = control.job("job-1").unwrap().plan_hash.unwrap();
    plane.approve(&control, "job-1", &plane.alice).unwrap();
    assert_eq!(plane.approve(&control, "job-1", &plane.bob).unwrap(), JobState::Approved);

    // A new log grows past the threshold after the approvals.
    plane.site.write("logs/late.log", log_text(5000, 99));
    let before = plane.site.snapshot();
    let moved = step(&worker).await;
    assert_eq!(moved.state, JobState::WaitingApproval, "{moved:?}");
    assert_eq!(plane.site.snapshot(), before, "nothing was applied");
    let job = control.job("job-1").unwrap();
    assert_ne!(job.plan_hash.as_deref(), Some(first_plan.as_str()));
    let votes = control.store.approvals("job-1").unwrap();
    assert!(votes.iter().all(|v| v.void.is_some()), "both approvals are void");
    assert!(worker.step().await.unwrap().is_none());

    // Approved again, for the plan as it now is, it runs.
    plane.approve(&control, "job-1", &plane.alice).unwrap();
    assert_eq!(plane.approve(&control, "job-1", &plane.bob).unwrap(), JobState::Approved);
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    assert!(plane.site.root.path().join("logs/late.log.1.gz").exists());
}

const WINDOW_POLICY: &str = r#"
@id("prod-in-window")
@approvals("1")
@group("sre")
permit(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.change_window_open };

@id("plans")
permit(principal, action == Action::"plan", resource);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closed_before_apply_denies_and_changes_nothing() {
    let plane = Plane::with_logs(WINDOW_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "prod", 0.95)).unwrap();
    let mut worker = plane.worker();
    step(&worker).await;
    assert_eq!(plane.approve(&control, "job-1", &plane.alice).unwrap(), JobState::Approved);

    std::fs::write(plane.data().join("salve.toml"), closed_window_config()).unwrap();
    worker.control.reload().unwrap();
    let before = plane.site.snapshot();
    let denied = step(&worker).await;
    assert_eq!(denied.state, JobState::Denied, "{denied:?}");
    assert!(denied.note.contains("default deny"), "{}", denied.note);
    assert_eq!(plane.site.snapshot(), before);
    worker.runner().audit().sync_blocking().unwrap();
    let decision = plane.control_records("job-1", "decision").pop().unwrap();
    assert_eq!(decision["detail"]["stage"], "before-apply");
    assert_eq!(decision["detail"]["decision"]["outcome"], "deny");
    assert_eq!(decision["detail"]["facts"]["change_window_open"], false);
    let records = plane.records();
    assert!(
        !records.iter().any(|r| r["job"] == "job-1" && r["kind"] == "job" && r["mode"] == "run"),
        "apply never ran"
    );
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_stop_jobs_the_host_way() {
    // Mutating calls: past the budget the job stops and is rolled back.
    let plane = Plane::new(DEFAULT_POLICY, "[budgets]\nmutations_per_job = 2\njobs_per_playbook_per_hour = 1\n");
    plane.write_logs(3, 5000);
    let before = plane.site.snapshot();
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    let worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    let ran = step(&worker).await;
    assert_eq!(ran.state, JobState::RolledBack, "{ran:?}");
    assert!(ran.note.contains("mutating host calls"), "{}", ran.note);
    assert_eq!(plane.site.snapshot(), before, "rolled back byte for byte");

    // Jobs per playbook per environment per hour: the second is denied.
    plane.submit(&control, &plane.rotate("job-2", "dev", 0.9)).unwrap();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    let denied = step(&worker).await;
    assert_eq!(denied.state, JobState::Denied, "{denied:?}");
    assert!(denied.note.contains("budget"), "{}", denied.note);
}

#[test]
fn the_published_job_schema_is_current() {
    let published = std::fs::read_to_string(crate::common::repo().join("schemas/job.schema.json")).unwrap();
    let current = serde_json::to_string_pretty(&salve::job::schema()).unwrap();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(crate::common::repo().join("schemas/job.schema.json"), format!("{current}\n")).unwrap();
        return;
    }
    assert_eq!(published.trim_end(), current, "schemas/job.schema.json is stale: run the tests with BLESS=1");
    let schema: Value = serde_json::from_str(&published).unwrap();
    assert_eq!(schema["additionalProperties"], false, "unknown fields are refused");
}

pub fn salve(plane: &Plane, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(args)
        .arg("--data-dir")
        .arg(plane.data())
        .output()
        .unwrap()
}

pub fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn agent_approvers_and_worker_from_the_command_line() {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    let keys = plane.site.root.path().join("keys");
    for key in [&plane.agent, &plane.alice, &plane.bob] {
        key.write(&keys).unwrap();
    }
    let key = |name: &str| keys.join(format!("{name}.key")).display().to_string();
    let installed = salve(
        &plane,
        &["install", "--environment", "prod", &plane.site.artifact_file("rotate-logs").display().to_string()],
    );
    assert!(installed.status.success(), "{}", text(&installed));
    let job = plane.site.write("job.json", serde_json::to_vec_pretty(&plane.rotate("job-cli", "prod", 0.92)).unwrap());
    let job = job.display().to_string();

    let submitted = salve(&plane, &["submit", &job, "--key", &key("agent")]);
    assert!(submitted.status.success(), "{}", text(&submitted));
    assert!(text(&submitted).contains("needs 2 approval(s) from group sre"), "{}", text(&submitted));
    let replayed = salve(&plane, &["submit", &job, "--key", &key("agent")]);
    assert_eq!(replayed.status.code(), Some(2), "{}", text(&replayed));
    assert!(text(&replayed).contains("already used"), "{}", text(&replayed));

    let worked = salve(&plane, &["worker", "--until-idle"]);
    assert!(worked.status.success(), "{}", text(&worked));
    assert!(text(&worked).contains("job job-cli: waiting-approval"), "{}", text(&worked));
    let shown = salve(&plane, &["jobs", "show", "job-cli"]);
    let shown_text = text(&shown);
    for part in ["evidence:", "latency-slo", "prod-execution-outside-window", "plan:", "rotate", "history:", "grant:"] {
        assert!(shown_text.contains(part), "{part} missing from:\n{shown_text}");
    }
    let plan = shown_text.lines().find_map(|l| l.trim().strip_prefix("hash: ")).unwrap().to_string();

    let unreviewed = salve(&plane, &["approve", "job-cli", "--key", &key("alice")]);
    assert_eq!(unreviewed.status.code(), Some(2), "an approval names the plan it approves: {}", text(&unreviewed));
    assert!(text(&unreviewed).contains("--plan"), "{}", text(&unreviewed));
    assert!(salve(&plane, &["approve", "job-cli", "--key", &key("alice"), "--plan", &plan]).status.success());
    let twice = salve(&plane, &["approve", "job-cli", "--key", &key("alice"), "--plan", &plan]);
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice));
    assert!(text(&twice).contains("already voted"), "{}", text(&twice));
    let by_agent = salve(&plane, &["approve", "job-cli", "--key", &key("agent"), "--plan", &plan]);
    assert_eq!(by_agent.status.code(), Some(2), "{}", text(&by_agent));
    let no_reason = salve(&plane, &["reject", "job-cli", "--key", &key("bob")]);
    assert_eq!(no_reason.status.code(), Some(2), "{}", text(&no_reason));
    let approved = salve(&plane, &["approve", "job-cli", "--key", &key("bob"), "--plan", &plan]);
    assert!(text(&approved).contains("the job is approved"), "{}", text(&approved));

    let worked = salve(&plane, &["worker", "--until-idle"]);
    assert!(text(&worked).contains("job job-cli: succeeded"), "{}", text(&worked));
    let listed = salve(&plane, &["jobs", "list", "--state", "succeeded"]);
    assert!(text(&listed).contains("job-cli"), "{}", text(&listed));
    let verified = salve(&plane, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_keeps_an_outcome_the_audit_log_already_holds() {
    // A runner that stopped after recording a job's outcome, before the
    // store heard of it: the next start takes the outcome from the audit
    // log instead of rolling back a job that succeeded.
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    {
        let worker = plane.worker();
        step(&worker).await;
        assert_eq!(step(&worker).await.state, JobState::Succeeded);
    }
    let after = plane.site.snapshot();
    // The store refuses to move a job out of a final state; the crash is
    // simulated behind its back.
    let changes = salve::store::Changes::default();
    let moved = control.store.transition("job-1", &[JobState::Succeeded], JobState::Verifying, "", &changes, &[]);
    assert!(matches!(moved, Err(salve::store::StoreError::Conflict { .. })), "{moved:?}");
    rusqlite::Connection::open(plane.data().join("salve.db"))
        .unwrap()
        .execute("UPDATE jobs SET state = 'verifying' WHERE id = 'job-1'", [])
        .unwrap();
    let worker = plane.worker();
    let recovered = worker.recover().await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].state, JobState::Succeeded, "{recovered:?}");
    assert_eq!(plane.site.snapshot(), after, "nothing was rolled back");
    worker.runner().audit().sync_blocking().unwrap();
    assert_eq!(plane.control_records("job-1", "recovered").len(), 1);
}
