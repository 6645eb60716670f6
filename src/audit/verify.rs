//! Offline verification of an audit log: walks the chain and names the
//! first record that was changed, removed, reordered or cut off.
//!
//! # Errors
//! [`VerifyError::Bad`] carries the first bad record, its line and what is
//! wrong with it; [`VerifyError::Io`] means the log could not be read.

use super::{GENESIS, HEAD_FILE, Head, split_hash};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Where the durable head anchor is, if anywhere.
#[derive(Debug, Clone)]
pub enum Anchor {
    /// No anchor: a log cut at a record boundary cannot be told from a
    /// complete one.
    None,
    /// `audit.head` beside the log, if it exists.
    Beside,
    /// An anchor file elsewhere (a copy kept by the auditor).
    File(PathBuf),
}

/// What a log that verifies holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub records: u64,
    pub head: Head,
    /// The anchor the end of the log was checked against, if any.
    pub anchor: Option<Head>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
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
}

/// Verifies the log at `path`.
pub fn verify_log(path: &Path, anchor: Anchor) -> Result<Report, VerifyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Io { path, source }
    };
    let anchor_path = match anchor {
        Anchor::None => None,
        Anchor::Beside => Some(path.with_file_name(HEAD_FILE)).filter(|p| p.exists()),
        Anchor::File(p) => Some(p),
    };
    let anchor = match &anchor_path {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            match Head::decode(&text) {
                Some(head) => Some(head),
                None if text.is_empty() => None,
                None => {
                    return Err(VerifyError::Io {
                        path: p.clone(),
                        source: std::io::Error::other("not a salve audit head anchor"),
                    });
                }
            }
        }
    };
    let bad = |line, problem| VerifyError::Bad {
        path: path.to_path_buf(),
        bad: BadRecord { line, problem },
    };

    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut reader = std::io::BufReader::new(file);
    let mut head = Head {
        seq: 0,
        hash: GENESIS.to_string(),
    };
    let mut line_no = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io(path))? == 0 {
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
                Problem::Reordered {
                    expected,
                    found: record.seq,
                }
            } else {
                Problem::Removed {
                    expected,
                    found: record.seq,
                }
            };
            return Err(bad(line_no, problem));
        }
        if record.prev != head.hash {
            return Err(bad(line_no, Problem::BrokenLink { seq: record.seq }));
        }
        if let Some(anchor) = &anchor
            && anchor.seq == record.seq
            && anchor.hash != record.hash
        {
            return Err(bad(line_no, Problem::NotTheAnchoredRecord { seq: record.seq }));
        }
        head = Head {
            seq: record.seq,
            hash: record.hash,
        };
    }
    if let Some(anchor) = &anchor
        && anchor.seq > head.seq
    {
        return Err(bad(
            line_no,
            Problem::CutOff {
                last: head.seq,
                head: anchor.seq,
            },
        ));
    }
    Ok(Report {
        records: head.seq,
        head,
        anchor,
    })
}

struct Record {
    seq: u64,
    prev: String,
    hash: String,
    hash_ok: bool,
}

impl Record {
    fn parse(line: &[u8]) -> Result<Record, String> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            seq: u64,
            prev: String,
        }
        let (body, hash) = split_hash(line).ok_or("it does not end with a hash field")?;
        let Envelope { seq, prev } = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let hash_ok = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&body)) == hash
        };
        Ok(Record {
            seq,
            prev,
            hash: hash.to_string(),
            hash_ok,
        })
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
