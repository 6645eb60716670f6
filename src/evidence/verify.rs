//! `salve evidence verify`: every check of a bundle, offline.
//!
//! Trust starts at the runner key: the one given (`--runner-key`), or the
//! one the bundle names (then the report says so, for the auditor to
//! compare with the runner's). The checkpoint must verify with it; each
//! record must be included in the checkpoint's tree; the records must link
//! up (`job_prev`) with none left out. What the records say is then
//! authentic, and the rest is checked against it: the envelope's and every
//! vote's signatures with the keys whose ids the records name, the
//! artifact's signatures and digest, each policy decision recomputed with
//! Cedar from the bundled policy text and the recorded facts, each plan's
//! hash, the approvals that let the job run bound to the plan that ran, and
//! the state the store reports.

use super::{
    ARTIFACT, ARTIFACT_WASM, ArtifactFacts, CHECKPOINT, ENVELOPE, FORMAT, INDEX, JOB, KEYS, MAX_BUNDLE, POLICIES,
    PROOFS, Proofs, RECORDS, tar,
};
use crate::approval::{Approval, Vote};
use crate::audit::checkpoint::{Checkpoint, Verifier};
use crate::audit::merkle::{self, Hash};
use crate::job::{JobRequest, SignedJob};
use crate::keys::{Role, decode_public, key_id};
use crate::policy::{Facts, Policy};
use crate::trust::KeyEntry;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The archive and its files.
    Bundle,
    /// Each bundled key's id is its public key's.
    Keys,
    /// The runner key: the one given, and the one that signed.
    RunnerKey,
    /// The signed checkpoint.
    Checkpoint,
    /// Each record's own hash, job and order.
    Records,
    /// Each record's inclusion proof.
    Inclusion,
    /// The job's records link up, none left out.
    Completeness,
    /// Each seal's signature.
    Seals,
    /// The agent's signed job.
    Envelope,
    /// The artifact's digest and signatures.
    Artifact,
    /// Each decision, recomputed.
    Policy,
    /// Each plan's hash.
    Plan,
    /// Each vote's signature, and the approvals that let the job run.
    Approvals,
    /// The state the store reports, against the records.
    Outcome,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Bundle => "bundle",
            Check::Keys => "keys",
            Check::RunnerKey => "runner-key",
            Check::Checkpoint => "checkpoint",
            Check::Records => "records",
            Check::Inclusion => "inclusion",
            Check::Completeness => "completeness",
            Check::Seals => "seals",
            Check::Envelope => "envelope",
            Check::Artifact => "artifact",
            Check::Policy => "policy",
            Check::Plan => "plan",
            Check::Approvals => "approvals",
            Check::Outcome => "outcome",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A bundle refused: the check that failed, and what it found.
#[derive(Debug, thiserror::Error)]
#[error("the {check} check failed: {reason}")]
pub struct Refused {
    pub check: Check,
    pub reason: String,
}

fn refuse<T>(check: Check, reason: impl Into<String>) -> Result<T, Refused> {
    Err(Refused { check, reason: reason.into() })
}

/// A bundle that verified, and what it holds.
#[derive(Debug, Clone)]
pub struct Verified {
    pub job: String,
    pub exported_at: String,
    /// The runner key the checkpoint verified with.
    pub runner_key: String,
    /// Whether that key was given by the caller (not taken from the bundle).
    pub runner_key_pinned: bool,
    pub checkpoint_size: u64,
    /// The job's records, parsed, in order.
    pub records: Vec<Value>,
    /// The request the agent signed.
    pub request: Value,
    pub artifact: ArtifactFacts,
    /// Whether the artifact's own bytes were in the bundle and checked.
    pub artifact_checked: bool,
    pub keys: Vec<KeyEntry>,
    /// `job.json`: the job as the store held it.
    pub job_view: Value,
    /// The state the records end in.
    pub state: String,
    pub decisions: usize,
    pub votes: usize,
    pub seals: usize,
    /// What the checks could not show, said plainly.
    pub caveats: Vec<String>,
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T, Refused> {
    serde_json::from_slice(bytes).or_else(|e| refuse(Check::Bundle, format!("{name} does not parse: {e}")))
}

fn signature(hex_text: &str) -> Option<Signature> {
    let bytes: [u8; 64] = hex::decode(hex_text).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// The keys a bundle carries, by id, each checked against its id.
struct Keys(HashMap<String, (KeyEntry, VerifyingKey)>);

impl Keys {
    fn new(entries: &[KeyEntry]) -> Result<Keys, Refused> {
        let mut keys = HashMap::new();
        for entry in entries {
            let public =
                decode_public(&entry.public_key).or_else(|e| refuse(Check::Keys, format!("key {}: {e}", entry.id)))?;
            let actual = key_id(&public);
            if actual != entry.id {
                return refuse(Check::Keys, format!("key {} holds the public key of {actual}", entry.id));
            }
            if keys.insert(entry.id.clone(), (entry.clone(), public)).is_some() {
                return refuse(Check::Keys, format!("key {} is listed twice", entry.id));
            }
        }
        Ok(Keys(keys))
    }

    /// The public key `id`, which must have `role`.
    fn get(&self, id: &str, role: Role, check: Check, what: &str) -> Result<&VerifyingKey, Refused> {
        match self.0.get(id) {
            None => refuse(check, format!("{what} {id} is not among the bundle's keys")),
            Some((entry, _)) if entry.role != role => {
                refuse(check, format!("{what} {id} has role {}, not {role}", entry.role))
            }
            Some((_, public)) => Ok(public),
        }
    }
}

/// Verifies a bundle; `pinned` is the runner's public key, if the caller
/// has it. The first check that fails refuses the bundle.
pub fn verify(bytes: &[u8], pinned: Option<&crate::keys::PublicKeyFile>) -> Result<Verified, Refused> {
    if bytes.len() > MAX_BUNDLE {
        return refuse(
            Check::Bundle,
            format!("it is {} bytes, more than the {MAX_BUNDLE} a bundle may be", bytes.len()),
        );
    }
    let mut files = tar::read(bytes).or_else(|e| refuse(Check::Bundle, format!("not an archive salve writes: {e}")))?;
    let mut take = |name: &str| {
        files.remove(name).ok_or_else(|| Refused { check: Check::Bundle, reason: format!("{name} is missing") })
    };
    let index: super::Index = json(&take(INDEX)?, INDEX)?;
    if index.format != FORMAT {
        return refuse(Check::Bundle, format!("{INDEX} says format {:?}; this salve reads {FORMAT:?}", index.format));
    }
    let records_bytes = take(RECORDS)?;
    let proofs: Proofs = json(&take(PROOFS)?, PROOFS)?;
    let note = String::from_utf8(take(CHECKPOINT)?)
        .or_else(|_| refuse(Check::Bundle, format!("{CHECKPOINT} is not UTF-8")))?;
    let envelope: SignedJob = json(&take(ENVELOPE)?, ENVELOPE)?;
    let artifact: ArtifactFacts = json(&take(ARTIFACT)?, ARTIFACT)?;
    let entries: Vec<KeyEntry> = json(&take(KEYS)?, KEYS)?;
    let job_view: Value = json(&take(JOB)?, JOB)?;
    let wasm = files.remove(ARTIFACT_WASM);
    let mut policies: BTreeMap<String, String> = BTreeMap::new();
    for (name, text) in files {
        let Some(hash) = name.strip_prefix(POLICIES).and_then(|n| n.strip_suffix(".cedar")) else {
            return refuse(Check::Bundle, format!("{name} is not a file a bundle holds"));
        };
        let text = String::from_utf8(text).or_else(|_| refuse(Check::Bundle, format!("{name} is not UTF-8")))?;
        if crate::host::digest(text.as_bytes()) != hash {
            return refuse(Check::Policy, format!("{name} does not hash to {hash}: the policy text was changed"));
        }
        policies.insert(hash.to_string(), text);
    }
    let job = index.job.as_str();
    let mut caveats = Vec::new();

    let keys = Keys::new(&entries)?;
    let runner = match pinned {
        Some(given) => {
            let public = decode_public(&given.public_key)
                .or_else(|e| refuse(Check::RunnerKey, format!("the key given: {e}")))?;
            if given.role != Role::Runner || key_id(&public) != given.id {
                return refuse(
                    Check::RunnerKey,
                    format!("the key given ({}) is not a runner's public key file", given.id),
                );
            }
            if given.id != index.runner_key {
                return refuse(
                    Check::RunnerKey,
                    format!(
                        "the checkpoint is signed by runner key {}, not by {} (the key given)",
                        index.runner_key, given.id
                    ),
                );
            }
            public
        }
        None => {
            caveats.push(format!(
                "the runner key {} was taken from the bundle: compare it with the runner's (`--runner-key RUNNER.pub`)",
                index.runner_key
            ));
            *keys.get(&index.runner_key, Role::Runner, Check::RunnerKey, "runner key")?
        }
    };
    if let Some((_, bundled)) = keys.0.get(&index.runner_key)
        && *bundled != runner
    {
        return refuse(Check::RunnerKey, format!("the bundle's key {} is not the key given", index.runner_key));
    }

    let verifier = Verifier::new(&index.runner_key, runner).or_else(|e| refuse(Check::Checkpoint, e.to_string()))?;
    let origin = crate::audit::checkpoint_origin(&index.runner_key);
    let (checkpoint, _) = Checkpoint::open(note.as_bytes(), &origin, &[verifier]).or_else(|e| {
        refuse(Check::Checkpoint, format!("it does not verify with runner key {}: {e}", index.runner_key))
    })?;
    if checkpoint.size != proofs.size {
        return refuse(
            Check::Checkpoint,
            format!(
                "the proofs are against a tree of {} records; the checkpoint's has {}",
                proofs.size, checkpoint.size
            ),
        );
    }

    // The records: each one's own hash, this job's, in order, each proven.
    let Some(body) = records_bytes.strip_suffix(b"\n") else {
        return refuse(Check::Records, format!("{RECORDS} is empty or does not end with a newline"));
    };
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.len() != proofs.proofs.len() {
        return refuse(Check::Inclusion, format!("{} records but {} proofs", lines.len(), proofs.proofs.len()));
    }
    let mut records: Vec<Value> = Vec::with_capacity(lines.len());
    let mut hashes: Vec<String> = Vec::with_capacity(lines.len());
    let mut last_seq = 0;
    for (line, proof) in lines.iter().zip(&proofs.proofs) {
        let head = crate::audit::parse_record_head(line)
            .or_else(|e| refuse(Check::Records, format!("the record after {last_seq}: {e}")))?;
        let record: Value =
            serde_json::from_slice(line).or_else(|e| refuse(Check::Records, format!("record {}: {e}", head.seq)))?;
        if record["job"] != job {
            return refuse(Check::Records, format!("record {} is not job {job}'s", head.seq));
        }
        if head.seq <= last_seq || head.seq != proof.seq {
            return refuse(Check::Records, format!("record {} is out of order, or its proof is another's", head.seq));
        }
        let path: Option<Vec<Hash>> =
            proof.path.iter().map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok())).collect();
        let path = path.ok_or_else(|| Refused {
            check: Check::Inclusion,
            reason: format!("record {}'s proof is not hex hashes", head.seq),
        })?;
        merkle::verify_inclusion(&merkle::leaf_hash(line), head.seq - 1, checkpoint.size, &path, &checkpoint.root)
            .or_else(|e| {
                refuse(Check::Inclusion, format!("record {} is not in the log the checkpoint signs: {e}", head.seq))
            })?;
        last_seq = head.seq;
        hashes.push(head.hash);
        records.push(record);
    }

    // None left out: each record names the job's record before it.
    let mut linked = false;
    for (i, record) in records.iter().enumerate() {
        let seq = &record["seq"];
        match (record["job_prev"].as_str(), i.checked_sub(1)) {
            (Some(_), None) => {
                return refuse(
                    Check::Completeness,
                    format!("record {seq}, the first in the bundle, follows a record of the job that is not there"),
                );
            }
            (Some(prev), Some(before)) if prev != hashes[before] => {
                return refuse(
                    Check::Completeness,
                    format!(
                        "record {seq} follows a record of the job that is not in the bundle (after record {})",
                        records[before]["seq"]
                    ),
                );
            }
            (Some(_), Some(_)) => linked = true,
            (None, Some(_)) if linked => {
                return refuse(Check::Completeness, format!("record {seq} does not name the job's record before it"));
            }
            (None, _) => {}
        }
    }
    if !linked && records.len() > 1 {
        caveats.push(
            "the records were written by a salve that did not link a job's records: that none is missing cannot be shown"
                .into(),
        );
    }

    let kind = |r: &Value| r["kind"].as_str().unwrap_or_default().to_string();
    let action = |r: &Value| r["action"].as_str().unwrap_or_default().to_string();
    let mut seals = 0;
    for record in records.iter().filter(|r| kind(r) == "seal") {
        let seq = &record["seq"];
        let key =
            keys.get(record["key_id"].as_str().unwrap_or_default(), Role::Runner, Check::Seals, "the sealing key")?;
        let message = crate::audit::seal_message(job, record["prev"].as_str().unwrap_or_default());
        let valid =
            record["signature"].as_str().and_then(signature).is_some_and(|s| key.verify_strict(&message, &s).is_ok());
        if !valid {
            return refuse(Check::Seals, format!("the seal at record {seq} does not verify"));
        }
        seals += 1;
    }

    // The agent's job: the one the submission record names.
    let Some(submitted) = records.iter().find(|r| kind(r) == "control" && action(r) == "submitted") else {
        return refuse(Check::Envelope, "no record of the job's submission is in the bundle");
    };
    let submitted = &submitted["detail"];
    if submitted["agent"] != envelope.key_id.as_str() {
        return refuse(
            Check::Envelope,
            format!("signed by {}, but the submission record names agent {}", envelope.key_id, submitted["agent"]),
        );
    }
    let agent = keys.get(&envelope.key_id, Role::Agent, Check::Envelope, "the agent key")?;
    let payload = envelope.verify_with(agent).or_else(|e| refuse(Check::Envelope, e.to_string()))?;
    let job_hash = crate::host::digest(&payload);
    if submitted["job_hash"] != job_hash.as_str() {
        return refuse(
            Check::Envelope,
            format!("its payload hashes to {job_hash}, not to the job hash recorded at submission"),
        );
    }
    let request: JobRequest =
        serde_json::from_slice(&payload).or_else(|e| refuse(Check::Envelope, format!("the request: {e}")))?;
    if request.id != job {
        return refuse(Check::Envelope, format!("the signed request is job {}, not {job}", request.id));
    }
    let request = serde_json::to_value(&request).unwrap_or_default();

    // The artifact: the one recorded, signed by its authors.
    for record in records.iter().filter(|r| kind(r) == "job").chain([&Value::Null]) {
        let named = if record.is_null() { &submitted["digest"] } else { &record["digest"] };
        if named != artifact.digest.as_str() {
            return refuse(
                Check::Artifact,
                format!("the records name artifact {named}; {ARTIFACT} is {}", artifact.digest),
            );
        }
    }
    let component: [u8; 32] = hex::decode(&artifact.component_sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Refused { check: Check::Artifact, reason: "component_sha256 is not a SHA-256".into() })?;
    if artifact.signatures.is_empty() {
        return refuse(Check::Artifact, "the artifact carries no signature");
    }
    let message = crate::artifact::signed_message_of(&component, &artifact.manifest);
    for signed in &artifact.signatures {
        let key = keys.get(&signed.key_id, Role::Author, Check::Artifact, "the signing key")?;
        if signature(&signed.signature).is_none_or(|s| key.verify_strict(&message, &s).is_err()) {
            return refuse(Check::Artifact, format!("the signature by {} does not verify", signed.key_id));
        }
    }
    let manifest: toml::Value = toml::from_str(&artifact.manifest)
        .or_else(|e| refuse(Check::Artifact, format!("the manifest does not parse: {e}")))?;
    if manifest.get("name").and_then(|n| n.as_str()) != submitted["playbook"].as_str()
        || manifest.get("version").and_then(|v| v.as_str()) != submitted["version"].as_str()
    {
        return refuse(Check::Artifact, "the manifest is not the playbook and version the job names");
    }
    let artifact_checked = match &wasm {
        Some(bytes) => {
            if crate::artifact::digest(bytes) != artifact.digest {
                return refuse(Check::Artifact, format!("{ARTIFACT_WASM} does not hash to {}", artifact.digest));
            }
            let parsed = crate::artifact::Artifact::parse(bytes).or_else(|e| refuse(Check::Artifact, e.to_string()))?;
            if ArtifactFacts::of(&parsed) != artifact {
                return refuse(Check::Artifact, format!("{ARTIFACT_WASM} is not what {ARTIFACT} describes"));
            }
            true
        }
        None => {
            caveats.push(format!(
                "the artifact's bytes are not in the bundle (export with --with-artifact): its signatures verify, \
                 but that its digest is {} is the records' word",
                artifact.digest
            ));
            false
        }
    };

    // Each decision, recomputed from its policy and facts.
    let mut parsed_policies: HashMap<&str, Policy> = HashMap::new();
    let mut decisions = 0;
    for record in records.iter().filter(|r| kind(r) == "control" && action(r) == "decision") {
        let (seq, detail) = (&record["seq"], &record["detail"]);
        let hash = detail["decision"]["policy_hash"].as_str().unwrap_or_default();
        let Some(text) = policies.get(hash) else {
            return refuse(
                Check::Policy,
                format!("the policy {hash} that decided at record {seq} is not in the bundle"),
            );
        };
        if !parsed_policies.contains_key(hash) {
            let policy = Policy::parse(text).or_else(|e| refuse(Check::Policy, format!("policy {hash}: {e}")))?;
            parsed_policies.insert(hash, policy);
        }
        let facts: Facts = serde_json::from_value(detail["facts"].clone())
            .or_else(|e| refuse(Check::Policy, format!("the facts at record {seq}: {e}")))?;
        let recomputed = serde_json::to_value(parsed_policies[hash].decide(&facts)).unwrap_or_default();
        if recomputed != detail["decision"] {
            return refuse(
                Check::Policy,
                format!(
                    "record {seq} says the policy decided {}; on those facts it decides {recomputed}",
                    detail["decision"]
                ),
            );
        }
        decisions += 1;
    }
    for hash in policies.keys() {
        if !parsed_policies.contains_key(hash.as_str()) {
            return refuse(Check::Bundle, format!("{POLICIES}{hash}.cedar is named by no decision"));
        }
    }

    // Each plan hashes to what the approvals are bound to.
    for record in records.iter().filter(|r| kind(r) == "control" && action(r) == "state") {
        let plan = &record["detail"]["detail"];
        if let Some(hash) = plan["plan_hash"].as_str()
            && crate::control::plan_hash(&plan["changes"]) != hash
        {
            return refuse(
                Check::Plan,
                format!("the plan at record {} does not hash to {hash}: it was changed", record["seq"]),
            );
        }
    }

    // Votes, the approvals that let the job run, and its state.
    let mut plan: Option<String> = None;
    let mut votes: Vec<(u64, Approval)> = Vec::new();
    let mut decision: Option<&Value> = None;
    let mut approvals_counted: Option<u64> = None;
    let mut state = "submitted".to_string();
    for record in &records {
        let (seq, detail) = (record["seq"].as_u64().unwrap_or_default(), &record["detail"]);
        match (kind(record).as_str(), action(record).as_str()) {
            ("control", "state") => {
                if let Some(hash) = detail["detail"]["plan_hash"].as_str() {
                    plan = Some(hash.to_string());
                }
                state = detail["to"].as_str().unwrap_or_default().to_string();
            }
            ("control", "decision") => {
                decision = Some(&detail["decision"]);
                approvals_counted = None;
                if detail["decision"]["outcome"] == "deny" {
                    state = "denied".into();
                }
            }
            ("control", which @ ("approve" | "reject")) => {
                let approval: Approval = serde_json::from_value(detail["approval"].clone())
                    .or_else(|e| refuse(Check::Approvals, format!("the vote at record {seq}: {e}")))?;
                let key = keys.get(&approval.key_id, Role::Approver, Check::Approvals, "the voting key")?;
                approval
                    .verify_with(key)
                    .or_else(|e| refuse(Check::Approvals, format!("the vote at record {seq}: {e}")))?;
                let expected = if which == "approve" { Vote::Approve } else { Vote::Reject };
                if approval.job_id != job || approval.job_hash != job_hash || approval.vote != expected {
                    return refuse(Check::Approvals, format!("the vote at record {seq} is not a {which} of this job"));
                }
                if approval.key_id == envelope.key_id {
                    return refuse(
                        Check::Approvals,
                        format!("the vote at record {seq} is by the agent that submitted the job"),
                    );
                }
                if which == "reject" {
                    state = "rejected".into();
                }
                votes.push((seq, approval));
            }
            ("control", "approvals") => {
                let hash = detail["plan_hash"].as_str().unwrap_or_default();
                if plan.as_deref() != Some(hash) {
                    return refuse(
                        Check::Approvals,
                        format!("the approvals at record {seq} are for plan {hash}, not the plan recorded last"),
                    );
                }
                let at = record["ts"].as_str().and_then(|t| crate::time::Timestamp::parse_rfc3339(t).ok());
                let counted: Vec<&str> =
                    detail["counted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                for key in &counted {
                    let vote = votes.iter().rev().find(|(_, v)| v.key_id == *key).map(|(_, v)| v);
                    let Some(vote) = vote.filter(|v| v.vote == Vote::Approve && v.plan_hash == hash) else {
                        return refuse(
                            Check::Approvals,
                            format!(
                                "record {seq} counts an approval by {key} of plan {hash} that no vote in the bundle gives"
                            ),
                        );
                    };
                    let expires = crate::time::Timestamp::parse_rfc3339(&vote.expires_at).ok();
                    if !matches!((at, expires), (Some(at), Some(expires)) if at < expires) {
                        return refuse(
                            Check::Approvals,
                            format!("record {seq} counts {key}'s approval, which had expired"),
                        );
                    }
                }
                let mut distinct = counted.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.len() != counted.len() {
                    return refuse(Check::Approvals, format!("record {seq} counts one key twice"));
                }
                approvals_counted = Some(counted.len() as u64);
            }
            ("job", _) if record["mode"] == "run" => {
                let Some(decision) = decision else {
                    return refuse(Check::Approvals, format!("the job ran (record {seq}) with no decision before it"));
                };
                match decision["outcome"].as_str() {
                    Some("allow") => {}
                    Some("needs-approvals") => {
                        let needed = decision["approvals"].as_u64().unwrap_or(u64::MAX);
                        if approvals_counted.is_none_or(|counted| counted < needed) {
                            return refuse(
                                Check::Approvals,
                                format!(
                                    "the job ran (record {seq}) without the {needed} approvals the policy asked for"
                                ),
                            );
                        }
                    }
                    other => {
                        return refuse(
                            Check::Approvals,
                            format!("the job ran (record {seq}) although the policy decided {other:?}"),
                        );
                    }
                }
                state = "applying".into();
            }
            ("outcome", _) => {
                if let Some(outcome @ ("succeeded" | "rolled-back" | "rollback-failed")) = record["outcome"].as_str() {
                    state = outcome.to_string();
                }
            }
            _ => {}
        }
    }
    let stored = job_view["state"].as_str().unwrap_or_default();
    let stored_final = stored.parse::<crate::job::JobState>().is_ok_and(|s| s.is_final());
    if stored_final && stored != state {
        return refuse(Check::Outcome, format!("{JOB} says the job is {stored}; its records end with it {state}"));
    }
    if !stored_final {
        caveats.push(format!("the job had not ended when it was exported (it was {stored})"));
    }

    Ok(Verified {
        job: job.to_string(),
        exported_at: index.exported_at,
        runner_key: index.runner_key,
        runner_key_pinned: pinned.is_some(),
        checkpoint_size: checkpoint.size,
        records,
        request,
        artifact,
        artifact_checked,
        keys: entries,
        job_view,
        state,
        decisions,
        votes: votes.len(),
        seals,
        caveats,
    })
}
