//! Evidence bundles: one file with everything an auditor needs about one
//! job, verifiable offline with no data directory.
//!
//! A bundle is a ustar archive ([`tar`]) of:
//! - `salve-evidence.json`: the format, the job, when it was exported, the
//!   runner key that signed the checkpoint;
//! - `records.jsonl`: the job's audit records, byte for byte as in the log,
//!   and `proofs.json`: an RFC 9162 inclusion proof for each against
//!   `checkpoint.txt`, the log's signed checkpoint (a C2SP signed note);
//! - `envelope.json`: the agent's signed job;
//! - `artifact.json`: the playbook's digest, manifest, component hash and
//!   signatures (and `artifact.wasm`, the artifact itself, on request);
//! - `keys.json`: the trust-store entries of every key involved (runner,
//!   agent, approvers, authors);
//! - `policies/HASH.cedar`: the text of every policy a decision was made
//!   with;
//! - `job.json`: the job as the store holds it (state, outcome, history,
//!   votes, lease ids; never a credential's value).
//!
//! The records carry what the control plane did (the submission, each
//! decision with its facts, the plans, every vote with its signature, the
//! approvals that counted, the leases) and what the playbook did (every
//! host call): the proofs bind them to the runner's signature, and each
//! record's `job_prev` links it to the job's record before it, so none can
//! be left out unseen. [`verify`] checks all of it; [`report`] shows a
//! bundle that verified to people, as one HTML page.

pub mod report;
pub mod tar;
mod verify;

pub use verify::{Check, Refused, Verified, verify};

use crate::audit::merkle::{self, MemoryTree};
use crate::control::ControlPlane;
use crate::store::StoreError;
use crate::trust::KeyEntry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};

/// What `salve-evidence.json` says a bundle is.
pub const FORMAT: &str = "salve evidence v1";
pub const INDEX: &str = "salve-evidence.json";
pub const RECORDS: &str = "records.jsonl";
pub const PROOFS: &str = "proofs.json";
pub const CHECKPOINT: &str = "checkpoint.txt";
pub const ENVELOPE: &str = "envelope.json";
pub const ARTIFACT: &str = "artifact.json";
pub const ARTIFACT_WASM: &str = "artifact.wasm";
pub const KEYS: &str = "keys.json";
pub const JOB: &str = "job.json";
pub const POLICIES: &str = "policies/";

/// The most a bundle may hold, in bytes: far more than any job's records
/// and artifact, and small enough to read into memory.
pub const MAX_BUNDLE: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no job {id} in the job store; `salve jobs list` shows the jobs (a `salve run` job has audit records only: `salve audit show --job {id}`)"
    )]
    UnknownJob { id: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "the audit log {path} has no signed checkpoint yet: one is written after each job's outcome and when the \
         runner stops; run `salve worker` once, or wait for it"
    )]
    NoCheckpoint { path: PathBuf },
    #[error(
        "record {seq} of job {job} is past the latest signed checkpoint (it covers {size} records): the job is still \
         going on, or its runner has not checkpointed yet; try again once it has (after the job's outcome, or when \
         the runner stops)"
    )]
    NotCheckpointed { job: String, seq: u64, size: u64 },
    #[error("the audit log does not match its signed checkpoint: {reason}; `salve audit verify` says more")]
    LogMismatch { reason: String },
    #[error("the audit log holds no record of job {job}")]
    NoRecords { job: String },
    #[error("key {id} ({what}) is not in the trust store, so its public key cannot go into the bundle")]
    MissingKey { id: String, what: String },
    #[error(
        "the text of policy {hash}, which decided on the job, is not kept in {dir} (salve keeps each policy it \
         loads there); put that policy text there as HASH.cedar"
    )]
    MissingPolicy { hash: String, dir: PathBuf },
    #[error("the job's artifact {path}: {reason}")]
    Artifact { path: PathBuf, reason: String },
}

impl crate::fault::Classify for EvidenceError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            EvidenceError::Store(e) => e.fault(),
            EvidenceError::Read { .. } => Fault::Infrastructure,
            EvidenceError::UnknownJob { .. } => Fault::Input,
            EvidenceError::NoCheckpoint { .. }
            | EvidenceError::NotCheckpointed { .. }
            | EvidenceError::NoRecords { .. }
            | EvidenceError::MissingKey { .. }
            | EvidenceError::MissingPolicy { .. } => Fault::Refused,
            EvidenceError::LogMismatch { .. } | EvidenceError::Artifact { .. } => Fault::Tampered,
        }
    }
}

/// What a bundle's index says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: String,
    pub job: String,
    pub exported_at: String,
    /// The runner key that signed the checkpoint.
    pub runner_key: String,
}

/// `proofs.json`: the tree size the proofs are against, and one proof per
/// record, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proofs {
    pub size: u64,
    pub proofs: Vec<Proof>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub seq: u64,
    /// The inclusion proof's hashes, hex.
    pub path: Vec<String>,
}

/// `artifact.json`: what was run and who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactFacts {
    /// SHA-256 of the whole artifact: how jobs and records name it.
    pub digest: String,
    /// SHA-256 of the component without salve's sections: what signatures sign.
    pub component_sha256: String,
    pub manifest: String,
    pub signatures: Vec<ArtifactSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSignature {
    pub key_id: String,
    /// Ed25519, hex.
    pub signature: String,
}

impl ArtifactFacts {
    fn of(artifact: &crate::artifact::Artifact<'_>) -> ArtifactFacts {
        ArtifactFacts {
            digest: crate::artifact::digest(artifact.bytes),
            component_sha256: crate::host::digest(artifact.component),
            manifest: artifact.manifest_text.to_string(),
            signatures: artifact
                .signatures
                .iter()
                .map(|s| ArtifactSignature { key_id: s.key_id.clone(), signature: hex::encode(s.signature) })
                .collect(),
        }
    }
}

/// Writes the evidence bundle of job `id` from a control plane's data
/// directory, store and trust store; with the artifact's bytes if
/// `with_artifact`. Reads only: the log, the store and the files stay as
/// they are.
pub fn export(control: &ControlPlane, id: &str, with_artifact: bool) -> Result<Vec<u8>, EvidenceError> {
    let layout = control.layout();
    let store = control.store.as_ref();
    let job = store.job(id)?.ok_or_else(|| EvidenceError::UnknownJob { id: id.into() })?;
    let trust = &control.trust;
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| EvidenceError::Read { path, reason: e.to_string() }
    };

    // The checkpoint first, then the log up to it: records appended
    // meanwhile are past it.
    let head_path = layout.audit_head();
    let head = std::fs::read_to_string(&head_path).map_err(read_err(&head_path))?;
    let log_path = layout.audit_log();
    let note = crate::audit::checkpoint_note(&head)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| EvidenceError::NoCheckpoint { path: log_path.clone() })?
        .to_string();
    let (checkpoint, _) = crate::audit::checkpoint::Checkpoint::parse_unverified(note.as_bytes())
        .map_err(|e| EvidenceError::LogMismatch { reason: format!("its checkpoint does not parse: {e}") })?;
    let runner_key = checkpoint
        .origin
        .strip_prefix(crate::audit::checkpoint_origin("").as_str())
        .ok_or_else(|| EvidenceError::LogMismatch { reason: format!("checkpoint origin {:?}", checkpoint.origin) })?
        .to_string();
    let file = std::fs::File::open(&log_path).map_err(read_err(&log_path))?;
    let mut leaves = Vec::new();
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(read_err(&log_path))?;
        let seq = leaves.len() as u64 + 1;
        if crate::audit::record_job(&line).is_some_and(|job| job == id) {
            if seq > checkpoint.size {
                return Err(EvidenceError::NotCheckpointed { job: id.into(), seq, size: checkpoint.size });
            }
            records.push((seq, line.clone()));
        }
        if seq <= checkpoint.size {
            leaves.push(merkle::leaf_hash(&line));
        }
    }
    if (leaves.len() as u64) < checkpoint.size {
        let reason = format!("it holds {} records; the checkpoint covers {}", leaves.len(), checkpoint.size);
        return Err(EvidenceError::LogMismatch { reason });
    }
    let tree = MemoryTree::from_leaves(&leaves);
    if tree.root() != checkpoint.root {
        let reason = format!("its first {} records do not hash to the checkpoint's root", checkpoint.size);
        return Err(EvidenceError::LogMismatch { reason });
    }
    if records.is_empty() {
        return Err(EvidenceError::NoRecords { job: id.into() });
    }
    let mut proofs = Vec::with_capacity(records.len());
    for (seq, _) in &records {
        let path = merkle::inclusion_proof(&tree, seq - 1, checkpoint.size)
            .map_err(|e| EvidenceError::LogMismatch { reason: e.to_string() })?;
        proofs.push(Proof { seq: *seq, path: path.iter().map(hex::encode).collect() });
    }
    let parsed: Vec<Value> = records.iter().filter_map(|(_, line)| serde_json::from_slice(line).ok()).collect();

    // Every key the records, the envelope and the artifact name.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    wanted.insert(runner_key.clone(), "the runner key that signed the checkpoint".into());
    wanted.insert(job.envelope.key_id.clone(), "the agent key that signed the job".into());
    for record in &parsed {
        match (record["kind"].as_str(), record["action"].as_str()) {
            (Some("seal"), _) => {
                if let Some(key) = record["key_id"].as_str() {
                    wanted.entry(key.into()).or_insert_with(|| "a runner key that sealed the job".into());
                }
            }
            (Some("control"), Some("approve" | "reject")) => {
                if let Some(key) = record["detail"]["approval"]["key_id"].as_str() {
                    wanted.entry(key.into()).or_insert_with(|| "an approver key that voted".into());
                }
            }
            _ => {}
        }
    }
    let artifact_path = layout.artifacts().join(format!("{}.wasm", job.digest));
    let artifact_bytes = std::fs::read(&artifact_path)
        .map_err(|e| EvidenceError::Artifact { path: artifact_path.clone(), reason: e.to_string() })?;
    let artifact = crate::artifact::Artifact::parse(&artifact_bytes)
        .map_err(|e| EvidenceError::Artifact { path: artifact_path.clone(), reason: e.to_string() })?;
    let facts = ArtifactFacts::of(&artifact);
    if facts.digest != job.digest {
        let reason = format!("it hashes to {}, not {}: it was changed", facts.digest, job.digest);
        return Err(EvidenceError::Artifact { path: artifact_path, reason });
    }
    for signature in &facts.signatures {
        wanted.entry(signature.key_id.clone()).or_insert_with(|| "an author key that signed the playbook".into());
    }
    let mut keys: Vec<KeyEntry> = Vec::new();
    for (id, what) in wanted {
        let key = trust.key(&id).ok_or_else(|| EvidenceError::MissingKey { id: id.clone(), what })?;
        keys.push(key.entry.clone());
    }

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let policies = layout.policies();
    for record in &parsed {
        if record["kind"] != "control" || record["action"] != "decision" {
            continue;
        }
        let Some(hash) = record["detail"]["decision"]["policy_hash"].as_str() else { continue };
        let name = format!("{POLICIES}{hash}.cedar");
        if files.contains_key(&name) {
            continue;
        }
        let current =
            std::fs::read_to_string(layout.policy()).ok().filter(|text| crate::host::digest(text.as_bytes()) == hash);
        let text = crate::policy::kept(&policies, hash)
            .or(current)
            .ok_or_else(|| EvidenceError::MissingPolicy { hash: hash.into(), dir: policies.clone() })?;
        files.insert(name, text.into_bytes());
    }

    let index = Index {
        format: FORMAT.into(),
        job: id.into(),
        exported_at: crate::time::Timestamp::now().to_string(),
        runner_key,
    };
    files.insert(INDEX.into(), pretty(&index));
    let mut lines = Vec::new();
    for (_, line) in &records {
        lines.extend_from_slice(line);
        lines.push(b'\n');
    }
    files.insert(RECORDS.into(), lines);
    files.insert(PROOFS.into(), pretty(&Proofs { size: checkpoint.size, proofs }));
    files.insert(CHECKPOINT.into(), note.into_bytes());
    files.insert(ENVELOPE.into(), pretty(&job.envelope));
    files.insert(ARTIFACT.into(), pretty(&facts));
    if with_artifact {
        files.insert(ARTIFACT_WASM.into(), artifact_bytes.clone());
    }
    files.insert(KEYS.into(), pretty(&keys));
    let view = json!({
        "id": job.id,
        "state": job.state,
        "outcome": job.outcome,
        "plan_hash": job.plan_hash,
        "history": store.history(id)?,
        "votes": store.approvals(id)?,
        "leases": store.leases(id)?,
    });
    files.insert(JOB.into(), pretty(&view));
    Ok(tar::write(&files))
}

/// Pretty JSON, newline-terminated.
fn pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializable");
    bytes.push(b'\n');
    bytes
}
