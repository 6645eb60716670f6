//! Several jobs at once on one runner write one valid chain.

use crate::common::{Site, job, of_kind, playbook};
use salve::audit::verify::{Anchor, verify_log};
use salve::run::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_jobs_at_once_write_one_valid_chain() {
    let site = Site::new();
    let mut handles = Vec::new();
    for n in 0..8 {
        site.write(&format!("job{n}/a.txt"), format!("alpha {n}\n"));
        site.write(&format!("job{n}/b.txt"), format!("bravo {n}\n"));
        let grant = site.grant(&format!(
            "[[fs]]\nname = \"logs\"\npath = \"{{root}}/job{n}\"\naccess = \"rw\"\n"
        ));
        // Half succeed, half trap and roll back: both paths write records.
        let name = if n % 2 == 0 { "noop" } else { "partial-then-trap" };
        let runner = site.runner().clone();
        let playbook = playbook(name);
        handles.push(tokio::spawn(async move {
            runner.run(&playbook, &grant, &job(&[])).await.unwrap()
        }));
    }
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await.unwrap());
    }

    site.runner().audit().sync_blocking().unwrap();
    let report = verify_log(&site.data().join("audit.jsonl"), Anchor::Beside).unwrap();
    let records = site.records();
    assert_eq!(report.records as usize, records.len());
    for (n, job_report) in reports.iter().enumerate() {
        let expected = if n % 2 == 0 { "succeeded" } else { "rolled-back" };
        assert_eq!(job_report.outcome.name(), expected);
        let outcomes = of_kind(&records, "outcome");
        assert_eq!(
            outcomes
                .iter()
                .filter(|r| r["job"] == job_report.job_id.as_str())
                .count(),
            1
        );
        if let Outcome::RolledBack { .. } = job_report.outcome {
            assert_eq!(
                std::fs::read_to_string(site.root.path().join(format!("job{n}/a.txt"))).unwrap(),
                format!("alpha {n}\n")
            );
        }
    }
}
