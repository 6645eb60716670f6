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
//! `audit.head` (the anchor) holds the `seq`, `hash` and end offset of the
//! last record made durable. It lets [`verify`] tell a log that was cut at a
//! record boundary from one that simply ended there, and lets the writer
//! tell records that were acknowledged from a tail a crash left behind.
//! In a log kept by a runner key, the anchor line is followed by the
//! Merkle frontier at the latest signed checkpoint (see `TreeLine`), then
//! by that checkpoint.
//!
//! A log kept by a runner key (opened with [`AuditLog::open_keyed`]) also
//! tags each record: `mac`, just before `hash`, is an HMAC-SHA-256 (cut to
//! 128 bits) of the line as it reads without `mac` and `hash`, keyed by a
//! key derived from the runner key. Nobody else can tag, so at open the
//! runner tells the records it wrote but had not yet checkpointed when it
//! stopped from records someone appended (see [`AuditLog::open_keyed`]).
//! Auditors need not check tags: signed checkpoints cover the log.
//!
//! Each job ends with a `seal` record: the runner key's Ed25519 signature
//! over the job id and the hash of the record before the seal. A seal
//! cannot be forged without the runner key, so a log rewritten by someone
//! who can write the data directory (and recompute every hash) no longer
//! verifies against the trust store.
//!
//! # Durability
//! [`AuditLog::append`] only buffers. [`AuditLog::sync`] makes everything up
//! to a record durable (write, `fdatasync`, then the anchor), sharing one
//! `fdatasync` between every caller waiting at the time (group commit). The
//! `fdatasync` runs on its own task, so a caller that gives up waiting
//! cannot leave the others waiting forever. Callers that need a record on
//! disk before they act (a mutating host call's intent, a journal entry, a
//! job's outcome) use [`AuditLog::append_durable`].
//!
//! # Size
//! Over 600 lines: the writer (chain, anchor, Merkle frontier and signed
//! checkpoints, group commit, the broken state) is one piece whose
//! invariants are checked together. Records, the tree, checkpoints,
//! reading and verification are apart ([`record`], [`merkle`],
//! [`checkpoint`], [`outcome`], [`verify`]); the tests are in `tests.rs`.
//!
//! # Errors
//! When a write or `fdatasync` fails, the log is broken for good (a failed
//! `fdatasync` cannot be retried safely): every later append fails with
//! [`AuditError::Broken`], so every host call is refused and jobs fail
//! closed. A log whose end does not match its anchor is refused at open.
//!
//! # Security
//! The file is opened `0600` in a `0700` directory and locked exclusively
//! (`flock`) for the life of the writer, so two runners never fork the
//! chain. Records never hold file contents or secrets (see [`record`]).

pub mod checkpoint;
pub mod merkle;
pub mod outcome;
pub mod read;
pub mod record;
pub mod verify;
pub mod witness;

pub use record::{CallOutcome, ControlAction, Ending, Event, Mode, Phase};

use crate::histogram::Histogram;
use crate::keys::PrivateKey;
use checkpoint::Checkpoint;
use ed25519_dalek::Signer as _;
use merkle::CompactTree;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::Notify;
pub use witness::Witness;

/// File name of the log inside the data directory.
pub const LOG_FILE: &str = crate::data_dir::AUDIT_LOG_FILE;
/// File name of the durable head anchor inside the data directory.
pub const HEAD_FILE: &str = crate::data_dir::AUDIT_HEAD_FILE;

/// The room an audit log keeps for rollbacks and outcomes unless told
/// otherwise: far more than a rollback of a bounded `apply` writes.
pub const DEFAULT_RESERVE: u64 = 4 << 20;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Buffered bytes above which [`AuditLog::append`] writes them out (still
/// without `fdatasync`), so memory stays bounded between syncs.
const WRITE_THRESHOLD: usize = 64 * 1024;
/// The suffix every line ends with: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;
/// What a seal signs, before the job id and the previous record's hash.
const SEAL_CONTEXT: &[u8] = b"salve audit seal v1\n";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error(
        "the audit log {path} ends at byte {len}, but {HEAD_FILE} says record {seq} ending at byte {end} was made \
         durable: records were cut off its end. Run `salve audit verify` and investigate before running anything"
    )]
    Truncated { path: PathBuf, len: u64, seq: u64, end: u64 },
    #[error(
        "the audit log {path} does not match its anchor ({reason}). Run `salve audit verify` and investigate \
         before running anything"
    )]
    BadAnchor { path: PathBuf, reason: String },
    #[error(
        "the audit log {path} holds records past its last signed checkpoint (record {checkpointed}) that this runner \
         did not write: {found}. Someone who can write the data directory appended to the log, so nothing runs. \
         Keep a copy of the log for investigation, run `salve audit verify`, and to go on cut the log back to its \
         first {checkpointed} lines"
    )]
    Appended { path: PathBuf, checkpointed: u64, found: String },
    #[error(
        "the audit log {path} is kept by a runner key ({found}), so it opens only with that key: give \
         --runner-key or keep it as DATA_DIR/keys/runner.key"
    )]
    KeyNeeded { path: PathBuf, found: String },
    #[error("cannot write the audit log: {0}. The log is closed; no further host call is allowed")]
    Broken(String),
}

impl crate::fault::Classify for AuditError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            AuditError::Open { .. } | AuditError::Broken(_) => Fault::Infrastructure,
            AuditError::Truncated { .. } | AuditError::BadAnchor { .. } | AuditError::Appended { .. } => {
                Fault::Tampered
            }
            AuditError::KeyNeeded { .. } => Fault::Input,
        }
    }
}

/// The `seq` and `hash` of a record: enough to name a point of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head { seq: 0, hash: GENESIS.to_string() }
    }
}

/// A durable point of the chain: a record and the byte offset where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub head: Head,
    pub end: u64,
}

impl Anchor {
    fn encode(&self) -> String {
        format!("salve-audit-head v1 seq={:020} hash={} end={:020}\n", self.head.seq, self.head.hash, self.end)
    }

    /// The anchor line, with a tag over it and the size of the checkpoint
    /// kept with it when the log is kept by a key: rewriting the anchor, or
    /// removing the checkpoint, then shows.
    fn encode_tagged(&self, tagger: Option<&Tagger>, checkpoint_size: u64) -> String {
        match tagger {
            None => self.encode(),
            Some(tagger) => {
                let line = self.encode();
                let tag = tagger.anchor_tag(self, checkpoint_size);
                format!("{} mac={tag}\n", line.trim_end())
            }
        }
    }

    /// The tag on the first line of `audit.head`, if any.
    fn decode_tag(text: &str) -> Option<&str> {
        let (first, _) = text.split_once('\n')?;
        first.split_once(" mac=").map(|(_, tag)| tag)
    }

    /// Parses the first line of `audit.head` (the signed checkpoint, if
    /// any, follows it: [`checkpoint_note`]).
    pub fn decode(text: &str) -> Option<Anchor> {
        let (first, _) = text.split_once('\n')?;
        let first = first.split_once(" mac=").map_or(first, |(anchor, _)| anchor);
        let rest = first.strip_prefix("salve-audit-head v1 seq=")?;
        let (seq, rest) = rest.split_once(" hash=")?;
        let (hash, end) = rest.split_once(" end=")?;
        let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        Some(Anchor {
            head: Head { seq: seq.parse().ok()?, hash: valid_hash.then(|| hash.to_string())? },
            end: end.parse().ok()?,
        })
    }
}

/// The signed checkpoint `audit.head` holds after its anchor line, if any.
pub fn checkpoint_note(head_text: &str) -> Option<&str> {
    let (_, rest) = head_text.split_once('\n')?;
    let note = match rest.strip_prefix(TreeLine::PREFIX) {
        Some(tree) => tree.split_once('\n').map_or("", |(_, note)| note),
        None => rest,
    };
    (!note.is_empty()).then_some(note)
}

/// The Merkle frontier at the latest signed checkpoint, kept in
/// `audit.head` between the anchor line and the checkpoint, so that opening
/// the log hashes only the records past the checkpoint instead of every
/// record ever written.
///
/// `salve-audit-tree v1 end=E leaf=HEX tree=HEX mac=TAG`: the checkpoint's
/// last record ends at byte `E` and has leaf hash `leaf`; `tree` is the
/// frontier ([`CompactTree::to_hex`]). It is trusted only when its tag
/// (runner key), the signed root (the frontier must hash to it) and that
/// last record (its leaf must match) all agree; otherwise the log is read
/// whole, as without it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeLine {
    end: u64,
    leaf: merkle::Hash,
    tree: CompactTree,
}

impl TreeLine {
    const PREFIX: &str = "salve-audit-tree v1 ";

    fn body(&self) -> String {
        format!("{}end={} leaf={} tree={}", TreeLine::PREFIX, self.end, hex::encode(self.leaf), self.tree.to_hex())
    }

    /// The line, tagged by `tagger`, with its newline.
    fn encode(&self, tagger: &Tagger) -> String {
        let body = self.body();
        let tag = tagger.tag(format!("salve audit tree v1\n{body}").as_bytes());
        format!("{body} mac={tag}\n")
    }

    /// The tree line of `head_text` (its second line), if there is one
    /// and `tagger` tagged it.
    fn decode(head_text: &str, tagger: &Tagger) -> Option<TreeLine> {
        let (_, rest) = head_text.split_once('\n')?;
        let (line, _) = rest.split_once('\n')?;
        let (body, tag) = line.strip_prefix(TreeLine::PREFIX)?.rsplit_once(" mac=")?;
        let rest = body.strip_prefix("end=")?;
        let (end, rest) = rest.split_once(" leaf=")?;
        let (leaf, tree) = rest.split_once(" tree=")?;
        let mut leaf_bytes = [0; merkle::HASH_LEN];
        hex::decode_to_slice(leaf, &mut leaf_bytes).ok()?;
        let parsed = TreeLine { end: end.parse().ok()?, leaf: leaf_bytes, tree: CompactTree::from_hex(tree).ok()? };
        let expected = tagger.tag(format!("salve audit tree v1\n{}", parsed.body()).as_bytes());
        (expected == tag).then_some(parsed)
    }
}

/// The origin line of the checkpoints a runner key signs: names the log by
/// the key that keeps it.
pub fn checkpoint_origin(key_id: &str) -> String {
    format!("salve audit log {key_id}")
}

/// The log's signed checkpoints: the latest, kept in `audit.head` after
/// the anchor line, and the runner key that signs new ones, once given.
struct Checkpoints {
    signer: Option<Arc<PrivateKey>>,
    /// Tags the anchor (derived from `signer`).
    tagger: Option<Tagger>,
    /// The latest signed checkpoint (empty if none yet).
    note: String,
    /// The tree size `note` covers.
    size: u64,
    /// The frontier at `note`, as the line kept with it (empty if none).
    tree_line: String,
    /// Where each new checkpoint also goes, if anywhere.
    witnesses: Option<witness::Witnesses>,
}

/// What one group commit makes durable: everything up to `anchor`, and,
/// when a checkpoint is due, the tree there (its root is signed).
struct Durable {
    anchor: Anchor,
    tree: Option<TreeLine>,
}

impl State {
    fn count_calls(&mut self, interface: &str, outcome: &'static str, n: u64) {
        match self.calls.iter_mut().find(|c| c.interface == interface && c.outcome == outcome) {
            Some(calls) => calls.count += n,
            None => self.calls.push(HostCalls { interface: interface.to_string(), outcome, count: n }),
        }
    }

    fn durable(&mut self, checkpoint: bool) -> Durable {
        let tree = (self.checkpoint_due || checkpoint).then(|| TreeLine {
            end: self.last.end,
            leaf: self.last_leaf,
            tree: self.tree.clone(),
        });
        self.checkpoint_due = false;
        Durable { anchor: self.last.clone(), tree }
    }
}

/// The message a seal signs.
pub fn seal_message(job: &str, prev: &str) -> Vec<u8> {
    let mut message = SEAL_CONTEXT.to_vec();
    message.extend_from_slice(job.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(prev.as_bytes());
    message
}

/// What a record's `mac` is keyed by: derived from the runner key, so only
/// the runner can tag.
#[derive(Clone)]
struct Tagger([u8; 32]);

/// Length of a record's tag, in bytes (hex doubles it).
const TAG_LEN: usize = 16;
/// The suffix a tag adds before the hash: `,"mac":"<32 hex>"`.
const TAG_SUFFIX_LEN: usize = r#","mac":"""#.len() + 2 * TAG_LEN;

impl Tagger {
    fn new(key: &PrivateKey) -> Tagger {
        Tagger(key.derive("audit record tag"))
    }

    /// The tag of `body`: a record as it reads without `mac` and `hash`.
    fn tag(&self, body: &[u8]) -> String {
        hex::encode(&crate::keys::hmac_sha256(&self.0, body)[..TAG_LEN])
    }

    /// The tag of an anchor and the size of the checkpoint kept with it.
    fn anchor_tag(&self, anchor: &Anchor, checkpoint_size: u64) -> String {
        let message =
            format!("salve audit anchor v1\n{} {} {} {checkpoint_size}", anchor.head.seq, anchor.head.hash, anchor.end);
        self.tag(message.as_bytes())
    }

    /// Whether `line` (a whole record) carries this key's tag.
    fn tagged(&self, line: &[u8]) -> bool {
        let Some((body, _)) = split_hash(line) else { return false };
        // `body` ends `,"mac":"<tag>"}`.
        let Some(start) = body.len().checked_sub(TAG_SUFFIX_LEN + 1) else { return false };
        let (untagged, suffix) = body.split_at(start);
        let Some(tag) = suffix.strip_prefix(br#","mac":""#).and_then(|t| t.strip_suffix(b"\"}")) else {
            return false;
        };
        let mut untagged = untagged.to_vec();
        untagged.push(b'}');
        // Both hex of the same length; a timing difference tells nothing
        // an attacker who can read the log does not already know.
        self.tag(&untagged).as_bytes() == tag
    }
}

/// Whether `line` carries a tag at all (by whatever key).
fn has_tag(line: &[u8]) -> bool {
    let Some((body, _)) = split_hash(line) else { return false };
    body.len() > TAG_SUFFIX_LEN
        && body[body.len() - TAG_SUFFIX_LEN - 1..].starts_with(br#","mac":""#)
        && body[body.len() - 2 * TAG_LEN - 2..body.len() - 2].iter().all(u8::is_ascii_hexdigit)
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
    /// Serializes anchor writes, and holds the `seq` of the last one, so the
    /// anchor never moves backwards.
    anchored: Mutex<u64>,
    synced: Notify,
    /// Number of `fdatasync` calls on the log, for the benchmarks.
    syncs: AtomicU64,
    /// How long each `fdatasync` of the log took, for the metrics.
    sync_seconds: Mutex<Histogram>,
    /// Taken with the anchor lock held.
    checkpoints: Mutex<Checkpoints>,
    /// Bytes of room kept for rollbacks and outcomes (see
    /// [`AuditLog::set_reserve`]).
    reserve: AtomicU64,
}

struct State {
    /// The last record appended (buffered or not), and where it ends.
    last: Anchor,
    /// The Merkle tree over every record appended, as its frontier.
    tree: CompactTree,
    /// The leaf hash of the last record appended.
    last_leaf: merkle::Hash,
    /// A seal was appended since the last checkpoint: the next sync signs
    /// one (a job's outcome is checkpointed with its seal's group commit).
    checkpoint_due: bool,
    /// Tags each record, when the log is kept by a runner key.
    tagger: Option<Tagger>,
    /// Serialized records not yet written to the file.
    buf: Vec<u8>,
    /// Highest `seq` made durable.
    synced: u64,
    /// Whether an `fdatasync` is in flight.
    syncing: bool,
    broken: Option<String>,
    /// The hash of each job's last record, for the next one's `job_prev`.
    jobs: HashMap<String, String>,
    /// Host calls recorded since the log was opened, by interface and
    /// outcome (a handful of pairs: searched in order).
    calls: Vec<HostCalls>,
}

/// How many host calls of one interface ended one way, since the log was
/// opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCalls {
    /// The capability's interface (`fs`, `exec`, `http`, `journal`, ...).
    pub interface: String,
    /// How the calls ended: `ok`, `denied`, `not-found`, `invalid`, `failed`.
    pub outcome: &'static str,
    pub count: u64,
}

/// What the log counted since it was opened, for `salve serve`'s metrics.
#[derive(Debug, Clone, Default)]
pub struct AuditStats {
    pub calls: Vec<HostCalls>,
    /// How long each `fdatasync` of the log took.
    pub sync: Histogram,
}

#[derive(Serialize)]
struct Envelope<'a> {
    seq: u64,
    prev: &'a str,
    #[serde(serialize_with = "as_display")]
    ts: humantime::Rfc3339Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
    /// The hash of the job's record before this one (none for its first):
    /// a job's records link up, so an evidence bundle shows that none of
    /// them was left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    job_prev: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

fn as_display<S: serde::Serializer>(value: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, kept by no key: no
    /// record is tagged and no checkpoint signed, so the log shows a change
    /// only to someone who kept an earlier head (for `--dangerous-unsigned`
    /// use and tests). Records after the anchor were never acknowledged as
    /// durable: those that chain correctly are kept; from the first that
    /// does not (a write a crash cut short), the rest is dropped, and the
    /// opening record says how many bytes.
    ///
    /// # Errors
    /// [`AuditError::Truncated`] or [`AuditError::BadAnchor`] when the log
    /// does not reach, or does not match, its anchor: the runner refuses to
    /// run on a log that may have been tampered with.
    /// [`AuditError::KeyNeeded`] when the log holds a signed checkpoint.
    pub fn open(dir: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, None)
    }

    /// Opens the log in `dir` kept by the runner `key`: its records are
    /// tagged and its checkpoints signed with it. Opening is strict: the
    /// signed checkpoint in `audit.head` must verify with `key`, the log
    /// must hold every record it covers unchanged, and every complete
    /// record past it must carry this key's tag (records this runner wrote
    /// and had not yet checkpointed when it stopped). Only crash debris
    /// (a torn last line, zero-filled pages, tagged records a lost page cut
    /// off the chain) is dropped, and the opening record says how many
    /// bytes.
    ///
    /// # Errors
    /// As [`AuditLog::open`], and [`AuditError::Appended`] for a complete
    /// record past the checkpoint that this key did not tag;
    /// [`AuditError::BadAnchor`] for a checkpoint this key did not sign.
    pub fn open_keyed(dir: &Path, key: Arc<PrivateKey>) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(dir, Some(key))
    }

    fn open_with(dir: &Path, key: Option<Arc<PrivateKey>>) -> Result<AuditLog, AuditError> {
        let path = dir.join(LOG_FILE);
        let open_err = |source| AuditError::Open { path: path.clone(), source };
        let bad = |reason: String| AuditError::BadAnchor { path: path.clone(), reason };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(open_err)?;
        let file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(&path).map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!(path = %path.display(), "another salve process holds the audit log; waiting for it");
                file.lock().map_err(open_err)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let len = file.metadata().map_err(open_err)?.len();
        let head_path = dir.join(HEAD_FILE);
        let head_text = match std::fs::read_to_string(&head_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_err(e)),
        };
        let note = head_text.as_deref().and_then(checkpoint_note).unwrap_or_default().to_string();
        check_checkpoint_key(&note, key.as_deref()).map_err(|e| match e {
            KeyCheck::Needed(origin) => {
                AuditError::KeyNeeded { path: path.clone(), found: format!("its signed checkpoint names {origin:?}") }
            }
            KeyCheck::Bad(reason) => bad(reason),
        })?;
        let tagger = key.as_deref().map(Tagger::new);
        let anchor_tag = head_text.as_deref().and_then(Anchor::decode_tag).map(str::to_string);
        let anchor = match &head_text {
            Some(text) => Anchor::decode(text).ok_or_else(|| bad(format!("{HEAD_FILE} is unreadable")))?,
            None if len == 0 => Anchor { head: Head::genesis(), end: 0 },
            None => return Err(bad(format!("{HEAD_FILE} is missing, but the log holds {len} bytes"))),
        };
        match (&tagger, &anchor_tag) {
            (None, Some(_)) => {
                let found = format!("{HEAD_FILE}'s anchor is tagged");
                return Err(AuditError::KeyNeeded { path, found });
            }
            (Some(tagger), Some(tag)) if tagger.anchor_tag(&anchor, checkpoint_size(&note)) != *tag => {
                return Err(bad(format!(
                    "the anchor's tag does not verify with runner key {}: {HEAD_FILE} was rewritten, or its \
                     checkpoint removed",
                    key.as_ref().map_or("", |k| k.id.as_str())
                )));
            }
            _ => {}
        }

        if len < anchor.end {
            return Err(AuditError::Truncated { path, len, seq: anchor.head.seq, end: anchor.end });
        }
        if anchor.head.seq > 0 {
            let anchored = record_ending_at(&file, anchor.end).map_err(open_err)?;
            match anchored.map(|line| parse_record_head(&line)) {
                Some(Ok(head)) if head == anchor.head => {}
                _ => {
                    return Err(bad(format!(
                        "the record ending at byte {} is not record {}",
                        anchor.end, anchor.head.seq
                    )));
                }
            }
        }
        let (last, kept_end) = follow_chain(&file, anchor.clone(), len).map_err(open_err)?;
        let dropped = len - kept_end;
        let scan =
            rebuild_tree(&path, &note, head_text.as_deref(), kept_end, tagger.as_ref()).map_err(|e| match e {
                TreeError::Io(e) => open_err(e),
                TreeError::Bad(reason) => bad(reason),
            })?;
        // A log first opened with a key (written by an older salve, or
        // without one) has no tag anywhere: it is adopted as it is, and
        // checkpointed at once. Otherwise every record past the checkpoint
        // must be this runner's, chained, and so must any intact record in
        // what a crash left.
        let adopted = tagger.is_some() && anchor_tag.is_none() && !scan.any_tagged;
        if let Some(tagger) = tagger.as_ref().filter(|_| !adopted) {
            if anchor_tag.is_none() && len > 0 {
                return Err(bad(format!(
                    "{HEAD_FILE}'s anchor carries no tag, but the log's records do: the tag was stripped"
                )));
            }
            let checkpointed = scan.checkpoint_size;
            if let Some(found) = scan.untagged_past_checkpoint {
                return Err(AuditError::Appended { path, checkpointed, found });
            }
            let debris = read_from(&file, kept_end, len).map_err(open_err)?;
            if let Some(found) = untagged_record(tagger, &debris) {
                return Err(AuditError::Appended { path, checkpointed, found });
            }
        }
        if adopted && len > 0 {
            tracing::warn!(
                path = %path.display(),
                "adopting an audit log that carries no tags (written without a runner key): it is checkpointed now"
            );
        }
        if dropped > 0 {
            file.set_len(kept_end).map_err(open_err)?;
            file.sync_data().map_err(open_err)?;
        }
        let head_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&head_path)
            .map_err(open_err)?;
        let tree_line = match (&tagger, &scan.tree_line) {
            (Some(tagger), Some(line)) => line.encode(tagger),
            _ => String::new(),
        };
        let head_text = anchor.encode_tagged(tagger.as_ref(), scan.checkpoint_size) + &tree_line + &note;
        head_file
            .write_all_at(head_text.as_bytes(), 0)
            .and_then(|()| head_file.set_len(head_text.len() as u64))
            .and_then(|()| head_file.sync_data())
            .map_err(open_err)?;
        sync_dir(dir).map_err(open_err)?;
        let (tree, note_size) = (scan.tree, scan.checkpoint_size);
        let log = AuditLog {
            shared: Arc::new(Shared {
                path,
                file,
                head_file,
                state: Mutex::new(State {
                    last,
                    tree,
                    // Set by the opening record, appended below.
                    last_leaf: [0; merkle::HASH_LEN],
                    tagger,
                    checkpoint_due: false,
                    buf: Vec::new(),
                    synced: anchor.head.seq,
                    syncing: false,
                    broken: None,
                    jobs: scan.jobs,
                    calls: Vec::new(),
                }),
                anchored: Mutex::new(anchor.head.seq),
                reserve: AtomicU64::new(DEFAULT_RESERVE),
                synced: Notify::new(),
                syncs: AtomicU64::new(0),
                sync_seconds: Mutex::default(),
                checkpoints: Mutex::new(Checkpoints {
                    tagger: key.as_deref().map(Tagger::new),
                    signer: key,
                    note,
                    size: note_size,
                    tree_line,
                    witnesses: None,
                }),
            }),
        };
        log.append(
            None,
            &Event::Opened {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                dropped_torn_bytes: (dropped > 0).then_some(dropped),
                adopted_untagged: (adopted && len > 0).then_some(true),
            },
        )?;
        if adopted && len > 0 {
            log.shared.state.lock().unwrap_or_else(|p| p.into_inner()).checkpoint_due = true;
        }
        Ok(log)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The last record appended (not necessarily durable yet).
    pub fn head(&self) -> Head {
        self.state().last.head.clone()
    }

    /// Bytes the log can still grow by: the free space of its file system
    /// (as an unprivileged user sees it) and what RLIMIT_FSIZE leaves it,
    /// less what is buffered.
    pub fn room(&self) -> std::io::Result<u64> {
        let buffered = self.state().buf.len() as u64;
        let stat = rustix::fs::fstatvfs(&self.shared.file)?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let len = self.shared.file.metadata()?.len() + buffered;
        let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current;
        Ok(free.saturating_sub(buffered).min(limit.map_or(u64::MAX, |limit| limit.saturating_sub(len))))
    }

    /// Sets the room kept for rollbacks and outcomes ([`DEFAULT_RESERVE`]
    /// unless set): a job does not start, and `apply`'s mutating calls are
    /// refused, once the log has less room than this, so that the rollback
    /// that follows and the outcome can still be audited.
    pub fn set_reserve(&self, bytes: u64) {
        self.shared.reserve.store(bytes, Ordering::Relaxed);
    }

    /// The room kept for rollbacks and outcomes.
    pub fn reserve(&self) -> u64 {
        self.shared.reserve.load(Ordering::Relaxed)
    }

    /// Why a change may not be made now: the log has less room than its
    /// reserve (or its room cannot be read).
    pub fn short_of_room(&self) -> Option<String> {
        let wanted = self.reserve();
        match self.room() {
            Ok(room) if room >= wanted => None,
            Ok(room) => Some(format!(
                "the audit log has {room} bytes of room left, under the {wanted} kept for rollbacks and outcomes \
                 (free space under {}, or raise the file size limit)",
                self.shared.path.display()
            )),
            Err(e) => Some(format!("the audit log's room cannot be read: {e}")),
        }
    }

    /// How many `fdatasync` calls the log has made: with group commit, fewer
    /// than the durable appends.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Counts `n` host calls of `interface` that ended as `outcome` but were
    /// not recorded one by one (refusals past the per-phase bound, which
    /// the log holds as one `refusals-suppressed` record), for
    /// [`AuditLog::stats`].
    pub fn count_unrecorded_calls(&self, interface: &str, outcome: &'static str, n: u64) {
        self.state().count_calls(interface, outcome, n);
    }

    /// The host calls recorded (or counted) and the `fdatasync` latencies,
    /// since the log was opened.
    pub fn stats(&self) -> AuditStats {
        let calls = self.state().calls.clone();
        let sync = self.shared.sync_seconds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        AuditStats { calls, sync }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation of State is a single assignment after the fallible
        // work, so a lock poisoned by a panic still guards consistent data.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one record to the chain (buffered) and returns its `seq`.
    pub fn append(&self, job: Option<&str>, event: &Event<'_>) -> Result<u64, AuditError> {
        self.append_sized(job, event).map(|(seq, _)| seq)
    }

    /// [`AuditLog::append`], also returning the record's size in bytes.
    pub fn append_sized(&self, job: Option<&str>, event: &Event<'_>) -> Result<(u64, u64), AuditError> {
        let mut state = self.state();
        let end = state.last.end;
        let seq = self.append_locked(&mut state, job, event)?;
        Ok((seq, state.last.end - end))
    }

    fn append_locked(&self, state: &mut State, job: Option<&str>, event: &Event<'_>) -> Result<u64, AuditError> {
        if let Some(reason) = &state.broken {
            return Err(AuditError::Broken(reason.clone()));
        }
        let seq = state.last.head.seq + 1;
        let envelope = Envelope {
            seq,
            prev: &state.last.head.hash,
            ts: humantime::format_rfc3339_micros(SystemTime::now()),
            job,
            job_prev: job.and_then(|job| state.jobs.get(job)).map(String::as_str),
            event,
        };
        let mut line = serde_json::to_vec(&envelope).map_err(|e| AuditError::Broken(e.to_string()))?;
        if let Some(tagger) = &state.tagger {
            let tag = tagger.tag(&line);
            line.pop();
            line.extend_from_slice(br#","mac":""#);
            line.extend_from_slice(tag.as_bytes());
            line.extend_from_slice(b"\"}");
        }
        let hash = hex::encode(Sha256::digest(&line));
        line.pop(); // the closing brace; the hash field goes last
        let start = state.buf.len();
        state.buf.extend_from_slice(&line);
        state.buf.extend_from_slice(br#","hash":""#);
        state.buf.extend_from_slice(hash.as_bytes());
        state.buf.extend_from_slice(b"\"}\n");
        let end = state.last.end + (state.buf.len() - start) as u64;
        // The leaf is the whole line, without its newline.
        let record_end = state.buf.len() - 1;
        let leaf = merkle::leaf_hash(&state.buf[start..record_end]);
        state.tree.append(leaf).map_err(|e| AuditError::Broken(e.to_string()))?;
        state.last_leaf = leaf;
        if let Some(job) = job {
            match state.jobs.get_mut(job) {
                Some(last) => last.clone_from(&hash),
                None => {
                    state.jobs.insert(job.to_string(), hash.clone());
                }
            }
        }
        state.last = Anchor { head: Head { seq, hash }, end };
        if let Event::Call { interface, outcome, .. } = event {
            state.count_calls(interface, outcome.name(), 1);
        }
        if state.buf.len() >= WRITE_THRESHOLD {
            self.write_out(state)?;
        }
        Ok(seq)
    }

    /// Appends one record and returns once it is durable.
    pub async fn append_durable(&self, job: Option<&str>, event: &Event<'_>) -> Result<u64, AuditError> {
        let seq = self.append(job, event)?;
        self.sync(seq).await?;
        Ok(seq)
    }

    /// Seals a job: appends a record signed by the runner key over the job
    /// id and the hash of the record before it, and makes it durable.
    pub async fn seal(&self, job: &str, key: &PrivateKey) -> Result<u64, AuditError> {
        let seq = {
            let mut state = self.state();
            let signature = hex::encode(key.signing.sign(&seal_message(job, &state.last.head.hash)).to_bytes());
            let event = Event::Seal { key_id: &key.id, signature: &signature };
            let seq = self.append_locked(&mut state, Some(job), &event)?;
            state.checkpoint_due = true;
            seq
        };
        self.sync(seq).await?;
        Ok(seq)
    }

    /// Returns once every record up to `seq` is durable.
    ///
    /// The first caller to find no `fdatasync` in flight leads: it syncs
    /// everything appended so far, for itself and for every caller that
    /// arrives meanwhile (they wait to be woken). On a multi-threaded
    /// runtime the leader syncs on its own thread (`block_in_place`, no
    /// hand-off to another thread); otherwise on the blocking pool, in a
    /// task that finishes even if the leader stops waiting.
    pub async fn sync(&self, seq: u64) -> Result<(), AuditError> {
        enum Step<'a> {
            Wait(std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>),
            Lead(Durable),
        }
        loop {
            let step = {
                let mut state = self.state();
                if let Some(reason) = &state.broken {
                    return Err(AuditError::Broken(reason.clone()));
                }
                if state.synced >= seq {
                    return Ok(());
                }
                if state.syncing {
                    // Registered before the lock is released, so the wake-up
                    // of the sync in flight cannot be missed.
                    let mut notified = Box::pin(self.shared.synced.notified());
                    notified.as_mut().enable();
                    Step::Wait(notified)
                } else {
                    self.write_out(&mut state)?;
                    state.syncing = true;
                    Step::Lead(state.durable(false))
                }
            };
            match step {
                Step::Wait(notified) => notified.await,
                Step::Lead(target) => {
                    let shared = Arc::clone(&self.shared);
                    let flavor = tokio::runtime::Handle::current().runtime_flavor();
                    if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
                        tokio::task::block_in_place(move || shared.finish_sync(target));
                    } else {
                        let mut notified = Box::pin(self.shared.synced.notified());
                        notified.as_mut().enable();
                        tokio::task::spawn_blocking(move || shared.finish_sync(target));
                        notified.await;
                    }
                }
            }
        }
    }

    /// Makes everything appended so far durable, blocking the thread. For
    /// the end of a command and for tests.
    pub fn sync_blocking(&self) -> Result<(), AuditError> {
        let mut state = self.state();
        if let Some(reason) = &state.broken {
            return Err(AuditError::Broken(reason.clone()));
        }
        self.write_out(&mut state)?;
        // The end of a command: what it appended is checkpointed too.
        let target = state.durable(true);
        match self.shared.make_durable(&target) {
            Ok(()) => {
                state.synced = state.synced.max(target.anchor.head.seq);
                Ok(())
            }
            Err(e) => {
                let reason = format!("fdatasync failed: {e}");
                state.broken = Some(reason.clone());
                Err(AuditError::Broken(reason))
            }
        }
    }

    /// Signs a checkpoint with `key` at every group commit that covers a
    /// seal (so each job's outcome is checkpointed with its seal, for one
    /// signature and no extra `fdatasync`), at [`AuditLog::sync_blocking`]
    /// and on close.
    ///
    /// A log opened without a key gets one this way (its records from here
    /// on are tagged); [`AuditLog::open_keyed`] is what makes opening
    /// strict.
    pub fn sign_checkpoints(&self, key: Arc<PrivateKey>) {
        self.state().tagger = Some(Tagger::new(&key));
        let mut checkpoints = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        checkpoints.tagger = Some(Tagger::new(&key));
        checkpoints.signer = Some(key);
    }

    /// Sends every checkpoint signed from now on (and the latest, at once)
    /// to `witness` too: see [`witness`].
    pub fn add_witness(&self, witness: Witness) {
        let mut checkpoints = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        let latest = (!checkpoints.note.is_empty()).then(|| checkpoints.note.clone());
        checkpoints.witnesses.get_or_insert_with(witness::Witnesses::start).add(witness, latest.as_deref());
    }

    /// Tries every witness now, waiting up to `wait`: how many checkpoints
    /// still wait for one (`None`: no witness, or no answer in time).
    pub fn flush_witnesses(&self, wait: std::time::Duration) -> Option<usize> {
        let checkpoints = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        checkpoints.witnesses.as_ref()?.flush(wait)
    }

    /// The latest signed checkpoint (a C2SP signed note), if there is one.
    pub fn latest_checkpoint(&self) -> Option<String> {
        let checkpoints = self.shared.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        (!checkpoints.note.is_empty()).then(|| checkpoints.note.clone())
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
    /// `fdatasync` the log, then move the anchor forward (never back).
    ///
    /// The anchor is written after the log is durable, and not synced
    /// itself: after a crash it may lag behind the log (records past it are
    /// then re-validated at open), but it never claims a record the log
    /// does not durably hold. One `fdatasync` per group commit, not two.
    ///
    /// A checkpoint due is signed here, after the log is durable, and
    /// written with the anchor: it never covers a record the log does not
    /// durably hold.
    fn make_durable(&self, target: &Durable) -> std::io::Result<()> {
        self.sync_log()?;
        self.write_anchor(target)
    }

    fn sync_log(&self) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        self.file.sync_data()?;
        self.sync_seconds.lock().unwrap_or_else(|p| p.into_inner()).observe(started.elapsed());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the anchor to `target` (never back), signing the checkpoint
    /// due there, if any.
    fn write_anchor(&self, target: &Durable) -> std::io::Result<()> {
        let mut anchored = self.anchored.lock().unwrap_or_else(|p| p.into_inner());
        let seq = target.anchor.head.seq;
        if seq < *anchored {
            // A later commit anchored further first (its anchor is written
            // after its waiters wake, so commits can finish out of order):
            // the anchor never moves back, and a checkpoint due here is
            // left to the next commit, which covers this one.
            // (`try_lock`: `sync_blocking` holds the state while it anchors;
            // it checkpoints everything itself.)
            drop(anchored);
            if target.tree.is_some()
                && let Ok(mut state) = self.state.try_lock()
            {
                state.checkpoint_due = true;
            }
            return Ok(());
        }
        let mut checkpoints = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        let signed = match (&checkpoints.signer, &checkpoints.tagger, &target.tree) {
            (Some(key), Some(tagger), Some(tree)) if seq > checkpoints.size => {
                let checkpoint = Checkpoint::new(&checkpoint_origin(&key.id), seq, tree.tree.root());
                let note = checkpoint.sign(&key.signing, &key.id).map_err(std::io::Error::other)?;
                Some((note, tree.encode(tagger)))
            }
            _ => None,
        };
        if let Some((note, tree_line)) = signed {
            if let Some(witnesses) = &checkpoints.witnesses {
                witnesses.send(&note);
            }
            (checkpoints.note, checkpoints.size, checkpoints.tree_line) = (note, seq, tree_line);
        } else if seq <= *anchored {
            return Ok(());
        }
        let text = target.anchor.encode_tagged(checkpoints.tagger.as_ref(), checkpoints.size)
            + &checkpoints.tree_line
            + &checkpoints.note;
        self.head_file.write_all_at(text.as_bytes(), 0)?;
        self.head_file.set_len(text.len() as u64)?;
        *anchored = (*anchored).max(seq);
        Ok(())
    }

    /// The body of a group commit, on the blocking pool. The waiters are
    /// woken once the log is durable; the anchor and the checkpoint (a
    /// signature) follow, so signing does not hold up the next commit.
    fn finish_sync(&self, target: Durable) {
        let result = self.sync_log();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.syncing = false;
        match &result {
            Ok(()) => state.synced = state.synced.max(target.anchor.head.seq),
            Err(e) => state.broken = Some(format!("fdatasync failed: {e}")),
        }
        drop(state);
        self.synced.notify_waiters();
        if result.is_ok()
            && let Err(e) = self.write_anchor(&target)
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.broken = Some(format!("the anchor could not be written: {e}"));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = state.last.head.seq;
        let unsigned = self.checkpoints.get_mut().is_ok_and(|c| c.signer.is_some() && seq > c.size);
        if state.broken.is_none() && (!state.buf.is_empty() || unsigned) {
            let written = (&self.file).write_all(&state.buf);
            let last = state.durable(true);
            if written.and_then(|()| self.make_durable(&last)).is_err() {
                tracing::error!(path = %self.path.display(), "could not flush the audit log on close");
            }
        }
        let checkpoints = self.checkpoints.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(witnesses) = &checkpoints.witnesses {
            match witnesses.flush(std::time::Duration::from_secs(3)) {
                Some(0) => {}
                waiting => tracing::error!(
                    waiting = waiting.map_or_else(|| "some".to_string(), |n| n.to_string()),
                    "checkpoints did not reach every witness before the log closed; the next start sends the latest"
                ),
            }
        }
    }
}

enum TreeError {
    Io(std::io::Error),
    Bad(String),
}

/// What reading the whole log at open found.
struct Scan {
    tree: CompactTree,
    /// The size the checkpoint covers (0 if none).
    checkpoint_size: u64,
    /// The frontier at the checkpoint, to keep in `audit.head`.
    tree_line: Option<TreeLine>,
    /// Whether any record carries a tag.
    any_tagged: bool,
    /// The first record past the checkpoint that does not carry the runner
    /// key's tag or does not chain, described.
    untagged_past_checkpoint: Option<String>,
    /// The hash of each job's last record.
    jobs: HashMap<String, String>,
}

enum KeyCheck {
    /// The log has a signed checkpoint, but no key was given.
    Needed(String),
    Bad(String),
}

/// The signed checkpoint `note` (if any) must be signed by `key`; a log
/// that has one opens only with its key.
fn check_checkpoint_key(note: &str, key: Option<&PrivateKey>) -> Result<(), KeyCheck> {
    if note.is_empty() {
        return Ok(());
    }
    let Some(key) = key else {
        let origin = Checkpoint::parse_unverified(note.as_bytes()).map(|(c, _)| c.origin).unwrap_or_default();
        return Err(KeyCheck::Needed(origin));
    };
    let verifier = checkpoint::Verifier::new(&key.id, key.signing.verifying_key())
        .map_err(|e| KeyCheck::Bad(format!("the runner key {} cannot verify checkpoints: {e}", key.id)))?;
    Checkpoint::open(note.as_bytes(), &checkpoint_origin(&key.id), &[verifier]).map(drop).map_err(|e| {
        KeyCheck::Bad(format!(
            "the signed checkpoint in {HEAD_FILE} does not verify with runner key {} ({e}): it was forged, or the log \
             is another runner's",
            key.id
        ))
    })
}

/// The size the (already checked) checkpoint `note` covers; 0 if none.
fn checkpoint_size(note: &str) -> u64 {
    Checkpoint::parse_unverified(note.as_bytes()).map_or(0, |(c, _)| c.size)
}

/// The bytes of `file` from `start` to `end`.
fn read_from(file: &File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut rest = vec![0; (end - start) as usize];
    file.read_exact_at(&mut rest, start)?;
    Ok(rest)
}

/// In crash debris (what follows the last record that chains), the first
/// complete, intact record this runner did not tag, described. Debris is
/// torn lines and zero-filled pages; an intact record there is either the
/// runner's own (tagged: its page before was lost) or appended by someone.
fn untagged_record(tagger: &Tagger, debris: &[u8]) -> Option<String> {
    let mut lines = debris.split(|&b| b == b'\n');
    lines.next_back(); // after the last newline: at most a torn line
    lines.filter(|line| parse_record_head(line).is_ok()).find(|line| !tagger.tagged(line)).map(|line| {
        let seq = parse_record_head(line).map_or(0, |h| h.seq);
        format!("record {seq}, after the end of the chain, carries no tag of this runner")
    })
}

/// The Merkle tree over the records of the log at `path` up to byte `end`
/// (one leaf per line), checked against the signed checkpoint `note` that
/// `audit.head` kept: the log must still hold every record it covers,
/// unchanged. Given a `tagger`, also looks at each record past the
/// checkpoint: it must carry the tag and chain to the one before.
///
/// When `audit.head` also keeps the frontier at the checkpoint (a
/// [`TreeLine`] this `tagger` tagged, hashing to the signed root, whose
/// last record is still there unchanged), only the records past the
/// checkpoint are hashed: a rewrite of the records before it is then left
/// to `salve audit verify`, which checks every record against the signed
/// root. Each job's last record is read from the whole log either way.
fn rebuild_tree(
    path: &Path,
    note: &str,
    head_text: Option<&str>,
    end: u64,
    tagger: Option<&Tagger>,
) -> Result<Scan, TreeError> {
    use std::io::{BufRead, Read, Seek};
    let covered = match note {
        "" => None,
        note => Some(
            Checkpoint::parse_unverified(note.as_bytes())
                .map_err(|e| TreeError::Bad(format!("the signed checkpoint in {HEAD_FILE} does not parse: {e}")))?
                .0,
        ),
    };
    let rewritten = |size: u64| {
        TreeError::Bad(format!(
            "the log's first {size} records do not hash to the root its signed checkpoint names: the log was rewritten"
        ))
    };
    if covered.as_ref().is_some_and(|c| c.size == 0 && c.root != merkle::EMPTY_ROOT) {
        return Err(rewritten(0));
    }
    let covered_size = covered.as_ref().map_or(0, |c| c.size);
    let mut file = File::open(path).map_err(TreeError::Io)?;
    let jobs = last_record_of_each_job(&file, end).map_err(TreeError::Io)?;
    let kept = match (tagger, &covered, head_text) {
        (Some(tagger), Some(checkpoint), Some(text)) => TreeLine::decode(text, tagger)
            .map(|line| trusted_tree_line(&file, &line, checkpoint, end).map(|head| head.map(|head| (line, head))))
            .transpose()
            .map_err(TreeError::Io)?
            .flatten(),
        _ => None,
    };
    // From the kept frontier on, or from the start.
    let (mut tree, mut offset, mut prev, mut any_tagged) = match &kept {
        Some((line, head)) => (line.tree.clone(), line.end, Some(head.clone()), true),
        None => (CompactTree::new(), 0, None::<Head>, false),
    };
    let mut tree_line = kept.map(|(line, _)| line);
    file.seek(std::io::SeekFrom::Start(offset)).map_err(TreeError::Io)?;
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file.take(end - offset));
    let mut untagged = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(TreeError::Io)? == 0 {
            break;
        }
        offset += line.len() as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let leaf = merkle::leaf_hash(&line);
        let size = tree.append(leaf).map_err(|e| TreeError::Bad(e.to_string()))? + 1;
        any_tagged |= has_tag(&line);
        if let Some(checkpoint) = &covered
            && checkpoint.size == size
        {
            if checkpoint.root != tree.root() {
                return Err(rewritten(size));
            }
            tree_line = Some(TreeLine { end: offset, leaf, tree: tree.clone() });
        }
        let Some(tagger) = tagger else { continue };
        if size < covered_size || untagged.is_some() {
            continue;
        }
        // From the last checkpointed record on: each record's own hash,
        // and past the checkpoint its tag and its link to the one before.
        let head = parse_record_head(&line).ok();
        if size > covered_size {
            let chains = match (&prev, &head) {
                (Some(prev), Some(head)) => {
                    head.seq == prev.seq + 1 && parse_prev(&line).is_some_and(|p| p == prev.hash)
                }
                (None, Some(head)) => head.seq == size && (size > 1 || parse_prev(&line).is_some_and(|p| p == GENESIS)),
                _ => false,
            };
            if !tagger.tagged(&line) {
                untagged = Some(format!("record {size} carries no tag of this runner"));
            } else if !chains {
                untagged = Some(format!("record {size} does not chain to the record before it"));
            }
        }
        prev = head;
    }
    match covered {
        Some(checkpoint) if tree.size() < checkpoint.size => Err(TreeError::Bad(format!(
            "the log holds {} records, but its signed checkpoint covers {}: records were cut off its end",
            tree.size(),
            checkpoint.size
        ))),
        _ => Ok(Scan {
            tree,
            checkpoint_size: covered_size,
            tree_line: tree_line.filter(|_| covered_size > 0),
            any_tagged,
            untagged_past_checkpoint: untagged,
            jobs,
        }),
    }
}

/// Whether the (tagged) frontier `line` may stand for the records the
/// `checkpoint` covers: it hashes to the signed root, and the record it
/// ends at is still there, the checkpoint's last, unchanged. Returns that
/// record's head; `None` when anything differs (the log is then read
/// whole, which names what).
fn trusted_tree_line(file: &File, line: &TreeLine, checkpoint: &Checkpoint, end: u64) -> std::io::Result<Option<Head>> {
    if line.tree.size() != checkpoint.size || line.tree.root() != checkpoint.root || line.end > end {
        return Ok(None);
    }
    let Some(record) = record_ending_at(file, line.end)? else { return Ok(None) };
    Ok(parse_record_head(&record)
        .ok()
        .filter(|head| head.seq == checkpoint.size && merkle::leaf_hash(&record) == line.leaf))
}

/// The hash of each job's last record in the log up to byte `end`: read
/// from each line's job id and hash field, without parsing or hashing it.
fn last_record_of_each_job(file: &File, end: u64) -> std::io::Result<HashMap<String, String>> {
    use std::io::{BufRead, Read};
    let mut jobs: HashMap<String, String> = HashMap::new();
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file.take(end));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(jobs);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if let Some(job) = record_job(&line)
            && let Some(hash) = claimed_hash(&line)
        {
            match jobs.get_mut(job.as_ref()) {
                Some(last) => hash.clone_into(last),
                None => {
                    jobs.insert(job.into_owned(), hash.to_string());
                }
            }
        }
    }
}

/// The line (without its newline) that ends at byte `end`, if any.
fn record_ending_at(file: &File, end: u64) -> std::io::Result<Option<Vec<u8>>> {
    if end == 0 {
        return Ok(None);
    }
    let mut tail = Vec::new();
    let mut start = end;
    loop {
        let chunk = start.min(64 * 1024);
        start -= chunk;
        let mut piece = vec![0; chunk as usize];
        file.read_exact_at(&mut piece, start)?;
        piece.extend_from_slice(&tail);
        tail = piece;
        if tail.last() != Some(&b'\n') {
            return Ok(None);
        }
        let body = &tail[..tail.len() - 1];
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if start == 0 {
            return Ok(Some(body.to_vec()));
        }
    }
}

/// Follows the chain from `anchor` to the end of the file; returns the last
/// record that chains correctly and the offset where it ends.
fn follow_chain(file: &File, anchor: Anchor, len: u64) -> std::io::Result<(Anchor, u64)> {
    let mut rest = vec![0; (len - anchor.end) as usize];
    file.read_exact_at(&mut rest, anchor.end)?;
    let mut last = anchor;
    let mut offset = 0usize;
    while let Some(newline) = rest[offset..].iter().position(|&b| b == b'\n') {
        let line = &rest[offset..offset + newline];
        let Ok(head) = parse_record_head(line) else { break };
        let chains = parse_prev(line).is_some_and(|prev| prev == last.head.hash);
        if head.seq != last.head.seq + 1 || !chains {
            break;
        }
        offset += newline + 1;
        last = Anchor { head, end: last.end + (newline + 1) as u64 };
    }
    let end = last.end;
    Ok((last, end))
}

/// The job a record belongs to, if any. Records start `{"seq":N,
/// "prev":"HEX","ts":"TIME"`, then `"job":"ID"` when they have one: read
/// from there, with a full parse only for an id that has escapes.
pub(crate) fn record_job(line: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    const TS: &[u8] = br#","ts":""#;
    const JOB: &[u8] = br#"","job":""#;
    let ts =
        ts_offset(line).or_else(|| line.windows(TS.len()).take(128).position(|w| w == TS).map(|i| i + TS.len()))?;
    let end_ts = ts + line[ts..].iter().take(64).position(|&b| b == b'"')?;
    let rest = line[end_ts..].strip_prefix(JOB)?;
    let id = &rest[..rest.iter().position(|&b| b == b'"')?];
    if !id.contains(&b'\\') {
        return std::str::from_utf8(id).ok().map(std::borrow::Cow::Borrowed);
    }
    #[derive(serde::Deserialize)]
    struct Job {
        job: String,
    }
    serde_json::from_slice::<Job>(line).ok().map(|j| std::borrow::Cow::Owned(j.job))
}

/// Where the time starts in a record salve wrote, `{"seq":N,"prev":"<64
/// hex>","ts":"`: at a fixed place after the digits, so opening a long log
/// does not search each line for it.
fn ts_offset(line: &[u8]) -> Option<usize> {
    let rest = line.strip_prefix(br#"{"seq":"#)?;
    let digits = rest.iter().take(20).take_while(|b| b.is_ascii_digit()).count();
    let rest = rest[digits..].strip_prefix(br#","prev":""#)?;
    let rest = rest.get(64..)?.strip_prefix(br#"","ts":""#)?;
    Some(line.len() - rest.len())
}

fn parse_prev(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Prev {
        prev: String,
    }
    let (body, _) = split_hash(line)?;
    serde_json::from_slice::<Prev>(&body).ok().map(|p| p.prev)
}

/// Checks one line's own hash and returns its `seq` and `hash`.
pub(crate) fn parse_record_head(line: &[u8]) -> Result<Head, String> {
    let (body, hash) = split_hash(line).ok_or("the line does not end with a hash field")?;
    if hex::encode(Sha256::digest(&body)) != hash {
        return Err("its hash does not match its content".into());
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let Seq { seq } = serde_json::from_slice(&body).map_err(|e| format!("not a record: {e}"))?;
    Ok(Head { seq, hash: hash.to_string() })
}

/// The hash a line claims (its last field), unchecked.
fn claimed_hash(line: &[u8]) -> Option<&str> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return None;
    }
    let suffix = &line[line.len() - HASH_SUFFIX_LEN..];
    let hash = suffix.strip_prefix(br#","hash":""#)?.strip_suffix(b"\"}")?;
    std::str::from_utf8(hash).ok().filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Splits a line into the bytes its hash covers and the hash it claims.
pub(crate) fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    let hash = claimed_hash(line)?;
    let rest = &line[..line.len() - HASH_SUFFIX_LEN];
    let mut body = rest.to_vec();
    body.push(b'}');
    Some((body, hash))
}

#[cfg(test)]
mod tests;
