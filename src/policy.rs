//! Policy at the moment of action, with Cedar: may this agent run this
//! playbook, here, now, and do people have to approve it first?
//!
//! The agent is the principal (`Agent::"<key id>"`), the playbook the
//! resource (`Playbook::"<name>"`), `plan` or `apply` the action. The
//! context holds what the job says and what the runner knows:
//!
//! | field | type | |
//! | --- | --- | --- |
//! | `environment`, `target` | String | where |
//! | `severity` | String | `low`, `medium`, `high`, `critical` |
//! | `confidence` | Long | the detector's confidence, in percent (0..=100) |
//! | `risk_class`, `reversibility` | String | from the signed manifest |
//! | `change_window_open` | Bool | from the environment's change windows |
//! | `targets` | Long | how many systems the job acts on (a job names one; 1) |
//! | `mutating` | Set of String | the mutating capabilities granted (`fs`, `exec`, `http`) |
//! | `scopes` | Long | how many mutating grant entries (rw directories, commands, URL prefixes) |
//! | `playbook`, `version` | String | from the signed manifest |
//!
//! Three outcomes: deny (the default, and whenever a `forbid` applies or
//! evaluation errs), allow, or allow once N people approve: a `permit` that
//! carries `@approvals("N")` and `@group("NAME")` asks for N approvals from
//! the approver group NAME (`approvers` when no group is named); the
//! largest N among the permits that decided wins, and two permits asking
//! for as many approvals from different groups deny (the policy must say
//! which). Any evaluation error denies: Cedar skips a policy that errs, and
//! a `forbid` that errs must not let a job through. Every decision names the policies that made it (their `@id`) and
//! the hash of the policy set.
//!
//! # Errors
//! [`PolicyError`] for a policy file that does not parse, or a config that
//! does not.

use cedar_policy::{Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

/// The policy `salve init` writes: production changes by execution-class
/// playbooks need approvals (one inside the change window, two outside),
/// low-confidence evidence never acts in production, low-severity alerts
/// wait for the change window, `dev` runs freely.
pub const DEFAULT_POLICY: &str = r#"// salve policy (Cedar). Default deny: what no permit allows is refused.

@id("dev-runs")
permit(principal, action, resource)
when { context.environment == "dev" };

@id("plans-are-read-only")
permit(principal, action == Action::"plan", resource);

@id("prod-low-risk")
permit(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.risk_class != "execution" };

@id("prod-execution-in-window")
@approvals("1")
@group("sre")
permit(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.risk_class == "execution" && context.change_window_open };

@id("prod-execution-outside-window")
@approvals("2")
@group("sre")
permit(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.risk_class == "execution" && !context.change_window_open };

@id("low-severity-waits-for-the-window")
forbid(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.severity == "low" && !context.change_window_open };

@id("no-low-confidence-in-prod")
forbid(principal, action == Action::"apply", resource)
when { context.environment == "prod" && context.confidence < 80 };

@id("no-irreversible-outside-window")
forbid(principal, action == Action::"apply", resource)
when { context.reversibility == "irreversible" && context.environment != "dev" && !context.change_window_open };
"#;

/// The approver group of a permit that asks for approvals without naming
/// a `@group`.
pub const DEFAULT_GROUP: &str = "approvers";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read the policy {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the policy does not parse: {0}")]
    Parse(String),
    #[error("the runner config is not valid: {0}")]
    Config(String),
    #[error("the job's grant: {0}")]
    Scope(String),
}

/// A loaded policy set and its hash.
#[derive(Debug, Clone)]
pub struct Policy {
    set: PolicySet,
    hash: String,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Verdict {
    Allow,
    NeedsApprovals { approvals: u32, group: String },
    Deny,
}

/// A decision, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The `@id`s of the policies that decided (empty: nothing permitted).
    pub policies: Vec<String>,
    /// Evaluation errors (each makes the policy it hit not apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub policy_hash: String,
}

/// What the policy is asked about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub agent: String,
    pub action: String,
    pub playbook: String,
    pub version: String,
    pub environment: String,
    pub target: String,
    pub severity: String,
    pub confidence: i64,
    pub risk_class: String,
    pub reversibility: String,
    pub change_window_open: bool,
    pub targets: i64,
    pub mutating: Vec<String>,
    pub scopes: i64,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(format!("{e:?}")))?;
        Ok(Policy { set, hash: crate::host::digest(text.as_bytes()) })
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError::Read { path: path.display().to_string(), reason: e.to_string() })?;
        Policy::parse(&text)
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Decides. Default deny; an evaluation error never allows.
    pub fn decide(&self, facts: &Facts) -> Decision {
        let deny = |errors: Vec<String>| Decision {
            verdict: Verdict::Deny,
            policies: Vec::new(),
            errors,
            policy_hash: self.hash.clone(),
        };
        let uid = |kind: &str, id: &str| {
            EntityUid::from_str(&format!("{kind}::{}", serde_json::Value::from(id))).map_err(Box::new)
        };
        let (Ok(principal), Ok(action), Ok(resource)) =
            (uid("Agent", &facts.agent), uid("Action", &facts.action), uid("Playbook", &facts.playbook))
        else {
            return deny(vec!["cannot name the principal, action or resource".into()]);
        };
        let context = serde_json::json!({
            "environment": facts.environment,
            "target": facts.target,
            "severity": facts.severity,
            "confidence": facts.confidence,
            "risk_class": facts.risk_class,
            "reversibility": facts.reversibility,
            "change_window_open": facts.change_window_open,
            "targets": facts.targets,
            "mutating": facts.mutating,
            "scopes": facts.scopes,
            "playbook": facts.playbook,
            "version": facts.version,
        });
        let context = match Context::from_json_value(context, None) {
            Ok(context) => context,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let request = match Request::new(principal, action, resource, context, None) {
            Ok(request) => request,
            Err(e) => return deny(vec![e.to_string()]),
        };
        let response = Authorizer::new().is_authorized(&request, &self.set, &Entities::empty());
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let mut deciding: Vec<&cedar_policy::PolicyId> = response.diagnostics().reason().collect();
        deciding.sort_by_key(|id| id.to_string());
        let name =
            |id: &cedar_policy::PolicyId| self.set.annotation(id, "id").map_or_else(|| id.to_string(), String::from);
        let policies: Vec<String> = deciding.iter().map(|id| name(id)).collect();
        // Cedar skips a policy whose evaluation errs, a `forbid` included:
        // any error denies, so a broken forbid cannot let a job through.
        if response.decision() == CedarDecision::Deny || !errors.is_empty() {
            return Decision { policies, ..deny(errors) };
        }
        // The most approvals any deciding permit asks for; permits asking
        // for that many must agree on the group.
        let mut asks: Vec<(u32, String, String)> = Vec::new();
        for id in &deciding {
            let Some(count) = self.set.annotation(id, "approvals") else { continue };
            let Ok(count) = count.parse::<u32>() else {
                return deny(vec![format!("policy {}: @approvals({count:?}) is not a number", name(id))]);
            };
            let group = self.set.annotation(id, "group").unwrap_or(DEFAULT_GROUP).to_string();
            asks.push((count, group, name(id)));
        }
        let most = asks.iter().map(|(n, _, _)| *n).max().unwrap_or(0);
        let mut top = asks.into_iter().filter(|(n, _, _)| *n == most);
        let needed = top.next();
        if let (Some((_, group, first)), Some((_, other_group, other))) =
            (&needed, top.find(|(_, g, _)| Some(g) != needed.as_ref().map(|(_, g, _)| g)))
        {
            return deny(vec![format!(
                "policies {first} and {other} both ask for {most} approvals, from groups {group} and \
                 {other_group}: give one of them more approvals, or the same group"
            )]);
        }
        let verdict = match needed {
            Some((approvals, group, _)) if approvals > 0 => Verdict::NeedsApprovals { approvals, group },
            _ => Verdict::Allow,
        };
        Decision { verdict, policies, errors, policy_hash: self.hash.clone() }
    }
}

/// Keeps a copy of the policy at `path` (which hashes to `hash`) in `dir`
/// as `HASH.cedar`, once: every decision's policy text stays available to
/// evidence bundles after the policy changes.
pub fn keep(dir: &Path, path: &Path, hash: &str) -> std::io::Result<()> {
    let kept = dir.join(format!("{hash}.cedar"));
    if kept.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let text = std::fs::read(path)?;
    if crate::host::digest(&text) != hash {
        return Err(std::io::Error::other(format!("{} changed while it was read; try again", path.display())));
    }
    let staged = dir.join(format!(".{hash}.{}", std::process::id()));
    std::fs::write(&staged, &text)?;
    std::fs::File::open(&staged)?.sync_all()?;
    std::fs::rename(&staged, &kept)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The policy text kept with hash `hash`, if any, checked against it.
pub fn kept(dir: &Path, hash: &str) -> Option<String> {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(format!("{hash}.cedar"))).ok()?;
    (crate::host::digest(text.as_bytes()) == hash).then_some(text)
}

/// When changes may be made in an environment, in local time of `tz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeWindow {
    /// Days of the week: `mon`..`sun`; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local time.
    pub from: String,
    /// `HH:MM`, local time; before `from` means the window crosses midnight.
    /// Equal to `from` is refused.
    pub to: String,
    /// The IANA time zone the times are in (`Europe/Berlin`); UTC if not
    /// given. Daylight saving time is followed: `09:00` is nine on the
    /// wall clock all year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
}

impl ChangeWindow {
    fn zone(&self) -> Result<jiff::tz::TimeZone, PolicyError> {
        match &self.tz {
            None => Ok(jiff::tz::TimeZone::UTC),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
                PolicyError::Config(format!(
                    "window time zone {name:?} is not an IANA time zone (like \"Europe/Berlin\"): {e}"
                ))
            }),
        }
    }
}

/// The runner's own configuration (`DATA_DIR/salve.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Change windows per environment. An environment without windows has
    /// its change window always open.
    #[serde(default)]
    pub windows: std::collections::BTreeMap<String, Vec<ChangeWindow>>,
    #[serde(default)]
    pub budgets: Budgets,
    /// What jobs in each environment may touch. When any environment has
    /// scopes, a job in an environment without them is refused: the
    /// environment a job names is then bound to what its grant reaches.
    #[serde(default)]
    pub scopes: std::collections::BTreeMap<String, Scope>,
}

/// What jobs in one environment may be granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Directory patterns (as in a manifest: `*` one component, `**` any).
    #[serde(default)]
    pub fs: Vec<crate::scope::pattern::PathPattern>,
    /// Programs, by absolute path.
    #[serde(default)]
    pub exec: Vec<String>,
    /// URL prefixes.
    #[serde(default)]
    pub http: Vec<String>,
}

/// Blast-radius budgets the runner enforces, whatever the playbook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Most jobs of one playbook that may start applying in one
    /// environment in any hour.
    #[serde(default = "default_jobs_per_hour")]
    pub jobs_per_playbook_per_hour: u32,
    /// Most mutating host calls one job may make (the grant may ask for
    /// fewer, never more).
    #[serde(default = "default_mutations")]
    pub mutations_per_job: u64,
}

fn default_jobs_per_hour() -> u32 {
    20
}

fn default_mutations() -> u64 {
    crate::scope::limits::DEFAULT_MUTATIONS
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets { jobs_per_playbook_per_hour: default_jobs_per_hour(), mutations_per_job: default_mutations() }
    }
}

fn minutes(text: &str) -> Result<u32, PolicyError> {
    let (h, m) = text.split_once(':').ok_or_else(|| PolicyError::Config(format!("{text:?} is not HH:MM")))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| PolicyError::Config(format!("{text:?} is not HH:MM")))?,
        m.parse().map_err(|_| PolicyError::Config(format!("{text:?} is not HH:MM")))?,
    );
    if h > 23 || m > 59 {
        return Err(PolicyError::Config(format!("{text:?} is not a time of day")));
    }
    Ok(h * 60 + m)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl RunnerConfig {
    pub fn load(path: &Path) -> Result<RunnerConfig, PolicyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => RunnerConfig::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RunnerConfig::default()),
            Err(e) => Err(PolicyError::Read { path: path.display().to_string(), reason: e.to_string() }),
        }
    }

    pub fn parse(text: &str) -> Result<RunnerConfig, PolicyError> {
        let config: RunnerConfig = toml::from_str(text).map_err(|e| PolicyError::Config(e.to_string()))?;
        for (environment, scope) in &config.scopes {
            if let Some(prefix) = scope.http.iter().find(|p| {
                !p.ends_with('/') || crate::scope::http::canonical(p).map(|u| u.as_str() != p.as_str()).unwrap_or(true)
            }) {
                return Err(PolicyError::Config(format!(
                    "scopes.{environment}.http: {prefix:?} must be a canonical URL ending in '/' (like \"https://api.internal/v1/\")"
                )));
            }
            if let Some(program) = scope.exec.iter().find(|p| !p.starts_with('/')) {
                return Err(PolicyError::Config(format!(
                    "scopes.{environment}.exec: {program:?} is not an absolute path"
                )));
            }
        }
        for window in config.windows.values().flatten() {
            if minutes(&window.from)? == minutes(&window.to)? {
                return Err(PolicyError::Config(format!(
                    "a change window from {} to {} is empty; give the time it closes (before `from` to cross midnight)",
                    window.from, window.to
                )));
            }
            window.zone()?;
            if let Some(day) = window.days.iter().find(|d| !DAYS.contains(&d.to_ascii_lowercase().as_str())) {
                return Err(PolicyError::Config(format!("{day:?} is not a day (mon..sun)")));
            }
        }
        Ok(config)
    }

    /// Refuses a grant that reaches beyond `environment`'s scope.
    pub fn check_scope(&self, environment: &str, grant: &crate::grant::Grant) -> Result<(), PolicyError> {
        if self.scopes.is_empty() {
            return Ok(());
        }
        let scope = self.scopes.get(environment).ok_or_else(|| {
            PolicyError::Scope(format!(
                "environment {environment:?} has no [scopes.{environment}] in salve.toml, so no job may run there"
            ))
        })?;
        for mount in grant.mounts() {
            if !scope.fs.iter().any(|p| p.matches(&mount.path)) {
                return Err(PolicyError::Scope(format!(
                    "directory {} is outside environment {environment:?}'s scope {:?}",
                    mount.path.display(),
                    scope.fs
                )));
            }
        }
        for rule in grant.exec() {
            if !scope.exec.iter().any(|p| std::path::Path::new(p) == rule.program) {
                return Err(PolicyError::Scope(format!(
                    "program {} is outside environment {environment:?}'s scope {:?}",
                    rule.program.display(),
                    scope.exec
                )));
            }
        }
        for rule in grant.http() {
            if !scope.http.iter().any(|p| rule.prefix.starts_with(p.as_str())) {
                return Err(PolicyError::Scope(format!(
                    "URL prefix {} is outside environment {environment:?}'s scope {:?}",
                    rule.prefix, scope.http
                )));
            }
        }
        Ok(())
    }

    /// Whether `environment`'s change window is open at `now`.
    pub fn window_open(&self, environment: &str, now: SystemTime) -> bool {
        let Some(windows) = self.windows.get(environment) else { return true };
        if windows.is_empty() {
            return true;
        }
        windows.iter().any(|w| {
            // Checked at load; a window whose zone is gone is closed.
            let Ok(zone) = w.zone() else { return false };
            let local = crate::time::Timestamp::from(now).zoned(&zone);
            let minute = u32::from(local.hour().unsigned_abs()) * 60 + u32::from(local.minute().unsigned_abs());
            let today = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
            let day = |offset: usize| DAYS[(today + 7 - offset) % 7];
            let (from, to) = (minutes(&w.from).unwrap_or(0), minutes(&w.to).unwrap_or(0));
            let on = |d: &str| w.days.is_empty() || w.days.iter().any(|x| x.eq_ignore_ascii_case(d));
            if from <= to {
                on(day(0)) && (from..to).contains(&minute)
            } else {
                // Crosses midnight: the evening part today, or the morning
                // part of a window that opened yesterday.
                (on(day(0)) && minute >= from) || (on(day(1)) && minute < to)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn facts(environment: &str, risk: &str, window: bool, confidence: i64) -> Facts {
        Facts {
            agent: "agent-key".into(),
            action: "apply".into(),
            playbook: "nginx-upstream-repair".into(),
            version: "1.2.0".into(),
            environment: environment.into(),
            target: "web-3".into(),
            severity: "high".into(),
            confidence,
            risk_class: risk.into(),
            reversibility: "reversible".into(),
            change_window_open: window,
            targets: 1,
            mutating: vec!["fs".into(), "exec".into()],
            scopes: 2,
        }
    }

    #[test]
    fn the_default_policy_decides_the_matrix() {
        let policy = Policy::parse(DEFAULT_POLICY).unwrap();
        let two = Verdict::NeedsApprovals { approvals: 2, group: "sre".into() };
        let one = Verdict::NeedsApprovals { approvals: 1, group: "sre".into() };
        for (environment, risk, window, confidence, expected) in [
            ("dev", "execution", false, 10, Verdict::Allow),
            ("prod", "execution", false, 92, two.clone()),
            ("prod", "execution", true, 92, one.clone()),
            ("prod", "advisory", false, 92, Verdict::Allow),
            ("prod", "read-only", true, 92, Verdict::Allow),
            ("prod", "execution", true, 50, Verdict::Deny),
            ("prod", "advisory", true, 79, Verdict::Deny),
            ("staging", "execution", true, 99, Verdict::Deny),
        ] {
            let decision = policy.decide(&facts(environment, risk, window, confidence));
            assert_eq!(
                decision.verdict, expected,
                "{environment} {risk} window={window} confidence={confidence}: {decision:?}"
            );
            assert_eq!(decision.policy_hash, policy.hash());
        }
        let decision = policy.decide(&facts("prod", "execution", false, 92));
        assert_eq!(decision.policies, ["prod-execution-outside-window"]);
        let denied = policy.decide(&facts("prod", "execution", true, 50));
        assert_eq!(denied.policies, ["no-low-confidence-in-prod"]);
        let mut irreversible = facts("prod", "advisory", false, 95);
        irreversible.reversibility = "irreversible".into();
        assert_eq!(policy.decide(&irreversible).verdict, Verdict::Deny);
        let mut low = facts("prod", "advisory", false, 95);
        low.severity = "low".into();
        assert_eq!(policy.decide(&low).verdict, Verdict::Deny);
        low.change_window_open = true;
        assert_eq!(policy.decide(&low).verdict, Verdict::Allow);
        assert!(Policy::parse("permit(principal, action, resource) when {").is_err());
    }

    #[test]
    fn an_evaluation_error_denies_even_when_a_permit_applies() {
        // `context.missing` errs: the forbid is skipped by Cedar, the permit
        // applies; salve denies.
        let policy = Policy::parse(
            "permit(principal, action, resource);\n\
             forbid(principal, action, resource) when { context.missing == 1 };",
        )
        .unwrap();
        let decision = policy.decide(&facts("prod", "execution", true, 99));
        assert_eq!(decision.verdict, Verdict::Deny, "{decision:?}");
        assert!(!decision.errors.is_empty());
    }

    #[test]
    fn equal_approvals_from_different_groups_deny_and_the_larger_count_wins() {
        let policy = Policy::parse(
            "@id(\"a\") @approvals(\"2\") @group(\"sre\") permit(principal, action, resource);\n\
             @id(\"b\") @approvals(\"2\") @group(\"dba\") permit(principal, action, resource);",
        )
        .unwrap();
        let decision = policy.decide(&facts("prod", "execution", true, 99));
        assert_eq!(decision.verdict, Verdict::Deny);
        assert!(
            decision.errors[0].contains("different groups") || decision.errors[0].contains("groups"),
            "{decision:?}"
        );
        let policy = Policy::parse(
            "@id(\"a\") @approvals(\"1\") @group(\"sre\") permit(principal, action, resource);\n\
             @id(\"b\") @approvals(\"3\") @group(\"dba\") permit(principal, action, resource);",
        )
        .unwrap();
        let decision = policy.decide(&facts("prod", "execution", true, 99));
        assert_eq!(decision.verdict, Verdict::NeedsApprovals { approvals: 3, group: "dba".into() });
        // A clash below the largest count does not matter, whatever order
        // the ids sort in ("policy10" before "policy2").
        for ids in [["policy10", "policy2", "policy3"], ["a", "b", "c"], ["c", "b", "a"]] {
            let policy = Policy::parse(&format!(
                "@id(\"{}\") @approvals(\"2\") @group(\"sre\") permit(principal, action, resource);\n\
                 @id(\"{}\") @approvals(\"2\") @group(\"dba\") permit(principal, action, resource);\n\
                 @id(\"{}\") @approvals(\"3\") @group(\"sre\") permit(principal, action, resource);",
                ids[0], ids[1], ids[2]
            ))
            .unwrap();
            let decision = policy.decide(&facts("prod", "execution", true, 99));
            assert_eq!(decision.verdict, Verdict::NeedsApprovals { approvals: 3, group: "sre".into() }, "{ids:?}");
        }
    }

    #[test]
    fn change_windows_open_and_close() {
        let config = RunnerConfig::parse(
            "[windows]\nprod = [{ days = [\"sat\"], from = \"22:00\", to = \"02:00\" }, { from = \"12:00\", to = \"13:00\" }]\n",
        )
        .unwrap();
        // 2026-11-21 is a Saturday.
        let at = |day: u64, h: u64, m: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_219_200 + day * 86_400 + h * 3600 + m * 60)
        };
        assert!(config.window_open("prod", at(0, 23, 0)), "Saturday night");
        assert!(config.window_open("prod", at(1, 1, 30)), "Sunday, the same window");
        assert!(!config.window_open("prod", at(1, 23, 0)), "Sunday night");
        assert!(config.window_open("prod", at(3, 12, 30)), "every day at noon");
        assert!(!config.window_open("prod", at(3, 13, 0)));
        assert!(config.window_open("dev", at(3, 3, 0)), "no windows: always open");
        assert!(RunnerConfig::parse("[windows]\nprod = [{ from = \"25:00\", to = \"01:00\" }]\n").is_err());
        assert!(RunnerConfig::parse("[budgets]\njobs_per_playbook_per_hour = 3\nextra = 1\n").is_err());
    }

    #[test]
    fn a_window_in_a_time_zone_follows_daylight_saving_time() {
        let config = RunnerConfig::parse(
            "[windows]\nprod = [{ days = [\"mon\"], from = \"09:00\", to = \"10:00\", tz = \"Europe/Berlin\" }]\n",
        )
        .unwrap();
        let at = |text: &str| crate::time::Timestamp::parse_rfc3339(text).unwrap().system();
        // Winter: Berlin is UTC+1; summer: UTC+2. Nine on the wall clock both times.
        assert!(config.window_open("prod", at("2026-01-05T08:30:00Z")), "Monday 09:30 CET");
        assert!(!config.window_open("prod", at("2026-01-05T09:30:00Z")), "Monday 10:30 CET");
        assert!(config.window_open("prod", at("2026-07-06T07:30:00Z")), "Monday 09:30 CEST");
        assert!(!config.window_open("prod", at("2026-07-06T08:30:00Z")), "Monday 10:30 CEST");
        // The day is Berlin's: 23:30 UTC on Sunday is already Monday there.
        let night = RunnerConfig::parse(
            "[windows]\nprod = [{ days = [\"mon\"], from = \"00:00\", to = \"01:00\", tz = \"Europe/Berlin\" }]\n",
        )
        .unwrap();
        assert!(night.window_open("prod", at("2026-01-04T23:30:00Z")));
    }

    #[test]
    fn an_empty_window_and_an_unknown_zone_are_refused() {
        let empty = RunnerConfig::parse("[windows]\nprod = [{ from = \"10:00\", to = \"10:00\" }]\n").unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
        let zone =
            RunnerConfig::parse("[windows]\nprod = [{ from = \"10:00\", to = \"11:00\", tz = \"Mars/Olympus\" }]\n")
                .unwrap_err();
        assert!(zone.to_string().contains("is not an IANA time zone"), "{zone}");
    }
}
