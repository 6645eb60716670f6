use super::*;
use crate::approval::{Subject, Vote};
use crate::keys::{PrivateKey, Role};
use crate::policy::Verdict;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn decision() -> Decision {
    Decision {
        verdict: Verdict::NeedsApprovals { approvals: 2, group: "sre".into() },
        policies: vec!["p".into()],
        errors: vec![],
        policy_hash: "h".into(),
    }
}

fn submit(store: &dyn JobStore, id: &str, nonce: &str) -> Result<(), StoreError> {
    submit_to(store, id, nonce, "web-3")
}

fn submit_to(store: &dyn JobStore, id: &str, nonce: &str, system: &str) -> Result<(), StoreError> {
    submit_as(store, id, nonce, system, 1, "prod")
}

/// A job of the agent key made from `seed`, in `environment`.
fn submit_as(
    store: &dyn JobStore,
    id: &str,
    nonce: &str,
    system: &str,
    seed: u8,
    environment: &str,
) -> Result<(), StoreError> {
    let name = if seed == 1 { "agent".to_string() } else { format!("agent-{seed}") };
    let agent = PrivateKey::from_seed(&name, Role::Agent, [seed; 32]);
    let mut request = crate::job::tests::request(SystemTime::now());
    request.id = id.into();
    request.nonce = nonce.into();
    request.target.system = system.into();
    request.target.environment = environment.into();
    let envelope = SignedJob::sign(&request, &agent).unwrap();
    let job = NewJob {
        envelope: &envelope,
        request: &request,
        agent: &agent.id,
        job_hash: "hash",
        playbook: "p",
        playbook_version: "1.0.0",
        digest: "d",
        expires_at: Timestamp::from(SystemTime::now() + Duration::from_secs(600)),
    };
    let event = OutboxEvent::new(id, crate::audit::ControlAction::Submitted, serde_json::json!({ "nonce": nonce }));
    store.submit(&job, &decision(), JobState::Submitted, "submitted", &[event])
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    submit(&store, "a", "nonce-0000000000001").unwrap();
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.job("a").unwrap().is_some(), "reopening keeps the data");
    let version: i64 = store.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    store.conn().pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    match SqliteStore::open(dir.path()) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn takeable_jobs_are_the_oldest_of_each_free_system_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for (i, (id, system)) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c"), ("b2", "b")].iter().enumerate() {
        submit_to(&store, id, &format!("nonce-00000000000{i:02}"), system).unwrap();
        // Distinct times, so that the order is the order of submission.
        std::thread::sleep(Duration::from_millis(2));
    }
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let submitted = [JobState::Submitted];
    assert_eq!(
        ids(store.takeable(&submitted, &[], 10).unwrap()),
        ["a1", "b1", "c1"],
        "one job per system, oldest first"
    );
    assert_eq!(ids(store.takeable(&submitted, &["a"], 10).unwrap()), ["b1", "c1"], "a busy system gives none");
    assert_eq!(ids(store.takeable(&submitted, &[], 2).unwrap()), ["a1", "b1"]);
    store.transition("a1", &[JobState::Submitted], JobState::Denied, "test", &Changes::default(), &[]).unwrap();
    assert_eq!(ids(store.takeable(&submitted, &["b"], 10).unwrap()), ["a2", "c1"], "a system's next job comes next");
    assert!(store.takeable(&[JobState::Approved], &[], 10).unwrap().is_empty());
}

#[test]
fn outbox_steps_after_a_number_are_those_recorded_since_and_numbers_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    submit(&store, "a", "nonce-0000000000001").unwrap();
    submit(&store, "b", "nonce-0000000000002").unwrap();
    let steps = store.outbox(0).unwrap();
    let numbers: Vec<i64> = steps.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(numbers.len(), 2);
    assert_eq!(store.outbox(numbers[0]).unwrap().len(), 1, "only the step after the first");
    assert_eq!(store.outbox(numbers[1]).unwrap().len(), 0);
    // Every step forgotten: the next one still gets a higher number, so a
    // relay that remembers the last it relayed does not skip it.
    store.outbox_relayed(numbers[1]).unwrap();
    assert!(store.outbox(0).unwrap().is_empty());
    submit(&store, "c", "nonce-0000000000003").unwrap();
    let after = store.outbox(numbers[1]).unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].0 > numbers[1]);
    assert_eq!(after[0].1.job.as_deref(), Some("c"));
}

#[test]
fn listings_select_in_the_store_and_pages_neither_repeat_nor_skip_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // Submitted within the same milliseconds, mostly: ties go by id.
    let jobs = [("a1", 1, "dev"), ("b1", 2, "prod"), ("a2", 1, "dev"), ("b2", 2, "prod"), ("a3", 1, "dev")];
    for (i, (id, seed, environment)) in jobs.iter().enumerate() {
        submit_as(&store, id, &format!("nonce-00000000000{i:02}"), "web-3", *seed, environment).unwrap();
    }
    let ids = |jobs: &[JobRecord]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
    let everything = store.list(&Listing::default(), 100).unwrap();
    assert_eq!(everything.len(), 5);
    // Two at a time, each page from the last one's cursor.
    let mut paged = Vec::new();
    let mut listing = Listing::default();
    loop {
        let page = store.list(&listing, 2).unwrap();
        let Some(last) = page.last() else { break };
        listing.after = Some(Cursor::of(last));
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&everything), "the pages, in order, are the whole listing");
    let newest_first = everything.windows(2).all(|w| (w[0].submitted_at, &w[0].id) > (w[1].submitted_at, &w[1].id));
    assert!(newest_first, "{:?}", ids(&everything));

    // Every job submitted in the same millisecond: the id decides, and
    // pages of one agent's jobs neither repeat nor skip one either.
    store.conn().execute("UPDATE jobs SET submitted_at = 1000", []).unwrap();
    let pages = |mut listing: Listing| {
        let mut paged = Vec::new();
        loop {
            let page = store.list(&listing, 2).unwrap();
            let Some(last) = page.last() else { return paged };
            listing.after = Some(Cursor::of(last));
            paged.extend(ids(&page));
        }
    };
    assert_eq!(pages(Listing::default()), ["b2", "b1", "a3", "a2", "a1"]);
    let agent_1 = PrivateKey::from_seed("agent", Role::Agent, [1; 32]).id;
    assert_eq!(pages(Listing { agent: Some(agent_1.clone()), ..Listing::default() }), ["a3", "a2", "a1"]);
    let mine = store.list(&Listing { agent: Some(agent_1), ..Listing::default() }, 100).unwrap();
    assert_eq!(ids(&mine), ["a3", "a2", "a1"], "one agent's jobs only");
    let prod = store.list(&Listing { environments: Some(vec!["prod".into()]), ..Listing::default() }, 100).unwrap();
    assert_eq!(ids(&prod), ["b2", "b1"], "one environment's jobs only");
    let none = store.list(&Listing { environments: Some(vec![]), ..Listing::default() }, 100).unwrap();
    assert!(none.is_empty(), "no environment: no job");
    store.transition("b1", &[JobState::Submitted], JobState::Denied, "test", &Changes::default(), &[]).unwrap();
    let denied = store.list(&Listing::in_state(Some(JobState::Denied)), 100).unwrap();
    assert_eq!(ids(&denied), ["b1"]);

    // A cursor as given out, and as a client may garble it.
    let cursor = Cursor::of(&everything[1]);
    assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
    for bad in ["", "12", "x.a1", "12."] {
        assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
    }
}

#[test]
fn replayed_nonces_and_reused_ids_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    submit(&store, "a", "nonce-0000000000001").unwrap();
    assert!(matches!(submit(&store, "b", "nonce-0000000000001"), Err(StoreError::Replay { job, .. }) if job == "a"));
    assert!(matches!(submit(&store, "a", "nonce-0000000000002"), Err(StoreError::DuplicateJob { .. })));
    assert!(store.job("b").unwrap().is_none());
    assert_eq!(store.outbox(0).unwrap().len(), 1, "a refused submission leaves no audit event behind");
    assert_eq!(store.history("a").unwrap().len(), 1);
}

#[test]
fn a_transition_from_a_state_the_job_left_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    submit(&store, "a", "nonce-0000000000001").unwrap();
    let plan = serde_json::json!([]);
    let changes = Changes { plan: Some(("plan-1", &plan)), ..Changes::default() };
    let job =
        store.transition("a", &[JobState::Submitted], JobState::WaitingApproval, "planned", &changes, &[]).unwrap();
    assert_eq!(job.plan_hash.as_deref(), Some("plan-1"));
    assert!(store.plan("a", "plan-1").unwrap().is_some());
    let stale = store.transition("a", &[JobState::Submitted], JobState::Approved, "x", &Changes::default(), &[]);
    assert!(matches!(stale, Err(StoreError::Conflict { state: JobState::WaitingApproval, .. })));
    let history: Vec<JobState> = store.history("a").unwrap().iter().map(|t| t.to).collect();
    assert_eq!(history, [JobState::Submitted, JobState::WaitingApproval]);
}

#[test]
fn a_move_the_jobs_life_does_not_allow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    submit(&store, "a", "nonce-0000000000001").unwrap();
    // A caller that expects the right state still cannot skip approval.
    let skip = store.transition("a", &[JobState::Submitted], JobState::Applying, "skip", &Changes::default(), &[]);
    assert!(matches!(skip, Err(StoreError::IllegalMove { from: JobState::Submitted, to: JobState::Applying, .. })));
    assert_eq!(store.job("a").unwrap().unwrap().state, JobState::Submitted);
    assert_eq!(store.history("a").unwrap().len(), 1, "nothing was written");
}

#[test]
fn racing_writers_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for i in 0..8 {
        submit(&store, &format!("job-{i}"), &format!("nonce-000000000000{i}")).unwrap();
    }
    drop(store);
    // Several threads, each with its own connection (as separate processes
    // would have), race to move every job out of `submitted`: each job
    // moves exactly once.
    let winners = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().to_path_buf();
            let winners = Arc::clone(&winners);
            std::thread::spawn(move || {
                let store = SqliteStore::open(&path).unwrap();
                for i in 0..8 {
                    let id = format!("job-{i}");
                    match store.transition(
                        &id,
                        &[JobState::Submitted],
                        JobState::Approved,
                        &format!("thread {t}"),
                        &Changes::default(),
                        &[],
                    ) {
                        Ok(_) => winners.lock().unwrap().push(id),
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut winners = winners.lock().unwrap().clone();
    winners.sort();
    assert_eq!(winners.len(), 8, "every job moved once: {winners:?}");
    winners.dedup();
    assert_eq!(winners.len(), 8);
    let store = SqliteStore::open(dir.path()).unwrap();
    for i in 0..8 {
        assert_eq!(store.history(&format!("job-{i}")).unwrap().len(), 2);
    }
}

#[test]
fn writes_that_share_a_commit_each_stand_alone() {
    // Threads of one process share one store, and their writes group
    // commits as they happen to meet: racing on the same jobs, each
    // submission and each move is taken exactly once, whatever the groups.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let jobs = 32;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for i in 0..jobs {
                    // Every thread submits every job with the same nonce:
                    // one submission of each is taken.
                    let submitted = submit(&*store, &format!("job-{i}"), &format!("nonce-{i:015}"));
                    let moved = store.transition(
                        &format!("job-{i}"),
                        &[JobState::Submitted],
                        JobState::Approved,
                        &format!("thread {t}"),
                        &Changes::default(),
                        &[OutboxEvent::new(
                            &format!("job-{i}"),
                            crate::audit::ControlAction::State,
                            serde_json::json!({ "thread": t }),
                        )],
                    );
                    outcomes.push((submitted.is_ok(), moved.is_ok()));
                    for refused in [submitted.err(), moved.err()].into_iter().flatten() {
                        assert!(
                            matches!(
                                refused,
                                StoreError::Replay { .. }
                                    | StoreError::DuplicateJob { .. }
                                    | StoreError::Conflict { .. }
                                    | StoreError::UnknownJob { .. }
                            ),
                            "{refused}"
                        );
                    }
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<Vec<(bool, bool)>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for i in 0..jobs {
        let submitted = outcomes.iter().filter(|o| o[i].0).count();
        let moved = outcomes.iter().filter(|o| o[i].1).count();
        assert_eq!((submitted, moved), (1, 1), "job-{i}");
        let history = store.history(&format!("job-{i}")).unwrap();
        let states: Vec<JobState> = history.iter().map(|t| t.to).collect();
        assert_eq!(states, [JobState::Submitted, JobState::Approved], "job-{i}");
    }
    // One outbox event per submission and per move taken, none of those refused.
    assert_eq!(store.outbox(0).unwrap().len(), 2 * jobs);
    // What was told committed is durable: another connection sees it all.
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(reopened.count_in(&[JobState::Approved]).unwrap(), jobs as u64);
}

type Write = Box<dyn FnOnce(&SqliteStore) -> Result<(), StoreError> + Send>;

/// Runs `writes` as one group commit: the connection is held until every
/// one of them waits in the queue, so that the first to take it next runs
/// them all in one transaction. Each write's result, or its panic.
fn one_group(store: &Arc<SqliteStore>, writes: Vec<Write>) -> Vec<std::thread::Result<Result<(), StoreError>>> {
    let held = store.conn();
    let n = writes.len();
    let threads: Vec<_> = writes
        .into_iter()
        .map(|write| {
            let store = Arc::clone(store);
            std::thread::spawn(move || write(&store))
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.queued_len() < n {
        assert!(std::time::Instant::now() < deadline, "the writes never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(held);
    threads.into_iter().map(|t| t.join()).collect()
}

fn approve(id: &'static str) -> Write {
    Box::new(move |store| {
        store
            .transition(id, &[JobState::Submitted], JobState::Approved, "in a group", &Changes::default(), &[])
            .map(drop)
    })
}

/// A write that changes job `id`, then does `then`.
fn change_then(id: &'static str, then: &'static str) -> Write {
    Box::new(move |store| {
        store.write_grouped(move |tx| {
            tx.execute("UPDATE jobs SET state = 'approved' WHERE id = ?1", [id])?;
            match then {
                "fail" => Err(StoreError::Corrupt("refused after a change".into())),
                "panic" => panic!("a write that panics"),
                // A conflict clause that makes SQLite roll back the whole
                // transaction, not only this statement.
                _ => {
                    tx.execute("INSERT OR ROLLBACK INTO jobs SELECT * FROM jobs WHERE id = ?1", [id])?;
                    Ok(())
                }
            }
        })
    })
}

/// A new store holding jobs a, b and c, submitted.
fn three_jobs() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    for (id, nonce) in [("a", "nonce-a-0000000000"), ("b", "nonce-b-0000000000"), ("c", "nonce-c-0000000000")] {
        submit(&*store, id, nonce).unwrap();
    }
    (dir, store)
}

fn states(store: &SqliteStore) -> Vec<JobState> {
    ["a", "b", "c"].iter().map(|id| store.job(id).unwrap().unwrap().state).collect()
}

#[test]
fn a_write_that_fails_or_panics_in_a_group_is_undone_alone() {
    use JobState::{Approved, Submitted};
    let (_dir, store) = three_jobs();
    let results = one_group(&store, vec![approve("a"), change_then("b", "fail"), approve("c")]);
    assert!(results[0].as_ref().unwrap().is_ok() && results[2].as_ref().unwrap().is_ok(), "{results:?}");
    assert!(matches!(results[1], Ok(Err(StoreError::Corrupt(_)))), "{results:?}");
    assert_eq!(states(&store), [Approved, Submitted, Approved]);

    // A panic reaches the thread whose write panicked; the others are kept.
    let (_dir, store) = three_jobs();
    let results = one_group(&store, vec![approve("a"), change_then("b", "panic"), approve("c")]);
    assert!(results[1].is_err(), "the panic is resumed in its own thread: {results:?}");
    assert!(results[0].as_ref().unwrap().is_ok() && results[2].as_ref().unwrap().is_ok(), "{results:?}");
    assert_eq!(states(&store), [Approved, Submitted, Approved]);
    // The store goes on.
    assert!(approve("b")(&store).is_ok());
}

#[test]
fn a_write_that_ends_the_groups_transaction_leaves_nothing_of_the_group() {
    use JobState::Submitted;
    let (dir, store) = three_jobs();
    let results = one_group(&store, vec![approve("a"), change_then("b", "rollback"), approve("c")]);
    // Every writer of the group is told, and none of it was committed:
    // not the writes before, not those after (they are not run).
    for result in &results {
        assert!(matches!(result, Ok(Err(_))), "{results:?}");
    }
    assert_eq!(states(&store), [Submitted, Submitted, Submitted]);
    drop(store);
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(states(&reopened), [Submitted, Submitted, Submitted]);
    // And the store goes on.
    assert!(reopened.transition("a", &[Submitted], JobState::Approved, "after", &Changes::default(), &[]).is_ok());
}

#[test]
fn votes_are_counted_inside_the_transaction_and_a_key_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    submit(&*store, "a", "nonce-0000000000001").unwrap();
    let keys: Vec<PrivateKey> =
        (0..6).map(|i| PrivateKey::from_seed(&format!("k{i}"), Role::Approver, [10 + i as u8; 32])).collect();
    let subject =
        Subject { job_id: "a", job_hash: "hash", plan_hash: "p", submitter: "agent", environment: "prod", group: None };
    // Six approvers at once, each twice: six votes recorded, never twelve.
    let threads: Vec<_> = keys
        .iter()
        .flat_map(|key| {
            let approval = crate::approval::Approval::sign(
                &subject,
                Vote::Approve,
                "",
                Duration::from_secs(60),
                key,
                SystemTime::now(),
            )
            .unwrap();
            [approval.clone(), approval]
        })
        .map(|approval| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let store: &dyn JobStore = &*store;
                store.vote(
                    "a",
                    &approval,
                    &mut |_, current| {
                        if current.iter().any(|a| a.approval.key_id == approval.key_id) {
                            return VoteCheck::Refuse;
                        }
                        VoteCheck::Record(None)
                    },
                    &[],
                )
            })
        })
        .collect();
    let accepted = threads.into_iter().map(|t| t.join()).filter(|r| matches!(r, Ok(Ok(Some(_))))).count();
    assert_eq!(accepted, 6);
    assert_eq!(store.approvals("a").unwrap().len(), 6);
}
