//! The audit log as an auditor or a restarting runner reads it: offline
//! verification of a mutated log (chain, tags, seals, checkpoints), and
//! opening it as the runner does on start (torn tails, zero-filled pages,
//! records past the checkpoint). Neither may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::audit::AuditLog;
use salve::audit::verify::{Anchor, verify_log};

fuzz_target!(|data: &[u8]| {
    let fixture = salve_fuzz::fixture();
    // A log, then (after a line `--head--`) the anchor file beside it.
    let (log, head) = match data.windows(10).position(|w| w == b"\n--head--\n") {
        Some(at) => (&data[..at + 1], Some(&data[at + 10..])),
        None => (data, None),
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, log).expect("the log is written");
    if let Some(head) = head {
        std::fs::write(dir.path().join("audit.head"), head).expect("the anchor is written");
    }
    let _ = verify_log(&path, Anchor::None, Some(&fixture.trust));
    let _ = verify_log(&path, Anchor::beside(&path), Some(&fixture.trust));
    let _ = AuditLog::open_keyed(dir.path(), fixture.runner.clone());
});
