//! A playbook's manifest (signed TOML): parsing, its limits and parameter
//! schema, and checking parameters against it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::artifact::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Some(text) = salve_fuzz::text(data) else { return };
    // A manifest, then (after a line `--params--`) parameters as k=v lines.
    let (manifest, params) = text.split_once("\n--params--\n").unwrap_or((text, ""));
    let Ok(manifest) = Manifest::parse(manifest) else { return };
    let _ = manifest.limits();
    let _ = manifest.credentials();
    let _ = manifest.declared_interfaces();
    let given: Vec<(String, String)> =
        params.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let _ = manifest.check_parameters(&given);
});
