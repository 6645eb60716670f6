//! An evidence bundle as an auditor receives it (tar: records, proofs,
//! checkpoint, request, artifact facts): offline verification of any
//! bytes, and the report of the outcome.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = salve::evidence::tar::read(data);
    let verified = salve::evidence::verify(data, None);
    let _ = salve::evidence::report::render("bundle.tar", &verified);
});
