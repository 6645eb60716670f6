//! Grants: what one task may touch, and for how long.
//!
//! A grant file (TOML) parses into a [`GrantSpec`], which holds no
//! authority. [`Grant::open`] turns it into a [`Grant`], refusing
//! anything beyond what the playbook's signed manifest declares, by opening
//! each granted directory once, as a capability (a cap-std `Dir`): this is the
//! only place salve opens ambient authority on a playbook's behalf. From
//! then on a playbook can reach nothing but what those handles reach.
//!
//! ```toml
//! [[fs]]
//! name = "logs"            # the playbook addresses it as `logs/...`
//! path = "/var/log/app"    # absolute; must be an existing directory
//! access = "rw"            # or "ro"
//!
//! [limits]
//! timeout = "30s"          # each phase, unless set per phase below
//! apply_timeout = "2m"     # also plan_timeout, verify_timeout, rollback_timeout
//! memory = "64MiB"         # linear memory of the playbook
//! writes = "1GiB"          # bytes the job may write, all calls together
//! ```
//!
//! # Errors
//! Every problem is a [`GrantError`] that names the entry and says what to
//! change. Unknown fields and duplicate keys are errors.

pub mod exec;
pub mod http;

pub use exec::{ExecEntry, ExecRule};
pub use http::{HttpEntry, HttpRule};

use crate::artifact::manifest::Manifest;
use crate::scope::Access;
use crate::scope::exec::{ArgPattern, parse_argv};
use crate::scope::http::{host_text, mutating_method, pattern_host, special_address};
use crate::scope::limits::{LimitError, Limits, LimitsSpec};
use cap_std::ambient_authority;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    #[error("cannot read the grant {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the grant is not valid TOML for salve: {0}")]
    Parse(String),
    #[error("fs entry {index}: name {name:?} {reason}")]
    FsName { index: usize, name: String, reason: &'static str },
    #[error("fs entries {first} and {second} are both named {name:?}; give each directory its own name")]
    DuplicateName { name: String, first: usize, second: usize },
    #[error("fs entry {name:?}: path {path} {reason}")]
    FsPath { name: String, path: PathBuf, reason: String },
    #[error("limits.{field} = {value:?}: {reason}")]
    Limit { field: &'static str, value: String, reason: String },
    #[error("exec entry {index}: {reason}")]
    Exec { index: usize, reason: String },
    #[error("http entry {index}: {reason}")]
    Http { index: usize, reason: String },
    #[error("{kind} entry {index} asks for {asked}, which the playbook does not declare (it declares: {declared})")]
    Beyond { kind: &'static str, index: usize, asked: String, declared: String },
    #[error(
        "fs entries {first:?} and {second:?} overlap (at {path}): one directory inside another would let the \
         narrower access be bypassed; grant disjoint directories"
    )]
    Overlap { first: String, second: String, path: PathBuf },
    #[error("the grant gives fs {name:?}, which the playbook does not declare (it declares {declared:?})")]
    Undeclared { name: String, declared: Vec<String> },
    #[error("the grant asks for {what} = {asked}, but the playbook declares at most {declared}")]
    AboveDeclaration { what: String, asked: String, declared: String },
}

impl From<LimitError> for GrantError {
    fn from(error: LimitError) -> GrantError {
        match error {
            LimitError::Invalid { field, value, reason } => GrantError::Limit { field, value, reason },
            LimitError::AboveCeiling { field, asked, declared } => {
                GrantError::AboveDeclaration { what: format!("limits.{field}"), asked, declared }
            }
        }
    }
}

/// A grant as written: parsed and checked for shape, no authority yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    #[serde(default)]
    pub fs: Vec<FsEntry>,
    #[serde(default)]
    pub exec: Vec<ExecEntry>,
    #[serde(default)]
    pub http: Vec<HttpEntry>,
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// One granted directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FsEntry {
    pub name: String,
    pub path: PathBuf,
    pub access: Access,
}

impl GrantSpec {
    /// Reads and parses a grant file.
    pub fn load(path: &Path) -> Result<GrantSpec, GrantError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| GrantError::Read { path: path.to_path_buf(), source })?;
        GrantSpec::parse(&text)
    }

    /// Parses a grant from TOML text.
    pub fn parse(text: &str) -> Result<GrantSpec, GrantError> {
        toml::from_str(text).map_err(|e| GrantError::Parse(e.to_string().trim_end().to_string()))
    }

    /// The limits this spec sets, checked against their bounds; unset
    /// fields take the defaults.
    pub fn limits(&self) -> Result<Limits, GrantError> {
        self.limits_within(None)
    }

    /// The limits this spec sets, none above `ceiling` (a playbook's
    /// declared limits); unset fields take the ceiling's.
    pub fn limits_within(&self, ceiling: Option<&Limits>) -> Result<Limits, GrantError> {
        Ok(self.limits.resolve(ceiling)?)
    }
}

/// A granted directory, opened.
#[derive(Debug, Clone)]
pub struct Mount {
    pub name: String,
    /// The directory as the grant named it, resolved to an absolute path
    /// (for the audit log and messages; never used to open anything).
    pub path: PathBuf,
    pub access: Access,
    pub(crate) dir: Arc<cap_std::fs::Dir>,
}

/// Which capabilities a grant gives, beyond those every playbook has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    pub fs: bool,
    pub exec: bool,
    pub http: bool,
}

/// A grant with its directories open: what a task may touch.
#[derive(Debug, Clone)]
pub struct Grant {
    mounts: Arc<[Mount]>,
    exec: Arc<[ExecRule]>,
    http: Arc<[HttpRule]>,
    limits: Limits,
}

impl Grant {
    /// Opens every directory the spec names with NO manifest to bound it:
    /// it skips every check of [`Grant::open`] against what the
    /// playbook declares (undeclared mounts and commands, paths outside the
    /// declared patterns, `rw` over `ro`, limits above the declared ones).
    /// Only for what has no signed manifest: an unsigned component under
    /// `salve run --dangerous-unsigned`, and tests of grants and host
    /// capabilities themselves.
    pub fn open_unbounded(spec: &GrantSpec) -> Result<Grant, GrantError> {
        Grant::open_checked(spec, None)
    }

    /// Opens every directory the spec names, refusing anything beyond what
    /// the playbook's manifest declares: an undeclared mount, a directory
    /// outside the declared patterns, `rw` where `ro` is declared, a limit
    /// above the declared one.
    pub fn open(spec: &GrantSpec, manifest: &Manifest) -> Result<Grant, GrantError> {
        Grant::open_checked(spec, Some(manifest))
    }

    /// The only place ambient authority is used on a playbook's behalf.
    fn open_checked(spec: &GrantSpec, manifest: Option<&Manifest>) -> Result<Grant, GrantError> {
        let declared_limits = match manifest {
            Some(m) => Some(m.limits().map_err(|e| GrantError::Limit {
                field: "(declared)",
                value: String::new(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let limits = spec.limits_within(declared_limits.as_ref())?;
        let mut mounts: Vec<Mount> = Vec::with_capacity(spec.fs.len());
        for (index, entry) in spec.fs.iter().enumerate() {
            let index = index + 1;
            check_mount_name(index, &entry.name)?;
            if let Some(first) = mounts.iter().position(|m| m.name == entry.name) {
                return Err(GrantError::DuplicateName { name: entry.name.clone(), first: first + 1, second: index });
            }
            let path_err =
                |reason: String| GrantError::FsPath { name: entry.name.clone(), path: entry.path.clone(), reason };
            if !entry.path.is_absolute() {
                return Err(path_err("is relative; give the absolute path of the directory".into()));
            }
            let path = std::fs::canonicalize(&entry.path).map_err(|e| path_err(format!("cannot be resolved: {e}")))?;
            if !path.is_dir() {
                return Err(path_err("is not a directory".into()));
            }
            if let Some(manifest) = manifest {
                let Some(declared) = manifest.fs(&entry.name) else {
                    let declared = manifest.capabilities.fs.iter().map(|d| d.name.clone()).collect();
                    return Err(GrantError::Undeclared { name: entry.name.clone(), declared });
                };
                if !declared.paths.iter().any(|pattern| pattern.matches(&path)) {
                    return Err(GrantError::AboveDeclaration {
                        what: format!("fs {:?} path {}", entry.name, path.display()),
                        asked: path.display().to_string(),
                        declared: format!("{:?}", declared.paths),
                    });
                }
                if entry.access == Access::Rw && declared.access == Access::Ro {
                    return Err(GrantError::AboveDeclaration {
                        what: format!("fs {:?} access", entry.name),
                        asked: "rw".into(),
                        declared: "ro".into(),
                    });
                }
            }
            let dir = cap_std::fs::Dir::open_ambient_dir(&path, ambient_authority())
                .map_err(|e| path_err(format!("cannot be opened: {e}")))?;
            if let Some(other) = mounts.iter().find(|m| m.path.starts_with(&path) || path.starts_with(&m.path)) {
                return Err(GrantError::Overlap {
                    first: other.name.clone(),
                    second: entry.name.clone(),
                    path: path.clone(),
                });
            }
            mounts.push(Mount { name: entry.name.clone(), path, access: entry.access, dir: Arc::new(dir) });
        }
        let mut exec = Vec::with_capacity(spec.exec.len());
        for (index, entry) in spec.exec.iter().enumerate() {
            let rule = ExecRule::open(index + 1, entry, &mounts)?;
            if let Some(manifest) = manifest {
                check_exec_declared(index + 1, entry, &rule, manifest)?;
            }
            exec.push(rule);
        }
        let mut http = Vec::with_capacity(spec.http.len());
        for (index, entry) in spec.http.iter().enumerate() {
            let rule = HttpRule::open(index + 1, entry)?;
            if let Some(manifest) = manifest {
                check_http_declared(index + 1, &rule, manifest)?;
            }
            http.push(rule);
        }
        Ok(Grant { mounts: mounts.into(), exec: exec.into(), http: http.into(), limits })
    }

    /// The same grant downgraded to read-only, for `plan` and `verify`:
    /// every directory `ro`, only the commands marked `read_only`, only
    /// `GET` and `HEAD` requests.
    pub fn read_only(&self) -> Grant {
        let mounts = self.mounts.iter().map(|m| Mount { access: Access::Ro, ..m.clone() }).collect();
        let exec = self.exec.iter().filter(|r| r.read_only).cloned().collect();
        let http = self
            .http
            .iter()
            .filter_map(|r| {
                let methods: Vec<String> = r.methods.iter().filter(|m| !mutating_method(m)).cloned().collect();
                (!methods.is_empty()).then(|| HttpRule { methods, ..r.clone() })
            })
            .collect();
        Grant { mounts, exec, http, limits: self.limits }
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    pub fn exec(&self) -> &[ExecRule] {
        &self.exec
    }

    pub fn http(&self) -> &[HttpRule] {
        &self.http
    }

    /// The credentials the grant names, each once.
    pub fn credentials(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .exec
            .iter()
            .filter_map(|r| r.credential.as_ref().map(|c| c.name.clone()))
            .chain(self.http.iter().filter_map(|r| r.credential.as_ref().map(|c| c.name.clone())))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same grant with at most `max` mutating host calls: a runner's
    /// blast-radius budget can only narrow what the job asked for.
    pub fn with_mutations_at_most(&self, max: u64) -> Grant {
        let mut grant = self.clone();
        grant.limits.mutations = grant.limits.mutations.min(max);
        grant
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities { fs: !self.mounts.is_empty(), exec: !self.exec.is_empty(), http: !self.http.is_empty() }
    }

    /// What the audit log records about this grant (credentials by name).
    pub fn summary(&self) -> serde_json::Value {
        let fs: Vec<_> = self
            .mounts
            .iter()
            .map(|m| serde_json::json!({ "name": m.name, "path": m.path, "access": m.access }))
            .collect();
        let exec: Vec<_> = self
            .exec
            .iter()
            .map(|r| {
                serde_json::json!({
                    "program": r.program, "argv": r.pattern(), "cwd": r.cwd, "read_only": r.read_only,
                    "credential": r.credential.as_ref().map(|c| &c.name),
                })
            })
            .collect();
        let http: Vec<_> = self
            .http
            .iter()
            .map(|r| {
                let mut entry = serde_json::json!({
                    "methods": r.methods, "prefix": r.prefix,
                    "credential": r.credential.as_ref().map(|c| &c.name),
                });
                if r.allow_path_parameters {
                    entry["allow_path_parameters"] = true.into();
                }
                entry
            })
            .collect();
        serde_json::json!({ "fs": fs, "exec": exec, "http": http, "limits": self.limits })
    }
}

/// Why a path cannot be resolved beneath a granted directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeneathError {
    #[error("the path leaves the granted directory (through a symlink)")]
    Escapes,
    #[error("the path is a symlink to nowhere")]
    Dangling,
    #[error("the path does not exist")]
    NotFound,
    #[error("the path cannot be resolved: {0}")]
    Io(std::io::Error),
}

impl BeneathError {
    /// Classifies an error from a cap-std call on a mount's handle.
    pub(crate) fn from_io(error: std::io::Error) -> BeneathError {
        if escapes(&error) {
            BeneathError::Escapes
        } else if error.kind() == std::io::ErrorKind::NotFound {
            BeneathError::NotFound
        } else {
            BeneathError::Io(error)
        }
    }
}

/// Whether cap-std refused a path because resolving it would leave the
/// directory. It reports that (and the kernel's `EXDEV` under
/// `RESOLVE_BENEATH`) as a `PermissionDenied` error of its own, which
/// carries no OS error code; the operating system's own refusals (`EACCES`,
/// `EPERM`) always carry one.
pub(crate) fn escapes(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::PermissionDenied && error.raw_os_error().is_none()
}

/// `.` for the empty path: what cap-std takes for a mount's root.
pub(crate) fn or_root(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() { Path::new(".") } else { rel }
}

impl Mount {
    /// `rel` (relative to the mount, empty for its root, without `.`,
    /// `..` or empty components) with its symlinks resolved by cap-std
    /// beneath the granted directory, as every `fs` call resolves them:
    /// still relative to the mount. It may name what does not exist yet if
    /// its parent does and it is not a dangling symlink.
    pub(crate) fn resolve_beneath(&self, rel: &Path) -> Result<PathBuf, BeneathError> {
        // cap-std writes the mount's root as `.`; here it is the empty path.
        let relative = |resolved: PathBuf| if resolved == Path::new(".") { PathBuf::new() } else { resolved };
        match self.dir.canonicalize(or_root(rel)) {
            Ok(resolved) => Ok(relative(resolved)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Missing, so a program may create it: it must not be a
                // dangling symlink the program would write through.
                if self.dir.symlink_metadata(rel).is_ok() {
                    return Err(BeneathError::Dangling);
                }
                let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                    return Err(BeneathError::NotFound);
                };
                Ok(relative(self.dir.canonicalize(or_root(parent)).map_err(BeneathError::from_io)?).join(name))
            }
            Err(e) => Err(BeneathError::from_io(e)),
        }
    }

    /// The host path of `rel`, resolved by [`Mount::resolve_beneath`]: for
    /// a program, which cannot be handed the directory handle.
    pub(crate) fn host_path(&self, resolved: &Path) -> PathBuf {
        if resolved.as_os_str().is_empty() { self.path.clone() } else { self.path.join(resolved) }
    }
}

/// The host path of `MOUNT` or `MOUNT/sub/dir`, which must be an existing
/// directory inside the granted directory, resolved beneath it.
pub(crate) fn resolve_in_mounts(mounts: &[Mount], path: &str) -> Result<PathBuf, String> {
    let mut parts = path.split('/');
    let name = parts.next().unwrap_or_default();
    let mount = mounts.iter().find(|m| m.name == name).ok_or_else(|| format!("{name:?} is not a granted directory"))?;
    let mut rel = PathBuf::new();
    for part in parts {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{path:?} has an empty, `.` or `..` component"));
        }
        rel.push(part);
    }
    let resolved = mount.resolve_beneath(&rel).map_err(|e| format!("{path:?}: {e}"))?;
    if !mount.dir.metadata(or_root(&resolved)).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{path:?} is not a directory inside {}", mount.path.display()));
    }
    Ok(mount.host_path(&resolved))
}

fn check_exec_declared(
    index: usize,
    entry: &ExecEntry,
    rule: &ExecRule,
    manifest: &Manifest,
) -> Result<(), GrantError> {
    let beyond = |asked: String, declared: Vec<String>| GrantError::Beyond {
        kind: "exec",
        index,
        asked,
        declared: declared.join("; "),
    };
    let declared: Vec<String> = manifest.capabilities.exec.iter().map(|d| d.argv.join(" ")).collect();
    let matching = manifest.capabilities.exec.iter().filter(|d| {
        parse_argv(&d.argv).is_ok_and(|patterns| {
            patterns.len() == rule.args.len() + 1
                && matches!(&patterns[0], ArgPattern::Literal(name) if *name == rule.name)
                && rule.args.iter().zip(&patterns[1..]).all(|(mine, theirs)| mine.within(theirs))
        })
    });
    let mut problem = format!("the command line {}", rule.pattern());
    for decl in matching {
        let program_declared = decl
            .programs
            .iter()
            .any(|p| Path::new(p) == entry.program || std::fs::canonicalize(p).is_ok_and(|c| c == rule.program));
        if !program_declared {
            problem = format!("program {} for {}", entry.program.display(), rule.pattern());
        } else if let Some(name) = entry.env.keys().find(|n| !decl.env.contains(n)) {
            problem = format!("setting {name} for {}", rule.pattern());
        } else if let Some(name) = entry.env_allow.iter().find(|n| !decl.env_allow.contains(n)) {
            problem = format!("the playbook setting {name} for {}", rule.pattern());
        } else if entry.read_only && !decl.read_only {
            problem = format!("{} as read-only", rule.pattern());
        } else if entry.credential != decl.credential && entry.credential.is_some() {
            problem = format!("credential {:?} for {}", entry.credential.as_ref().map(|c| &c.name), rule.pattern());
        } else {
            return Ok(());
        }
    }
    Err(beyond(problem, declared))
}

fn check_http_declared(index: usize, rule: &HttpRule, manifest: &Manifest) -> Result<(), GrantError> {
    use crate::artifact::manifest::HttpDeclaration;
    let beyond = |asked: String, declared: Vec<String>| GrantError::Beyond {
        kind: "http",
        index,
        asked,
        declared: declared.join("; "),
    };
    // A loopback, private or link-local address must be in the declaration
    // as written, not reached through a `*`.
    let special = rule.named_ip.filter(|ip| special_address(*ip));
    let covers = |d: &&HttpDeclaration| {
        rule.methods.iter().all(|m| d.methods.iter().any(|dm| dm.eq_ignore_ascii_case(m)))
            && d.urls.iter().any(|pattern| {
                pattern.matches(&rule.prefix)
                    && special.is_none_or(|ip| pattern_host(pattern.as_str()) == Some(host_text(ip).as_str()))
            })
            && (rule.credential.is_none() || rule.credential == d.credential)
            && (!rule.allow_path_parameters || d.allow_path_parameters)
    };
    if !manifest.capabilities.http.iter().any(|d| covers(&d)) {
        let declared = manifest
            .capabilities
            .http
            .iter()
            .map(|d| {
                let urls: Vec<&str> = d.urls.iter().map(|u| u.as_str()).collect();
                let parameters = if d.allow_path_parameters { " (path parameters)" } else { "" };
                format!("{} {}{parameters}", d.methods.join(","), urls.join(" "))
            })
            .collect();
        let credential = rule.credential.as_ref().map(|c| format!(" with credential {}", c.name)).unwrap_or_default();
        let parameters = if rule.allow_path_parameters { " with path parameters" } else { "" };
        return Err(beyond(format!("{} {}{credential}{parameters}", rule.methods.join(","), rule.prefix), declared));
    }
    Ok(())
}

fn check_mount_name(index: usize, name: &str) -> Result<(), GrantError> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 64 {
        Some("is longer than 64 characters")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Some("may hold only letters, digits, '-' and '_' (it is the first component of the playbook's paths)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(GrantError::FsName { index, name: name.to_string(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
