//! Jobs from agents: what an agent asks the runner to do, signed by a key
//! with role `agent`.
//!
//! A [`JobRequest`] says which playbook to run, where, with which
//! parameters and grant, on what evidence; it carries a nonce and an
//! expiry. An agent signs its JSON bytes into a [`SignedJob`] (the
//! envelope); [`SignedJob::verify`] checks the envelope, the key and the
//! request, and yields a [`VerifiedJob`]: the only way to a job the control
//! plane acts on. Replay (a nonce seen before) and whether the playbook is
//! trusted for the environment are checked by the control plane, which
//! holds the state for it ([`crate::control`]).
//!
//! The JSON Schema of a request is published at `schemas/job.schema.json`
//! (`salve schema job` prints it).
//!
//! # Errors
//! [`JobError`] names the check that refused a job.

mod state;

pub use state::JobState;

use crate::grant::GrantSpec;
use crate::keys::{PrivateKey, Role};
use crate::trust::{TrustError, TrustStore};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// What the agent's signature covers, before the payload bytes.
const SIGNING_CONTEXT: &[u8] = b"salve job v1\n";
/// Largest payload accepted.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Longest a job may stay valid after it is submitted: its nonce must be
/// remembered that long.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest free-text summary of the evidence.
pub const MAX_SUMMARY_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("the job envelope is not valid: {0}")]
    Envelope(String),
    #[error(
        "the job's signature by key {key_id} does not verify: the job was changed after it was signed, or signed by another key"
    )]
    BadSignature { key_id: String },
    #[error("the job's signing key is not accepted: {0}")]
    Untrusted(#[from] TrustError),
    #[error("the job is not valid JSON for salve: {0}")]
    Payload(String),
    #[error("the job's {field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the job expired at {expires_at}; ask the agent for a fresh one")]
    Expired { expires_at: String },
    #[error("key {id} has role {role}; jobs are signed by a key with role agent")]
    NotAnAgentKey { id: String, role: Role },
}

/// A job as an agent asks for it. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "salve job request")]
pub struct JobRequest {
    /// Unique id the agent gives the job: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    pub playbook: PlaybookRef,
    pub target: Target,
    /// Parameters, checked against the playbook's parameter schema.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// What the job asks to touch; never more than the playbook declares.
    pub grant: GrantSpec,
    pub evidence: Evidence,
    /// A value the agent never uses twice: 16 to 128 of `A-Z a-z 0-9 . _ -`.
    pub nonce: String,
    /// When the job stops being valid (RFC 3339), at most 24 hours ahead.
    pub expires_at: String,
}

/// Which playbook: by name and version, or by artifact digest (or both,
/// which must agree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An exact semantic version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The artifact's SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Where the job acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub environment: String,
    /// The system being remediated.
    pub system: String,
}

/// Why the agent asks: what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub detector: String,
    pub alert_id: String,
    pub severity: Severity,
    /// How sure the detector is, from 0 to 1.
    pub confidence: f64,
    pub summary: String,
    /// SHA-256 (hex) of the telemetry the agent based the job on.
    pub telemetry_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The envelope: the request's exact bytes, and the agent's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedJob {
    /// The request's JSON bytes, base64.
    pub payload: String,
    /// Id of the agent key that signed.
    pub key_id: String,
    /// Ed25519 over `salve job v1\n` and the payload bytes, base64.
    pub signature: String,
}

/// A job whose envelope, key and request passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedJob {
    pub request: JobRequest,
    /// The agent key that signed it.
    pub agent: String,
    /// SHA-256 of the payload bytes, hex: what approvals are bound to.
    pub hash: String,
    pub envelope: SignedJob,
    pub expires_at: SystemTime,
}

fn is_token(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A short name (environment, system, detector, playbook): printable,
/// no spaces or quotes, at most 128 bytes.
fn is_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
}

impl JobRequest {
    /// Checks every field's shape, and that the job is valid at `now`.
    pub fn check(&self, now: SystemTime) -> Result<SystemTime, JobError> {
        let invalid = |field: &'static str, reason: &str| JobError::Invalid { field, reason: reason.to_string() };
        if !is_token(&self.id, 1, 64) {
            return Err(invalid("id", "must be 1 to 64 of A-Z a-z 0-9 . _ -"));
        }
        if !is_token(&self.nonce, 16, 128) {
            return Err(invalid("nonce", "must be 16 to 128 of A-Z a-z 0-9 . _ -"));
        }
        let PlaybookRef { name, version, digest } = &self.playbook;
        match (name, version, digest) {
            (Some(name), Some(version), _) => {
                if !is_name(name) {
                    return Err(invalid("playbook.name", "is not a playbook name"));
                }
                semver::Version::parse(version)
                    .map_err(|e| invalid("playbook.version", &format!("is not a semantic version: {e}")))?;
            }
            (None, None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "playbook",
                    "must give name and version, or digest (an exact artifact); a version range is not accepted",
                ));
            }
        }
        if digest.as_deref().is_some_and(|d| !is_hex64(d)) {
            return Err(invalid("playbook.digest", "must be 64 lowercase hex digits (SHA-256)"));
        }
        if !is_token(&self.target.environment, 1, 64) {
            return Err(invalid("target.environment", "must be 1 to 64 of A-Z a-z 0-9 . _ -"));
        }
        for (field, value) in [
            ("target.system", &self.target.system),
            ("evidence.detector", &self.evidence.detector),
            ("evidence.alert_id", &self.evidence.alert_id),
        ] {
            if !is_name(value) {
                return Err(invalid(field, "must be 1 to 128 printable characters, without spaces or quotes"));
            }
        }
        let confidence = self.evidence.confidence;
        if !(0.0..=1.0).contains(&confidence) {
            return Err(invalid("evidence.confidence", "must be a number from 0 to 1"));
        }
        if self.evidence.summary.len() > MAX_SUMMARY_BYTES {
            return Err(invalid("evidence.summary", &format!("is longer than {MAX_SUMMARY_BYTES} bytes")));
        }
        // Approvers read the evidence on a terminal: nothing in it may move
        // the cursor or start a line (detector and alert id are names, and
        // refused above if they hold anything but printable characters).
        if let Some((at, c)) = crate::text::first_control(&self.evidence.summary) {
            return Err(invalid(
                "evidence.summary",
                &format!(
                    "holds the control character {c:?} at byte {at}; send it without control characters or line breaks"
                ),
            ));
        }
        if !is_hex64(&self.evidence.telemetry_sha256) {
            return Err(invalid("evidence.telemetry_sha256", "must be 64 lowercase hex digits (SHA-256)"));
        }
        for key in self.parameters.keys() {
            if !is_token(key, 1, 64) {
                return Err(JobError::Invalid { field: "parameters", reason: format!("has a bad name {key:?}") });
            }
        }
        let expires_at = crate::time::Timestamp::parse_rfc3339_system(&self.expires_at)
            .map_err(|e| invalid("expires_at", &format!("is refused: {e}")))?;
        if expires_at <= now {
            return Err(JobError::Expired { expires_at: self.expires_at.clone() });
        }
        if expires_at > now + MAX_LIFETIME {
            return Err(invalid("expires_at", "is more than 24 hours ahead; jobs are short-lived"));
        }
        Ok(expires_at)
    }

    /// The detector's confidence in whole percent, rounded down (0.795 is
    /// 79, never 80), for the policy.
    pub fn confidence_percent(&self) -> i64 {
        (self.evidence.confidence * 100.0 + 1e-9).floor() as i64
    }

    /// Parameters in the order the runner hands them to the playbook.
    pub fn parameter_list(&self) -> Vec<(String, String)> {
        self.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(payload);
    message
}

impl SignedJob {
    /// Signs `request` with an agent key.
    pub fn sign(request: &JobRequest, key: &PrivateKey) -> Result<SignedJob, JobError> {
        if key.role != Role::Agent {
            return Err(JobError::NotAnAgentKey { id: key.id.clone(), role: key.role });
        }
        let payload = serde_json::to_vec(request).map_err(|e| JobError::Payload(e.to_string()))?;
        let signature = key.signing.sign(&signed_message(&payload));
        Ok(SignedJob {
            payload: BASE64.encode(&payload),
            key_id: key.id.clone(),
            signature: BASE64.encode(signature.to_bytes()),
        })
    }

    /// Parses an envelope; unknown fields are refused.
    pub fn parse(text: &str) -> Result<SignedJob, JobError> {
        serde_json::from_str(text).map_err(|e| JobError::Envelope(e.to_string()))
    }

    /// Checks, in order: the envelope's shape, that the key is a trusted
    /// agent key, the signature (`verify_strict`), the request's JSON
    /// (unknown fields refused), that the key is trusted for the job's
    /// environment, and every field of the request at `now`.
    pub fn verify(&self, trust: &TrustStore, now: SystemTime) -> Result<VerifiedJob, JobError> {
        if self.payload.len() > MAX_PAYLOAD_BYTES * 4 / 3 + 4 {
            return Err(JobError::Envelope(format!("the payload is larger than {MAX_PAYLOAD_BYTES} bytes")));
        }
        let (payload, _) = self.decoded()?;
        let key = trust.check_role(&self.key_id, Role::Agent, now)?;
        self.verify_with(&key.public)?;
        let request: JobRequest = serde_json::from_slice(&payload).map_err(|e| JobError::Payload(e.to_string()))?;
        trust.check(&self.key_id, Role::Agent, &request.target.environment, now)?;
        let expires_at = request.check(now)?;
        Ok(VerifiedJob {
            request,
            agent: self.key_id.clone(),
            hash: crate::host::digest(&payload),
            envelope: self.clone(),
            expires_at,
        })
    }
}

impl SignedJob {
    /// The request inside an envelope the runner accepted before, checked
    /// again: its payload must hash to `hash` (what the store recorded),
    /// its signature must verify, and its key must still be a trusted agent
    /// key for the job's environment at `at` (a revoked key is refused
    /// whatever `at` is). The job's expiry is not checked here.
    pub fn reopen(&self, trust: &TrustStore, hash: &str, at: SystemTime) -> Result<JobRequest, JobError> {
        let (payload, _) = self.decoded()?;
        if crate::host::digest(&payload) != hash {
            return Err(JobError::Envelope(format!(
                "the payload does not hash to {hash}, the job that was submitted: the stored job was changed"
            )));
        }
        let request: JobRequest = serde_json::from_slice(&payload).map_err(|e| JobError::Payload(e.to_string()))?;
        let key = trust.check(&self.key_id, Role::Agent, &request.target.environment, at)?;
        self.verify_with(&key.public)?;
        Ok(request)
    }

    /// The payload's bytes and the signature, decoded.
    fn decoded(&self) -> Result<(Vec<u8>, Signature), JobError> {
        let payload =
            BASE64.decode(&self.payload).map_err(|e| JobError::Envelope(format!("payload is not base64: {e}")))?;
        let signature: [u8; 64] = BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| JobError::Envelope("signature is not 64 bytes of base64".into()))?;
        Ok((payload, Signature::from_bytes(&signature)))
    }

    /// Checks the signature with `key` (`verify_strict`) and returns the
    /// payload's bytes. Whether `key` may sign jobs is the caller's to know.
    pub fn verify_with(&self, key: &ed25519_dalek::VerifyingKey) -> Result<Vec<u8>, JobError> {
        let (payload, signature) = self.decoded()?;
        key.verify_strict(&signed_message(&payload), &signature)
            .map_err(|_| JobError::BadSignature { key_id: self.key_id.clone() })?;
        Ok(payload)
    }
}

/// The JSON Schema of a job request.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(JobRequest)).expect("a schema is JSON")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::trust::{KeyEntry, TrustFile};

    pub(crate) fn request(now: SystemTime) -> JobRequest {
        JobRequest {
            id: "job-8812".into(),
            playbook: PlaybookRef {
                name: Some("nginx-upstream-repair".into()),
                version: Some("1.2.0".into()),
                digest: None,
            },
            target: Target { environment: "prod".into(), system: "web-3".into() },
            parameters: BTreeMap::from([("upstream".into(), "app".into())]),
            grant: GrantSpec::default(),
            evidence: Evidence {
                detector: "latency-slo".into(),
                alert_id: "8812".into(),
                severity: Severity::High,
                confidence: 0.92,
                summary: "p99 latency above 2s on web-3 for 10 minutes".into(),
                telemetry_sha256: "a".repeat(64),
            },
            nonce: "0123456789abcdef".into(),
            expires_at: humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
        }
    }

    fn trust(keys: &[(&PrivateKey, &[&str])]) -> TrustStore {
        let until = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(86_400)).to_string();
        TrustStore::from_file(TrustFile {
            keys: keys
                .iter()
                .map(|(k, envs)| {
                    KeyEntry::new(&k.public(), envs.iter().map(|e| e.to_string()).collect(), until.clone())
                })
                .collect(),
            revoked: vec![],
            signatures: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_signed_job_verifies_and_every_tampering_is_refused() {
        let now = SystemTime::now();
        let agent = PrivateKey::from_seed("agent", Role::Agent, [1; 32]);
        let approver = PrivateKey::from_seed("approver", Role::Approver, [2; 32]);
        let stranger = PrivateKey::from_seed("stranger", Role::Agent, [3; 32]);
        let trust = trust(&[(&agent, &["prod"]), (&approver, &["*"])]);
        let signed = SignedJob::sign(&request(now), &agent).unwrap();
        let verified = signed.verify(&trust, now).unwrap();
        assert_eq!(verified.agent, agent.id);
        assert_eq!(verified.hash.len(), 64);

        // A changed payload.
        let mut changed = request(now);
        changed.target.system = "web-4".into();
        let forged = SignedJob { payload: BASE64.encode(serde_json::to_vec(&changed).unwrap()), ..signed.clone() };
        assert!(matches!(forged.verify(&trust, now), Err(JobError::BadSignature { .. })));
        // Another key's signature under this key's id.
        let other = SignedJob::sign(&request(now), &stranger).unwrap();
        let swapped = SignedJob { signature: other.signature.clone(), ..signed.clone() };
        assert!(matches!(swapped.verify(&trust, now), Err(JobError::BadSignature { .. })));
        // An unknown key.
        assert!(matches!(other.verify(&trust, now), Err(JobError::Untrusted(TrustError::UnknownKey { .. }))));
        // The wrong role: an approver cannot sign jobs, even with a forged envelope.
        assert!(matches!(SignedJob::sign(&request(now), &approver), Err(JobError::NotAnAgentKey { .. })));
        let payload = serde_json::to_vec(&request(now)).unwrap();
        let by_approver = SignedJob {
            payload: BASE64.encode(&payload),
            key_id: approver.id.clone(),
            signature: BASE64.encode(approver.signing.sign(&signed_message(&payload)).to_bytes()),
        };
        assert!(matches!(by_approver.verify(&trust, now), Err(JobError::Untrusted(TrustError::WrongRole { .. }))));
        // Not trusted for the environment.
        let mut staging = request(now);
        staging.target.environment = "staging".into();
        let staging = SignedJob::sign(&staging, &agent).unwrap();
        assert!(matches!(staging.verify(&trust, now), Err(JobError::Untrusted(TrustError::NotForEnvironment { .. }))));
        // Expired, and too far ahead.
        assert!(matches!(signed.verify(&trust, now + Duration::from_secs(7200)), Err(JobError::Expired { .. })));
        let mut long = request(now);
        long.expires_at = humantime::format_rfc3339_seconds(now + Duration::from_secs(3 * 86_400)).to_string();
        let long = SignedJob::sign(&long, &agent).unwrap();
        assert!(matches!(long.verify(&trust, now), Err(JobError::Invalid { field: "expires_at", .. })));
        // Unknown fields, in the payload and in the envelope.
        let mut value = serde_json::to_value(request(now)).unwrap();
        value["evidence"]["extra"] = serde_json::json!(1);
        let payload = serde_json::to_vec(&value).unwrap();
        let unknown = SignedJob {
            payload: BASE64.encode(&payload),
            key_id: agent.id.clone(),
            signature: BASE64.encode(agent.signing.sign(&signed_message(&payload)).to_bytes()),
        };
        assert!(matches!(unknown.verify(&trust, now), Err(JobError::Payload(m)) if m.contains("extra")));
        let text = serde_json::to_string(&signed).unwrap().replace("\"key_id\"", "\"extra\":1,\"key_id\"");
        assert!(matches!(SignedJob::parse(&text), Err(JobError::Envelope(_))));
    }

    #[test]
    fn bad_fields_name_what_is_wrong() {
        let now = SystemTime::now();
        type Change = Box<dyn Fn(&mut JobRequest)>;
        let cases: Vec<(&str, Change)> = vec![
            ("id", Box::new(|r| r.id = "has space".into())),
            ("nonce", Box::new(|r| r.nonce = "short".into())),
            ("playbook", Box::new(|r| r.playbook.version = None)),
            ("playbook.version", Box::new(|r| r.playbook.version = Some("^1.2".into()))),
            ("playbook.digest", Box::new(|r| r.playbook.digest = Some("XYZ".into()))),
            ("target.system", Box::new(|r| r.target.system = "".into())),
            ("target.environment", Box::new(|r| r.target.environment = "*".into())),
            ("evidence.confidence", Box::new(|r| r.evidence.confidence = 1.5)),
            ("evidence.telemetry_sha256", Box::new(|r| r.evidence.telemetry_sha256 = "abc".into())),
            ("parameters", Box::new(|r| drop(r.parameters.insert("a b".into(), "x".into())))),
            ("expires_at", Box::new(|r| r.expires_at = "tomorrow".into())),
        ];
        for (field, change) in cases {
            let mut request = request(now);
            change(&mut request);
            match request.check(now) {
                Err(JobError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert_eq!(request(now).confidence_percent(), 92);
        let mut almost = request(now);
        almost.evidence.confidence = 0.795;
        assert_eq!(almost.confidence_percent(), 79);
        almost.evidence.confidence = 0.8;
        assert_eq!(almost.confidence_percent(), 80);
    }
}
