//! Command-line templates: the argv patterns a manifest declares and a
//! grant narrows, the environment no program is given, and how a
//! credential reaches a program.
//!
//! An argv element is a literal, or a typed placeholder: `{int:MIN..MAX}`,
//! `{word:a|b|c}`, `{path:MOUNT}` (a path inside that granted directory) or
//! `{match:REGEX}` (the whole element must match).

use serde::{Deserialize, Serialize};

/// Most arguments a command line may have.
pub const MAX_ARGS: usize = 64;
/// Most bytes of one argument.
pub const MAX_ARG_BYTES: usize = 4096;

/// Environment variable names never set for a program, whoever asks: they
/// change what gets loaded, run or trusted. (The manifest's allowlist is
/// the first line; this is the second.)
pub fn dangerous_env(name: &str) -> bool {
    const PREFIXES: &[&str] =
        &["LD_", "DYLD_", "GIT_", "PYTHON", "PERL", "RUBY", "NODE_", "JAVA_", "MALLOC_", "GLIBC_"];
    const NAMES: &[&str] = &[
        "PATH",
        "IFS",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "HOME",
        "XDG_CONFIG_HOME",
        "CURL_HOME",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "TMPDIR",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "LESSOPEN",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// One element of an allowed command line.
#[derive(Debug, Clone)]
pub enum ArgPattern {
    Literal(String),
    Int {
        min: i64,
        max: i64,
    },
    Word(Vec<String>),
    /// A path inside the named granted directory.
    Path {
        mount: String,
    },
    Match {
        source: String,
        regex: regex::Regex,
    },
}

impl ArgPattern {
    pub fn parse(text: &str) -> Result<ArgPattern, String> {
        let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
            return Ok(ArgPattern::Literal(text.to_string()));
        };
        let (kind, spec) = inner.split_once(':').ok_or_else(|| format!("{text:?}: a placeholder is {{KIND:SPEC}}"))?;
        match kind {
            "int" => {
                let (min, max) = spec.split_once("..").ok_or_else(|| format!("{text:?}: write {{int:MIN..MAX}}"))?;
                let parse = |n: &str| n.parse::<i64>().map_err(|_| format!("{text:?}: {n:?} is not an integer"));
                let (min, max) = (parse(min)?, parse(max)?);
                if min > max {
                    return Err(format!("{text:?}: MIN is above MAX"));
                }
                Ok(ArgPattern::Int { min, max })
            }
            "word" => {
                let words: Vec<String> = spec.split('|').map(String::from).collect();
                if words.iter().any(|w| w.is_empty()) {
                    return Err(format!("{text:?}: empty word"));
                }
                Ok(ArgPattern::Word(words))
            }
            "path" => Ok(ArgPattern::Path { mount: spec.to_string() }),
            "match" => {
                let regex = regex::Regex::new(&format!("^(?:{spec})$"))
                    .map_err(|e| format!("{text:?}: not a regular expression: {e}"))?;
                Ok(ArgPattern::Match { source: spec.to_string(), regex })
            }
            other => Err(format!("{text:?}: unknown placeholder kind {other:?} (int, word, path or match)")),
        }
    }

    /// Whether every argument this pattern admits is admitted by `wider`:
    /// how a grant is checked against the playbook's declaration.
    pub fn within(&self, wider: &ArgPattern) -> bool {
        use ArgPattern::*;
        match (self, wider) {
            // A literal never stands in for a path: a fixed string could
            // point anywhere once the playbook has made directories.
            (Literal(_), Path { .. }) => false,
            (Literal(a), _) => wider.admits_literal(a),
            (Int { min, max }, Int { min: wmin, max: wmax }) => wmin <= min && max <= wmax,
            (Word(words), _) => words.iter().all(|w| wider.admits_literal(w)),
            (Path { mount }, Path { mount: wider }) => mount == wider,
            (Match { source, .. }, Match { source: wider, .. }) => source == wider,
            _ => false,
        }
    }

    /// Whether the argument `text` matches: how a command's argument is
    /// checked at run time, and a grant's literal against a declaration.
    /// A `{path:MOUNT}` admits the mount and what is below it by name;
    /// resolving it beneath the mount is the caller's.
    pub fn admits_literal(&self, text: &str) -> bool {
        match self {
            ArgPattern::Literal(l) => l == text,
            ArgPattern::Int { min, max } => {
                text.parse::<i64>().is_ok_and(|n| (*min..=*max).contains(&n) && n.to_string() == text)
            }
            ArgPattern::Word(words) => words.iter().any(|w| w == text),
            ArgPattern::Path { mount } => text == mount || text.starts_with(&format!("{mount}/")),
            ArgPattern::Match { regex, .. } => regex.is_match(text),
        }
    }
}

impl std::fmt::Display for ArgPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgPattern::Literal(l) => write!(f, "{l}"),
            ArgPattern::Int { min, max } => write!(f, "{{int:{min}..{max}}}"),
            ArgPattern::Word(words) => write!(f, "{{word:{}}}", words.join("|")),
            ArgPattern::Path { mount } => write!(f, "{{path:{mount}}}"),
            ArgPattern::Match { source, .. } => write!(f, "{{match:{source}}}"),
        }
    }
}

/// Parses a whole command line pattern.
pub fn parse_argv(argv: &[String]) -> Result<Vec<ArgPattern>, String> {
    if argv.is_empty() {
        return Err("argv is empty; its first element names the program".into());
    }
    if argv.len() > MAX_ARGS {
        return Err(format!("argv has {} elements; the bound is {MAX_ARGS}", argv.len()));
    }
    let patterns = argv.iter().map(|a| ArgPattern::parse(a)).collect::<Result<Vec<_>, _>>()?;
    if !matches!(patterns[0], ArgPattern::Literal(_)) {
        return Err("argv[0] names the program; it must be a literal".into());
    }
    Ok(patterns)
}

/// How a credential reaches a program: as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecCredential {
    pub name: String,
    pub env: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_parse_and_narrow() {
        let p = |t| ArgPattern::parse(t).unwrap();
        assert!(p("{int:1..5}").within(&p("{int:0..10}")));
        assert!(!p("{int:1..50}").within(&p("{int:0..10}")));
        assert!(p("7").within(&p("{int:0..10}")));
        assert!(p("{word:a|b}").within(&p("{word:a|b|c}")));
        assert!(!p("{word:a|z}").within(&p("{word:a|b|c}")));
        assert!(p("reload").within(&p("{word:reload|stop}")));
        assert!(p("{path:conf}").within(&p("{path:conf}")));
        assert!(!p("{path:logs}").within(&p("{path:conf}")));
        assert!(p("abc").within(&p("{match:[a-c]+}")));
        assert!(!p("{match:.*}").within(&p("{match:[a-c]+}")));
        assert!(!p("{int:1..2}").within(&p("1")));
        assert!(!p("conf/../../etc/shadow").within(&p("{path:conf}")), "a literal never stands in for a path");
        assert!(!p("07").within(&p("{int:0..10}")), "integers are written as integers");
        for bad in ["{int:5..1}", "{int:a..b}", "{nope:x}", "{match:[}", "{word:a||b}", "{x}"] {
            assert!(ArgPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_argv(&["{word:a}".into()]).is_err(), "argv[0] is a literal");
    }

    #[test]
    fn dangerous_environment_names_are_known() {
        for name in ["LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "BASH_ENV", "DYLD_INSERT_LIBRARIES"] {
            assert!(dangerous_env(name), "{name}");
        }
        assert!(!dangerous_env("LANG"));
    }
}
