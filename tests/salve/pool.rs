//! Several jobs at once (`salve::control::Pool`): jobs on different
//! systems run together, a system's jobs one at a time and in order, the
//! hourly budget holds however many check it at once, and a stop cuts
//! short and rolls back what does not finish in time.

use crate::control::{Plane, request};
use salve::control::{Pool, Step};
use salve::policy::DEFAULT_POLICY;
use salve::store::JobState;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Submits `id` of `playbook` against `system`, in dev (no approval).
fn submit(plane: &Plane, id: &str, playbook: &str, system: &str, grant: &str) {
    let mut job = request(id, playbook, "0.1.0", "dev", 0.9, grant, &[]);
    job.target.system = system.into();
    plane.submit(&plane.control(), &job).unwrap();
    // Distinct submission times, so that the order they came is plain.
    std::thread::sleep(Duration::from_millis(2));
}

/// Runs the pool until nothing is left to take; every step it took.
async fn run_all(pool: &mut Pool) -> Vec<Step> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut steps = Vec::new();
    loop {
        let (ended, started) = pool.fill().await.unwrap();
        steps.extend(ended);
        if pool.running() == 0 && started == 0 {
            return steps;
        }
        if let Some(step) = pool.next().await {
            steps.push(step.unwrap().0);
        }
        assert!(Instant::now() < deadline, "the pool never ran dry: {steps:?}");
    }
}

/// The audit log's runs of `job` (a plan; a plan again and a run): from its `job` record
/// to its `outcome`, as spans of record numbers.
fn runs(records: &[Value], job: &str) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut start = None;
    for record in records.iter().filter(|r| r["job"] == job) {
        let seq = record["seq"].as_u64().unwrap();
        match record["kind"].as_str() {
            Some("job") => start = Some(seq),
            Some("outcome") => runs.push((start.take().expect("an outcome without its job record"), seq)),
            _ => {}
        }
    }
    runs
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_different_systems_run_together_and_one_systems_jobs_one_at_a_time_in_order() {
    let plane = Plane::new(DEFAULT_POLICY, "");
    plane.install("infinite-loop");
    // Each apply spins until its deadline, then the job is rolled back.
    let grant = "[limits]\napply_timeout = \"300ms\"\n";
    let jobs = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("d1", "d")];
    for (id, system) in jobs {
        submit(&plane, id, "infinite-loop", system, grant);
    }
    let mut pool = Pool::new(plane.worker(), 4);
    let (_, started) = pool.fill().await.unwrap();
    assert_eq!(started, 4, "one job per system (a1, b1, c1, d1), though four fit");
    let steps = run_all(&mut pool).await;

    let control = plane.control();
    for (id, _) in jobs {
        assert_eq!(control.job(id).unwrap().state, JobState::RolledBack, "{id}: {steps:?}");
    }
    plane.audit_verifies();
    let records = plane.records();
    let of = |id: &str| runs(&records, id);
    // System a: no two runs at once, and its jobs applied in the order they came.
    let a: Vec<(u64, u64)> = ["a1", "a2", "a3"].iter().flat_map(|id| of(id)).collect();
    assert_eq!(a.len(), 9, "a plan, and a plan again and a run each: {a:?}");
    for (i, x) in a.iter().enumerate() {
        for y in &a[i + 1..] {
            assert!(!overlap(*x, *y), "two jobs of system a ran at once: {a:?}");
        }
    }
    let applied = |id: &str| of(id)[2].0;
    assert!(applied("a1") < applied("a2") && applied("a2") < applied("a3"), "{a:?}");
    // Other systems: their applies ran beside one another.
    let others = [of("b1")[2], of("c1")[2], of("d1")[2]];
    assert!(
        others.iter().enumerate().any(|(i, x)| others[i + 1..].iter().any(|y| overlap(*x, *y))),
        "no two jobs of different systems overlapped: {others:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_budget_holds_however_many_jobs_check_it_at_once() {
    let plane = Plane::new(DEFAULT_POLICY, "[budgets]\njobs_per_playbook_per_hour = 2\n");
    for n in 0..6 {
        submit(&plane, &format!("job-{n}"), "noop", &format!("web-{n}"), "");
    }
    let mut pool = Pool::new(plane.worker(), 6);
    let steps = run_all(&mut pool).await;
    let control = plane.control();
    let states: Vec<JobState> = (0..6).map(|n| control.job(&format!("job-{n}")).unwrap().state).collect();
    let succeeded = states.iter().filter(|s| **s == JobState::Succeeded).count();
    let denied: Vec<&Step> = steps.iter().filter(|s| s.state == JobState::Denied).collect();
    assert_eq!(succeeded, 2, "{states:?}");
    assert_eq!(denied.len(), 4, "{steps:?}");
    assert!(denied.iter().all(|s| s.note.contains("budget")), "{denied:?}");
    plane.audit_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cuts_short_what_does_not_finish_in_time_and_rolls_it_back() {
    let plane = Plane::new(DEFAULT_POLICY, "");
    plane.install("change-then-spin");
    let target = plane.site.write("granted/a.txt", "alpha\n");
    let root = plane.site.root.path().display().to_string();
    let grant =
        format!("[[fs]]\nname = \"logs\"\npath = \"{root}/granted\"\naccess = \"rw\"\n[limits]\ntimeout = \"30s\"\n");
    submit(&plane, "job-spin", "change-then-spin", "web-1", &grant);
    submit(&plane, "job-quick", "noop", "web-2", "");
    let mut pool = Pool::new(plane.worker(), 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut steps = Vec::new();
    while std::fs::read_to_string(&target).unwrap() != "half-done\n" {
        assert!(Instant::now() < deadline, "apply never changed the target");
        steps.extend(pool.fill().await.unwrap().0);
        if let Ok(Some(step)) = tokio::time::timeout(Duration::from_millis(20), pool.next()).await {
            steps.push(step.unwrap().0);
        }
    }
    // Half done, with 30 s to go: the stop gives it 200 ms.
    let (stopped, failed) = pool.stop(Duration::from_millis(200)).await;
    assert!(failed.is_none(), "{failed:?}");
    let spin = stopped.iter().find(|s| s.job == "job-spin").expect("the stop ends the spinning job");
    assert_eq!(spin.state, JobState::RolledBack, "{stopped:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "alpha\n", "rolled back");
    assert_eq!(plane.control().job("job-spin").unwrap().state, JobState::RolledBack);
    let stop = plane.records().into_iter().rev().find(|r| r["job"] == "job-spin" && r["kind"] == "outcome").unwrap();
    assert!(stop.to_string().contains("stop"), "the outcome says why: {stop}");
    plane.audit_verifies();
}
