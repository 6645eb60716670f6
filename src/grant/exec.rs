//! `[[exec]]` grant entries: which command lines a playbook may run.
//!
//! ```toml
//! [[exec]]
//! program = "/usr/sbin/nginx"          # absolute; resolved (symlinks) when the grant is opened
//! argv = ["nginx", "-p", "{path:conf}", "-c", "nginx.conf", "-t"]
//! cwd = "conf"                          # a granted directory (MOUNT or MOUNT/sub)
//! env = { LANG = "C.UTF-8" }            # set for the program
//! env_allow = ["TZ"]                    # names the playbook may set
//! timeout = "10s"
//! read_only = true                      # allowed in plan and verify
//! credential = { name = "lb-admin", env = "ADMIN_TOKEN" }
//! ```
//!
//! An argv element is a literal, or a typed placeholder: `{int:MIN..MAX}`,
//! `{word:a|b|c}`, `{path:MOUNT}` (a path inside that granted directory) or
//! `{match:REGEX}` (the whole element must match).

use super::{GrantError, Mount, parse_timeout};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default time a program may run.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// Most arguments a command line may have.
pub const MAX_ARGS: usize = 64;
/// Most bytes of one argument.
pub const MAX_ARG_BYTES: usize = 4096;

/// Programs that are shells or run other programs: salve never runs one, so
/// a grant cannot turn `exec` into a shell.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "sudo", "su", "doas", "xargs",
    "nohup", "setsid", "chroot", "nice", "timeout", "script",
];

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

fn is_shell(program: &std::path::Path) -> bool {
    let base = program.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    SHELLS.contains(&base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.'))
}

/// Whether the program is a script (`#!`) whose interpreter is a shell.
fn runs_in_a_shell(program: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 256];
    let read = std::fs::File::open(program).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    let Some(line) = head[..read].strip_prefix(b"#!") else { return false };
    let line = String::from_utf8_lossy(line.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
    line.split_whitespace().next().is_some_and(|interpreter| is_shell(std::path::Path::new(interpreter)))
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

    fn admits_literal(&self, text: &str) -> bool {
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

/// An `[[exec]]` entry as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecEntry {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<ExecCredential>,
}

/// An allowed command line, opened: the program resolved, the working
/// directory inside a granted directory.
#[derive(Debug, Clone)]
pub struct ExecRule {
    /// argv[0], as the playbook names the program.
    pub name: String,
    /// The program's canonical path, resolved when the grant was opened.
    pub program: PathBuf,
    /// argv[1..].
    pub args: Vec<ArgPattern>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub env_allow: Vec<String>,
    pub timeout: Duration,
    pub read_only: bool,
    pub credential: Option<ExecCredential>,
}

impl ExecRule {
    /// The pattern as the audit log and messages show it.
    pub fn pattern(&self) -> String {
        std::iter::once(self.name.clone())
            .chain(self.args.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(super) fn open(index: usize, entry: &ExecEntry, mounts: &[Mount]) -> Result<ExecRule, GrantError> {
        let err = |reason: String| GrantError::Exec { index, reason };
        let patterns = parse_argv(&entry.argv).map_err(err)?;
        let ArgPattern::Literal(name) = &patterns[0] else { unreachable!("checked by parse_argv") };
        for pattern in &patterns[1..] {
            if let ArgPattern::Path { mount } = pattern
                && !mounts.iter().any(|m| &m.name == mount)
            {
                return Err(err(format!("{{path:{mount}}} names a directory the grant does not give")));
            }
        }
        if !entry.program.is_absolute() {
            return Err(err(format!("program {} is not an absolute path", entry.program.display())));
        }
        let program = std::fs::canonicalize(&entry.program)
            .map_err(|e| err(format!("program {} cannot be resolved: {e}", entry.program.display())))?;
        let meta = std::fs::metadata(&program).map_err(|e| err(format!("program {}: {e}", program.display())))?;
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(err(format!("program {} is not an executable file", program.display())));
        }
        if is_shell(&program) || SHELLS.contains(&name.as_str()) || runs_in_a_shell(&program) {
            return Err(err(format!(
                "program {} is a shell, runs other programs, or is a script a shell runs; salve never runs a shell",
                program.display()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(err(format!("program {} is writable by others than its owner", program.display())));
        }
        if let Some(mount) = mounts.iter().find(|m| program.starts_with(&m.path)) {
            return Err(err(format!(
                "program {} is inside granted directory {}, where the playbook could change it",
                program.display(),
                mount.name
            )));
        }
        for name in entry.env.keys().chain(entry.env_allow.iter()) {
            if dangerous_env(name) {
                return Err(err(format!("environment variable {name} may not be set for a program")));
            }
        }
        if let Some(credential) = &entry.credential
            && (dangerous_env(&credential.env) || entry.env.contains_key(&credential.env))
        {
            return Err(err(format!("the credential cannot go in {}", credential.env)));
        }
        let cwd = super::resolve_in_mounts(mounts, &entry.cwd).map_err(|reason| err(format!("cwd: {reason}")))?;
        let timeout = match &entry.timeout {
            Some(text) => parse_timeout("exec timeout", text)?,
            None => DEFAULT_EXEC_TIMEOUT,
        };
        Ok(ExecRule {
            name: name.clone(),
            program,
            args: patterns[1..].to_vec(),
            cwd,
            env: entry.env.clone(),
            env_allow: entry.env_allow.clone(),
            timeout,
            read_only: entry.read_only,
            credential: entry.credential.clone(),
        })
    }
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
