//! The `exec` capability: programs the grant allows, with arguments it
//! allows, started directly (never through a shell).
//!
//! A call is matched against the grant's command lines element by element
//! after typing: `argv[0]` must name a granted program, the argument count
//! must be the same, each literal equal, each placeholder satisfied (an
//! integer in its range written as one, a word of its set, a path inside
//! its granted directory, a string its pattern matches whole). The program
//! runs with an empty environment plus the grant's variables, the ones the
//! playbook may set, and any leased credential; in the grant's working
//! directory; with stdin closed; under the reaper ([`crate::reaper`]),
//! which kills everything the command started when it ends or times out
//! (a daemon in a session of its own too), else its process group killed;
//! stdout and stderr kept up to [`MAX_OUTPUT_BYTES`] each (the cut is
//! reported), with any leased credential redacted.
//!
//! # Errors
//! Anything that does not match is `denied`, with the reason, and audited.
//! A program that cannot start is `failed`. A non-zero exit is an output.
//!
//! # Security
//! The audit log records the argv (after typing), exit status, duration and
//! output sizes, never the output, and names a credential by its lease.

use super::{Calls, CapError, Effect};
use crate::bindings::Error as GuestError;
use crate::bindings::salve::playbook::exec::{Host, Output};
use crate::grant::Mount;
use crate::grant::exec::ExecRule;
use crate::scope::exec::{ArgPattern, MAX_ARG_BYTES, MAX_ARGS, dangerous_env};
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use wasmtime::component::HasData;

/// Bytes of stdout and of stderr kept from one run.
pub const MAX_OUTPUT_BYTES: usize = 64 << 10;
/// Most environment variables a playbook may pass to one run.
pub const MAX_ENV_VARS: usize = 32;

const INTERFACE: &str = "exec";

pub struct Exec;

impl HasData for Exec {
    type Data<'a> = ExecView<'a>;
}

/// What `exec` host functions see of the store.
pub struct ExecView<'a> {
    pub rules: &'a [ExecRule],
    pub mounts: &'a [Mount],
    pub calls: &'a Calls,
}

/// A call that matched a rule: what to start.
struct Command {
    /// The argv as typed and resolved (paths on the host), for the audit.
    resolved: Vec<String>,
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
    read_only: bool,
    lease: Option<String>,
}

/// Why a rule does not match: the first element that failed.
fn match_rule(rule: &ExecRule, argv: &[String], mounts: &[Mount]) -> Result<Vec<OsString>, String> {
    if argv.len() != rule.args.len() + 1 {
        return Err(format!("`{}` takes {} arguments, not {}", rule.pattern(), rule.args.len(), argv.len() - 1));
    }
    let mut typed = Vec::with_capacity(rule.args.len());
    for (i, (arg, pattern)) in argv[1..].iter().zip(&rule.args).enumerate() {
        if !pattern.admits_literal(arg) {
            return Err(format!("argument {} ({arg:?}) is not {pattern}", i + 1));
        }
        if let ArgPattern::Path { .. } = pattern {
            let path = super::fs::host_path(mounts, arg).map_err(|e| format!("argument {} ({arg:?}): {e}", i + 1))?;
            typed.push(path.into_os_string());
        } else {
            typed.push(OsString::from(arg));
        }
    }
    Ok(typed)
}

impl ExecView<'_> {
    fn prepare(&self, argv: &[String], env: &[(String, String)]) -> Result<Command, CapError> {
        if argv.is_empty() {
            return Err(CapError::Invalid("argv is empty".into()));
        }
        if argv.len() > MAX_ARGS || argv.iter().any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0')) {
            return Err(CapError::Invalid(format!(
                "argv is past the bounds ({MAX_ARGS} arguments of {MAX_ARG_BYTES} bytes, no NUL)"
            )));
        }
        if env.len() > MAX_ENV_VARS {
            return Err(CapError::Invalid(format!("more than {MAX_ENV_VARS} environment variables")));
        }
        let candidates: Vec<&ExecRule> = self.rules.iter().filter(|r| r.name == argv[0]).collect();
        if candidates.is_empty() {
            return Err(CapError::Denied(format!("no command the grant allows runs {:?}", argv[0])));
        }
        let mut reasons = Vec::new();
        for rule in candidates {
            let args = match match_rule(rule, argv, self.mounts) {
                Ok(args) => args,
                Err(reason) => {
                    reasons.push(reason);
                    continue;
                }
            };
            for (name, value) in env {
                if dangerous_env(name) || !rule.env_allow.contains(name) {
                    return Err(CapError::Denied(format!("the grant does not let the playbook set {name}")));
                }
                if value.contains('\0') || value.len() > MAX_ARG_BYTES {
                    return Err(CapError::Invalid(format!("the value of {name} is past the bounds")));
                }
            }
            let mut vars: Vec<(String, String)> = rule.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            vars.extend(env.iter().cloned());
            let mut lease = None;
            if let Some(credential) = &rule.credential {
                let leased = self.calls.lease(&credential.name)?;
                let value = leased.value_for(&self.calls.job).map_err(CapError::Denied)?;
                vars.push((credential.env.clone(), value.to_string()));
                lease = Some(leased.id.clone());
            }
            let resolved = std::iter::once(rule.name.clone())
                .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
                .collect();
            return Ok(Command {
                resolved,
                name: rule.name.clone(),
                program: rule.program.clone(),
                args,
                cwd: rule.cwd.clone(),
                env: vars,
                timeout: rule.timeout.min(self.calls.remaining()),
                read_only: rule.read_only,
                lease,
            });
        }
        Err(CapError::Denied(reasons.join("; ")))
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes.
async fn drain(mut stream: impl tokio::io::AsyncRead + Unpin, limit: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n as u64;
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    (kept, total)
}

/// How long the reaper gets to clean up after a timeout before its group
/// is killed.
const REAPER_GRACE: Duration = Duration::from_secs(2);

/// Starts the program (under the reaper, if configured) and waits for it,
/// killing what it left at the end or at the timeout.
async fn run(command: Command, calls: Calls) -> Result<(Output, u64, u64), CapError> {
    use std::os::unix::process::ExitStatusExt;
    // Under the reaper, stdin is the reaper's line to salve: closed, it
    // kills what the command left and ends.
    // If this call is dropped, the reaper is not killed (which would leave
    // what the command started): its stdin closes, and it cleans up.
    let mut process = match calls.reaper() {
        Some(reaper) => {
            let mut process = tokio::process::Command::new(reaper);
            process.arg(crate::reaper::VERB).arg(&command.program).arg(&command.name).stdin(Stdio::piped());
            process.kill_on_drop(false);
            process
        }
        None => {
            let mut process = tokio::process::Command::new(&command.program);
            process.arg0(&command.name).stdin(Stdio::null()).kill_on_drop(true);
            process
        }
    };
    let mut child = process
        .args(&command.args)
        .current_dir(&command.cwd)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| CapError::Failed(format!("cannot start {}: {e}", command.name)))?;
    let group = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
    // Whatever the program left behind in its process group goes with it.
    let kill_group = || {
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    };
    // Keep enough past the bound to redact a credential cut by it.
    let keep = MAX_OUTPUT_BYTES + calls.redaction_slack();
    let stdout = drain(child.stdout.take().expect("piped"), keep);
    let stderr = drain(child.stderr.take().expect("piped"), keep);
    let stop_line = child.stdin.take();
    let waited = tokio::time::timeout(command.timeout, async { tokio::join!(stdout, stderr, child.wait()) }).await;
    drop(stop_line);
    let ((mut out, out_total), (mut err, err_total), status) = match waited {
        Ok(done) => {
            kill_group();
            done
        }
        Err(_) => {
            // The reaper (told by its closed stdin) kills everything below
            // it; given a moment, then the group goes anyway.
            if calls.reaper().is_some() {
                let _ = tokio::time::timeout(REAPER_GRACE, child.wait()).await;
            }
            kill_group();
            let _ = child.kill().await;
            return Err(CapError::Failed(format!(
                "{} did not finish within {}; it was killed",
                command.name,
                humantime::format_duration(command.timeout)
            )));
        }
    };
    let status = status.map_err(|e| CapError::Failed(format!("waiting for {}: {e}", command.name)))?;
    calls.redact(&mut out);
    calls.redact(&mut err);
    out.truncate(MAX_OUTPUT_BYTES);
    err.truncate(MAX_OUTPUT_BYTES);
    let output = Output {
        status: status.code(),
        signal: status.signal(),
        stdout_truncated: out_total > MAX_OUTPUT_BYTES as u64,
        stderr_truncated: err_total > MAX_OUTPUT_BYTES as u64,
        stdout: out,
        stderr: err,
    };
    Ok((output, out_total, err_total))
}

impl Host for ExecView<'_> {
    async fn run(
        &mut self,
        argv: Vec<String>,
        env: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Output, GuestError>> {
        let shown: Vec<_> = argv.iter().take(MAX_ARGS).map(|a| super::audited(a, 256)).collect();
        let names: Vec<_> = env.iter().take(MAX_ENV_VARS).map(|(k, _)| super::audited(k, 64)).collect();
        let prepared = self.prepare(&argv, &env);
        let mut args = json!({ "argv": shown, "env": names });
        // Past the bounds (the call is refused): say how many there were.
        if argv.len() > MAX_ARGS {
            args["argc"] = json!(argv.len());
        }
        if env.len() > MAX_ENV_VARS {
            args["env_count"] = json!(env.len());
        }
        let (effect, limit) = match &prepared {
            Ok(command) => {
                args["program"] = json!(command.program);
                args["resolved"] = json!(command.resolved);
                if let Some(lease) = &command.lease {
                    args["lease"] = json!(lease);
                }
                (
                    if command.read_only { Effect::Read } else { Effect::Mutate },
                    command.timeout + Duration::from_secs(5),
                )
            }
            Err(_) => (Effect::Read, self.calls.timeout),
        };
        let calls = self.calls.clone();
        let task = prepared.map(|command| run(command, calls));
        let result = self
            .calls
            .perform_task(
                INTERFACE,
                "run",
                args,
                effect,
                task,
                limit,
                |(output, out_total, err_total): &(Output, u64, u64)| {
                    json!({
                        "status": output.status, "signal": output.signal,
                        "stdout_bytes": out_total, "stderr_bytes": err_total,
                        "truncated": output.stdout_truncated || output.stderr_truncated,
                    })
                },
            )
            .await?;
        Ok(result.map(|(output, _, _)| output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::exec::ExecEntry;
    use crate::grant::{FsEntry, Grant, GrantSpec};

    #[test]
    fn arguments_are_typed_before_they_match() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let spec = GrantSpec {
            fs: vec![FsEntry { name: "conf".into(), path: dir.path().join("conf"), access: crate::scope::Access::Rw }],
            exec: vec![ExecEntry {
                program: "/bin/echo".into(),
                argv: ["echo", "-n", "{int:1..10}", "{word:start|stop}", "{path:conf}", "{match:[a-z]+}"]
                    .map(String::from)
                    .to_vec(),
                cwd: "conf".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let grant = Grant::open_unbounded(&spec).unwrap();
        let rule = &grant.exec()[0];
        let argv = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let ok = match_rule(rule, &argv(&["echo", "-n", "7", "stop", "conf/x.conf", "abc"]), grant.mounts()).unwrap();
        assert_eq!(ok[3], dir.path().canonicalize().unwrap().join("conf/x.conf").into_os_string());
        for (bad, why) in [
            (argv(&["echo", "-n", "07", "stop", "conf", "abc"]), "argument 2"),
            (argv(&["echo", "-n", "11", "stop", "conf", "abc"]), "argument 2"),
            (argv(&["echo", "-n", "7", "$(reboot)", "conf", "abc"]), "argument 3"),
            (argv(&["echo", "-n", "7", "stop", "conf/../../etc", "abc"]), "argument 4"),
            (argv(&["echo", "-n", "7", "stop", "/etc/passwd", "abc"]), "argument 4"),
            (argv(&["echo", "-n", "7", "stop", "conf", "abc; rm -rf /"]), "argument 5"),
            (argv(&["echo", "-n", "7", "stop", "conf", "abc", "extra"]), "takes 5 arguments"),
        ] {
            let error = match_rule(rule, &bad, grant.mounts()).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
    }

    #[test]
    fn shells_and_dangerous_variables_are_refused_in_grants() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |program: &str, env: &[&str]| GrantSpec {
            fs: vec![FsEntry { name: "d".into(), path: dir.path().into(), access: crate::scope::Access::Ro }],
            exec: vec![ExecEntry {
                program: program.into(),
                argv: vec!["x".into()],
                cwd: "d".into(),
                env_allow: env.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        // Granting a shell (or `env`, which runs any program) must be
        // refused: these paths are named only to show the refusal.
        for shell in ["/bin/sh", "/bin/bash", "/usr/bin/env"] {
            if std::path::Path::new(shell).exists() {
                assert!(Grant::open_unbounded(&spec(shell, &[])).is_err(), "{shell}");
            }
        }
        assert!(Grant::open_unbounded(&spec("/bin/echo", &["LD_PRELOAD"])).is_err());
        assert!(Grant::open_unbounded(&spec("relative/echo", &[])).is_err());
        assert!(Grant::open_unbounded(&spec("/bin/echo", &["TZ"])).is_ok());
    }
}
