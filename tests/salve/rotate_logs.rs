//! The `rotate-logs` playbook: a rotation that succeeds, and rotations that
//! fail after partial work and must leave the directory byte-identical.

use crate::common::{Site, job, of_kind, phase_ends, phases, playbook};
use flate2::read::GzDecoder;
use salve::run::{CauseKind, Outcome};
use std::io::{Read, Write};
use std::path::Path;

const GRANT: &str = r#"
[[fs]]
name = "logs"
path = "{root}/logs"
access = "rw"

[limits]
timeout = "20s"
"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// Log-like text of about `bytes` bytes.
pub(crate) fn log_text(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 100);
    let mut n = seed;
    while out.len() < bytes {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        writeln!(out, "2026-11-23T12:00:{:02}Z INFO request id={n:016x} latency_ms={}", n % 60, n % 997).unwrap();
    }
    out
}

fn site_with_logs() -> Site {
    let site = Site::new();
    site.write("logs/app.log", log_text(300_000, 1));
    site.write("logs/app.log.1.gz", gzip(b"generation one\n"));
    site.write("logs/app.log.2.gz", gzip(b"generation two\n"));
    site.write("logs/worker.log", log_text(200_000, 2));
    site.write("logs/small.log", "tiny\n");
    site.write("logs/notes.txt", log_text(200_000, 3));
    site.write("elsewhere/other.log", log_text(200_000, 4));
    site
}

const PARAMS: &[(&str, &str)] = &[("max_bytes", "100000"), ("keep", "2")];

#[tokio::test]
pub(crate) async fn rotate_logs() {
    let site = site_with_logs();
    let before = site.snapshot();

    let report = site.run("rotate-logs", GRANT, PARAMS).await;

    assert_eq!(report.outcome, Outcome::Succeeded, "{:?}", report.outcome);
    let logs = site.root.path().join("logs");
    let read = |name: &str| std::fs::read(logs.join(name)).unwrap();
    assert_eq!(read("app.log"), b"", "truncated in place");
    assert_eq!(gunzip(&read("app.log.1.gz")), before[Path::new("logs/app.log")]);
    assert_eq!(gunzip(&read("app.log.2.gz")), b"generation one\n", "shifted up");
    assert!(!logs.join("app.log.3.gz").exists(), "keep=2: the oldest generation is dropped");
    assert_eq!(read("worker.log"), b"");
    assert_eq!(gunzip(&read("worker.log.1.gz")), before[Path::new("logs/worker.log")]);
    assert_eq!(read("small.log"), b"tiny\n", "under max_bytes: untouched");
    assert!(!logs.join("notes.txt.1.gz").exists(), "only *.log files are rotated");
    let after = site.snapshot();
    for untouched in ["logs/notes.txt", "elsewhere/other.log", "logs/small.log"] {
        assert_eq!(after[Path::new(untouched)], before[Path::new(untouched)], "{untouched}");
    }

    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "ok"), ("verify", "ok")]));
    // One journal entry for the batch, before any change; then for app.log:
    // remove .2, rename .1 -> .2, create .1, truncate; for worker.log:
    // create .1, truncate.
    assert_eq!(of_kind(&records, "journal").len(), 1);
    assert_eq!(of_kind(&records, "intent").len(), 6, "one durable intent per mutating call");
}

/// Bytes that do not compress (an LCG's high bytes).
fn noise(len: usize) -> Vec<u8> {
    let mut n: u64 = 88;
    (0..len)
        .map(|_| {
            n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (n >> 56) as u8
        })
        .collect()
}

#[tokio::test]
async fn rotate_logs_rolls_back_a_partial_rotation() {
    let site = Site::new();
    site.write("logs/small.log", "tiny\n");
    site.write("elsewhere/other.log", log_text(200_000, 4));
    // The job may write 100 KiB in all. a.log compresses to almost nothing;
    // zz.log (sorted last) does not compress, so writing its new generation
    // is refused after a.log was rotated and zz.log's generations shifted.
    site.write("logs/a.log", vec![b'a'; 150_000]);
    site.write("logs/zz.log", noise(200_000));
    site.write("logs/zz.log.1.gz", gzip(b"zz generation one\n"));
    site.write("logs/zz.log.2.gz", gzip(b"zz generation two\n"));
    let before = site.snapshot();
    let grant = GRANT.replace("[limits]", "[limits]\nwrites = \"100KiB\"");

    let report = site.run("rotate-logs", &grant, &[("max_bytes", "100000"), ("keep", "2")]).await;

    let Outcome::RolledBack { cause } = &report.outcome else { panic!("{:?}", report.outcome) };
    assert_eq!(cause.kind, CauseKind::Error);
    assert!(cause.message.contains("write budget is spent"), "{cause}");
    assert_eq!(site.snapshot(), before, "every rotated and shifted file is back, byte for byte");
    let records = site.job_records(&report.job_id);
    assert_eq!(phase_ends(&records), phases(&[("apply", "error"), ("rollback", "ok")]));
    let done: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "call" && r["outcome"] == "ok" && r["intent"].is_u64())
        .map(|r| {
            format!(
                "{} {}",
                r["function"].as_str().unwrap(),
                r["args"]["path"].as_str().or(r["args"]["source"].as_str()).unwrap()
            )
        })
        .collect();
    assert!(done.contains(&"truncate logs/a.log".to_string()), "a.log was rotated first: {done:?}");
    assert!(done.contains(&"remove-file logs/zz.log.2.gz".to_string()), "zz.log's oldest was dropped: {done:?}");
}

#[tokio::test]
async fn rotate_logs_rolls_back_when_verify_fails() {
    let site = site_with_logs();
    // A corrupt generation of an untouched log makes verify fail after
    // apply rotated the others.
    site.write("logs/small.log.1.gz", b"not gzip at all");
    let before = site.snapshot();

    let report = site.run("rotate-logs", GRANT, PARAMS).await;

    let cause = report.outcome.cause().expect("rolled back");
    assert_eq!(cause.phase.name(), "verify");
    assert!(cause.message.contains("small.log.1.gz is not a valid gzip file"), "{cause}");
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }));
    assert_eq!(site.snapshot(), before);
}

#[tokio::test]
async fn rotate_logs_refuses_bad_parameters_before_changing_anything() {
    let site = site_with_logs();
    let before = site.snapshot();

    let report = site.run("rotate-logs", GRANT, &[("keep", "0")]).await;

    let cause = report.outcome.cause().expect("rolled back");
    assert_eq!(cause.message, "invalid: keep=0 is outside 1..=99");
    assert_eq!(site.snapshot(), before);
}

#[tokio::test]
async fn rotate_logs_plans_without_changing_anything() {
    let site = site_with_logs();
    let before = site.snapshot();
    let params: Vec<(String, String)> = PARAMS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let job = salve::run::JobContext { parameters: params, ..job(&[]) };

    let report = site
        .runner()
        .plan(&playbook("rotate-logs"), &site.grant_for(&playbook("rotate-logs"), GRANT), &job)
        .await
        .unwrap();

    let targets: Vec<String> = report.changes.unwrap().into_iter().map(|c| c.target).collect();
    assert_eq!(targets, ["logs/app.log", "logs/worker.log"]);
    assert_eq!(site.snapshot(), before);
}
