//! Several jobs at once on one runner write one valid chain.

use crate::common::{Site, job, playbook, trust};
use salve::audit::verify::{Anchor, verify_log};
use serde_json::Value;

fn count(records: &[&Value], kind: &str) -> usize {
    records.iter().filter(|r| r["kind"] == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_jobs_at_once_write_one_valid_chain() {
    let site = Site::new();
    let mut handles = Vec::new();
    for n in 0..8 {
        site.write(&format!("job{n}/a.txt"), format!("alpha {n}\n"));
        site.write(&format!("job{n}/b.txt"), format!("bravo {n}\n"));
        // Some spin until their deadline (so the jobs surely overlap), some
        // trap and roll back, some succeed: every path writes records.
        let (name, toml) = match n % 3 {
            0 => ("infinite-loop", "[limits]\napply_timeout = \"200ms\"\n".to_string()),
            1 => {
                ("partial-then-trap", format!("[[fs]]\nname = \"logs\"\npath = \"{{root}}/job{n}\"\naccess = \"rw\"\n"))
            }
            _ => ("noop", String::new()),
        };
        let grant = site.grant_for(&playbook(name), &toml);
        let runner = site.runner().clone();
        let playbook = playbook(name);
        handles.push(tokio::spawn(async move { runner.run(&playbook, &grant, &job(&[])).await.unwrap() }));
    }
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.unwrap());
    }

    site.runner().audit().sync_blocking().unwrap();
    let anchor = Anchor::Required(site.data().join("audit.head"));
    let report = verify_log(&site.data().join("audit.jsonl"), anchor, Some(trust())).unwrap();
    let records = site.records();
    assert_eq!(report.records as usize, records.len());
    assert_eq!(report.seals, 8, "every job is sealed, and every seal verifies");
    let mut spans = Vec::new();
    for (n, job_report) in reports.iter().enumerate() {
        let expected = if n % 3 == 2 { "succeeded" } else { "rolled-back" };
        assert_eq!(job_report.outcome.name(), expected);
        let mine: Vec<&Value> = records.iter().filter(|r| r["job"] == job_report.job_id.as_str()).collect();
        assert_eq!(count(&mine, "outcome"), 1);
        assert_eq!(count(&mine, "seal"), 1);
        spans.push((mine[0]["seq"].as_u64().unwrap(), mine.last().unwrap()["seq"].as_u64().unwrap()));
        if n % 3 == 1 {
            let a = std::fs::read_to_string(site.root.path().join(format!("job{n}/a.txt"))).unwrap();
            assert_eq!(a, format!("alpha {n}\n"), "rolled back");
        }
    }
    // The jobs ran at once: their records interleave on the one chain.
    let overlapping = spans.iter().any(|a| spans.iter().any(|b| b.0 > a.0 && b.0 < a.1));
    assert!(overlapping, "no two jobs overlapped: {spans:?}");
}
