//! The audit log: one hash chain of JSON Lines records per data directory,
//! written by one runner process at a time.
//!
//! # Format
//! `audit.jsonl` holds one JSON object per line. Each carries `seq` (1, 2,
//! ...), `prev` (the `hash` of the record before it; 64 zeros for the
//! first), `ts`, `job` (when the record belongs to one), `kind` and the
//! fields of that kind (see [`Event`]), and last `hash`: the hex SHA-256 of
//! the line as it would read without its `hash` field, i.e. of the bytes up
//! to `,"hash"` followed by `}`. Since `prev` is inside the hashed bytes,
//! each record commits to the whole chain before it, and records of jobs
//! running at the same time interleave on one linear chain.
//!
//! `audit.head` holds the `seq` and `hash` of the last record made durable.
//! It is what lets [`verify`] tell a log that was cut at a record boundary
//! from one that simply ended there.
//!
//! # Durability
//! [`AuditLog::append`] only buffers. [`AuditLog::sync`] makes everything up
//! to a record durable (write, `fdatasync`, then `audit.head`), sharing one
//! `fdatasync` between every caller waiting at the time (group commit).
//! Callers that need a record on disk before they act (a mutating host
//! call's intent, a journal entry, a job's outcome) use
//! [`AuditLog::append_durable`].
//!
//! # Errors
//! When a write or `fdatasync` fails, the log is broken for good (a failed
//! `fdatasync` cannot be retried safely): every later append fails with
//! [`AuditError::Broken`], so every host call is refused and jobs fail
//! closed.
//!
//! # Security
//! The file is opened `0600` in a `0700` directory and locked exclusively
//! (`flock`) for the life of the writer, so two runners never fork the
//! chain. Records never hold file contents or secrets (see [`record`]).

pub mod record;
pub mod verify;

pub use record::{CallOutcome, Event, Phase};

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::Notify;

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// File name of the durable head anchor inside the data directory.
pub const HEAD_FILE: &str = "audit.head";
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Buffered bytes above which [`AuditLog::append`] writes them out (still
/// without `fdatasync`), so memory stays bounded between syncs.
const WRITE_THRESHOLD: usize = 64 * 1024;
/// The suffix every line ends with: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "the audit log {path} ends at record {last} but {HEAD_FILE} says record {head} was made durable: \
         records were removed from its end. Run `salve audit verify` and investigate before running anything"
    )]
    Truncated { path: PathBuf, last: u64, head: u64 },
    #[error(
        "the audit log {path} does not end with a valid record ({reason}). Run `salve audit verify` and \
         investigate before running anything"
    )]
    BadTail { path: PathBuf, reason: String },
    #[error("cannot write the audit log: {0}. The log is closed; no further host call is allowed")]
    Broken(String),
}

/// The `seq` and `hash` of a record: enough to name a point of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    fn encode(&self) -> String {
        format!("salve-audit-head v1 seq={:020} hash={}\n", self.seq, self.hash)
    }

    /// Parses the content of `audit.head`.
    pub fn decode(text: &str) -> Option<Head> {
        let rest = text.trim_end().strip_prefix("salve-audit-head v1 seq=")?;
        let (seq, hash) = rest.split_once(" hash=")?;
        let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        Some(Head {
            seq: seq.parse().ok()?,
            hash: valid_hash.then(|| hash.to_string())?,
        })
    }
}

/// The writer. Cheap to clone; every clone appends to the same chain.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    file: File,
    head_file: File,
    state: Mutex<State>,
    synced: Notify,
}

struct State {
    /// The last record appended (buffered or not).
    last: Head,
    /// Serialized records not yet written to the file.
    buf: Vec<u8>,
    /// Highest `seq` made durable.
    synced: u64,
    /// Whether a caller is inside `fdatasync` right now.
    syncing: bool,
    broken: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    seq: u64,
    prev: &'a str,
    #[serde(serialize_with = "as_display")]
    ts: humantime::Rfc3339Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

fn as_display<S: serde::Serializer>(value: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, takes its lock, and
    /// continues the chain from its last record.
    ///
    /// # Errors
    /// [`AuditError::Truncated`] or [`AuditError::BadTail`] when the log's end
    /// does not match its head anchor: the runner refuses to run on a log
    /// that may have been tampered with.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        let path = dir.join(LOG_FILE);
        let open_err = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(open_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(path = %path.display(), "another salve process holds the audit log; waiting for it");
                file.lock().map_err(open_err)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let head_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(HEAD_FILE))
            .map_err(open_err)?;

        let (last, torn) = recover_tail(&mut file).map_err(|reason| match reason {
            TailError::Io(source) => AuditError::Open {
                path: path.clone(),
                source,
            },
            TailError::Bad(reason) => AuditError::BadTail {
                path: path.clone(),
                reason,
            },
        })?;
        let mut anchor = String::new();
        (&head_file).read_to_string(&mut anchor).map_err(open_err)?;
        if let Some(head) = Head::decode(&anchor) {
            let matches = head.seq < last.seq || (head.seq == last.seq && head.hash == last.hash);
            if head.seq > last.seq {
                return Err(AuditError::Truncated {
                    path,
                    last: last.seq,
                    head: head.seq,
                });
            } else if !matches {
                return Err(AuditError::BadTail {
                    path,
                    reason: format!("record {} has a different hash than {HEAD_FILE} records", head.seq),
                });
            }
        } else if !anchor.is_empty() {
            return Err(AuditError::BadTail {
                path,
                reason: format!("{HEAD_FILE} is unreadable"),
            });
        }
        if torn > 0 {
            let len = file.metadata().map_err(open_err)?.len();
            file.set_len(len - torn).map_err(open_err)?;
        }
        let synced = last.seq;
        let log = AuditLog {
            shared: Arc::new(Shared {
                path,
                file,
                head_file,
                state: Mutex::new(State {
                    last,
                    buf: Vec::new(),
                    synced,
                    syncing: false,
                    broken: None,
                }),
                synced: Notify::new(),
            }),
        };
        log.append(
            None,
            &Event::Opened {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                dropped_torn_bytes: (torn > 0).then_some(torn),
            },
        )?;
        Ok(log)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The last record appended (not necessarily durable yet).
    pub fn head(&self) -> Head {
        self.state().last.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves State consistent (every
        // mutation is a single assignment after the fallible work), so a
        // poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one record to the chain (buffered) and returns its `seq`.
    pub fn append(&self, job: Option<&str>, event: &Event<'_>) -> Result<u64, AuditError> {
        let mut state = self.state();
        if let Some(reason) = &state.broken {
            return Err(AuditError::Broken(reason.clone()));
        }
        let seq = state.last.seq + 1;
        let start = state.buf.len();
        let envelope = Envelope {
            seq,
            prev: &state.last.hash,
            ts: humantime::format_rfc3339_micros(SystemTime::now()),
            job,
            event,
        };
        let mut line = serde_json::to_vec(&envelope).map_err(|e| AuditError::Broken(e.to_string()))?;
        let hash = hex::encode(Sha256::digest(&line));
        line.pop(); // the closing brace; the hash field goes last
        state.buf.extend_from_slice(&line);
        state.buf.extend_from_slice(br#","hash":""#);
        state.buf.extend_from_slice(hash.as_bytes());
        state.buf.extend_from_slice(b"\"}\n");
        debug_assert_eq!(state.buf.len() - start, line.len() + HASH_SUFFIX_LEN + 1);
        state.last = Head { seq, hash };
        if state.buf.len() >= WRITE_THRESHOLD {
            self.write_out(&mut state)?;
        }
        Ok(seq)
    }

    /// Appends one record and returns once it is durable.
    pub async fn append_durable(&self, job: Option<&str>, event: &Event<'_>) -> Result<u64, AuditError> {
        let seq = self.append(job, event)?;
        self.sync(seq).await?;
        Ok(seq)
    }

    /// Returns once every record up to `seq` is durable.
    pub async fn sync(&self, seq: u64) -> Result<(), AuditError> {
        enum Next<'a> {
            Done,
            Sync(Head),
            Wait(std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>),
        }
        loop {
            let next = {
                let mut state = self.state();
                if let Some(reason) = &state.broken {
                    return Err(AuditError::Broken(reason.clone()));
                }
                if state.synced >= seq {
                    Next::Done
                } else if state.syncing {
                    // Registered before the lock is released, so the wake-up
                    // of the sync in flight cannot be missed.
                    let mut notified = Box::pin(self.shared.synced.notified());
                    notified.as_mut().enable();
                    Next::Wait(notified)
                } else {
                    state.syncing = true;
                    self.write_out(&mut state)?;
                    Next::Sync(state.last.clone())
                }
            };
            match next {
                Next::Done => return Ok(()),
                Next::Wait(notified) => notified.await,
                Next::Sync(target) => {
                    let shared = Arc::clone(&self.shared);
                    let result = tokio::task::spawn_blocking(move || shared.make_durable(&target).map(|()| target))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    {
                        let mut state = self.state();
                        state.syncing = false;
                        match result {
                            Ok(target) => state.synced = state.synced.max(target.seq),
                            Err(e) => state.broken = Some(format!("fdatasync failed: {e}")),
                        }
                    }
                    self.shared.synced.notify_waiters();
                }
            }
        }
    }

    /// Makes everything appended so far durable, blocking the thread. For
    /// the end of a command, outside any async context.
    pub fn sync_blocking(&self) -> Result<(), AuditError> {
        let mut state = self.state();
        if let Some(reason) = &state.broken {
            return Err(AuditError::Broken(reason.clone()));
        }
        self.write_out(&mut state)?;
        let target = state.last.clone();
        if let Err(e) = self.shared.make_durable(&target) {
            let reason = format!("fdatasync failed: {e}");
            state.broken = Some(reason.clone());
            return Err(AuditError::Broken(reason));
        }
        state.synced = target.seq;
        Ok(())
    }

    /// Writes the buffer to the file (no `fdatasync`). Under the state lock,
    /// so bytes reach the file in `seq` order.
    fn write_out(&self, state: &mut State) -> Result<(), AuditError> {
        if state.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&self.shared.file).write_all(&state.buf) {
            let reason = format!("write failed: {e}");
            state.broken = Some(reason.clone());
            return Err(AuditError::Broken(reason));
        }
        state.buf.clear();
        Ok(())
    }
}

impl Shared {
    fn make_durable(&self, head: &Head) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.head_file.write_all_at(head.encode().as_bytes(), 0)?;
        self.head_file.sync_data()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.broken.is_none() && !state.buf.is_empty() {
            let written = (&self.file).write_all(&state.buf);
            let last = state.last.clone();
            if written.and_then(|()| self.make_durable(&last)).is_err() {
                tracing::error!(path = %self.path.display(), "could not flush the audit log on close");
            }
        }
    }
}

enum TailError {
    Io(std::io::Error),
    Bad(String),
}

/// Finds the last complete record of the log and the number of bytes after
/// it (a torn record, never acknowledged). Reads backwards from the end in
/// chunks, so opening costs the same whatever the log's length.
fn recover_tail(file: &mut File) -> Result<(Head, u64), TailError> {
    let len = file.seek(SeekFrom::End(0)).map_err(TailError::Io)?;
    if len == 0 {
        return Ok((Head::genesis(), 0));
    }
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        // The tail holds everything from `start`; look for the newline that
        // ends the second-to-last line (or the start of the file).
        let newlines: Vec<usize> = tail
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let last_nl = newlines.last().copied();
        let torn = match last_nl {
            Some(i) => (tail.len() - i - 1) as u64,
            None => tail.len() as u64,
        };
        let line_start = match newlines.len() {
            n if n >= 2 => Some(newlines[n - 2] + 1),
            1 if start == 0 => Some(0),
            _ => None,
        };
        if let (Some(line_start), Some(line_end)) = (line_start, last_nl) {
            let head = parse_record_head(&tail[line_start..line_end]).map_err(TailError::Bad)?;
            return Ok((head, torn));
        }
        if start == 0 {
            // No complete line at all: the whole file is one torn record.
            return Ok((Head::genesis(), len));
        }
        let chunk = start.min(64 * 1024);
        start -= chunk;
        let mut piece = vec![0; chunk as usize];
        file.read_exact_at(&mut piece, start).map_err(TailError::Io)?;
        piece.extend_from_slice(&tail);
        tail = piece;
    }
}

/// Checks one line's own hash and returns its `seq` and `hash`.
pub(crate) fn parse_record_head(line: &[u8]) -> Result<Head, String> {
    let split = split_hash(line).ok_or("the line does not end with a hash field")?;
    let (body, hash) = split;
    if hex::encode(Sha256::digest(&body)) != hash {
        return Err("its hash does not match its content".into());
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let Seq { seq } = serde_json::from_slice(&body).map_err(|e| format!("not a record: {e}"))?;
    Ok(Head {
        seq,
        hash: hash.to_string(),
    })
}

/// Splits a line into the bytes its hash covers and the hash it claims.
pub(crate) fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return None;
    }
    let (rest, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hash = suffix.strip_prefix(br#","hash":""#)?.strip_suffix(b"\"}")?;
    let hash = std::str::from_utf8(hash)
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let mut body = rest.to_vec();
    body.push(b'}');
    Some((body, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event<'static> {
        Event::Outcome {
            outcome: "succeeded",
            cause: None,
            rollback_cause: None,
        }
    }

    #[tokio::test]
    async fn records_chain_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let first = log.append(Some("job-1"), &event()).unwrap();
        let second = log.append_durable(Some("job-1"), &event()).await.unwrap();
        assert_eq!(second, first + 1);
        let head = log.head();
        drop(log);

        let log = AuditLog::open(dir.path()).unwrap();
        let next = log.append(None, &event()).unwrap();
        assert_eq!(
            next,
            head.seq + 2,
            "reopening appends an `opened` record, then continues"
        );
        log.sync_blocking().unwrap();
        let report = verify::verify_log(&dir.path().join(LOG_FILE), verify::Anchor::Beside).unwrap();
        assert_eq!(report.records, next);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append_durable(None, &event()).await.unwrap();
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"seq":3,"prev":"ab"#).unwrap();

        let log = AuditLog::open(dir.path()).unwrap();
        log.sync_blocking().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().last().unwrap().contains(r#""dropped_torn_bytes":19"#),
            "{text}"
        );
        verify::verify_log(&path, verify::Anchor::Beside).unwrap();
    }

    #[tokio::test]
    async fn a_log_cut_below_its_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append_durable(None, &event()).await.unwrap();
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let first_line = text.lines().next().unwrap();
        std::fs::write(&path, format!("{first_line}\n")).unwrap();
        match AuditLog::open(dir.path()) {
            Err(AuditError::Truncated { last: 1, head: 2, .. }) => {}
            other => panic!("expected Truncated, got {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn a_failed_write_breaks_the_log_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.sync_blocking().unwrap();
        // Swap the writer's file for one opened read-only: every write fails
        // the way a full or failing disk would.
        let read_only = File::open(dir.path().join(LOG_FILE)).unwrap();
        let head_file = File::open(dir.path().join(HEAD_FILE)).unwrap();
        let broken = AuditLog {
            shared: Arc::new(Shared {
                path: dir.path().join(LOG_FILE),
                file: read_only,
                head_file,
                state: Mutex::new(State {
                    last: log.head(),
                    buf: Vec::new(),
                    synced: log.head().seq,
                    syncing: false,
                    broken: None,
                }),
                synced: Notify::new(),
            }),
        };
        let seq = broken.append(None, &event()).unwrap();
        assert!(matches!(broken.sync(seq).await, Err(AuditError::Broken(_))));
        assert!(matches!(broken.append(None, &event()), Err(AuditError::Broken(_))));
    }

    #[test]
    fn head_anchor_round_trips() {
        let head = Head {
            seq: 42,
            hash: "ab".repeat(32),
        };
        assert_eq!(Head::decode(&head.encode()), Some(head));
        assert_eq!(Head::decode("salve-audit-head v1 seq=1 hash=xyz"), None);
    }
}
