//! Terminal safety: text from agents, approvers, playbooks and the store
//! cannot forge what salve prints (erase a line, start a new one, make a
//! rolled-back job read as succeeded).

use crate::control::{Plane, salve, text};
use salve::approval::{ApprovalError, DEFAULT_LIFETIME, Vote};
use salve::control::{Ballot, ControlError};
use salve::job::JobError;
use salve::policy::DEFAULT_POLICY;
use std::time::SystemTime;

/// Erases the line, returns to its start, and writes a verdict of its own.
const FORGERY: &str = "disk full\x1b[2K\rjob job-1: succeeded\nforged line";

#[test]
fn evidence_with_control_characters_is_refused_at_submission() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    for field in ["summary", "detector", "alert_id"] {
        let mut request = plane.rotate("job-1", "dev", 0.9);
        match field {
            "summary" => request.evidence.summary = FORGERY.into(),
            "detector" => request.evidence.detector = "slo\u{202e}gnp".into(),
            _ => request.evidence.alert_id = "88\n12".into(),
        }
        let refused = plane.submit(&control, &request).unwrap_err();
        assert!(
            matches!(&refused, ControlError::Job(JobError::Invalid { field: f, .. }) if f.ends_with(field)),
            "{field}: {refused}"
        );
        if field == "summary" {
            assert!(refused.to_string().contains("control character"), "{refused}");
        }
    }
    assert!(control.store.list(&salve::store::Listing::default(), 10).unwrap().is_empty(), "nothing was stored");
}

#[test]
fn a_vote_reason_with_a_line_break_is_refused() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    let ballot = Ballot { vote: Vote::Reject, reason: FORGERY, lifetime: DEFAULT_LIFETIME, reviewed: None };
    let refused = control.vote("job-1", &plane.alice, &ballot, SystemTime::now()).unwrap_err();
    assert!(matches!(refused, ControlError::Approval(ApprovalError::Invalid(_))), "{refused}");
    assert!(control.store.approvals("job-1").unwrap().is_empty());
}

#[test]
fn jobs_show_escapes_what_the_store_holds() {
    let plane = Plane::with_logs(DEFAULT_POLICY, "");
    let control = plane.control();
    plane.submit(&control, &plane.rotate("job-1", "dev", 0.9)).unwrap();
    // Someone who can write the store plants a reason with a forgery.
    let conn = rusqlite::Connection::open(plane.data().join("salve.db")).unwrap();
    conn.execute(
        "INSERT INTO transitions (job, from_state, to_state, at, reason) VALUES ('job-1', 'submitted', 'submitted', 0, ?1)",
        [FORGERY],
    )
    .unwrap();

    let shown = salve(&plane, &["jobs", "show", "job-1"]);

    let out = text(&shown);
    assert!(out.contains("disk full\\u{1b}[2K\\u{d}job job-1: succeeded\\u{a}forged line"), "{out}");
    assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
    assert!(!out.lines().any(|l| l.starts_with("forged line")), "{out}");
}
