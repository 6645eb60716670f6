use super::*;
use std::time::Duration;

fn event() -> Event<'static> {
    Event::Outcome { outcome: Ending::Succeeded, cause: None, rollback_cause: None }
}

fn verify(dir: &Path) -> Result<verify::Report, verify::VerifyError> {
    verify::verify_log(&dir.join(LOG_FILE), verify::Anchor::Required(dir.join(HEAD_FILE)), None)
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
    assert_eq!(next, head.seq + 2, "reopening appends an `opened` record, then continues");
    log.sync_blocking().unwrap();
    assert_eq!(verify(dir.path()).unwrap().records, next);
}

#[tokio::test]
async fn an_unacknowledged_tail_is_dropped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append_durable(None, &event()).await.unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"\0\0\0\0\n{\"seq\":3,\"prev\":\"ab").unwrap(); // zero-filled page, then a torn record

    let log = AuditLog::open(dir.path()).unwrap();
    log.sync_blocking().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().last().unwrap().contains(r#""dropped_torn_bytes":24"#), "{text}");
    verify(dir.path()).unwrap();
}

#[tokio::test]
async fn a_log_cut_below_its_anchor_or_without_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append_durable(None, &event()).await.unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{}\n", text.lines().next().unwrap())).unwrap();
    assert!(matches!(AuditLog::open(dir.path()), Err(AuditError::Truncated { seq: 2, .. })));

    std::fs::write(&path, &text).unwrap();
    std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
    assert!(matches!(AuditLog::open(dir.path()), Err(AuditError::BadAnchor { .. })));
}

#[tokio::test]
async fn a_rewritten_anchored_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append_durable(None, &event()).await.unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let text = std::fs::read_to_string(&path).unwrap().replace("succeeded", "sUcceeded");
    std::fs::write(&path, text).unwrap();
    assert!(matches!(AuditLog::open(dir.path()), Err(AuditError::BadAnchor { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_appends_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let before = log.sync_count();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { log.append_durable(Some("job"), &event()).await.unwrap() })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let syncs = log.sync_count() - before;
    assert!(syncs < 64, "64 durable appends took {syncs} fdatasyncs");
    assert_eq!(verify(dir.path()).unwrap().records, 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_waiting_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    for _ in 0..20 {
        let seq = log.append(None, &event()).unwrap();
        // Start a sync and abandon it at once, mid-flight.
        let _ = tokio::time::timeout(Duration::ZERO, log.sync(seq)).await;
        let next = log.append(None, &event()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), log.sync(next)).await.expect("a later sync completes").unwrap();
    }
}

#[tokio::test]
async fn a_failed_write_breaks_the_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.sync_blocking().unwrap();
    // Swap the writer's file for one opened read-only: every write fails
    // the way a full or failing disk would.
    // One guard, taken once: a second `state()` in the same statement
    // would wait on the first for ever.
    let (last, tree, last_leaf) = {
        let state = log.state();
        (state.last.clone(), state.tree.clone(), state.last_leaf)
    };
    let broken = AuditLog {
        shared: Arc::new(Shared {
            path: dir.path().join(LOG_FILE),
            file: File::open(dir.path().join(LOG_FILE)).unwrap(),
            head_file: File::open(dir.path().join(HEAD_FILE)).unwrap(),
            state: Mutex::new(State {
                synced: last.head.seq,
                last: last.clone(),
                tree,
                last_leaf,
                tagger: None,
                checkpoint_due: false,
                buf: Vec::new(),
                syncing: false,
                broken: None,
                jobs: HashMap::new(),
                calls: Vec::new(),
            }),
            anchored: Mutex::new(last.head.seq),
            reserve: AtomicU64::new(DEFAULT_RESERVE),
            synced: Notify::new(),
            syncs: AtomicU64::new(0),
            sync_seconds: Mutex::default(),
            checkpoints: Mutex::new(Checkpoints {
                signer: None,
                tagger: None,
                note: String::new(),
                size: 0,
                tree_line: String::new(),
                witnesses: None,
            }),
        }),
    };
    let seq = broken.append(None, &event()).unwrap();
    assert!(matches!(broken.sync(seq).await, Err(AuditError::Broken(_))));
    assert!(matches!(broken.append(None, &event()), Err(AuditError::Broken(_))));
}

fn runner() -> Arc<PrivateKey> {
    Arc::new(PrivateKey::from_seed("runner", crate::keys::Role::Runner, [3; 32]))
}

/// The signed checkpoint in `dir`'s audit.head, checked with `key`.
fn checkpoint_in(dir: &Path, key: &PrivateKey) -> Checkpoint {
    let text = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
    let note = checkpoint_note(&text).expect("a checkpoint after the anchor");
    let verifier = checkpoint::Verifier::new(&key.id, key.signing.verifying_key()).unwrap();
    Checkpoint::open(note.as_bytes(), &checkpoint_origin(&key.id), &[verifier]).unwrap().0
}

fn leaves(dir: &Path) -> Vec<merkle::Hash> {
    std::fs::read_to_string(dir.join(LOG_FILE)).unwrap().lines().map(|l| merkle::leaf_hash(l.as_bytes())).collect()
}

// Multi-threaded, as salve runs: the sync leader writes the anchor
// before its own caller goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_is_checkpointed_in_its_group_commit_and_the_end_checkpoints_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let key = runner();
    let log = AuditLog::open(dir.path()).unwrap();
    log.sign_checkpoints(Arc::clone(&key));
    log.append(Some("j"), &event()).unwrap();
    let sealed = log.seal("j", &key).await.unwrap();
    let checkpoint = checkpoint_in(dir.path(), &key);
    assert_eq!(checkpoint.size, sealed, "the seal's own sync signed it");
    assert_eq!(checkpoint.root, merkle::merkle_tree_hash(&leaves(dir.path())));
    assert_eq!(
        log.latest_checkpoint().unwrap(),
        checkpoint_note(&std::fs::read_to_string(dir.path().join(HEAD_FILE)).unwrap()).unwrap()
    );
    // A durable record without a seal is not checkpointed at once...
    log.append_durable(None, &event()).await.unwrap();
    assert_eq!(checkpoint_in(dir.path(), &key).size, sealed);
    // ...but the end of a command (and closing the log) checkpoints
    // everything it holds.
    log.sync_blocking().unwrap();
    drop(log);
    let all = leaves(dir.path());
    let checkpoint = checkpoint_in(dir.path(), &key);
    assert_eq!((checkpoint.size, checkpoint.root), (all.len() as u64, merkle::merkle_tree_hash(&all)));
    // Reopening keeps the checkpoint and continues the tree.
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.sync_blocking().unwrap();
    let all = leaves(dir.path());
    assert_eq!(checkpoint_in(dir.path(), &key).root, merkle::merkle_tree_hash(&all));
}

// Multi-threaded, as salve runs: the sync leader writes the anchor
// before its own caller goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rewritten_or_cut_below_its_checkpoint_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = runner();
    {
        let log = AuditLog::open(dir.path()).unwrap();
        log.sign_checkpoints(Arc::clone(&key));
        for job in ["a", "b"] {
            log.append(Some(job), &event()).unwrap();
            log.seal(job, &key).await.unwrap();
        }
    }
    let log_path = dir.path().join(LOG_FILE);
    let head_path = dir.path().join(HEAD_FILE);
    let (log_text, head_text) =
        (std::fs::read_to_string(&log_path).unwrap(), std::fs::read_to_string(&head_path).unwrap());
    let lines: Vec<&str> = log_text.lines().collect();
    let note = checkpoint_note(&head_text).unwrap();

    // Cut the last two records and point the anchor at the new end, as
    // an owner of the directory without the key could: the checkpoint
    // still says how long the log was.
    let kept = &lines[..lines.len() - 2];
    let kept_text: String = kept.iter().map(|l| format!("{l}\n")).collect();
    let last = parse_record_head(kept[kept.len() - 1].as_bytes()).unwrap();
    let anchor = Anchor { head: last, end: kept_text.len() as u64 };
    std::fs::write(&log_path, &kept_text).unwrap();
    std::fs::write(&head_path, anchor.encode() + note).unwrap();
    let refused = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).err().expect("a cut log is refused");
    assert!(refused.to_string().contains("but its signed checkpoint covers"), "{refused}");

    // Rewrite a record the checkpoint covers (with a chain that checks
    // out from there would need every later hash too; the tree is
    // enough to catch it): the root no longer matches.
    let rewritten = log_text.replacen("\"pid\":", "\"pid\":1", 1);
    std::fs::write(&log_path, &rewritten).unwrap();
    let end = rewritten.len() as u64;
    let last = parse_record_head(rewritten.lines().last().unwrap().as_bytes()).unwrap();
    std::fs::write(&head_path, Anchor { head: last, end }.encode() + note).unwrap();
    let refused = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).err().expect("a rewritten log is refused");
    assert!(refused.to_string().contains("do not hash to the root its signed checkpoint names"), "{refused}");
}

/// A record that chains after `last` (a whole line) and hashes correctly,
/// as someone who can write the data directory but holds no key can make.
fn forged_after(last: &str) -> String {
    let head = parse_record_head(last.as_bytes()).unwrap();
    let body = format!(
        r#"{{"seq":{},"prev":"{}","ts":"2026-12-02T00:00:00.000000Z","job":"forged","kind":"outcome","outcome":"succeeded"}}"#,
        head.seq + 1,
        head.hash
    );
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1])
}

/// Copies `from`'s log and anchor to a new directory, as a crash leaves
/// them while `from`'s writer is still open (and holds the lock).
fn crash_copy(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for name in [LOG_FILE, HEAD_FILE] {
        std::fs::copy(from.join(name), to.path().join(name)).unwrap();
    }
    to
}

/// Appends `text` to the log in `dir` and points the anchor at its end, as
/// an owner of the directory without the key could.
fn append_and_anchor(dir: &Path, text: &str) {
    let log_path = dir.join(LOG_FILE);
    let mut log_text = std::fs::read_to_string(&log_path).unwrap();
    log_text.push_str(text);
    std::fs::write(&log_path, &log_text).unwrap();
    let head_text = std::fs::read_to_string(dir.join(HEAD_FILE)).unwrap();
    let last = parse_record_head(log_text.lines().last().unwrap().as_bytes()).unwrap();
    let anchor = Anchor { head: last, end: log_text.len() as u64 };
    std::fs::write(dir.join(HEAD_FILE), anchor.encode() + checkpoint_note(&head_text).unwrap_or_default()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_appended_past_the_checkpoint_are_refused_and_the_runners_own_tail_is_kept() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.append(Some("a"), &event()).unwrap();
    log.seal("a", &key).await.unwrap();
    // Durable but not yet checkpointed when the runner "crashes".
    log.append_durable(Some("b"), &event()).await.unwrap();
    let checkpointed = checkpoint_in(dir.path(), &key).size;

    // The runner's own tail past the checkpoint is kept.
    let crashed = crash_copy(dir.path());
    let lines = std::fs::read_to_string(crashed.path().join(LOG_FILE)).unwrap().lines().count() as u64;
    assert!(lines > checkpointed, "the copy holds records past the checkpoint");
    let reopened = AuditLog::open_keyed(crashed.path(), Arc::clone(&key)).unwrap();
    drop(reopened);
    verify(crashed.path()).unwrap();

    // A forged record, chained and hashed, appended with the anchor moved
    // to it: refused, naming what was found and what to do.
    let crashed = crash_copy(dir.path());
    let last = std::fs::read_to_string(crashed.path().join(LOG_FILE)).unwrap().lines().last().unwrap().to_string();
    append_and_anchor(crashed.path(), &format!("{}\n", forged_after(&last)));
    // (The anchor, rewritten without the key, has lost its tag.)
    let refused = AuditLog::open_keyed(crashed.path(), Arc::clone(&key)).err().expect("an appended record is refused");
    assert!(refused.to_string().contains("the tag was stripped"), "{refused}");

    // The same record left past the anchor (as if a crash had left it):
    // still refused, it is not crash debris.
    let crashed = crash_copy(dir.path());
    let mut file = OpenOptions::new().append(true).open(crashed.path().join(LOG_FILE)).unwrap();
    file.write_all(format!("{}\n", forged_after(&last)).as_bytes()).unwrap();
    let refused = AuditLog::open_keyed(crashed.path(), Arc::clone(&key)).err().expect("refused past the anchor too");
    assert!(matches!(refused, AuditError::Appended { checkpointed: c, .. } if c == checkpointed), "{refused}");
    assert!(refused.to_string().contains(&format!("record {} carries no tag", lines + 1)), "{refused}");
    assert!(refused.to_string().contains(&format!("first {checkpointed} lines")), "{refused}");

    // Behind zero-filled pages, after the end of the chain: refused too;
    // only debris is dropped.
    let crashed = crash_copy(dir.path());
    let mut file = OpenOptions::new().append(true).open(crashed.path().join(LOG_FILE)).unwrap();
    file.write_all(format!("\0\0\0\0\n{}\n", forged_after(&last)).as_bytes()).unwrap();
    let refused = AuditLog::open_keyed(crashed.path(), Arc::clone(&key)).err().expect("refused behind debris");
    assert!(refused.to_string().contains("after the end of the chain"), "{refused}");
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_opens_only_with_the_key_that_signed_it() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.append(Some("a"), &event()).unwrap();
    log.seal("a", &key).await.unwrap();
    drop(log);

    let refused = AuditLog::open(dir.path()).err().expect("no key, no open");
    assert!(matches!(&refused, AuditError::KeyNeeded { .. }), "{refused}");
    let other = Arc::new(PrivateKey::from_seed("other", crate::keys::Role::Runner, [4; 32]));
    let refused = AuditLog::open_keyed(dir.path(), other).err().expect("another key's checkpoint");
    assert!(refused.to_string().contains("does not verify with runner key"), "{refused}");
    // A forged checkpoint (signed by another key under this key's name).
    let forger = PrivateKey::from_seed("runner", crate::keys::Role::Runner, [5; 32]);
    let head_text = std::fs::read_to_string(dir.path().join(HEAD_FILE)).unwrap();
    let (anchor_line, _) = head_text.split_once('\n').unwrap();
    let fake =
        Checkpoint::new(&checkpoint_origin(&key.id), 1, merkle::EMPTY_ROOT).sign(&forger.signing, &key.id).unwrap();
    std::fs::write(dir.path().join(HEAD_FILE), format!("{anchor_line}\n{fake}")).unwrap();
    let refused = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).err().expect("a forged checkpoint is refused");
    assert!(refused.to_string().contains("does not verify with runner key"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_checkpoint_a_stripped_tag_or_reordered_records_are_refused() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    {
        let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
        for job in ["a", "b"] {
            log.append(Some(job), &event()).unwrap();
            log.seal(job, &key).await.unwrap();
        }
    }
    let head_text = std::fs::read_to_string(dir.path().join(HEAD_FILE)).unwrap();
    let (anchor_line, _) = head_text.split_once('\n').unwrap();
    let reopen = |dir: &Path| AuditLog::open_keyed(dir, Arc::clone(&key)).err().expect("refused");

    // The checkpoint removed (to cut records off unseen): the anchor's tag
    // covers its size.
    let copy = crash_copy(dir.path());
    std::fs::write(copy.path().join(HEAD_FILE), format!("{anchor_line}\n")).unwrap();
    assert!(reopen(copy.path()).to_string().contains("the anchor's tag does not verify"));

    // The anchor's tag stripped (to pass the log off as one without tags).
    let copy = crash_copy(dir.path());
    let untagged = anchor_line.split_once(" mac=").unwrap().0;
    std::fs::write(copy.path().join(HEAD_FILE), head_text.replacen(anchor_line, untagged, 1)).unwrap();
    assert!(reopen(copy.path()).to_string().contains("the tag was stripped"));

    // Two tagged records past the checkpoint swapped.
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.append_durable(Some("c"), &event()).await.unwrap();
    log.append_durable(Some("d"), &event()).await.unwrap();
    let copy = crash_copy(dir.path());
    drop(log);
    let text = std::fs::read_to_string(copy.path().join(LOG_FILE)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    lines.swap(n - 2, n - 3);
    std::fs::write(copy.path().join(LOG_FILE), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let refused = reopen(copy.path());
    assert!(refused.to_string().contains("not record") || refused.to_string().contains("does not chain"), "{refused}");
}

#[tokio::test]
async fn a_log_without_tags_is_adopted_once_and_checkpointed() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append_durable(None, &event()).await.unwrap();
    drop(log);
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.sync_blocking().unwrap();
    drop(log);
    let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    assert!(text.contains(r#""adopted_untagged":true"#), "{text}");
    assert_eq!(checkpoint_in(dir.path(), &key).size, text.lines().count() as u64, "checkpointed at once");
    // From then on it is strict.
    let refused = AuditLog::open(dir.path()).err().expect("keyless is refused now");
    assert!(matches!(refused, AuditError::KeyNeeded { .. }), "{refused}");
    AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
}

#[tokio::test]
async fn a_keyed_log_tags_every_record() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    log.append_durable(None, &event()).await.unwrap();
    drop(log);
    let tagger = Tagger::new(&key);
    let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    assert!(text.lines().all(|l| tagger.tagged(l.as_bytes())), "{text}");
    assert!(!tagger.tagged(forged_after(text.lines().last().unwrap()).as_bytes()));
    assert!(
        !Tagger::new(&PrivateKey::from_seed("x", crate::keys::Role::Runner, [9; 32]))
            .tagged(text.lines().next().unwrap().as_bytes())
    );
    verify(dir.path()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkpoint_reaches_the_witness_file_and_none_is_lost_while_it_fails() {
    let key = runner();
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let witness = elsewhere.path().join("witness.jsonl");
    let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
    // Unreachable at first: a directory where the file should be.
    std::fs::create_dir(&witness).unwrap();
    log.add_witness(Witness::File(witness.clone()));
    log.append(Some("a"), &event()).unwrap();
    log.seal("a", &key).await.unwrap();
    assert_eq!(log.flush_witnesses(Duration::from_secs(10)), Some(1), "kept while the witness fails");
    std::fs::remove_dir(&witness).unwrap();
    log.append(Some("b"), &event()).unwrap();
    log.seal("b", &key).await.unwrap();
    assert_eq!(log.flush_witnesses(Duration::from_secs(10)), Some(0));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&witness).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "the checkpoint that could not be written came with the next");
    let verifier = checkpoint::Verifier::new(&key.id, key.signing.verifying_key()).unwrap();
    let sizes: Vec<u64> = lines
        .iter()
        .map(|l| {
            let note = l["note"].as_str().unwrap();
            Checkpoint::open(note.as_bytes(), &checkpoint_origin(&key.id), std::slice::from_ref(&verifier))
                .unwrap()
                .0
                .size
        })
        .collect();
    assert!(sizes[0] < sizes[1], "{sizes:?}");
    assert_eq!(lines[1]["note"].as_str().unwrap(), log.latest_checkpoint().unwrap());
}

#[test]
fn anchors_round_trip() {
    let anchor = Anchor { head: Head { seq: 42, hash: "ab".repeat(32) }, end: 9000 };
    assert_eq!(Anchor::decode(&anchor.encode()), Some(anchor));
    assert_eq!(Anchor::decode("salve-audit-head v1 seq=1 hash=xyz end=3\n"), None);
}

#[test]
fn a_jobs_records_link_up_across_restarts_and_interleaving() {
    let dir = tempfile::tempdir().unwrap();
    for jobs in [["a", "b", "a"], ["b", "a", "b"]] {
        let log = AuditLog::open(dir.path()).unwrap();
        for job in jobs {
            log.append(Some(job), &event()).unwrap();
        }
        log.sync_blocking().unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for job in ["a", "b"] {
        let mine: Vec<&serde_json::Value> = records.iter().filter(|r| r["job"] == job).collect();
        assert_eq!(mine.len(), 3);
        assert!(mine[0].get("job_prev").is_none(), "a job's first record links to none");
        for pair in mine.windows(2) {
            assert_eq!(pair[1]["job_prev"], pair[0]["hash"], "{job}: each record names the one before");
        }
    }
    assert!(records.iter().filter(|r| r["job"].is_null()).all(|r| r.get("job_prev").is_none()));
}

#[test]
fn a_records_job_is_read_from_its_start() {
    let line = br#"{"seq":3,"prev":"ab","ts":"2026-12-02T17:05:30.264283Z","job":"rotate-1","kind":"x","job":"other"}"#;
    assert_eq!(record_job(line).as_deref(), Some("rotate-1"));
    let none = br#"{"seq":3,"prev":"ab","ts":"2026-12-02T17:05:30.264283Z","kind":"control","detail":{"job":"x"}}"#;
    assert_eq!(record_job(none), None, "a job named inside a record's detail is not the record's");
    let escaped = br#"{"seq":3,"prev":"ab","ts":"2026-12-02T17:05:30.264283Z","job":"a\"b","kind":"x"}"#;
    assert_eq!(record_job(escaped).as_deref(), Some("a\"b"));
    // The form salve writes, with a full 64-digit prev, is read at its
    // fixed place; the same answer as the search.
    let written =
        format!(r#"{{"seq":12,"prev":"{}","ts":"2026-12-02T17:05:30Z","job":"rotate-2","kind":"x"}}"#, "a".repeat(64));
    assert_eq!(ts_offset(written.as_bytes()), Some(written.find("2026").unwrap()));
    assert_eq!(record_job(written.as_bytes()).as_deref(), Some("rotate-2"));
    assert_eq!(ts_offset(line), None, "a short prev falls back to the search");
}

#[test]
fn room_counts_the_disk_and_the_file_size_limit_and_the_reserve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    let room = log.room().unwrap();
    assert!(room > 0, "a fresh log on a disk with space has room");
    assert!(log.short_of_room().is_none() || room < DEFAULT_RESERVE);
    // A reserve above any disk: every change is refused, and says why.
    log.set_reserve(u64::MAX);
    let reason = log.short_of_room().expect("no room can meet the reserve");
    assert!(reason.contains("kept for rollbacks"), "{reason}");
    log.set_reserve(0);
    assert!(log.short_of_room().is_none());
}

// Multi-threaded, as salve runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_open_hashes_only_past_the_kept_frontier_and_verify_still_checks_all() {
    let dir = tempfile::tempdir().unwrap();
    let key = runner();
    for job in ["a", "b", "a"] {
        let log = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).unwrap();
        log.append(Some(job), &event()).unwrap();
        log.seal(job, &key).await.unwrap();
    }
    let head_path = dir.path().join(HEAD_FILE);
    let head_text = std::fs::read_to_string(&head_path).unwrap();
    let tree = TreeLine::decode(&head_text, &Tagger::new(&key)).expect("audit.head keeps the frontier, tagged");
    let checkpoint = checkpoint_in(dir.path(), &key);
    assert_eq!((tree.tree.size(), tree.tree.root()), (checkpoint.size, checkpoint.root));
    assert!(checkpoint_note(&head_text).unwrap().starts_with("salve audit log"), "the note skips the tree line");

    // Job `a`'s records link up across the restarts: its last record was
    // found below the frontier.
    let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mine: Vec<&serde_json::Value> = records.iter().filter(|r| r["job"] == "a").collect();
    assert_eq!(mine.len(), 4);
    for pair in mine.windows(2) {
        assert_eq!(pair[1]["job_prev"], pair[0]["hash"]);
    }

    // A record below the checkpoint rewritten in place (same length, hash
    // recomputed): open no longer hashes it, so it opens; verify refuses.
    let log_path = dir.path().join(LOG_FILE);
    let first = text.lines().next().unwrap();
    let forged = same_length(first);
    let rewritten = text.replacen(first, &forged, 1);
    assert_eq!(rewritten.len(), text.len());
    std::fs::write(&log_path, &rewritten).unwrap();
    drop(AuditLog::open_keyed(dir.path(), Arc::clone(&key)).expect("open trusts the kept frontier"));
    assert!(verify(dir.path()).is_err(), "verify checks every record against the signed root");

    // With the frontier line changed (its tag no longer verifies), open
    // reads the whole log again and finds the rewrite.
    let head_text = std::fs::read_to_string(&head_path).unwrap();
    let (anchor_line, rest) = head_text.split_once('\n').unwrap();
    let (tree_line, note) = rest.split_once('\n').unwrap();
    let tampered = tree_line.replacen("end=", "end=1", 1);
    std::fs::write(&head_path, format!("{anchor_line}\n{tampered}\n{note}")).unwrap();
    let refused = AuditLog::open_keyed(dir.path(), Arc::clone(&key)).err().expect("the rewrite is found");
    assert!(refused.to_string().contains("do not hash to the root its signed checkpoint names"), "{refused}");
}

/// `line` (a record) with one character of its timestamp changed and its
/// hash recomputed: the same length, a different record.
fn same_length(line: &str) -> String {
    let ts = line.find("\"ts\":\"").unwrap() + 6;
    let mut bytes = line.as_bytes().to_vec();
    bytes[ts + 3] = if bytes[ts + 3] == b'0' { b'1' } else { b'0' };
    let changed = String::from_utf8(bytes).unwrap();
    let body_end = changed.len() - HASH_SUFFIX_LEN;
    let body = format!("{}}}", &changed[..body_end]);
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}", &changed[..body_end])
}
