//! A job envelope as an agent submits it: parsing and verification against
//! the trust store. The first byte picks the form: an envelope as is
//! (signatures mostly fail), or a request that is signed here by a trusted
//! agent key first, so the checks behind the signature are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::job::{JobRequest, SignedJob};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some(text) = salve_fuzz::text(rest) else { return };
    let fixture = salve_fuzz::fixture();
    let envelope = if mode % 2 == 0 {
        let Ok(envelope) = SignedJob::parse(text) else { return };
        envelope
    } else {
        let Ok(request) = serde_json::from_str::<JobRequest>(text) else { return };
        SignedJob::sign(&request, &fixture.agent).expect("the fixture agent key signs")
    };
    if let Ok(job) = envelope.verify(&fixture.trust, salve_fuzz::now()) {
        // What verified once verifies again, to the same job.
        let again = envelope.verify(&fixture.trust, salve_fuzz::now()).expect("verification is deterministic");
        assert_eq!(again.hash, job.hash);
        assert_eq!(again.request, job.request);
    }
});
