//! Offline verification of an audit log: walks the chain and names the
//! first record that was changed, removed, reordered or cut off; checks the
//! end of the log against its anchor, and, with a trust store, every seal
//! against its runner keys and that every job's outcome is sealed (a seal
//! removed and the chain recomputed is caught).
//!
//! # Errors
//! [`VerifyError::Bad`] carries the first bad record, its line and what is
//! wrong with it; [`VerifyError::Io`] means the log could not be read.

use super::{Anchor as HeadAnchor, GENESIS, HEAD_FILE, Head, seal_message, split_hash};
use crate::keys::Role;
use crate::trust::TrustStore;
use ed25519_dalek::Signature;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Where the durable head anchor is.
#[derive(Debug, Clone)]
pub enum Anchor {
    /// No anchor: a log cut at a record boundary cannot be told from a
    /// complete one.
    None,
    /// This anchor file, if it exists (a log copied out of its data
    /// directory may travel without one).
    IfPresent(PathBuf),
    /// This anchor file, which must exist (a data directory's log).
    Required(PathBuf),
}

impl Anchor {
    /// The anchor beside a log file, if present.
    pub fn beside(log: &Path) -> Anchor {
        Anchor::IfPresent(log.with_file_name(HEAD_FILE))
    }
}

/// What a log that verifies holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub head: Head,
    /// The anchor the end of the log was checked against, if any.
    pub anchor: Option<Head>,
    /// Seals checked against the trust store (0 without one).
    pub seals: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: {bad}")]
    Bad { path: PathBuf, bad: BadRecord },
}

/// The first record of a log that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct BadRecord {
    /// 1-based line number in the file.
    pub line: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not an audit record ({0})")]
    Malformed(String),
    #[error("record {seq} was changed: its hash does not match its content")]
    Changed { seq: u64 },
    #[error("record {found} is where record {expected} belongs: records were reordered")]
    Reordered { expected: u64, found: u64 },
    #[error("record {found} is where record {expected} belongs: records {expected}..{} were removed", found - 1)]
    Removed { expected: u64, found: u64 },
    #[error(
        "record {seq} does not chain to the record before it: that record was rewritten, or records between them were removed"
    )]
    BrokenLink { seq: u64 },
    #[error("the last line is incomplete: the log was truncated in the middle of a record")]
    Truncated,
    #[error(
        "the log ends at record {last}, but {HEAD_FILE} says record {head} was made durable: records {}..{head} were cut off its end",
        last + 1
    )]
    CutOff { last: u64, head: u64 },
    #[error("record {seq} is not the record {HEAD_FILE} says was made durable: the log was rewritten from there")]
    NotTheAnchoredRecord { seq: u64 },
    #[error("{HEAD_FILE} is missing or unreadable: the end of the log cannot be checked (was it deleted?)")]
    MissingAnchor,
    #[error("the seal in record {seq} does not verify: {reason}")]
    BadSeal { seq: u64, reason: String },
    #[error(
        "job {job}'s outcome (record {seq}) has no seal after it: a seal was removed and the chain recomputed, \
         or the job ran without a runner key"
    )]
    MissingSeal { seq: u64, job: String },
    #[error(
        "there is no signed checkpoint of the log ({HEAD_FILE} holds none): its end cannot be trusted \
         (was it stripped, or did the runner run without a runner key?)"
    )]
    NoCheckpoint,
    #[error("the checkpoint does not verify: {0}")]
    BadCheckpoint(String),
    #[error(
        "the log holds {records} records, but the signed checkpoint covers {size}: records {}..{records} are covered \
         by no checkpoint (appended by someone without the runner key, or the runner has not stopped yet)",
        size + 1
    )]
    NotCovered { size: u64, records: u64 },
    #[error(
        "the log does not extend the checkpoint of {size} records: {reason} (the log was replaced by an older \
         or rewritten one)"
    )]
    Inconsistent { size: u64, reason: String },
}

/// How much of the log a checkpoint must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// All of it: the data directory's own latest checkpoint.
    Whole,
    /// A prefix: a checkpoint saved earlier (by an auditor or a witness),
    /// which the log must extend.
    Prefix,
}

/// A signed checkpoint that verified against a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The records it covers.
    pub size: u64,
    /// The runner key that signed it.
    pub key_id: String,
}

/// Checks the signed checkpoint `note` against the log at `path`: signed by
/// a runner key of `trust` (not revoked), and the log extends it, shown by
/// an RFC 9162 consistency proof from its size to the log's; with
/// [`Coverage::Whole`], it covers every record.
pub fn verify_checkpoint(
    path: &Path,
    note: &str,
    trust: &TrustStore,
    coverage: Coverage,
) -> Result<CheckpointReport, VerifyError> {
    use super::checkpoint::{Checkpoint, Verifier};
    use super::merkle::{MemoryTree, consistency_proof, leaf_hash, verify_consistency};
    let bad = |problem| VerifyError::Bad { path: path.to_path_buf(), bad: BadRecord { line: 0, problem } };
    let refused = |reason: String| bad(Problem::BadCheckpoint(reason));
    let (claimed, _) = Checkpoint::parse_unverified(note.as_bytes()).map_err(|e| refused(e.to_string()))?;
    let key_id = claimed
        .origin
        .strip_prefix(super::checkpoint_origin("").as_str())
        .ok_or_else(|| refused(format!("its origin {:?} is not a salve audit log's", claimed.origin)))?;
    if trust.is_revoked(key_id) {
        return Err(refused(format!("key {key_id} is revoked")));
    }
    let key = trust.key(key_id).ok_or_else(|| refused(format!("key {key_id} is not in the trust store")))?;
    if key.entry.role != Role::Runner {
        return Err(refused(format!("key {key_id} has role {}, not runner", key.entry.role)));
    }
    let verifier = Verifier::new(key_id, key.public).map_err(|e| refused(e.to_string()))?;
    let (checkpoint, _) =
        Checkpoint::open(note.as_bytes(), &claimed.origin, &[verifier]).map_err(|e| refused(e.to_string()))?;

    let file = std::fs::File::open(path).map_err(|e| VerifyError::Io { path: path.into(), reason: e.to_string() })?;
    let mut tree = MemoryTree::new();
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| VerifyError::Io { path: path.into(), reason: e.to_string() })?;
        tree.push(leaf_hash(&line));
    }
    let records = tree.leaves().len() as u64;
    if checkpoint.size > records {
        let reason = format!("the log holds only {records} records");
        return Err(bad(Problem::Inconsistent { size: checkpoint.size, reason }));
    }
    let inconsistent =
        |e: super::merkle::MerkleError| bad(Problem::Inconsistent { size: checkpoint.size, reason: e.to_string() });
    let proof = consistency_proof(&tree, checkpoint.size, records).map_err(inconsistent)?;
    verify_consistency(checkpoint.size, records, &checkpoint.root, &tree.root(), &proof).map_err(inconsistent)?;
    if coverage == Coverage::Whole && checkpoint.size < records {
        return Err(bad(Problem::NotCovered { size: checkpoint.size, records }));
    }
    Ok(CheckpointReport { size: checkpoint.size, key_id: key_id.to_string() })
}

/// Verifies the log at `path`; with a trust store, every seal too.
pub fn verify_log(path: &Path, anchor: Anchor, trust: Option<&TrustStore>) -> Result<Report, VerifyError> {
    let io = |path: &Path, reason: String| VerifyError::Io { path: path.to_path_buf(), reason };
    let anchor_path = match &anchor {
        Anchor::None => None,
        Anchor::IfPresent(p) => Some(p).filter(|p| p.exists()),
        Anchor::Required(p) => Some(p),
    };
    let bad = |line, problem| VerifyError::Bad { path: path.to_path_buf(), bad: BadRecord { line, problem } };
    let anchor = match anchor_path {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|_| bad(0, Problem::MissingAnchor))?;
            Some(HeadAnchor::decode(&text).ok_or_else(|| bad(0, Problem::MissingAnchor))?.head)
        }
    };

    let file = std::fs::File::open(path).map_err(|e| io(path, e.to_string()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut head = Head { seq: 0, hash: GENESIS.to_string() };
    let mut seals = 0;
    // Outcomes not sealed yet: job id -> (line, seq) of the outcome.
    let mut unsealed: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    let mut line_no = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(|e| io(path, e.to_string()))? == 0 {
            break;
        }
        line_no += 1;
        if line.pop() != Some(b'\n') {
            return Err(bad(line_no, Problem::Truncated));
        }
        let record = Record::parse(&line).map_err(|reason| bad(line_no, Problem::Malformed(reason)))?;
        if !record.hash_ok {
            return Err(bad(line_no, Problem::Changed { seq: record.seq }));
        }
        let expected = head.seq + 1;
        if record.seq != expected {
            let problem = if record.seq < expected || comes_later(&mut reader, expected) {
                Problem::Reordered { expected, found: record.seq }
            } else {
                Problem::Removed { expected, found: record.seq }
            };
            return Err(bad(line_no, problem));
        }
        if record.body["prev"] != head.hash.as_str() {
            return Err(bad(line_no, Problem::BrokenLink { seq: record.seq }));
        }
        if let Some(anchor) = &anchor
            && anchor.seq == record.seq
            && anchor.hash != record.hash
        {
            return Err(bad(line_no, Problem::NotTheAnchoredRecord { seq: record.seq }));
        }
        if let Some(trust) = trust {
            let job = record.body["job"].as_str();
            match (record.body["kind"].as_str(), job) {
                (Some("seal"), _) => {
                    check_seal(trust, &record.body)
                        .map_err(|reason| bad(line_no, Problem::BadSeal { seq: record.seq, reason }))?;
                    seals += 1;
                    if let Some(job) = job {
                        unsealed.remove(job);
                    }
                }
                (Some("outcome"), Some(job)) => {
                    if let Some((line, seq)) = unsealed.insert(job.to_string(), (line_no, record.seq)) {
                        return Err(bad(line, Problem::MissingSeal { seq, job: job.to_string() }));
                    }
                }
                _ => {}
            }
        }
        head = Head { seq: record.seq, hash: record.hash };
    }
    if let Some(anchor) = &anchor
        && anchor.seq > head.seq
    {
        return Err(bad(line_no, Problem::CutOff { last: head.seq, head: anchor.seq }));
    }
    if let Some((job, (line, seq))) = unsealed.into_iter().min_by_key(|(_, (line, _))| *line) {
        return Err(bad(line, Problem::MissingSeal { seq, job }));
    }
    Ok(Report { records: head.seq, head, anchor, seals })
}

/// Checks a seal's signature with the runner key it names.
fn check_seal(trust: &TrustStore, body: &serde_json::Value) -> Result<(), String> {
    let field = |name: &str| body[name].as_str().ok_or_else(|| format!("it has no {name}"));
    let (job, prev, key_id) = (field("job")?, field("prev")?, field("key_id")?);
    let signature = hex::decode(field("signature")?).map_err(|_| "its signature is not hex".to_string())?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| "its signature is not 64 bytes".to_string())?;
    if trust.is_revoked(key_id) {
        return Err(format!("key {key_id} is revoked"));
    }
    let key = trust.key(key_id).ok_or_else(|| format!("key {key_id} is not in the trust store"))?;
    if key.entry.role != Role::Runner {
        return Err(format!("key {key_id} has role {}, not runner", key.entry.role));
    }
    key.public
        .verify_strict(&seal_message(job, prev), &Signature::from_bytes(&signature))
        .map_err(|_| "the signature does not match the record it seals".to_string())
}

struct Record {
    seq: u64,
    hash: String,
    hash_ok: bool,
    body: serde_json::Value,
}

impl Record {
    fn parse(line: &[u8]) -> Result<Record, String> {
        let (body_bytes, hash) = split_hash(line).ok_or("it does not end with a hash field")?;
        let body: serde_json::Value = serde_json::from_slice(&body_bytes).map_err(|e| e.to_string())?;
        let seq = body["seq"].as_u64().ok_or("it has no seq")?;
        if !body["prev"].is_string() {
            return Err("it has no prev".into());
        }
        let hash_ok = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body_bytes)) == hash
        };
        Ok(Record { seq, hash: hash.to_string(), hash_ok, body })
    }
}

/// Whether a record with `seq` appears in the rest of the log.
fn comes_later(reader: &mut impl BufRead, seq: u64) -> bool {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    reader
        .split(b'\n')
        .map_while(Result::ok)
        .any(|line| serde_json::from_slice::<Seq>(&line).is_ok_and(|s| s.seq == seq))
}
