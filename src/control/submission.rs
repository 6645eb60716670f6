//! Submission: a signed job is verified, admitted and decided, then stored
//! as `submitted` or `denied`. A refusal is recorded for the audit log.

use super::admission::{Checks, admit};
use super::facts::{decision_detail, why};
use super::{ControlError, ControlPlane};
use crate::artifact::floor::VersionFloor;
use crate::audit::ControlAction;
use crate::job::{JobState, SignedJob, VerifiedJob};
use crate::policy::{Decision, Verdict};
use crate::store::{NewJob, OutboxEvent};
use crate::time::Timestamp;
use serde_json::json;
use std::time::SystemTime;

/// The result of a submission.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Submitted {
    pub id: String,
    pub state: JobState,
    pub job_hash: String,
    pub decision: Decision,
}

impl ControlPlane {
    /// Takes a signed job: verifies it, resolves and verifies its
    /// playbook for the job's environment, admits its parameters and grant
    /// against the signed manifest, decides, and stores it (submitted, or
    /// denied). A replayed nonce or a reused id is refused.
    pub fn submit(&self, envelope: &SignedJob, now: SystemTime) -> Result<Submitted, ControlError> {
        self.submit_checked(envelope, now).inspect_err(|e| self.refused(envelope, e))
    }

    /// Records a refused submission in the outbox, for the audit log.
    fn refused(&self, envelope: &SignedJob, error: &ControlError) {
        let event = OutboxEvent {
            job: None,
            action: ControlAction::SubmissionRefused,
            at: Timestamp::now(),
            detail: json!({ "key_id": envelope.key_id, "reason": error.to_string() }),
        };
        if let Err(e) = self.store.submit_refusal(&event) {
            tracing::warn!("a refused submission could not be recorded for the audit log: {e}");
        }
    }

    fn submit_checked(&self, envelope: &SignedJob, now: SystemTime) -> Result<Submitted, ControlError> {
        let VerifiedJob { request, agent, hash, expires_at, .. } = envelope.verify(&self.trust, now)?;
        let environment = &request.target.environment;
        let installed = self.resolve(&request)?;
        let (_, verified) = self.verify_installed(&installed, environment, now)?;
        let floor = VersionFloor::new(&self.data_dir);
        let checks = Checks::to_run(&self.config);
        let admitted = admit(verified, &request.parameter_list(), &request.grant, environment, &floor, checks)?;
        let (decision, facts) = self.decide(&agent, &request, admitted.playbook.manifest(), "apply", now);
        let (state, reason) = match &decision.verdict {
            Verdict::Deny => (JobState::Denied, format!("denied at submission: {}", why(&decision))),
            _ => (JobState::Submitted, format!("submitted by agent key {agent}")),
        };
        let outbox = [
            OutboxEvent::new(
                &request.id,
                ControlAction::Submitted,
                json!({
                    "agent": agent,
                    "job_hash": hash,
                    "playbook": installed.name,
                    "version": installed.version,
                    "digest": installed.digest,
                    "environment": environment,
                    "target": request.target.system,
                    "evidence": request.evidence,
                    "parameters": request.parameters,
                    "grant": request.grant,
                    "nonce": request.nonce,
                    "expires_at": request.expires_at,
                }),
            ),
            OutboxEvent::new(
                &request.id,
                ControlAction::Decision,
                decision_detail("submission", "apply", &decision, &facts),
            ),
        ];
        let job = NewJob {
            envelope,
            request: &request,
            agent: &agent,
            job_hash: &hash,
            playbook: &installed.name,
            playbook_version: &installed.version,
            digest: &installed.digest,
            expires_at: Timestamp::from(expires_at),
        };
        self.store.submit(&job, &decision, state, &reason, &outbox)?;
        Ok(Submitted { id: request.id.clone(), state, job_hash: hash, decision })
    }
}
