//! A signed approval or rejection: parsing and every check against a job
//! (signer, group, signature, binding, expiry, double vote). The first
//! byte picks the form: as is, or re-signed here by the trusted approver
//! key so that the checks behind the signature are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::approval::{Approval, Subject};

const JOB_HASH: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const PLAN_HASH: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some(text) = salve_fuzz::text(rest) else { return };
    let fixture = salve_fuzz::fixture();
    let Ok(mut approval) = serde_json::from_str::<Approval>(text) else { return };
    if mode % 2 == 1 {
        use base64::Engine;
        approval.key_id = fixture.approver.id.clone();
        use ed25519_dalek::Signer;
        let signature = fixture.approver.signing.sign(&approval.message());
        approval.signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
    }
    let subject = Subject {
        job_id: "job-1",
        job_hash: JOB_HASH,
        plan_hash: PLAN_HASH,
        submitter: &fixture.agent.id,
        environment: salve_fuzz::ENVIRONMENT,
        group: if mode & 2 == 0 { None } else { Some("security") },
    };
    let _ = approval.check(&subject, &fixture.trust, &[], salve_fuzz::now());
    let _ = approval.check(&subject, &fixture.trust, &[fixture.approver.id.as_str()], salve_fuzz::now());
});
