//! Glob patterns: the path patterns a manifest (and a runner's scopes)
//! declare directories with, and the URL patterns a manifest declares
//! requests with. Each is compiled once, when it is read, to an automaton
//! (globset, on the regex engine), so matching takes time linear in the
//! text however many `*` and `**` a pattern holds.
//!
//! The language is the same for both: `*` matches within one component
//! (never a `/`), `**` as a whole component matches zero or more whole
//! components (elsewhere it is `*`), `?` one byte other than `/`. Every
//! other character is itself: `[`, `]`, `{`, `}` and `\` included.
//!
//! # Errors
//! A pattern longer than [`MAX_PATTERN_BYTES`] is a [`PatternError`].

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Longest pattern accepted. Patterns come from signed manifests and the
/// runner's configuration, not from a playbook, but each is compiled to an
/// automaton whose size grows with it: bounded so that no file can make
/// reading it costly.
pub const MAX_PATTERN_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    #[error("the pattern is {len} bytes; the bound is {MAX_PATTERN_BYTES}")]
    TooLong { len: usize },
    #[error("the pattern {pattern:?} cannot be compiled: {reason}")]
    Invalid { pattern: String, reason: String },
}

/// An absolute path pattern, as a manifest's `capabilities.fs.paths` or a
/// runner's `scopes.*.fs` hold it. Matching is by whole components: empty
/// components and a trailing `/` mean nothing, and `/var/log/**` matches
/// `/var/log` itself.
#[derive(Clone)]
pub struct PathPattern {
    text: String,
    matcher: GlobMatcher,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        let matcher = compile(text, &components_text(text))?;
        Ok(PathPattern { text: text.to_string(), matcher })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether an absolute path matches; a path that is not UTF-8 matches
    /// nothing.
    pub fn matches(&self, path: &Path) -> bool {
        path.to_str().is_some_and(|path| self.matcher.is_match(components_text(path)))
    }
}

/// A URL pattern, as a manifest's `capabilities.http.urls` holds it,
/// matched against a canonical URL (see [`crate::scope::http::canonical`]):
/// `*` within a host, port or path segment, `**` across them.
#[derive(Clone)]
pub struct UrlPattern {
    text: String,
    matcher: GlobMatcher,
}

impl UrlPattern {
    pub fn parse(text: &str) -> Result<UrlPattern, PatternError> {
        let matcher = compile(text, text)?;
        Ok(UrlPattern { text: text.to_string(), matcher })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a canonical URL matches.
    pub fn matches(&self, url: &str) -> bool {
        self.matcher.is_match(url)
    }
}

/// A path as `/a/b/`: one `/` between components, before the first and
/// after the last, so that `/**/` at the end matches the path itself
/// (zero components) as well as anything below it. The root is `/`.
fn components_text(path: &str) -> String {
    let mut text = String::with_capacity(path.len() + 2);
    text.push('/');
    for component in path.split('/').filter(|c| !c.is_empty()) {
        text.push_str(component);
        text.push('/');
    }
    text
}

/// Compiles `glob` (derived from `pattern`, the text as written) with
/// globset: `*`, `**` and `?` keep their meaning and every other
/// character globset reads specially is put in a class of its own, so it
/// stands for itself.
fn compile(pattern: &str, glob: &str) -> Result<GlobMatcher, PatternError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(PatternError::TooLong { len: pattern.len() });
    }
    let mut escaped = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '[' | ']' | '{' | '}' => {
                escaped.push('[');
                escaped.push(c);
                escaped.push(']');
            }
            c => escaped.push(c),
        }
    }
    let invalid = |e: globset::Error| PatternError::Invalid { pattern: pattern.to_string(), reason: e.to_string() };
    let glob = GlobBuilder::new(&escaped).literal_separator(true).backslash_escape(false).build().map_err(invalid)?;
    Ok(glob.compile_matcher())
}

macro_rules! text_pattern {
    ($name:ident) => {
        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                self.text == other.text
            }
        }

        impl Eq for $name {}

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.text, f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_pattern!(PathPattern);
text_pattern!(UrlPattern);

#[cfg(test)]
mod tests {
    use super::*;

    fn path(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(Path::new(path))
    }

    fn url(pattern: &str, url: &str) -> bool {
        UrlPattern::parse(pattern).unwrap().matches(url)
    }

    #[test]
    fn path_patterns_match_whole_components() {
        let m = path;
        assert!(m("/var/log/**", "/var/log"));
        assert!(m("/var/log/**", "/var/log/app/nested"));
        assert!(!m("/var/log/**", "/var/logs"));
        assert!(!m("/var/log/**", "/etc"));
        assert!(m("/srv/*/logs", "/srv/web/logs"));
        assert!(!m("/srv/*/logs", "/srv/web/x/logs"));
        assert!(m("/tmp/app-?", "/tmp/app-1"));
        assert!(!m("/tmp/app-?", "/tmp/app-12"));
    }

    #[test]
    fn double_stars_span_whole_components_only() {
        assert!(path("/**", "/"));
        assert!(path("/**", "/etc/passwd"));
        assert!(path("/srv/**/log", "/srv/log"));
        assert!(path("/srv/**/log", "/srv/a/b/log"));
        assert!(!path("/srv/**/log", "/srv/a/blog"));
        assert!(path("/srv/a**b", "/srv/axyzb"), "`**` inside a component is `*`");
        assert!(!path("/srv/a**b", "/srv/a/b"));
        assert!(path("/var//log/", "/var/log"), "empty components and a trailing / mean nothing");
        assert!(path("/var/log", "/var//log/"));
        assert!(!path("/", "/etc"));
        assert!(path("/", "/"));
    }

    #[test]
    fn characters_globset_reads_specially_stand_for_themselves() {
        assert!(path("/srv/[ab]/{x,y}", "/srv/[ab]/{x,y}"));
        assert!(!path("/srv/[ab]", "/srv/a"));
        assert!(!path("/srv/{x,y}", "/srv/x"));
        assert!(path("/srv/a\\*", "/srv/a\\xyz"), "a backslash escapes nothing");
        assert!(url("https://[::1]:8443/**", "https://[::1]:8443/x"));
        assert!(!url("https://[::1]:8443/**", "https://1:8443/x"));
    }

    #[test]
    fn url_patterns_match_within_and_across_components() {
        assert!(url("http://127.0.0.1:*/**", "http://127.0.0.1:8080/"));
        assert!(url("http://127.0.0.1:*/**", "http://127.0.0.1:8080/api/x"));
        assert!(!url("http://127.0.0.1:*/", "http://127.0.0.1:80/x/"), "`*` never crosses a /");
        assert!(!url("http://127.0.0.1:*/**", "http://127.0.0.10:8080/"));
        assert!(url("https://**", "https://api.example.com/v1/"));
        assert!(!url("https://**", "http://api.example.com/"));
        assert!(url("https://*/api/upstreams/**", "https://lb.example.com/api/upstreams/"));
        assert!(!url("https://*/api/upstreams/**", "https://lb.example.com/api/upstreams"));
        assert!(!url("https://*/api/upstreams/**", "https://evil.example/x/api/upstreams/"));
        assert!(
            !url("https://**.example.com/**", "https://evil.example/.example.com/"),
            "`**` that is not a whole component does not cross a /"
        );
    }

    #[test]
    fn many_stars_against_a_long_mismatch_finish() {
        // A backtracking matcher takes time exponential in the number of
        // `*` here; an automaton reads the text once.
        let stars = "*a".repeat(30);
        let text = "a".repeat(4000);
        assert!(!path(&format!("/{stars}b"), &format!("/{text}")));
        assert!(!path(&format!("/**/{}/b", ["*a"; 30].join("/**/")), &format!("/{}", ["a"; 200].join("/"))));
        assert!(!url(&format!("https://h/{stars}b"), &format!("https://h/{text}")));
        let segments = ["*a"; 30].join("/**/");
        assert!(!url(&format!("https://h/**/{segments}/b"), &format!("https://h/{}", "a/".repeat(2000))));
    }

    #[test]
    fn overlong_patterns_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_PATTERN_BYTES));
        assert_eq!(PathPattern::parse(&long).unwrap_err(), PatternError::TooLong { len: long.len() });
        assert!(matches!(UrlPattern::parse(&format!("https://{long}")), Err(PatternError::TooLong { .. })));
        assert!(PathPattern::parse(&long[..MAX_PATTERN_BYTES]).is_ok());
    }

    #[test]
    fn patterns_read_and_write_as_their_text() {
        let pattern: PathPattern = serde_json::from_str("\"/var/log/**\"").unwrap();
        assert_eq!(pattern.as_str(), "/var/log/**");
        assert_eq!(serde_json::to_string(&pattern).unwrap(), "\"/var/log/**\"");
        assert_eq!(format!("{:?}", vec![pattern]), "[\"/var/log/**\"]");
    }
}
