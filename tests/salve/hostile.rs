//! Each hostile playbook: its outcome, the audit records that prove it, and
//! no side effect outside its grant.

use crate::common::{Site, load, of_kind, phase_ends, phases, playbook, sandbox};
use salve::artifact::ArtifactError;
use salve::run::{CauseKind, Outcome};
use salve::sandbox::LoadError;

/// `logs` read-write on `granted/`, `ro` read-only on `readonly/`.
const GRANT: &str = r#"
[[fs]]
name = "logs"
path = "{root}/granted"
access = "rw"

[[fs]]
name = "ro"
path = "{root}/readonly"
access = "ro"

[limits]
timeout = "10s"
"#;

/// `logs` only, for playbooks that declare just that mount.
const LOGS: &str = r#"
[[fs]]
name = "logs"
path = "{root}/granted"
access = "rw"

[limits]
timeout = "10s"
"#;

/// No directory, for playbooks that declare no fs.
const NO_FS: &str = "[limits]\ntimeout = \"10s\"\n";

fn site() -> Site {
    let site = Site::new();
    site.write("granted/a.txt", "alpha\n");
    site.write("granted/b.txt", "bravo\n");
    site.write("granted/inside.txt", "inside\n");
    site.write("readonly/existing.txt", "read me only\n");
    site.write("outside.txt", "outside the grant\n");
    site.write("outside/secret.txt", "top secret\n");
    site
}

fn cause_kind(outcome: &Outcome) -> CauseKind {
    outcome.cause().expect("a cause").kind.clone()
}

#[tokio::test]
pub(crate) async fn escape_fs() {
    let site = site();
    let root = site.root.path();
    std::os::unix::fs::symlink(root.join("outside"), root.join("granted/escape-dir")).unwrap();
    std::os::unix::fs::symlink(root.join("outside.txt"), root.join("granted/escape-file")).unwrap();
    site.write("outside/linked.txt", "linked from outside\n");
    std::fs::hard_link(root.join("outside/linked.txt"), root.join("granted/hardlink.txt")).unwrap();
    let before = site.snapshot();

    let report = site.run("escape-fs", GRANT, &[]).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "every attempt must be denied");
    assert_eq!(site.snapshot(), before, "nothing changed, inside or outside the grant");
    let records = site.job_records(&report.job_id);
    let calls = of_kind(&records, "call");
    assert_eq!(calls.len(), 25, "one audit record per attempt");
    for call in &calls {
        assert!(call["outcome"]["denied"].is_string(), "not denied: {call}");
    }
    // Mutating calls that pass the lexical checks record their intent, then
    // are refused on disk (symlink or hard link): each intent's call is denied.
    for intent in of_kind(&records, "intent") {
        let call = calls.iter().find(|c| c["intent"] == intent["seq"]).expect("a call for every intent");
        assert!(call["outcome"]["denied"].is_string(), "{call}");
    }
    let reasons: Vec<&str> = calls.iter().map(|c| c["outcome"]["denied"].as_str().unwrap()).collect();
    for expected in ["absolute paths", "`..`", "leaves the granted directory", "hard links", "read-only"] {
        assert!(reasons.iter().any(|r| r.contains(expected)), "no refusal mentions {expected:?}: {reasons:#?}");
    }
}

#[tokio::test]
async fn escape_fs_without_an_fs_grant_meets_the_denying_stub() {
    let site = site();
    let before = site.snapshot();

    let report = site.run("escape-fs", NO_FS, &[]).await;

    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(site.snapshot(), before);
    let records = site.job_records(&report.job_id);
    let calls = of_kind(&records, "call");
    assert_eq!(calls.len(), 25);
    for call in calls {
        assert_eq!(call["outcome"]["denied"], "fs is not granted to this task", "{call}");
        assert_eq!(call["interface"], "fs");
    }
}

#[tokio::test]
pub(crate) async fn infinite_loop() {
    let site = site();
    let before = site.snapshot();
    let grant = format!("{NO_FS}apply_timeout = \"300ms\"\n");

    let report = site.run("infinite-loop", &grant, &[]).await;

    assert_eq!(cause_kind(&report.outcome), CauseKind::Timeout);
    assert_eq!(report.outcome.cause().unwrap().message, "ran past its deadline of 300ms", "the epoch deadline fired");
    assert_eq!(site.snapshot(), before);
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }));
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "timeout"), ("rollback", "ok")]));
    let logs = of_kind(&records, "log");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["message"], "rollback after the deadline");
}

#[tokio::test]
pub(crate) async fn memory_bomb() {
    let site = site();
    let before = site.snapshot();
    let grant = NO_FS.replace("[limits]", "[limits]\nmemory = \"16MiB\"");

    let report = site.run("memory-bomb", &grant, &[]).await;

    assert_eq!(site.snapshot(), before);
    assert_eq!(cause_kind(&report.outcome), CauseKind::MemoryLimit);
    assert!(report.outcome.cause().unwrap().message.contains("16777216"), "{:?}", report.outcome);
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "memory-limit"), ("rollback", "ok")]));
}

#[tokio::test]
pub(crate) async fn deep_recursion() {
    let site = site();

    let before = site.snapshot();

    let report = site.run("deep-recursion", NO_FS, &[]).await;

    assert_eq!(site.snapshot(), before);
    assert_eq!(cause_kind(&report.outcome), CauseKind::StackOverflow);
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "stack-overflow"), ("rollback", "ok")]));
}

#[tokio::test]
pub(crate) async fn partial_then_trap() {
    let site = site();
    let before = site.snapshot();

    let report = site.run("partial-then-trap", LOGS, &[]).await;

    assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
    assert_eq!(cause_kind(&report.outcome), CauseKind::Trap);
    assert_eq!(site.snapshot(), before, "rollback restored both files byte for byte");
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "trap"), ("rollback", "ok")]));
    // Each journal entry is durable before the write it protects, and each
    // write's intent before the write.
    let order: Vec<String> = records
        .iter()
        .filter_map(|r| match r["kind"].as_str().unwrap() {
            "journal" => Some(format!("journal {}", r["index"])),
            "intent" => Some(format!("intent {}", r["args"]["path"].as_str().unwrap())),
            "call" if r["function"] == "write" => Some(format!("write {}", r["args"]["path"].as_str().unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(
        order[..6],
        ["journal 0", "intent logs/a.txt", "write logs/a.txt", "journal 1", "intent logs/b.txt", "write logs/b.txt"]
    );
    assert!(!site.data().join(format!("journal/{}.journal", report.job_id)).exists(), "journal removed after rollback");
}

#[tokio::test]
pub(crate) async fn verify_fails() {
    let site = site();
    let before = site.snapshot();

    let report = site.run("verify-fails", LOGS, &[]).await;

    let cause = report.outcome.cause().unwrap();
    assert_eq!((cause.phase.name(), &cause.kind), ("verify", &CauseKind::Error));
    assert_eq!(cause.message, "failed: the service still does not answer");
    assert_eq!(site.snapshot(), before);
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "ok"), ("verify", "error"), ("rollback", "ok")]));
}

#[tokio::test]
pub(crate) async fn rollback_fails() {
    let site = site();

    let before = site.snapshot();

    let report = site.run("rollback-fails", NO_FS, &[]).await;

    assert_eq!(site.snapshot(), before);
    let Outcome::RollbackFailed { cause, rollback_cause } = &report.outcome else {
        panic!("expected rollback-failed, got {:?}", report.outcome);
    };
    assert_eq!(cause.message, "failed: apply gave up after step 1");
    assert_eq!(rollback_cause.message, "failed: cannot undo 1 step(s)");
    let records = site.job_records(&report.job_id);
    let outcome = of_kind(&records, "outcome");
    assert_eq!(outcome[0]["outcome"], "rollback-failed");
    assert_eq!(outcome[0]["rollback_cause"], "rollback: failed: cannot undo 1 step(s)");
    let journal = site.data().join(format!("journal/{}.journal", report.job_id));
    assert!(journal.exists(), "the journal is kept for the person who must finish the job");
}

/// `logs` with a small budget: 64 KiB written, 5 mutating calls, and a
/// rollback slack of 4 KiB and 2 calls.
const SMALL_BUDGET: &str = r#"
[[fs]]
name = "logs"
path = "{root}/granted"
access = "rw"

[limits]
timeout = "10s"
writes = "64KiB"
mutations = 5
rollback_slack_writes = "4KiB"
rollback_slack_mutations = 2
"#;

#[tokio::test]
pub(crate) async fn rollback_overreach() {
    for (overreach, refused) in [("bytes", "bytes written"), ("calls", "mutating host calls")] {
        let site = site();
        let report = site.run("rollback-overreach", SMALL_BUDGET, &[("overreach", overreach)]).await;

        let Outcome::RollbackFailed { cause, rollback_cause } = &report.outcome else {
            panic!("{overreach}: expected rollback-failed, got {:?}", report.outcome);
        };
        assert_eq!(cause.message, "failed: failing on purpose");
        assert_eq!(rollback_cause.kind, CauseKind::Budget, "{overreach}: {rollback_cause}");
        assert!(rollback_cause.message.contains(refused), "{overreach}: {rollback_cause}");
        assert_eq!(
            std::fs::read_to_string(site.path("granted/a.txt")).unwrap(),
            "alpha\n",
            "{overreach}: what apply changed was put back first"
        );
        // apply wrote 8 bytes over 6 in 1 call and journaled 6 bytes in 1
        // entry: rollback may write 8 + 6 + 6 + 4096 bytes in 1 + 1 + 2 calls.
        let written: Vec<_> = std::fs::read_dir(site.path("granted"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("big-") || name.starts_with("small-"))
            .collect();
        let bytes: u64 =
            written.iter().map(|name| std::fs::metadata(site.path("granted").join(name)).unwrap().len()).sum();
        assert!(written.len() <= 3 && bytes <= 4096, "{overreach}: rollback went past its bound: {written:?}");
        let records = site.job_records(&report.job_id);
        let ends = phase_ends(&records);
        assert_eq!(ends, phases(&[("apply", "error"), ("rollback", "budget")]), "{overreach}");
        let outcome = of_kind(&records, "outcome");
        assert_eq!(outcome[0]["outcome"], "rollback-failed", "{overreach}");
    }
}

#[tokio::test]
pub(crate) async fn audit_flood() {
    // 5,000 refused calls: 100 recorded, the rest counted in one record.
    let site = site();
    let report = site.run("audit-flood", LOGS, &[("calls", "refused")]).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = site.job_records(&report.job_id);
    let refused: Vec<_> =
        of_kind(&records, "call").into_iter().filter(|r| r["outcome"]["denied"].is_string()).collect();
    assert_eq!(refused.len(), 101, "refusals past the per-phase bound are not recorded one by one");
    assert_eq!(refused[100]["function"], "remove-file", "but the first of each function is");
    let summary: Vec<_> =
        of_kind(&records, "phase").into_iter().filter(|r| r["status"] == "refusals-suppressed").collect();
    assert_eq!(summary.len(), 1);
    let detail = summary[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("4900 more refused host calls") && detail.ends_with("(fs.stat: 4900)"), "{detail}");
    // The metrics count every refusal, recorded or not.
    let stats = site.runner().audit().stats();
    let denied = stats.calls.iter().find(|c| c.interface == "fs" && c.outcome == "denied").map(|c| c.count);
    assert_eq!(denied, Some(refused.len() as u64 + 4900), "{:?}", stats.calls);

    // Allowed calls past the job's audit budget stop the job.
    let site = self::site();
    let grant = format!("{LOGS}audit_bytes = \"64KiB\"\n");
    let report = site.run("audit-flood", &grant, &[("calls", "allowed")]).await;
    let Outcome::RolledBack { cause } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(cause.kind, CauseKind::Budget);
    assert!(cause.message.contains("audit budget of 65536 bytes"), "{cause}");
    let records = site.job_records(&report.job_id);
    let bytes: usize = of_kind(&records, "call").iter().map(|r| r.to_string().len()).sum();
    assert!(bytes < 80 << 10, "the job's call records stopped near its budget: {bytes} bytes");
}

#[tokio::test]
pub(crate) async fn noisy_output() {
    let site = site();

    let before = site.snapshot();

    let report = site.run("noisy-output", NO_FS, &[]).await;

    assert_eq!(site.snapshot(), before);
    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = site.job_records(&report.job_id);
    let outputs = of_kind(&records, "output");
    assert_eq!(outputs.len(), 2);
    let limit = sandbox().config().output_limit;
    for (output, stream, total) in [(outputs[0], "stdout", 8u64 << 20), (outputs[1], "stderr", 1 << 20)] {
        assert_eq!(output["stream"], stream);
        assert_eq!(output["bytes"], total, "every byte counted");
        assert_eq!(output["truncated"], true);
        assert_eq!(output["text"].as_str().unwrap().len(), limit, "only a bounded prefix kept");
    }
}

#[tokio::test]
pub(crate) async fn noop() {
    let site = site();

    let report = site.run("noop", NO_FS, &[]).await;

    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "ok"), ("verify", "ok")]));
    assert!(of_kind(&records, "call").is_empty());
}

#[tokio::test]
pub(crate) async fn plan_writes() {
    let site = site();
    let before = site.snapshot();
    let job = crate::common::job(&[]);

    let report = site
        .runner()
        .plan(&playbook("plan-writes"), &site.grant_for(&playbook("plan-writes"), LOGS), &job)
        .await
        .unwrap();

    let changes = report.changes.unwrap();
    assert_eq!(changes[0].detail, "denied: logs is granted read-only", "plan gets every directory read-only");
    assert_eq!(changes[1].detail, "denied: the journal can be written in apply only, not in plan");
    assert_eq!(site.snapshot(), before);
    let records = site.job_records(&report.job_id);
    assert_eq!(of_kind(&records, "job")[0]["grant"]["fs"][0]["access"], "ro");
    assert_eq!(of_kind(&records, "call").len(), 2);
}

#[test]
pub(crate) fn no_rollback() {
    match load("no-rollback") {
        Err(ArtifactError::Load(LoadError::MissingExports { missing })) => assert_eq!(missing, ["rollback"]),
        other => panic!("expected MissingExports, got {other:?}"),
    }
}

#[test]
pub(crate) fn wrong_signature() {
    match load("wrong-signature") {
        Err(ArtifactError::Load(LoadError::ExportTypes(detail))) => assert!(detail.starts_with("`apply`"), "{detail}"),
        other => panic!("expected ExportTypes, got {other:?}"),
    }
}

#[test]
pub(crate) fn wasi_fs() {
    match load("wasi-fs") {
        Err(ArtifactError::Load(LoadError::ForbiddenImport { import, why })) => {
            assert!(import.starts_with("wasi:filesystem/"), "{import}");
            assert!(why.contains("salve:playbook/fs"), "{why}");
        }
        other => panic!("expected ForbiddenImport, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    assert!(matches!(sandbox().load_unverified("junk", b"\0asm junk"), Err(LoadError::NotAComponent(_))));
}

/// The benchmark's playbook: N audited host calls, read-only or mutating.
#[tokio::test]
pub(crate) async fn bench_calls() {
    let site = Site::new();
    site.write("work/probe.txt", "probe");
    let grant = "[[fs]]\nname = \"work\"\npath = \"{root}/work\"\naccess = \"rw\"\n";

    let report = site.run("bench-calls", grant, &[("calls", "5"), ("mode", "stat")]).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = site.job_records(&report.job_id);
    assert_eq!(of_kind(&records, "call").iter().filter(|c| c["function"] == "stat" && c["outcome"] == "ok").count(), 5);
    assert!(of_kind(&records, "intent").is_empty(), "reads have no intent");

    let report = site.run("bench-calls", grant, &[("calls", "3"), ("mode", "append")]).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let records = site.job_records(&report.job_id);
    assert_eq!(of_kind(&records, "intent").len(), 3, "each append's intent is recorded first");
    assert_eq!(std::fs::read(site.root.path().join("work/bench.log")).unwrap(), b"xxx");
}
