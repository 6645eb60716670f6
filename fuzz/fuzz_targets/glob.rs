//! Path and URL patterns: compiling and matching take any text (time linear
//! in it), and a pattern without wildcards matches exactly itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::scope::pattern::{PathPattern, UrlPattern};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some(text) = salve_fuzz::text(data) else { return };
    // A pattern on the first line; texts to match on the others.
    let mut lines = text.lines();
    let Some(pattern) = lines.next() else { return };
    let texts: Vec<&str> = lines.collect();
    if let Ok(path) = PathPattern::parse(pattern) {
        for t in &texts {
            let _ = path.matches(Path::new(t));
        }
        if !pattern.contains(['*', '?']) && pattern.starts_with('/') {
            assert!(path.matches(Path::new(pattern)), "{pattern:?} matches itself");
        }
    }
    if let Ok(url) = UrlPattern::parse(pattern) {
        for t in &texts {
            let _ = url.matches(t);
        }
        if !pattern.contains(['*', '?']) {
            assert!(url.matches(pattern), "{pattern:?} matches itself");
        }
    }
});
