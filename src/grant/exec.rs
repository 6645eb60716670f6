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
//! The argv placeholders are those of [`crate::scope::exec`].

use super::{GrantError, Mount};
use crate::scope::exec::{ArgPattern, ExecCredential, dangerous_env, parse_argv};
use crate::scope::limits::parse_timeout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default time a program may run.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// Programs that are shells or run other programs: salve never runs one, so
/// a grant cannot turn `exec` into a shell.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "sudo", "su", "doas", "xargs",
    "nohup", "setsid", "chroot", "nice", "timeout", "script",
];

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
