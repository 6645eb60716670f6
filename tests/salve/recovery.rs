//! Crash recovery: the runner is killed (SIGKILL) at every phase boundary
//! and in the middle of `apply`; the next start rolls the job back from its
//! durable journal (or keeps the outcome it had already recorded). Each
//! time: the target is restored, the audit chain verifies, no acknowledged
//! audit record is missing, and the job's final state is recorded.

use crate::control::{Plane, ROTATE_GRANT};
use salve::audit::verify::{Anchor, verify_log};
use salve::policy::DEFAULT_POLICY;
use salve::store::{JobState, JobStore, SqliteStore};
use serde_json::Value;
use std::io::{Read, Seek};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where to kill the runner.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// As soon as the job is recorded as applying.
    Applying,
    /// Once `apply` has made this many mutating host calls (their intents
    /// are in the audit log).
    AfterIntents(usize),
    /// As soon as the job is recorded as verifying.
    Verifying,
    /// As soon as the job is recorded as rolling back (its apply spent its
    /// mutation budget).
    RollingBack,
    /// Rolling back, and again while the next start resumes the rollback.
    RollingBackTwice,
}

fn spawn_worker(plane: &Plane) -> Child {
    Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["worker", "--poll", "5ms", "--data-dir"])
        .arg(plane.data())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reads what was appended to the audit log since the last call.
struct Tail {
    offset: u64,
    partial: String,
}

impl Tail {
    fn records(&mut self, plane: &Plane) -> Vec<Value> {
        let Ok(mut file) = std::fs::File::open(plane.data().join("audit.jsonl")) else { return Vec::new() };
        file.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        self.offset += text.len() as u64;
        self.partial.push_str(&text);
        let mut records = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            records.push(serde_json::from_str(&line).unwrap());
        }
        records
    }
}

/// Kills `child` once `ready` holds; returns whether it did before the
/// job ended on its own.
fn kill_when(child: &mut Child, mut ready: impl FnMut() -> Option<bool>) -> bool {
    let started = Instant::now();
    loop {
        match ready() {
            Some(true) => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return true;
            }
            Some(false) => {
                child.kill().unwrap();
                child.wait().unwrap();
                return false;
            }
            None => {}
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the job never got there");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// `seq` and `hash` from `audit.head`: the last record acknowledged durable.
fn anchored(plane: &Plane) -> (u64, String) {
    let text = std::fs::read_to_string(plane.data().join("audit.head")).unwrap();
    let field = |name: &str| text.split_whitespace().find_map(|f| f.strip_prefix(name).map(str::to_string)).unwrap();
    (field("seq=").parse().unwrap(), field("hash="))
}

/// Runs one job and kills the runner where `kill` says. Returns the number
/// of kills that landed and the job's final state, or `None` if the job
/// finished first (try again).
fn crash_case(plane: &Plane, store: &dyn JobStore, n: usize, kill: Kill) -> Option<(usize, JobState)> {
    let logs = plane.site.root.path().join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    plane.write_logs(24, 20_000);
    let before = plane.site.snapshot();
    let id = format!("crash-{n}");
    let mut request = plane.rotate(&id, "dev", 0.9);
    if matches!(kill, Kill::RollingBack | Kill::RollingBackTwice) {
        let grant = ROTATE_GRANT.replace("{root}", &plane.site.root.path().display().to_string());
        request.grant = salve::grant::GrantSpec::parse(&format!("{grant}[limits]\nmutations = 12\n")).unwrap();
    }
    plane.submit(&plane.control(), &request).unwrap();

    let mut tail = Tail {
        offset: std::fs::metadata(plane.data().join("audit.jsonl")).map_or(0, |m| m.len()),
        partial: String::new(),
    };
    let mut intents = 0;
    let mut worker = spawn_worker(plane);
    let state = |store: &dyn JobStore| store.job(&id).unwrap().unwrap().state;
    let landed = kill_when(&mut worker, || {
        let now = state(store);
        if now.is_final() {
            return Some(false);
        }
        Some(match kill {
            Kill::Applying => now == JobState::Applying,
            Kill::Verifying => now == JobState::Verifying,
            Kill::RollingBack | Kill::RollingBackTwice => now == JobState::RollingBack,
            Kill::AfterIntents(k) => {
                intents +=
                    tail.records(plane).iter().filter(|r| r["job"] == id.as_str() && r["kind"] == "intent").count();
                now == JobState::Applying && intents >= k
            }
        })
        .filter(|&hit| hit)
    });
    let mut kills = 1;
    if !landed {
        // The job ended before the kill: run it out and try another.
        let status = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["worker", "--until-idle", "--data-dir"])
            .arg(plane.data())
            .output()
            .unwrap();
        assert!(status.status.success());
        return None;
    }
    if let Kill::RollingBackTwice = kill {
        // The next start finds the job rolling back and resumes; kill it
        // again as it does.
        let mut tail =
            Tail { offset: std::fs::metadata(plane.data().join("audit.jsonl")).unwrap().len(), partial: String::new() };
        let mut worker = spawn_worker(plane);
        let again = kill_when(&mut worker, || {
            let resumed = tail.records(plane).iter().any(|r| {
                r["job"] == id.as_str() && r["kind"] == "phase" && r["phase"] == "rollback" && r["status"] == "started"
            });
            if state(store).is_final() {
                return Some(false);
            }
            resumed.then_some(true)
        });
        kills += usize::from(again);
    }

    // What was acknowledged before the restart must survive it.
    let (seq, hash) = anchored(plane);
    let restarted = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["worker", "--until-idle", "--data-dir"])
        .arg(plane.data())
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&restarted.stdout).to_string() + &String::from_utf8_lossy(&restarted.stderr);
    assert!(restarted.status.success(), "{kill:?}: {output}");

    let job = store.job(&id).unwrap().unwrap();
    let history: Vec<JobState> = store.history(&id).unwrap().iter().map(|t| t.to).collect();
    match job.state {
        // Killed in apply: the outcome cannot have been recorded yet.
        JobState::Succeeded if matches!(kill, Kill::Applying | Kill::AfterIntents(_)) => {
            panic!("{kill:?}: succeeded after a kill in apply: {history:?}")
        }
        JobState::RolledBack => assert_eq!(plane.site.snapshot(), before, "{kill:?}: not restored; {history:?}"),
        JobState::Succeeded => {
            assert!(!matches!(kill, Kill::RollingBack | Kill::RollingBackTwice), "{kill:?}: {history:?}");
            assert!(logs.join("app0.log.1.gz").exists(), "{kill:?}: succeeded but not rotated");
        }
        other => panic!("{kill:?}: the job ended {other}: {history:?}\n{output}"),
    }
    assert!(history.contains(&JobState::Applying), "{history:?}");
    assert!(!plane.data().join(format!("journal/{id}.journal")).exists(), "the journal outlived the job");
    let trust = salve::trust::TrustStore::load(&plane.data().join("trust.toml")).unwrap();
    let log = plane.data().join("audit.jsonl");
    verify_log(&log, Anchor::Required(plane.data().join("audit.head")), Some(&trust))
        .unwrap_or_else(|e| panic!("{kill:?}: the audit log does not verify: {e}"));
    let records = plane.records();
    let kept = records.iter().find(|r| r["seq"] == seq).unwrap_or_else(|| panic!("record {seq} is gone"));
    assert_eq!(kept["hash"], hash.as_str(), "acknowledged record {seq} changed");
    let outcomes = records.iter().filter(|r| r["job"] == id.as_str() && r["kind"] == "outcome").count();
    assert!(outcomes >= 1, "{kill:?}: no outcome recorded for {id}");
    Some((kills, job.state))
}

#[test]
fn the_runner_killed_anywhere_recovers_every_job() {
    let plane = Plane::new(DEFAULT_POLICY, "[budgets]\njobs_per_playbook_per_hour = 1000\n");
    let store = SqliteStore::open(&plane.data()).unwrap();
    let cases = [
        (Kill::Applying, 6),
        (Kill::AfterIntents(1), 1),
        (Kill::AfterIntents(2), 1),
        (Kill::AfterIntents(4), 1),
        (Kill::AfterIntents(8), 1),
        (Kill::AfterIntents(16), 1),
        (Kill::AfterIntents(30), 1),
        (Kill::Verifying, 4),
        (Kill::RollingBack, 3),
        (Kill::RollingBackTwice, 2),
    ];
    let mut n = 0;
    let mut kills = 0;
    let mut landed = std::collections::BTreeMap::new();
    for (kill, times) in cases {
        let mut done = 0;
        let mut tries = 0;
        let mut rolled_back = 0;
        while done < times {
            tries += 1;
            assert!(tries <= times * 6, "{kill:?}: the kill kept missing its moment");
            n += 1;
            if let Some((k, state)) = crash_case(&plane, &store, n, kill) {
                kills += k;
                done += 1;
                rolled_back += usize::from(state == JobState::RolledBack);
            }
        }
        landed.insert(format!("{kill:?}"), (done, tries, rolled_back));
    }
    eprintln!("kills landed: {kills}; per case (landed, tries, rolled back): {landed:?}");
    assert!(kills >= 20, "{kills} kills");
    let (_, _, verifying_rolled_back) = landed["Verifying"];
    assert!(verifying_rolled_back > 0, "no kill in verify led to a rollback: {landed:?}");
}
