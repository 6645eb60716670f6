//! The playbook manifest (`playbook.toml`): what a playbook is, who owns
//! it, how risky it is, and the most it may ever be granted. It is signed
//! together with the component; a grant can only narrow it.
//!
//! ```toml
//! name = "rotate-logs"
//! version = "1.0.0"
//! owner = "platform-team@example.com"
//! purpose = "Compress oversized logs into rotated gzip generations"
//! risk_class = "execution"          # read-only | advisory | execution
//! reversibility = "reversible"      # reversible | compensating | irreversible
//!
//! [[capabilities.fs]]
//! name = "logs"                     # the mount name the playbook uses
//! paths = ["/var/log/**"]           # directories a grant may give it
//! access = "rw"                     # the most a grant may give: ro | rw
//!
//! [[parameters]]
//! name = "keep"
//! type = "integer"                  # integer | string | boolean
//! required = false
//! min = 1
//! max = 99
//!
//! [limits]                          # defaults, and the most a grant may set
//! timeout = "30s"
//! memory = "64MiB"
//! ```
//!
//! # Errors
//! Unknown fields, duplicate keys and every inconsistency are a
//! [`ManifestError`] naming the field.

use crate::scope::Access;
use crate::scope::exec::{ExecCredential, dangerous_env, parse_argv};
use crate::scope::http::HttpCredential;
use crate::scope::limits::{LimitError, Limits, LimitsSpec};
use crate::scope::pattern::{PathPattern, UrlPattern};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the manifest is not valid TOML for salve: {0}")]
    Parse(String),
    #[error("the manifest's {field} {reason}")]
    Invalid { field: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskClass {
    ReadOnly,
    Advisory,
    Execution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reversibility {
    Reversible,
    Compensating,
    Irreversible,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: semver::Version,
    pub owner: String,
    pub purpose: String,
    pub risk_class: RiskClass,
    pub reversibility: Reversibility,
    #[serde(default)]
    pub capabilities: Declared,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// The capabilities a playbook declares, with their maximum scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<FsDeclaration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecDeclaration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpDeclaration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsDeclaration {
    pub name: String,
    /// Absolute path patterns: `*` matches within one component, `**` any
    /// number of components (see [`crate::scope::pattern`]).
    pub paths: Vec<PathPattern>,
    pub access: Access,
}

/// A command line the playbook may run, at most (see [`crate::scope::exec`]
/// for the placeholder syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecDeclaration {
    /// The absolute paths the program may be at; a grant names one of them.
    pub programs: Vec<String>,
    pub argv: Vec<String>,
    /// Whether it only reads (and may then run in `plan` and `verify`).
    #[serde(default)]
    pub read_only: bool,
    /// Environment variables the grant may set for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Environment variables the playbook may set for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_allow: Vec<String>,
    /// The credential a grant may give it, and the variable it goes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<ExecCredential>,
}

/// Requests the playbook may make, at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDeclaration {
    pub methods: Vec<String>,
    /// URL patterns a grant's prefixes must match: `*` within a component
    /// (host, port or path segment), `**` across them. A loopback, private
    /// or link-local address must be written out, not matched by `*` (see
    /// [`crate::scope::pattern`]).
    pub urls: Vec<UrlPattern>,
    /// The credential a grant may give these requests, and the header it
    /// goes in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<HttpCredential>,
    /// Whether a grant may allow path parameters (`;`) in these requests
    /// (see [`crate::grant::http`]); off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_path_parameters: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Integer,
    String,
    Boolean,
}

impl std::fmt::Display for ParamType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParamType::Integer => "integer",
            ParamType::String => "string",
            ParamType::Boolean => "boolean",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Strings: a regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Strings: the only values allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Integers: the range allowed, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// Why a job's parameters do not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {name}: {reason}")]
pub struct ParamError {
    pub name: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field: field.into(), reason: reason.into() }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string().trim_end().to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if !is_identifier(&self.name) || self.name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("name", format!("{:?} must be lowercase letters, digits, '-' or '_'", self.name)));
        }
        for (field, value) in [("owner", &self.owner), ("purpose", &self.purpose)] {
            if value.trim().is_empty() {
                return Err(invalid(field, "is empty"));
            }
        }
        for (i, fs) in self.capabilities.fs.iter().enumerate() {
            let field = format!("capabilities.fs[{i}]");
            if !is_identifier(&fs.name) {
                return Err(invalid(field, format!("name {:?} may hold only letters, digits, '-' and '_'", fs.name)));
            }
            if self.capabilities.fs[..i].iter().any(|other| other.name == fs.name) {
                return Err(invalid(field, format!("name {:?} is declared twice", fs.name)));
            }
            if fs.paths.is_empty() {
                return Err(invalid(field, "lists no paths"));
            }
            for pattern in fs.paths.iter().map(PathPattern::as_str) {
                if !pattern.starts_with('/') || pattern.split('/').any(|c| c == "." || c == "..") {
                    return Err(invalid(field, format!("path {pattern:?} must be absolute, without . or ..")));
                }
            }
        }
        for (i, exec) in self.capabilities.exec.iter().enumerate() {
            let field = format!("capabilities.exec[{i}]");
            parse_argv(&exec.argv).map_err(|e| invalid(&field, e))?;
            if exec.programs.is_empty() || exec.programs.iter().any(|p| !p.starts_with('/')) {
                return Err(invalid(field, "needs programs: the absolute paths the program may be at"));
            }
            let names = exec.env.iter().chain(&exec.env_allow);
            let credential = exec.credential.as_ref().map(|c| &c.env);
            if let Some(name) = names.chain(credential).find(|n| dangerous_env(n)) {
                return Err(invalid(field, format!("sets {name}, which is never set for a program")));
            }
        }
        for (i, http) in self.capabilities.http.iter().enumerate() {
            let field = format!("capabilities.http[{i}]");
            if http.methods.is_empty() || http.urls.is_empty() {
                return Err(invalid(field, "needs methods and urls"));
            }
            if let Some(url) = http
                .urls
                .iter()
                .map(UrlPattern::as_str)
                .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                return Err(invalid(field, format!("url {url:?} is not an http or https pattern")));
            }
        }
        for (i, param) in self.parameters.iter().enumerate() {
            let field = format!("parameters[{i}] ({})", param.name);
            if !is_identifier(&param.name) {
                return Err(invalid(field, "has a name that is not letters, digits, '-' and '_'"));
            }
            if self.parameters[..i].iter().any(|other| other.name == param.name) {
                return Err(invalid(field, "is declared twice"));
            }
            let string_only = param.pattern.is_some() || param.values.is_some();
            let integer_only = param.min.is_some() || param.max.is_some();
            if string_only && param.kind != ParamType::String {
                return Err(invalid(field, "has pattern or values, which only a string takes"));
            }
            if integer_only && param.kind != ParamType::Integer {
                return Err(invalid(field, "has min or max, which only an integer takes"));
            }
            if let (Some(min), Some(max)) = (param.min, param.max)
                && min > max
            {
                return Err(invalid(field, format!("has min {min} above max {max}")));
            }
            if let Some(pattern) = &param.pattern {
                anchored(pattern).map_err(|e| invalid(field, format!("pattern is not a regular expression: {e}")))?;
            }
        }
        self.limits().map_err(|e| invalid("limits", e.to_string()))?;
        Ok(())
    }

    /// The manifest's limits, checked.
    pub fn limits(&self) -> Result<Limits, LimitError> {
        self.limits.resolve(None)
    }

    /// Every credential name the manifest declares.
    pub fn credentials(&self) -> Vec<&str> {
        let exec = self.capabilities.exec.iter().filter_map(|e| e.credential.as_ref().map(|c| c.name.as_str()));
        let http = self.capabilities.http.iter().filter_map(|h| h.credential.as_ref().map(|c| c.name.as_str()));
        let mut names: Vec<&str> = exec.chain(http).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The capability interfaces the manifest declares (beyond `log` and
    /// `journal`, which every playbook has).
    pub fn declared_interfaces(&self) -> Vec<&'static str> {
        let caps = &self.capabilities;
        [("fs", !caps.fs.is_empty()), ("exec", !caps.exec.is_empty()), ("http", !caps.http.is_empty())]
            .into_iter()
            .filter_map(|(name, declared)| declared.then_some(name))
            .collect()
    }

    pub fn fs(&self, name: &str) -> Option<&FsDeclaration> {
        self.capabilities.fs.iter().find(|fs| fs.name == name)
    }

    /// Checks a job's parameters against the schema: no unknown name, every
    /// required one present, every value of its type and within its bounds.
    pub fn check_parameters(&self, given: &[(String, String)]) -> Result<(), ParamError> {
        let err = |name: &str, reason: String| ParamError { name: name.into(), reason };
        for (name, value) in given {
            let Some(spec) = self.parameters.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
                return Err(err(name, format!("is not a parameter of {} (it takes {known:?})", self.name)));
            };
            spec.check(value).map_err(|reason| err(name, reason))?;
        }
        if let Some(missing) = self.parameters.iter().find(|p| p.required && !given.iter().any(|(n, _)| n == &p.name)) {
            return Err(err(&missing.name, "is required".into()));
        }
        Ok(())
    }
}

fn anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

impl Parameter {
    fn check(&self, value: &str) -> Result<(), String> {
        match self.kind {
            ParamType::Integer => {
                let n: i64 = value.parse().map_err(|_| format!("{value:?} is not an integer"))?;
                if self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max) {
                    let min = self.min.map_or("-inf".to_string(), |m| m.to_string());
                    let max = self.max.map_or("+inf".to_string(), |m| m.to_string());
                    return Err(format!("{n} is outside {min}..={max}"));
                }
            }
            ParamType::Boolean => {
                if value != "true" && value != "false" {
                    return Err(format!("{value:?} is not true or false"));
                }
            }
            ParamType::String => {
                if let Some(values) = &self.values
                    && !values.iter().any(|v| v == value)
                {
                    return Err(format!("{value:?} is not one of {values:?}"));
                }
                if let Some(pattern) = &self.pattern
                    && !anchored(pattern).is_ok_and(|re| re.is_match(value))
                {
                    return Err(format!("{value:?} does not match the pattern {pattern:?}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name = "rotate-logs"
version = "1.2.0"
owner = "platform"
purpose = "rotate"
risk_class = "execution"
reversibility = "reversible"

[[capabilities.fs]]
name = "logs"
paths = ["/var/log/**", "/srv/*/logs"]
access = "rw"

[[parameters]]
name = "keep"
type = "integer"
min = 1
max = 99

[[parameters]]
name = "mode"
type = "string"
required = true
values = ["fast", "slow"]

[[parameters]]
name = "suffix"
type = "string"
pattern = "[a-z]+"
"#;

    #[test]
    fn a_manifest_parses_and_checks_parameters() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        assert_eq!(manifest.version, semver::Version::new(1, 2, 0));
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(manifest.check_parameters(&p(&[("mode", "fast"), ("keep", "3"), ("suffix", "log")])).is_ok());
        for (bad, reason) in [
            (p(&[("keep", "3")]), "is required"),
            (p(&[("mode", "fast"), ("keep", "0")]), "outside 1..=99"),
            (p(&[("mode", "fast"), ("keep", "x")]), "not an integer"),
            (p(&[("mode", "medium")]), "is not one of"),
            (p(&[("mode", "fast"), ("suffix", "log; rm -rf /")]), "does not match"),
            (p(&[("mode", "fast"), ("other", "1")]), "is not a parameter"),
        ] {
            let error = manifest.check_parameters(&bad).unwrap_err();
            assert!(error.reason.contains(reason), "{bad:?}: {error}");
        }
    }

    #[test]
    fn unknown_fields_duplicate_keys_and_inconsistencies_are_refused() {
        for (text, expected) in [
            (format!("{MANIFEST}\nextra = 1\n"), "unknown field"),
            (MANIFEST.replace("owner = \"platform\"", "owner = \"platform\"\nowner = \"x\""), "duplicate key"),
            (MANIFEST.replace("risk_class = \"execution\"", "risk_class = \"yolo\""), "unknown variant"),
            (MANIFEST.replace("version = \"1.2.0\"", "version = \"one\""), "version"),
            (MANIFEST.replace("min = 1", "min = 100"), "above max"),
            (MANIFEST.replace("\"/srv/*/logs\"", "\"srv/logs\""), "must be absolute"),
            (MANIFEST.replace("pattern = \"[a-z]+\"", "pattern = \"[\""), "not a regular expression"),
            (MANIFEST.replace("name = \"keep\"", "name = \"mode\""), "declared twice"),
        ] {
            let error = Manifest::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "expected {expected:?}: {error}");
        }
    }
}
