//! A grant (TOML from a file, JSON in a job request): parsing, its limits
//! within a manifest's, and its round trip through the JSON a job's hash
//! covers. Opening it is not fuzzed: that opens the directories it names.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::artifact::manifest::Manifest;
use salve::grant::GrantSpec;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static CEILING: OnceLock<Option<salve::scope::limits::Limits>> = OnceLock::new();
    let ceiling = CEILING.get_or_init(|| {
        Some(
            Manifest::parse(salve_fuzz::MANIFEST)
                .expect("the fixture manifest parses")
                .limits()
                .expect("its limits hold"),
        )
    });
    let Some(text) = salve_fuzz::text(data) else { return };
    let Ok(spec) = GrantSpec::parse(text) else { return };
    let _ = spec.limits();
    let _ = spec.limits_within(ceiling.as_ref());
    // A job request carries its grant as JSON, which the job's hash
    // covers: it reads back as the same grant.
    let json = serde_json::to_string(&spec).expect("a grant serialises");
    let back: GrantSpec = serde_json::from_str(&json).expect("a serialised grant parses");
    assert_eq!(back, spec, "a grant round-trips through JSON");
});
