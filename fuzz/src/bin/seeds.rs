//! Writes the seeds that need the fixture keys (signed envelopes,
//! approvals, artifacts, an audit log the fixture runner kept) into
//! `fuzz/corpus/TARGET/`: `scripts/fuzz.sh seeds`. The other seeds are the
//! repository's own manifests, hand-written grants, URLs, templates and
//! patterns, and files from the walk-through (`examples/walkthrough.sh`:
//! its job envelope, trust store, audit log and evidence bundle).

// Linked for the coverage hooks the instrumented salve calls; its fuzzing
// entry point is not used.
extern crate libfuzzer_sys;

use salve::approval::{Approval, Subject, Vote};
use salve::audit::{AuditLog, Event, Phase};
use salve::job::{JobRequest, SignedJob};
use std::path::Path;
use std::time::Duration;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory is created");
    std::fs::write(dir.join(name), bytes).expect("the seed is written");
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

fn main() {
    let fixture = salve_fuzz::fixture();
    let request: JobRequest = serde_json::from_value(serde_json::json!({
        "id": "job-1",
        "playbook": { "name": "fuzz", "version": "1.0.0" },
        "target": { "environment": "dev", "system": "web-1" },
        "parameters": { "max_bytes": "100000" },
        "grant": { "fs": [{ "name": "logs", "path": "/tmp/logs", "access": "rw" }] },
        "evidence": {
            "detector": "disk", "alert_id": "a-1", "severity": "high", "confidence": 0.9,
            "summary": "disk full", "telemetry_sha256": "c".repeat(64)
        },
        "nonce": "0123456789abcdef",
        "expires_at": "2026-12-01T06:00:00+00:00"
    }))
    .expect("the seed request is a request");
    let request_json = serde_json::to_vec(&request).expect("the request serialises");
    let envelope = SignedJob::sign(&request, &fixture.agent).expect("the agent signs");
    let envelope_json = serde_json::to_vec(&envelope).expect("the envelope serialises");
    write("envelope", "signed", &with_mode(0, &envelope_json));
    write("envelope", "request", &with_mode(1, &request_json));

    let job_hash = "a".repeat(64);
    let plan_hash = "b".repeat(64);
    let subject = Subject {
        job_id: "job-1",
        job_hash: &job_hash,
        plan_hash: &plan_hash,
        submitter: &fixture.agent.id,
        environment: "dev",
        group: None,
    };
    for (vote, name) in [(Vote::Approve, "approve"), (Vote::Reject, "reject")] {
        let approval = Approval::sign(
            &subject,
            vote,
            "looks right",
            Duration::from_secs(3600),
            &fixture.approver,
            salve_fuzz::now(),
        )
        .expect("the approver signs");
        let json = serde_json::to_vec(&approval).expect("the approval serialises");
        for mode in 0..4u8 {
            write("approval", &format!("{name}-{mode}"), &with_mode(mode, &json));
        }
    }

    write("trust", "fixture", fixture.trust_text.as_bytes());
    write("manifest", "fixture", format!("{}\n--params--\nmax_bytes=10\n", salve_fuzz::MANIFEST).as_bytes());
    let artifact = salve::artifact::sign(b"\0asm\x0d\0\x01\0", Some(salve_fuzz::MANIFEST), &fixture.author)
        .expect("the author signs");
    write("artifact", "signed", &with_mode(0, &artifact));
    write("artifact", "manifest", &with_mode(1, salve_fuzz::MANIFEST.as_bytes()));

    let dir = tempfile::tempdir().expect("a temp dir");
    {
        let log = AuditLog::open_keyed(dir.path(), fixture.runner.clone()).expect("the log opens");
        let detail = Some("ok");
        for phase in [Phase::Plan, Phase::Apply, Phase::Verify] {
            log.append(Some("job-1"), &Event::Phase { phase, status: "start", detail: None, duration_us: None })
                .expect("a record is appended");
            log.append(Some("job-1"), &Event::Phase { phase, status: "end", detail, duration_us: Some(12) })
                .expect("a record is appended");
        }
        log.sync_blocking().expect("the log syncs");
    }
    let mut log = std::fs::read(dir.path().join("audit.jsonl")).expect("the log is read");
    write("audit_log", "log", &log);
    if let Ok(head) = std::fs::read(dir.path().join("audit.head")) {
        log.extend_from_slice(b"--head--\n");
        log.extend_from_slice(&head);
        write("audit_log", "log-and-head", &log);
    }
}
