//! argv templates as manifests and grants write them, one element per
//! line: parsing, printing, the check of a grant's template against the
//! manifest's, and matching concrete arguments (what a command's argv is
//! checked with at run time). A template admits itself and prints as it
//! parses; what a grant's template admits, the manifest's it is within
//! admits too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::scope::exec::{ArgPattern, parse_argv};

fuzz_target!(|data: &[u8]| {
    let Some(text) = salve_fuzz::text(data) else { return };
    // A grant's template, a manifest's and arguments, split by blank lines.
    let mut parts = text.split("\n\n");
    let lines = |t: Option<&str>| t.unwrap_or("").lines().map(String::from).collect::<Vec<_>>();
    let (grant, manifest, args) = (lines(parts.next()), lines(parts.next()), lines(parts.next()));
    let Ok(grant) = parse_argv(&grant) else { return };
    for pattern in &grant {
        assert!(pattern.within(pattern), "{pattern} admits itself");
        let shown = pattern.to_string();
        let again = ArgPattern::parse(&shown).expect("a template parses as it prints");
        assert_eq!(again.to_string(), shown, "a template prints as it parses");
    }
    let manifest = parse_argv(&manifest).ok();
    for (i, g) in grant.iter().enumerate() {
        let m = manifest.as_ref().and_then(|m| m.get(i)).filter(|m| g.within(m));
        for arg in &args {
            if g.admits_literal(arg)
                && let Some(m) = m
            {
                assert!(m.admits_literal(arg), "{g} is within {m} and admits {arg:?}, which {m} does not");
            }
        }
    }
});
