//! Limits: the deadlines, memory, write and mutation budgets of one task,
//! as a manifest declares them (the most any grant may set) and as a grant
//! asks for them, and the sizes and durations they are written in.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Default deadline of each phase.
pub const DEFAULT_PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest deadline a grant may set for a phase.
pub const MAX_PHASE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default linear-memory cap of a playbook.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// Default of the bytes one job may write, all mutating calls together.
pub const DEFAULT_WRITES: u64 = 1 << 30;
/// Default of the mutating host calls one job may make.
pub const DEFAULT_MUTATIONS: u64 = 10_000;
/// Default of what a rollback may write beyond what apply wrote and what
/// the journal holds.
pub const DEFAULT_ROLLBACK_SLACK_WRITES: u64 = 64 << 10;
/// Default of the mutating calls a rollback may make beyond its bound.
pub const DEFAULT_ROLLBACK_SLACK_MUTATIONS: u64 = 16;
/// Default of the audit bytes one job's host calls may write.
pub const DEFAULT_AUDIT_BYTES: u64 = 32 << 20;
/// Smallest memory cap a grant may set (a Rust playbook needs about 1 MiB
/// to start).
pub const MIN_MEMORY: u64 = 2 << 20;

/// A limit that is malformed, out of bounds, or above its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("limits.{field} = {value:?}: {reason}")]
    Invalid { field: &'static str, value: String, reason: String },
    #[error("the grant asks for limits.{field} = {asked}, but the playbook declares at most {declared}")]
    AboveCeiling { field: &'static str, asked: String, declared: String },
}

/// Limits as written; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<String>,
    /// Mutating host calls the job may make, all phases but rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutations: Option<u64>,
    /// What rollback may write beyond what apply wrote and the journal
    /// holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_slack_writes: Option<String>,
    /// Mutating calls rollback may make beyond twice apply's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_slack_mutations: Option<u64>,
    /// Audit bytes the job's host calls may write, in each of apply and
    /// rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_bytes: Option<String>,
}

/// Limits in effect for one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    #[serde(with = "duration_ms")]
    pub plan: Duration,
    #[serde(with = "duration_ms")]
    pub apply: Duration,
    #[serde(with = "duration_ms")]
    pub verify: Duration,
    #[serde(with = "duration_ms")]
    pub rollback: Duration,
    pub memory: u64,
    /// Bytes the job may write in all (written, appended, or added by
    /// extending a file).
    pub writes: u64,
    /// Mutating host calls the job may make (a blast-radius budget: the
    /// call past it stops the job, which is then rolled back).
    pub mutations: u64,
    /// What a rollback may do beyond what apply did (see
    /// [`crate::host::Budget::for_rollback`]).
    pub rollback_slack_writes: u64,
    pub rollback_slack_mutations: u64,
    /// Audit bytes the job's host calls may write: past it the job stops.
    pub audit_bytes: u64,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            plan: DEFAULT_PHASE_TIMEOUT,
            apply: DEFAULT_PHASE_TIMEOUT,
            verify: DEFAULT_PHASE_TIMEOUT,
            rollback: DEFAULT_PHASE_TIMEOUT,
            memory: DEFAULT_MEMORY,
            writes: DEFAULT_WRITES,
            mutations: DEFAULT_MUTATIONS,
            rollback_slack_writes: DEFAULT_ROLLBACK_SLACK_WRITES,
            rollback_slack_mutations: DEFAULT_ROLLBACK_SLACK_MUTATIONS,
            audit_bytes: DEFAULT_AUDIT_BYTES,
        }
    }
}

impl LimitsSpec {
    /// The limits this spec sets, checked against their bounds and, given a
    /// `ceiling` (a playbook's declared limits), none above it; unset fields
    /// take the ceiling's, or the defaults.
    pub fn resolve(&self, ceiling: Option<&Limits>) -> Result<Limits, LimitError> {
        let spec = self;
        let fallback = ceiling.copied().unwrap_or_default();
        let above =
            |field: &'static str, asked: String, declared: String| LimitError::AboveCeiling { field, asked, declared };
        let base = spec.timeout.as_deref().map(|t| parse_timeout("timeout", t)).transpose()?;
        let phase = |field: &'static str, value: &Option<String>, max: Duration| -> Result<Duration, LimitError> {
            let asked = match value.as_deref() {
                Some(text) => Some(parse_timeout(field, text)?),
                None => base,
            };
            match asked {
                None => Ok(max),
                Some(asked) if ceiling.is_some() && asked > max => Err(above(
                    field,
                    humantime::format_duration(asked).to_string(),
                    humantime::format_duration(max).to_string(),
                )),
                Some(asked) => Ok(asked),
            }
        };
        let memory = match &spec.memory {
            None => fallback.memory,
            Some(text) => {
                let bytes = parse_size(text).ok_or_else(|| LimitError::Invalid {
                    field: "memory",
                    value: text.clone(),
                    reason: "not a size; write it like \"64MiB\", \"512KiB\" or \"1GiB\"".into(),
                })?;
                if bytes < MIN_MEMORY {
                    return Err(LimitError::Invalid {
                        field: "memory",
                        value: text.clone(),
                        reason: format!("below the minimum of {} MiB", MIN_MEMORY >> 20),
                    });
                }
                if ceiling.is_some() && bytes > fallback.memory {
                    return Err(above("memory", format!("{bytes} bytes"), format!("{} bytes", fallback.memory)));
                }
                bytes
            }
        };
        let size = |field: &'static str, value: &Option<String>, max: u64| -> Result<u64, LimitError> {
            let Some(text) = value else { return Ok(max) };
            let bytes = parse_size(text).ok_or_else(|| LimitError::Invalid {
                field,
                value: text.clone(),
                reason: "not a size; write it like \"100MiB\" or \"1GiB\"".into(),
            })?;
            if ceiling.is_some() && bytes > max {
                return Err(above(field, format!("{bytes} bytes"), format!("{max} bytes")));
            }
            Ok(bytes)
        };
        let writes = size("writes", &spec.writes, fallback.writes)?;
        let rollback_slack_writes =
            size("rollback_slack_writes", &spec.rollback_slack_writes, fallback.rollback_slack_writes)?;
        let audit_bytes = size("audit_bytes", &spec.audit_bytes, fallback.audit_bytes)?;
        let rollback_slack_mutations = match spec.rollback_slack_mutations {
            None => fallback.rollback_slack_mutations,
            Some(n) if ceiling.is_some() && n > fallback.rollback_slack_mutations => {
                return Err(above(
                    "rollback_slack_mutations",
                    n.to_string(),
                    fallback.rollback_slack_mutations.to_string(),
                ));
            }
            Some(n) => n,
        };
        let mutations = match spec.mutations {
            None => fallback.mutations,
            Some(0) => {
                return Err(LimitError::Invalid {
                    field: "mutations",
                    value: "0".into(),
                    reason: "must be at least 1; a playbook that changes nothing needs a read-only grant".into(),
                });
            }
            Some(n) if ceiling.is_some() && n > fallback.mutations => {
                return Err(above("mutations", n.to_string(), fallback.mutations.to_string()));
            }
            Some(n) => n,
        };
        Ok(Limits {
            mutations,
            plan: phase("plan_timeout", &spec.plan_timeout, fallback.plan)?,
            apply: phase("apply_timeout", &spec.apply_timeout, fallback.apply)?,
            verify: phase("verify_timeout", &spec.verify_timeout, fallback.verify)?,
            rollback: phase("rollback_timeout", &spec.rollback_timeout, fallback.rollback)?,
            memory,
            writes,
            rollback_slack_writes,
            rollback_slack_mutations,
            audit_bytes,
        })
    }
}

pub(crate) fn parse_timeout(field: &'static str, text: &str) -> Result<Duration, LimitError> {
    let err = |reason: String| LimitError::Invalid { field, value: text.to_string(), reason };
    let duration =
        humantime::parse_duration(text).map_err(|e| err(format!("{e}; write it like \"30s\", \"500ms\" or \"2m\"")))?;
    if duration.is_zero() || duration > MAX_PHASE_TIMEOUT {
        return Err(err(format!("must be above zero and at most {}", humantime::format_duration(MAX_PHASE_TIMEOUT))));
    }
    Ok(duration)
}

/// Parses `64MiB`, `512 KiB`, `1GiB`, `1000000` (bytes); `KB`/`MB`/`GB`
/// are read as powers of 1000.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000000"), Some(1_000_000));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
