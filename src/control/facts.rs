//! What the policy is asked about a job, and how its answer is recorded
//! and explained.

use super::ControlPlane;
use crate::artifact::manifest::Manifest;
use crate::grant::GrantSpec;
use crate::job::JobRequest;
use crate::policy::{Decision, Facts};
use crate::scope::Access;
use crate::scope::http::mutating_method;
use serde_json::{Value, json};
use std::time::SystemTime;

/// The mutating entries of a grant, per capability: read-write
/// directories, commands not marked read-only, URL prefixes with a method
/// other than GET or HEAD. The policy sees which capabilities mutate
/// (`mutating`) and how many entries do (`scopes`).
pub(super) fn mutating(spec: &GrantSpec) -> [(&'static str, usize); 3] {
    [
        ("fs", spec.fs.iter().filter(|f| f.access == Access::Rw).count()),
        ("exec", spec.exec.iter().filter(|e| !e.read_only).count()),
        ("http", spec.http.iter().filter(|h| h.methods.iter().any(|m| mutating_method(m))).count()),
    ]
}

impl ControlPlane {
    /// What the policy is asked about a job.
    pub fn facts(
        &self,
        agent: &str,
        request: &JobRequest,
        manifest: &Manifest,
        action: &'static str,
        now: SystemTime,
    ) -> Facts {
        let mutating = mutating(&request.grant);
        Facts {
            agent: agent.to_string(),
            action: action.to_string(),
            playbook: manifest.name.clone(),
            version: manifest.version.to_string(),
            environment: request.target.environment.clone(),
            target: request.target.system.clone(),
            severity: request.evidence.severity.name().to_string(),
            confidence: request.confidence_percent(),
            risk_class: serde_json::to_value(manifest.risk_class)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            reversibility: serde_json::to_value(manifest.reversibility)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            change_window_open: self.config.window_open(&request.target.environment, now),
            targets: 1,
            mutating: mutating.iter().filter(|(_, n)| *n > 0).map(|(cap, _)| cap.to_string()).collect(),
            scopes: i64::try_from(mutating.iter().map(|(_, n)| n).sum::<usize>()).unwrap_or(i64::MAX),
        }
    }

    /// The policy's decision on a job, with the facts it was given.
    pub fn decide(
        &self,
        agent: &str,
        request: &JobRequest,
        manifest: &Manifest,
        action: &'static str,
        now: SystemTime,
    ) -> (Decision, Facts) {
        let facts = self.facts(agent, request, manifest, action, now);
        (self.policy.decide(&facts), facts)
    }
}

/// A decision as the audit log records it: where it was taken, on what.
pub(super) fn decision_detail(stage: &str, action: &str, decision: &Decision, facts: &Facts) -> Value {
    json!({ "stage": stage, "action": action, "decision": decision, "facts": facts })
}

/// Why the policy decided as it did, in words.
pub(super) fn why(decision: &Decision) -> String {
    let mut text = if decision.policies.is_empty() {
        "no policy permits it (default deny)".to_string()
    } else {
        format!("policies: {}", decision.policies.join(", "))
    };
    if !decision.errors.is_empty() {
        text.push_str(&format!("; evaluation errors: {}", decision.errors.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_capabilities_are_read_from_the_grant() {
        let spec = GrantSpec::parse(
            "[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"ro\"\n\
             [[http]]\nmethods = [\"GET\"]\nprefix = \"http://127.0.0.1/\"\n",
        )
        .unwrap();
        assert_eq!(mutating(&spec), [("fs", 0), ("exec", 0), ("http", 0)]);
        let spec = GrantSpec::parse(
            "[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"rw\"\n\
             [[http]]\nmethods = [\"GET\", \"POST\"]\nprefix = \"http://127.0.0.1/\"\n",
        )
        .unwrap();
        assert_eq!(mutating(&spec), [("fs", 1), ("exec", 0), ("http", 1)]);
    }
}
