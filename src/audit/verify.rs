//! Offline verification of an audit log: walks the chain and names the
//! first record that was changed, removed, reordered or cut off; checks the
//! end of the log against its anchor, and every seal against the runner
//! keys of a trust store.
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
        if let Some(trust) = trust
            && record.body["kind"] == "seal"
        {
            check_seal(trust, &record.body)
                .map_err(|reason| bad(line_no, Problem::BadSeal { seq: record.seq, reason }))?;
            seals += 1;
        }
        head = Head { seq: record.seq, hash: record.hash };
    }
    if let Some(anchor) = &anchor
        && anchor.seq > head.seq
    {
        return Err(bad(line_no, Problem::CutOff { last: head.seq, head: anchor.seq }));
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
