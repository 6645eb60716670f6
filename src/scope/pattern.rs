//! Glob patterns: the path patterns a manifest declares directories with,
//! and the URL patterns it declares requests with.

use std::path::Path;

/// Whether a URL (canonical) matches a declared URL pattern: `**` matches
/// anything, `*` anything but `/`, `?` one character.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|skip| go(rest, &t[skip..])),
            [b'*', rest @ ..] => {
                (0..=t.len()).take_while(|&i| i == 0 || t[i - 1] != b'/').any(|skip| go(rest, &t[skip..]))
            }
            [b'?', rest @ ..] => !t.is_empty() && go(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Whether an absolute path matches a pattern: `*` matches within one
/// component, `**` zero or more whole components, `?` one character.
pub fn path_matches(pattern: &str, path: &Path) -> bool {
    let Some(path) = path.to_str() else { return false };
    let pattern: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    components_match(&pattern, &path)
}

fn components_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| components_match(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(head, tail)| glob(first.as_bytes(), head.as_bytes()) && components_match(rest, tail)),
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_match_whole_components() {
        let m = |pattern, path: &str| path_matches(pattern, Path::new(path));
        assert!(m("/var/log/**", "/var/log"));
        assert!(m("/var/log/**", "/var/log/app/nested"));
        assert!(!m("/var/log/**", "/var/logs"));
        assert!(!m("/var/log/**", "/etc"));
        assert!(m("/srv/*/logs", "/srv/web/logs"));
        assert!(!m("/srv/*/logs", "/srv/web/x/logs"));
        assert!(m("/tmp/app-?", "/tmp/app-1"));
        assert!(!m("/tmp/app-?", "/tmp/app-12"));
    }
}
