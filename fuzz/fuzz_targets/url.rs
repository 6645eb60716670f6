//! URL canonicalisation, the form every URL a playbook asks for is matched
//! in: canonicalising is idempotent (what was checked is what is sent), and
//! the hazard and prefix checks take any canonical URL.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::scope::http::{canonical, path_hazard, under_prefix};

fuzz_target!(|data: &[u8]| {
    let Some(text) = salve_fuzz::text(data) else { return };
    // A URL, then (after a newline) a prefix.
    let (url, prefix) = text.split_once('\n').unwrap_or((text, "http://h/api"));
    let Ok(once) = canonical(url) else { return };
    let twice = canonical(once.as_str()).expect("a canonical URL canonicalises");
    assert_eq!(once.as_str(), twice.as_str(), "canonicalising twice is canonicalising once");
    let _ = path_hazard(once.path(), false);
    let _ = path_hazard(once.path(), true);
    if let Ok(prefix) = canonical(prefix)
        && under_prefix(once.as_str(), prefix.as_str())
    {
        // At a segment boundary: `http://h/api` never covers `http://h/apix`.
        let rest = &once.as_str()[prefix.as_str().len()..];
        assert!(
            prefix.as_str().ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
            "{once} is under {prefix} only at a segment boundary"
        );
    }
});
