//! What changes between submission and apply: votes that race, a change
//! window that closes, approvals that expire, a rejection that comes
//! first, a job store changed behind the runner's back, scopes narrowed,
//! versions rolled back. Each is checked at the moment of action.

use crate::control::{Plane, closed_window_config, entry, salve, step, text};
use salve::approval::{Approval, DEFAULT_LIFETIME, Subject, Vote};
use salve::control::{Ballot, ControlError, Step, Worker};
use salve::keys::{PrivateKey, Role};
use salve::policy::{DEFAULT_POLICY, PolicyError, Verdict};
use salve::store::JobState;
use salve::trust::TrustFile;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Takes the worker's next step and checks that it left the job in
/// `state` for a reason that mentions each of `why`, with nothing applied.
async fn next_step_applies_nothing(plane: &Plane, worker: &Worker, state: JobState, why: &[&str]) -> Step {
    let before = plane.site.snapshot();
    let step = step(worker).await;
    assert_eq!(step.state, state, "{step:?}");
    for part in why {
        assert!(step.note.contains(part), "{part:?} not in {}", step.note);
    }
    assert_eq!(plane.site.snapshot(), before, "nothing was applied");
    step
}

fn sql(plane: &Plane, statement: &str, params: &[&str]) {
    let conn = rusqlite::Connection::open(plane.data().join("salve.db")).unwrap();
    conn.execute(statement, rusqlite::params_from_iter(params)).unwrap();
}

#[test]
fn approvals_racing_from_separate_processes_count_once_each() {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    // Six more approvers in group sre, each with a control plane (a store
    // connection) of its own, as six `salve approve` processes would.
    let approvers: Vec<PrivateKey> =
        (0..6u8).map(|i| PrivateKey::from_seed(&format!("sre-{i}"), Role::Approver, [40 + i; 32])).collect();
    let path = plane.data().join("trust.toml");
    let mut trust: TrustFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    trust.keys.extend(approvers.iter().map(|k| entry(k, &["prod"], &["sre"])));
    std::fs::write(&path, toml::to_string(&trust).unwrap()).unwrap();

    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-race", "prod", 0.95)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { step(&plane.worker()).await });
    let plan = control.job("job-race").unwrap().plan_hash.unwrap();

    let barrier = std::sync::Barrier::new(approvers.len());
    let results: Vec<Result<JobState, ControlError>> = std::thread::scope(|s| {
        let handles: Vec<_> = approvers
            .iter()
            .map(|key| {
                let (plane, barrier, plan) = (&plane, &barrier, &plan);
                s.spawn(move || {
                    let control = plane.control();
                    let ballot = Ballot {
                        vote: Vote::Approve,
                        reason: "",
                        lifetime: DEFAULT_LIFETIME,
                        reviewed: Some(plan.as_str()),
                    };
                    barrier.wait();
                    control.vote("job-race", key, &ballot, SystemTime::now()).map(|job| job.state)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted: Vec<&JobState> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 2, "exactly the two approvals needed are taken: {results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, ControlError::WrongState { state: JobState::Approved, .. }), "{refused}");
    }
    assert_eq!(control.store.approvals("job-race").unwrap().len(), 2);
    let history: Vec<JobState> = control.store.history("job-race").unwrap().iter().map(|t| t.to).collect();
    assert_eq!(history.iter().filter(|s| **s == JobState::Approved).count(), 1, "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closes_after_approval_raises_the_approvals_needed() {
    // Inside the window a prod change needs one approval; outside, two.
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    let submitted = plane.submit(&control, &plane.rotate("job-1", "prod", 0.95)).unwrap();
    assert_eq!(submitted.decision.verdict, Verdict::NeedsApprovals { approvals: 1, group: "sre".into() });
    let mut worker = plane.worker();
    step(&worker).await;
    assert_eq!(plane.approve(&control, "job-1", &plane.alice).unwrap(), JobState::Approved);

    std::fs::write(plane.data().join("salve.toml"), closed_window_config()).unwrap();
    worker.control.reload().unwrap();
    next_step_applies_nothing(&plane, &worker, JobState::WaitingApproval, &["needs 2 approval(s)", "1 count now"])
        .await;

    // Alice's approval still counts; Bob's is the second.
    assert_eq!(plane.approve(&control, "job-1", &plane.bob).unwrap(), JobState::Approved);
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_expired_before_apply_does_not_count_and_may_be_given_again() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "prod", 0.95)).unwrap();
    let worker = plane.worker();
    step(&worker).await;
    let job = control.job("job-1").unwrap();
    // Alice approved an hour ago, for ten minutes.
    let then = SystemTime::now() - Duration::from_secs(3600);
    let subject = Subject {
        job_id: "job-1",
        job_hash: &job.job_hash,
        plan_hash: job.plan_hash.as_deref().unwrap(),
        submitter: &job.agent,
        environment: "prod",
        group: None,
    };
    let old = Approval::sign(&subject, Vote::Approve, "", Duration::from_secs(600), &plane.alice, then).unwrap();
    assert_eq!(control.record_vote("job-1", &old, then).unwrap().state, JobState::Approved);

    next_step_applies_nothing(&plane, &worker, JobState::WaitingApproval, &["0 count now"]).await;

    // A job past its own expiry takes no vote.
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let late = Approval::sign(&subject, Vote::Approve, "", DEFAULT_LIFETIME, &plane.bob, later).unwrap();
    let refused = control.record_vote("job-1", &late, later).unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
    // Her expired vote does not stop her from approving again.
    assert_eq!(plane.approve(&control, "job-1", &plane.alice).unwrap(), JobState::Approved);
    let votes = control.store.approvals("job-1").unwrap();
    assert_eq!(votes.len(), 2);
    assert!(votes[0].void.as_deref().unwrap().contains("superseded"), "{:?}", votes[0].void);
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_comes_first_stands() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    let worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    // The worker read the job as approved; a rejection lands before it acts.
    let stale = control.job("job-1").unwrap();
    let plan = stale.plan_hash.clone();
    let ballot = Ballot { vote: Vote::Reject, reason: "freeze", lifetime: DEFAULT_LIFETIME, reviewed: plan.as_deref() };
    assert_eq!(control.vote("job-1", &plane.bob, &ballot, SystemTime::now()).unwrap().state, JobState::Rejected);
    let before = plane.site.snapshot();
    let step = worker.execute(&stale).await.unwrap();
    assert_eq!(step.state, JobState::Rejected, "{step:?}");
    assert_eq!(plane.site.snapshot(), before, "nothing was applied");
    assert_eq!(control.job("job-1").unwrap().state, JobState::Rejected);
    let last = control.store.history("job-1").unwrap().pop().unwrap();
    assert_eq!(last.to, JobState::Rejected);

    // A job may be rejected before it has a plan.
    plane.submit(&control, &plane.rotate("job-2", "dev", 0.9)).unwrap();
    let ballot = Ballot { vote: Vote::Reject, reason: "duplicate", lifetime: DEFAULT_LIFETIME, reviewed: None };
    assert_eq!(control.vote("job-2", &plane.bob, &ballot, SystemTime::now()).unwrap().state, JobState::Rejected);
    worker.runner().audit().sync_blocking().unwrap();
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_may_withdraw_by_rejecting() {
    let plane = Plane::with_logs(DEFAULT_POLICY, &closed_window_config());
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "prod", 0.95)).unwrap();
    step(&plane.worker()).await;
    assert_eq!(plane.approve(&control, "job-1", &plane.alice).unwrap(), JobState::WaitingApproval);
    let ballot = Ballot { vote: Vote::Reject, reason: "changed my mind", lifetime: DEFAULT_LIFETIME, reviewed: None };
    assert_eq!(control.vote("job-1", &plane.alice, &ballot, SystemTime::now()).unwrap().state, JobState::Rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_changed_in_the_store_runs_as_signed_or_not_at_all() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    plane.site.write("other/app.log", crate::rotate_logs::log_text(5000, 7));
    let control = plane.control();
    let worker = plane.worker();
    let ids = ["job-env", "job-envelope", "job-expiry", "job-grant"];
    for id in ids {
        plane.submit(&control, &plane.rotate(id, "dev", 0.9)).unwrap();
    }
    for _ in ids {
        assert_eq!(step(&worker).await.state, JobState::Approved);
    }
    // A column the runner checks against the envelope. Approvers are
    // warned too: `jobs show` says so and exits 2.
    sql(&plane, "UPDATE jobs SET environment = 'prod' WHERE id = ?1", &["job-env"]);
    let shown = salve(&plane, &["jobs", "show", "job-env"]);
    assert_eq!(shown.status.code(), Some(2), "{}", text(&shown));
    assert!(text(&shown).contains("WARNING: the job does not verify"), "{}", text(&shown));
    let refused =
        next_step_applies_nothing(&plane, &worker, JobState::Denied, &["does not match the job its agent signed"])
            .await;
    assert_eq!(refused.job, "job-env");
    // The envelope itself, swapped for another job's.
    let other = plane.sign(&plane.rotate("job-other", "dev", 0.9));
    sql(
        &plane,
        "UPDATE jobs SET envelope = ?2 WHERE id = ?1",
        &["job-envelope", &serde_json::to_string(&other).unwrap()],
    );
    let refused = next_step_applies_nothing(&plane, &worker, JobState::Denied, &["stored job was changed"]).await;
    assert_eq!(refused.job, "job-envelope");
    // The expiry the worker goes by, pushed out a day.
    sql(&plane, "UPDATE jobs SET expires_at = expires_at + 86400 WHERE id = ?1", &["job-expiry"]);
    let refused = next_step_applies_nothing(&plane, &worker, JobState::Denied, &["expiry"]).await;
    assert_eq!(refused.job, "job-expiry");

    // The request as stored beside the envelope, pointed at another
    // directory: what runs is what the agent signed.
    let conn = rusqlite::Connection::open(plane.data().join("salve.db")).unwrap();
    let stored: String = conn.query_row("SELECT request FROM jobs WHERE id = 'job-grant'", [], |r| r.get(0)).unwrap();
    let mut request: Value = serde_json::from_str(&stored).unwrap();
    let other_dir = plane.site.root.path().join("other").display().to_string();
    request["grant"]["fs"][0]["path"] = other_dir.clone().into();
    sql(&plane, "UPDATE jobs SET request = ?2 WHERE id = ?1", &["job-grant", &request.to_string()]);
    let shown = salve(&plane, &["jobs", "show", "job-grant"]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(text(&shown).contains(&format!("{}/logs", plane.site.root.path().display())), "{}", text(&shown));
    assert!(!text(&shown).contains(&other_dir), "approvers see the signed grant: {}", text(&shown));
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    assert!(plane.site.root.path().join("logs/app0.log.1.gz").exists(), "the signed grant ran");
    assert!(!plane.site.root.path().join("other/app.log.1.gz").exists(), "the stored one did not");
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_bind_an_environment_to_what_its_jobs_may_reach() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "[scopes.dev]\nfs = [\"/srv/**\"]\n");
    let control = plane.control();
    // The grant reaches outside dev's scope.
    let refused = plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap_err();
    assert!(matches!(&refused, ControlError::Policy(PolicyError::Scope(_))), "{refused}");
    assert!(refused.to_string().contains("outside environment \"dev\"'s scope"), "{refused}");
    // An environment without scopes, when others have them, takes no job.
    let refused = plane.submit(&control, &plane.rotate("job-2", "prod", 0.9)).unwrap_err();
    assert!(refused.to_string().contains("has no [scopes.prod]"), "{refused}");

    // Inside the scope it is taken; narrowed before apply, it is not run.
    let site = plane.site.root.path().display().to_string();
    std::fs::write(plane.data().join("salve.toml"), format!("[scopes.dev]\nfs = [\"{site}/**\"]\n")).unwrap();
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-3", "dev", 0.9)).unwrap();
    let mut worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    std::fs::write(plane.data().join("salve.toml"), "[scopes.dev]\nfs = [\"/srv/**\"]\n").unwrap();
    worker.control.reload().unwrap();
    next_step_applies_nothing(&plane, &worker, JobState::Failed, &["outside environment"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_lower_than_one_that_ran_is_refused() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    let worker = plane.worker();
    step(&worker).await;
    assert_eq!(step(&worker).await.state, JobState::Succeeded);
    let versions: Value = serde_json::from_slice(&std::fs::read(plane.data().join("versions.json")).unwrap()).unwrap();
    assert_eq!(versions["rotate-logs"], "1.0.0", "the run raised the floor");

    // A newer version has run here since.
    std::fs::write(plane.data().join("versions.json"), r#"{"rotate-logs": "1.1.0"}"#).unwrap();
    let refused = plane.submit(&control, &plane.rotate("job-2", "dev", 0.9)).unwrap_err();
    assert!(matches!(refused, ControlError::Version(_)), "{refused}");
    assert!(refused.to_string().contains("1.1.0"), "{refused}");

    // Raised between submission and apply: the job is not run.
    std::fs::write(plane.data().join("versions.json"), r#"{"rotate-logs": "1.0.0"}"#).unwrap();
    plane.submit(&control, &plane.rotate("job-3", "dev", 0.9)).unwrap();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    std::fs::write(plane.data().join("versions.json"), r#"{"rotate-logs": "1.1.0"}"#).unwrap();
    next_step_applies_nothing(&plane, &worker, JobState::Failed, &["older than 1.1.0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_changes_under_a_policy_that_needs_no_approval_is_recorded_and_run() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    let worker = plane.worker();
    assert_eq!(step(&worker).await.state, JobState::Approved);
    let first = control.job("job-1").unwrap().plan_hash.unwrap();
    plane.site.write("logs/late.log", crate::rotate_logs::log_text(5000, 99));
    assert_eq!(step(&worker).await.state, JobState::Succeeded, "in the same step");
    assert!(plane.site.root.path().join("logs/late.log.1.gz").exists());
    let job = control.job("job-1").unwrap();
    assert_ne!(job.plan_hash.as_deref(), Some(first.as_str()), "the new plan is the one recorded");
    let history = control.store.history("job-1").unwrap();
    assert!(history.iter().any(|t| t.reason.contains("the plan changed before apply")), "{history:?}");
    worker.runner().audit().sync_blocking().unwrap();
    plane.audit_verifies();
}
