//! A signed artifact (component + manifest + signatures): its sections,
//! its signatures against the trust store, and its manifest. The first
//! byte picks the form: bytes as is, or a manifest text signed here by the
//! trusted author over the smallest component, so that verification
//! reaches the manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::artifact::{self, Artifact};

/// A component's header alone: the smallest component.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let fixture = salve_fuzz::fixture();
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Some(manifest) = salve_fuzz::text(rest) else { return };
        match artifact::sign(COMPONENT_HEADER, Some(manifest), &fixture.author) {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    };
    if let Ok(parsed) = Artifact::parse(&bytes) {
        let _ = parsed.signed_message();
    }
    let _ = artifact::verify(&bytes, &fixture.trust, salve_fuzz::ENVIRONMENT, salve_fuzz::now());
});
