//! Approvals: a person's Ed25519 signature, by a key with role `approver`,
//! over one job (its id and hash), one plan (its hash) and a vote.
//!
//! An approval binds to exactly what the person reviewed: if the job
//! changes, its hash does; if the playbook would now do something else, the
//! plan hash does, and the approval no longer counts.
//!
//! # Errors
//! [`ApprovalError`] names the check that refused an approval.

use crate::keys::{PrivateKey, Role};
use crate::trust::{TrustError, TrustStore};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// What an approval signs, before its fields.
const SIGNING_CONTEXT: &str = "salve approval v1";
/// How long an approval counts unless the approver says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(4 * 3600);
/// The longest an approval may count.
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest reason kept with a vote.
pub const MAX_REASON_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    #[error("key {key_id} submitted this job; the identity that proposes cannot approve")]
    Submitter { key_id: String },
    #[error("the approval's key is not accepted: {0}")]
    Untrusted(#[from] TrustError),
    #[error("key {key_id} is not in approver group {group:?} (its groups: {groups:?}), which this job needs")]
    NotInGroup { key_id: String, group: String, groups: Vec<String> },
    #[error("the approval's signature by key {key_id} does not verify")]
    BadSignature { key_id: String },
    #[error("the approval is for job {approved}, not job {job}")]
    OtherJob { job: String, approved: String },
    #[error("the approval is for another version of job {job} (hash {approved}, the job's is {actual})")]
    OtherJobHash { job: String, approved: String, actual: String },
    #[error(
        "the approval is for plan {approved}, but job {job}'s plan is now {actual}: review the new plan and approve again"
    )]
    StalePlan { job: String, approved: String, actual: String },
    #[error(
        "the approval expired at {expires_at}; approve again (`salve approve --for DURATION` sets how long a vote counts)"
    )]
    Expired { expires_at: String },
    #[error("key {key_id} already voted on job {job}; each approver counts once")]
    Duplicate { job: String, key_id: String },
    #[error("the approval is not valid: {0}")]
    Invalid(String),
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Vote {
    Approve,
    Reject,
}

impl Vote {
    pub fn name(self) -> &'static str {
        match self {
            Vote::Approve => "approve",
            Vote::Reject => "reject",
        }
    }
}

/// A signed vote on one job and one plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub job_id: String,
    pub job_hash: String,
    pub plan_hash: String,
    pub vote: Vote,
    /// RFC 3339, seconds.
    pub expires_at: String,
    #[serde(default)]
    pub reason: String,
    pub key_id: String,
    /// Ed25519 over [`Approval::message`], base64.
    pub signature: String,
}

/// What an approval is checked against: the job as the runner holds it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub job_id: &'a str,
    pub job_hash: &'a str,
    pub plan_hash: &'a str,
    /// The agent key that submitted the job.
    pub submitter: &'a str,
    pub environment: &'a str,
    /// The approver group the policy asks for, if any.
    pub group: Option<&'a str>,
}

impl Approval {
    /// The bytes a signature covers.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{SIGNING_CONTEXT}\njob={}\njob_hash={}\nplan_hash={}\nvote={}\nexpires_at={}\nreason={}\n",
            self.job_id,
            self.job_hash,
            self.plan_hash,
            self.vote.name(),
            self.expires_at,
            self.reason.escape_default()
        )
        .into_bytes()
    }

    /// Checks the signature with `key` (`verify_strict`). Whether `key` may
    /// approve is the caller's to know.
    pub fn verify_with(&self, key: &ed25519_dalek::VerifyingKey) -> Result<(), ApprovalError> {
        let signature: [u8; 64] = BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| ApprovalError::Invalid("signature is not 64 bytes of base64".into()))?;
        key.verify_strict(&self.message(), &Signature::from_bytes(&signature))
            .map_err(|_| ApprovalError::BadSignature { key_id: self.key_id.clone() })
    }

    /// Signs a vote on `subject` with an approver key, valid for `lifetime`.
    pub fn sign(
        subject: &Subject<'_>,
        vote: Vote,
        reason: &str,
        lifetime: Duration,
        key: &PrivateKey,
        now: SystemTime,
    ) -> Result<Approval, ApprovalError> {
        if key.role != Role::Approver {
            return Err(ApprovalError::Invalid(format!(
                "key {} has role {}; approvals are signed by a key with role approver",
                key.id, key.role
            )));
        }
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(ApprovalError::Invalid(format!(
                "an approval counts for more than zero and at most {}",
                humantime::format_duration(MAX_LIFETIME)
            )));
        }
        check_reason(reason)?;
        let mut approval = Approval {
            job_id: subject.job_id.to_string(),
            job_hash: subject.job_hash.to_string(),
            plan_hash: subject.plan_hash.to_string(),
            vote,
            expires_at: humantime::format_rfc3339_seconds(now + lifetime).to_string(),
            reason: reason.to_string(),
            key_id: key.id.clone(),
            signature: String::new(),
        };
        approval.signature = BASE64.encode(key.signing.sign(&approval.message()).to_bytes());
        Ok(approval)
    }

    /// Checks, in order: not the submitter's key; a trusted approver key
    /// for the environment (not revoked, not expired); in the required
    /// group; the signature (`verify_strict`); bound to this job, this
    /// job hash and this plan; not expired; not a second vote by a key in
    /// `earlier` (the keys that already voted on this job).
    pub fn check(
        &self,
        subject: &Subject<'_>,
        trust: &TrustStore,
        earlier: &[&str],
        now: SystemTime,
    ) -> Result<(), ApprovalError> {
        if self.key_id == subject.submitter {
            return Err(ApprovalError::Submitter { key_id: self.key_id.clone() });
        }
        check_reason(&self.reason)?;
        let key = trust.check(&self.key_id, Role::Approver, subject.environment, now)?;
        if let Some(group) = subject.group
            && !key.entry.groups.iter().any(|g| g == group)
        {
            return Err(ApprovalError::NotInGroup {
                key_id: self.key_id.clone(),
                group: group.to_string(),
                groups: key.entry.groups.clone(),
            });
        }
        self.verify_with(&key.public)?;
        if self.job_id != subject.job_id {
            return Err(ApprovalError::OtherJob { job: subject.job_id.into(), approved: self.job_id.clone() });
        }
        if self.job_hash != subject.job_hash {
            return Err(ApprovalError::OtherJobHash {
                job: subject.job_id.into(),
                approved: self.job_hash.clone(),
                actual: subject.job_hash.into(),
            });
        }
        if self.plan_hash != subject.plan_hash {
            return Err(ApprovalError::StalePlan {
                job: subject.job_id.into(),
                approved: self.plan_hash.clone(),
                actual: subject.plan_hash.into(),
            });
        }
        let expires = crate::time::Timestamp::parse_rfc3339_system(&self.expires_at)
            .map_err(|e| ApprovalError::Invalid(format!("expires_at: {e}")))?;
        if expires <= now {
            return Err(ApprovalError::Expired { expires_at: self.expires_at.clone() });
        }
        if expires > now + MAX_LIFETIME {
            return Err(ApprovalError::Invalid("expires_at is further ahead than an approval may count".into()));
        }
        if earlier.contains(&self.key_id.as_str()) {
            return Err(ApprovalError::Duplicate { job: subject.job_id.into(), key_id: self.key_id.clone() });
        }
        Ok(())
    }
}

/// A reason is kept with the vote and shown to people: bounded, and with
/// no character that could forge what a terminal shows.
fn check_reason(reason: &str) -> Result<(), ApprovalError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApprovalError::Invalid(format!("the reason is longer than {MAX_REASON_BYTES} bytes")));
    }
    if let Some((at, c)) = crate::text::first_control(reason) {
        return Err(ApprovalError::Invalid(format!(
            "the reason holds the control character {c:?} at byte {at}; write it on one line, without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::{KeyEntry, Revocation, TrustFile};

    struct Keys {
        agent: PrivateKey,
        alice: PrivateKey,
        bob: PrivateKey,
        outsider: PrivateKey,
        author: PrivateKey,
    }

    fn setup() -> (Keys, TrustFile) {
        let keys = Keys {
            agent: PrivateKey::from_seed("agent", Role::Agent, [1; 32]),
            alice: PrivateKey::from_seed("alice", Role::Approver, [2; 32]),
            bob: PrivateKey::from_seed("bob", Role::Approver, [3; 32]),
            outsider: PrivateKey::from_seed("outsider", Role::Approver, [4; 32]),
            author: PrivateKey::from_seed("author", Role::Author, [5; 32]),
        };
        let until = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(86_400)).to_string();
        let entry = |key: &PrivateKey, groups: &[&str]| KeyEntry {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..KeyEntry::new(&key.public(), vec!["prod".into()], until.clone())
        };
        let file = TrustFile {
            keys: vec![
                entry(&keys.agent, &[]),
                entry(&keys.alice, &["sre"]),
                entry(&keys.bob, &["sre"]),
                entry(&keys.outsider, &["dba"]),
                entry(&keys.author, &[]),
            ],
            revoked: vec![],
            signatures: vec![],
        };
        (keys, file)
    }

    fn subject<'a>(agent: &'a str) -> Subject<'a> {
        Subject {
            job_id: "job-1",
            job_hash: "1111",
            plan_hash: "2222",
            submitter: agent,
            environment: "prod",
            group: Some("sre"),
        }
    }

    #[test]
    fn an_approval_counts_only_for_its_job_plan_key_and_time() {
        let (keys, file) = setup();
        let trust = TrustStore::from_file(file.clone()).unwrap();
        let now = SystemTime::now();
        let here = subject(&keys.agent.id);
        let sign = |key: &PrivateKey, subject: &Subject<'_>| {
            Approval::sign(subject, Vote::Approve, "", DEFAULT_LIFETIME, key, now).unwrap()
        };
        let good = sign(&keys.alice, &here);
        good.check(&here, &trust, &[], now).unwrap();

        // The same key twice.
        assert!(matches!(
            good.check(&here, &trust, &[keys.alice.id.as_str()], now),
            Err(ApprovalError::Duplicate { .. })
        ));
        // For another job, another version of the job, an older plan.
        let other_job = Subject { job_id: "job-2", ..here };
        assert!(matches!(good.check(&other_job, &trust, &[], now), Err(ApprovalError::OtherJob { .. })));
        let other_hash = Subject { job_hash: "9999", ..here };
        assert!(matches!(good.check(&other_hash, &trust, &[], now), Err(ApprovalError::OtherJobHash { .. })));
        let new_plan = Subject { plan_hash: "3333", ..here };
        assert!(matches!(good.check(&new_plan, &trust, &[], now), Err(ApprovalError::StalePlan { .. })));
        // Expired.
        let later = now + DEFAULT_LIFETIME + Duration::from_secs(1);
        assert!(matches!(good.check(&here, &trust, &[], later), Err(ApprovalError::Expired { .. })));
        // Changed after signing: the vote, the plan.
        let flipped = Approval { vote: Vote::Reject, ..good.clone() };
        assert!(matches!(flipped.check(&here, &trust, &[], now), Err(ApprovalError::BadSignature { .. })));
        let moved = Approval { plan_hash: "3333".into(), ..good.clone() };
        assert!(matches!(moved.check(&new_plan, &trust, &[], now), Err(ApprovalError::BadSignature { .. })));
        // Bob's signature under Alice's id.
        let bobs = sign(&keys.bob, &here);
        let stolen = Approval { key_id: keys.alice.id.clone(), ..bobs };
        assert!(matches!(stolen.check(&here, &trust, &[], now), Err(ApprovalError::BadSignature { .. })));
        // Not in the group.
        let outsider = sign(&keys.outsider, &here);
        assert!(matches!(outsider.check(&here, &trust, &[], now), Err(ApprovalError::NotInGroup { .. })));
        // Not an approver key, however the envelope is made.
        assert!(Approval::sign(&here, Vote::Approve, "", DEFAULT_LIFETIME, &keys.author, now).is_err());
        let mut by_author = Approval { key_id: keys.author.id.clone(), ..good.clone() };
        by_author.signature = BASE64.encode(keys.author.signing.sign(&by_author.message()).to_bytes());
        assert!(matches!(
            by_author.check(&here, &trust, &[], now),
            Err(ApprovalError::Untrusted(TrustError::WrongRole { .. }))
        ));
        // The submitter, even if its key were an approver's.
        let by_submitter = Subject { submitter: &keys.alice.id, ..here };
        assert!(matches!(good.check(&by_submitter, &trust, &[], now), Err(ApprovalError::Submitter { .. })));
        // A revoked approver.
        let mut revoked = file;
        revoked.revoked.push(Revocation { id: keys.alice.id.clone(), reason: "left the team".into() });
        let revoked = TrustStore::from_file(revoked).unwrap();
        assert!(matches!(
            good.check(&here, &revoked, &[], now),
            Err(ApprovalError::Untrusted(TrustError::Revoked { .. }))
        ));
        // Lifetimes are bounded.
        assert!(Approval::sign(&here, Vote::Approve, "", MAX_LIFETIME * 2, &keys.alice, now).is_err());
    }
}
